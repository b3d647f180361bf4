"""One phase of a run's training: its data, its callbacks, its `fit`, and the epoch clock.

A run trains in one phase; a bit-width search in two (the searched model, then the
fixed one), each resumed from its own backup. `Phase.train` does what a phase needs:
the epoch its backup restored, the data from that epoch on (`datasets`), the callbacks
(`slb_callbacks`: tau, SLB metrics, BN calibration; the non-finite check, history,
backup and TensorBoard), then `fit`. `EpochClock` times the epochs and follows how
far the run got, for an interrupt's message.
"""

import math
import os
import sys
import time

import keras

import input_pipeline
import slb_keras
from training import backup as backup_lib
from training import schedule
from training.guards import StopOnNonFinite
from training.keras_fixes import multi_worker_fixes
from training.run_dir import HISTORY_FILE, LOG_DIR, append_history, truncate_history


class Phase:
    """Trains a model of the run from its restored epoch to an epoch: datasets, callbacks, fit.

    A run has one phase; a bit-width search two (the searched model, then the fixed one),
    each resumed from its own backup. `resumed_from` is the epoch the first phase this
    call trains started at (summary.json's "resumed_from_epoch").
    """

    def __init__(self, config, strategy, info, steps_per_epoch, is_chief, datasets_override, clock):
        self.config, self.strategy, self.info = config, strategy, info
        self.steps_per_epoch, self.is_chief = steps_per_epoch, is_chief
        self.datasets_override, self.clock = datasets_override, clock
        self.resumed_from = None

    def train(self, model, backup, epochs, extra_callbacks=()):
        """Fits `model` up to `epochs`; returns the test set (None for a search phase whose
        backup already holds all its epochs: nothing to fit, no data built)."""
        config = self.config
        initial_epoch = self._resumed_epoch(model, backup)
        if initial_epoch >= epochs and epochs < config.epochs:
            return None
        train_ds, validation_ds, test_ds, calibration_ds = datasets(
            config, self.strategy, self.info, initial_epoch, self.steps_per_epoch, self.datasets_override
        )
        callbacks = self._callbacks(backup, validation_ds, calibration_ds, extra_callbacks, epochs)
        verbose = config.verbose if config.verbose is not None else (1 if sys.stdout.isatty() else 2)
        with multi_worker_fixes(model, self.strategy):
            model.fit(
                train_ds,
                epochs=epochs,
                initial_epoch=initial_epoch,
                steps_per_epoch=self.steps_per_epoch,
                validation_data=validation_ds,
                shuffle=False,  # the pipeline shuffles, by epoch
                callbacks=callbacks,
                verbose=verbose,
            )
        return test_ds

    def _resumed_epoch(self, model, backup):
        config, model_dir = self.config, self.config.model_dir
        step = int(model.optimizer.iterations.numpy())
        initial_epoch = min(step // self.steps_per_epoch, config.epochs)
        self.clock.restored(initial_epoch, config.epochs)
        backup_lib.agree_backup_metadata(backup.backup_dir, initial_epoch)
        if self.is_chief:
            truncate_history(os.path.join(model_dir, HISTORY_FILE), initial_epoch)  # epochs re-run
        first = self.resumed_from is None
        if first:
            self.resumed_from = initial_epoch
        if initial_epoch and first:
            taus = [float(layer.temperature.numpy()) for layer in slb_keras.slb_layers(model)]
            state = f"step {step}" + (f", temperature {taus[0]:.6g}" if taus else "")
            if initial_epoch < config.epochs:
                print(f"Resuming {model_dir} at epoch {initial_epoch + 1}/{config.epochs} ({state})", flush=True)
            else:  # killed after its last epoch, before summary.json
                print(f"Resuming {model_dir} after its last epoch ({state}): finishing the run", flush=True)
        return initial_epoch

    def _callbacks(self, backup, validation_ds, calibration_ds, extra_callbacks, epochs):
        config, info, clock, model_dir = self.config, self.info, self.clock, self.config.model_dir
        calibration_steps = config.bn_calibration_steps
        if calibration_steps is None:  # the authors': as many batches as the validation loader
            calibration_steps = max(1, math.ceil((info.num_validation or info.num_test) / config.batch_size))
        if config.method != "slb" or not config.sbn:
            calibration_steps = 0  # no hard statistics to calibrate
        if validation_ds is None and epochs < config.epochs:
            # A search's first phase without validation: nothing reads its hard statistics
            # (the fixed widths have their own, calibrated at the end), and a calibration at
            # its end would come after its last backup, which a resumed run starts from.
            calibration_steps = 0
        callbacks = [clock.start, *extra_callbacks]
        if config.method == "slb":
            callbacks += slb_callbacks(
                config,
                calibration_ds,
                config.epochs * self.steps_per_epoch,
                calibration_steps,
                os.path.join(model_dir, LOG_DIR) if self.is_chief else None,
                every_epoch=validation_ds is not None,
            )
        callbacks += [StopOnNonFinite(), clock.end]  # after BN calibration, before anything is saved
        if self.is_chief:
            history_path = os.path.join(model_dir, HISTORY_FILE)
            callbacks.append(keras.callbacks.LambdaCallback(
                on_epoch_end=lambda epoch, logs: append_history(history_path, epoch, logs)
            ))
        callbacks += [backup, clock.saved]
        if self.is_chief:
            callbacks.append(keras.callbacks.TensorBoard(os.path.join(model_dir, LOG_DIR)))
        return callbacks


def datasets(config, strategy, info, initial_epoch, steps_per_epoch, datasets_override):
    """(train, validation or None, test, calibration or None) datasets of a run."""
    calibration_ds = validation_ds = None
    if datasets_override is not None:
        train_ds, test_ds, *calibration = datasets_override
        calibration_ds = calibration[0] if calibration else train_ds
    else:
        splits = ("train", "validation", "test") if info.num_validation else ("train", "test")
        train_ds, *validation, test_ds = input_pipeline.make_datasets(
            config.dataset,
            config.data_dir,
            config.batch_size,
            strategy,
            image_size=config.image_size,
            seed=config.seed,
            initial_epoch=initial_epoch,
            steps_per_epoch=steps_per_epoch,
            validation_split=config.validation_split,
            splits=splits,
            augment=config.augment,
        )
        validation_ds = validation[0] if validation else None
        if config.method == "slb":  # global batches of the training set (epoch 0)
            calibration_ds = input_pipeline.build_dataset(
                config.dataset,
                "train",
                config.batch_size,
                data_dir=config.data_dir,
                image_size=config.image_size,
                seed=config.seed,
                steps_per_epoch=steps_per_epoch,
                validation_split=config.validation_split,
                augment=config.augment,
            )
    return train_ds, validation_ds, test_ds, calibration_ds


class EpochClock:
    """Times every epoch and follows how far the run got (for an interrupt's message).

    Three callbacks, placed by `Phase.train`: `start` first, `end` after BN calibration, the
    SLB metrics and the non-finite check, `saved` after the backup. Each epoch's logs
    (the progress line, history.csv, TensorBoard) get
    `train_seconds`: the training steps and the validation (Keras's fit loop up to the
    end-of-epoch callbacks), and `epoch_seconds`: the whole epoch, that plus the
    end-of-epoch work; only the history line and the backup are written after it.
    `kept` is the last epoch (1-based) whose backup is complete (None until the backup
    is read), `phase` what runs now.

    Example:

    >>> clock = EpochClock()
    >>> clock.restored(initial_epoch=2, epochs=4)
    >>> clock.phase, clock.kept
    ('start-up', 2)
    """

    def __init__(self):
        self.train_seconds, self.epoch_seconds = [], []
        self.kept = None  # not known before the backup is read
        self.epochs = None
        self.phase = "start-up"
        self.start = keras.callbacks.LambdaCallback(
            on_epoch_begin=self._begin, on_epoch_end=self._steps_done
        )
        self.end = keras.callbacks.LambdaCallback(on_epoch_end=self._end)
        self.saved = keras.callbacks.LambdaCallback(on_epoch_end=self._saved)

    def restored(self, initial_epoch, epochs):
        """The backup (if any) is read: `initial_epoch` epochs are kept, of `epochs`."""
        self.kept, self.epochs = initial_epoch, epochs

    def _begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self.phase = f"epoch {epoch + 1}/{self.epochs}"

    def _steps_done(self, epoch, logs=None):
        self.train_seconds.append(time.perf_counter() - self._start)
        self.phase = f"the end of epoch {epoch + 1}/{self.epochs} (BN calibration, metrics, backup)"
        if logs is not None:
            logs["train_seconds"] = self.train_seconds[-1]

    def _end(self, epoch, logs=None):
        self.epoch_seconds.append(time.perf_counter() - self._start)
        if logs is not None:
            logs["epoch_seconds"] = self.epoch_seconds[-1]

    def _saved(self, epoch, logs=None):
        self.kept = epoch + 1


def slb_callbacks(config, calibration_ds, total_steps, calibration_steps, log_dir, every_epoch):
    """Temperature schedule, SLB metrics and BN calibration (method "slb").

    With `every_epoch` (a validation split), the calibration runs after every epoch's
    training steps, before validation, so the val_* metrics are those of the hard
    network. Without one nothing reads the hard statistics before the end, so it runs
    once, after the last epoch: the same batches of the same final weights, so the same
    final statistics, without a calibration per epoch (11 s of a 40,000-image CIFAR-10
    epoch of ResNet-20). SLBMetrics' output gap then compares the layers on the inputs
    of the hard network normalized by its soft statistics until that calibration.
    """
    callbacks = [
        slb_keras.TemperatureScheduler(
            **schedule.temperature_arguments(config, total_steps),
        ),
        slb_keras.SLBMetrics(x=calibration_ds, log_dir=log_dir),
    ]
    if calibration_steps:
        callbacks.append(slb_keras.BNCalibration(
            calibration_ds, steps=calibration_steps, every_n_epochs=1 if every_epoch else config.epochs,
        ))
    return callbacks
