"""init="float" of `quantize_model`: SLB logits from a trained float kernel.

With `init="float"` the kernel logits start from the trained float kernel
W. Each output channel c is scaled by the factor s_c that minimizes
||W_c - s_c Q(W_c / s_c)||^2 (Q = the nearest value of V; s_c = mean |W_c|
for one bit), so u = W / s lies mostly in [-1, 1], and

    A_k = -beta * (u - v_k)^2,    beta = log((m - 1) * 99) / (tau * Delta^2),

(Delta = 2 / (m - 1), the spacing of V): the value nearest u gets the largest
logit, and a weight lying on a value has probability 0.99 on it at the layer's
temperature tau, so the soft kernel starts close to the projection Q(u), while
weights near a decision boundary stay undecided (their logits carry how far
they are from it). Because V has no scale, the factors s_c (and the scale of
the soft kernel) are folded into the bias and into the statistics of a batch
normalization that directly follows the layer (its hard statistics for y / r_h,
its soft ones for the soft kernel, `calibrated` set): the hard network then
computes, up to the rounding of the weights, what the float network computed.
A converted layer without a batch norm after it (or with an activation other
than linear/relu) outputs about y / r_h instead of y, a change of scale
nothing absorbs: put a batch norm after each quantized layer, as the paper
"""

import math

import keras
import numpy as np

from slb_keras import layers as slb_layers_lib
from slb_keras.core import value_sets
from slb_keras.core.normalization import StateBatchNormalization

# A weight lying on a value gets this probability on it at the current tau.
_ON_VALUE_PROBABILITY = 0.99
_SCALE_ITERATIONS = 20
_SCALE_GRID = 50


def to_numpy(value):
    """A variable or tensor as a new float64 NumPy array (any backend).

    Example:

    >>> to_numpy(keras.ops.ones((2,))).dtype
    dtype('float64')
    """
    return np.asarray(
        keras.ops.convert_to_numpy(keras.ops.convert_to_tensor(value)), dtype=np.float64
    )


def _matrix(layer, kernel):
    """The kernel as [taps x inputs, output channels], as its family lays it out."""
    return slb_layers_lib.family_of(layer).as_matrix(kernel)


def channel_scale(matrix, bits):
    """Per-column s minimizing ||w - s * Q(w / s)||^2, Q rounding onto V.

    One bit: s = mean |w| (XNOR-Net), exact. More bits: the best of a grid
    of clipping scales from 2% to 100% of max |w|, refined by alternating
    projection and least squares (Lloyd).

    Args:
        matrix: (fan_in, channels) float array.
        bits: weight bit width.

    Returns:
        float64 array of shape (channels,), > 0.

    Example:

    >>> channel_scale(np.array([[1.0], [-3.0]]), bits=1).tolist()
    [2.0]
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    magnitude = np.abs(matrix)
    if bits == 1:
        scale = magnitude.mean(axis=0)
        return np.where(scale > 0, scale, 1.0)
    top = magnitude.max(axis=0)
    top = np.where(top > 0, top, 1.0)
    grid = np.linspace(0.02, 1.0, _SCALE_GRID)[:, None] * top  # (grid, channels)
    errors = np.stack([_quantization_error(matrix, s, bits) for s in grid])
    scale = grid[np.argmin(errors, axis=0), np.arange(matrix.shape[1])]
    for _ in range(_SCALE_ITERATIONS):
        q = _project(matrix, scale, bits)
        qq = np.sum(q * q, axis=0)
        new = np.sum(matrix * q, axis=0) / np.where(qq > 0, qq, 1.0)
        new = np.where(new > 0, new, scale)
        better = _quantization_error(matrix, new, bits) < _quantization_error(matrix, scale, bits)
        if not better.any():
            break
        scale = np.where(better, new, scale)
    return scale


def _project(matrix, scale, bits):
    """Q(w / s): the values of V nearest the scaled weights."""
    return value_sets.codes_to_values(value_sets.values_to_codes(matrix / scale, bits), bits)


def _quantization_error(matrix, scale, bits):
    return np.sum((matrix - scale * _project(matrix, scale, bits)) ** 2, axis=0)


def distance_logits(u, bits, temperature):
    """A_k = -beta (u - v_k)^2, with 0.99 on a value lying on it at `temperature`."""
    values = value_sets.value_set(bits).astype(np.float64)
    m = values.size
    spacing = 2.0 / (m - 1)
    beta = math.log((m - 1) * _ON_VALUE_PROBABILITY / (1 - _ON_VALUE_PROBABILITY))
    beta /= temperature * spacing**2
    logits = -beta * (u[..., None] - values) ** 2
    return (logits - logits.max(axis=-1, keepdims=True)).astype(np.float32)


def _fit(matrix, approx):
    """Per-column r with matrix ~ r * approx (least squares; 1 where undefined)."""
    aa = np.sum(approx * approx, axis=0)
    r = np.sum(matrix * approx, axis=0) / np.where(aa > 0, aa, 1.0)
    return np.where((aa > 0) & (r > 0), r, 1.0)


def init_slb_layer(old, new, init, bn):
    """Copies the bias of `old` into `new` and, for init="float", sets the logits.

    Args:
        old: the float Keras layer.
        new: its SLB version (built).
        init: "float" or "random" (then only the bias is copied).
        bn: the batch norm of the converted model right after `new`, into
            which the scales are folded, or None.
    """
    if getattr(old, "use_bias", False):
        new.bias.assign(to_numpy(old.bias))
    if init == "random":
        return
    kernel = to_numpy(old.kernel)
    bits = new.logit_bits  # a searched layer: the widest candidate (nearest values nest)
    matrix = _matrix(old, kernel)
    u = slb_layers_lib.family_of(old).from_matrix(matrix / channel_scale(matrix, bits), kernel.shape)
    tau = float(to_numpy(new.temperature))
    new.kernel_logits.assign(distance_logits(u, bits, tau))
    hard = _matrix(old, to_numpy(new.hard_kernel()))
    soft = _matrix(old, to_numpy(new.soft_kernel()))
    r_hard, r_soft = _fit(matrix, hard), _fit(matrix, soft)
    bias = 0.0
    if getattr(old, "use_bias", False):
        bias = to_numpy(old.bias)
        new.bias.assign(bias / r_hard)
    if bn is not None:
        _fold_into_batch_norm(bn, r_hard, r_soft, bias)


def _fold_into_batch_norm(bn, r_hard, r_soft, bias):
    """Moving statistics of `bn` for inputs y / r (hard) instead of y (float).

    Float: y = conv(x, W) + b. Hard: conv(x, W_h) + b / r_h ~ y / r_h. Soft:
    conv(x, W_s) + b / r_h ~ (y - b) / r_s + b / r_h.
    """
    mean = to_numpy(bn.moving_mean)
    variance = to_numpy(bn.moving_variance)
    hard_mean, hard_variance = mean / r_hard, variance / r_hard**2
    soft_mean = (mean - bias) / r_soft + bias / r_hard
    soft_variance = variance / r_soft**2
    if isinstance(bn, StateBatchNormalization):
        bn.hard_moving_mean.assign(hard_mean.astype(np.float32))
        bn.hard_moving_variance.assign(hard_variance.astype(np.float32))
        bn.moving_mean.assign(soft_mean.astype(np.float32))
        bn.moving_variance.assign(soft_variance.astype(np.float32))
    else:  # a plain BatchNormalization kept by layer_config: inference is hard
        bn.moving_mean.assign(hard_mean.astype(np.float32))
        bn.moving_variance.assign(hard_variance.astype(np.float32))
