"""What a resolved `Config` implies: its temperature schedule, a one-line description, the record.

`temperature_arguments` turns the config into `slb_keras.TemperatureScheduler`'s arguments,
`describe` is the line a run starts with (and `train.py --show_recipe` prints), and
`recipe_record` is what summary.json adds to the config (the activation quantizer really
used, tau's final value).
"""

import slb_keras
from slb_keras.core import quantizers
from training import recipes, search_settings
from training.recipes import RECIPES


def _input_alias(config):
    """The quantizer alias of the quantized layers' inputs (None: float inputs)."""
    return None if config.method == "fp" else quantizers.alias(config.abits, config.activation_quantizer)


def describe(config):
    """One line saying what a resolved `config` trains, with the recipe values it took.

    Example:

    >>> from training.config import Config, resolve
    >>> print(describe(resolve(Config(dataset="digits", epochs=6))))
    vgg_small (conv blocks), slb W1/A1 (sign inputs), digits, 6 epochs, batch 100: adam lr 0.002 cosine, weight decay 0 (coupled); tau 0.01 -> 200 (exp) over 30%-60% of training [short-budget recipe: below the authors' 400 epochs]
    """
    alias = _input_alias(config)
    inputs = {None: "float", "ste_sign": "sign"}.get(alias, alias) + " inputs"
    text = _search_phrase(config) if search_settings.is_search(config) else ""
    text += (
        f"{config.model} ({config.block} blocks), {config.method} W{search_settings.wbits_text(config)}/A{config.abits} "
        f"({inputs}), {config.dataset}, {config.epochs} epoch{'s' if config.epochs != 1 else ''}, "
        f"batch {config.batch_size}: "
        f"{config.optimizer} lr {config.lr:g} {config.lr_schedule}, weight decay "
        f"{config.weight_decay:g} ({config.weight_decay_mode})"
    )
    if config.method == "slb":
        window = f"{config.temperature_start_fraction:.0%}-{config.temperature_end_fraction:.0%} of training"
        if config.temperature_speed is not None:
            text += f"; tau {config.temperature_start:g} x {config.temperature_speed:g} per epoch over {window}"
        else:
            text += (
                f"; tau {config.temperature_start:g} -> {config.temperature_end:g} "
                f"({config.temperature_schedule}) over {window}"
            )
        if config.hard_epochs:
            text += f", then {config.hard_epochs} hard epochs"
    elif config.method == "ste" and config.ste_clip:
        text += "; latent weights clipped to [-1, 1]"
    budget = RECIPES[config.model]["epochs"]
    if recipes.is_short_budget(config.model, config.epochs):
        text += f" [short-budget recipe: below the authors' {budget} epochs]"
    else:
        text += " [the authors' recipe]"
    return text


def _search_phrase(config):
    """The start of a search's line: what is searched, under which budget, for how long.

    Example:

    >>> from training.config import Config, resolve
    >>> _search_phrase(resolve(Config(wbits=(1, 2, 4), bit_budget=2.0, epochs=6)))
    'Bit-width search: each layer chooses 1, 2 or 4 bits under an average of 2 bits per quantized weight in epochs 1-3 of 6, then trains on at the chosen widths. '
    """
    widths = ", ".join(map(str, config.wbits[:-1])) + f" or {config.wbits[-1]}"
    searched = search_settings.search_epochs(config)
    return (
        f"Bit-width search: each layer chooses {widths} bits under an average of "
        f"{config.bit_budget:g} bits per quantized weight in epoch{'s 1-' if searched > 1 else ' '}"
        f"{searched} of {config.epochs}, then trains on at the chosen widths. "
    )


def temperature_arguments(config, total_steps):
    """The `slb_keras.TemperatureScheduler` arguments of a resolved config.

    Example:

    >>> from training.config import Config, resolve
    >>> arguments = temperature_arguments(resolve(Config(epochs=400)), total_steps=400 * 500)
    >>> arguments["speed"], arguments["end"], arguments["start_fraction"], arguments["end_fraction"]
    (1.03, None, 0.3, 0.9)
    """
    return dict(
        start=config.temperature_start,
        end=config.temperature_end,
        speed=config.temperature_speed,
        schedule=config.temperature_schedule,
        total_steps=total_steps,
        steps_per_epoch=total_steps // config.epochs,
        restarts=config.temperature_restarts,
        start_fraction=config.temperature_start_fraction,
        end_fraction=config.temperature_end_fraction,
        hard_fraction=config.hard_epochs / config.epochs,
    )


def recipe_record(config, steps_per_epoch):
    """What summary.json adds to the config: the activation quantizer really used and tau's end.

    Example:

    >>> from training.config import Config, resolve
    >>> recipe_record(resolve(Config(wbits=2, abits=2)), steps_per_epoch=500)
    {'activation_quantizer_used': 'dorefa', 'temperature_final': 122.4620236375584, 'temperature_form': 'speed'}
    """
    total = config.epochs * steps_per_epoch
    scheduler = slb_keras.TemperatureScheduler(**temperature_arguments(config, total))
    quantizer = {None: "none", "ste_sign": "sign"}.get(_input_alias(config), config.activation_quantizer)
    record = {
        "activation_quantizer_used": quantizer,
        "temperature_final": scheduler.final_temperature() if config.method == "slb" else None,
        "temperature_form": "speed" if config.temperature_speed is not None else config.temperature_schedule,
    }
    if search_settings.is_search(config):
        record["search_epochs"] = search_settings.search_epochs(config)
    return record
