"""The files of a run in its `model_dir`: their names, atomic writes, checks before a run.

`check_model_dir` refuses a directory that cannot be written or holds another run (its
flags.json differs) without touching anything; `create_model_dir` then creates it and
writes flags.json. Every file the run writes (flags.json, summary.json, model.keras) is
written to a temporary file beside its target and renamed, so a killed run never leaves
a half-written one.

The examples below write into the current directory.
"""

import csv
import json
import os
import tempfile

from training.config import UsageError, invalid_flag, run_settings

FLAGS_FILE = "flags.json"
SUMMARY_FILE = "summary.json"
MODEL_FILE = "model.keras"
TFLITE_FILE = "model.tflite"
HISTORY_FILE = "history.csv"
BACKUP_DIR = "backup"
LOG_DIR = "logs"


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


def check_model_dir(config, is_chief=True):
    """Refuses a model_dir that cannot be written or holds another run; touches nothing.

    Returns:
        The existing summary dict when the same run already completed there, else None.

    Raises:
        UsageError: naming --model_dir and the problem (a file, not writable, another
            run's flags.json, or a non-empty directory without one).

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
            saved = read_json(flags_path)
            settings = run_settings(config)
            for name in sorted(set(saved) | set(settings)):
                if saved.get(name) != settings.get(name):
                    raise UsageError(
                        f"Invalid --model_dir={model_dir}: it holds a run made with "
                        f"--{name}={saved.get(name)} (here {settings.get(name)}); resume it "
                        "with the same flags or choose another --model_dir."
                    )
            summary_path = os.path.join(model_dir, SUMMARY_FILE)
            return read_json(summary_path) if os.path.exists(summary_path) else None
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
        raise invalid_flag("model_dir", model_dir, "a directory that can be created and written")
    return None


def create_model_dir(config, is_chief):
    """Creates config.model_dir and (chief only, if absent) writes its flags.json.

    Example:

    >>> from training.config import Config, resolve
    >>> create_model_dir(resolve(Config(model_dir="run")), is_chief=True)
    >>> os.listdir("run")
    ['flags.json']
    """
    try:
        os.makedirs(config.model_dir, exist_ok=True)
        if is_chief and not os.path.exists(os.path.join(config.model_dir, FLAGS_FILE)):
            write_json(os.path.join(config.model_dir, FLAGS_FILE), run_settings(config))
    except OSError as error:
        raise invalid_flag("model_dir", config.model_dir, f"a writable directory ({error.strerror})")


def read_history(path):
    """Rows of history.csv by epoch (a re-run epoch keeps its last row); [] if absent.

    Example:

    >>> with open("history.csv", "w") as file:
    ...     _ = file.write("epoch,loss\\n0,2.5\\n1,2.0\\n1,1.5\\n")
    >>> read_history("history.csv")
    [{'epoch': 0.0, 'loss': 2.5}, {'epoch': 1.0, 'loss': 1.5}]
    """
    if not os.path.exists(path):
        return []
    rows = {}
    with open(path, newline="") as file:
        for row in csv.DictReader(file):
            rows[int(row["epoch"])] = {k: float(v) for k, v in row.items() if v not in ("", None)}
    return [rows[e] for e in sorted(rows)]


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
