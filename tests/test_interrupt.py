"""Ctrl-C on a real train.py process: one line, exit status 130, the backup kept, and the
command it prints resumes the run.

A SIGINT is sent to the process by itself at a chosen point (through a small harness
that runs train.py as `__main__` after wrapping the function of that point), or from
outside during start-up.
"""

import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest

from tiny_run import TINY_FLAGS, child_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs train.py as the user does (sys.argv[0] "train.py"), after wrapping the function
# named by $INTERRUPT_AT so that it sends this process a SIGINT on its first call.
HARNESS = r'''
import os, runpy, signal, sys
import keras
import slb_keras

point = os.environ["INTERRUPT_AT"]


def interrupt_first(function):
    def wrapped(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return function(*args, **kwargs)
    return wrapped


if point == "mid-epoch":  # the 2nd step of the 2nd epoch
    class Interrupt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 1 and batch == 0:
                os.kill(os.getpid(), signal.SIGINT)

    fit = keras.Model.fit

    def fit_with_interrupt(self, *args, callbacks=(), **kwargs):
        return fit(self, *args, callbacks=[*callbacks, Interrupt()], **kwargs)

    keras.Model.fit = fit_with_interrupt
elif point == "calibration":  # the BN calibration at the end of the last epoch
    slb_keras.BNCalibration.calibrate = interrupt_first(slb_keras.BNCalibration.calibrate)
elif point == "export":  # model.tflite, after model.keras was written
    slb_keras.export_tflite = interrupt_first(slb_keras.export_tflite)
sys.argv = ["train.py", *sys.argv[1:]]
sys.path.insert(0, os.getcwd())  # as `python train.py` puts the script's folder first
runpy.run_path("train.py", run_name="__main__")
'''


def _as_from_a_terminal():
    """The child's SIGINT disposition reset to the default, as a shell starts a command.

    Python installs its KeyboardInterrupt handler only when it starts with SIGINT at the
    default; a test process may have inherited it ignored (seen once in a full xdist run:
    every interrupt test then ran to completion), so each child starts as from a shell.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _flags(model_dir):
    return [*TINY_FLAGS, "--method=slb", "--export", f"--model_dir={model_dir}"]


def _interrupted_run(tmp_path, point, model_dir):
    harness = tmp_path / "harness.py"
    harness.write_text(HARNESS)
    return subprocess.run(
        [sys.executable, str(harness), *_flags(model_dir)], cwd=ROOT, env=child_env(INTERRUPT_AT=point),
        capture_output=True, text=True, timeout=300, preexec_fn=_as_from_a_terminal,
    )


def _one_line(result):
    """The interrupt's line: stderr holds it alone (warnings of TF's own aside)."""
    assert result.returncode == 130, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("train.py: ")]
    assert len(lines) == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "KeyboardInterrupt" not in result.stderr, result.stderr
    return lines[0]


def _resume_command(line):
    """The command between backquotes, as argv (its "python" made this interpreter)."""
    command = shlex.split(line.split("`")[1])
    assert command[:2] == ["python", "train.py"]
    return [sys.executable, *command[1:]]


def _resume(line):
    return subprocess.run(_resume_command(line), cwd=ROOT, env=child_env(), capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_ctrl_c_mid_epoch_keeps_the_backup_and_the_printed_command_resumes(tmp_path):
    model_dir = tmp_path / "run"
    line = _one_line(_interrupted_run(tmp_path, "mid-epoch", model_dir))
    assert line.startswith("train.py: interrupted in epoch 2/2; ")
    assert f"{model_dir} keeps the backup of epoch 1/2" in line and "resumes the run at epoch 2/2" in line
    assert _resume_command(line)[2:] == _flags(model_dir)
    assert "summary.json" not in os.listdir(model_dir) and "backup" in os.listdir(model_dir)
    resumed = _resume(line)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resuming {model_dir} at epoch 2/2" in resumed.stdout
    summary = json.loads((model_dir / "summary.json").read_text())
    assert summary["resumed_from_epoch"] == 1 and len(summary["history"]) == 2


@pytest.mark.slow
def test_ctrl_c_in_the_final_bn_calibration_keeps_the_previous_epoch(tmp_path):
    model_dir = tmp_path / "run"
    line = _one_line(_interrupted_run(tmp_path, "calibration", model_dir))
    assert line.startswith("train.py: interrupted in the end of epoch 2/2 (BN calibration")
    assert "keeps the backup of epoch 1/2" in line and "resumes the run at epoch 2/2" in line
    assert not (model_dir / "model.keras").exists()


@pytest.mark.slow
def test_ctrl_c_in_the_export_finishes_without_training_again(tmp_path):
    model_dir = tmp_path / "run"
    line = _one_line(_interrupted_run(tmp_path, "export", model_dir))
    assert line.startswith("train.py: interrupted in the export of model.tflite, after the last epoch; ")
    assert "keeps the backup of epoch 2/2" in line and "finishes the run" in line
    assert not (model_dir / "model.tflite").exists() and not (model_dir / "summary.json").exists()
    assert not [name for name in os.listdir(model_dir) if name.startswith(".")]  # no temporary left
    resumed = _resume(line)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resuming {model_dir} after its last epoch" in resumed.stdout
    summary = json.loads((model_dir / "summary.json").read_text())
    assert summary["epoch_seconds"] == [] and (model_dir / "model.tflite").stat().st_size > 0


@pytest.mark.slow
def test_ctrl_c_during_start_up_changes_nothing(tmp_path):
    model_dir = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "train.py", *_flags(model_dir)], cwd=ROOT, env=child_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_as_from_a_terminal,
    )
    time.sleep(1.5)  # train.py imports TensorFlow for several seconds
    assert process.poll() is None
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    line = _one_line(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
    assert line.startswith("train.py: interrupted in start-up, before the training started or resumed; ")
    assert _resume_command(line)[2:] == _flags(model_dir)
    assert not model_dir.exists()
