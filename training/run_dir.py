"""The files of a run in its `model_dir`: their names, atomic writes, checks before a run.

`check_model_dir` refuses a directory that cannot be written or holds another run (its
flags.json differs, or is unreadable) without touching anything; `create_model_dir` then
creates it and writes flags.json (under the run's lock, see `training.lock`). Every file
the run writes (flags.json, summary.json, model.keras, model.tflite) is written to a
temporary file beside its target and renamed, so a killed run never leaves a
half-written one; `remove_temporaries` clears those a killed run left behind, and
`truncate_history` drops history.csv's rows of the epochs a resumed run trains again.

The examples below write into the current directory.
"""

import csv
import dataclasses
import json
import os
import shutil
import tempfile
from types import MappingProxyType

from training.config import Config, run_settings
from training.usage import UsageError, invalid_flag
from training.lock import LOCK_FILE

FLAGS_FILE = "flags.json"
SUMMARY_FILE = "summary.json"
MODEL_FILE = "model.keras"
TFLITE_FILE = "model.tflite"
HISTORY_FILE = "history.csv"
BACKUP_DIR = "backup"
SEARCH_BACKUP_SUFFIX = "-search"  # a bit-width search's first phase: backup-search/
WIDTHS_FILE = "widths.json"
LOG_DIR = "logs"
# The fixed defaults of the settings: a flags.json without one (written before the
# setting existed) was a run with this value.
_DEFAULT_SETTINGS = MappingProxyType(
    {field.name: field.default for field in dataclasses.fields(Config) if field.default is not None}
)


def _atomic_write(path, write):
    """Calls write(file object) on a temporary file beside `path`, then renames it."""
    fd, tmp = _temporary_file(path)
    try:
        with os.fdopen(fd, "w", newline="") as file:
            write(file)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json(path, value):
    """Writes `value` as indented JSON with sorted keys, atomically (temporary file + rename).

    Example:

    >>> write_json("report.json", {"b": 1, "a": [2]})
    >>> read_json("report.json")
    {'a': [2], 'b': 1}
    """
    _atomic_write(path, lambda file: json.dump(value, file, indent=2, sort_keys=True))


def read_json(path):
    """The value stored in the JSON file `path`.

    Example:

    >>> write_json("values.json", [1, 2])
    >>> read_json("values.json")
    [1, 2]
    """
    with open(path) as file:
        return json.load(file)


TEMPORARY_PREFIX = ".tmp-"


def _temporary_file(path):
    """A new file beside `path` (same file system, so os.replace is atomic), mode per umask."""
    fd, tmp = tempfile.mkstemp(prefix=TEMPORARY_PREFIX, suffix=os.path.basename(path), dir=os.path.dirname(path))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return fd, tmp


def remove_temporaries(model_dir):
    """Removes the temporaries (`.tmp-*` files, and directories being deleted) a killed
    run left in `model_dir`; returns their names.

    Call it only while holding the run directory's lock: a live run's temporaries are
    its files being written.

    Example:

    >>> os.makedirs("stale", exist_ok=True)
    >>> _ = open(os.path.join("stale", ".tmp-abc123model.keras"), "w")
    >>> remove_temporaries("stale")
    ['.tmp-abc123model.keras']
    >>> os.listdir("stale")
    []
    """
    removed = []
    for name in sorted(os.listdir(model_dir)):
        path = os.path.join(model_dir, name)
        if name.startswith(TEMPORARY_PREFIX):
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.remove(path)
            removed.append(name)
    return removed


def _read_json_of_run(config, name):
    """The JSON value of `name` in model_dir; a UsageError if it is not readable JSON."""
    path = os.path.join(config.model_dir, name)
    try:
        return read_json(path)
    except (OSError, ValueError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        reason = error.strerror if isinstance(error, OSError) else f"not valid JSON: {error}"
        raise UsageError(
            f"Invalid --model_dir={config.model_dir}: its {name} is unreadable ({reason}); "
            + (
                "restore it or choose another --model_dir."
                if name == FLAGS_FILE
                else "the run completed but its summary is damaged: restore it, or choose "
                "another --model_dir to train again."
            )
        ) from None


def check_model_dir(config, is_chief=True):
    """Refuses a model_dir that cannot be written or holds another run; touches nothing.

    Returns:
        The existing summary dict when the same run already completed there, else None.

    Raises:
        UsageError: naming --model_dir and the problem (a file, not writable, another
            run's flags.json, an unreadable flags.json or summary.json, or a non-empty
            directory without flags.json).

    Example:

    >>> from training.config import Config, resolve
    >>> check_model_dir(resolve(Config(model_dir="new_run"))) is None, os.path.exists("new_run")
    (True, False)
    """
    model_dir = config.model_dir
    flags_path = os.path.join(model_dir, FLAGS_FILE)
    if os.path.exists(model_dir) and not os.path.isdir(model_dir):
        raise invalid_flag("model_dir", model_dir, "a directory (it is a file)")
    if os.path.isdir(model_dir):
        if not os.access(model_dir, os.W_OK | os.X_OK):
            raise invalid_flag("model_dir", model_dir, "a writable directory")
        if os.path.exists(flags_path):
            saved = _read_json_of_run(config, FLAGS_FILE)
            if not isinstance(saved, dict):
                raise UsageError(
                    f"Invalid --model_dir={model_dir}: its {FLAGS_FILE} holds no settings "
                    f"(a JSON {type(saved).__name__}); restore it or choose another --model_dir."
                )
            settings = run_settings(config)
            # A setting the saved run lacks is one added since: the run had its default.
            saved = {**{k: v for k, v in _DEFAULT_SETTINGS.items() if k in settings}, **saved}
            names = [*settings, *(name for name in saved if name not in settings)]  # flag order
            differ = [name for name in names if saved.get(name) != settings.get(name)]
            if differ:
                made = " ".join(f"--{name}={saved.get(name)}" for name in differ)
                here = " ".join(f"--{name}={settings.get(name)}" for name in differ)
                raise UsageError(
                    f"Invalid --model_dir={model_dir}: it holds a run made with {made} (here "
                    f"{here}); resume it with the same flags or choose another --model_dir, "
                    f"e.g. --model_dir={free_model_dir(model_dir)} (free)."
                )
            summary_path = os.path.join(model_dir, SUMMARY_FILE)
            return _read_json_of_run(config, SUMMARY_FILE) if os.path.exists(summary_path) else None
        own = [n for n in os.listdir(model_dir) if not n.startswith((LOCK_FILE, TEMPORARY_PREFIX))]
        if is_chief and own:  # other workers may race the chief's writes
            raise UsageError(
                f"Invalid --model_dir={model_dir}: the directory is not empty and holds "
                f"no {FLAGS_FILE}; choose a new or empty directory, e.g. "
                f"--model_dir={free_model_dir(model_dir)} (free)."
            )
        return None
    parent = os.path.dirname(os.path.abspath(model_dir))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise invalid_flag("model_dir", model_dir, "a directory that can be created and written")
    return None


def free_model_dir(model_dir):
    """`model_dir` with the first suffix -2, -3, ... that names nothing yet.

    Example:

    >>> os.makedirs("taken", exist_ok=True)
    >>> free_model_dir("taken")
    'taken-2'
    """
    base = model_dir.rstrip(os.sep)
    number = 2
    while os.path.lexists(f"{base}-{number}"):
        number += 1
    return f"{base}-{number}"


def create_model_dir(config, is_chief, write_flags=True):
    """Creates config.model_dir and (chief only, if absent and `write_flags`) writes its
    flags.json.

    Example:

    >>> from training.config import Config, resolve
    >>> create_model_dir(resolve(Config(model_dir="run")), is_chief=True)
    >>> os.listdir("run")
    ['flags.json']
    """
    try:
        os.makedirs(config.model_dir, exist_ok=True)
        if write_flags and is_chief and not os.path.exists(os.path.join(config.model_dir, FLAGS_FILE)):
            write_json(os.path.join(config.model_dir, FLAGS_FILE), run_settings(config))
    except OSError as error:
        raise invalid_flag("model_dir", config.model_dir, f"a writable directory ({error.strerror})")


def _history_rows(path):
    """(header, {epoch: row as a list of fields}) of history.csv; rows that are not a
    complete row of numbers under the first header (a second header written by a
    concurrent run, a line cut by a kill) are skipped, and a re-run epoch keeps its
    last row."""
    header, rows = None, {}
    if not os.path.exists(path):
        return header, rows
    with open(path, newline="") as file:
        for fields in csv.reader(file):
            if header is None:
                if fields and fields[0] == "epoch":
                    header = fields
                continue
            if len(fields) != len(header) or not all(_is_number(v) or v in ("", "NA") for v in fields):
                continue
            if _is_number(fields[0]) and float(fields[0]) == int(float(fields[0])) >= 0:
                rows[int(float(fields[0]))] = fields
    return header, rows


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_history(path):
    """Rows of history.csv by epoch (a re-run epoch keeps its last row); [] if absent.

    Lines that are not a row of numbers under the first header are skipped.

    Example:

    >>> with open("history.csv", "w") as file:
    ...     _ = file.write("epoch,loss\\n0,2.5\\n1,2.0\\nepoch,loss\\n1,1.5\\n2,1.\\n")
    >>> read_history("history.csv")
    [{'epoch': 0.0, 'loss': 2.5}, {'epoch': 1.0, 'loss': 1.5}, {'epoch': 2.0, 'loss': 1.0}]
    """
    header, rows = _history_rows(path)
    return [
        {k: float(v) for k, v in zip(header, rows[epoch]) if _is_number(v)} for epoch in sorted(rows)
    ]


def append_history(path, epoch, logs):
    """Writes epoch `epoch`'s logs into history.csv (atomically, the whole file).

    The header is the file's own, plus any key it lacks (sorted); a row without a
    value for a column leaves it empty. So a run whose epochs log other keys (a run
    resumed by a newer version, one with validation added) keeps every row readable,
    and a run without validation gets no empty val_* columns (Keras's CSVLogger pads
    them). A row of `epoch` already in the file is replaced.

    Example:

    >>> append_history("h.csv", 0, {"loss": 2.5, "val_loss": 3.0})
    >>> append_history("h.csv", 1, {"loss": 2.0, "temperature": 0.5})
    >>> print(open("h.csv").read().replace("\\r", ""), end="")
    epoch,loss,val_loss,temperature
    0,2.5,3.0,
    1,2.0,,0.5
    """
    old_header, rows = _history_rows(path)
    table = [dict(zip(old_header, fields)) for e, fields in rows.items() if e != epoch]
    values = {"epoch": epoch, **{key: float(value) for key, value in (logs or {}).items()}}
    table = sorted([*table, values], key=lambda row: float(row["epoch"]))
    header = old_header or ["epoch"]
    header = header + sorted(key for key in values if key not in header)

    def write(file):
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows([row.get(key, "") for key in header] for row in table)

    _atomic_write(path, write)


def truncate_history(path, epochs_done):
    """Rewrites history.csv (atomically) with its first header and the last row of each
    epoch below `epochs_done`: a resumed run appends the epochs it trains again once.

    Example:

    >>> with open("history.csv", "w") as file:
    ...     _ = file.write("epoch,loss\\n0,2.5\\n1,2.0\\nepoch,loss\\n1,1.5\\n2,1.")
    >>> truncate_history("history.csv", 2)
    >>> print(open("history.csv").read().replace("\\r", ""), end="")
    epoch,loss
    0,2.5
    1,1.5
    """
    if not os.path.exists(path):
        return
    header, rows = _history_rows(path)

    def write(file):
        if header is not None and epochs_done > 0:
            writer = csv.writer(file)
            writer.writerow(header)
            writer.writerows(rows[epoch] for epoch in sorted(rows) if epoch < epochs_done)

    _atomic_write(path, write)


def save_model(model, path):
    """`model.save(path)`, atomically: to a temporary .keras file beside `path`, then renamed.

    Example:

    >>> import keras
    >>> save_model(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]), "tiny.keras")
    >>> sorted(name for name in os.listdir() if "tiny" in name)  # no temporary file left
    ['tiny.keras']
    """
    fd, tmp = _temporary_file(path)  # ends in .keras, as model.save requires
    os.close(fd)
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _size(path):
    """Bytes of a file, or of every file under a directory."""
    if not os.path.isdir(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names)


def _human(size):
    for unit in ("bytes", "kB", "MB"):
        if size < 1000 or unit == "MB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000


def describe_files(model_dir):
    """The lines train.py ends with: each file of a finished run, its size, how to use it.

    Example:

    >>> os.makedirs("described", exist_ok=True)
    >>> write_json(os.path.join("described", SUMMARY_FILE), {"test_accuracy": 0.5})
    >>> print("\\n".join(describe_files("described")))
    Wrote described/:
      summary.json     26 bytes  the settings, the final hard test accuracy, timing
    """
    uses = {
        MODEL_FILE: "the trained model: `import slb_keras` then keras.models.load_model(path)",
        TFLITE_FILE: (
            "the hard-quantized network for TFLite: ai_edge_litert.interpreter.Interpreter("
            "model_path=path).get_signature_runner()(image=float32 images) -> logits"
        ),
        SUMMARY_FILE: "the settings, the final hard test accuracy, timing",
        HISTORY_FILE: "one row per epoch (loss, accuracy, val_*, temperature, seconds)",
        FLAGS_FILE: "the settings that define the run (a rerun must match them)",
        WIDTHS_FILE: "the bit width each layer's search chose (layer name -> bits)",
        LOG_DIR: f"TensorBoard: tensorboard --logdir {os.path.join(model_dir, LOG_DIR)}",
    }
    lines = [f"Wrote {model_dir.rstrip(os.sep)}{os.sep}:"]
    for name, use in uses.items():
        path = os.path.join(model_dir, name)
        if os.path.exists(path):
            shown = name + (os.sep if os.path.isdir(path) else "")
            lines.append(f"  {shown:14s} {_human(_size(path)):>10s}  {use}")
    return lines
