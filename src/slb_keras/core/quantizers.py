"""Activation quantizers: sign with a clipped straight-through gradient, DoReFa, PACT.

This module is each quantizer's one home. Its forward pass is written once, as
a pure function of keras.ops (`sign`, `dorefa`, `pact_levels`, `pact_clip`):
training wraps it in a straight-through gradient (`ste_sign`, `dorefa_quantize`,
`pact_quantize`, written with `keras.ops.custom_gradient`, so any Keras backend),
and the inference model and the TFLite export call it through the layer's
`inference_function()` with the trained constants frozen. The layers
(`ActivationQuantizer`, `PACTQuantizer`) serialize and serve as the
`input_quantizer` of every SLB layer. `alias(abits, kind)` is the one mapping from
activation bits to a quantizer name, `get()` the one from a name (or None, an
int, a config dict, a layer) to a quantizer; conversion and the models use both.
Adding a quantizer (LSQ, say) is a layer here with `call`, `inference_function`
and an alias in `get`.

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
import numpy as np
from keras import ops

from slb_keras import checks
from slb_keras.core import value_sets

MAX_ACTIVATION_BITS = 16
FULL_PRECISION_BITS = 32
KINDS = ("dorefa", "pact")  # the multi-bit activation quantizers; 1 bit is always the sign


def validate_activation_bits(bits, name="bits", low=1):
    """Activation bit widths: 1..16 or 32 (no quantization).

    Example:

    >>> validate_activation_bits(32)
    32
    """
    return value_sets.validate_bits(
        bits, name, low=low, high=MAX_ACTIVATION_BITS, extra=(FULL_PRECISION_BITS,)
    )


def alias(abits, kind="dorefa"):
    """The `get` alias for `abits` activation bits: the one abits-to-quantizer mapping.

    1 bit is the sign ("ste_sign") whatever `kind`; 2..16 bits are `kind` ("dorefa"
    or "pact") at that width; 32 is no quantization (None).

    Raises:
        ValueError: for bits outside 1..16 and 32, or an unknown kind.

    Example:

    >>> alias(1), alias(2), alias(4, "pact"), alias(32)
    ('ste_sign', 'dorefa2', 'pact4', None)
    """
    abits = validate_activation_bits(abits, "abits")
    if kind not in KINDS:
        raise ValueError(f"Invalid activation_quantizer={kind!r}: expected one of {', '.join(KINDS)}.")
    if abits == FULL_PRECISION_BITS:
        return None
    return "ste_sign" if abits == 1 else f"{kind}{abits}"


# -- the forward passes, written once --------------------------------------------


def sign(x):
    """The sign's forward pass: +1 where x >= 0, else -1, in x's dtype.

    Example:

    >>> sign(tf.constant([-0.5, 0.0, 2.0])).numpy().tolist()
    [-1.0, 1.0, 1.0]
    """
    return ops.cast(ops.where(ops.greater_equal(x, 0.0), 1.0, -1.0), x.dtype)


def dorefa(x, bits):
    """DoReFa's forward pass: round(clip(x, 0, 1) * n) / n with n = 2**bits - 1.

    Example:

    >>> (dorefa(tf.constant([-1.0, 0.4, 0.6, 3.0]), 2) * 3).numpy().tolist()
    [0.0, 1.0, 2.0, 3.0]
    """
    n = float(2**bits - 1)
    return ops.divide(ops.round(ops.multiply(ops.clip(x, 0.0, 1.0), n)), n)


def pact_levels(x, alpha, scale):
    """PACT's forward pass: round(clip(x, 0, alpha) / scale) * scale.

    `alpha` (the clip, >= 1e-3) and `scale` (alpha / (2**bits - 1)) are tensors in
    training and float32 constants in the inference model: the same values.

    Example:

    >>> pact_levels(tf.constant([0.5, 5.0]), 2.0, 2.0).numpy().tolist()
    [0.0, 2.0]
    """
    return ops.multiply(ops.round(ops.divide(ops.minimum(ops.relu(x), alpha), scale)), scale)


def pact_clip(x, alpha):
    """PACT at 32 bits: clip(x, 0, alpha) as relu(x) - relu(x - alpha) (no rounding).

    Example:

    >>> pact_clip(tf.constant([-1.0, 1.0, 5.0]), 2.0).numpy().tolist()
    [0.0, 1.0, 2.0]
    """
    return ops.subtract(ops.relu(x), ops.relu(ops.subtract(x, alpha)))


# -- with straight-through gradients, for training --------------------------------


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

    def grad(*args, upstream=None):
        dy = _upstream(args, upstream)
        return dy * ops.cast(ops.less_equal(ops.abs(x), 1), dy.dtype)

    return sign(x), grad


def dorefa_quantize(x, bits):
    """DoReFa k-bit activation: round(clip(x, 0, 1) * n) / n, n = 2**bits - 1.

    The gradient passes straight through where 0 <= x <= 1 and is 0 outside.

    Example:

    >>> dorefa_quantize(tf.constant([-1.0, 0.4, 0.6, 3.0]), 2).numpy() * 3
    array([0., 1., 2., 3.], dtype=float32)
    """

    @ops.custom_gradient
    def _quantize(x):
        def grad(*args, upstream=None):
            dy = _upstream(args, upstream)
            inside = ops.logical_and(ops.greater_equal(x, 0), ops.less_equal(x, 1))
            return dy * ops.cast(inside, dy.dtype)

        return dorefa(x, bits), grad

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
        y = pact_levels(x, alpha, alpha / n)

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

    def inference_function(self):
        """x -> the quantized x from keras.ops only: `call`'s forward pass, no gradient.

        Example:

        >>> ActivationQuantizer(1).inference_function()(tf.constant([-2.0, 3.0])).numpy().tolist()
        [-1.0, 1.0]
        """
        if self.bits == FULL_PRECISION_BITS:
            return lambda x: x
        if self.bits == 1:
            return sign
        bits = self.bits
        return lambda x: dorefa(x, bits)

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
            return pact_clip(inputs, ops.cast(self.alpha, inputs.dtype))
        return pact_quantize(inputs, self.alpha, self.bits)

    def inference_function(self):
        """x -> the quantized x from keras.ops only, the trained alpha frozen as a constant.

        Example:

        >>> q = PACTQuantizer(2, alpha_initializer=3.0)
        >>> q.build((None, 3))
        >>> q.inference_function()(tf.constant([-1.0, 1.2, 9.0])).numpy().tolist()
        [0.0, 1.0, 3.0]
        """
        alpha = np.maximum(np.float32(ops.convert_to_numpy(self.alpha)), np.float32(1e-3))
        if self.bits == FULL_PRECISION_BITS:
            return lambda x: pact_clip(x, alpha)
        scale = alpha / np.float32(2**self.bits - 1)
        return lambda x: pact_levels(x, alpha, scale)

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
