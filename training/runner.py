"""One run: config -> strategy -> data -> model -> `fit` -> BN calibration -> hard test
accuracy -> files in `model_dir` (see the package docstring for the files and resume).

The strategy scope wraps only the model, the optimizer and `compile` (as in
tensorflow/models `mnist_main.py`); the batch size is global.
"""

import collections
import dataclasses
import os

import keras
import tensorflow as tf

import input_pipeline
import models
import slb_keras
from models import method as method_lib
from training.config import MIN_IMAGE_SIZE, config_from, resolve
from training.search_settings import is_search, search_epochs, wbits_text
from training.usage import UsageError, invalid_flag
from training import backup as backup_lib
from training import schedule
from training.guards import RunInterrupted, TrainingDiverged, is_disk_error, write_failure
from training.keras_fixes import multi_worker_fixes
from training.lock import RunDirLock
from training.optimization import make_optimizer
from training.phase import EpochClock, Phase
from training.run_dir import (
    BACKUP_DIR,
    HISTORY_FILE,
    MODEL_FILE,
    SEARCH_BACKUP_SUFFIX,
    SUMMARY_FILE,
    TFLITE_FILE,
    WIDTHS_FILE,
    check_model_dir,
    create_model_dir,
    describe_files,
    read_history,
    remove_temporaries,
    save_model,
    read_json,
    write_json,
)
from training.strategy import make_strategy, worker_role



def run(flags_or_config, datasets_override=None, strategy_override=None):
    """Trains, calibrates, evaluates and saves one model; returns the run's summary.

    Args:
        flags_or_config: a `Config`, a dict of its fields or absl FLAGS.
        datasets_override: optional `(train, test)` or `(train, test, calibration)`
            datasets (tf.data or distributed) used instead of
            `input_pipeline.make_datasets`, in the units of `config.dataset`'s images (the
            model normalizes them); the training one must repeat (steps_per_epoch
            batches per epoch). No validation is run. The data set's info (classes,
            shape, sizes, channel statistics) still comes from `config.dataset`.
        strategy_override: optional `tf.distribute.Strategy` instead of `config.strategy`.

    Returns:
        The summary dict written to summary.json: "config" (all settings), "test_accuracy"
        and "test_loss" (the final hard network, after calibration, on the test split,
        evaluated once after training), "split_sizes" (train / validation / test
        examples), "seconds_per_epoch" and "epoch_seconds" (the whole epochs run by this
        call: steps, validation, BN calibration, SLB metrics), "train_seconds_per_epoch"
        and "train_seconds" (their training steps and validation alone),
        "resumed_from_epoch", "parameters" (`models.count_weights`), "history" (every
        epoch's logs; val_* with `validation_split` > 0, on the held-out examples),
        "strategy", "replicas".

    Raises:
        UsageError: for bad input (flags, data, model_dir, another live run holding
            model_dir's lock, a backup that no longer fits the data); nothing in
            model_dir is changed in that case.
        RunFailed: the run diverged (`TrainingDiverged`) or a file could not be
            written (disk full); model_dir keeps the backup of the last good epoch and
            no model.keras, model.tflite or summary.json of this run.
        RunInterrupted: Ctrl-C (KeyboardInterrupt) during the run, saying where and
            which epoch's backup model_dir keeps (the same call resumes from it).

    Example:

    >>> summary = run({"dataset": "digits", "epochs": 1, "model_dir": "runs/quick"})  # doctest: +SKIP
    >>> summary["test_accuracy"]  # doctest: +SKIP

    Bad input is refused before anything is written:

    >>> try:
    ...     run({"dataset": "digits", "wbits": 9, "model_dir": "bad_run"})
    ... except UsageError as error:
    ...     print(error)
    Invalid --wbits=9: expected an integer from 1 to 8.
    >>> os.path.exists("bad_run")
    False
    """
    config = resolve(config_from(flags_or_config))
    strategy = strategy_override or make_strategy(config.strategy)
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise invalid_flag("batch_size", config.batch_size, f"a multiple of the {replicas} replicas")
    try:
        info = input_pipeline.get_dataset_info(
            config.dataset, config.data_dir, config.image_size, config.validation_split,
            config.augment,
        )
    except ValueError as error:  # DatasetNotFoundError and DataError included
        message = str(error)  # data errors start with "<path>: ", as the flag would
        if not message.startswith(f"{config.dataset}: "):
            message = f"{config.dataset}: {message}"
        raise UsageError(f"--dataset={message}") from None
    if config.batch_size > info.num_train:  # what info.steps_per_epoch refuses, named by its flag
        raise invalid_flag(
            "batch_size", config.batch_size,
            f"at most the {info.num_train} examples of {config.dataset}'s training split",
        )
    steps_per_epoch = config.steps_per_epoch or info.steps_per_epoch(config.batch_size)
    height, width = info.input_shape[:2]
    if min(height, width) < MIN_IMAGE_SIZE:
        raise UsageError(
            f"--dataset={config.dataset}: its images are {height}x{width}; the networks need at "
            f"least {MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE}: pass --image_size={MIN_IMAGE_SIZE} or more "
            "to resize them"
        )
    is_chief, task_id = worker_role(strategy)
    done = check_model_dir(config, is_chief)
    if done is None:
        create_model_dir(config, is_chief, write_flags=False)
    # One live run per model_dir (per task of a multi-worker run): released at exit or death.
    lock = RunDirLock(config.model_dir, None if is_chief else f"worker{task_id}")
    if done is not None:
        if is_chief and backup_lib.leftovers(config.model_dir):  # a run killed after its summary.json
            try:
                with lock:
                    backup_lib.remove_leftovers(config.model_dir)
            except UsageError:
                pass  # a live run holds it: leave its files alone
        if not _needs_export(config, is_chief):
            print(f"{config.model_dir} holds this completed run: nothing to do.", flush=True)
            return done
    with lock:
        done = check_model_dir(config, is_chief)  # again, now that no other run can change it
        if done is not None:
            try:
                return _finish_completed(config, done, is_chief)
            except KeyboardInterrupt:
                raise RunInterrupted(config.model_dir, f"the export of {TFLITE_FILE}", "completed",
                                     config.epochs) from None
        create_model_dir(config, is_chief)
        if is_chief:
            remove_temporaries(config.model_dir)
            print(schedule.describe(config), flush=True)
        return _run_locked(config, strategy, info, steps_per_epoch, is_chief, task_id, datasets_override)


def _run_locked(config, strategy, info, steps_per_epoch, is_chief, task_id, datasets_override):
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    policy = keras.config.dtype_policy()
    if config.mixed_precision:
        keras.config.set_dtype_policy("mixed_float16")
    elif config.bf16:
        keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        return _train(config, strategy, info, steps_per_epoch, is_chief, task_id, datasets_override)
    except TrainingDiverged as error:
        kept = (
            f"its backup of epoch {error.epoch} (the last good one) is kept: the same command "
            "resumes from it (and, with the same flags, likely diverges again)"
            if error.epoch
            else "no epoch completed, so there is nothing to resume"
        )
        raise TrainingDiverged(
            error.what, error.value, error.epoch, error.step,
            advice=f"{config.model_dir}: {kept}; to train with other settings (e.g. a lower "
            "--lr) choose a new --model_dir.",
        ) from None
    except OSError as error:
        raise write_failure(config.model_dir, error) from None
    except tf.errors.OpError as error:
        if not is_disk_error(str(error)):
            raise
        raise write_failure(config.model_dir, error) from None
    finally:
        keras.config.set_dtype_policy(policy)


def _train(config, strategy, info, steps_per_epoch, is_chief, task_id, datasets_override):
    """`_train_body`, a Ctrl-C in it raised as a `RunInterrupted` saying what is kept."""
    clock = EpochClock()
    try:
        return _train_body(config, strategy, info, steps_per_epoch, is_chief, task_id, datasets_override, clock)
    except KeyboardInterrupt:
        raise RunInterrupted(config.model_dir, clock.phase, clock.kept, config.epochs) from None


def _train_body(config, strategy, info, steps_per_epoch, is_chief, task_id, datasets_override, clock):
    model_dir = config.model_dir
    backup_dir = os.path.join(model_dir, BACKUP_DIR if is_chief else f"{BACKUP_DIR}-worker{task_id}")
    phase = Phase(config, strategy, info, steps_per_epoch, is_chief, datasets_override, clock)
    widths = None
    if is_search(config):  # first the searched model, with its own backup, until widths.json
        searched, backup = _restored_model(
            config, strategy, info, steps_per_epoch, backup_dir + SEARCH_BACKUP_SUFFIX
        )
        widths = _searched_widths(config, searched, backup, phase)
        model, backup = _fixed_model(config, strategy, info, steps_per_epoch, searched, widths, backup_dir)
    else:
        model, backup = _restored_model(config, strategy, info, steps_per_epoch, backup_dir)
    test_ds = phase.train(model, backup, config.epochs)
    with multi_worker_fixes(model, strategy):
        clock.phase = "the test evaluation"
        test_loss, test_accuracy = model.evaluate(test_ds, verbose=0)  # once, at the end
    summary = _make_summary(
        config, model, strategy, info, steps_per_epoch, phase.resumed_from, clock, test_loss, test_accuracy
    )
    if widths is not None:
        summary.update(
            search_epochs=search_epochs(config),
            wbits_per_layer={layer.name: layer.wbits for layer in slb_keras.slb_layers(model)},
            average_wbits=slb_keras.average_wbits(model),
        )
    _write_outputs(config, model, summary, info, backup_dir, is_chief, clock)
    return summary


def _searched_widths(config, searched, backup, phase):
    """A search's first phase (resumed from its backup), then its widths: widths.json's.

    The search trains `searched` (candidate widths, `slb_keras.BitBudget`) for
    `search_epochs(config)` epochs, then `slb_keras.choose_widths` picks every layer's
    width within --bit_budget; the chief writes them to widths.json, which marks the
    search as done: a resumed run reads them back and trains on at those widths (and
    from the search's last backup when the second phase has none yet).
    """
    path = os.path.join(config.model_dir, WIDTHS_FILE)
    if os.path.exists(path):
        widths = read_json(path)
        print(f"{path}: the search is done; training on at these widths.", flush=True)
        return widths
    epochs = search_epochs(config)
    phase.train(searched, backup, epochs, extra_callbacks=[slb_keras.BitBudget(config.bit_budget)])
    widths = slb_keras.choose_widths(searched, config.bit_budget)
    if phase.is_chief:
        write_json(path, widths)
    counts = collections.Counter(widths.values())
    chosen = ", ".join(f"{counts[w]} at {w} bits" for w in sorted(counts))
    print(
        f"Search done after epoch {epochs}/{config.epochs}: {chosen} of {len(widths)} layers "
        f"(within the budget of {config.bit_budget:g} bits per quantized weight); training on at "
        "these widths.",
        flush=True,
    )
    return widths


def _fixed_model(config, strategy, info, steps_per_epoch, searched, widths, backup_dir):
    """The searched model fixed at `widths` (`slb_keras.fix_bit_widths`), compiled with a
    new optimizer at the search's step (the LR and tau schedules go on), and restored
    from the second phase's backup if it has one."""
    with strategy.scope():
        try:
            model = slb_keras.fix_bit_widths(searched, widths=widths)
        except ValueError as error:  # a widths.json edited or from another network
            raise UsageError(
                f"Invalid --model_dir={config.model_dir}: its {WIDTHS_FILE} does not fit this "
                f"run's network ({error}); delete it to search again, or choose another --model_dir."
            ) from None
        _compile(model, config, steps_per_epoch)
        model.optimizer.build(model.trainable_variables)
        model.optimizer.iterations.assign(searched.optimizer.iterations)
        backup = _backup(model, config, info, backup_dir)
    return model, backup


def _restored_model(config, strategy, info, steps_per_epoch, backup_dir):
    """The compiled model and its BackupAndRestore, restored to the last completed epoch, if any."""
    with strategy.scope():
        model = models.get_model(
            config.model,
            method=config.method,
            wbits=config.wbits,
            abits=config.abits,
            input_shape=info.input_shape,
            num_classes=info.num_classes,
            width_multiplier=config.width_multiplier,
            activation_quantizer=config.activation_quantizer,
            block=config.block,
            sbn=config.sbn,
            sync_bn=config.sync_bn,
            ste_clip=config.method == "ste" and config.ste_clip,
            logits_init=config.logits_init,
            input_normalization=None if info.channel_mean is None else (info.channel_mean, info.channel_std),
        )
        _compile(model, config, steps_per_epoch)
        backup = _backup(model, config, info, backup_dir)
    return model, backup


def _compile(model, config, steps_per_epoch):
    model.compile(
        optimizer=make_optimizer(config, steps_per_epoch),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=config.jit_compile,
    )


def _backup(model, config, info, backup_dir):
    """The run's BackupAndRestore in `backup_dir`, `model` restored from it (if it holds one)."""
    backup = keras.callbacks.BackupAndRestore(backup_dir, double_checkpoint=True, delete_checkpoint=False)
    backup_lib.restore(backup, model, config, info)  # the last completed epoch, if any
    return backup


def _write_outputs(config, model, summary, info, backup_dir, is_chief, clock):
    """model.keras, the TFLite export and summary.json (chief), then the backup removed."""
    model_dir = config.model_dir
    if is_chief:
        clock.phase = f"writing {MODEL_FILE}"
        save_model(model, os.path.join(model_dir, MODEL_FILE))
        if config.export:
            clock.phase = f"the export of {TFLITE_FILE}"
            _export_tflite(config, model)
            summary["tflite_file"] = TFLITE_FILE
        clock.phase = f"writing {SUMMARY_FILE}"
        summary["history"] = read_history(os.path.join(model_dir, HISTORY_FILE))
        write_json(os.path.join(model_dir, SUMMARY_FILE), summary)
    backup_lib.remove_dir(backup_dir)
    backup_lib.remove_dir(backup_dir + SEARCH_BACKUP_SUFFIX)  # a search's first phase
    if is_chief:
        print(
            f"Test accuracy of the final hard-quantized network: {summary['test_accuracy']:.4f} "
            f"({info.num_test} test images, {config.method}, W{_wbits_shown(config, summary)}/A{config.abits})",
            flush=True,
        )
        print("\n".join(describe_files(model_dir)), flush=True)


def _wbits_shown(config, summary):
    """W2, or for a search the average it reached: W1.96 (searched 1,2,4)."""
    if not is_search(config):
        return config.wbits
    return f"{summary['average_wbits']:.2f} (searched {wbits_text(config)})"


def _export_tflite(config, model):
    """Writes the run's model.tflite; STE layers go out as the SLB layers of the same hard
    kernel (exact int8)."""
    exported = slb_keras.to_slb_model(model) if config.method == "ste" else model
    slb_keras.export_tflite(exported, os.path.join(config.model_dir, TFLITE_FILE))


def _needs_export(config, is_chief):
    """Whether --export asks for a model.tflite that a completed run does not have yet."""
    return is_chief and config.export and not os.path.exists(os.path.join(config.model_dir, TFLITE_FILE))


def _finish_completed(config, done, is_chief):
    """A completed run (under its lock): writes the missing model.tflite for --export."""
    if not _needs_export(config, is_chief):
        print(f"{config.model_dir} holds this completed run: nothing to do.", flush=True)
        return done
    model = keras.models.load_model(os.path.join(config.model_dir, MODEL_FILE))
    if not method_lib.normalizes_input(model):
        print(f"Note: {MODEL_FILE} predates the input normalization inside the model: its "
              f"{TFLITE_FILE} expects normalized images, as its training did.", flush=True)
    _export_tflite(config, model)
    done = {**done, "tflite_file": TFLITE_FILE}
    write_json(os.path.join(config.model_dir, SUMMARY_FILE), done)
    print(f"{config.model_dir} holds this completed run: wrote {TFLITE_FILE}.", flush=True)
    return done


def _make_summary(
    config, model, strategy, info, steps_per_epoch, initial_epoch, clock, test_loss, test_accuracy
):
    """The run's summary: config, the recipe's derived values, final hard test accuracy,
    split sizes, timing (`clock`: the `EpochClock` of the epochs this call trained)."""
    return {
        "config": {**dataclasses.asdict(config), "lr_step_epochs": list(config.lr_step_epochs)},
        "recipe": schedule.recipe_record(config, steps_per_epoch),
        "test_accuracy": float(test_accuracy),
        "test_loss": float(test_loss),
        "split_sizes": {"train": info.num_train, "validation": info.num_validation, "test": info.num_test}, "class_sizes": info.class_sizes,
        "resumed_from_epoch": initial_epoch,
        "seconds_per_epoch": _mean(clock.epoch_seconds),
        "train_seconds_per_epoch": _mean(clock.train_seconds),
        "epoch_seconds": list(clock.epoch_seconds),
        "train_seconds": list(clock.train_seconds),
        "parameters": models.count_weights(model),
        "strategy": type(strategy).__name__,
        "replicas": strategy.num_replicas_in_sync,
        "model_file": MODEL_FILE,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "slb_keras": slb_keras.__version__,
    }


def _mean(values):
    """The mean of `values`, None for none (a resumed run with no epoch left)."""
    return sum(values) / len(values) if values else None
