"""Issue 15, training side: nothing lost, nothing silent.

One live run per model_dir (a lock, the holder's PID in the refusal), a robust
history.csv, NaN stops the run keeping the last good backup (exit 1), a batch larger
than the data set refused whatever --steps_per_epoch, unreadable flags.json /
summary.json / backups and a full disk in one line, a backup that no longer fits the
data in one line, a run killed during its final save finished on resume, stale
temporaries removed. Random kill -9s: tests/test_faults.py and benchmarks/faults.py.

Runs are tiny (see TINY); the subprocess tests run the real command line, the others
`train.main` or `training.run` in this process.
"""

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

import input_pipeline
import train
import training
from tiny_run import TINY, TINY_FLAGS, child_env, snapshot, write_npz
from training.guards import RunFailed, StopOnNonFinite, TrainingDiverged
from training.lock import RunDirLock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# TensorFlow's C++ runtime logs a few lines at start whatever TF_CPP_MIN_LOG_LEVEL says.
TF_STARTUP_LOG = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages before absl|To enable the following)")


def _popen(args):
    return subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "train.py"), *args],
        cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _ours(stderr):
    """train.py's own lines of stderr (TensorFlow's startup log left out)."""
    return [line for line in stderr.splitlines() if not TF_STARTUP_LOG.match(line)]


def _main(argv, capsys):
    """train.py's main in this process: (exit status, stdout, stderr); status 0 if it returned."""
    train.FLAGS.unparse_flags()
    try:
        train.main(train._parse_flags(["train.py", *argv]))
        status = 0
    except SystemExit as exit_info:
        status = exit_info.code
    finally:
        train.FLAGS.unparse_flags()
    out, err = capsys.readouterr()
    return status, out, err


def _one_line(err, status_expected, status):
    lines = err.strip().splitlines()
    assert status == status_expected, err
    assert len(lines) == 1 and lines[0].startswith("train.py: error: "), err
    return lines[0]


def _history_lines(model_dir):
    with open(os.path.join(model_dir, training.HISTORY_FILE)) as file:
        return file.read().splitlines()


def _no_temporaries(model_dir):
    return not [name for name in os.listdir(model_dir) if name.startswith((".tmp-", ".lock"))]


# --- one run per model_dir ------------------------------------------------------------


_HOLDER = """
import sys, time
sys.path.insert(0, {root!r})
from training.lock import RunDirLock
lock = RunDirLock({path!r}).acquire()
print("held", flush=True)
time.sleep(120)
"""


def test_lock_refuses_a_second_holder_naming_its_pid_and_dies_with_its_holder(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER.format(root=ROOT, path=str(tmp_path))],
        stdout=subprocess.PIPE, text=True, env=child_env(),
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(training.UsageError) as refused:
            RunDirLock(str(tmp_path)).acquire()
        assert str(refused.value) == (
            f"Invalid --model_dir={tmp_path}: another run (PID {holder.pid}) is training in it; "
            "wait for it to end or choose another --model_dir."
        )
        with RunDirLock(str(tmp_path), "worker1"):  # a worker of the same run: its own lock
            pass
        os.kill(holder.pid, signal.SIGKILL)  # the kernel releases a dead holder's lock
        holder.wait()
    finally:
        holder.kill()
        holder.wait()
    assert os.listdir(tmp_path) == [".lock"]  # a killed holder cannot remove its file ...
    with RunDirLock(str(tmp_path)) as lock:  # ... but it no longer locks anything
        assert open(lock.path).read() == f"{os.getpid()}\n"
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_two_identical_commands_started_together_one_trains_one_is_refused(tmp_path):
    model_dir = tmp_path / "run"
    args = [*TINY_FLAGS, f"--model_dir={model_dir}"]
    runs = [_popen(args), _popen(args)]
    try:
        outputs = [run.communicate(timeout=300) for run in runs]
    finally:
        for run in runs:
            run.kill()
    statuses = sorted(run.returncode for run in runs)
    assert statuses == [0, 2], [err[-2000:] for _, err in outputs]
    winner, loser = (0, 1) if runs[0].returncode == 0 else (1, 0)
    assert _ours(outputs[loser][1]) == [
        f"train.py: error: Invalid --model_dir={model_dir}: another run (PID {runs[winner].pid}) "
        "is training in it; wait for it to end or choose another --model_dir."
    ]
    lines = _history_lines(model_dir)
    assert len(lines) == 3 and lines[0].startswith("epoch,") and lines[1].startswith("0,")
    summary = json.loads((model_dir / training.SUMMARY_FILE).read_text())
    assert [row["epoch"] for row in summary["history"]] == [0.0, 1.0]
    assert _no_temporaries(model_dir)
    again = subprocess.run(
        [sys.executable, os.path.join(ROOT, "train.py"), *args],
        cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=300,
    )
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stderr[-2000:]


@pytest.mark.slow
def test_a_second_run_started_mid_run_is_refused_not_resumed_from_the_live_backup(tmp_path):
    model_dir = tmp_path / "run"
    flags = [f for f in TINY_FLAGS if not f.startswith(("--epochs=", "--steps_per_epoch="))]
    args = [*flags, "--epochs=3", "--steps_per_epoch=400", f"--model_dir={model_dir}"]  # long epochs
    first = _popen(args)
    try:
        lock = model_dir / ".lock"
        deadline = time.time() + 240
        while time.time() < deadline and first.poll() is None and not (lock.exists() and lock.read_text()):
            time.sleep(0.05)
        second = subprocess.run(
            [sys.executable, os.path.join(ROOT, "train.py"), *args],
            cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=300,
        )
        assert first.poll() is None, "the first run ended before the second was refused"
    finally:
        first.kill()
        first.wait()
    assert second.returncode == 2 and "Resuming" not in second.stdout, second.stderr[-3000:]
    assert _ours(second.stderr) == [
        f"train.py: error: Invalid --model_dir={model_dir}: another run (PID {first.pid}) "
        "is training in it; wait for it to end or choose another --model_dir."
    ]
    assert not (model_dir / training.SUMMARY_FILE).exists()
    RunDirLock(str(model_dir)).acquire().release()  # the killed holder's lock died with it


def test_history_with_a_stray_header_and_repeated_rows_is_read_and_rewritten(tmp_path):
    path = tmp_path / "history.csv"
    # What two concurrent runs and a kill after an epoch's row used to leave.
    path.write_text("epoch,loss\r\n0,2.5\r\nepoch,loss\r\n0,2.5\r\n1,2.0\r\n1,1.5\r\n2,1.")
    assert training.run_dir.read_history(str(path)) == [
        {"epoch": 0.0, "loss": 2.5}, {"epoch": 1.0, "loss": 1.5}, {"epoch": 2.0, "loss": 1.0}
    ]
    training.run_dir.truncate_history(str(path), 2)  # a resume at epoch 2 (0-based)
    assert path.read_bytes() == b"epoch,loss\r\n0,2.5\r\n1,1.5\r\n"
    training.run_dir.truncate_history(str(path), 0)
    assert path.read_bytes() == b""


def test_history_rows_with_other_keys_stay_readable(tmp_path):
    # A run resumed by a newer version: its first epochs logged val_* of the test split
    # every epoch (the old protocol), the resumed ones log other keys and no val_*.
    path = str(tmp_path / "history.csv")
    training.run_dir.append_history(path, 0, {"loss": 2.5, "val_loss": 3.0, "val_accuracy": 0.1})
    training.run_dir.append_history(path, 1, {"loss": 2.0, "val_loss": 2.9, "val_accuracy": 0.2})
    training.run_dir.truncate_history(path, 1)  # the resume re-runs epoch 1
    training.run_dir.append_history(path, 1, {"loss": 1.5, "temperature": 0.5, "slb_max_prob": 0.9})
    training.run_dir.append_history(path, 2, {"loss": 1.0, "temperature": 0.7, "slb_max_prob": 0.95})
    assert training.run_dir.read_history(path) == [
        {"epoch": 0.0, "loss": 2.5, "val_loss": 3.0, "val_accuracy": 0.1},
        {"epoch": 1.0, "loss": 1.5, "slb_max_prob": 0.9, "temperature": 0.5},
        {"epoch": 2.0, "loss": 1.0, "slb_max_prob": 0.95, "temperature": 0.7},
    ]
    header = open(path).readline().strip().split(",")
    assert header == ["epoch", "loss", "val_accuracy", "val_loss", "slb_max_prob", "temperature"]


def test_a_run_over_a_broken_history_writes_one_header_and_one_row_per_epoch(tmp_path):
    config = training.resolve(training.Config(**{**TINY, "model_dir": str(tmp_path)}))
    (tmp_path / training.FLAGS_FILE).write_text(json.dumps(training.run_settings(config)))
    (tmp_path / training.HISTORY_FILE).write_text("epoch,loss\n0,1\nepoch,loss\n0,1\n1,2\n")
    (tmp_path / ".tmp-x1y2z3model.keras").write_bytes(b"half a model of a killed run")
    summary = training.run({**TINY, "model_dir": str(tmp_path)})
    assert [row["epoch"] for row in summary["history"]] == [0.0, 1.0]
    lines = _history_lines(tmp_path)
    assert len(lines) == 3 and lines[0].startswith("epoch,accuracy,")
    assert _no_temporaries(tmp_path)


# --- bad input: one line, exit 2, nothing written ---------------------------------------


def test_batch_larger_than_the_data_is_refused_whatever_steps_per_epoch(tmp_path, capsys):
    flags = [f for f in TINY_FLAGS if not f.startswith(("--batch_size", "--steps_per_epoch"))]
    start = time.perf_counter()
    status, _, err = _main(
        [*flags, "--batch_size=100000000", "--steps_per_epoch=3", f"--model_dir={tmp_path / 'run'}"], capsys
    )
    line = _one_line(err, 2, status)
    assert "batch" in line and "100000000" in line
    assert time.perf_counter() - start < 60
    assert not (tmp_path / "run").exists()


DAMAGED = [
    ("flags.json empty", "flags.json", b"", "its flags.json is unreadable (not valid JSON"),
    ("flags.json cut", "flags.json", b'{"model": "vgg', "its flags.json is unreadable (not valid JSON"),
    ("flags.json binary", "flags.json", b"\xff\xfe\x00garbage", "its flags.json is unreadable"),
    ("flags.json a list", "flags.json", b"[1, 2]", "its flags.json holds no settings (a JSON list)"),
    ("summary.json cut", "summary.json", b'{"test_accuracy": 0.', "its summary.json is unreadable (not valid"),
]


@pytest.mark.parametrize("name, file, content, expected", DAMAGED, ids=[case[0] for case in DAMAGED])
def test_damaged_json_files_exit_2_with_one_line_and_change_nothing(name, file, content, expected, tmp_path, capsys):
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    config = training.resolve(training.Config(**{**TINY, "model_dir": str(model_dir)}))
    (model_dir / training.FLAGS_FILE).write_text(json.dumps(training.run_settings(config)))
    (model_dir / training.MODEL_FILE).write_bytes(b"the weights of the completed run")
    (model_dir / file).write_bytes(content)
    before = snapshot(model_dir)
    status, _, err = _main([*TINY_FLAGS, f"--model_dir={model_dir}"], capsys)
    assert expected in _one_line(err, 2, status)
    assert snapshot(model_dir) == before


# --- failures of a valid run: one line, exit 1, the last good backup kept ---------------


def _datasets(nan_from_step=None):
    """(train, test, calibration) digits datasets of TINY; train's images are NaN from
    global step `nan_from_step` on."""
    train_ds = input_pipeline.build_dataset("digits", "train", 16, image_size=16, steps_per_epoch=2)
    test_ds = input_pipeline.build_dataset("digits", "test", 16, image_size=16)
    if nan_from_step is not None:
        poisoned = train_ds.map(lambda x, y: (x * np.float32("nan"), y))
        train_ds = train_ds.take(nan_from_step).concatenate(poisoned)
    return train_ds, test_ds, input_pipeline.build_dataset("digits", "train", 16, image_size=16, steps_per_epoch=2)


def test_nan_loss_stops_the_run_keeps_the_last_good_backup_and_it_resumes(tmp_path):
    config = {**TINY, "model_dir": str(tmp_path)}
    with pytest.raises(TrainingDiverged) as diverged:
        training.run(config, datasets_override=_datasets(nan_from_step=2))  # epoch 2 is NaN
    assert isinstance(diverged.value, RunFailed) and diverged.value.epoch == 1
    # The sign activations turn NaN inputs into finite codes: the loss may stay finite
    # while the first conv's gradient (hence kernel) becomes NaN, caught at the epoch's end.
    assert re.fullmatch(
        "training diverged: (loss became nan in epoch 2, step [12]|weight [^ ]+ became non-finite in "
        f"epoch 2 \\(at its end\\)); {re.escape(str(tmp_path))}: its backup of epoch 1 \\(the last good "
        "one\\) is kept: the same command resumes from it \\(and, with the same flags, likely diverges "
        "again\\); to train with other settings \\(e.g. a lower --lr\\) choose a new --model_dir.",
        str(diverged.value),
    ), str(diverged.value)
    names = set(os.listdir(tmp_path))
    assert not names & {training.MODEL_FILE, training.SUMMARY_FILE, training.TFLITE_FILE}
    assert _no_temporaries(tmp_path)
    metadata = json.loads((tmp_path / "backup" / "training_metadata.json").read_text())
    assert metadata["epoch"] == 1
    assert [line.split(",")[0] for line in _history_lines(tmp_path)] == ["epoch", "0"]  # no NaN row
    summary = training.run(config, datasets_override=_datasets())
    assert summary["resumed_from_epoch"] == 1
    assert [row["epoch"] for row in summary["history"]] == [0.0, 1.0]
    assert all(np.isfinite(row["loss"]) for row in summary["history"])


def test_stop_on_non_finite_checks_the_weights_at_an_epoch_end():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, name="fc")], name="net")
    callback = StopOnNonFinite()
    callback.set_model(model)
    callback.on_epoch_end(0, {"loss": 1.0, "val_loss": 2.0})  # finite: nothing
    with pytest.raises(TrainingDiverged, match="val_loss became inf in epoch 3 \\(at its end\\)"):
        callback.on_epoch_end(2, {"loss": 1.0, "val_loss": float("inf")})
    model.get_layer("fc").bias.assign([np.nan])
    with pytest.raises(TrainingDiverged, match="weight net/fc/bias became non-finite in epoch 1"):
        callback.on_epoch_end(0, {"loss": 1.0})


@pytest.mark.slow
def test_train_py_exits_1_in_one_line_when_the_loss_becomes_nan(tmp_path):
    model_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "train.py"), *TINY_FLAGS, "--lr=1e30", f"--model_dir={model_dir}"],
        cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert _ours(result.stderr) == [
        "train.py: error: training diverged: loss became nan in epoch 1, step 2; "
        f"{model_dir}: no epoch completed, so there is nothing to resume; to train with other "
        "settings (e.g. a lower --lr) choose a new --model_dir."
    ]
    assert not {training.MODEL_FILE, training.SUMMARY_FILE} & set(os.listdir(model_dir))


def _fail_at_save(monkeypatch):
    """Makes `keras.Model.save` write half a file then fail as a full disk does."""

    def save(model, path, *args, **kwargs):
        with open(path, "wb") as file:
            file.write(b"PK\x03\x04 half a zip")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(keras.Model, "save", save)


def _killed_at_save(model_dir, capsys, monkeypatch, flags=TINY_FLAGS):
    """Runs train.py's main into a full disk at its final save: (status, stderr)."""
    with monkeypatch.context() as patch:
        _fail_at_save(patch)
        status, _, err = _main([*flags, f"--model_dir={model_dir}"], capsys)
    return status, err


def test_full_disk_at_the_final_save_exits_1_keeps_the_backup_and_resume_finishes(tmp_path, capsys, monkeypatch):
    status, err = _killed_at_save(tmp_path, capsys, monkeypatch)
    line = _one_line(err, 1, status)
    assert f"train.py: error: {tmp_path}: a file could not be written or read (No space left on device: " in line
    assert "free disk space and run the same command to resume" in line
    names = set(os.listdir(tmp_path))
    assert not names & {training.MODEL_FILE, training.SUMMARY_FILE} and _no_temporaries(tmp_path)
    assert json.loads((tmp_path / "backup" / "training_metadata.json").read_text())["epoch"] == 2
    (tmp_path / ".tmp-k9model.keras").write_bytes(b"half a model left by a kill")  # stale
    status, out, err = _main([*TINY_FLAGS, f"--model_dir={tmp_path}"], capsys)
    assert status == 0, err
    assert f"Resuming {tmp_path} after its last epoch (step 4, temperature " in out
    assert "at epoch 3/2" not in out
    summary = json.loads((tmp_path / training.SUMMARY_FILE).read_text())
    assert (summary["resumed_from_epoch"], summary["epoch_seconds"]) == (2, [])
    assert [row["epoch"] for row in summary["history"]] == [0.0, 1.0]
    assert "backup" not in os.listdir(tmp_path) and _no_temporaries(tmp_path)
    keras.models.load_model(tmp_path / training.MODEL_FILE)


def test_a_backup_that_no_longer_fits_the_data_exits_2_in_one_line(tmp_path, capsys, monkeypatch):
    data, model_dir = tmp_path / "data.npz", tmp_path / "run"
    write_npz(data, classes=4)
    flags = [f for f in TINY_FLAGS if not f.startswith(("--dataset=", "--image_size="))]
    flags.append(f"--dataset={data}")
    status, err = _killed_at_save(model_dir, capsys, monkeypatch, flags)
    assert status == 1, err
    write_npz(data, classes=5)  # the data changed under the run
    before = snapshot(model_dir)
    status, _, err = _main([*flags, f"--model_dir={model_dir}"], capsys)
    assert _one_line(err, 2, status) == (
        f"train.py: error: Invalid --model_dir={model_dir}: its backup in {model_dir}/backup does "
        "not fit the model this run builds (5 classes, input 8x8x1): the run's data no longer "
        "matches its backup (did --dataset's classes or images change?); restore the data or "
        "choose another --model_dir."
    )
    assert snapshot(model_dir) == before


@pytest.mark.slow
def test_unreadable_backup_files_fall_back_or_exit_2_in_one_line(tmp_path, capsys, monkeypatch):
    status, err = _killed_at_save(tmp_path, capsys, monkeypatch)
    assert status == 1, err
    backup = tmp_path / "backup"
    (backup / "training_metadata.json").write_text("")  # a kill while Keras wrote it
    (backup / "latest.weights.h5").write_bytes(b"")
    previous = {name: (backup / name).read_bytes() for name in os.listdir(backup) if name.endswith(".bkp")}
    assert len(previous) == 2  # double_checkpoint: the weights and the epoch before
    for name in previous:
        (backup / name).unlink()
    before = snapshot(tmp_path)
    status, _, err = _main([*TINY_FLAGS, f"--model_dir={tmp_path}"], capsys)
    line = _one_line(err, 2, status)
    assert f"Invalid --model_dir={tmp_path}: its backup in {backup} is unreadable (" in line
    assert line.endswith("delete that directory to train from the start, or choose another --model_dir.")
    assert snapshot(tmp_path) == {k: v for k, v in before.items() if k != "backup/training_metadata.json"}
    for name, content in previous.items():  # with the previous backup, the run resumes from it
        (backup / name).write_bytes(content)
    status, out, err = _main([*TINY_FLAGS, f"--model_dir={tmp_path}"], capsys)
    assert status == 0, err
    assert f"Resuming {tmp_path} at epoch 2/2 (step 2" in out
    assert json.loads((tmp_path / training.SUMMARY_FILE).read_text())["resumed_from_epoch"] == 1


@pytest.mark.slow
def test_a_real_full_disk_exits_1_in_one_line_and_the_same_command_resumes(tmp_path, capsys):
    # A tmpfs that holds the run's logs and backups but not its model.keras. Root is
    # needed to mount it: the tests run as root here and in CI.
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1200k", "tmpfs", str(disk)], capture_output=True, text=True)
    assert mounted.returncode == 0, f"cannot mount a tmpfs to fill: {mounted.stderr}"
    try:
        model_dir = disk / "run"
        args = [*TINY_FLAGS, f"--model_dir={model_dir}"]
        full = subprocess.run(
            [sys.executable, os.path.join(ROOT, "train.py"), *args],
            cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=300,
        )
        assert full.returncode == 1, full.stderr[-3000:]
        (line,) = _ours(full.stderr)
        assert line.startswith(f"train.py: error: {model_dir}: a file could not be written or read (No space left on device")
        assert line.endswith("free disk space and run the same command to resume.")
        names = set(os.listdir(model_dir))
        assert not names & {training.MODEL_FILE, training.SUMMARY_FILE} and _no_temporaries(model_dir)
        subprocess.run(["mount", "-o", "remount,size=8m", str(disk)], check=True)  # space freed
        status, out, err = _main(args, capsys)
        assert status == 0, err
        assert f"Resuming {model_dir} " in out
        summary = json.loads((model_dir / training.SUMMARY_FILE).read_text())
        assert [row["epoch"] for row in summary["history"]] == [0.0, 1.0]
        assert _no_temporaries(model_dir) and "backup" not in os.listdir(model_dir)
        keras.models.load_model(model_dir / training.MODEL_FILE)
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
