"""What a train.py run leaves behind: a model.keras that loads in a fresh process
after `import slb_keras` alone (safe mode on), and the last lines naming the files.

Each test runs the real command line on the tiny digits run (tests/tiny_run.py).
"""

import os
import subprocess
import sys

import pytest

from tiny_run import TINY_FLAGS, child_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train_py(args):
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "train.py"), *args],
        cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=300,
    )


def _load_in_child(path, cwd):
    """Loads `path` in a fresh interpreter that imports keras and slb_keras only."""
    code = (
        "import sys, keras, slb_keras\n"
        "model = keras.models.load_model(sys.argv[1], safe_mode=True)\n"
        "print(type(model.optimizer).__name__, model.count_params())\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, os.fspath(path)],
        cwd=cwd, env=child_env(), capture_output=True, text=True, timeout=300,
    )


@pytest.mark.parametrize(
    "optimizer, method, expected",
    [("sgd", "slb", "CoupledSGD"), ("adam", "slb", "CoupledAdam"), ("adam", "ste", "CoupledAdam")],
)
def test_model_keras_loads_after_import_slb_keras_alone(optimizer, method, expected, tmp_path):
    model_dir = tmp_path / "run"
    result = _train_py([*TINY_FLAGS, f"--optimizer={optimizer}", f"--method={method}", f"--model_dir={model_dir}"])
    assert result.returncode == 0, result.stderr[-3000:]
    # In a folder outside the clone: nothing but the installed package is importable.
    loaded = _load_in_child(model_dir / "model.keras", cwd=tmp_path)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert loaded.stdout.split()[0] == expected
