"""Training of the paper's networks: `run(config)`, called by train.py and by the tests.

One run = config -> strategy -> data -> model (its input normalization included) -> `fit`
(validation on held-out training examples with `validation_split` > 0) -> BN calibration
-> the hard network's test accuracy, once -> files in `model_dir`:

| file            | what                                                             |
|-----------------|------------------------------------------------------------------|
| flags.json      | the run's configuration; a different one in the same dir is refused |
| backup/         | `keras.callbacks.BackupAndRestore` state (weights, optimizer, epoch) |
| history.csv     | one row per epoch (loss, accuracy, val_*, temperature, lr, seconds) |
| logs/           | TensorBoard logs                                                 |
| model.keras     | the final model (written atomically)                             |
| model.tflite    | with `export=True`                                               |
| summary.json    | config, final hard test accuracy, split sizes, seconds per epoch, parameter counts |

A killed run resumes from its last completed epoch when started again with the same
configuration: the weights, the optimizer (its step counter included, which drives the
learning rate and the temperature), the temperature variables and the BN statistics
are restored, and `input_pipeline` restarts the data stream at that epoch, so the result
matches an uninterrupted run (bit for bit with `deterministic=True` on CPU).

Modules (each imports only those above it):

- `recipes`: `RECIPES` (the authors' settings of each model), `budget_defaults` and
  `temperature_defaults` (the short-budget recipe, the authors' speeds).
- `config`: `Config`, `config_from`, `resolve` (recipe defaults + validation),
  `run_settings`, `UsageError`.
- `schedule`: `temperature_arguments`, `describe`, `recipe_record` (what a resolved
  config implies).
- `optimization`: `make_lr_schedule`, `make_optimizer`.
- `guards`: `RunFailed` / `TrainingDiverged` (a valid run that failed: train.py exits
  with status 1), `RunInterrupted` (Ctrl-C: status 130) and `StopOnNonFinite` (stops a
  diverging run before its bad epoch is saved).
- `lock`: `RunDirLock`, one live run per model_dir (a second one is refused naming the
  holder's PID).
- `run_dir`: the run's file names, atomic writes (`write_json`), model_dir checks.
- `backup`: restoring the backup of a killed run, clearing what a finished one left.
- `strategy`: `make_strategy`, `worker_role`.
- `keras_fixes`: the MultiWorkerMirroredStrategy workaround (the only private Keras).
- `phase`: `Phase` (one phase of training: its data, callbacks and `fit`, resumed from
  its backup; a bit-width search has two) and `EpochClock`.
- `runner`: `run`.

Example:

>>> import training
>>> training.resolve(training.Config(model="resnet20")).lr  # the authors' SGD at their 400 epochs
0.1
>>> config = training.resolve(training.Config(model="resnet20", epochs=3))  # a short budget
>>> config.optimizer, config.lr, config.temperature_end
('adam', 0.002, 200.0)
"""

from training.config import (
    LR_SCHEDULES,
    OPTIMIZERS,
    RUN_INDEPENDENT,
    STRATEGIES,
    TEMPERATURE_SCHEDULES,
    Config,
    config_from,
    resolve,
    run_settings,
)
from training.guards import RunFailed, RunInterrupted, TrainingDiverged
from training.optimization import SGD_MOMENTUM, STEP_DECAY, make_lr_schedule, make_optimizer
from training.recipes import RECIPES
from training.run_dir import (
    BACKUP_DIR,
    FLAGS_FILE,
    HISTORY_FILE,
    LOG_DIR,
    MODEL_FILE,
    SUMMARY_FILE,
    TFLITE_FILE,
    WIDTHS_FILE,
    read_json,
    write_json,
)
from training.runner import run
from training.schedule import describe, temperature_arguments
from training.strategy import make_strategy
from training.usage import UsageError

__all__ = [
    "RunFailed",
    "RunInterrupted",
    "TrainingDiverged",
    "describe",
    "temperature_arguments",
    "BACKUP_DIR",
    "FLAGS_FILE",
    "HISTORY_FILE",
    "LOG_DIR",
    "LR_SCHEDULES",
    "MODEL_FILE",
    "OPTIMIZERS",
    "RECIPES",
    "RUN_INDEPENDENT",
    "SGD_MOMENTUM",
    "STEP_DECAY",
    "STRATEGIES",
    "SUMMARY_FILE",
    "TEMPERATURE_SCHEDULES",
    "TFLITE_FILE",
    "WIDTHS_FILE",
    "Config",
    "UsageError",
    "config_from",
    "make_lr_schedule",
    "make_optimizer",
    "make_strategy",
    "read_json",
    "resolve",
    "run",
    "run_settings",
    "write_json",
]
