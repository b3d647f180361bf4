"""What the train.py and input-pipeline tests share.

The tiny training run (its config and flags), the environment of a train.py
child process, a small valid .npz data set, a snapshot of a run directory, the
one-line refusal of bad data, and the doctests of a package's modules.
"""

import doctest
import hashlib
import importlib
import os
import pkgutil

import numpy as np
import pytest

import input_pipeline

# vgg_small at 1/16 width on 16x16 digits, 2 epochs of 2 steps: seconds per run.
TINY = dict(
    model="vgg_small",
    dataset="digits",
    width_multiplier=0.0625,
    image_size=16,
    epochs=2,
    steps_per_epoch=2,
    batch_size=16,
    bn_calibration_steps=2,
    verbose=0,
)
TINY_FLAGS = [f"--{k}={v}" for k, v in TINY.items() if k != "verbose"]


def child_env(**extra):
    """This process's environment for a child train.py: quiet TF, no GPU, no inherited TF_CONFIG."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def write_npz(path, num_train=64, num_test=32, classes=4, **arrays):
    """A valid float .npz of 8x8 images (`classes` classes), with `arrays` replaced.

    Returns `path` as a string. The same seed every time: equal arguments write
    equal files.
    """
    rng = np.random.default_rng(0)
    values = dict(
        x_train=rng.random((num_train, 8, 8), dtype=np.float32),
        y_train=np.arange(num_train) % classes,
        x_test=rng.random((num_test, 8, 8), dtype=np.float32),
        y_test=np.arange(num_test) % classes,
    )
    values.update(arrays)
    np.savez(path, **values)
    return os.fspath(path)


def snapshot(directory):
    """{relative path: sha256} of every file under `directory` (equal iff the files are)."""
    result = {}
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as file:
                result[os.path.relpath(path, directory)] = hashlib.sha256(file.read()).hexdigest()
    return result


def package_doctests(package):
    """Runs the examples of `package` and of each of its modules; {module name: examples run}.

    setup.cfg collects doctests under src/slb_keras/ and tests/ only, so the tests
    of the other packages run theirs with this. Fails on the first module with
    a failing example.
    """
    names = [package.__name__] + [
        f"{package.__name__}.{info.name}" for info in pkgutil.iter_modules(package.__path__)
    ]
    attempted = {}
    for name in names:
        result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, name
        attempted[name] = result.attempted
    return attempted


def refused(name, data_dir=None, error=input_pipeline.DataError):
    """The message of the `error` that get_dataset_info(name, data_dir) raises, checked to
    be one line."""
    with pytest.raises(error) as raised:
        input_pipeline.get_dataset_info(os.fspath(name), None if data_dir is None else os.fspath(data_dir))
    message = str(raised.value)
    assert "\n" not in message, message
    return message
