"""Argument checks of the public functions: ValueError naming the argument and its value."""

import numbers

SPLITS = ("train", "validation", "test")


def check_int(name, value, low):
    """Refuses `value` unless it is an int (not a bool) >= `low`.

    Example:

    >>> check_int("seed", -1, low=0)
    Traceback (most recent call last):
    ...
    ValueError: `seed` must be an int >= 0. Received: seed=-1
    """
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < low:
        raise ValueError(f"`{name}` must be an int >= {low}. Received: {name}={value!r}")


def check_split(split):
    """Refuses a split other than "train", "validation" and "test".

    Example:

    >>> check_split("val")
    Traceback (most recent call last):
    ...
    ValueError: `split` must be one of ('train', 'validation', 'test'). Received: split='val'
    """
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}. Received: split={split!r}")


def check_run_args(global_batch_size, seed, initial_epoch, steps_per_epoch):
    """Checks the arguments `build_dataset` and `make_datasets` share.

    Example:

    >>> check_run_args(64, seed=0, initial_epoch=0, steps_per_epoch=0)
    Traceback (most recent call last):
    ...
    ValueError: `steps_per_epoch` must be an int >= 1. Received: steps_per_epoch=0
    """
    check_int("global_batch_size", global_batch_size, low=1)
    check_int("seed", seed, low=0)
    check_int("initial_epoch", initial_epoch, low=0)
    if steps_per_epoch is not None:
        check_int("steps_per_epoch", steps_per_epoch, low=1)


def check_divisible(global_batch_size, num_replicas):
    """Refuses a global batch that the replicas cannot share equally.

    Example:

    >>> check_divisible(15, 2)
    Traceback (most recent call last):
    ...
    ValueError: `global_batch_size`=15 must be divisible by the 2 replicas in sync
    """
    if global_batch_size % num_replicas:
        raise ValueError(
            f"`global_batch_size`={global_batch_size} must be divisible by the "
            f"{num_replicas} replicas in sync"
        )


def check_validation_split(validation_split):
    """Refuses a held-out fraction of the training split outside [0, 1).

    Example:

    >>> check_validation_split(1.0)
    Traceback (most recent call last):
    ...
    ValueError: `validation_split` must be a number in [0, 1). Received: validation_split=1.0
    """
    if (
        not isinstance(validation_split, numbers.Real)
        or isinstance(validation_split, bool)
        or not 0 <= validation_split < 1
    ):
        raise ValueError(
            "`validation_split` must be a number in [0, 1). "
            f"Received: validation_split={validation_split!r}"
        )


def check_held_out(name, value, splits, num_validation, validation_split):
    """Refuses a "validation" split when `validation_split` holds nothing out.

    Example:

    >>> check_held_out("split", "validation", ("validation",), 0, 0.0)
    Traceback (most recent call last):
    ...
    ValueError: `split`='validation' needs a held-out part of the training split: pass `validation_split` > 0. Received: validation_split=0.0
    """
    if "validation" in splits and not num_validation:
        raise ValueError(
            f"`{name}`={value!r} needs a held-out part of the training split: pass "
            f"`validation_split` > 0. Received: validation_split={validation_split!r}"
        )

