"""The layers each training method puts into the same network: SLB, STE or full precision.

A model file describes the architecture once; `Method` picks the layer classes:

| method | quantized conv / dense        | BN after a quantized layer       | input of a quantized layer |
|--------|-------------------------------|----------------------------------|----------------------------|
| "slb"  | SLBConv2D / SLBDense (wbits)  | StateBatchNormalization (sbn) or BatchNormalization | quantizer(abits) |
| "ste"  | STEConv2D / STEDense (wbits)  | BatchNormalization               | quantizer(abits) |
| "fp"   | Conv2D / Dense                | BatchNormalization               | none (32 bits)   |

The first conv and the last dense layer are always full precision (`quantized=False`).

Activations (as in the paper): the input of a quantized layer is quantized by its
`input_quantizer`: abits = 1 is the sign with a clipped STE ({-1, +1}); abits = 2..8 is
DoReFa on [0, 1] (or PACT, a learned clip starting at `PACT_ALPHA_INIT`, with
`activation_quantizer="pact"`); abits = 32 is no quantization. **Decision**: a ReLU precedes the quantizer except for 1-bit
activations, where sign(ReLU(x)) would be +1 everywhere: there the sign is the
nonlinearity (as in Bi-Real/IR-Net binary networks). Tensors feeding full-precision
layers always pass a ReLU.
"""

import dataclasses
import math

import keras

import slb_keras
from slb_keras.core import ste
from slb_keras.core import initializers
from slb_keras.core import mixed_precision
from slb_keras.core import quantizers

METHODS = ("slb", "ste", "fp")
ACTIVATION_QUANTIZERS = quantizers.KINDS
LOGITS_INITS = ("random", "quadratic")
BN_MOMENTUM = 0.9  # PyTorch's 0.1 update rate, as in the authors' code
BN_EPSILON = 1e-5
# PACT's learned clip starts at 3 (the PACT paper's 10 suits unnormalized inputs): the
# quantized inputs follow BN + ReLU, so 3 keeps all but 0.13% of a unit normal unclipped
# and spends the 2**abits levels on the range the activations occupy.
PACT_ALPHA_INIT = 3.0
PRELU_ALPHA_INIT = 0.25  # PyTorch's nn.PReLU default, the authors' framework


def validate_method(method):
    if method not in METHODS:
        raise ValueError(f"Invalid method={method!r}: expected one of {', '.join(METHODS)}.")
    return method


def validate_abits(abits):
    return quantizers.validate_activation_bits(abits, "abits")


@dataclasses.dataclass(frozen=True)
class Method:
    """Validated quantization settings and the layer factory of one network.

    Args:
        method: "slb" (searched low-bit weights), "ste" (DoReFa weights with a
            straight-through estimator) or "fp" (full precision; `wbits` and
            `abits` are ignored).
        wbits: weight bits of the quantized layers, 1 to 8.
        abits: activation bits at the input of the quantized layers: 1 to 16, or 32.
        activation_quantizer: "dorefa" or "pact" (for abits 2..8; 1 bit is always the sign).
        sbn: for "slb", use `slb_keras.StateBatchNormalization` (separate statistics
            for soft and hard weights) after the quantized layers.
        sync_bn: batch statistics over all replicas (`synchronized=True`), so a
            distributed step computes what one device computes on the global batch.
        ste_clip: for "ste", clip the latent float weights to [-1, 1] after every
            step (`slb_keras.ClipWeights`, binary STE practice).
        logits_init: for "slb", "random" (random normal logits, the authors') or
            "quadratic" (`slb_keras.core.initializers.QuadraticLogits`).

    Example:

    >>> m = Method("slb", wbits=2, abits=2)
    >>> type(m.conv2d(8, 3, name="c")).__name__, m.quantizer_alias
    ('SLBConv2D', 'dorefa2')
    """

    method: str = "slb"
    wbits: int = 1
    abits: int = 1
    activation_quantizer: str = "dorefa"
    sbn: bool = True
    sync_bn: bool = False
    ste_clip: bool = False
    logits_init: str = "random"

    def __post_init__(self):
        validate_method(self.method)
        object.__setattr__(self, "wbits", mixed_precision.validate_wbits(self.wbits, "wbits"))
        if self.method != "slb" and mixed_precision.is_searched(self.wbits):
            raise ValueError(
                f"Invalid wbits={self.wbits!r} for method={self.method!r}: candidate widths "
                "(a bit-width search) are for method='slb'; expected one width."
            )
        object.__setattr__(self, "abits", validate_abits(self.abits))
        if self.activation_quantizer not in ACTIVATION_QUANTIZERS:
            raise ValueError(
                f"Invalid activation_quantizer={self.activation_quantizer!r}: expected one "
                f"of {', '.join(ACTIVATION_QUANTIZERS)}."
            )
        validate_choice("logits_init", self.logits_init, LOGITS_INITS)
        for name in ("sbn", "sync_bn", "ste_clip"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(
                    f"Invalid {name}={getattr(self, name)!r}: expected True or False."
                )

    @property
    def quantized(self):
        """Whether the inner layers are quantized (False for "fp")."""
        return self.method != "fp"

    @property
    def quantizer_alias(self):
        """`slb_keras.core.quantizers.get` alias for the inputs of quantized layers, or None."""
        return quantizers.alias(self.abits, self.activation_quantizer) if self.quantized else None

    def input_quantizer(self):
        """A new quantizer layer for the inputs of a quantized layer (None: no quantization)."""
        alias = self.quantizer_alias
        if alias is not None and alias.startswith("pact"):
            return quantizers.PACTQuantizer(self.abits, alpha_initializer=PACT_ALPHA_INIT)
        return quantizers.get(alias)

    def conv2d(self, filters, kernel_size, *, name, strides=1, quantized=True):
        """A bias-free 'same' conv; quantized per the method unless `quantized=False`."""
        kwargs = dict(
            filters=filters,
            kernel_size=kernel_size,
            strides=strides,
            padding="same",
            use_bias=False,
            name=name,
        )
        if not (quantized and self.quantized):
            return keras.layers.Conv2D(kernel_initializer="he_normal", **kwargs)
        common = dict(wbits=self.wbits, input_quantizer=self.input_quantizer(), **kwargs)
        if self.method == "slb":
            return slb_keras.SLBConv2D(logits_initializer=self._logits_initializer(), **common)
        return slb_keras.STEConv2D(kernel_initializer="he_normal", kernel_constraint=self._ste_constraint(), **common)

    def dense(self, units, *, name, quantized=True, **kwargs):
        """A dense layer; quantized per the method unless `quantized=False`."""
        if not (quantized and self.quantized):
            return keras.layers.Dense(units, name=name, **kwargs)
        common = dict(wbits=self.wbits, input_quantizer=self.input_quantizer(), name=name)
        if self.method == "slb":
            return slb_keras.SLBDense(units, logits_initializer=self._logits_initializer(), **common, **kwargs)
        return slb_keras.STEDense(units, kernel_constraint=self._ste_constraint(), **common, **kwargs)

    def _logits_initializer(self):
        return initializers.QuadraticLogits() if self.logits_init == "quadratic" else "random_normal"

    def _ste_constraint(self):
        return ste.ClipWeights(1.0) if self.ste_clip else None

    def batch_norm(self, *, name, after_quantized=True):
        """BN; state BN after an SLB layer when `sbn` (soft and hard statistics)."""
        kwargs = dict(
            momentum=BN_MOMENTUM, epsilon=BN_EPSILON, synchronized=self.sync_bn, name=name
        )
        if after_quantized and self.method == "slb" and self.sbn:
            return slb_keras.StateBatchNormalization(**kwargs)
        return keras.layers.BatchNormalization(**kwargs)

    def prelu(self, x, *, name):
        """Per-channel PReLU with slope 0.25 at start (PyTorch's `nn.PReLU(channels)`)."""
        return keras.layers.PReLU(
            alpha_initializer=keras.initializers.Constant(PRELU_ALPHA_INIT),
            shared_axes=[1, 2],
            name=name,
        )(x)

    def activation(self, x, *, name, feeds_quantized=True):
        """ReLU, except before a 1-bit quantized input (the sign is the nonlinearity)."""
        if feeds_quantized and self.quantizer_alias == "ste_sign":
            return x
        return keras.layers.ReLU(name=name)(x)


def validate_choice(name, value, allowed):
    """`value` if it is one of `allowed`, else a ValueError naming `name`."""
    if value not in allowed:
        raise ValueError(f"Invalid {name}={value!r}: expected one of {', '.join(allowed)}.")
    return value


def validate_input_shape(input_shape, min_size):
    """(height, width, channels) with both sides >= `min_size`, as a tuple of ints."""
    try:
        shape = tuple(int(d) for d in input_shape)
        ok = len(shape) == 3 and all(d > 0 for d in shape) and min(shape[:2]) >= min_size
        ok = ok and all(int(d) == d for d in input_shape)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(
            f"Invalid input_shape={input_shape!r}: expected (height, width, channels) with "
            f"height and width >= {min_size}."
        )
    return shape


INPUT_NORM = "input_norm"  # the name of a model's input normalization layer


def normalizes_input(model):
    """Whether `model` has the input normalization layer of `model_input` (built since then).

    Example:

    >>> inputs, x = model_input((8, 8, 1), ([0.5], [0.25]))
    >>> normalizes_input(keras.Model(inputs, x)), normalizes_input(keras.Model(inputs, inputs))
    (True, False)
    """
    return any(layer.name == INPUT_NORM for layer in model.layers)


def model_input(input_shape, input_normalization):
    """The model's `keras.Input` and the tensor the first conv takes.

    With `input_normalization=(mean, std)` (per channel, or one value for all, in the
    units of the images fed to the model) the input goes through a float32
    `keras.layers.Normalization` named "input_norm", saved and exported with the model,
    so the model takes images as the data source gives them; None: the input as it is.

    Raises:
        ValueError: `input_normalization` is not a pair of finite means and positive
            standard deviations, one per channel (or one for all).

    Example:

    >>> import numpy as np
    >>> inputs, x = model_input((8, 8, 1), ([127.5], [64.0]))
    >>> float(keras.Model(inputs, x)(np.full((1, 8, 8, 1), 255.0, "float32"))[0, 0, 0, 0])
    1.9921875
    """
    inputs = keras.Input(input_shape, name="image")
    if input_normalization is None:
        return inputs, inputs
    mean, std = _validate_normalization(input_normalization, input_shape[-1])
    normalize = keras.layers.Normalization(
        mean=mean, variance=[s * s for s in std], name=INPUT_NORM, dtype="float32"
    )
    return inputs, normalize(inputs)


def _validate_normalization(input_normalization, channels):
    """(mean, std) as lists of floats of length `channels`, or ValueError naming the argument."""
    try:
        mean, std = ([float(v) for v in values] for values in input_normalization)
    except (TypeError, ValueError):
        mean = std = None
    if mean is None or len(mean) != len(std) or len(mean) not in (1, channels):
        raise ValueError(
            f"Invalid input_normalization={input_normalization!r}: expected (mean, std), "
            f"each with one value per channel ({channels}) or one value."
        )
    if not all(math.isfinite(m) for m in mean) or not all(0 < s < math.inf for s in std):
        raise ValueError(
            f"Invalid input_normalization={input_normalization!r}: the means must be finite "
            "and the standard deviations finite and > 0."
        )
    return mean * (channels // len(mean)), std * (channels // len(std))


def validate_num_classes(num_classes):
    """An int >= 2."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"Invalid num_classes={num_classes!r}: expected an integer >= 2.")
    return num_classes


def scaled_filters(filters, width_multiplier):
    """max(1, round(filters * width_multiplier)); validates the multiplier."""
    if isinstance(width_multiplier, bool) or not (
        isinstance(width_multiplier, (int, float)) and 0 < width_multiplier <= 16
    ):
        raise ValueError(
            f"Invalid width_multiplier={width_multiplier!r}: expected a number in (0, 16]."
        )
    return max(1, int(round(filters * width_multiplier)))
