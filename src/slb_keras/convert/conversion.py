"""Conversion into SLB models: `quantize_model` (float models), `to_slb_model` (STE ones).

`quantize_model` clones a Sequential or Functional model (nested ones too) with
`keras.models.clone_model`, replacing

- every stock layer of a layer family with an SLB class
  (`slb_keras.layers.FAMILIES`: `Conv2D`, `DepthwiseConv2D`, `Conv1D`, `Conv2DTranspose`, `Dense`)
  by that class (`SLBConv2D`, ...: same configuration, plus `wbits` and an
  `input_quantizer` for the activation bits),
- `BatchNormalization` by `StateBatchNormalization`,

and copies every other weight of the float model into the clone.

With `init="float"` the kernel logits start from the trained float kernel
and the scale it loses is folded into the following batch norm
(`slb_keras.convert.float_init`, which explains how).

Layers with weights that have no SLB version (LSTM, GRU, Embedding,
MultiHeadAttention, ...) stay float; `quantize_model` names them in a
`UserWarning` unless `layer_config` keeps them float on purpose, and
`slb_keras.summary(model)` lists the bits of every layer. Which layer becomes
what is decided in `slb_keras.convert.conversion_plan`; the model's graph is walked
with `slb_keras.convert.graph`.

Rounding shifts the activation statistics layer after layer (with 1-bit
weights the hard network straight out of `quantize_model` can be near chance
level), so calibrate the hard statistics on a few batches before evaluating or
training: `slb_keras.calibrate_bn(model, dataset)` (no weight changes). Train
with a temperature schedule that starts at the layers' temperature, 1.0, e.g.
`TemperatureScheduler(start=1.0, end=10.0)`. Starting at 0.01 makes the soft
kernel of the float init nearly a scaled copy of the float kernel, far from
the hard one: on digits the hard accuracy then drops for a few epochs before
it recovers.

`init="random"` uses the SLB layers' random logits (the paper's setting, with
its 0.01 -> 10 schedule); all other weights are still copied, and the batch
norms are left uncalibrated.
"""

import warnings

import keras

from slb_keras import checks
from slb_keras.convert import conversion_plan
from slb_keras.convert import float_init
from slb_keras.convert import graph
from slb_keras import layers as slb_layers_lib
from slb_keras.core.normalization import StateBatchNormalization
from slb_keras.core.ste import STELayerMixin

INITS = ("float", "random")


def quantize_model(
    model, wbits=1, abits=32, skip_first_last=True, layer_config=None, init="float"
):
    """Clones a float Keras model into an SLB model with low-bit weights.

    Conv2D, DepthwiseConv2D, Conv1D, Conv2DTranspose and Dense layers (every layer
    family with an SLB class, `slb_keras.layers.FAMILIES`) become SLB layers with
    `wbits`-bit weights whose inputs are quantized to `abits` bits;
    BatchNormalization becomes StateBatchNormalization; everything else is
    cloned as it is. All weights the clone keeps (biases, batch norm, float
    layers) are copied from `model`, which is left unchanged.

    Args:
        model: a built `keras.Sequential` or Functional `keras.Model`; nested
            Sequential/Functional models are converted too. Subclassed models
            cannot be cloned: use the SLB layers directly inside them.
        wbits: weight bits of the converted layers, 1 to 8, or candidate widths
            (a tuple of 1, 2, 4, 8, e.g. (1, 2, 4)) for a mixed-precision search:
            see `BitBudget` and `fix_bit_widths`.
        abits: activation bits at the input of each converted layer: 1
            (sign, "ste_sign"), 2..16 (DoReFa on [0, 1], "dorefaK"), 32 (no
            quantizer); or an `input_quantizer` alias such as "pact4", or a
            quantizer layer (copied for each layer).
        skip_first_last: keep the first and the last layer with a weight
            kernel (in the order of `model.layers`, nested models included)
            in full precision, as the paper does.
        layer_config: optional dict mapping a layer name, or a layer class
            name such as "Dense", to None (keep that layer as it is: float,
            or plain BatchNormalization) or to a dict with "wbits" and/or
            "abits" (the others default to the arguments above). A name
            entry wins over `skip_first_last`, which wins over a class entry.
            SLB layers already in `model` are copied as they are.
        init: "float" (logits from the trained float kernels, see the module
            docstring) or "random" (the SLB layers' random logits).

    Returns:
        A new, built model of the same kind (compiled like `model` if it was).

    Warns:
        UserWarning: layers with a weight matrix (two or more axes longer than
            1) that have no SLB version and stay float (LSTM, GRU, Embedding,
            MultiHeadAttention, TimeDistributed, ...), named with their
            parameter counts, unless `layer_config` maps them (by name or
            class name) to None. Also: 1-bit input quantizers right after a
            ReLU (every input would be +1).

    Raises:
        ValueError: `model` is not a built Sequential/Functional Keras model,
            an argument is invalid, `layer_config` names no layer of the
            model, or layers to quantize cannot be converted (listed, with
            the `layer_config` that keeps them float: SeparableConv2D,
            Conv3D, transposed convolutions, EinsumDense, subclasses of the
            converted layers, layers with a kernel constraint, LoRA or Keras
            quantization).

    Example:

    >>> model = keras.Sequential([
    ...     keras.Input((8, 8, 3)),
    ...     keras.layers.Conv2D(8, 3, use_bias=False),
    ...     keras.layers.BatchNormalization(),
    ...     keras.layers.ReLU(),
    ...     keras.layers.Conv2D(8, 3, use_bias=False),
    ...     keras.layers.BatchNormalization(),
    ...     keras.layers.ReLU(),
    ...     keras.layers.GlobalAveragePooling2D(),
    ...     keras.layers.Dense(10),
    ... ])
    >>> slb = slb_keras.quantize_model(model, wbits=2, abits=4)
    >>> [type(layer).__name__ for layer in slb.layers[:5]]
    ['Conv2D', 'StateBatchNormalization', 'ReLU', 'SLBConv2D', 'StateBatchNormalization']
    >>> slb.layers[3].wbits, slb.layers[3].input_quantizer.bits
    (2, 4)

    A layer with weights but no SLB version stays float, with a warning that
    names it; `layer_config` keeps it float on purpose (no warning):

    >>> text = keras.Sequential([
    ...     keras.Input((12,), dtype="int32"),
    ...     keras.layers.Embedding(100, 16, name="embed"),
    ...     keras.layers.LSTM(16, name="lstm"),
    ...     keras.layers.Dense(16, name="hidden"),
    ...     keras.layers.Dense(2, name="out"),
    ... ])
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     slb = slb_keras.quantize_model(text, wbits=2, skip_first_last=False)
    >>> print(caught[0].message)  # doctest: +NORMALIZE_WHITESPACE
    quantize_model keeps these layers float (they have weights but no SLB
    version): 'embed' (Embedding, 1,600 parameters), 'lstm' (LSTM, 2,112
    parameters). They stay full precision in the model and in its exports. To
    keep them float without this warning, say so in layer_config={'embed':
    None, 'lstm': None}; slb_keras.summary(model) lists every layer's bits.
    >>> [(row.name, row.wbits) for row in slb_keras.summary(slb, print_fn=None).layers]
    [('embed', 32), ('lstm', 32), ('hidden', 2), ('out', 2)]
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("error", UserWarning)  # no warning
    ...     slb = slb_keras.quantize_model(
    ...         text, wbits=2, layer_config={"embed": None, "lstm": None})
    """
    checks.check_graph_model(model, "quantized")
    default = (
        conversion_plan.check_wbits(wbits, "wbits"),
        conversion_plan.check_abits(abits, "abits"),
    )
    if not isinstance(skip_first_last, bool):
        raise ValueError(
            f"Invalid skip_first_last={skip_first_last!r}: expected True or False."
        )
    if init not in INITS:
        raise ValueError(f"Invalid init={init!r}: expected one of {INITS}.")
    leaves = graph.leaf_layers(model)
    checked = conversion_plan.check_layer_config(layer_config, leaves)
    plan, kept_float = conversion_plan.plan(leaves, default, skip_first_last, checked)
    pairs = []

    def clone_function(layer):
        action = plan.get(id(layer))
        config = layer.get_config()
        if action == "sbn":
            new = StateBatchNormalization.from_config(config)
        elif action is not None:
            layer_wbits, layer_abits = action
            new = slb_layers_lib.convertible(layer).slb_class.from_config(
                {
                    **config,
                    "wbits": layer_wbits,
                    "input_quantizer": conversion_plan.input_quantizer(layer_abits),
                }
            )
        else:
            new = layer.__class__.from_config(config)
        pairs.append((layer, new))
        return new

    clone = keras.models.clone_model(model, clone_function=clone_function, recursive=True)
    consumers, producers = graph.neighbours(model)
    conversion_plan.warn_sign_after_relu(plan, leaves, producers)
    notice = conversion_plan.float_notice(kept_float)
    if notice is not None:
        warnings.warn(notice, stacklevel=2)
    new_of = {id(old): new for old, new in pairs}
    for old, new in pairs:
        if isinstance(new, slb_layers_lib.SLBLayerMixin) and not isinstance(
            old, slb_layers_lib.SLBLayerMixin
        ):
            continue  # done below, once the batch norms hold their float values
        _copy_weights(old, new, init)
    for old, new in pairs:
        if isinstance(new, slb_layers_lib.SLBLayerMixin) and not isinstance(
            old, slb_layers_lib.SLBLayerMixin
        ):
            follower = graph.sole(consumers.get(id(old)))
            fold = follower is not None and _can_fold(old, follower)
            float_init.init_slb_layer(old, new, init, new_of[id(follower)] if fold else None)
    return clone


def to_slb_model(model):
    """The same network with every STE layer replaced by the SLB layer of equal hard kernel.

    An SLB layer whose logits put the largest value on the STE layer's quantized kernel
    computes exactly what the STE layer computes at inference, so the result can go
    through the SLB tools (`slb_keras.export_tflite`: int8 kernels, exact). All other
    layers and weights are copied unchanged.

    Args:
        model: a functional or sequential Keras model holding STE layers (`STEConv2D`, `STEDense`).

    Returns:
        A new model with the SLB layer of each STE layer's family in its place.

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), slb_keras.STEDense(3, wbits=2, input_quantizer="dorefa2")])
    >>> slb = to_slb_model(model)
    >>> type(slb.layers[0]).__name__
    'SLBDense'
    >>> x = np.random.rand(2, 4).astype("float32")
    >>> bool(np.all(slb(x, training=False).numpy() == model(x).numpy()))
    True
    """
    def clone(layer):
        config = layer.get_config()
        family = slb_layers_lib.family_of(layer)
        if family is not None and type(layer) is family.ste_class:
            for unused in ("kernel_initializer", "kernel_constraint"):
                config.pop(unused, None)
            return family.slb_class.from_config(config)
        return layer.__class__.from_config(config)

    converted = keras.models.clone_model(model, clone_function=clone)
    for old, new in zip(model.layers, converted.layers):
        if isinstance(old, STELayerMixin):
            new.assign_kernel(old.quantized_kernel())
            copy_bias_and_input_quantizer(old, new)
        else:
            new.set_weights(old.get_weights())
    return converted


# -- weights -----------------------------------------------------------------------


def copy_bias_and_input_quantizer(old, new):
    """Copies the bias and the input quantizer's variables (PACT's alpha) of one kernel layer
    into another of the same configuration (the kernel is the caller's)."""
    if old.bias is not None:
        new.bias.assign(old.bias)
    if old.input_quantizer is not None:
        for source, target in zip(old.input_quantizer.weights, new.input_quantizer.weights):
            target.assign(source)


def _can_fold(layer, follower):
    """Whether the channel scale of `layer` can move into `follower` (a BN)."""
    if not isinstance(follower, keras.layers.BatchNormalization):
        return False
    activation = conversion_plan.activation_name(layer)
    if activation not in ("linear", "relu") or (activation == "relu" and layer.use_bias):
        return False  # relu(y / r) = relu(y) / r only without a bias
    try:
        rank = len(layer.output.shape)
    except (AttributeError, ValueError):  # a layer used more than once
        return False
    channels_first = getattr(layer, "data_format", "channels_last") == "channels_first"
    return follower.axis % rank == (1 if channels_first else rank - 1)


def _copy_weights(old, new, init):
    if type(old) is keras.layers.BatchNormalization and isinstance(
        new, StateBatchNormalization
    ):
        # Soft statistics = float ones; with init="float" the hard network starts
        # as the float one, so its statistics are the float ones too (refined for
        # the layers after a quantized one by float_init.init_slb_layer).
        for name in ("gamma", "beta", "moving_mean", "moving_variance"):
            if getattr(old, name, None) is not None:
                getattr(new, name).assign(float_init.to_numpy(getattr(old, name)))
        # NumPy copies: on JAX a variable assigned another one shares its buffer.
        new.hard_moving_mean.assign(float_init.to_numpy(old.moving_mean))
        new.hard_moving_variance.assign(float_init.to_numpy(old.moving_variance))
        new.calibrated.assign(1.0 if init == "float" else 0.0)
        return
    weights = old.get_weights()
    if weights:
        new.set_weights(weights)
