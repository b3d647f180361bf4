"""Pure SLB functions: probabilities, soft and hard weights (no Keras state).

Every low-bit weight owns m = 2**b logits A (value axis last). With the
temperature tau:

    P = softmax(tau * A)                   (over the value axis)
    W_soft = sum_k P_k v_k                 (training, fully differentiable)
    W_hard = v[argmax_k A_k]               (inference, independent of tau)

The functions accept tensors of any float dtype and return float32 (the dtype
the logits are kept in); callers cast to their compute dtype.
"""

import keras
import numpy as np
from keras import ops

from slb_keras.core import value_sets

_fused = None  # the TensorFlow kernels of soft_weight, on that backend only
if keras.backend.backend() == "tensorflow":
    from slb_keras.core import _fused


def _shifted_logits(logits, temperature):
    """tau * (A - max A): finite for any finite logits and tau in [1e-3, 1e4].

    The max is subtracted *before* multiplying by tau, so tau * A never
    overflows. softmax is shift invariant, so the stop_gradient changes nothing
    in the gradient.
    """
    logits = ops.cast(logits, "float32")
    shift = ops.stop_gradient(ops.max(logits, axis=-1, keepdims=True))
    return ops.cast(temperature, "float32") * (logits - shift)


def probabilities(logits, temperature=1.0):
    """P = softmax(tau * A) over the last (value) axis.

    Args:
        logits: tensor of shape kernel_shape + (m,).
        temperature: scalar tau > 0.

    Returns:
        float32 tensor of the same shape, summing to 1 over the last axis.

    Example:

    >>> p = probabilities(np.array([[0.0, 1.0]]), temperature=10.0)
    >>> float(p[0, 1]) > 0.99
    True
    """
    return ops.softmax(_shifted_logits(logits, temperature), axis=-1)


def soft_weight(logits, temperature=1.0, bits=None):
    """Expected weight W_soft = sum_k softmax(tau * A)_k v_k.

    Args:
        logits: tensor of shape kernel_shape + (2**bits,).
        temperature: scalar tau > 0.
        bits: weight bit width; inferred from the last axis when None.

    Returns:
        float32 tensor of shape kernel_shape, within [-1, 1].

    On the TensorFlow backend, 2 bits and more run as one fused XLA kernel
    forward and one backward with the closed-form gradient
    dW/dA_k = tau P_k (v_k - W), recomputing P instead of storing it, so the
    only logit-sized tensor a training step adds is the logits' gradient.

    Example:

    >>> w = soft_weight(np.array([[5.0, -5.0]]), temperature=1.0)
    >>> bool(-1.0 <= float(w[0]) < -0.99)
    True
    """
    bits = _bits_of(logits, bits)
    if bits == 1:
        # softmax over two values {-1, +1}: E[w] = P1 - P0 = tanh(tau (a1 - a0) / 2).
        # One elementwise op instead of a 2-way softmax (and no m-times temporaries).
        # a1 - a0 as a product with (-1, 1): one pass forward and backward (slicing
        # the value axis costs ~7x more, mostly in the gradient's scatter).
        diff = ops.matmul(ops.cast(logits, "float32"), ops.convert_to_tensor([-1.0, 1.0]))
        return ops.tanh(0.5 * ops.cast(temperature, "float32") * diff)
    if _fused is not None:
        # One XLA kernel forward and one backward, no softmax temporaries.
        return _fused.soft_weight(logits, temperature, value_sets.value_set(bits))
    return _soft_weight_reference(logits, temperature, bits)


def _soft_weight_reference(logits, temperature, bits):
    """sum_k e_k v_k / sum_k e_k with e = exp(tau (A - max A)), in keras.ops.

    Any backend, autodiff gradient. Written as two elementwise products summed
    over the value axis rather than softmax then matmul: XLA fuses them (on
    JAX, jit, CPU: 2.5-4x faster than the matmul form at 2 and 4 bits).
    """
    values = ops.convert_to_tensor(value_sets.value_set(bits))
    exps = ops.exp(_shifted_logits(logits, temperature))
    return ops.sum(exps * values, axis=-1) / ops.sum(exps, axis=-1)


def hard_codes(logits):
    """Integer codes argmax_k A_k (int32); ties go to the lower code.

    Example:

    >>> hard_codes(np.array([[0.0, 2.0, 1.0, -1.0]])).numpy().tolist()
    [1]
    """
    return ops.cast(ops.argmax(ops.cast(logits, "float32"), axis=-1), "int32")


def hard_weight(logits, bits=None):
    """W_hard = v[argmax_k A_k], the inference weight, as float32.

    Example:

    >>> hard_weight(np.array([[0.0, 2.0, 1.0, -1.0]])).numpy().tolist()  # doctest: +ELLIPSIS
    [-0.333...]
    """
    bits = _bits_of(logits, bits)
    values = ops.convert_to_tensor(value_sets.value_set(bits))
    return ops.take(values, hard_codes(logits))


def logits_from_codes(codes, bits, margin=1.0):
    """One-hot logits: `margin` on the chosen code, 0 elsewhere.

    With tau * margin large, soft_weight(...) equals codes_to_values(codes).

    Example:

    >>> logits_from_codes(np.array([2]), bits=2, margin=3.0).tolist()
    [[0.0, 0.0, 3.0, 0.0]]
    """
    m = value_sets.num_values(bits)
    codes = np.asarray(codes)
    return (np.eye(m, dtype=np.float32)[codes] * np.float32(margin)).astype(np.float32)


def entropy(logits, temperature=1.0):
    """Entropy (nats) of softmax(tau * A) over the value axis.

    Example:

    >>> round(float(entropy(np.zeros((1, 2)))[0]), 4)
    0.6931
    """
    z = _shifted_logits(logits, temperature)
    log_p = z - ops.logsumexp(z, axis=-1, keepdims=True)
    return -ops.sum(ops.exp(log_p) * log_p, axis=-1)


def _bits_of(logits, bits):
    if bits is not None:
        return value_sets.validate_bits(bits, "bits")
    m = int(logits.shape[-1])
    bits = int(round(np.log2(m))) if m > 1 else 0
    if 2**bits != m:
        raise ValueError(
            f"Invalid logits shape {tuple(logits.shape)}: the last axis must have "
            "2**bits entries for bits from 1 to 8."
        )
    return value_sets.validate_bits(bits, "bits")


__all__ = [
    "probabilities",
    "soft_weight",
    "hard_codes",
    "hard_weight",
    "logits_from_codes",
    "entropy",
]
