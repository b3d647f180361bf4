"""Failures of a run that was correctly set up: `RunFailed` (train.py exits with status
1, one line), `write_failure` (the RunFailed of a full disk), `StopOnNonFinite`, the
callback that stops a diverging run before its bad epoch reaches the backup, history.csv
or any saved file, and `RunInterrupted` (Ctrl-C: train.py exits with status 130, one
line saying what is kept and the command that resumes).

Status 1, not 2: the flags and the data were valid (status 2 means "bad input, nothing
was done"); the run itself failed, and its model_dir keeps what resume needs.
"""

import math

import keras
import numpy as np


class RunFailed(RuntimeError):
    """A run that stopped on a failure (diverged, disk full); train.py exits with status 1.

    The message is one line saying what happened, what model_dir keeps and what to do.

    Example:

    >>> raise RunFailed("runs/x: the disk is full")
    Traceback (most recent call last):
    ...
    training.guards.RunFailed: runs/x: the disk is full
    """


class TrainingDiverged(RunFailed):
    """The loss, a validation metric or a weight became NaN or infinite.

    Attributes:
        what, value: what became non-finite, and its value.
        epoch: the 0-based epoch in which it happened (= the epochs completed before).
        step: the 0-based step in that epoch (None: at the epoch's end).
        advice: appended to the message (what the run's directory keeps, what to do).

    Example:

    >>> TrainingDiverged("loss", float("nan"), epoch=2, step=5).epoch
    2
    """

    def __init__(self, what, value, epoch, step=None, advice=""):
        where = f"epoch {epoch + 1}" + (f", step {step + 1}" if step is not None else " (at its end)")
        super().__init__(f"training diverged: {what} became {value} in {where}" + (f"; {advice}" if advice else ""))
        self.what, self.value, self.epoch, self.step, self.advice = what, value, epoch, step, advice


class RunInterrupted(Exception):
    """Ctrl-C (SIGINT) stopped a run; train.py prints `message(command)` and exits 130.

    Attributes:
        model_dir: the run's directory.
        phase: what was running ("start-up", "epoch 3/4", "the end of epoch 3/4 (BN
            calibration, metrics, backup)", "the test evaluation", ...).
        kept: the last epoch whose backup is complete (0: none yet; None: not known yet,
            the run stopped before its backup was read; "completed": a completed run,
            its summary.json written).
        epochs: the run's epochs.

    Example:

    >>> error = RunInterrupted("runs/x", "epoch 3/4", kept=2, epochs=4)
    >>> print(error.message("python train.py --epochs=4"))
    interrupted in epoch 3/4; runs/x keeps the backup of epoch 2/4: `python train.py --epochs=4` resumes the run at epoch 3/4.
    """

    def __init__(self, model_dir, phase, kept, epochs):
        super().__init__(f"{model_dir}: interrupted in {phase}")
        self.model_dir, self.phase, self.kept, self.epochs = model_dir, phase, kept, epochs

    def message(self, command):
        """The one line for the command line: where, what is kept, the command to go on."""
        where = f"interrupted in {self.phase}"
        if self.kept == "completed":
            return (f"{where}; {self.model_dir} holds the completed run as it was: `{command}` "
                    "writes what is missing.")
        if self.kept is None:
            return (f"{where}, before the training started or resumed; {self.model_dir} is as it "
                    f"was: `{command}` starts (or resumes) the run.")
        if self.kept == 0:
            return (f"{where}, before the first epoch was backed up; nothing to resume in "
                    f"{self.model_dir}: `{command}` starts the run again.")
        if self.kept >= self.epochs:
            return (f"{where}, after the last epoch; {self.model_dir} keeps the backup of epoch "
                    f"{self.kept}/{self.epochs}: `{command}` finishes the run (test evaluation and "
                    "files) without training again.")
        return (f"{where}; {self.model_dir} keeps the backup of epoch {self.kept}/{self.epochs}: "
                f"`{command}` resumes the run at epoch {self.kept + 1}/{self.epochs}.")


class StopOnNonFinite(keras.callbacks.Callback):
    """Raises `TrainingDiverged` on a non-finite loss (each batch) or, at an epoch's end,
    a non-finite logged value or weight.

    Keras's `TerminateOnNaN` stops the epoch but still runs its `on_epoch_end` callbacks
    (which would back up and log the NaN weights) unless `raise_error=True`; this one
    raises too, and also checks the weights and the epoch's logs, since the last step of
    an epoch can make the weights NaN with a finite loss. Place it after the callbacks
    that change the model at an epoch's end (BN calibration) and before those that save
    (the history row, BackupAndRestore): the last good epoch stays the one backed up.

    Example:

    >>> import numpy as np
    >>> model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    >>> model.compile(loss="mse", optimizer="sgd")
    >>> x = np.array([[np.nan]], "float32")
    >>> try:
    ...     model.fit(x, x, verbose=0, callbacks=[StopOnNonFinite()])
    ... except TrainingDiverged as error:
    ...     print(error)
    training diverged: loss became nan in epoch 1, step 1
    """

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise TrainingDiverged("loss", float(loss), getattr(self, "_epoch", 0), batch)

    def on_epoch_end(self, epoch, logs=None):
        for name, value in sorted((logs or {}).items()):
            if isinstance(value, (int, float, np.floating)) and not math.isfinite(float(value)):
                raise TrainingDiverged(name, float(value), epoch)
        for variable in self.model.weights:
            values = np.asarray(keras.ops.convert_to_numpy(variable.value))
            if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
                raise TrainingDiverged(f"weight {variable.path}", "non-finite", epoch)


def is_disk_error(message):
    """Whether a TensorFlow error message says the disk is full (or a file too large).

    Example:

    >>> is_disk_error("... No space left on device ..."), is_disk_error("Not found")
    (True, False)
    """
    return any(text in message for text in ("No space left", "File too large", "Disk quota"))


def write_failure(model_dir, error):
    """The RunFailed of an error writing (or reading) a file during the run.

    Example:

    >>> print(write_failure("runs/x", OSError(28, "No space left on device")))  # doctest: +ELLIPSIS
    runs/x: a file could not be written or read (No space left on device). Nothing of the ...
    """
    reason = getattr(error, "strerror", None) or " ".join(str(error).split())[:200]
    where = getattr(error, "filename", None)
    return RunFailed(
        f"{model_dir}: a file could not be written or read ({reason}"
        + (f": {where}" if where else "")
        + "). Nothing of the finished run was written over; its backup of the last "
        "completed epoch is kept: free disk space and run the same command to resume."
    )
