"""Activation quantizers: sign with a clipped straight-through gradient, DoReFa, PACT.

The quantization functions are pure (`ste_sign`, `dorefa_quantize`,
`pact_quantize`) and compute the quantized value exactly in the forward pass;
the straight-through estimator (STE) only defines their gradient, written with
`keras.ops.custom_gradient`, so they run on any Keras backend. The layers
(`ActivationQuantizer`, `PACTQuantizer`) wrap them so they serialize and can be
used as the `input_quantizer` of every SLB layer. `get()` turns None, a string
alias, an int, a config dict or a quantizer into a quantizer.

String aliases:

| alias        | quantizer                                 |
|--------------|-------------------------------------------|
| "ste_sign"   | ActivationQuantizer(1): sign, {-1, +1}    |
| "dorefaK"    | ActivationQuantizer(K), K = 2..16         |
| "pactK"      | PACTQuantizer(K), K = 1..16               |
| "identity"   | ActivationQuantizer(32): no quantization  |
"""

import re

import keras
from keras import ops

from slb_keras import checks
from slb_keras import value_sets

MAX_ACTIVATION_BITS = 16
FULL_PRECISION_BITS = 32


def validate_activation_bits(bits, name="bits", low=1):
    """Activation bit widths: 1..16 or 32 (no quantization).

    Example:

    >>> validate_activation_bits(32)
    32
    """
    return value_sets.validate_bits(
        bits, name, low=low, high=MAX_ACTIVATION_BITS, extra=(FULL_PRECISION_BITS,)
    )


def _upstream(args, upstream):
    """The upstream gradient, as `keras.ops.custom_gradient` passes it on any backend."""
    if upstream is None:
        (upstream,) = args
    return upstream


@ops.custom_gradient
def ste_sign(x):
    """sign(x) in {-1, +1} (sign(0) = +1); gradient 1 where |x| <= 1, else 0.

    Any Keras backend (`keras.ops.custom_gradient`).

    Example:

    >>> ste_sign(tf.constant([-0.5, 0.0, 2.0])).numpy().tolist()
    [-1.0, 1.0, 1.0]
    """
    one = ops.ones_like(x)

    def grad(*args, upstream=None):
        dy = _upstream(args, upstream)
        return dy * ops.cast(ops.less_equal(ops.abs(x), 1), dy.dtype)

    return ops.where(ops.greater_equal(x, 0), one, -one), grad


def dorefa_quantize(x, bits):
    """DoReFa k-bit activation: round(clip(x, 0, 1) * n) / n, n = 2**bits - 1.

    The gradient passes straight through where 0 <= x <= 1 and is 0 outside.

    Example:

    >>> dorefa_quantize(tf.constant([-1.0, 0.4, 0.6, 3.0]), 2).numpy() * 3
    array([0., 1., 2., 3.], dtype=float32)
    """
    n = float(2**bits - 1)

    @ops.custom_gradient
    def _quantize(x):
        def grad(*args, upstream=None):
            dy = _upstream(args, upstream)
            inside = ops.logical_and(ops.greater_equal(x, 0), ops.less_equal(x, 1))
            return dy * ops.cast(inside, dy.dtype)

        return ops.round(ops.clip(x, 0.0, 1.0) * n) / n, grad

    return _quantize(x)


def pact_quantize(x, alpha, bits):
    """PACT: clip x to [0, alpha] and round onto 2**bits levels.

    y = round(clip(x, 0, alpha) / s) * s with s = alpha / (2**bits - 1), computed
    exactly in the forward pass. Gradients (PACT's straight-through estimator):
    1 with respect to x inside [0, alpha], 0 outside; with respect to alpha, 1
    where x > alpha (the clipped inputs), 0 elsewhere.

    Example:

    >>> pact_quantize(tf.constant([0.5, 5.0]), tf.constant(2.0), 1).numpy().tolist()
    [0.0, 2.0]
    """
    n = float(2**bits - 1)
    alpha = ops.maximum(ops.cast(alpha, x.dtype), ops.cast(1e-3, x.dtype))  # no 0/0

    @ops.custom_gradient
    def _quantize(x, alpha):
        scale = alpha / n
        y = ops.round(ops.minimum(ops.maximum(x, ops.zeros_like(x)), alpha) / scale) * scale

        def grad(*args, upstream=None):
            dy = _upstream(args, upstream)
            inside = ops.logical_and(ops.greater_equal(x, 0), ops.less_equal(x, alpha))
            above = ops.cast(ops.greater(x, alpha), dy.dtype)
            return dy * ops.cast(inside, dy.dtype), ops.sum(dy * above)

        return y, grad

    return _quantize(x, alpha)


@keras.saving.register_keras_serializable(package="slb_keras")
class ActivationQuantizer(keras.layers.Layer):
    """Quantizes activations to `bits` bits with a straight-through gradient.

    bits=1: sign(x) in {-1, +1}, gradient 1 where |x| <= 1 (clipped STE).
    bits=2..16: DoReFa, round(clip(x, 0, 1) * (2**bits - 1)) / (2**bits - 1),
    gradient 1 inside the clip. bits=32: identity.

    Args:
        bits: activation bit width, 1 to 16, or 32 for no quantization.
        **kwargs: base Layer arguments (name, dtype, ...).

    Raises:
        ValueError: if `bits` is not allowed.

    Example:

    >>> q = ActivationQuantizer(2)
    >>> q(tf.constant([0.1, 0.5, 2.0])).numpy().tolist()  # doctest: +ELLIPSIS
    [0.0, 0.666..., 1.0]
    """

    def __init__(self, bits=1, **kwargs):
        super().__init__(**kwargs)
        self.bits = validate_activation_bits(bits)
        self.supports_masking = True

    def call(self, inputs):
        if self.bits == FULL_PRECISION_BITS:
            return inputs
        if self.bits == 1:
            return ste_sign(inputs)
        return dorefa_quantize(inputs, self.bits)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "bits": self.bits}


@keras.saving.register_keras_serializable(package="slb_keras")
class PACTQuantizer(keras.layers.Layer):
    """PACT activation quantizer: a trainable clip value alpha, then `bits` bits.

    y = round(clip(x, 0, alpha) * n / alpha) * alpha / n with n = 2**bits - 1.
    alpha is learned through the gradient of the clip (Choi et al., 2018).

    Args:
        bits: activation bit width, 1 to 16, or 32 (only clips, no rounding).
        alpha_initializer: initial clip value (a float > 0) or initializer.
        alpha_regularizer: optional regularizer on alpha (PACT uses L2).
        **kwargs: base Layer arguments.

    Example:

    >>> q = PACTQuantizer(2, alpha_initializer=3.0)
    >>> q(tf.constant([-1.0, 1.2, 9.0])).numpy().tolist()
    [0.0, 1.0, 3.0]
    """

    def __init__(self, bits=2, alpha_initializer=10.0, alpha_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.bits = validate_activation_bits(bits)
        if isinstance(alpha_initializer, (int, float)):
            if alpha_initializer <= 0:
                raise ValueError(
                    f"Invalid alpha_initializer={alpha_initializer!r}: expected a "
                    "positive clip value or an initializer."
                )
            alpha_initializer = keras.initializers.Constant(float(alpha_initializer))
        self.alpha_initializer = keras.initializers.get(alpha_initializer)
        self.alpha_regularizer = keras.regularizers.get(alpha_regularizer)

    def build(self, input_shape):
        self.alpha = self.add_weight(
            name="alpha",
            shape=(),
            initializer=self.alpha_initializer,
            regularizer=self.alpha_regularizer,
            trainable=True,
        )

    def call(self, inputs):
        if self.bits == FULL_PRECISION_BITS:
            alpha = keras.ops.cast(self.alpha, inputs.dtype)
            return keras.ops.relu(inputs) - keras.ops.relu(inputs - alpha)
        return pact_quantize(inputs, self.alpha, self.bits)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "bits": self.bits,
            "alpha_initializer": keras.initializers.serialize(self.alpha_initializer),
            "alpha_regularizer": keras.regularizers.serialize(self.alpha_regularizer),
        }


_ALIAS_HELP = '"ste_sign", "dorefa2".."dorefa16", "pact1".."pact16", "identity"'


def get(identifier):
    """Returns a quantizer layer for None, an alias, an int, a config or a layer.

    Args:
        identifier: None (no quantizer), a string alias (see the module
            docstring), an int (bits of `ActivationQuantizer`), a serialized
            config dict, or a Keras layer (returned as is).

    Returns:
        A Keras layer, or None.

    Raises:
        ValueError: for an unknown alias or an unsupported type.

    Example:

    >>> get("dorefa4").bits
    4
    """
    if identifier is None:
        return None
    if isinstance(identifier, keras.layers.Layer):
        return identifier
    if isinstance(identifier, dict):
        return keras.saving.deserialize_keras_object(identifier)
    if checks.is_int(identifier):
        return ActivationQuantizer(identifier)
    if isinstance(identifier, str):
        name = identifier.strip().lower()
        if name == "ste_sign":
            return ActivationQuantizer(1)
        if name in ("identity", "fp", "float"):
            return ActivationQuantizer(FULL_PRECISION_BITS)
        match = re.fullmatch(r"(dorefa|pact)(\d+)", name)
        if match:
            kind, bits = match.group(1), int(match.group(2))
            if kind == "dorefa" and 2 <= bits <= MAX_ACTIVATION_BITS:
                return ActivationQuantizer(bits)
            if kind == "pact" and 1 <= bits <= MAX_ACTIVATION_BITS:
                return PACTQuantizer(bits)
    raise ValueError(
        f"Invalid input_quantizer={identifier!r}: expected None, a quantizer layer, "
        f"an int bit width, or one of {_ALIAS_HELP}."
    )


def serialize(quantizer):
    """Config of a quantizer (None stays None), for `get_config`."""
    return None if quantizer is None else keras.saving.serialize_keras_object(quantizer)
