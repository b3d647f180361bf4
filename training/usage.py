"""Bad input to a run: `UsageError`, and `invalid_flag`, which names the flag, its value
and what is allowed. train.py prints a `UsageError` as one line and exits with status 2.

The base of the training package: every module that refuses input imports it, and it
imports none of them.
"""

import math


class UsageError(ValueError):
    """Bad input to a run (a flag, the data, the model_dir); train.py exits with status 2.

    Example:

    >>> import training
    >>> try:
    ...     training.resolve(training.Config(wbits=9))
    ... except UsageError as error:
    ...     print(error)
    Invalid --wbits=9: expected an integer from 1 to 8.
    """


def invalid_flag(name, value, expected):
    """The `UsageError` for `--name=value`, saying what is `expected`.

    Example:

    >>> print(invalid_flag("epochs", -1, "an integer >= 1"))
    Invalid --epochs=-1: expected an integer >= 1.
    """
    return UsageError(f"Invalid --{name}={value}: expected {expected}.")


def is_int(value):
    """Whether `value` is an integer (a bool is not).

    Example:

    >>> is_int(3), is_int(3.0), is_int(True)
    (True, False, False)
    """
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value):
    """Whether `value` is a finite int or float (a bool is not).

    Example:

    >>> is_number(0.5), is_number(float("nan")), is_number(False)
    (True, False, False)
    """
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
