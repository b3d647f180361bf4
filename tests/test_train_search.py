"""train.py's bit-width search (--wbits=1,2,4 --bit_budget=B): the two phases, what the
run leaves behind, and resume after kill -9 in either phase.

(Bad combinations of the search flags are in test_train.py's BAD_INPUT.)
"""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

import slb_keras
import training
from tiny_run import TINY, child_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SEARCH = {**TINY, "wbits": (1, 2, 4), "abits": 2, "bit_budget": 2.0, "epochs": 3, "steps_per_epoch": 3}


def _read(path):
    with open(path) as file:
        return json.load(file)


def test_a_search_run_fixes_its_widths_within_the_budget_and_its_files_load(tmp_path, capsys):
    model_dir = tmp_path / "search"
    summary = training.run({**SEARCH, "model_dir": str(model_dir), "export": True})
    out = capsys.readouterr().out
    assert out.startswith("Bit-width search: each layer chooses 1, 2 or 4 bits under an average of 2 bits")
    assert "Search done after epoch 2/3" in out  # round(0.5 * 3) = 2 epochs of search

    widths = _read(model_dir / training.WIDTHS_FILE)
    assert summary["wbits_per_layer"] == widths and set(widths.values()) <= {1, 2, 4}
    assert summary["search_epochs"] == 2 and summary["recipe"]["search_epochs"] == 2
    # The average over quantized weights, within the budget (and what the fixed model has).
    model = keras.models.load_model(model_dir / training.MODEL_FILE)
    layers = slb_keras.slb_layers(model)
    assert {layer.name: layer.wbits for layer in layers} == widths
    assert not any(layer.searched for layer in layers)
    counts = {layer.name: int(np.prod(layer.kernel_logits.shape[:-1])) for layer in layers}
    average = sum(counts[n] * w for n, w in widths.items()) / sum(counts.values())
    assert summary["average_wbits"] == pytest.approx(average) and average <= 2.0 + 1e-9
    # The search logged its expected bits and lambda; the fixed epoch has neither.
    history = summary["history"]
    assert [("expected_wbits" in row, "bit_lambda" in row) for row in history] == [
        (True, True), (True, True), (False, False)
    ]
    assert not (model_dir / "backup").exists() and not (model_dir / "backup-search").exists()
    # The saved model is the hard network tested; its TFLite export computes it.
    x = np.random.default_rng(0).random((4, *model.input_shape[1:]), dtype=np.float32) * 255
    reference = model(x, training=False).numpy()
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(model_dir / training.TFLITE_FILE)).get_signature_runner()
    (output,) = runner(image=x).values()
    np.testing.assert_allclose(output, reference, atol=1e-3)
    slb_keras.export_packed(model, str(tmp_path / "model.slbpack"))  # b-bit codes, each its own b
    restored = slb_keras.load_packed(str(tmp_path / "model.slbpack"))
    np.testing.assert_allclose(restored(x, training=False).numpy(), reference, atol=1e-4)


def _train_py(flags, model_dir):
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "train.py"), *flags, f"--model_dir={model_dir}"],
        cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=300,
    )


def _kill_when(flags, model_dir, ready, timeout=240):
    """Starts train.py, kills it (-9) as soon as `ready()` holds; asserts it was still running."""
    process = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "train.py"), *flags, f"--model_dir={model_dir}"],
        cwd=ROOT, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + timeout
        while time.time() < deadline and process.poll() is None and not ready():
            time.sleep(0.02)
        assert process.poll() is None, "the run ended before it could be killed"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()


@pytest.mark.slow
def test_kill_9_in_the_search_and_after_it_then_resume_matches_uninterrupted_run(tmp_path):
    settings = {**SEARCH, "epochs": 4, "wbits": "1,2,4"}
    flags = [f"--{k}={v}" for k, v in settings.items() if k != "verbose"] + ["--deterministic"]
    straight = _train_py(flags, tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-3000:]
    reference = _read(tmp_path / "straight" / training.SUMMARY_FILE)

    model_dir = tmp_path / "killed"
    metadata = model_dir / "backup-search" / "training_metadata.json"

    def searched_one_epoch():
        try:
            return json.loads(metadata.read_text() or "{}").get("epoch", 0) >= 1
        except (OSError, ValueError):
            return False

    _kill_when(flags, model_dir, searched_one_epoch)  # in the search (epoch 2 of 2)
    assert not (model_dir / training.WIDTHS_FILE).exists()
    _kill_when(flags, model_dir, (model_dir / training.WIDTHS_FILE).exists)  # just after it
    assert not (model_dir / training.SUMMARY_FILE).exists()

    resumed = _train_py(flags, model_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "the search is done; training on at these widths" in resumed.stdout
    summary = _read(model_dir / training.SUMMARY_FILE)
    assert summary["wbits_per_layer"] == reference["wbits_per_layer"]
    weights = [keras.models.load_model(d / training.MODEL_FILE).weights for d in (tmp_path / "straight", model_dir)]
    differ = [a.path for a, b in zip(*weights) if not np.array_equal(a.numpy(), b.numpy())]
    assert differ == []
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("epoch_seconds", "train_seconds")} for r in rows]
    assert strip(summary["history"]) == strip(reference["history"])
    assert (summary["test_accuracy"], summary["test_loss"]) == (reference["test_accuracy"], reference["test_loss"])


def test_a_widths_file_that_does_not_fit_the_network_is_refused_in_one_line(tmp_path):
    model_dir = tmp_path / "search"  # as a run killed after its search leaves it, widths edited
    model_dir.mkdir()
    config = training.resolve(training.Config(**{**SEARCH, "model_dir": str(model_dir)}))
    (model_dir / training.FLAGS_FILE).write_text(json.dumps(training.run_settings(config)))
    (model_dir / training.WIDTHS_FILE).write_text(json.dumps({"conv9": 2}))
    with pytest.raises(training.UsageError, match=(
        r"Invalid --model_dir=.*: its widths.json does not fit this run's network \(Invalid "
        r"widths=\{'conv9': 2\}: expected a dict with one width for each searched layer"
    )):
        training.run(config)
    assert json.loads((model_dir / training.WIDTHS_FILE).read_text()) == {"conv9": 2}  # kept
