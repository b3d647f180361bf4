"""A bit-width search's settings (--wbits=1,2,4 --bit_budget=2): how the flag reads, the
checks of a budget and its fraction, the names it gives, the recipe it takes, its epochs.

`config.resolve` calls these; `runner` and `schedule` ask `is_search` and `search_epochs`.
The examples build a `training.Config`; this module reads only its fields (and imports
nothing of `training.config`, which imports it).
"""

from slb_keras.core import mixed_precision
from training.usage import invalid_flag, is_int, is_number


def parsed_wbits(wbits):
    """--wbits as train.py gives it ("2", "1,2,4") or as the API does (2, (1, 2, 4)).

    Example:

    >>> parsed_wbits("2"), parsed_wbits("1,2,4"), parsed_wbits([2, 4])
    (2, (1, 2, 4), (2, 4))
    """
    if isinstance(wbits, list):
        return tuple(wbits)
    if not isinstance(wbits, str):
        return wbits
    parts = [part.strip() for part in wbits.split(",")]
    if not all(part.isdigit() for part in parts):
        raise invalid_flag(
            "wbits", wbits,
            "an integer from 1 to 8, or candidate widths of 1, 2, 4, 8 to search (e.g. 1,2,4)",
        )
    values = tuple(int(part) for part in parts)
    return values[0] if len(values) == 1 else values


def is_search(config):
    """Whether the run searches the bit widths (--wbits=1,2,4 and a --bit_budget).

    Example:

    >>> from training import Config
    >>> is_search(Config(wbits=(1, 2, 4), bit_budget=2.0)), is_search(Config(wbits=2))
    (True, False)
    """
    return mixed_precision.is_searched(config.wbits)


def wbits_text(config):
    """The weight bits as the flag takes them: "2", or "1,2,4" for a search.

    Example:

    >>> from training import Config
    >>> wbits_text(Config(wbits=2)), wbits_text(Config(wbits=(1, 2, 4), bit_budget=2.0))
    ('2', '1,2,4')
    """
    return ",".join(map(str, config.wbits)) if is_search(config) else str(config.wbits)


def wbits_label(config):
    """The weight bits in names: "2", or "1-2-4b2" for a search of 1, 2, 4 under 2 bits.

    Example:

    >>> from training import Config
    >>> wbits_label(Config(wbits=2)), wbits_label(Config(wbits=(1, 2, 4), bit_budget=2.0))
    ('2', '1-2-4b2')
    """
    if not is_search(config):
        return str(config.wbits)
    return "-".join(str(w) for w in config.wbits) + f"b{config.bit_budget:g}"


def check_search(config):
    """A search's budget and fraction; a budget only with candidate widths."""
    if not is_search(config):
        if config.bit_budget is not None:
            raise invalid_flag(
                "bit_budget", config.bit_budget,
                f"no budget with one width (--wbits={config.wbits}); a search takes candidate "
                "widths, e.g. --wbits=1,2,4 --bit_budget=2",
            )
        return
    widths = ",".join(str(w) for w in config.wbits)
    if config.method != "slb":
        raise invalid_flag(
            "wbits", widths, f"one width with --method={config.method} (searching widths is SLB's)"
        )
    try:
        mixed_precision.validate_candidates(config.wbits)
    except ValueError:
        raise invalid_flag(
            "wbits", widths, "two or more distinct widths of 1, 2, 4, 8 (nested value sets) to search"
        ) from None
    low, high = min(config.wbits), max(config.wbits)
    if config.bit_budget is None:
        raise invalid_flag(
            "wbits", widths,
            f"a --bit_budget with candidate widths (the average bits per quantized weight to "
            f"search under, from {low} to {high})",
        )
    try:
        mixed_precision.validate_budget(config.bit_budget, config.wbits)
    except ValueError:
        raise invalid_flag(
            "bit_budget", config.bit_budget,
            f"a number from {low} to {high} (the range of --wbits={widths})",
        ) from None
    fraction = config.search_fraction
    if not (is_number(fraction) and 0 < fraction < 1):
        raise invalid_flag("search_fraction", fraction, "a fraction of the epochs in (0, 1)")
    if is_int(config.epochs) and config.epochs < 2:
        raise invalid_flag(
            "epochs", config.epochs,
            f"at least 2 for a search (--wbits={widths}): the widths are searched for part of "
            "the epochs, then trained on",
        )


def recipe_wbits(config):
    """The width whose temperature recipe a run takes: its --wbits; for a search, the widest
    candidate within the budget (2,4,8 under 7.5 bits: 4's short-budget tau end of 200, not
    8's 1000).

    Measured when 4 bits' short-budget recipe still ended at tau 1000 (ResNet-20 A2, CIFAR-10,
    4 epochs, seed 0, 1,2,4 under 2 bits): with 4's tau end the fixed widths reached 62.91%
    (their epochs at tau 1000, every weight frozen: flip rate 2e-4 in the last epoch), with
    2's 65.36% (uniform W2: 64.53 +- 0.47 over 3 seeds).

    Example:

    >>> from training import Config
    >>> recipe_wbits(Config(wbits=(1, 2, 4), bit_budget=2.0)), recipe_wbits(Config(wbits=4))
    (2, 4)
    >>> recipe_wbits(Config(wbits=(2, 4, 8), bit_budget=7.5))
    4
    """
    if not is_search(config):
        return config.wbits
    return max(w for w in config.wbits if w <= config.bit_budget)


def search_epochs(config):
    """The epochs of a search's first phase: round(search_fraction * epochs), 1..epochs-1.

    Example:

    >>> from training import Config
    >>> search_epochs(Config(wbits=(1, 2), bit_budget=1.5, epochs=4))
    2
    >>> search_epochs(Config(wbits=(1, 2), bit_budget=1.5, epochs=2, search_fraction=0.9))
    1
    """
    return min(config.epochs - 1, max(1, round(config.search_fraction * config.epochs)))
