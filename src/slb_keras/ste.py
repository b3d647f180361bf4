"""The paper's baseline: latent float weights quantized with a straight-through estimator.

`STEConv2D` and `STEDense` are the Keras layers with one change: the kernel used in
`call` is the DoReFa weight quantization of the latent float kernel onto the SAME value
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

from slb_keras import layers as slb_keras_layers
from slb_keras import quantizers
from slb_keras import value_sets


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
    """Adds `wbits` and `input_quantizer` to a Keras conv/dense layer (put it first)."""

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
        return dorefa_weight(self._kernel, self.wbits)

    def hard_kernel(self):
        """Same as `quantized_kernel()`: what is deployed (name shared with SLB layers)."""
        return self.quantized_kernel()

    def _quantized_inputs(self, inputs):
        if self.input_quantizer is None:
            return inputs
        return ops.cast(self.input_quantizer(inputs), self.compute_dtype)

    def _finish(self, outputs):
        if self.bias is not None:
            outputs = ops.add(outputs, self.bias)  # channels last: broadcasts on the last axis
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

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


@keras.saving.register_keras_serializable(package="slb_keras")
class STEConv2D(STELayerMixin, keras.layers.Conv2D):
    """`keras.layers.Conv2D` with a DoReFa/STE-quantized kernel (channels last).

    Takes every argument of `keras.layers.Conv2D` plus:

    Args:
        wbits: weight bit width, 1 to 8: the kernel takes values in
            `slb_keras.value_set(wbits)`.
        input_quantizer: None, an alias ("ste_sign", "dorefa2", "pact4", ...),
            an int bit width or a quantizer layer, applied to the inputs.

    Example:

    >>> layer = STEConv2D(4, 3, wbits=1, input_quantizer="ste_sign")
    >>> layer(np.ones((1, 5, 5, 2), "float32")).shape
    TensorShape([1, 3, 3, 4])
    >>> sorted(set(layer.quantized_kernel().numpy().ravel().tolist()))
    [-1.0, 1.0]
    """

    def __init__(self, filters, kernel_size, wbits=1, input_quantizer=None, **kwargs):
        if kwargs.get("data_format") not in (None, "channels_last"):
            raise ValueError(
                f"Invalid data_format={kwargs['data_format']!r}: STEConv2D supports "
                "'channels_last' only."
            )
        super().__init__(
            filters=filters,
            kernel_size=kernel_size,
            wbits=wbits,
            input_quantizer=input_quantizer,
            **kwargs,
        )

    def call(self, inputs):
        kernel = ops.cast(self.quantized_kernel(), self.compute_dtype)
        return self._finish(self.convolution_op(self._quantized_inputs(inputs), kernel))


@keras.saving.register_keras_serializable(package="slb_keras")
class STEDense(STELayerMixin, keras.layers.Dense):
    """`keras.layers.Dense` with a DoReFa/STE-quantized kernel.

    Takes every argument of `keras.layers.Dense` plus `wbits` and
    `input_quantizer` (see `STEConv2D`).

    Example:

    >>> layer = STEDense(3, wbits=2)
    >>> layer(np.ones((2, 4), "float32")).shape
    TensorShape([2, 3])
    >>> bool(np.all(np.isin(layer.quantized_kernel().numpy(), slb_keras.value_set(2))))
    True
    """

    def __init__(self, units, wbits=1, input_quantizer=None, **kwargs):
        super().__init__(units=units, wbits=wbits, input_quantizer=input_quantizer, **kwargs)

    def call(self, inputs, training=None):
        kernel = ops.cast(self.quantized_kernel(), self.compute_dtype)
        return self._finish(ops.matmul(self._quantized_inputs(inputs), kernel))


def to_slb_model(model):
    """The same network with every STE layer replaced by the SLB layer of equal hard kernel.

    An SLB layer whose logits put the largest value on the STE layer's quantized kernel
    computes exactly what the STE layer computes at inference, so the result can go
    through the SLB tools (`slb_keras.export_tflite`: int8 kernels, exact). All other
    layers and weights are copied unchanged.

    Args:
        model: a functional or sequential Keras model holding `STEConv2D` / `STEDense`.

    Returns:
        A new model with `SLBConv2D` / `SLBDense` layers in place of the STE ones.

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), STEDense(3, wbits=2, input_quantizer="dorefa2")])
    >>> slb = to_slb_model(model)
    >>> type(slb.layers[0]).__name__
    'SLBDense'
    >>> x = np.random.rand(2, 4).astype("float32")
    >>> bool(np.all(slb(x, training=False).numpy() == model(x).numpy()))
    True
    """
    replacements = {STEConv2D: slb_keras_layers.SLBConv2D, STEDense: slb_keras_layers.SLBDense}

    def clone(layer):
        config = layer.get_config()
        for ste_class, slb_class in replacements.items():
            if type(layer) is ste_class:
                for unused in ("kernel_initializer", "kernel_constraint"):
                    config.pop(unused, None)
                return slb_class.from_config(config)
        return layer.__class__.from_config(config)

    converted = keras.models.clone_model(model, clone_function=clone)
    for old, new in zip(model.layers, converted.layers):
        if isinstance(old, STELayerMixin):
            new.assign_kernel(old.quantized_kernel())
            if old.bias is not None:
                new.bias.assign(old.bias)
            if old.input_quantizer is not None:
                for source, target in zip(old.input_quantizer.weights, new.input_quantizer.weights):
                    target.assign(source)
        else:
            new.set_weights(old.get_weights())
    return converted
