"""train.py and training.run: end to end on digits and mocked TFDS data, distribution,
resume after kill -9, and bad input (exit status 2, one line, nothing destroyed).

Every run is tiny (narrow networks, a few steps). The subprocess tests run the real
command line; the others call `training.run` in this process (two logical CPUs, see
conftest.py).
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import input_pipeline
import slb_keras
import train
import training
from slb_keras.datasets import load_digits
from tiny_run import TINY, TINY_FLAGS, child_env, package_doctests, snapshot, write_npz
from tfds_mock import write_tfds_metadata

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train_py(args, env=None, **kwargs):
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "train.py"), *args],
        cwd=ROOT,
        env=env or child_env(),
        capture_output=True,
        text=True,
        timeout=300,
        **kwargs,
    )


def _summary(model_dir):
    with open(os.path.join(model_dir, training.SUMMARY_FILE)) as file:
        return json.load(file)


def _weights(path):
    model = keras.models.load_model(path)
    return [v.numpy() for v in model.weights]


# --- configuration --------------------------------------------------------------------


def test_recipes_follow_the_spec():
    vgg = training.resolve(training.Config(model="vgg_small"))
    assert (vgg.dataset, vgg.optimizer, vgg.lr, vgg.weight_decay, vgg.batch_size, vgg.epochs) == (
        "cifar10", "sgd", 0.02, 5e-4, 100, 400
    )
    # the authors' per-epoch speed form at their budget (the authors' README)
    assert (vgg.temperature_start, vgg.temperature_speed, vgg.temperature_end) == (0.01, 1.03, None)
    assert (vgg.temperature_start_fraction, vgg.temperature_end_fraction) == (0.3, 0.9)
    assert (vgg.lr_schedule, vgg.weight_decay_mode, vgg.block, vgg.activation_quantizer) == (
        "step", "coupled", "conv", "dorefa"
    )
    resnet20 = training.resolve(training.Config(model="resnet20"))
    assert (resnet20.lr, resnet20.weight_decay, resnet20.activation_quantizer) == (0.1, 1e-4, "pact")
    assert (resnet20.temperature_start_fraction, resnet20.block) == (0.4, "convprelubn")
    resnet18 = training.resolve(training.Config(model="resnet18"))
    assert (resnet18.dataset, resnet18.optimizer, resnet18.lr, resnet18.weight_decay) == (
        "imagenet2012", "adam", 1e-3, 0.0
    )
    assert (resnet18.batch_size, resnet18.epochs, resnet18.lr_schedule) == (256, 120, "step")
    assert (resnet18.block, resnet18.activation_quantizer, resnet18.temperature_speed) == ("bireal", "pact", 1.05)
    # explicit values win over the recipe
    assert training.resolve(training.Config(model="vgg_small", lr=0.5, epochs=3)).lr == 0.5
    assert vgg.model_dir == os.path.join("runs", "vgg_small_slb_w1a1_cifar10")


def test_default_model_dirs_tell_folders_of_the_same_name_apart(tmp_path):
    """Two data folders named cifar10 get two default run directories (their resolved
    paths' digests); the same folder however written gets one."""
    a, b = tmp_path / "a" / "cifar10", tmp_path / "b" / "cifar10"
    for folder in (a, b):
        folder.mkdir(parents=True)
    dirs = {
        spelling: training.resolve(training.Config(dataset=spelling)).model_dir
        for spelling in (str(a), str(b), f"{a}/", str(tmp_path / "b" / ".." / "a" / "cifar10"))
    }
    assert dirs[str(a)] != dirs[str(b)]
    assert dirs[str(a)] == dirs[f"{a}/"] == dirs[str(tmp_path / "b" / ".." / "a" / "cifar10")]
    assert all(d.startswith(os.path.join("runs", "vgg_small_slb_w1a1_cifar10-")) for d in dirs.values())
    link = tmp_path / "link"
    link.symlink_to(a)
    assert training.resolve(training.Config(dataset=str(link))).model_dir == dirs[str(a)]


# The speeds of the authors' README (the authors' README), both CIFAR-10 networks.
AUTHORS_SPEEDS = {
    (1, 1): 1.03, (1, 2): 1.03, (1, 4): 1.03, (1, 8): 1.03, (1, 32): 1.04,
    (2, 2): 1.04, (2, 4): 1.04, (2, 8): 1.04, (2, 32): 1.05,
    (4, 4): 1.05, (4, 8): 1.05, (4, 32): 1.06,
}


@pytest.mark.parametrize("model", ["vgg_small", "resnet20"])
def test_recipe_tau_sequence_is_the_authors_per_epoch_formula(model):
    start, end = {"vgg_small": (0.3, 0.9), "resnet20": (0.4, 0.9)}[model]
    for (wbits, abits), speed in AUTHORS_SPEEDS.items():
        config = training.resolve(training.Config(model=model, wbits=wbits, abits=abits))
        assert config.temperature_speed == speed
        scheduler = slb_keras.TemperatureScheduler(**training.temperature_arguments(config, 400 * 7))
        tau, expected = 0.01, []
        for epoch in range(400):  # the authors' loop: tau *= speed per epoch in [0.3 E, 0.9 E)
            if int(start * 400) <= epoch < int(end * 400):
                tau *= speed
            expected.append(tau)
        assert [scheduler(epoch * 7 + 3) for epoch in range(400)] == expected


def test_resnet18_recipe_tau_reaches_the_rebuttal_range():
    config = training.resolve(training.Config(model="resnet18", wbits=1, abits=1))
    scheduler = slb_keras.TemperatureScheduler(**training.temperature_arguments(config, 120))
    assert scheduler(0) == 0.01 and scheduler.final_temperature() == pytest.approx(0.01 * 1.05**60)


def test_short_budget_recipe_and_explicit_temperature_flags():
    short = {w: training.resolve(training.Config(wbits=w, abits=w, epochs=6)) for w in (1, 2, 4, 8)}
    assert [(c.temperature_speed, c.temperature_end, c.temperature_end_fraction) for c in short.values()] == [
        (None, 200.0, 0.6), (None, 200.0, 0.6), (None, 200.0, 0.6), (None, 1000.0, 0.6)
    ]
    assert {c.lr_schedule for c in short.values()} == {"cosine"}  # step at the authors' budget
    assert {(c.optimizer, c.lr, c.weight_decay) for c in short.values()} == {("adam", 2e-3, 0.0)}
    ste = training.resolve(training.Config(method="ste", epochs=6))
    assert (ste.optimizer, ste.lr, ste.weight_decay, ste.lr_schedule) == ("adam", 2e-3, 0.0, "cosine")
    explicit = training.resolve(training.Config(epochs=6, optimizer="adam"))  # the same optimizer: the same lr
    assert (explicit.lr, explicit.weight_decay) == (2e-3, 0.0)
    fp_adam = training.resolve(training.Config(method="fp", epochs=6, optimizer="adam"))  # Adam's own default
    assert (fp_adam.lr, fp_adam.weight_decay) == (1e-3, 0.0)
    imagenet = training.resolve(training.Config(model="resnet18", epochs=6))  # Adam already: the authors' lr
    assert (imagenet.optimizer, imagenet.lr, imagenet.lr_schedule) == ("adam", 1e-3, "cosine")
    fp = training.resolve(training.Config(method="fp", epochs=6))
    assert (fp.optimizer, fp.lr, fp.weight_decay, fp.lr_schedule) == ("sgd", 0.02, 5e-4, "cosine")
    sgd = training.resolve(training.Config(epochs=6, optimizer="sgd"))  # the recipe's own lr and decay
    assert (sgd.lr, sgd.weight_decay) == (0.02, 5e-4)
    adam = training.resolve(training.Config(optimizer="adam"))  # not the recipe's: Adam's lr
    assert (adam.lr, adam.weight_decay, adam.lr_schedule) == (1e-3, 0.0, "step")
    assert training.resolve(training.Config(epochs=400)).lr_schedule == "step"
    assert training.resolve(training.Config(epochs=6, lr_schedule="step")).lr_schedule == "step"
    literal = training.resolve(training.Config(epochs=6, temperature_speed=1.5))
    assert (literal.temperature_speed, literal.temperature_end, literal.temperature_end_fraction) == (1.5, None, 0.9)
    ends = training.resolve(training.Config(temperature_end=50.0))  # the start/end form at 400 epochs
    assert (ends.temperature_speed, ends.temperature_end, ends.temperature_end_fraction) == (None, 50.0, 0.9)
    with pytest.raises(training.UsageError, match="--temperature_speed=1.1: expected no --temperature_end"):
        training.resolve(training.Config(temperature_speed=1.1, temperature_end=5.0))
    with pytest.raises(training.UsageError, match="--block=conv: expected one of convprelubn, standard, bireal"):
        training.resolve(training.Config(model="resnet20", block="conv"))
    with pytest.raises(training.UsageError, match="--hard_epochs=3: expected an integer from 0 to 2"):
        training.resolve(training.Config(epochs=6, hard_epochs=3))
    ste = training.resolve(training.Config(method="ste", wbits=1))
    assert ste.ste_clip and not training.resolve(training.Config(method="ste", wbits=2)).ste_clip


def test_resnet18_step_schedule_decays_at_epochs_70_90_110():
    config = training.resolve(training.Config(model="resnet18"))
    schedule = training.make_lr_schedule(config, steps_per_epoch=10)
    values = [float(schedule(step)) for step in (0, 699, 700, 899, 900, 1099, 1100, 1199)]
    np.testing.assert_allclose(values, [1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5, 1e-6, 1e-6], rtol=1e-6)
    cosine = training.make_lr_schedule(
        training.resolve(training.Config(epochs=2, lr_schedule="cosine", optimizer="sgd")), steps_per_epoch=10
    )
    assert float(cosine(0)) == pytest.approx(0.02) and float(cosine(20)) == pytest.approx(0.0)
    cifar = training.make_lr_schedule(
        training.resolve(training.Config(epochs=4, lr_schedule="step", optimizer="sgd")), steps_per_epoch=10
    )
    np.testing.assert_allclose([float(cifar(s)) for s in (19, 20, 29, 30)], [0.02, 0.002, 0.002, 2e-4], rtol=1e-6)


def test_flags_and_config_have_the_same_fields():
    flag_names = {flag.name for flag in train.FLAGS.get_flags_for_module(train)}
    config_names = set(training.Config.__dataclass_fields__)
    assert flag_names - {"show_recipe"} == config_names - {"lr_step_epochs", "verbose"}


def test_show_recipe_prints_the_resolved_settings_and_writes_nothing(tmp_path):
    result = _train_py(["--model=resnet20", "--wbits=2", "--abits=32", "--show_recipe",
                        f"--model_dir={tmp_path / 'run'}"])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("resnet20 (convprelubn blocks), slb W2/A32 (float inputs), cifar10, 400 epochs")
    assert "tau 0.01 x 1.05 per epoch over 40%-90% of training [the authors' recipe]" in lines[0]
    assert "  --temperature_speed=1.05" in lines and "  --weight_decay_mode=coupled" in lines
    assert "  lr_step_epochs=[0.5, 0.75] (the recipe's; no flag)" in lines  # not shown as a flag
    assert not [line for line in lines if line.endswith("=None")]  # unset: said so, with how it is set
    assert "  --steps_per_epoch unset: Steps per epoch (default: one pass over the data)." in lines
    assert not (tmp_path / "run").exists()
    search = _train_py(["--model=resnet20", "--wbits=1,2,4", "--abits=2", "--bit_budget=2", "--epochs=4",
                        "--show_recipe"]).stdout.splitlines()
    assert search[0].startswith("Bit-width search: each layer chooses 1, 2 or 4 bits under an average of 2")
    assert "tau 0.01 -> 200 (exp)" in search[0]  # the recipe of 2 bits, the widest within the budget
    assert {"  --wbits=1,2,4", "  --bit_budget=2.0", "  --search_fraction=0.5"} <= set(search)  # as flags take them


@pytest.mark.parametrize("flag", ["-h", "--help", "--helpfull"])
def test_help_is_no_error(flag):
    result = _train_py([flag])
    assert result.returncode == 0, result.stderr
    assert "--validation_split" in result.stdout and "SLB_SPEC" not in result.stdout


# --- end to end -----------------------------------------------------------------------


def test_train_py_on_digits_end_to_end(tmp_path):
    model_dir = tmp_path / "run"
    args = [*TINY_FLAGS, "--method=slb", "--wbits=1", "--abits=1", "--export", f"--model_dir={model_dir}"]
    result = _train_py(args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Test accuracy of the final hard-quantized network:" in result.stdout
    # The last lines name every file with its size and use.
    listing = result.stdout[result.stdout.index(f"Wrote {model_dir}/:"):].splitlines()[1:]
    assert [line.split()[0] for line in listing] == [
        "model.keras", "model.tflite", "summary.json", "history.csv", "flags.json", "logs/"
    ]
    size = os.path.getsize(model_dir / "model.tflite")
    assert any(line.split()[1:3] == [f"{size / 1000:.1f}", "kB"] and "get_signature_runner" in line
               for line in listing), listing
    names = set(os.listdir(model_dir))
    assert {"flags.json", "summary.json", "model.keras", "model.tflite", "history.csv", "logs"} <= names
    assert not any(name.startswith(".tmp-") for name in names)
    assert "backup" not in names  # removed once the run is complete
    summary = _summary(model_dir)
    assert summary["config"]["wbits"] == 1 and summary["config"]["method"] == "slb"
    assert summary["parameters"]["quantized_weights"] > 0
    assert len(summary["history"]) == 2 and summary["seconds_per_epoch"] > 0
    # Two clocks: the whole epoch (calibration and metrics included), its steps alone.
    for row, whole, steps in zip(summary["history"], summary["epoch_seconds"], summary["train_seconds"]):
        assert 0 < steps < whole and (row["epoch_seconds"], row["train_seconds"]) == (whole, steps)
    assert summary["train_seconds_per_epoch"] < summary["seconds_per_epoch"]
    # The saved model is the hard network: evaluating it reproduces the summary's accuracy.
    model = keras.models.load_model(model_dir / "model.keras")
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    test = input_pipeline.build_dataset("digits", "test", 16, image_size=16)
    loss, accuracy = model.evaluate(test, verbose=0)
    assert accuracy == pytest.approx(summary["test_accuracy"], abs=1e-6)
    # ... and so do the saved and the exported TFLite model fed the test images exactly
    # as load_digits returns them (the input normalization is inside the model).
    from ai_edge_litert.interpreter import Interpreter

    _, (x_test, y_test) = load_digits(image_size=16)
    logits = model.predict(x_test, verbose=0)
    assert np.mean(np.argmax(logits, axis=1) == y_test) == pytest.approx(summary["test_accuracy"], abs=1e-6)
    interpreter = Interpreter(model_path=str(model_dir / "model.tflite"))
    runner = interpreter.get_signature_runner()
    (tflite_logits,) = runner(**{runner.get_input_details().popitem()[0]: x_test}).values()
    np.testing.assert_allclose(tflite_logits, logits, rtol=1e-4, atol=1e-4)
    assert np.mean(np.argmax(tflite_logits, axis=1) == y_test) == pytest.approx(summary["test_accuracy"], abs=1e-6)
    # The same command again finds the completed run and changes nothing.
    before = snapshot(model_dir)
    again = _train_py(args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "nothing to do" in again.stdout
    assert snapshot(model_dir) == before


def test_validation_split_monitors_held_out_examples_and_tests_once(tmp_path):
    plain = training.run({**TINY, "model_dir": str(tmp_path / "plain")})  # the paper's protocol
    assert not any(key.startswith("val_") for row in plain["history"] for key in row)
    header = (tmp_path / "plain" / training.HISTORY_FILE).read_text().splitlines()[0].split(",")
    assert header[0] == "epoch" and "loss" in header and not [k for k in header if k.startswith("val_")]
    assert plain["split_sizes"] == {"train": 1438, "validation": 0, "test": 359}
    held = training.run({**TINY, "validation_split": 0.25, "model_dir": str(tmp_path / "held")})
    assert held["split_sizes"] == {"train": 1078, "validation": 360, "test": 359}
    assert all(0.0 <= row["val_accuracy"] <= 1.0 for row in held["history"])
    # val_* are the held-out examples', not the test split's: evaluate both on the saved model
    model = keras.models.load_model(tmp_path / "held" / "model.keras")
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    split = dict(image_size=16, validation_split=0.25)
    _, validation_accuracy = model.evaluate(input_pipeline.build_dataset("digits", "validation", 16, **split), verbose=0)
    _, test_accuracy = model.evaluate(input_pipeline.build_dataset("digits", "test", 16, **split), verbose=0)
    assert held["history"][-1]["val_accuracy"] == pytest.approx(validation_accuracy, abs=1e-6)
    assert held["test_accuracy"] == pytest.approx(test_accuracy, abs=1e-6)


@pytest.mark.parametrize("method", ["fp", "ste", "slb"])
def test_every_method_trains_through_run(method, tmp_path):
    config = {**TINY, "method": method, "wbits": 2, "abits": 2, "model_dir": str(tmp_path)}
    summary = training.run({**config, "export": method == "ste"})  # slb: see the end-to-end test
    assert 0.0 <= summary["test_accuracy"] <= 1.0
    assert summary["config"]["method"] == method
    assert len(summary["history"]) == 2
    assert all(np.isfinite(row["loss"]) for row in summary["history"])
    quantized = summary["parameters"]["quantized_weights"]
    assert (quantized == 0) == (method == "fp")
    model = keras.models.load_model(tmp_path / "model.keras")
    kinds = {type(layer).__name__ for layer in model.layers}
    assert {"fp": "Conv2D", "ste": "STEConv2D", "slb": "SLBConv2D"}[method] in kinds
    assert os.path.exists(tmp_path / "model.tflite") == (method == "ste")
    if method == "slb":
        # tau of each epoch's last step (1 and 3 of 4): the short-budget recipe at W2,
        # exp from 0.01 to 200 over steps [0.3 * 4, 0.6 * 4) = [1.2, 2.4)
        expected = [0.01, 200.0]
        np.testing.assert_allclose([row["temperature"] for row in summary["history"]], expected)
        assert summary["recipe"] == {
            "activation_quantizer_used": "dorefa", "temperature_final": 200.0, "temperature_form": "exp"
        }
    else:
        assert all("temperature" not in row for row in summary["history"])


@pytest.mark.parametrize(
    "model, dataset, test_split, image_size",
    [
        ("vgg_small", "cifar10", "test", 32),
        pytest.param("resnet18", "imagenet2012", "validation", 32, marks=pytest.mark.slow),
    ],
)
def test_tfds_pipelines_under_mock_data(model, dataset, test_split, image_size, tmp_path):
    data_dir = tmp_path / "tfds"
    write_tfds_metadata(data_dir, dataset, {"train": 32, test_split: 16})
    config = {
        **TINY,
        "model": model,
        "dataset": dataset,
        "data_dir": str(data_dir),
        "image_size": image_size,
        "epochs": 1,
        "model_dir": str(tmp_path / "run"),
    }
    with tfds.testing.mock_data(num_examples=32, data_dir=str(data_dir)):
        summary = training.run(config)
    assert summary["config"]["dataset"] == dataset
    assert len(summary["history"]) == 1 and np.isfinite(summary["history"][0]["loss"])
    assert summary["parameters"]["quantized_weights"] > 0
    num_classes = 10 if dataset == "cifar10" else 1000
    assert keras.models.load_model(tmp_path / "run" / "model.keras").output_shape == (None, num_classes)


# --- bad input ------------------------------------------------------------------------


@pytest.fixture
def existing_run(tmp_path):
    """A model_dir holding a (fake) run of TINY: flags.json plus a model file."""
    model_dir = tmp_path / "existing"
    model_dir.mkdir()
    config = training.resolve(training.Config(**{**TINY, "model_dir": str(model_dir)}))
    (model_dir / training.FLAGS_FILE).write_text(json.dumps(training.run_settings(config)))
    (model_dir / training.MODEL_FILE).write_bytes(b"weights of an earlier run")
    (model_dir / "backup").mkdir()
    (model_dir / "backup" / "latest.weights.h5").write_bytes(b"backup of an earlier run")
    return model_dir


def _main(argv, capsys):
    """train.py's main in this process: (exit status, stderr)."""
    train.FLAGS.unparse_flags()
    try:
        with pytest.raises(SystemExit) as exit_info:
            train.main(train._parse_flags(["train.py", *argv]))
    finally:
        train.FLAGS.unparse_flags()
    return exit_info.value.code, capsys.readouterr().err


BAD_INPUT = [
    (["--model=vgg16"], "--model"),
    (["--method=bnn"], "--method"),
    (["--dataset=mnist"], "mnist"),
    (["--dataset=/no/such/data.npz"], "/no/such/data.npz"),
    (["--dataset=/no/such/folder/"], "/no/such/folder"),
    (["--wbits=0"], "wbits=0"),
    (["--wbits=9"], "wbits=9"),
    (["--abits=0"], "abits=0"),
    (["--abits=17"], "abits=17"),
    (["--epochs=-1"], "--epochs=-1"),
    (["--batch_size=-8"], "--batch_size=-8"),
    (["--batch_size=0"], "--batch_size=0"),
    (["--batch_size=4000"], "batch"),
    (["--steps_per_epoch=0"], "--steps_per_epoch=0"),
    (["--lr=-0.1"], "--lr=-0.1"),
    (["--temperature_start=0"], "--temperature_start=0"),
    (["--temperature_start_fraction=0.9", "--temperature_end_fraction=0.5"], "fraction"),
    (["--width_multiplier=0"], "width_multiplier=0"),
    (["--block=bireal"], "--block=bireal: expected one of conv for --model=vgg_small"),
    (["--block=resnet"], "--block"),
    (["--temperature_speed=0"], "--temperature_speed=0"),
    (["--temperature_speed=1.1", "--temperature_end=5"], "--temperature_speed=1.1: expected no --temperature_end"),
    (["--hard_epochs=2"], "--hard_epochs=2: expected an integer from 0 to 0"),
    (["--hard_epochs=-1"], "--hard_epochs=-1"),
    (["--weight_decay_mode=l2"], "--weight_decay_mode"),
    (["--validation_split=1"], "--validation_split=1.0: expected a fraction of the training split in [0, 1)"),
    (["--validation_split=-0.1"], "--validation_split=-0.1"),
    (["--validation_split=0.9999"], "holds out 1438 of its 1438 training examples"),
    (["--logits_init=zeros"], "--logits_init"),
    (["--data_dir=/no/such/dir"], "--data_dir=/no/such/dir"),
    (["--wbits=two"], "--wbits"),
    # a bit-width search: every bad combination
    (["--wbits=1,3", "--bit_budget=2"], "--wbits=1,3: expected two or more distinct widths of 1, 2, 4, 8"),
    (["--wbits=2,2", "--bit_budget=2"], "--wbits=2,2: expected two or more distinct widths"),
    (["--wbits=1,16", "--bit_budget=2"], "--wbits=1,16: expected two or more distinct widths"),
    (["--wbits=1,2,4", "--bit_budget=5"], "--bit_budget=5.0: expected a number from 1 to 4 (the range of --wbits=1,2,4)"),
    (["--wbits=2,4", "--bit_budget=1.5"], "--bit_budget=1.5: expected a number from 2 to 4"),
    (["--wbits=2", "--bit_budget=2"], "--bit_budget=2.0: expected no budget with one width (--wbits=2)"),
    (["--wbits=1,2,4"], "--wbits=1,2,4: expected a --bit_budget with candidate widths"),
    (["--wbits=1,2,4", "--bit_budget=2", "--method=ste"], "--wbits=1,2,4: expected one width with --method=ste"),
    (["--wbits=1,2,4", "--bit_budget=2", "--search_fraction=1"], "--search_fraction=1.0: expected a fraction of the epochs in (0, 1)"),
    (["--wbits=1,2,4", "--bit_budget=2", "--epochs=1"], "--epochs=1: expected at least 2 for a search"),
    (["--wbits=1,2,4", "--bit_budget=2", "--epochs=4", "--hard_epochs=3"], "--hard_epochs=3: expected an integer from 0 to 1"),
    (["--no_such_flag=1"], "no_such_flag"),
    (["positional"], "unexpected arguments"),
    (["--epochs=5"], "--epochs=2 (here --epochs=5)"),  # existing_run was made with --epochs=2
    (["--method=ste"], "--method=slb (here --method=ste)"),
    (["--epochs=5", "--seed=1"], "made with --epochs=2 --seed=0 (here --epochs=5 --seed=1)"),  # every difference
]


@pytest.mark.parametrize("argv, expected", BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_bad_input_exits_2_with_one_line_and_destroys_nothing(argv, expected, existing_run, capsys):
    before = snapshot(existing_run)
    base = [*TINY_FLAGS, f"--model_dir={existing_run}"]
    status, err = _main(base + argv, capsys)
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("train.py: error: "), err
    assert expected in lines[0]
    assert snapshot(existing_run) == before


def test_a_batch_larger_than_the_data_names_the_flag(tmp_path, capsys):
    status, err = _main([*TINY_FLAGS, "--batch_size=5000", f"--model_dir={tmp_path / 'run'}"], capsys)
    assert status == 2 and err.strip() == (
        "train.py: error: Invalid --batch_size=5000: expected at most the 1438 examples of "
        "digits's training split."
    ), err
    assert not (tmp_path / "run").exists()


def test_model_dir_problems_exit_2(existing_run, tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a directory")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("someone else's files")
    cases = [
        (f"--model_dir={a_file}", "it is a file"),
        (f"--model_dir={a_file}/run", "can be created and written"),
        (f"--model_dir={foreign}", "holds no flags.json"),
    ]
    for flag, expected in cases:
        before = snapshot(tmp_path)
        status, err = _main([*TINY_FLAGS, flag], capsys)
        assert status == 2 and expected in err and len(err.strip().splitlines()) == 1, err
        assert snapshot(tmp_path) == before


def test_unprepared_tfds_data_dir_says_how_to_supply_the_data(existing_run, tmp_path, capsys):
    empty = tmp_path / "empty_tfds"
    empty.mkdir()
    status, err = _main(
        [*TINY_FLAGS, "--dataset=cifar10", f"--data_dir={empty}", f"--model_dir={existing_run}"], capsys
    )
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "cifar10 is not prepared under" in err and "tfds build cifar10" in err
    assert not any(files for _, _, files in os.walk(empty))  # nothing downloaded or written


def test_batch_size_not_divisible_by_replicas(mirrored_strategy, tmp_path):
    config = {**TINY, "batch_size": 15, "model_dir": str(tmp_path / "run")}
    with pytest.raises(training.UsageError, match="--batch_size=15: expected a multiple of the 2 replicas"):
        training.run(config, strategy_override=mirrored_strategy)
    assert not os.path.exists(tmp_path / "run")


def _nan_images(count):
    images = np.random.default_rng(1).random((64, 8, 8), dtype=np.float32)
    images.reshape(-1)[:count] = np.nan
    return images


def _bad_file(content):
    return lambda path: path.write_bytes(content)


BAD_DATA = [
    ("nan", lambda path: write_npz(path, x_train=_nan_images(3)), "data.npz: x_train holds 3 non-finite values"),
    ("inf", lambda path: write_npz(path, x_test=np.full((32, 8, 8), np.inf, np.float32)), "x_test holds 2048 non-finite"),
    ("empty file", _bad_file(b""), "data.npz is not a readable .npz file (it is empty)"),
    ("random bytes", _bad_file(np.random.default_rng(0).bytes(999)), "data.npz is not a readable .npz file"),
    ("zip header only", _bad_file(b"PK\x03\x04" + bytes(40)), "data.npz is not a readable .npz file"),
    ("one class", lambda path: write_npz(path, y_train=np.zeros(64, int)), "every training label is 0"),
    ("label 1e9", lambda path: write_npz(path, y_train=np.r_[np.arange(63) % 4, 10**9]), "imply 1000000001 classes"),
    ("negative label", lambda path: write_npz(path, y_test=np.r_[np.arange(31) % 4, -3]), "negative label -3"),
    ("float labels", lambda path: write_npz(path, y_train=np.arange(64) % 4 * 1.0), "must be 64 non-negative integers"),
    ("zero-size images", lambda path: write_npz(path, x_train=np.zeros((64, 0, 8))), "zero-size side"),
    ("2x2 images", lambda path: write_npz(path, x_train=np.zeros((64, 2, 2)), x_test=np.zeros((32, 2, 2))),
     "its images are 2x2; the networks need at least 8x8: pass --image_size=8 or more"),
]


@pytest.mark.parametrize("name, write, expected", BAD_DATA, ids=[case[0] for case in BAD_DATA])
def test_bad_data_exits_2_with_one_line_before_writing_anything(name, write, expected, tmp_path, capsys):
    path = tmp_path / "data.npz"
    write(path)
    flags = [f for f in TINY_FLAGS if not f.startswith(("--dataset=", "--image_size="))]
    status, err = _main([*flags, f"--dataset={path}", f"--model_dir={tmp_path / 'run'}"], capsys)
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"train.py: error: --dataset={path}"), err
    assert expected in lines[0]
    assert not (tmp_path / "run").exists()  # so the corrected command is not refused


@pytest.mark.slow
def test_train_py_refuses_nan_data_then_the_corrected_file_runs(tmp_path):
    path, model_dir = tmp_path / "data.npz", tmp_path / "run"
    flags = [f for f in TINY_FLAGS if not f.startswith("--dataset=")]
    args = [*flags, f"--dataset={path}", f"--model_dir={model_dir}"]
    write_npz(path, x_train=_nan_images(5))
    bad = _train_py(args)
    assert bad.returncode == 2, bad.stderr[-3000:]
    ours = [line for line in bad.stderr.splitlines() if not TF_STARTUP_LOG.match(line)]
    assert ours == [
        f"train.py: error: --dataset={path}: x_train holds 5 non-finite values (NaN or "
        "infinity); replace or drop the images that hold them"
    ]
    assert not model_dir.exists()
    write_npz(path)  # the corrected data, same command
    good = _train_py(args)
    assert good.returncode == 0, good.stderr[-3000:]
    summary = _summary(model_dir)
    assert summary["config"]["dataset"] == str(path) and len(summary["history"]) == 2
    assert all(np.isfinite(row["loss"]) for row in summary["history"])


# TensorFlow's C++ runtime logs a few lines when it starts (on this machine: oneDNN, no
# CUDA driver), whatever TF_CPP_MIN_LOG_LEVEL says; they are not train.py's output.
TF_STARTUP_LOG = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages before absl|To enable the following)")


def test_command_line_errors_have_no_traceback(existing_run):
    before = snapshot(existing_run)
    # A flag error is reported before TensorFlow is imported: stderr is exactly one line.
    result = _train_py(["--model=vgg16"])
    assert result.returncode == 2
    assert result.stderr == "train.py: error: flag --model=vgg16: value should be one of <vgg_small|resnet20|resnet18>\n"
    # Later errors: one line of train.py's own after TensorFlow's startup log.
    # (--seed changes one setting only; --wbits would also change the derived --ste_clip.)
    result = _train_py([*TINY_FLAGS, "--seed=3", f"--model_dir={existing_run}"])
    assert result.returncode == 2, result.stderr
    ours = [line for line in result.stderr.splitlines() if not TF_STARTUP_LOG.match(line)]
    assert ours == [
        f"train.py: error: Invalid --model_dir={existing_run}: it holds a run made with --seed=0 "
        "(here --seed=3); resume it with the same flags or choose another --model_dir, e.g. "
        f"--model_dir={existing_run}-2 (free)."
    ]
    assert snapshot(existing_run) == before


# --- distribution ---------------------------------------------------------------------

# With synchronized BN, one replica and N replicas compute the same function of the same
# global batch (input_pipeline gives every step the same examples whatever the number of
# replicas, and Keras averages the per-replica gradients, each scaled by 1/N). What
# differs is the order of float32 additions (per-replica partial sums, then an
# all-reduce), i.e. relative differences of a few float32 ulps (~1e-7) per reduction,
# which a few SGD steps do not amplify beyond ~1e-6. rtol=1e-5 leaves a 10x margin.
# Activations are kept continuous (abits=32): a quantizer's threshold would turn such an
# ulp difference at a rounding boundary into a different code.
# validation_split=0.2: 64 held-out examples, whole batches too (val_loss is compared)
DISTRIBUTED = dict(TINY, method="slb", wbits=1, abits=32, sync_bn=True, epochs=1, steps_per_epoch=4, validation_split=0.2)
LOSS_RTOL = 1e-5


@pytest.fixture(scope="module")
def even_digits(tmp_path_factory):
    """Digits as an .npz whose test set is whole batches of 16.

    TensorFlow 2.21's oneDNN CPU convolution returns a wrongly shaped result for an
    empty batch, which a replica gets when the last test batch is partial; on GPUs
    this does not arise. Whole batches keep the comparison about distribution.
    """
    from slb_keras.datasets import load_digits

    (x_train, y_train), (x_test, y_test) = load_digits(image_size=16)
    path = tmp_path_factory.mktemp("data") / "digits_even.npz"
    np.savez(path, x_train=x_train[:320], y_train=y_train[:320], x_test=x_test[:160], y_test=y_test[:160])
    return str(path)


def _assert_same_training(reference, other):
    for key in ("loss", "accuracy", "val_loss", "temperature"):
        np.testing.assert_allclose(
            [row[key] for row in other["history"]],
            [row[key] for row in reference["history"]],
            rtol=LOSS_RTOL,
            err_msg=key,
        )
    np.testing.assert_allclose(other["test_loss"], reference["test_loss"], rtol=LOSS_RTOL)


def test_mirrored_strategy_matches_one_device(mirrored_strategy, even_digits, tmp_path):
    config = {**DISTRIBUTED, "dataset": even_digits, "image_size": None}
    one = training.run(
        {**config, "model_dir": str(tmp_path / "one")},
        strategy_override=tf.distribute.OneDeviceStrategy("/cpu:0"),
    )
    two = training.run({**config, "model_dir": str(tmp_path / "two")}, strategy_override=mirrored_strategy)
    assert (one["replicas"], two["replicas"]) == (1, 2)
    _assert_same_training(one, two)
    lr = one["config"]["lr"]
    for a, b in zip(_weights(tmp_path / "one" / "model.keras"), _weights(tmp_path / "two" / "model.keras")):
        _assert_same_weights(b, a, lr)


def _assert_same_weights(actual, desired, lr):
    """Weights trained under two strategies agree up to Adam's amplified round-off.

    Adam divides each gradient by its own running RMS, so a weight whose gradient is
    round-off small moves by up to `lr` a step in a direction that the order of the
    replicas' sum decides (CI saw 2 of 2304 logits differ by 1.8e-5 = 0.009 lr after
    4 steps). Such weights are rare and stay far below one step; a distribution bug
    (gradients not summed, a replica's half batch taken for the whole) moves most
    weights by a sizeable part of a step.
    """
    far = ~np.isclose(actual, desired, rtol=1e-4, atol=1e-5)
    assert far.sum() <= max(2, 0.01 * far.size), f"{far.sum()} of {far.size} weights differ"
    np.testing.assert_allclose(actual, desired, rtol=1e-4, atol=0.1 * lr)


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_two_workers_on_localhost_match_one_device(even_digits, tmp_path):
    config = {**DISTRIBUTED, "dataset": even_digits, "image_size": None}
    flags = [f"--{k}={v}" for k, v in config.items() if k not in ("verbose", "image_size")]
    reference = training.run(
        {**config, "model_dir": str(tmp_path / "one")},
        strategy_override=tf.distribute.OneDeviceStrategy("/cpu:0"),
    )
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    workers = [
        subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "train.py"), *flags, f"--model_dir={tmp_path / 'mw'}"],
            cwd=ROOT,
            env=child_env(TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    try:
        outputs = [worker.communicate(timeout=300) for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    for worker, (_, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-3000:]
    summary = _summary(tmp_path / "mw")  # written by the chief (worker 0) only
    assert (summary["strategy"], summary["replicas"]) == ("CollectiveAllReduceStrategy", 2)  # = MWMS
    _assert_same_training(reference, summary)
    assert sorted(os.listdir(tmp_path / "mw")) == sorted(os.listdir(tmp_path / "one"))  # no worker files left


# --- resume after kill -9 -------------------------------------------------------------


@pytest.mark.slow
def test_kill_9_during_an_epoch_then_resume_matches_uninterrupted_run(tmp_path):
    epochs, steps = 4, 6
    flags = [f"--{k}={v}" for k, v in dict(TINY, epochs=epochs, steps_per_epoch=steps).items() if k != "verbose"]
    flags.append("--deterministic")
    straight = _train_py([*flags, f"--model_dir={tmp_path / 'straight'}"])
    assert straight.returncode == 0, straight.stderr[-3000:]
    reference = _summary(tmp_path / "straight")

    model_dir = tmp_path / "killed"
    metadata = model_dir / "backup" / "training_metadata.json"
    process = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "train.py"), *flags, f"--model_dir={model_dir}"],
        cwd=ROOT, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 240
        while time.time() < deadline and process.poll() is None:
            if metadata.exists() and json.loads(metadata.read_text() or "{}").get("epoch", 0) >= 2:
                break
            time.sleep(0.05)
        # Half an epoch later: inside epoch 3 (0-based 2).
        time.sleep(0.5 * float(np.median(reference["epoch_seconds"][1:])))
        assert process.poll() is None, "the run ended before it could be killed"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert not (model_dir / training.SUMMARY_FILE).exists()
    saved_epoch = json.loads(metadata.read_text())["epoch"]
    assert 2 <= saved_epoch < epochs

    resumed = _train_py([*flags, f"--model_dir={model_dir}"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    tau = reference["history"][saved_epoch - 1]["temperature"]  # tau of the last step done
    assert (
        f"Resuming {model_dir} at epoch {saved_epoch + 1}/{epochs} "
        f"(step {saved_epoch * steps}, temperature {tau:.6g})"
    ) in resumed.stdout
    summary = _summary(model_dir)
    assert summary["resumed_from_epoch"] == saved_epoch
    assert len(summary["epoch_seconds"]) == epochs - saved_epoch  # only the rest was trained
    # Bit for bit the uninterrupted run: every logged value, the test result, the weights.
    strip = lambda rows: [{k: v for k, v in row.items() if k not in ("epoch_seconds", "train_seconds")} for row in rows]
    assert strip(summary["history"]) == strip(reference["history"])
    assert (summary["test_accuracy"], summary["test_loss"]) == (reference["test_accuracy"], reference["test_loss"])
    for a, b in zip(_weights(tmp_path / "straight" / "model.keras"), _weights(model_dir / "model.keras")):
        np.testing.assert_array_equal(a, b)


def test_mixed_precision_run_and_the_global_policy_is_restored(tmp_path):
    before = keras.config.dtype_policy().name
    summary = training.run({**TINY, "method": "slb", "epochs": 1, "mixed_precision": True, "model_dir": str(tmp_path)})
    assert keras.config.dtype_policy().name == before
    assert np.isfinite(summary["history"][0]["loss"])
    model = keras.models.load_model(tmp_path / "model.keras")
    assert model.get_layer("conv2").dtype_policy.name == "mixed_float16"
    assert model.get_layer("fc").dtype_policy.name == "float32"


def test_docstring_examples(tmp_path, monkeypatch):
    # Every module of the training package, in a scratch directory (some examples write
    # files).
    monkeypatch.chdir(tmp_path)
    attempted = package_doctests(training)
    assert all(attempted.values()), attempted  # every module has examples


def test_export_on_a_finished_run_writes_the_tflite(tmp_path, capsys):
    config = {**TINY, "model_dir": str(tmp_path)}
    first = training.run(config)
    assert "tflite_file" not in first and not (tmp_path / training.TFLITE_FILE).exists()
    capsys.readouterr()
    second = training.run({**config, "export": True})  # --export is not part of the run's flags
    assert "wrote model.tflite" in capsys.readouterr().out
    assert second["tflite_file"] == training.TFLITE_FILE and second["test_accuracy"] == first["test_accuracy"]
    assert (tmp_path / training.TFLITE_FILE).stat().st_size > 0
    with open(tmp_path / training.SUMMARY_FILE) as file:
        assert json.load(file)["tflite_file"] == training.TFLITE_FILE
    training.run({**config, "export": True})
    assert "nothing to do" in capsys.readouterr().out
