"""Conversion of a float Keras model into an SLB model: `quantize_model`.

`quantize_model` clones a Sequential or Functional model (nested ones too) with
`keras.models.clone_model`, replacing

- `Conv2D`, `DepthwiseConv2D`, `Conv1D`, `Dense` by `SLBConv2D`,
  `SLBDepthwiseConv2D`, `SLBConv1D`, `SLBDense` (same configuration, plus
  `wbits` and an `input_quantizer` for the activation bits),
- `BatchNormalization` by `StateBatchNormalization`,

and copies every other weight of the float model into the clone.

With `init="float"` the kernel logits start from the trained float kernel
and the scale it loses is folded into the following batch norm
(`slb_keras.float_init`, which explains how).
does.

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
from slb_keras import float_init
from slb_keras import layers as slb_layers_lib
from slb_keras import quantizers
from slb_keras import value_sets
from slb_keras.normalization import StateBatchNormalization

INITS = ("float", "random")

# The Keras layers quantize_model converts, and their SLB versions.
CONVERTIBLE = {
    keras.layers.Conv1D: slb_layers_lib.SLBConv1D,
    keras.layers.Conv2D: slb_layers_lib.SLBConv2D,
    keras.layers.DepthwiseConv2D: slb_layers_lib.SLBDepthwiseConv2D,
    keras.layers.Dense: slb_layers_lib.SLBDense,
}

# Layers with a weight kernel (checks.KERNEL_LAYERS) are the candidates for
# quantization; those that are not exactly one of CONVERTIBLE cannot be converted.

_CONFIG_KEYS = ("wbits", "abits")


def quantize_model(
    model, wbits=1, abits=32, skip_first_last=True, layer_config=None, init="float"
):
    """Clones a float Keras model into an SLB model with low-bit weights.

    Conv2D, DepthwiseConv2D, Conv1D and Dense layers become SLB layers with
    `wbits`-bit weights whose inputs are quantized to `abits` bits;
    BatchNormalization becomes StateBatchNormalization; everything else is
    cloned as it is. All weights the clone keeps (biases, batch norm, float
    layers) are copied from `model`, which is left unchanged.

    Args:
        model: a built `keras.Sequential` or Functional `keras.Model`; nested
            Sequential/Functional models are converted too. Subclassed models
            cannot be cloned: use the SLB layers directly inside them.
        wbits: weight bits of the converted layers, 1 to 8.
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
    """
    checks.check_graph_model(model, "quantized")
    default = (
        value_sets.validate_bits(wbits, "wbits"),
        _check_abits(abits, "abits"),
    )
    if not isinstance(skip_first_last, bool):
        raise ValueError(
            f"Invalid skip_first_last={skip_first_last!r}: expected True or False."
        )
    if init not in INITS:
        raise ValueError(f"Invalid init={init!r}: expected one of {INITS}.")
    leaves = _leaf_layers(model)
    plan = _plan(leaves, default, skip_first_last, _check_layer_config(layer_config, leaves))
    pairs = []

    def clone_function(layer):
        action = plan.get(id(layer))
        config = layer.get_config()
        if action == "sbn":
            new = StateBatchNormalization.from_config(config)
        elif action is not None:
            layer_wbits, layer_abits = action
            new = CONVERTIBLE[type(layer)].from_config(
                {
                    **config,
                    "wbits": layer_wbits,
                    "input_quantizer": _input_quantizer(layer_abits),
                }
            )
        else:
            new = layer.__class__.from_config(config)
        pairs.append((layer, new))
        return new

    clone = keras.models.clone_model(model, clone_function=clone_function, recursive=True)
    consumers, producers = _graph(model)
    _warn_sign_after_relu(plan, leaves, producers)
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
            follower = _sole(consumers.get(id(old)))
            fold = follower is not None and _can_fold(old, follower)
            float_init.init_slb_layer(old, new, init, new_of[id(follower)] if fold else None)
    return clone


# -- checks --------------------------------------------------------------------


def _check_abits(abits, name):
    """Returns abits as an int (1..16 or 32), an alias string or a quantizer layer."""
    if isinstance(abits, (str, keras.layers.Layer)):
        try:
            quantizers.get(abits)
        except ValueError as error:
            raise ValueError(
                f"Invalid {name}={abits!r}: expected an int (1 to 16, or 32 for "
                "no quantization), an input_quantizer alias or a quantizer layer."
            ) from error
        return abits
    return quantizers.validate_activation_bits(abits, name)


def _input_quantizer(abits):
    """A new quantizer layer for `abits` (each SLB layer gets its own)."""
    if isinstance(abits, keras.layers.Layer):
        return keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(abits)
        )
    if isinstance(abits, str):
        return quantizers.get(abits)
    if abits == quantizers.FULL_PRECISION_BITS:
        return None
    return quantizers.ActivationQuantizer(abits)


def _check_layer_config(layer_config, leaves):
    """Validated layer_config: {key: None or (wbits or None, abits or None)}."""
    if layer_config is None:
        return {}
    if not isinstance(layer_config, dict):
        raise ValueError(
            f"Invalid layer_config={layer_config!r}: expected None or a dict "
            "{layer name or class name: None or {'wbits': ..., 'abits': ...}}."
        )
    known = {layer.name for layer in leaves} | {type(layer).__name__ for layer in leaves}
    checked = {}
    for key, value in layer_config.items():
        if key not in known:
            raise ValueError(
                f"Invalid layer_config key {key!r}: the model has no layer with that "
                "name or class name (nested models included)."
            )
        if value is None:
            checked[key] = None
            continue
        if not isinstance(value, dict) or not value or set(value) - set(_CONFIG_KEYS):
            raise ValueError(
                f"Invalid layer_config[{key!r}]={value!r}: expected None (keep the "
                "layer as it is) or a dict with the keys 'wbits' and/or 'abits'."
            )
        layer_wbits = value.get("wbits")
        layer_abits = value.get("abits")
        if layer_wbits is not None:
            layer_wbits = value_sets.validate_bits(
                layer_wbits, f"layer_config[{key!r}]['wbits']"
            )
        if layer_abits is not None:
            layer_abits = _check_abits(layer_abits, f"layer_config[{key!r}]['abits']")
        checked[key] = (layer_wbits, layer_abits)
    return checked


def _leaf_layers(model, seen=None):
    """The layers of `model` in order, nested Sequential/Functional expanded."""
    seen = set() if seen is None else seen
    leaves = []
    for layer in model.layers:
        if id(layer) in seen or isinstance(layer, keras.layers.InputLayer):
            continue
        seen.add(id(layer))
        if checks.is_graph_model(layer):
            leaves.extend(_leaf_layers(layer, seen))
        elif isinstance(layer, keras.Model):
            raise ValueError(
                f"Invalid model={model.name!r}: it contains the subclassed model "
                f"{layer.name!r} ({type(layer).__name__}), which cannot be cloned "
                "layer by layer. Use the SLB layers directly inside that subclass."
            )
        else:
            leaves.append(layer)
    return leaves


def _unconvertible_reason(layer):
    if type(layer) not in CONVERTIBLE:
        return f"{type(layer).__name__} has no SLB version"
    for name in ("kernel_constraint", "depthwise_constraint"):
        if getattr(layer, name, None) is not None:
            return f"{type(layer).__name__} with a {name}"
    if getattr(layer, "lora_enabled", False):
        return f"{type(layer).__name__} with LoRA enabled"
    if getattr(layer, "quantization_mode", None) is not None:
        return f"{type(layer).__name__} quantized by Keras ({layer.quantization_mode})"
    return None


def _plan(leaves, default, skip_first_last, config):
    """{id(layer): (wbits, abits) | "sbn"} for the layers to replace."""
    kernel_layers = [layer for layer in leaves if isinstance(layer, checks.KERNEL_LAYERS)]
    ends = set()
    if skip_first_last and kernel_layers:
        ends = {id(kernel_layers[0]), id(kernel_layers[-1])}
    plan, problems = {}, []
    for layer in leaves:
        cls = type(layer).__name__
        if layer.name in config:
            entry = config[layer.name]
        elif id(layer) in ends:
            entry = None
        else:
            entry = config.get(cls, ())
        if type(layer) is keras.layers.BatchNormalization:
            if entry is None:
                continue
            if entry != ():
                raise ValueError(
                    f"Invalid layer_config entry for {layer.name!r} ({cls}): batch "
                    "normalization takes None (keep it plain) or no entry."
                )
            plan[id(layer)] = "sbn"
            continue
        if entry is None or isinstance(layer, slb_layers_lib.SLBLayerMixin):
            continue
        if not isinstance(layer, checks.KERNEL_LAYERS):
            if entry != ():
                raise ValueError(
                    f"Invalid layer_config entry for {layer.name!r} ({cls}): that "
                    "layer has no kernel to quantize; use None or remove it."
                )
            continue
        reason = _unconvertible_reason(layer)
        if reason is not None:
            problems.append(f"{layer.name!r} ({reason})")
            continue
        wbits_, abits_ = entry if entry != () else (None, None)
        plan[id(layer)] = (
            default[0] if wbits_ is None else wbits_,
            default[1] if abits_ is None else abits_,
        )
    if problems:
        keep = ", ".join(f"{p.split(' (')[0]}: None" for p in problems)
        raise ValueError(
            "quantize_model cannot convert these layers: "
            + ", ".join(problems)
            + ". It converts Conv1D, Conv2D, DepthwiseConv2D and Dense without "
            f"kernel constraint. Keep them float with layer_config={{{keep}}}."
        )
    return plan


# -- the graph: what follows and what precedes each layer ------------------------

# Layers that keep their input non-negative when it is (for the sign warning).
_PASS_THROUGH = (
    keras.layers.MaxPooling1D,
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling1D,
    keras.layers.AveragePooling2D,
    keras.layers.GlobalMaxPooling1D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.Dropout,
    keras.layers.Flatten,
    keras.layers.Reshape,
    keras.layers.ZeroPadding1D,
    keras.layers.ZeroPadding2D,
)


def _graph(model, consumers=None, producers=None):
    """({id(layer): consumers}, {id(layer): producers}) within each (nested) graph.

    A layer whose output is also an output of its model gets None among its
    consumers (something outside the graph reads it).
    """
    consumers = {} if consumers is None else consumers
    producers = {} if producers is None else producers
    if isinstance(model, keras.Sequential):
        chain = list(model.layers)
        edges = list(zip(chain, chain[1:]))
        ends = [chain[-1]] if chain else []
    else:
        nodes = [node for level in model._nodes_by_depth.values() for node in level]
        edges = [
            (tensor._keras_history.operation, node.operation)
            for node in nodes
            for tensor in node.input_tensors
        ]
        ends = [tensor._keras_history.operation for tensor in model.outputs]
    for producer, consumer in edges:
        consumers.setdefault(id(producer), []).append(consumer)
        producers.setdefault(id(consumer), []).append(producer)
    for end in ends:
        consumers.setdefault(id(end), []).append(None)
    for layer in model.layers:
        if checks.is_graph_model(layer):
            _graph(layer, consumers, producers)
    return consumers, producers


def _sole(layers):
    return layers[0] if layers is not None and len(layers) == 1 else None


def _can_fold(layer, follower):
    """Whether the channel scale of `layer` can move into `follower` (a BN)."""
    if not isinstance(follower, keras.layers.BatchNormalization):
        return False
    activation = _activation_name(layer)
    if activation not in ("linear", "relu") or (activation == "relu" and layer.use_bias):
        return False  # relu(y / r) = relu(y) / r only without a bias
    try:
        rank = len(layer.output.shape)
    except (AttributeError, ValueError):  # a layer used more than once
        return False
    channels_first = getattr(layer, "data_format", "channels_last") == "channels_first"
    return follower.axis % rank == (1 if channels_first else rank - 1)


def _activation_name(layer):
    """The name of a layer's built-in activation, or None."""
    try:
        name = keras.activations.serialize(getattr(layer, "activation", None))
    except (TypeError, ValueError):
        return None
    return name if isinstance(name, str) else None


def _non_negative(layer):
    """Whether `layer` outputs only values >= 0 (ReLU-like)."""
    if isinstance(layer, keras.layers.ReLU):
        return float(layer.negative_slope) == 0 and float(layer.threshold) >= 0
    return _activation_name(layer) in ("relu", "relu6")


def _is_sign(abits):
    quantizer = _input_quantizer(abits)
    return isinstance(quantizer, quantizers.ActivationQuantizer) and quantizer.bits == 1


def _warn_sign_after_relu(plan, leaves, producers):
    """Warns about 1-bit input quantizers whose inputs are never negative."""
    dead = []
    for layer in leaves:
        action = plan.get(id(layer))
        if not isinstance(action, tuple) or not _is_sign(action[1]):
            continue
        source = _sole(producers.get(id(layer)))
        while isinstance(source, _PASS_THROUGH):
            source = _sole(producers.get(id(source)))
        if source is not None and _non_negative(source):
            dead.append(f"{layer.name!r} (after {source.name!r})")
    if dead:
        warnings.warn(
            "1-bit activations are sign(x), but these layers get non-negative "
            "inputs (after a ReLU), so every input becomes +1: "
            + ", ".join(dead)
            + ". Use abits >= 2 (DoReFa on [0, 1]) or models without the ReLU before "
            "them (binary networks put sign right after batch normalization).",
            stacklevel=3,
        )


# -- weights -----------------------------------------------------------------------


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
