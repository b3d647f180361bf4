"""The paper's baseline: latent float weights quantized with a straight-through estimator.

`STELayerMixin` makes a Keras kernel layer its STE version (`slb_keras.STEConv2D` and
`slb_keras.STEDense`, in their family modules under `slb_keras.layers`): the Keras layer
with one change, the kernel used in `call` is the DoReFa weight quantization of the latent float kernel onto the SAME value
set as SLB (`slb_keras.value_set(wbits)`), with a straight-through estimator (STE) for the
rounding, both in training and at inference:

- wbits = 1: W_q = sign(W) in {-1, +1} (sign(0) = +1); the gradient passes straight
  through (dW_q/dW = 1).
- wbits = b > 1: with n = 2**b - 1 and x = tanh(W) / (2 max|tanh(W)|) + 1/2 in [0, 1],
  W_q = (2 round(n x) - n) / n, i.e. one of the 2**b values (2k - n) / n of V; the gradient
  of the rounding is taken as 1 (dW_q/dx = 2), the tanh and max normalization are
  differentiated as usual (Zhou et al., "DoReFa-Net", 2016).

The float kernel is an ordinary Keras variable (saved as is in `.keras` files); the
quantized kernel is `quantized_kernel()`. The classes are registered under the
`slb_keras` package name, so `import slb_keras` is all a `.keras` file holding them
needs. `ClipWeights` is the constraint of STE practice for binary weights
(BinaryConnect, BNN): the latent weights stay in [-1, 1], so they cannot drift
arbitrarily far from the sign's threshold.
"""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from slb_keras.core.family import bias_and_activation
from slb_keras.core import quantizers
from slb_keras.core import value_sets


@tf.custom_gradient
def _sign_ste(w):
    return tf.where(w >= 0, tf.ones_like(w), -tf.ones_like(w)), lambda dy: dy


def _round_to_values(x, n):
    """x in [0, 1] -> (2 round(n x) - n) * float32(1/n); gradient 2 (STE)."""
    inverse = np.float32(1.0 / n)  # the value set is integer_values * float32(1/n)

    @tf.custom_gradient
    def _round(x):
        codes = tf.round(x * n)
        return (2.0 * codes - n) * inverse, lambda dy: 2.0 * dy

    return _round(x)


def dorefa_weight(kernel, bits):
    """DoReFa weight quantization of a float kernel onto `slb_keras.value_set(bits)`.

    Args:
        kernel: float tensor (any shape); computed in float32.
        bits: weight bit width, 1 to 8.

    Returns:
        float32 tensor of the kernel's shape whose entries are values of
        `slb_keras.value_set(bits)`, bit for bit. Gradients follow the
        straight-through estimator (see the module docstring).

    Example:

    >>> w = dorefa_weight(tf.constant([-0.9, -0.05, 0.1, 2.0]), bits=2)
    >>> (w.numpy() * 3).round().tolist()
    [-3.0, -1.0, 1.0, 3.0]
    >>> dorefa_weight(tf.constant([-0.2, 0.0, 0.3]), bits=1).numpy().tolist()
    [-1.0, 1.0, 1.0]
    """
    bits = value_sets.validate_bits(bits, "bits")
    kernel = tf.cast(kernel, tf.float32)
    if bits == 1:
        return _sign_ste(kernel)
    squashed = tf.tanh(kernel)
    scale = tf.maximum(tf.reduce_max(tf.abs(squashed)), 1e-8)
    return _round_to_values(squashed / (2.0 * scale) + 0.5, float(2**bits - 1))


@keras.saving.register_keras_serializable(package="slb_keras")
class ClipWeights(keras.constraints.Constraint):
    """Clips every weight to [-limit, limit] after each optimizer step.

    Args:
        limit: a finite number > 0 (1.0: the latent weights of binary STE training).

    Example:

    >>> ClipWeights(1.0)(tf.constant([-3.0, 0.5, 2.0])).numpy().tolist()
    [-1.0, 0.5, 1.0]
    """

    def __init__(self, limit=1.0):
        if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not 0 < limit < float("inf"):
            raise ValueError(f"Invalid limit={limit!r}: expected a finite number > 0.")
        self.limit = float(limit)

    def __call__(self, w):
        return ops.clip(w, -self.limit, self.limit)

    def get_config(self):
        return {"limit": self.limit}


class STELayerMixin:
    """Adds `wbits` and `input_quantizer` to a Keras conv/dense layer (put it first).

    Subclasses define `apply_kernel(inputs, kernel)`, their family's linear op;
    `call` quantizes the inputs, applies it to the quantized kernel, then the bias
    and activation.
    """

    def __init__(self, *args, wbits=1, input_quantizer=None, **kwargs):
        self.wbits = value_sets.validate_bits(wbits, "wbits")
        super().__init__(*args, **kwargs)
        self.input_quantizer = quantizers.get(input_quantizer)

    def build(self, input_shape):
        if self.input_quantizer is not None and not self.input_quantizer.built:
            self.input_quantizer.build(input_shape)
        super().build(input_shape)

    def quantized_kernel(self):
        """The kernel used by `call`: DoReFa(kernel) in the value set, float32."""
        return dorefa_weight(self.kernel, self.wbits)

    def hard_kernel(self):
        """Same as `quantized_kernel()`: what is deployed (name shared with SLB layers)."""
        return self.quantized_kernel()

    def call(self, inputs):
        inputs = inputs if self.input_quantizer is None else ops.cast(
            self.input_quantizer(inputs), self.compute_dtype
        )
        kernel = ops.cast(self.quantized_kernel(), self.compute_dtype)
        return bias_and_activation(self, self.apply_kernel(inputs, kernel))

    def apply_kernel(self, inputs, kernel):
        """The layer's linear op (its family's `linear`), defined by each STE class."""
        raise NotImplementedError(f"{type(self).__name__} defines no apply_kernel.")

    def quantize(self, *args, **kwargs):
        raise ValueError("STE layers are already quantized to wbits.")

    def enable_lora(self, *args, **kwargs):
        raise ValueError("LoRA is not supported by STE layers.")

    def get_config(self):
        return {
            **super().get_config(),
            "wbits": self.wbits,
            "input_quantizer": quantizers.serialize(self.input_quantizer),
        }
