"""The value set V of b-bit SLB weights and the integer codes that index it.

For b bits there are m = 2**b values, evenly spaced over [-1, 1] (DoReFa range,
no zero, no learned scale):

    v_k = (2k - (m - 1)) / (m - 1),   k = 0 .. m - 1.

1 bit gives {-1, +1}; 2 bits give {-1, -1/3, 1/3, 1}. The integer view
(m - 1) * v_k = 2k - (m - 1) is an odd integer, so a hard SLB kernel is stored
exactly as int8 codes with scale 1 / (m - 1) for b <= 7.
"""

import numpy as np

from slb_keras import checks

MIN_BITS = 1
MAX_BITS = 8


def validate_bits(value, name="wbits", low=MIN_BITS, high=MAX_BITS, extra=()):
    """Returns `value` as an int, or raises a ValueError naming the argument.

    Args:
        value: the bit width received.
        name: the argument name to put in the message.
        low: smallest allowed bit width.
        high: largest allowed bit width.
        extra: further allowed values outside [low, high] (e.g. 32 for
            "no quantization").

    Returns:
        The bit width as a Python int.

    Raises:
        ValueError: if `value` is not an integer in [low, high] or in `extra`.

    Example:

    >>> validate_bits(2)
    2
    """
    allowed = f"an integer from {low} to {high}"
    if extra:
        allowed += " or " + " or ".join(str(e) for e in extra)
    ok = checks.is_int(value)
    if not ok and isinstance(value, (float, np.floating)) and float(value).is_integer():
        # 2.0 is accepted as 2, 2.5 is not.
        value, ok = int(value), True
    if not ok or not (low <= int(value) <= high or int(value) in extra):
        raise ValueError(f"Invalid {name}={value!r}: expected {allowed}.")
    return int(value)


def num_values(bits):
    """Number of values m = 2**bits of a `bits`-bit value set.

    Example:

    >>> num_values(3)
    8
    """
    return 2 ** validate_bits(bits, "bits")


def value_set(bits):
    """The sorted SLB value set for `bits`-bit weights, as float32.

    Args:
        bits: weight bit width, 1 to 8.

    Returns:
        A numpy float32 array of shape (2**bits,), increasing, from -1 to 1,
        equal to integer_values(bits) * float32(1 / (2**bits - 1)) exactly.

    Raises:
        ValueError: if `bits` is not an integer from 1 to 8.

    Example:

    >>> value_set(2).tolist()  # doctest: +ELLIPSIS
    [-1.0, -0.333..., 0.333..., 1.0]
    """
    m = num_values(bits)
    # q * float32(1 / (m - 1)), the int8 dequantization, so that export is exact
    # (it differs from q / (m - 1) by at most one float32 ulp; -1 and 1 are exact).
    return integer_values(bits).astype(np.float32) * np.float32(1.0 / (m - 1))


def integer_values(bits):
    """The odd integers (m - 1) * V, as int32: value_set(bits) * (2**bits - 1).

    Example:

    >>> integer_values(2).tolist()
    [-3, -1, 1, 3]
    """
    m = num_values(bits)
    return (2 * np.arange(m, dtype=np.int32) - (m - 1)).astype(np.int32)


def codes_to_values(codes, bits):
    """Maps integer codes 0..2**bits-1 to their float32 values in V.

    Example:

    >>> codes_to_values([0, 3], bits=2).tolist()
    [-1.0, 1.0]
    """
    codes = np.asarray(codes)
    m = num_values(bits)
    if codes.size and (codes.min() < 0 or codes.max() >= m):
        raise ValueError(
            f"Invalid codes: values must lie in [0, {m - 1}] for bits={bits}, "
            f"got range [{codes.min()}, {codes.max()}]."
        )
    return value_set(bits)[codes.astype(np.int64)]


def values_to_codes(values, bits):
    """Maps values (anything near V) to the integer code of the nearest value.

    Values outside [-1, 1] are clipped, so this also projects float weights
    scaled to [-1, 1] onto V.

    Example:

    >>> values_to_codes([-1.0, 0.3, 0.9], bits=2).tolist()
    [0, 2, 3]
    """
    m = num_values(bits)
    values = np.clip(np.asarray(values, dtype=np.float64), -1.0, 1.0)
    codes = np.rint((values * (m - 1) + (m - 1)) / 2.0)
    return np.clip(codes, 0, m - 1).astype(np.int32)
