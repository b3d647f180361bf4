"""A run's configuration: the `Config` fields (train.py's flags), recipe defaults, validation.

`resolve` fills a `Config`'s recipe defaults (`recipes.RECIPES`) and checks every field;
`run_settings` is the part of it that defines what is trained (saved in flags.json, so a
run resumes only with the same settings). Bad values raise `UsageError`, which names the
flag, its value and what is allowed; train.py prints it as one line and exits with 2.
"""

import dataclasses
import hashlib
import math
import os

import models
from input_pipeline.sources import DATASETS as NAMED_DATASETS
from models import method as method_lib
from training import recipes, search_settings
from training.recipes import RECIPES
from training.usage import UsageError, invalid_flag, is_int, is_number

OPTIMIZERS = ("sgd", "adam")
LR_SCHEDULES = ("cosine", "step", "constant")
WEIGHT_DECAY_MODES = ("coupled", "decoupled")
MIN_IMAGE_SIZE = 8  # the smallest image side the networks take
TEMPERATURE_SCHEDULES = ("exp", "cos", "linear")
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")

# Settings that do not change what is trained: a run may resume with other values.
RUN_INDEPENDENT = ("model_dir", "data_dir", "strategy", "export", "verbose")


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything a run depends on; the fields are train.py's flags.

    Fields left `None` take the model's recipe (`RECIPES`, `recipes.temperature_defaults`:
    the authors' per-epoch temperature speed at their budget, a measured short-budget
    schedule below it; `block`: the authors' network; `ste_clip`: latent weights clipped
    to [-1, 1] for 1-bit STE) or a value derived from the data (`steps_per_epoch`: one pass over the training set; `bn_calibration_steps`:
    as many training batches as the validation set (without one, the test set) has, as the
    authors did, used by method "slb" with `sbn` only; `model_dir`:
    runs/<model>_<method>_w<w>a<a>_<data>, <data> from `data_label`). `validation_split` = 0 is the paper's protocol
    (every training example trains; the test split is evaluated once, at the end).
    `augment` None: the data set's default (pad-crop and flip for cifar10 and image
    folders, random-resized crop and flip for imagenet2012, none for digits and .npz).

    Example:

    >>> Config(model="resnet20", wbits=2, abits=2).epochs is None  # until resolve()
    True
    """

    model: str = "vgg_small"
    method: str = "slb"
    wbits: object = 1  # one width 1..8, or candidate widths (1, 2, 4) for a search
    abits: int = 1
    bit_budget: float = None
    search_fraction: float = 0.5
    dataset: str = None
    data_dir: str = None
    image_size: int = None
    validation_split: float = 0.0
    augment: bool = None
    width_multiplier: float = 1.0
    epochs: int = None
    steps_per_epoch: int = None
    batch_size: int = None
    optimizer: str = None
    lr: float = None
    lr_schedule: str = None
    lr_step_epochs: tuple = None
    weight_decay: float = None
    weight_decay_mode: str = None
    activation_quantizer: str = None
    block: str = None
    ste_clip: bool = None
    logits_init: str = "random"
    temperature_start: float = None
    temperature_end: float = None
    temperature_speed: float = None
    temperature_schedule: str = None
    temperature_restarts: int = None
    temperature_start_fraction: float = None
    temperature_end_fraction: float = None
    hard_epochs: int = 0
    bn_calibration_steps: int = None
    sbn: bool = True
    sync_bn: bool = False
    model_dir: str = None
    strategy: str = "auto"
    seed: int = 0
    deterministic: bool = False
    mixed_precision: bool = False
    bf16: bool = False
    jit_compile: bool = False
    export: bool = False
    verbose: int = None


def config_from(flags_or_config):
    """A `Config` from a Config, a dict, or an object with the fields as attributes (absl FLAGS).

    Raises:
        UsageError: for a dict key that is not a field.

    Example:

    >>> config_from({"model": "resnet20", "epochs": 3}).epochs
    3
    """
    if isinstance(flags_or_config, Config):
        return flags_or_config
    names = [field.name for field in dataclasses.fields(Config)]
    if isinstance(flags_or_config, dict):
        unknown = sorted(set(flags_or_config) - set(names))
        if unknown:
            raise UsageError(f"Unknown setting {unknown[0]!r}: expected one of {', '.join(names)}.")
        return Config(**flags_or_config)
    values = {}
    for name in names:
        if hasattr(flags_or_config, name):
            value = getattr(flags_or_config, name)
            values[name] = tuple(value) if isinstance(value, list) else value
    return Config(**values)


def resolve(config):
    """Fills the recipe defaults of `config` and validates every field.

    Returns:
        A `Config` with no recipe field left `None` (data-derived ones may stay None).

    Raises:
        UsageError: for the first invalid field, naming it, its value and what is allowed.

    Example:

    >>> resolve(Config(model="resnet20")).lr
    0.1
    """
    config = dataclasses.replace(config, wbits=search_settings.parsed_wbits(config.wbits))
    config = _with_recipe(config)
    search_settings.check_search(config)
    _check_method(config)
    _check_counts_and_choices(config)
    config = _with_temperature(config)
    _check_training(config)
    _check_switches_and_data(config)
    if config.model_dir is None:
        name = f"{config.model}_{config.method}_w{search_settings.wbits_label(config)}a{config.abits}_{data_label(config.dataset)}"
        config = dataclasses.replace(config, model_dir=os.path.join("runs", name))
    return config


def _with_recipe(config):
    """The recipe's and the budget's defaults, the block's; the model and block checked."""
    if config.model not in models.MODELS:
        raise invalid_flag("model", config.model, "one of " + ", ".join(models.MODELS))
    recipe = RECIPES[config.model]
    epochs = recipe["epochs"] if config.epochs is None else config.epochs
    if is_int(epochs):  # else refused below
        budget = recipes.budget_defaults(config.model, config.method, epochs, config.optimizer)
        config = dataclasses.replace(
            config, **{k: v for k, v in budget.items() if getattr(config, k) is None}
        )
    config = dataclasses.replace(
        config,
        **{k: v for k, v in recipe.items() if getattr(config, k) is None},
    )
    if config.block is None:
        config = dataclasses.replace(config, block=recipes.default_block(config.model))
    if config.block not in models.BLOCKS[config.model]:
        raise invalid_flag("block", config.block, f"one of {', '.join(models.BLOCKS[config.model])} "
                           f"for --model={config.model}")
    if config.ste_clip is None:
        config = dataclasses.replace(config, ste_clip=config.wbits == 1)
    return config


def _check_method(config):
    """The method, its bits and quantizer (as models.Method checks them), the width multiplier."""
    if config.method not in method_lib.METHODS:
        raise invalid_flag("method", config.method, "one of " + ", ".join(method_lib.METHODS))
    try:
        method_lib.Method(
            method=config.method,
            wbits=config.wbits,
            abits=config.abits,
            activation_quantizer=config.activation_quantizer,
        )
        method_lib.scaled_filters(1, config.width_multiplier)
    except ValueError as error:
        raise UsageError(str(error).replace("Invalid ", "Invalid --", 1)) from None


def _check_counts_and_choices(config):
    """The integer fields and the fields with a fixed set of choices."""
    for name, low in (
        ("epochs", 1),
        ("batch_size", 1),
        ("steps_per_epoch", 1),
        ("image_size", MIN_IMAGE_SIZE),
        ("bn_calibration_steps", 0),
        ("temperature_restarts", 0),
        ("seed", 0),
    ):
        value = getattr(config, name)
        if value is not None and not (is_int(value) and value >= low):
            raise invalid_flag(name, value, f"an integer >= {low}")
    for name, allowed in (
        ("optimizer", OPTIMIZERS),
        ("lr_schedule", LR_SCHEDULES),
        ("temperature_schedule", TEMPERATURE_SCHEDULES),
        ("strategy", STRATEGIES),
    ):
        if getattr(config, name) not in allowed:
            raise invalid_flag(name, getattr(config, name), "one of " + ", ".join(allowed))


def _with_temperature(config):
    """The temperature schedule's defaults, after its speed or end form is checked."""
    if config.temperature_speed is not None and config.temperature_end is not None:
        raise invalid_flag(
            "temperature_speed", config.temperature_speed,
            f"no --temperature_end (here {config.temperature_end}): the speed form's final tau "
            "is temperature_start * speed ** (epochs in the window)",
        )
    for name in ("temperature_speed", "temperature_end"):
        value = getattr(config, name)
        if value is not None and not (is_number(value) and value > 0):
            raise invalid_flag(name, value, "a finite number > 0")
    temperature = recipes.temperature_defaults(
        config.model, search_settings.recipe_wbits(config), config.abits, config.epochs,
        speed=config.temperature_speed, end=config.temperature_end,
    )
    config = dataclasses.replace(
        config, **{k: v for k, v in temperature.items() if getattr(config, k) is None}
    )
    return config


def _check_training(config):
    """The optimizer's, the initial logits' and the schedules' numbers."""
    for name in ("lr", "temperature_start"):
        value = getattr(config, name)
        if not (is_number(value) and value > 0):
            raise invalid_flag(name, value, "a finite number > 0")
    if config.logits_init not in method_lib.LOGITS_INITS:
        raise invalid_flag("logits_init", config.logits_init, "one of " + ", ".join(method_lib.LOGITS_INITS))
    if config.weight_decay_mode not in WEIGHT_DECAY_MODES:
        raise invalid_flag("weight_decay_mode", config.weight_decay_mode, "one of " + ", ".join(WEIGHT_DECAY_MODES))
    if not (is_number(config.weight_decay) and config.weight_decay >= 0):
        raise invalid_flag("weight_decay", config.weight_decay, "a finite number >= 0")
    start, end = config.temperature_start_fraction, config.temperature_end_fraction
    if not (is_number(start) and is_number(end) and 0 <= start < end <= 1):
        raise invalid_flag(
            "temperature_start_fraction/--temperature_end_fraction",
            f"{start}/{end}",
            "fractions of training with 0 <= start < end <= 1",
        )
    steps = config.lr_step_epochs
    if not (
        isinstance(steps, tuple)
        and all(is_number(s) and 0 < s < 1 for s in steps)
        and list(steps) == sorted(steps)
    ):
        raise invalid_flag("lr_step_epochs", steps, "increasing fractions of training in (0, 1)")
    hard_limit = config.epochs - math.ceil(config.temperature_end_fraction * config.epochs - 1e-9)
    why = (f"the epochs after tau stops growing at {config.temperature_end_fraction:g} of "
           f"{config.epochs}")
    if search_settings.is_search(config) and config.epochs - search_settings.search_epochs(config) < hard_limit:
        hard_limit = config.epochs - search_settings.search_epochs(config)  # hard epochs train the fixed widths
        why = f"the epochs after the search's {search_settings.search_epochs(config)} of {config.epochs}"
    if not (is_int(config.hard_epochs) and 0 <= config.hard_epochs <= hard_limit):
        raise invalid_flag(
            "hard_epochs", config.hard_epochs, f"an integer from 0 to {hard_limit} ({why})",
        )


def _check_switches_and_data(config):
    """The on/off flags, the validation split and the data's location."""
    for name in ("sbn", "ste_clip", "sync_bn", "deterministic", "mixed_precision", "bf16", "jit_compile", "export"):
        if not isinstance(getattr(config, name), bool):
            raise invalid_flag(name, getattr(config, name), "true or false")
    if config.mixed_precision and config.bf16:
        raise invalid_flag("bf16", True, "off with --mixed_precision (float16): choose one of the two")
    if config.augment is not None and not isinstance(config.augment, bool):
        raise invalid_flag("augment", config.augment, "true or false (or unset: the data set's default)")
    split = config.validation_split
    if not (is_number(split) and 0 <= split < 1):
        raise invalid_flag("validation_split", split, "a fraction of the training split in [0, 1)")
    if not isinstance(config.dataset, str) or not config.dataset:
        raise invalid_flag("dataset", config.dataset, "a data set name or path")
    if config.data_dir is not None and not os.path.isdir(config.data_dir):
        raise invalid_flag("data_dir", config.data_dir, "an existing directory (no such directory)")

def data_label(dataset):
    """The data set's part of a default model_dir: the name of a named data set; for a
    folder or an .npz file its name and a digest of its resolved path, so that two
    folders named alike (`a/cifar10`, `b/cifar10`) get different run directories.

    Example:

    >>> data_label("digits")
    'digits'
    >>> data_label("a/cifar10") != data_label("b/cifar10"), data_label("a/cifar10")[:8]
    (True, 'cifar10-')
    >>> data_label("a/cifar10") == data_label("a/cifar10/") == data_label("./a/../a/cifar10")
    True
    """
    if dataset in NAMED_DATASETS:
        return dataset
    path = os.path.realpath(dataset)
    digest = hashlib.sha1(path.encode(errors="surrogateescape")).hexdigest()[:6]
    return f"{os.path.splitext(os.path.basename(path))[0]}-{digest}"


def run_settings(config):
    """The fields of `config` that define what is trained (saved in flags.json).

    Example:

    >>> settings = run_settings(resolve(Config()))
    >>> "model_dir" in settings, settings["lr"]
    (False, 0.02)
    """
    settings = dataclasses.asdict(config)
    for name in RUN_INDEPENDENT:
        settings.pop(name)
    settings["lr_step_epochs"] = list(settings["lr_step_epochs"])
    if isinstance(settings["wbits"], tuple):  # as flags.json reads back
        settings["wbits"] = list(settings["wbits"])
    return settings
