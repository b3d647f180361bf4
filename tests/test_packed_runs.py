"""Packed files hold the network only (issue 24): no optimizer, loss or metrics, so the
packed file of a real train.py run loads in a fresh process after `import slb_keras`.

The slow tests run the real command lines: train.py (each optimizer), then
`python -m slb_keras.export --packed`, then `load_packed` in a new interpreter.
"""

import io
import json
import os
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest

import slb_keras
from slb_keras.core import optimizers
from tiny_run import TINY_FLAGS, child_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def manifest(path):
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read("manifest.json"))


def compiled_model(optimizer):
    model = keras.Sequential([keras.Input((6,)), slb_keras.SLBDense(3, wbits=2)])
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def with_compile_config(path, out):
    """A copy of the packed file `path` whose manifest also holds the model's
    compile_config naming slb_keras.optimizers.CoupledAdam, as files written before
    issue 24 did (the manifest is not checksummed; the weight members are copied)."""
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: (info, archive.read(info)) for info in archive.infolist()}
    text = json.loads(members["manifest.json"][1])
    text["model"]["compile_config"] = {
        "optimizer": {"module": "slb_keras.optimizers", "class_name": "CoupledAdam",
                      "config": {"name": "coupled_adam", "learning_rate": 0.001},
                      "registered_name": "slb_keras>CoupledAdam"},
        "loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"],
    }
    members["manifest.json"] = (members["manifest.json"][0], json.dumps(text).encode())
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for info, data in members.values():
            archive.writestr(info, data)
    with open(out, "wb") as file:
        file.write(buffer.getvalue())


def load_in_child(path, inputs, cwd):
    """load_packed(path) in a new interpreter that imports slb_keras only; its
    predictions on `inputs` (an .npy file), or the child's output on failure."""
    code = (
        "import sys, numpy as np, slb_keras\n"
        "model = slb_keras.load_packed(sys.argv[1])\n"
        "np.save(sys.argv[3], model.predict(np.load(sys.argv[2]), verbose=0))\n"
        "print(type(model.optimizer).__name__ if getattr(model, 'optimizer', None) else 'none')\n"
    )
    out = os.path.join(cwd, "child_predictions.npy")
    result = subprocess.run(
        [sys.executable, "-c", code, os.fspath(path), os.fspath(inputs), out],
        cwd=cwd, env=child_env(), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return np.load(out), result.stdout.split()[-1]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_compiled_model_is_packed_without_its_optimizer(tmp_path, optimizer):
    optimizer = {"sgd": optimizers.CoupledSGD, "adam": optimizers.CoupledAdam}[optimizer]()
    model = compiled_model(optimizer)
    assert "compile_config" in json.loads(model.to_json())  # what was stored before
    slb_keras.export_packed(model, tmp_path / "model.slb")
    text = json.dumps(manifest(tmp_path / "model.slb"))
    assert "compile_config" not in text and "Coupled" not in text and "optimizer" not in text
    rebuilt = slb_keras.load_packed(tmp_path / "model.slb")
    x = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)
    np.testing.assert_array_equal(
        rebuilt.predict(x, verbose=0), slb_keras.to_inference_model(model).predict(x, verbose=0)
    )


def test_a_file_holding_a_compile_config_loads_in_a_fresh_process(tmp_path):
    model = compiled_model("adam")
    slb_keras.export_packed(model, tmp_path / "model.slb")
    with_compile_config(tmp_path / "model.slb", tmp_path / "old.slb")
    assert "CoupledAdam" in json.dumps(manifest(tmp_path / "old.slb"))
    x = np.random.default_rng(1).normal(size=(5, 6)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    predictions, optimizer = load_in_child(tmp_path / "old.slb", tmp_path / "x.npy", tmp_path)
    assert optimizer == "none"  # the file's compile_config is ignored
    np.testing.assert_array_equal(predictions, slb_keras.load_packed(tmp_path / "model.slb").predict(x, verbose=0))


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_the_packed_file_of_a_train_py_run_loads_in_a_fresh_process(tmp_path, optimizer):
    run = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "train.py"), *TINY_FLAGS, f"--optimizer={optimizer}",
         f"--model_dir={run}"],
        cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.load(open(run / "summary.json"))["config"]["optimizer"] == optimizer
    result = subprocess.run(
        [sys.executable, "-m", "slb_keras.export", f"--model={run / 'model.keras'}",
         f"--out={tmp_path / 'x.tflite'}", f"--packed={tmp_path / 'x.slb'}"],
        cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "compile_config" not in json.dumps(manifest(tmp_path / "x.slb"))
    # The run's own model, through the export's own route, gives the expected outputs.
    trained = keras.models.load_model(run / "model.keras")
    x = np.random.default_rng(2).uniform(0, 1, size=(3, *trained.input_shape[1:])).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    predictions, loaded_optimizer = load_in_child(tmp_path / "x.slb", tmp_path / "x.npy", tmp_path)
    assert loaded_optimizer == "none"
    expected = slb_keras.to_inference_model(trained).predict(x, verbose=0)
    np.testing.assert_allclose(predictions, expected, rtol=1e-5, atol=1e-5)
