"""The benchmark scripts run end to end on tiny settings and report consistent figures."""

import doctest
import importlib.util
import json
import os
import sys

import numpy as np
import pytest

import models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _script(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "benchmarks", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _report(name, argv, tmp_path):
    """Runs benchmarks/<name>.py with `argv` and --out in tmp_path; returns its JSON report."""
    out = tmp_path / f"{name}.json"
    _script(name).main(argv + [f"--out={out}"])
    return json.loads(out.read_text())


def test_step_time_ratios_are_per_round_medians():
    step_time = _script("step_time")
    times = {"fp": [1.0, 1.0, 2.0], "ste-W1": [1.0, 2.0, 2.0], "slb-W1": [1.5, 2.0, 5.0]}
    summary = step_time.summarize(times, [1], batch_size=8)
    # Per-round ratios slb/ste are 1.5, 1.0, 2.5: their median, not the ratio of medians (1.0).
    assert summary["ratios"]["W1 slb/ste"]["median"] == pytest.approx(1.5)
    assert summary["ratios"]["W1 slb/fp"]["median"] == pytest.approx(2.0)
    assert summary["configs"]["fp"]["images_per_s"] == pytest.approx(8.0)


def test_step_time_search_config_and_its_ratio_to_the_widest_width():
    step_time = _script("step_time")
    assert step_time._configs([2], search=[1, 2]) == [("fp", 32), ("ste", 2), ("slb", 2), ("slb", (1, 2))]
    assert step_time._wbits_text("1+2") == (1, 2) and step_time._wbits_text("4") == 4
    times = {"fp": [1.0] * 3, "ste-W2": [1.0] * 3, "slb-W2": [2.0, 2.0, 4.0], "search-W1+2": [3.0, 4.0, 4.0]}
    summary = step_time.summarize(times, [2], batch_size=8, search=[1, 2])
    assert summary["ratios"]["search-W1+2/slb-W2"]["median"] == pytest.approx(1.5)  # 1.5, 2, 1


@pytest.mark.slow
def test_step_time_end_to_end_with_state_only_memory_ratio(tmp_path):
    report = _report("step_time", [
        "--model=resnet20", "--batch_size=4", "--image_size=8", "--wbits=2",
        "--rounds=2", "--warmup=1", "--memory",
    ], tmp_path)
    assert set(report["configs"]) == {"fp", "ste-W2", "slb-W2"}
    assert all(c["steps"] == 2 and c["median_s"] > 0 for c in report["configs"].values())
    memory = report["memory"]
    slb, ste = memory["per_config"]["slb-W2"], memory["per_config"]["ste-W2"]
    # SLB at 2 bits keeps 4 float32 logits per quantized weight where STE keeps one.
    quantized = models.count_weights(
        models.get_model("resnet20", method="slb", wbits=2, input_shape=(8, 8, 3))
    )["quantized_weights"]
    assert slb["trainable_bytes"] - ste["trainable_bytes"] == 3 * quantized * 4
    key = memory["measure"]
    assert memory["ratios"]["W2 slb/ste"] == pytest.approx(slb[key] / ste[key])
    state_only = (ste[key] + 3 * (slb["trainable_bytes"] - ste["trainable_bytes"])) / ste[key]
    assert memory["state_only_ratios"]["W2 slb/ste"] == pytest.approx(state_only)


@pytest.mark.slow
def test_accuracy_end_to_end(tmp_path):
    report = _report("accuracy", [
        "--width_multiplier=0.125", "--epochs=1", "--steps_per_epoch=2", "--batch_size=16",
        "--seeds=0,1", "--wa=1/1", "--variants=ste_sgd,ste_adam,slb",
    ], tmp_path)
    assert set(report["results"]) == {"ste_sgd 1/1", "ste_adam 1/1", "slb 1/1"}
    for result in report["results"].values():
        assert len(result["accuracies"]) == 2
        assert all(0.0 <= a <= 1.0 for a in result["accuracies"])
        assert result["mean"] == pytest.approx(np.mean(result["accuracies"]))
    slb = report["results"]["slb 1/1"]
    ste = max(report["results"]["ste_sgd 1/1"], report["results"]["ste_adam 1/1"], key=lambda r: r["mean"])
    assert report["best"]["ste 1/1"] == ste["variant"]  # STE at its best of the grid
    assert report["slb_at_least_ste"] == {"1/1": slb["mean"] >= ste["mean"]}


@pytest.mark.slow
def test_export_size_end_to_end(tmp_path):
    report = _report(
        "export_size", ["--model=vgg_small", "--image_size=8", "--images=16", "--runs=3"], tmp_path
    )
    configs = report["configs"]
    assert {"float", "dequantize", "integer", "packed"} <= set(configs)
    for name in ("float", "dequantize", "integer"):
        row = configs[name]
        assert row["median_s"] > 0 and row["iqr_s"] >= 0 and 0.0 <= row["top1_agreement"] <= 1.0
    assert configs["float"]["ratio_to_float"] == 1.0
    # Both SLB routes hold int8 kernels and compute the same integers (W1A1).
    assert report["integer_vs_dequantize_max_abs_diff"] == 0.0
    assert configs["integer"]["samples_over_tolerance"] == 0
    assert configs["packed"]["bytes"] < configs["dequantize"]["bytes"] < configs["float"]["bytes"]
    # LCE when installed (1 bit per binary weight), else the reason it did not run.
    assert configs.get("lce", {}).get("bytes", 0) < configs["packed"]["bytes"] or "lce" in report


def test_soft_kernel_end_to_end(tmp_path):
    report = _report("soft_kernel", ["--bits=1,2", "--shape=3,3,4,5", "--runs=2"], tmp_path)
    assert set(report["bits"]) == {"1", "2"}
    for row in report["bits"].values():
        assert row["speedup"] == pytest.approx(
            row["reference"]["median_s"] / row["fused"]["median_s"])


@pytest.mark.parametrize(
    "name, argv",
    [
        ("step_time", ["--batch_size=0"]),
        ("step_time", ["--search=1,3"]),
        ("accuracy", ["--epochs=0"]),
        ("export_size", ["--runs=0"]),
        ("soft_kernel", ["--bits=9"]),
        ("epoch_speed", ["--steps_per_epoch=0", "--data=."]),
        ("epoch_speed", ["--data=/no/such/folder"]),
    ],
)
def test_bad_arguments_exit_2(name, argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _script(name).main(argv)
    assert exit_info.value.code == 2
    assert argv[0].split("=")[0] in capsys.readouterr().err


def test_cifar10_config_parsing_and_grouping():
    cifar10 = _script("cifar10")
    assert cifar10.parse_config("ste_sgd:2/2") == ("ste_sgd", "ste", {"optimizer": "sgd"}, 2, 2)
    with pytest.raises(ValueError, match="needs :W/A"):
        cifar10.parse_config("slb")
    with pytest.raises(ValueError, match="unknown variant 'slbx'"):
        cifar10.parse_config("slbx:1/1")
    records = [
        {"model": "resnet20", "variant": "slb", "wbits": 1, "abits": 1, "epochs": 4, "seed": seed,
         "validation_split": 0.0, "test_accuracy": acc, "wall_seconds": 10.0, "seconds_per_epoch": 2.0}
        for seed, acc in ((0, 0.5), (1, 0.7))
    ]
    (row,) = cifar10.table(records, "test_accuracy")
    assert (row["n"], row["seeds"]) == (2, [0, 1])
    assert row["mean"] == pytest.approx(0.6) and row["std"] == pytest.approx(0.1)


def test_cifar10_record_history_keeps_the_per_epoch_values_an_epoch_has():
    cifar10 = _script("cifar10")
    history = [{"epoch": 0, "accuracy": 0.4, "loss": 1.5, "val_accuracy": 0.35, "temperature": 0.01,
                "slb_flip_rate": 0.1, "slb_max_prob": 0.5, "epoch_seconds": 3.0},
               {"epoch": 1, "accuracy": 0.6, "loss": 1.0, "epoch_seconds": 2.5}]  # fp: no tau, no val
    kept = cifar10.epoch_history(history)
    assert kept[0] == {k: v for k, v in history[0].items() if k not in ("epoch", "loss")}
    assert kept[1] == {"accuracy": 0.6, "epoch_seconds": 2.5}


def test_cifar10_docstring_examples():
    # setup.cfg collects doctests under tests/ and src/slb_keras/ only; run cifar10.py's here.
    result = doctest.testmod(_script("cifar10"), optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 4 and result.failed == 0


def _tiny_cifar_folder(tmp_path, classes=("cat", "dog"), per_class=10):
    """Class folders of random 32x32 JPEGs, as the unpacked cifar10-train."""
    import tensorflow as tf

    top = tmp_path / "tiny-train"
    rng = np.random.default_rng(0)
    for name in classes:
        (top / name).mkdir(parents=True)
        for i in range(per_class):
            image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            (top / name / f"{i:04d}.jpg").write_bytes(tf.io.encode_jpeg(image).numpy())
    return top


def _tiny_cifar_tarball(tmp_path, classes=("cat", "dog"), per_class=10):
    """A tarball laid out like ../shared/data/cifar10-train.tar.gz: top folder, class folders, JPEGs."""
    import tarfile

    top = _tiny_cifar_folder(tmp_path, classes, per_class)
    tarball = tmp_path / "tiny-train.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(top, arcname=top.name)
    return tarball


@pytest.mark.slow
def test_gpu_cifar10_script_on_cpu_with_a_tiny_budget(tmp_path):
    """benchmarks/gpu_cifar10.sh: unpacks the tarball, runs fp, SLB and STE through train.py,
    and writes one record each; a rerun skips them (nothing is trained twice)."""
    import subprocess

    tarball = _tiny_cifar_tarball(tmp_path)
    out = tmp_path / "gpu"
    env = {**os.environ, "TARBALL": str(tarball), "OUT": str(out), "EPOCHS": "1",
           "STEPS_PER_EPOCH": "1", "BATCH_SIZE": "4",
           "PYTHON": sys.executable}  # this interpreter, with or without an activated venv
    script = os.path.join(ROOT, "benchmarks", "gpu_cifar10.sh")
    first = subprocess.run(["bash", script], env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    report = json.loads((out / "cifar10.json").read_text())
    assert [(r["method"], r["wbits"], r["abits"]) for r in report["records"]] == [
        ("fp", 32, 32), ("slb", 1, 1), ("ste", 1, 1)]
    for record in report["records"]:
        assert (record["split_sizes"]["train"], record["split_sizes"]["test"]) == (16, 4)
        assert 0.0 <= record["test_accuracy"] <= 1.0 and record["wall_seconds"] > 0
        assert "train.py" in record["command"] and "--steps_per_epoch=1" in record["command"]
        (epoch,) = record["history"]  # one epoch, its values as train.py's summary.json has them
        assert 0.0 <= epoch["accuracy"] <= 1.0 and epoch["epoch_seconds"] > 0
        assert ("temperature" in epoch) == (record["method"] == "slb")
    assert "test_accuracy (%" in first.stdout
    second = subprocess.run(["bash", script], env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-2000:]
    assert len(json.loads((out / "cifar10.json").read_text())["records"]) == 3


def test_gpu_cifar10_script_without_the_tarball_exits_2(tmp_path):
    import subprocess

    env = {**os.environ, "TARBALL": str(tmp_path / "missing.tar.gz"), "OUT": str(tmp_path / "gpu")}
    done = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "gpu_cifar10.sh")], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "no CIFAR-10 tarball at" in done.stderr


def test_bit_search_pareto_table_measures_packed_sizes_once(tmp_path):
    import keras

    import slb_keras

    bit_search = _script("bit_search")

    def saved(name, wbits):  # a run's model.keras: 2 searched-then-fixed layers
        model = keras.Sequential([
            keras.Input((8,)),
            slb_keras.SLBDense(64, wbits=wbits[0], name="a"),
            slb_keras.SLBDense(4, wbits=wbits[1], name="b"),
        ])
        (tmp_path / name).mkdir()
        model.save(tmp_path / name / "model.keras")
        return str(tmp_path / name)

    def record(key, variant, wbits, seed, acc, model_dir):
        return {"key": key, "model": "resnet20", "variant": variant, "wbits": wbits, "abits": 2,
                "epochs": 4, "seed": seed, "test_accuracy": acc, "val_accuracy": acc + 0.01,
                "config": {"model_dir": model_dir, "temperature_end": 200.0}}

    records = [
        record("u2s0", "slb", 2, 0, 0.60, saved("u2s0", (2, 2))),
        record("u2s1", "slb", 2, 1, 0.62, saved("u2s1", (2, 2))),
        record("b2s0", "slb+bit_budget=2", [1, 2, 4], 0, 0.64, saved("b2s0", (1, 4))),
        record("b2t1000", "slb+bit_budget=2", [1, 2, 4], 1, 0.5, saved("b2t1000", (1, 4))),
        record("other", "slb", 2, 0, 0.1, "/nonexistent"),
    ]
    records[-1]["abits"] = 1  # another activation width: not selected
    records[-2]["config"]["temperature_end"] = 1000.0  # the same flags at another recipe's tau
    (tmp_path / "cifar10.json").write_text(json.dumps({"records": records}))
    out = tmp_path / "bit_search.json"
    argv = [f"--json={tmp_path / 'cifar10.json'}", f"--out={out}", f"--png={tmp_path / 'p.png'}"]
    bit_search.main(argv)
    report = json.loads(out.read_text())
    assert sorted(report["sizes"]) == ["b2s0", "b2t1000", "u2s0", "u2s1"]
    assert report["sizes"]["b2s0"]["wbits_per_layer"] == {"a": 1, "b": 4}
    assert report["sizes"]["b2s0"]["quantized_bits"] == 8 * 64 * 1 + 64 * 4 * 4
    assert report["sizes"]["u2s0"]["average_wbits"] == 2.0
    uniform, search, search_1000 = sorted(report["table"], key=lambda r: r["config"], reverse=True)
    assert (uniform["config"], uniform["n"]) == ("uniform W2", 2)
    assert uniform["test_mean"] == pytest.approx(61.0) and uniform["test_std"] == pytest.approx(1.0)
    assert search["config"] == "search B=2 (1,2,4) temperature_end=200"
    assert search["average_wbits"] == pytest.approx((512 + 1024) / (512 + 256))
    # A search's label gives the tau it ran at: two recipes of the same flags are two rows.
    assert (search_1000["config"], search_1000["n"]) == ("search B=2 (1,2,4) temperature_end=1000", 1)
    assert (tmp_path / "p.png").stat().st_size > 0
    # The sizes outlive the run directories: a rerun without them keeps what was measured.
    for name in ("u2s0", "u2s1", "b2s0", "b2t1000"):
        os.remove(tmp_path / name / "model.keras")
    bit_search.main(argv)
    assert json.loads(out.read_text())["sizes"] == report["sizes"]


def test_cifar10_curve_averages_seeds_per_budget_and_keeps_series_apart(tmp_path):
    """One point per budget (the mean over seeds, the std as error bar); two lr series of one
    method stay two lines; other models and W/A are not drawn."""
    cifar10_plot = _script("cifar10_plot")

    def record(variant, epochs, seed, acc, model="resnet20", wbits=1):
        method = variant.split("+")[0]
        return {"model": model, "variant": variant, "method": method, "wbits": 32 if method == "fp" else wbits,
                "abits": 32 if method == "fp" else 1, "epochs": epochs, "seed": seed,
                "validation_split": 0.125, "test_accuracy": acc, "val_accuracy": acc,
                "seconds_per_epoch": 1.0, "wall_seconds": 1.0}

    records = [
        record("slb", 4, 0, 0.56), record("slb", 4, 1, 0.58), record("slb", 32, 0, 0.76),
        record("slb+lr=0.001", 4, 0, 0.54), record("slb+lr=0.001", 8, 0, 0.62),
        record("fp", 4, 0, 0.71), record("ste", 4, 0, 0.52),
        record("slb", 4, 0, 0.99, model="vgg_small"), record("slb", 4, 0, 0.99, wbits=2),
    ]
    (tmp_path / "cifar10.json").write_text(json.dumps({"records": records}))
    out = tmp_path / "curve.png"
    cifar10_plot.main([f"--json={tmp_path / 'cifar10.json'}", f"--out={out}"])
    assert out.stat().st_size > 0 and not os.path.exists(str(out) + ".tmp.png")
    points = cifar10_plot.plot(records, cifar10_plot._series("fp,slb:1/1,slb+lr=0.001:1/1,ste:2/2"),
                               "test_accuracy", str(tmp_path / "p.png"))
    assert sorted(points) == ["fp", "slb W1/A1", "slb+lr=0.001 W1/A1"]  # nothing for STE W2/A2
    (e4, mean4, std4, n4), (e32, mean32, _, n32) = points["slb W1/A1"]
    assert (e4, n4, e32, n32) == (4, 2, 32, 1)
    assert (mean4, std4, mean32) == (pytest.approx(57.0), pytest.approx(1.0), pytest.approx(76.0))
    assert [p[:2] for p in points["slb+lr=0.001 W1/A1"]] == [(4, pytest.approx(54.0)), (8, pytest.approx(62.0))]


def test_epoch_speed_compares_every_run_on_the_same_steady_epochs():
    """Neither the first epoch (tracing) nor the last (SLB's one final calibration) counts, for
    every run alike; what the last epoch adds is reported apart, and so is the end-of-epoch work."""
    epoch_speed = _script("epoch_speed")
    rnd = {
        "fp": {"epoch_seconds": [30.0, 20.0, 22.0, 19.0], "train_seconds": [29.0, 19.0, 21.5, 18.0]},
        "slb": {"epoch_seconds": [40.0, 24.0, 23.0, 35.0], "train_seconds": [38.0, 22.0, 21.0, 22.0]},
        "plain_fit": {"epoch_seconds": [30.0, 25.0, 21.0, 10.0]},
    }
    summary = epoch_speed.summarize([rnd], images_per_epoch=1000)
    # fp's fast last epoch (19 s) and the plain fit's (10 s) do not count: epochs 2-3 only.
    assert summary["runs"]["fp"]["fastest_epoch_seconds"] == 20.0
    assert summary["runs"]["plain_fit"]["fastest_epoch_seconds"] == 21.0
    assert summary["ratios"]["slb/fp"]["median"] == pytest.approx(23.0 / 20.0)
    assert summary["ratios"]["fp/plain_fit"]["median"] == pytest.approx(20.0 / 21.0)
    assert summary["runs"]["slb"]["last_epoch_extra_seconds"] == pytest.approx(35.0 - 23.5)
    assert summary["runs"]["slb"]["end_of_epoch_seconds"] == pytest.approx(2.0)
    assert summary["runs"]["fp"]["end_of_epoch_seconds"] == pytest.approx(0.5)
    assert "end_of_epoch_seconds" not in summary["runs"]["plain_fit"]
    assert summary["runs"]["fp"]["images_per_second"] == pytest.approx(50.0)


@pytest.mark.slow
def test_epoch_speed_times_train_py_and_a_plain_fit_and_reports_their_ratios(tmp_path, capsys):
    """benchmarks/epoch_speed.py: train.py fp and SLB and the plain fit each run their epochs;
    with two epochs the ratios are those of the second epochs (the first one traces)."""
    folder = _tiny_cifar_folder(tmp_path)
    report = _report("epoch_speed", [f"--data={folder}", "--epochs=2", "--steps_per_epoch=2",
                                     "--batch_size=4"], tmp_path)
    (rnd,) = report["rounds"]
    for name in ("fp", "slb", "plain_fit"):
        assert len(rnd[name]["epoch_seconds"]) == 2 and min(rnd[name]["epoch_seconds"]) > 0
        assert rnd[name]["wall_seconds"] > sum(rnd[name]["epoch_seconds"])
    assert "--method=slb" in rnd["slb"]["command"] and "--wbits=1" in rnd["slb"]["command"]
    assert "train.py" in rnd["fp"]["command"] and "--steps_per_epoch=2" in rnd["fp"]["command"]
    ratios = report["summary"]["ratios"]
    second = {name: rnd[name]["epoch_seconds"][1] for name in rnd}
    assert ratios["slb/fp"]["median"] == pytest.approx(second["slb"] / second["fp"])
    assert ratios["fp/plain_fit"]["median"] == pytest.approx(second["fp"] / second["plain_fit"])
    assert report["summary"]["runs"]["fp"]["images_per_second"] == pytest.approx(8 / second["fp"])
    assert "slb/fp:" in capsys.readouterr().out


@pytest.mark.slow
def test_calibration_steps_recalibrates_a_finished_run_per_number_of_batches(tmp_path, capsys):
    """benchmarks/calibration_steps.py on a finished train.py SLB run: one record per number
    of batches and order, the reference (most batches, first order) deviates by 0 from itself."""
    import subprocess
    import sys

    folder = _tiny_cifar_folder(tmp_path)
    model_dir = tmp_path / "run"
    subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--model=resnet20", "--method=slb",
                    f"--dataset={folder}", "--epochs=1", "--steps_per_epoch=2", "--batch_size=4",
                    "--width_multiplier=0.25", f"--model_dir={model_dir}"], check=True, capture_output=True)
    report = _report("calibration_steps", [f"--model_dir={model_dir}", "--steps=1,3", "--orders=2"], tmp_path)
    assert [(r["steps"], r["order"]) for r in report["results"]] == [(3, 0), (1, 0), (3, 1), (1, 1)]
    reference = report["results"][0]
    assert reference["mean_deviation"] == 0.0 and reference["variance_deviation"] == 0.0
    assert report["results"][1]["variance_deviation"] > 0.0  # fewer batches, other statistics
    assert [(row["steps"], row["n"]) for row in report["table"]] == [(1, 2), (3, 2)]
    assert all(0.0 <= r["test_accuracy"] <= 1.0 for r in report["results"])
    assert len(report["load_before"]) == 3 and len(report["load_after"]) == 3  # the load it ran under
    assert "as saved" in capsys.readouterr().out


def test_calibration_steps_refuses_a_folder_that_is_not_a_finished_run(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _script("calibration_steps").main([f"--model_dir={tmp_path}", f"--out={tmp_path / 'r.json'}"])
    assert exit_info.value.code == 2 and "no model.keras" in capsys.readouterr().err
