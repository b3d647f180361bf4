"""Mixed precision: one layer searching its bit width among nested SLB value sets.

The SLB value sets nest: V1 = {-1, 1} is inside V2 = {-1, -1/3, 1/3, 1}, inside V4
(1/3 = 5/15), inside V8, because 2**b - 1 divides 2**B - 1 whenever b divides B. A
searched layer keeps one logit per value of its widest candidate set V_B; the logits
of a narrower width b are those at the codes of V_b inside V_B (`nested_codes`), so
one set of logits holds every candidate. A second, layer-level set of logits beta
(one per candidate width) chooses the width by the same temperature mechanism as
the weights:

    q = softmax(max(tau, 1) * beta)                (over the candidate widths)
    W_soft = sum_b q_b * soft_weight(A[..., codes_b], tau, b)
    W_hard = hard_weight(A[..., codes_b*], b*)     with b* = candidate argmax beta
    E[bits] = sum_b q_b * b

The width's temperature is the weights' tau floored at 1 (`WIDTH_TEMPERATURE_FLOOR`):
while tau is small (0.01 at the start of the authors' schedule) q would be uniform
whatever beta holds, so the expected bits (what the budget sees) would not move while
the argmax (what is chosen) follows every small change of beta; measured on digits
(ResNet-20, 1/2/4 bits, a 2-bit budget), that search ended with 19 of 20 layers at 1
bit, average 1.01. From tau = 1 on, both sharpen together, as the weights do.

The weight of width b is always computed on V_b's own float32 values
(`value_sets.value_set(b)`), so fixing a layer at b* (a plain SLB layer of wbits b*
holding A[..., codes_b*]) computes exactly the searched layer's hard network.
"""

import numpy as np
from keras import ops

from slb_keras.core import ops as slb_ops
from slb_keras.core import value_sets

WIDTHS = (1, 2, 4, 8)  # the nested widths: each divides the next
WIDTH_TEMPERATURE_FLOOR = 1.0  # q = softmax(max(tau, 1) * beta)


def is_searched(wbits):
    """Whether `wbits` names candidate widths (a list or tuple) rather than one width.

    Example:

    >>> is_searched((1, 2, 4)), is_searched(2)
    (True, False)
    """
    return isinstance(wbits, (list, tuple))


def validate_wbits(wbits, name="wbits"):
    """One width (an int 1..8) or candidate widths (a sorted tuple of 1, 2, 4, 8).

    Example:

    >>> validate_wbits(3), validate_wbits([4, 2])
    (3, (2, 4))
    """
    if is_searched(wbits):
        return validate_candidates(wbits, name)
    return value_sets.validate_bits(wbits, name)


def validate_candidates(wbits, name="wbits"):
    """Candidate widths as a sorted tuple: at least two distinct values of 1, 2, 4, 8.

    Raises:
        ValueError: naming the argument, for a width outside 1, 2, 4, 8, a repeated
            width or a single one.

    Example:

    >>> validate_candidates([4, 1, 2])
    (1, 2, 4)
    >>> validate_candidates((1, 3))
    Traceback (most recent call last):
    ...
    ValueError: Invalid wbits=(1, 3): expected two or more distinct widths of 1, 2, 4, 8 (nested value sets).
    """
    allowed = "expected two or more distinct widths of 1, 2, 4, 8 (nested value sets)"
    widths = tuple(wbits) if is_searched(wbits) else None
    if (
        widths is None
        or len(widths) < 2
        or len(set(widths)) != len(widths)
        or not all(w in WIDTHS and not isinstance(w, bool) for w in widths)
    ):
        raise ValueError(f"Invalid {name}={wbits!r}: {allowed}.")
    return tuple(sorted(int(w) for w in widths))


def nested_codes(bits, within):
    """The codes in V_within of the values of V_bits, as int32 (len 2**bits).

    Example:

    >>> nested_codes(2, 4).tolist()  # -1, -1/3, 1/3, 1 among the 16 values of V4
    [0, 5, 10, 15]
    """
    big, small = 2**within - 1, 2**bits - 1
    if big % small:
        raise ValueError(f"Invalid bits={bits}: V{bits} is not inside V{within}.")
    return (np.arange(2**bits, dtype=np.int32) * (big // small)).astype(np.int32)


def width_probabilities(width_logits, temperature):
    """q = softmax(max(tau, 1) * beta) over the candidate widths (float32).

    Example:

    >>> width_probabilities(np.array([0.0, 0.0]), 1.0).numpy().tolist()
    [0.5, 0.5]
    >>> bool(np.allclose(width_probabilities(np.array([0.0, np.log(3.0)]), 0.01), [0.25, 0.75]))
    True
    """
    tau = ops.maximum(ops.cast(temperature, "float32"), WIDTH_TEMPERATURE_FLOOR)
    return slb_ops.probabilities(width_logits, tau)


def expected_bits(width_logits, temperature, candidates):
    """E[bits] = sum_b q_b * b, a float32 scalar.

    Example:

    >>> float(expected_bits(np.array([0.0, 0.0]), 1.0, (1, 2)))
    1.5
    """
    widths = ops.convert_to_tensor(np.asarray(candidates, np.float32))
    return ops.sum(width_probabilities(width_logits, temperature) * widths)


def logits_at(logits, bits, candidates):
    """The logits of width `bits`: those of V_bits inside the widest candidate set.

    Example:

    >>> logits_at(np.arange(4.0)[None], 1, (1, 2)).numpy().tolist()
    [[0.0, 3.0]]
    """
    return ops.take(logits, nested_codes(bits, candidates[-1]), axis=-1)


def soft_weight(logits, width_logits, temperature, candidates):
    """W_soft = sum_b q_b * soft_weight(logits of width b, tau, b), float32 kernel shape.

    Example:

    >>> logits = np.array([[9.0, 0.0, 0.0, -9.0]])  # -1 at every width
    >>> bool(np.allclose(soft_weight(logits, np.zeros(2), 1.0, (1, 2)), -1.0, atol=1e-3))
    True
    """
    q = width_probabilities(width_logits, temperature)
    total = 0.0
    for i, bits in enumerate(candidates):
        weight = slb_ops.soft_weight(logits_at(logits, bits, candidates), temperature, bits=bits)
        total = total + q[i] * weight
    return total


def _chosen(width_logits, candidates):
    """One-hot float32 of the chosen width (argmax beta, ties to the narrower)."""
    return ops.one_hot(ops.argmax(ops.cast(width_logits, "float32")), len(candidates))


def hard_weight(logits, width_logits, candidates):
    """W_hard at the chosen width b* = argmax beta: v_b*[argmax A[..., codes_b*]].

    Example:

    >>> logits = np.array([[0.0, 2.0, 1.0, 3.0]])
    >>> hard_weight(logits, np.array([1.0, 0.0]), (1, 2)).numpy().tolist()  # width 1
    [1.0]
    """
    chosen = _chosen(width_logits, candidates)
    total = 0.0
    for i, bits in enumerate(candidates):
        total = total + chosen[i] * slb_ops.hard_weight(logits_at(logits, bits, candidates), bits=bits)
    return total


def hard_codes(logits, width_logits, candidates):
    """Codes 0..2**b*-1 of the hard weight in V_b* (int32, kernel shape).

    Example:

    >>> hard_codes(np.array([[0.0, 2.0, 1.0, 3.0]]), np.array([0.0, 1.0]), (1, 2)).numpy().tolist()
    [3]
    """
    chosen = ops.cast(_chosen(width_logits, candidates), "int32")
    total = 0
    for i, bits in enumerate(candidates):
        total = total + chosen[i] * slb_ops.hard_codes(logits_at(logits, bits, candidates))
    return total


def chosen_width(width_logits, candidates):
    """The width b* = candidates[argmax beta], a Python int (eager).

    Example:

    >>> chosen_width(np.array([0.0, 2.0, 1.0]), (1, 2, 4))
    2
    """
    return int(candidates[int(np.argmax(np.asarray(ops.convert_to_numpy(width_logits))))])


def validate_budget(budget, candidates, name="bit_budget"):
    """The average-bits budget as a float within [min, max] of the candidate widths.

    Example:

    >>> validate_budget(2, (1, 2, 4))
    2.0
    >>> validate_budget(5.0, (1, 2, 4))
    Traceback (most recent call last):
    ...
    ValueError: Invalid bit_budget=5.0: expected a number from 1 to 4 (the candidate widths' range).
    """
    low, high = min(candidates), max(candidates)
    message = f"Invalid {name}={budget!r}: expected a number from {low} to {high} (the candidate widths' range)."
    if isinstance(budget, bool):
        raise ValueError(message)
    try:
        value = float(budget)
    except (TypeError, ValueError):
        raise ValueError(message) from None
    if not low <= value <= high:
        raise ValueError(message)
    return value
