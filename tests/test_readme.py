"""The README's Python examples run as written and do what their comments say."""

import json
import os
import pathlib
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

import slb_keras
from tiny_run import child_env

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
# Examples that read the files of a train.py run (under runs/) / that build their own model.
RUN_BLOCKS = [block for block in BLOCKS if "runs/" in block]
MODEL_BLOCKS = [block for block in BLOCKS if "runs/" not in block]


def test_readme_has_examples():
    assert len(MODEL_BLOCKS) >= 1 and len(RUN_BLOCKS) >= 1


def _check_model(model):
    """SLB layers whose deployed weights are values of the value set."""
    layers = slb_keras.slb_layers(model)
    assert layers, "the example's model has no SLB layer"
    for layer in layers:
        hard = np.unique(layer.hard_kernel().numpy())
        assert set(hard.tolist()) <= set(slb_keras.value_set(layer.chosen_wbits()).tolist()), layer.name


def _check_saved(block, model):
    """Every `model.save("file")` wrote a file that loads with the same weights."""
    for name in re.findall(r'model\.save\("([^"]+)"\)', block):
        loaded = keras.models.load_model(name)
        for a, b in zip(model.weights, loaded.weights):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _check_fit(namespace):
    history = namespace["history"].history
    tau = history.get("temperature")
    if tau is not None:
        assert tau == sorted(tau) and tau[0] < tau[-1], tau  # the schedule grows tau
    for key in ("slb_max_prob",):
        if key in history:
            assert all(0.0 < v <= 1.0 for v in history[key]), history[key]


def _check_calibrated(model):
    bns = [layer for layer in model.layers if isinstance(layer, slb_keras.StateBatchNormalization)]
    assert bns and all(float(bn.calibrated.numpy()) == 1.0 for bn in bns)


@pytest.mark.parametrize("index", range(len(MODEL_BLOCKS)))
def test_readme_example_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples write files (models, exports) here
    block = MODEL_BLOCKS[index]
    namespace = {"__name__": f"readme_example_{index}"}
    exec(compile(block, f"README.md[python block {index}]", "exec"), namespace)
    model = namespace.get("model")
    assert isinstance(model, keras.Model), "every example builds a `model`"
    _check_model(model)
    _check_saved(block, model)
    if "history" in namespace:
        _check_fit(namespace)
    if "calibrate_bn(" in block:
        _check_calibrated(model)
    if "interpreter" in namespace:  # the TFLite model computes what the Keras model does
        x, y = namespace["x"], namespace["y"]
        assert np.abs(y - model.predict(x, verbose=0)).max() < 1e-4
    if "rebuilt" in namespace:  # the packed file holds the same network
        x = namespace["x"]
        np.testing.assert_array_equal(
            namespace["rebuilt"].predict(x, verbose=0),
            slb_keras.to_inference_model(model).predict(x, verbose=0),
        )
    if "fixed" in namespace:  # the end of a bit-width search: one width each, within the budget
        searched = {layer.name: layer.wbits for layer in slb_keras.slb_layers(model)}
        for layer in slb_keras.slb_layers(namespace["fixed"]):
            assert layer.wbits in searched[layer.name], (layer.name, layer.wbits)
        assert slb_keras.average_wbits(namespace["fixed"]) <= 2.0
        assert os.path.getsize("searched.slb") > 0
    report = namespace.get("report")
    if isinstance(report, slb_keras.ModelSummary):
        assert report.compression_ratio > 1.0 and report.logits > 0


def test_readme_deploy_example_feeds_load_digits_images_to_a_train_py_export(tmp_path, monkeypatch, capsys):
    """The first command's run, shrunk (width, steps), then the example on its model.tflite:
    the TFLite file fed images as load_digits returns them scores summary.json's accuracy."""
    first_command = re.search(r"```bash\npip install -e \. && (python train\.py [^\n]*)\n", README.read_text())
    assert first_command and "--export" in first_command.group(1), "the first command exports"
    args = first_command.group(1).split()[2:]
    args += ["--epochs=1", "--steps_per_epoch=2", "--width_multiplier=0.0625", "--bn_calibration_steps=2"]
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=tmp_path, env=child_env(), capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "runs" / "vgg_small_slb_w1a1_digits" / "summary.json").read_text())
    monkeypatch.chdir(tmp_path)
    for block in RUN_BLOCKS:
        exec(compile(block, "README.md[run example]", "exec"), {"__name__": "readme_run_example"})
    printed = float(capsys.readouterr().out.split()[-1])
    assert printed == pytest.approx(summary["test_accuracy"], abs=1e-6)
