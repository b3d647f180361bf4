"""Training of the paper's networks: `run(config)`, called by train.py and by the tests.

One run = config -> strategy -> data -> model -> `fit` -> BN calibration -> hard test
accuracy -> files in `model_dir`:

| file            | what                                                             |
|-----------------|------------------------------------------------------------------|
| flags.json      | the run's configuration; a different one in the same dir is refused |
| backup/         | `keras.callbacks.BackupAndRestore` state (weights, optimizer, epoch) |
| history.csv     | one row per epoch (loss, accuracy, val_*, temperature, lr, seconds) |
| logs/           | TensorBoard logs                                                 |
| model.keras     | the final model (written atomically)                             |
| model.tflite    | with `export=True`                                               |
| summary.json    | config, final hard test accuracy, seconds per epoch, parameter counts |

A killed run resumes from its last completed epoch when started again with the same
configuration: the weights, the optimizer (its step counter included, which drives the
learning rate and the temperature), the temperature variables and the BN statistics
are restored, and `input_pipeline` restarts the data stream at that epoch, so the result
matches an uninterrupted run (bit for bit with `deterministic=True` on CPU).

The strategy scope wraps only the model, the optimizer and `compile` (as in
tensorflow/models `mnist_main.py`); the batch size is global.
"""

import contextlib
import csv
import dataclasses
import json
import math
import os
import shutil
import sys
import tempfile
import time

import keras
import tensorflow as tf

import input_pipeline
import models
import slb_keras
from models import method as method_lib

OPTIMIZERS = ("sgd", "adam")
LR_SCHEDULES = ("cosine", "step", "constant")
TEMPERATURE_SCHEDULES = ("exp", "cos", "linear")
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")
SGD_MOMENTUM = 0.9
STEP_DECAY = 0.1

FLAGS_FILE = "flags.json"
SUMMARY_FILE = "summary.json"
MODEL_FILE = "model.keras"
TFLITE_FILE = "model.tflite"
HISTORY_FILE = "history.csv"
BACKUP_DIR = "backup"
LOG_DIR = "logs"

# SLB_SPEC section 5; `None` in a Config means "the model's recipe".
_TEMPERATURE = dict(  # tau 0.01 -> 10, exponential, in every recipe
    temperature_start=0.01,
    temperature_end=10.0,
    temperature_schedule="exp",
    temperature_restarts=0,
    temperature_end_fraction=0.9,
)
_CIFAR10 = dict(
    _TEMPERATURE,
    dataset="cifar10",
    epochs=400,
    batch_size=100,
    optimizer="sgd",
    lr_schedule="cosine",
    lr_step_epochs=(0.5, 0.75),
)
RECIPES = {
    "vgg_small": dict(
        _CIFAR10,
        lr=0.02,
        weight_decay=5e-4,
        activation_quantizer="dorefa",
        temperature_start_fraction=0.3,
    ),
    "resnet20": dict(
        _CIFAR10,
        lr=0.1,
        weight_decay=1e-4,
        activation_quantizer="pact",
        temperature_start_fraction=0.4,
    ),
    "resnet18": dict(
        _TEMPERATURE,
        dataset="imagenet2012",
        epochs=120,
        batch_size=256,
        optimizer="adam",
        lr=1e-3,
        lr_schedule="step",
        lr_step_epochs=(70 / 120, 90 / 120, 110 / 120),
        weight_decay=0.0,
        activation_quantizer="dorefa",
        temperature_start_fraction=0.4,
    ),
}

# Settings that do not change what is trained: a run may resume with other values.
RUN_INDEPENDENT = ("model_dir", "data_dir", "strategy", "export", "verbose")


class UsageError(ValueError):
    """Bad input to a run (a flag, the data, the model_dir); train.py exits with status 2.

    Example:

    >>> try:
    ...     resolve(Config(wbits=9))
    ... except UsageError as error:
    ...     print(error)
    Invalid --wbits=9: expected an integer from 1 to 8.
    """


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything a run depends on; the fields are train.py's flags.

    Fields left `None` take the model's recipe (`RECIPES`) or a value derived from the
    data (`steps_per_epoch`: one pass over the training set; `bn_calibration_steps`:
    about the size of the test set, used by method "slb" with `sbn` only; `model_dir`:
    runs/<model>_<method>_w<w>a<a>_<data>).

    Example:

    >>> Config(model="resnet20", wbits=2, abits=2).epochs is None  # until resolve()
    True
    """

    model: str = "vgg_small"
    method: str = "slb"
    wbits: int = 1
    abits: int = 1
    dataset: str = None
    data_dir: str = None
    image_size: int = None
    width_multiplier: float = 1.0
    epochs: int = None
    steps_per_epoch: int = None
    batch_size: int = None
    optimizer: str = None
    lr: float = None
    lr_schedule: str = None
    lr_step_epochs: tuple = None
    weight_decay: float = None
    activation_quantizer: str = None
    temperature_start: float = None
    temperature_end: float = None
    temperature_schedule: str = None
    temperature_restarts: int = None
    temperature_start_fraction: float = None
    temperature_end_fraction: float = None
    bn_calibration_steps: int = None
    sbn: bool = True
    sync_bn: bool = False
    model_dir: str = None
    strategy: str = "auto"
    seed: int = 0
    deterministic: bool = False
    mixed_precision: bool = False
    jit_compile: bool = False
    export: bool = False
    verbose: int = None


def config_from(flags_or_config):
    """A `Config` from a Config, a dict, or an object with the fields as attributes (absl FLAGS).

    Raises:
        UsageError: for a dict key that is not a field.

    Example:

    >>> config_from({"model": "resnet20", "epochs": 3}).epochs
    3
    """
    if isinstance(flags_or_config, Config):
        return flags_or_config
    names = [field.name for field in dataclasses.fields(Config)]
    if isinstance(flags_or_config, dict):
        unknown = sorted(set(flags_or_config) - set(names))
        if unknown:
            raise UsageError(f"Unknown setting {unknown[0]!r}: expected one of {', '.join(names)}.")
        return Config(**flags_or_config)
    values = {}
    for name in names:
        if hasattr(flags_or_config, name):
            value = getattr(flags_or_config, name)
            values[name] = tuple(value) if isinstance(value, list) else value
    return Config(**values)


def _invalid(name, value, expected):
    return UsageError(f"Invalid --{name}={value}: expected {expected}.")


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def resolve(config):
    """Fills the recipe defaults of `config` and validates every field.

    Returns:
        A `Config` with no recipe field left `None` (data-derived ones may stay None).

    Raises:
        UsageError: for the first invalid field, naming it, its value and what is allowed.

    Example:

    >>> resolve(Config(model="resnet20")).lr
    0.1
    """
    if config.model not in models.MODELS:
        raise _invalid("model", config.model, "one of " + ", ".join(models.MODELS))
    recipe = RECIPES[config.model]
    config = dataclasses.replace(
        config,
        **{k: v for k, v in recipe.items() if getattr(config, k) is None},
    )
    if config.method not in method_lib.METHODS:
        raise _invalid("method", config.method, "one of " + ", ".join(method_lib.METHODS))
    try:
        method_lib.Method(
            method=config.method,
            wbits=config.wbits,
            abits=config.abits,
            activation_quantizer=config.activation_quantizer,
        )
        method_lib.scaled_filters(1, config.width_multiplier)
    except ValueError as error:
        raise UsageError(str(error).replace("Invalid ", "Invalid --", 1)) from None
    for name, low in (
        ("epochs", 1),
        ("batch_size", 1),
        ("steps_per_epoch", 1),
        ("image_size", 8),
        ("bn_calibration_steps", 0),
        ("temperature_restarts", 0),
        ("seed", 0),
    ):
        value = getattr(config, name)
        if value is not None and not (_is_int(value) and value >= low):
            raise _invalid(name, value, f"an integer >= {low}")
    for name, allowed in (
        ("optimizer", OPTIMIZERS),
        ("lr_schedule", LR_SCHEDULES),
        ("temperature_schedule", TEMPERATURE_SCHEDULES),
        ("strategy", STRATEGIES),
    ):
        if getattr(config, name) not in allowed:
            raise _invalid(name, getattr(config, name), "one of " + ", ".join(allowed))
    for name in ("lr", "temperature_start", "temperature_end"):
        value = getattr(config, name)
        if not (_is_number(value) and value > 0):
            raise _invalid(name, value, "a finite number > 0")
    if not (_is_number(config.weight_decay) and config.weight_decay >= 0):
        raise _invalid("weight_decay", config.weight_decay, "a finite number >= 0")
    start, end = config.temperature_start_fraction, config.temperature_end_fraction
    if not (_is_number(start) and _is_number(end) and 0 <= start < end <= 1):
        raise _invalid(
            "temperature_start_fraction/--temperature_end_fraction",
            f"{start}/{end}",
            "fractions of training with 0 <= start < end <= 1",
        )
    steps = config.lr_step_epochs
    if not (
        isinstance(steps, tuple)
        and all(_is_number(s) and 0 < s < 1 for s in steps)
        and list(steps) == sorted(steps)
    ):
        raise _invalid("lr_step_epochs", steps, "increasing fractions of training in (0, 1)")
    for name in ("sbn", "sync_bn", "deterministic", "mixed_precision", "jit_compile", "export"):
        if not isinstance(getattr(config, name), bool):
            raise _invalid(name, getattr(config, name), "true or false")
    if not isinstance(config.dataset, str) or not config.dataset:
        raise _invalid("dataset", config.dataset, "a data set name or path")
    if config.data_dir is not None and not os.path.isdir(config.data_dir):
        raise _invalid("data_dir", config.data_dir, "an existing directory (no such directory)")
    if config.model_dir is None:
        data_name = os.path.splitext(os.path.basename(config.dataset.rstrip("/")))[0]
        name = f"{config.model}_{config.method}_w{config.wbits}a{config.abits}_{data_name}"
        config = dataclasses.replace(config, model_dir=os.path.join("runs", name))
    return config


def run_settings(config):
    """The fields of `config` that define what is trained (saved in flags.json).

    Example:

    >>> settings = run_settings(resolve(Config()))
    >>> "model_dir" in settings, settings["lr"]
    (False, 0.02)
    """
    settings = dataclasses.asdict(config)
    for name in RUN_INDEPENDENT:
        settings.pop(name)
    settings["lr_step_epochs"] = list(settings["lr_step_epochs"])
    return settings


def make_strategy(name):
    """The `tf.distribute.Strategy` for `--strategy=name` (one of `STRATEGIES`).

    auto: MultiWorkerMirroredStrategy when TF_CONFIG is set, MirroredStrategy over the
    GPUs when there are several, else the default strategy (one device).

    Example:

    >>> make_strategy("one_device").num_replicas_in_sync
    1
    """
    if name == "multi_worker" or (name == "auto" and os.environ.get("TF_CONFIG")):
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def _worker(strategy):
    """(is_chief, task id) of this process in a multi-worker cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True, 0
    task_type, task_id = resolver.task_type, resolver.task_id or 0
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "chief" or (not has_chief and task_type == "worker" and task_id == 0), task_id


def _temporary_file(path):
    """A new file beside `path` (same file system, so os.replace is atomic), mode per umask."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=os.path.dirname(path))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return fd, tmp


def _atomic_write(path, write):
    """Calls write(file object) on a temporary file beside `path`, then renames it."""
    fd, tmp = _temporary_file(path)
    try:
        with os.fdopen(fd, "w") as file:
            write(file)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _write_json(path, value):
    _atomic_write(path, lambda file: json.dump(value, file, indent=2, sort_keys=True))


def _read_json(path):
    with open(path) as file:
        return json.load(file)


def _check_model_dir(config, is_chief=True):
    """Refuses a model_dir that cannot be written or holds another run; touches nothing.

    Returns:
        The existing summary dict when the same run already completed there, else None.
    """
    model_dir = config.model_dir
    flags_path = os.path.join(model_dir, FLAGS_FILE)
    if os.path.exists(model_dir) and not os.path.isdir(model_dir):
        raise _invalid("model_dir", model_dir, "a directory (it is a file)")
    if os.path.isdir(model_dir):
        if not os.access(model_dir, os.W_OK | os.X_OK):
            raise _invalid("model_dir", model_dir, "a writable directory")
        if os.path.exists(flags_path):
            saved = _read_json(flags_path)
            settings = run_settings(config)
            for name in sorted(set(saved) | set(settings)):
                if saved.get(name) != settings.get(name):
                    raise UsageError(
                        f"Invalid --model_dir={model_dir}: it holds a run made with "
                        f"--{name}={saved.get(name)} (here {settings.get(name)}); resume it "
                        "with the same flags or choose another --model_dir."
                    )
            summary_path = os.path.join(model_dir, SUMMARY_FILE)
            return _read_json(summary_path) if os.path.exists(summary_path) else None
        if is_chief and os.listdir(model_dir):  # other workers may race the chief's writes
            raise UsageError(
                f"Invalid --model_dir={model_dir}: the directory is not empty and holds "
                f"no {FLAGS_FILE}; choose a new or empty directory."
            )
        return None
    parent = os.path.dirname(os.path.abspath(model_dir))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise _invalid("model_dir", model_dir, "a directory that can be created and written")
    return None


def _create_model_dir(config, is_chief):
    try:
        os.makedirs(config.model_dir, exist_ok=True)
        if is_chief and not os.path.exists(os.path.join(config.model_dir, FLAGS_FILE)):
            _write_json(os.path.join(config.model_dir, FLAGS_FILE), run_settings(config))
    except OSError as error:
        raise _invalid("model_dir", config.model_dir, f"a writable directory ({error.strerror})")


def make_lr_schedule(config, steps_per_epoch):
    """cosine (to 0 at the end) or step (x0.1 at `lr_step_epochs`) schedule; constant: a float.

    Example:

    >>> schedule = make_lr_schedule(resolve(Config(model="resnet18", epochs=10)), 100)
    >>> [round(float(schedule(step)), 6) for step in (0, 599, 600)]  # x0.1 from epoch 6
    [0.001, 0.001, 0.0001]
    """
    if config.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(config.lr, config.epochs * steps_per_epoch)
    if config.lr_schedule == "step":
        # PiecewiseConstantDecay switches after step b: the decayed rate starts exactly
        # at the first step of epoch round(f * epochs).
        boundaries = [
            max(0, round(f * config.epochs) * steps_per_epoch - 1) for f in config.lr_step_epochs
        ]
        values = [config.lr * STEP_DECAY**i for i in range(len(boundaries) + 1)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
    return config.lr


def make_optimizer(config, steps_per_epoch):
    """SGD (momentum 0.9) or Adam with the learning rate schedule and (decoupled) weight decay.

    Example:

    >>> optimizer = make_optimizer(resolve(Config()), steps_per_epoch=10)
    >>> type(optimizer).__name__, optimizer.momentum, optimizer.weight_decay
    ('SGD', 0.9, 0.0005)
    """
    lr = make_lr_schedule(config, steps_per_epoch)
    weight_decay = config.weight_decay or None
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(lr, momentum=SGD_MOMENTUM, weight_decay=weight_decay)
    return keras.optimizers.Adam(lr, weight_decay=weight_decay)


class _EpochTimer(keras.callbacks.Callback):
    """Adds `epoch_seconds` (training + validation wall time) to the epoch logs."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)
        if logs is not None:
            logs["epoch_seconds"] = self.seconds[-1]


def _slb_callbacks(config, calibration_ds, total_steps, calibration_steps, log_dir):
    """Temperature schedule, SLB metrics and BN calibration (method "slb").

    The calibration runs after every epoch's training steps (before validation, so the
    val_* metrics are those of the hard network) and once more at the end of training.
    """
    callbacks = [
        slb_keras.TemperatureScheduler(
            start=config.temperature_start,
            end=config.temperature_end,
            schedule=config.temperature_schedule,
            total_steps=total_steps,
            restarts=config.temperature_restarts,
            start_fraction=config.temperature_start_fraction,
            end_fraction=config.temperature_end_fraction,
        ),
        slb_keras.SLBMetrics(x=calibration_ds, log_dir=log_dir),
    ]
    if calibration_steps:
        callbacks.append(slb_keras.BNCalibration(calibration_ds, steps=calibration_steps))
    return callbacks


@contextlib.contextmanager
def _keras_multi_worker_fixes(model, strategy):
    """Lets Keras 3.15 `fit`/`evaluate` run under MultiWorkerMirroredStrategy.

    Two Keras bugs (keras-team/keras#20585) stop them at their first step: the first
    distributed batch is passed whole to `strategy.reduce` (for the shapes of the
    symbolic build; the local replica's part gives the same shapes), and each step's
    scalar logs are reduced with `axis=0`. Without the multi-worker branch, a step's
    logs are this worker's values (progress bar only); the epoch logs come from the
    metric variables (sync-on-read sums), whose read adds up all workers. Other
    strategies are left alone.
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        yield
        return
    from keras.src.backend.tensorflow import trainer as tf_trainer

    def maybe_symbolic_build(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = tf.nest.map_structure(
                    lambda value: strategy.experimental_local_results(value)[0], next(batches)
                )
                break
        with strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    original = tf_trainer._collective_all_reduce_multi_worker
    model._maybe_symbolic_build = maybe_symbolic_build
    tf_trainer._collective_all_reduce_multi_worker = lambda strategy: False
    try:
        yield
    finally:
        tf_trainer._collective_all_reduce_multi_worker = original
        del model._maybe_symbolic_build


def _read_history(path):
    """Rows of history.csv by epoch (a re-run epoch keeps its last row)."""
    if not os.path.exists(path):
        return []
    rows = {}
    with open(path, newline="") as file:
        for row in csv.DictReader(file):
            rows[int(row["epoch"])] = {k: float(v) for k, v in row.items() if v not in ("", None)}
    return [rows[e] for e in sorted(rows)]


def run(flags_or_config, datasets_override=None, strategy_override=None):
    """Trains, calibrates, evaluates and saves one model; returns the run's summary.

    Args:
        flags_or_config: a `Config`, a dict of its fields or absl FLAGS.
        datasets_override: optional `(train, test)` datasets (tf.data or distributed)
            used instead of `input_pipeline.make_datasets`; the training one must
            repeat (steps_per_epoch batches per epoch). The data set's info (classes,
            shape, sizes) still comes from `config.dataset`.
        strategy_override: optional `tf.distribute.Strategy` instead of `config.strategy`.

    Returns:
        The summary dict written to summary.json: "config" (all settings), "test_accuracy"
        and "test_loss" (hard network, after calibration), "seconds_per_epoch",
        "epoch_seconds" (epochs run by this call), "resumed_from_epoch", "parameters"
        (`models.count_weights`), "history" (every epoch's logs), "strategy", "replicas".

    Raises:
        UsageError: for bad input (flags, data, model_dir); nothing in model_dir is
            changed in that case.

    Example:

    >>> summary = run({"dataset": "digits", "epochs": 1, "model_dir": "runs/quick"})  # doctest: +SKIP
    >>> summary["test_accuracy"]  # doctest: +SKIP
    """
    config = resolve(config_from(flags_or_config))
    strategy = strategy_override or make_strategy(config.strategy)
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise _invalid("batch_size", config.batch_size, f"a multiple of the {replicas} replicas")
    try:
        info = input_pipeline.get_dataset_info(config.dataset, config.data_dir, config.image_size)
        steps_per_epoch = config.steps_per_epoch or info.steps_per_epoch(config.batch_size)
    except ValueError as error:
        raise UsageError(f"--dataset={config.dataset}: {error}") from None
    is_chief, task_id = _worker(strategy)
    done = _check_model_dir(config, is_chief)
    if done is not None:
        print(f"{config.model_dir} holds this completed run: nothing to do.", flush=True)
        return done
    _create_model_dir(config, is_chief)

    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    policy = keras.config.dtype_policy()
    if config.mixed_precision:
        keras.config.set_dtype_policy("mixed_float16")
    try:
        return _train(config, strategy, info, steps_per_epoch, is_chief, task_id, datasets_override)
    finally:
        keras.config.set_dtype_policy(policy)


def _train(config, strategy, info, steps_per_epoch, is_chief, task_id, datasets_override):
    model_dir = config.model_dir
    backup_dir = os.path.join(model_dir, BACKUP_DIR if is_chief else f"{BACKUP_DIR}-worker{task_id}")
    with strategy.scope():
        model = models.get_model(
            config.model,
            method=config.method,
            wbits=config.wbits,
            abits=config.abits,
            input_shape=info.input_shape,
            num_classes=info.num_classes,
            width_multiplier=config.width_multiplier,
            activation_quantizer=config.activation_quantizer,
            sbn=config.sbn,
            sync_bn=config.sync_bn,
        )
        model.compile(
            optimizer=make_optimizer(config, steps_per_epoch),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
            jit_compile=config.jit_compile,
        )
        backup = keras.callbacks.BackupAndRestore(
            backup_dir, double_checkpoint=True, delete_checkpoint=False
        )
        backup.set_model(model)
        backup.on_train_begin()  # restores the last completed epoch, if any
    initial_epoch = min(int(model.optimizer.iterations.numpy()) // steps_per_epoch, config.epochs)
    if initial_epoch:
        taus = [float(layer.temperature.numpy()) for layer in slb_keras.slb_layers(model)]
        print(
            f"Resuming {model_dir} at epoch {initial_epoch + 1}/{config.epochs} "
            f"(step {int(model.optimizer.iterations.numpy())}"
            + (f", temperature {taus[0]:.6g})" if taus else ")"),
            flush=True,
        )

    calibration_ds = None
    if datasets_override is not None:
        train_ds, test_ds, *calibration = datasets_override
        calibration_ds = calibration[0] if calibration else train_ds
    else:
        train_ds, test_ds = input_pipeline.make_datasets(
            config.dataset,
            config.data_dir,
            config.batch_size,
            strategy,
            image_size=config.image_size,
            seed=config.seed,
            initial_epoch=initial_epoch,
            steps_per_epoch=steps_per_epoch,
        )
        if config.method == "slb":  # global batches of the training set (epoch 0)
            calibration_ds = input_pipeline.build_dataset(
                config.dataset,
                "train",
                config.batch_size,
                data_dir=config.data_dir,
                image_size=config.image_size,
                seed=config.seed,
                steps_per_epoch=steps_per_epoch,
            )
    calibration_steps = config.bn_calibration_steps
    if calibration_steps is None:
        calibration_steps = max(1, math.ceil(info.num_test / config.batch_size))
    if config.method != "slb" or not config.sbn:
        calibration_steps = 0  # no hard statistics to calibrate

    timer = _EpochTimer()
    callbacks = [timer]
    if config.method == "slb":
        callbacks += _slb_callbacks(
            config,
            calibration_ds,
            config.epochs * steps_per_epoch,
            calibration_steps,
            os.path.join(model_dir, LOG_DIR) if is_chief else None,
        )
    if is_chief:
        callbacks.append(keras.callbacks.CSVLogger(os.path.join(model_dir, HISTORY_FILE), append=True))
    callbacks.append(backup)
    if is_chief:
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(model_dir, LOG_DIR)))
    verbose = config.verbose if config.verbose is not None else (1 if sys.stdout.isatty() else 2)
    with _keras_multi_worker_fixes(model, strategy):
        model.fit(
            train_ds,
            epochs=config.epochs,
            initial_epoch=initial_epoch,
            steps_per_epoch=steps_per_epoch,
            validation_data=test_ds,
            shuffle=False,  # the pipeline shuffles, by epoch
            callbacks=callbacks,
            verbose=verbose,
        )
        test_loss, test_accuracy = model.evaluate(test_ds, verbose=0)
    summary = _make_summary(config, model, strategy, initial_epoch, timer.seconds, test_loss, test_accuracy)
    if is_chief:
        _save_model(model, os.path.join(model_dir, MODEL_FILE))
        if config.export:
            # STE layers go out as the SLB layers of the same hard kernel (exact int8).
            exported = models.ste.to_slb_model(model) if config.method == "ste" else model
            slb_keras.export_tflite(exported, os.path.join(model_dir, TFLITE_FILE))
            summary["tflite_file"] = TFLITE_FILE
        summary["history"] = _read_history(os.path.join(model_dir, HISTORY_FILE))
        _write_json(os.path.join(model_dir, SUMMARY_FILE), summary)
    shutil.rmtree(backup_dir, ignore_errors=True)
    if is_chief:
        print(
            f"Hard-quantized test accuracy {test_accuracy:.4f} ({config.method}, "
            f"W{config.wbits}/A{config.abits}); summary in {model_dir}/{SUMMARY_FILE}",
            flush=True,
        )
    return summary


def _save_model(model, path):
    fd, tmp = _temporary_file(path)  # ends in .keras, as model.save requires
    os.close(fd)
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _make_summary(config, model, strategy, initial_epoch, epoch_seconds, test_loss, test_accuracy):
    """The run's summary: config, final hard test accuracy, timing, parameter counts."""
    return {
        "config": {**dataclasses.asdict(config), "lr_step_epochs": list(config.lr_step_epochs)},
        "test_accuracy": float(test_accuracy),
        "test_loss": float(test_loss),
        "resumed_from_epoch": initial_epoch,
        "seconds_per_epoch": (sum(epoch_seconds) / len(epoch_seconds)) if epoch_seconds else None,
        "epoch_seconds": list(epoch_seconds),
        "parameters": models.count_weights(model),
        "strategy": type(strategy).__name__,
        "replicas": strategy.num_replicas_in_sync,
        "model_file": MODEL_FILE,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "slb_keras": slb_keras.__version__,
    }
