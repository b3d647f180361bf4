"""A run's backup (Keras `BackupAndRestore`): restoring it, and what a killed run leaves.

`restore` loads the last completed epoch (or refuses in one line when the backup no
longer fits the model); `agree_backup_metadata` makes the epoch `fit` resumes at that of
the restored step counter; `leftovers` / `remove_leftovers` / `remove_dir` clear the
temporaries and backup a run killed after its summary.json leaves behind.
"""

import json
import os
import shutil

from training.usage import UsageError
from training.run_dir import BACKUP_DIR, SEARCH_BACKUP_SUFFIX, TEMPORARY_PREFIX, remove_temporaries, write_json

_BACKUPS = (BACKUP_DIR, BACKUP_DIR + SEARCH_BACKUP_SUFFIX)  # a run's, and a search's first phase's


def restore(backup, model, config, info):
    """Restores model and optimizer from the run's backup, or refuses in one line.

    Keras falls back to the previous backup (double_checkpoint) when the latest weights
    file is unreadable, but not when its metadata file is (a kill while writing it):
    that file only repeats the epoch, which the optimizer's step counter gives, so it
    is dropped here and rewritten by `agree_backup_metadata`.
    """
    backup.set_model(model)
    metadata = os.path.join(backup.backup_dir, "training_metadata.json")
    for path in (metadata, metadata + ".bkp"):
        try:
            with open(path) as file:
                json.load(file)["epoch"]
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError):
            os.remove(path)
    try:
        backup.on_train_begin()
    except Exception as error:  # noqa: BLE001 - h5py, shape and Keras errors alike: one line
        if isinstance(error, OSError):
            reason = (
                f"its backup in {backup.backup_dir} is unreadable ({' '.join(str(error).split())[:150]}); "
                "delete that directory to train from the start, or choose another --model_dir"
            )
        else:
            reason = (
                f"its backup in {backup.backup_dir} does not fit the model this run builds "
                f"({info.num_classes} classes, input {'x'.join(map(str, info.input_shape))}): "
                "the run's data no longer matches its backup (did --dataset's classes or images "
                "change?); restore the data or choose another --model_dir"
            )
        raise UsageError(f"Invalid --model_dir={config.model_dir}: {reason}.") from None


def agree_backup_metadata(backup_dir, epoch):
    """Makes the backup's epoch (which `fit` starts from) that of the restored step counter."""
    path = os.path.join(backup_dir, "training_metadata.json")
    if not epoch or not os.path.exists(path):
        return
    with open(path) as file:
        metadata = json.load(file)
    if metadata.get("epoch") != epoch:
        write_json(path, {**metadata, "epoch": epoch, "batch": 0})


def leftovers(model_dir):
    """What a run killed after writing summary.json left: temporaries and its backup.

    Example (in the current directory):

    >>> os.makedirs("done_run/backup", exist_ok=True)
    >>> leftovers("done_run")
    ['backup']
    >>> remove_leftovers("done_run")
    >>> leftovers("done_run")
    []
    """
    names = os.listdir(model_dir)
    return [n for n in names if n.startswith(TEMPORARY_PREFIX) or n in _BACKUPS]


def remove_leftovers(model_dir):
    """Removes the temporaries and the backups a finished run left in `model_dir`."""
    remove_temporaries(model_dir)
    for name in _BACKUPS:
        shutil.rmtree(os.path.join(model_dir, name), ignore_errors=True)


def remove_dir(path):
    """Removes a directory so that a kill cannot leave part of it under its own name.

    Example (in the current directory):

    >>> os.makedirs("old_backup/inner", exist_ok=True)
    >>> remove_dir("old_backup")
    >>> os.path.exists("old_backup")
    False
    """
    if not os.path.isdir(path):
        return
    parent, name = os.path.split(path)
    doomed = os.path.join(parent, f"{TEMPORARY_PREFIX}{name}-{os.getpid()}")
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)
