"""Trains VGG-Small, ResNet-20 or ResNet-18 with SLB, the STE baseline or in full precision.

    python train.py --model=vgg_small --wbits=1 --abits=1 --dataset=digits --epochs=3

Flags left unset take the model's recipe (the authors' settings at their budget, a
measured short-budget recipe below it: README, "Train the paper's networks";
`training.RECIPES`). Bad input prints one line `train.py: error: ...` and exits with
status 2. Ctrl-C prints one line, where the run stopped, what its model_dir keeps and
the command that resumes it, and exits with status 130. See README.md.
"""

import contextlib
import os
import re
import shlex
import sys
import threading

# TF_CPP_MIN_LOG_LEVEL as the user set it (None: unset); 2 (errors only) otherwise.
_USER_LOG_LEVEL = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402

# --- flags -----------------------------------------------------------------------------

RECIPE = "default: the model's recipe"

flags.DEFINE_enum("model", "vgg_small", ["vgg_small", "resnet20", "resnet18"], "Network.")
flags.DEFINE_enum("method", "slb", ["slb", "ste", "fp"], "SLB, the STE baseline or full precision.")
flags.DEFINE_string(
    "wbits", "1",
    "Weight bits of the quantized layers, 1..8; or candidate widths of 1, 2, 4, 8 (e.g. 1,2,4) "
    "with --bit_budget: each layer searches its width.",
)
flags.DEFINE_integer("abits", 1, "Activation bits at their inputs, 1..16, or 32 for none.")
flags.DEFINE_float(
    "bit_budget", None,
    "A search's (--wbits=1,2,4) average bits per quantized weight, within the candidates' range.",
)
flags.DEFINE_float(
    "search_fraction", 0.5,
    "A search's part of the epochs (rounded, at least 1 and 1 short of all); the rest trains "
    "the chosen widths.",
)
flags.DEFINE_enum("activation_quantizer", None, ["dorefa", "pact"], f"For abits 2..8 ({RECIPE}).")
flags.DEFINE_enum(
    "block", None, ["conv", "convprelubn", "standard", "bireal"],
    "Block type: vgg_small conv; resnet20 convprelubn | standard | bireal; resnet18 bireal | standard "
    "(default: the authors' network, the first of each).",
)
flags.DEFINE_enum(
    "logits_init", "random", ["random", "quadratic"],
    "SLB logits at start: random normal (the authors') or quadratic around a random float weight.",
)
flags.DEFINE_bool("ste_clip", None, "--method=ste: clip latent weights to [-1, 1] (default: at 1 bit).")
flags.DEFINE_string(
    "dataset", None,
    "cifar10 | imagenet2012 | digits | a .npz file (x_train, y_train, x_test, y_test) | "
    f"a directory of class folders ({RECIPE}).",
)
flags.DEFINE_string(
    "data_dir", None,
    "Where --dataset=cifar10 / imagenet2012 look offline: a TFDS data directory (ImageNet: the "
    "tars in <data_dir>/downloads/manual); for cifar10 also the python version "
    "(cifar-10-batches-py/) or an image folder of its 10 class folders. Any image folder or "
    ".npz file can instead be passed as --dataset=PATH.",
)
flags.DEFINE_integer("image_size", None, "Image side (default: the data set's).")
flags.DEFINE_float(
    "validation_split", 0.0,
    "Fraction of the training split held out to monitor val_* every epoch (default 0: the "
    "paper's protocol, all of it trains); the test split is evaluated once, at the end.",
)
flags.DEFINE_bool(
    "augment", None,
    "Augment the training images: pad-crop + flip (imagenet2012: random-resized crop + flip). "
    "Default: on for cifar10, imagenet2012 and image folders, off for digits and .npz.",
)
flags.DEFINE_float("width_multiplier", 1.0, "Scales every conv's filters (quick experiments).")
flags.DEFINE_integer("epochs", None, f"Training epochs ({RECIPE}).")
flags.DEFINE_integer("steps_per_epoch", None, "Steps per epoch (default: one pass over the data).")
flags.DEFINE_integer("batch_size", None, f"Global batch size ({RECIPE}).")
flags.DEFINE_enum("optimizer", None, ["sgd", "adam"], f"Optimizer ({RECIPE}).")
flags.DEFINE_float("lr", None, f"Initial learning rate ({RECIPE}).")
flags.DEFINE_enum("lr_schedule", None, ["cosine", "step", "constant"], f"LR schedule ({RECIPE}).")
flags.DEFINE_float("weight_decay", None, f"Weight decay ({RECIPE}).")
flags.DEFINE_enum(
    "weight_decay_mode", None, ["coupled", "decoupled"],
    f"coupled: added to the gradient before momentum (PyTorch's, the authors'); decoupled: Keras's ({RECIPE}).",
)
flags.DEFINE_float("temperature_start", None, f"Initial SLB temperature tau ({RECIPE}).")
flags.DEFINE_float(
    "temperature_end", None,
    "Final tau of the start/end form (default: the recipe; below the authors' budget 200 at 1, 2 "
    "and 4 bits, 1000 at other widths).",
)
flags.DEFINE_float(
    "temperature_speed", None,
    "The authors' form: tau *= speed once per epoch inside the window (default at the authors' "
    "budget: their speed for W/A, e.g. 1.03 at W1).",
)
flags.DEFINE_enum("temperature_schedule", None, ["exp", "cos", "linear"], f"tau schedule ({RECIPE}).")
flags.DEFINE_integer("temperature_restarts", None, f"Warm restarts of the tau schedule ({RECIPE}).")
flags.DEFINE_float("temperature_start_fraction", None, f"tau starts growing here ({RECIPE}).")
flags.DEFINE_float(
    "temperature_end_fraction", None, "tau stops growing here (default: 0.9; 0.6 for the short-budget schedule)."
)
flags.DEFINE_integer("hard_epochs", 0, "Final epochs trained with the hard weights, logits frozen (0: none).")
flags.DEFINE_integer(
    "bn_calibration_steps", None,
    "Training batches per BN calibration, 0 = off (default: as many as the validation set has, "
    "or the test set without one: the authors' choice).",
)
flags.DEFINE_bool("sbn", True, "State batch normalization after SLB layers (--nosbn: the ablation).")
flags.DEFINE_bool("sync_bn", False, "Batch statistics over all replicas.")
flags.DEFINE_string("model_dir", None, "Output directory (default: runs/<model>_<method>_w<w>a<a>_<data>).")
flags.DEFINE_enum("strategy", "auto", ["auto", "one_device", "mirrored", "multi_worker"], "Distribution.")
flags.DEFINE_integer("seed", 0, "Random seed (initialization, shuffling, augmentation).")
flags.DEFINE_bool("deterministic", False, "Op determinism: bit-identical reruns and resumes.")
flags.DEFINE_bool("mixed_precision", False, "mixed_float16 compute (GPUs).")
flags.DEFINE_bool(
    "bf16", False,
    "mixed_bfloat16 compute: CPUs with AVX-512 BF16 or AMX (SLB W1A1 ResNet-20 step 0.61x of "
    "float32 on this project's AMD EPYC), TPUs.",
)
flags.DEFINE_bool("jit_compile", False, "XLA-compile the training step.")
flags.DEFINE_bool("export", False, "Also write model.tflite.")
flags.DEFINE_bool("show_recipe", False, "Print the resolved settings (flags + the model's recipe) and exit.")

FLAGS = flags.FLAGS

# --- TensorFlow's start-up log -----------------------------------------------------------
#
# TensorFlow 2.21 logs through Abseil before anything initializes Abseil's logging, so the
# lines it writes while its libraries load (the oneDNN banner, "Could not find cuda
# drivers", a failed cuInit where there is no GPU) reach stderr whatever
# TF_CPP_MIN_LOG_LEVEL says. While the modules that import TensorFlow load, stderr (file
# descriptor 2) passes through a filter that applies TF_CPP_MIN_LOG_LEVEL to those lines;
# everything else (Python warnings, tracebacks) passes unchanged, as it comes.

# "I0000 00:00:1796071174.853056   15540 port.cc:153] ..." (before Abseil's logging is
# initialized the time is seconds since 1970).
_ABSL_RECORD = re.compile(r"([IWEF])\d{4} +\d+:\d+:\d+\.\d+ +\d+ \S+:\d+\] ")
_ABSL_PREINIT = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
# Lines that start something else than a continued log record: a traceback, a Python
# warning ("file.py:12: UserWarning: ..."), a logging record ("WARNING:absl:...").
_NOT_CONTINUATION = re.compile(r"Traceback |\S+:\d+: \w*(Warning|Error)\b|[A-Z]+:\S*:")


class _StartupLogFilter:
    """Keeps a line of TensorFlow's start-up stderr unless the log level hides it.

    `level` is TF_CPP_MIN_LOG_LEVEL (1 hides INFO, 2 also WARNING, 3 also ERROR);
    `expected_no_gpu` also hides a failed cuInit after "Could not find cuda drivers"
    (the default, unset TF_CPP_MIN_LOG_LEVEL: on a machine without a GPU it is no error).
    Lines that continue a hidden record are hidden with it.
    """

    def __init__(self, level, expected_no_gpu=False):
        self.level = level
        self.expected_no_gpu = expected_no_gpu
        self.no_driver = False
        self.hiding = False  # the last record was hidden: so are the lines that continue it

    def keep(self, line):
        record = _ABSL_RECORD.match(line)
        if record:
            self.no_driver = self.no_driver or "Could not find cuda drivers" in line
            severity = "IWEF".index(record.group(1))
            no_gpu = self.expected_no_gpu and self.no_driver and "failed call to cuInit" in line
            self.hiding = severity < self.level or no_gpu
            return not self.hiding
        if line.rstrip("\r\n") == _ABSL_PREINIT:
            self.hiding = False
            return self.level < 1
        if _NOT_CONTINUATION.match(line):
            self.hiding = False
        return not self.hiding


def _write_all(fd, data):
    while data:
        data = data[os.write(fd, data):]


@contextlib.contextmanager
def _filtered_stderr(keep):
    """Within the block, file descriptor 2's lines reach stderr only if `keep(line)`.

    A thread forwards them as they come (so a crash inside the block still shows what
    was written before it).
    """
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr: nothing to filter
        yield
        return
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def forward():
        with os.fdopen(read_end, "rb") as pipe:
            for line in pipe:
                try:
                    if keep(line.decode(errors="replace")):
                        _write_all(saved, line)
                except Exception:  # noqa: BLE001 - keep draining the pipe whatever happens
                    pass

    thread = threading.Thread(target=forward, name="stderr-filter", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's write end: the thread reads to its end
        thread.join(timeout=10)
        os.close(saved)


def _quiet_tensorflow_start():
    """The block that imports TensorFlow, its start-up log filtered (see above)."""
    if "tensorflow" in sys.modules:  # started already: nothing more is logged at import
        return contextlib.nullcontext()
    if _USER_LOG_LEVEL is None:
        return _filtered_stderr(_StartupLogFilter(2, expected_no_gpu=True).keep)
    try:
        level = min(max(int(_USER_LOG_LEVEL), 0), 3)
    except ValueError:
        level = 0
    if level == 0:  # everything asked for
        return contextlib.nullcontext()
    return _filtered_stderr(_StartupLogFilter(level).keep)


# --- the command line --------------------------------------------------------------------


def _fail(message):
    print(f"train.py: error: {' '.join(str(message).split())}", file=sys.stderr)
    sys.exit(2)


def _command_line():
    """The command as the user typed it (the one that resumes an interrupted run)."""
    return shlex.join(["python", *sys.argv])


def _interrupted(message):
    """Ctrl-C: one line, exit status 130 (128 + SIGINT), as shells report it."""
    print(f"train.py: {message}", file=sys.stderr, flush=True)
    sys.exit(130)


def _parse_flags(argv):
    if any(arg in ("-h", "--help", "-help") for arg in argv[1:]):  # help is no error: status 0
        app.usage(shorthelp=True, writeto_stdout=True, exitcode=0)
    if "--helpfull" in argv[1:]:  # absl's own exits with status 1
        app.usage(shorthelp=False, writeto_stdout=True, exitcode=0)
    try:
        return FLAGS(argv)
    except flags.Error as error:
        _fail(error)


def main(argv):
    if len(argv) > 1:
        _fail(f"unexpected arguments {argv[1:]}; every setting is a --flag")
    if not FLAGS["verbosity"].present:  # absl turns its default to INFO after parsing:
        logging.set_verbosity(logging.WARNING)  # no INFO lines of TF's exporter in the run
    # Imported here, so that a mistyped flag is reported before TensorFlow starts.
    with _quiet_tensorflow_start():
        import input_pipeline
        import training

    try:
        if FLAGS.show_recipe:
            config = training.resolve(training.config_from(FLAGS))
            print(training.describe(config))
            for name, value in sorted(training.run_settings(config).items()):
                # lr_step_epochs has no flag: the recipe's (RECIPES) alone sets it
                if name not in FLAGS:
                    print(f"  {name}={value} (the recipe's; no flag)")
                elif value is None:  # left to the data or the run: the flag's help says how
                    print(f"  --{name} unset: {FLAGS[name].help}")
                else:  # as the flag takes it: --wbits=1,2,4
                    shown = ",".join(map(str, value)) if isinstance(value, list) else value
                    print(f"  --{name}={shown}")
            return
        training.run(FLAGS)
    except training.RunInterrupted as error:
        _interrupted(error.message(_command_line()))
    except (training.UsageError, input_pipeline.DatasetNotFoundError) as error:
        _fail(error)
    except training.RunFailed as error:  # valid input, failed run (diverged, disk full)
        print(f"train.py: error: {' '.join(str(error).split())}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    try:
        app.run(main, flags_parser=_parse_flags)
    except KeyboardInterrupt:  # before training.run took its model_dir (imports, data checks)
        _interrupted(
            "interrupted in start-up, before the training started or resumed; nothing was "
            f"changed: `{_command_line()}` starts (or resumes) the run."
        )
