"""What `quantize_model` converts: its arguments checked and a plan per layer.

`plan` decides, for each leaf layer of the float model (`graph.leaf_layers`),
whether it becomes an SLB layer (with which wbits and abits), a
`StateBatchNormalization`, or stays as it is, and refuses (one ValueError
listing them all) kernel layers it cannot convert. It also lists the layers
with weight matrices that stay float although nobody asked (an LSTM, an
Embedding, ...), which `quantize_model` warns about, and `warn_sign_after_relu`
warns about 1-bit input quantizers that would only ever see +1.

Example:

>>> model = keras.Sequential([
...     keras.Input((8,)),
...     keras.layers.Dense(8, name="a"),
...     keras.layers.Dense(8, name="b"),
...     keras.layers.Dense(2, name="c"),
... ])
>>> leaves = graph.leaf_layers(model)
>>> steps, kept_float = plan(leaves, (2, 32), skip_first_last=True, config={})
>>> [steps.get(id(layer)) for layer in leaves], kept_float
([None, (2, 32), None], [])
"""

import warnings

import keras

from slb_keras import checks
from slb_keras.convert import graph
from slb_keras import layers as slb_layers_lib
from slb_keras.core import mixed_precision
from slb_keras.core import quantizers

# Which Keras layers quantize_model converts is the layer families' to say
# (`slb_keras.layers.convertible`): a stock layer of a family with an SLB class.
# The other layers with a weight kernel (checks.KERNEL_LAYERS) are refused.

_CONFIG_KEYS = ("wbits", "abits")


# -- arguments ---------------------------------------------------------------------


def check_wbits(wbits, name):
    """Returns wbits as an int 1..8, or candidate widths as a sorted tuple (a search).

    Example:

    >>> check_wbits(2, "wbits"), check_wbits([4, 1, 2], "wbits")
    (2, (1, 2, 4))
    """
    return mixed_precision.validate_wbits(wbits, name)


def check_abits(abits, name):
    """Returns abits as an int (1..16 or 32), an alias string or a quantizer layer.

    Example:

    >>> check_abits(4, "abits"), check_abits("pact2", "abits")
    (4, 'pact2')
    """
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


def input_quantizer(abits):
    """A new quantizer layer for `abits` (each SLB layer gets its own).

    Example:

    >>> input_quantizer(2).bits, input_quantizer(32)
    (2, None)
    """
    if isinstance(abits, keras.layers.Layer):
        return keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(abits)
        )
    return quantizers.get(abits if isinstance(abits, str) else quantizers.alias(abits))


def check_layer_config(layer_config, leaves):
    """Validated layer_config: {key: None or (wbits or None, abits or None)}.

    Example:

    >>> leaves = [keras.layers.Dense(2, name="d")]
    >>> check_layer_config({"d": {"wbits": 4}, "Dense": None}, leaves)
    {'d': (4, None), 'Dense': None}
    """
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
            layer_wbits = check_wbits(layer_wbits, f"layer_config[{key!r}]['wbits']")
        if layer_abits is not None:
            layer_abits = check_abits(layer_abits, f"layer_config[{key!r}]['abits']")
        checked[key] = (layer_wbits, layer_abits)
    return checked


# -- the plan ----------------------------------------------------------------------


def _unconvertible_reason(layer):
    if slb_layers_lib.convertible(layer) is None:
        return f"{type(layer).__name__} has no SLB version"
    for name in ("kernel_constraint", "depthwise_constraint"):
        if getattr(layer, name, None) is not None:
            return f"{type(layer).__name__} with a {name}"
    if getattr(layer, "lora_enabled", False):
        return f"{type(layer).__name__} with LoRA enabled"
    if getattr(layer, "quantization_mode", None) is not None:
        return f"{type(layer).__name__} quantized by Keras ({layer.quantization_mode})"
    return None


def has_weight_matrix(layer):
    """Whether `layer` holds a weight with two or more axes longer than 1.

    Kernels, embeddings and recurrent weights have one; biases, batch norm
    statistics and per-channel scales (PReLU over shared axes, PACT's alpha)
    do not. A layer holding SLB layers is quantized already: False.

    Example:

    >>> embedding = keras.layers.Embedding(10, 4)
    >>> embedding.build((None, 3))
    >>> prelu = keras.layers.PReLU(shared_axes=[1, 2])
    >>> prelu.build((None, 5, 5, 8))
    >>> has_weight_matrix(embedding), has_weight_matrix(prelu)
    (True, False)
    """
    if slb_layers_lib.slb_layers(layer):
        return False
    return any(sum(int(d) > 1 for d in v.shape) >= 2 for v in layer.weights)


def plan(leaves, default, skip_first_last, config):
    """({id(layer): (wbits, abits) | "sbn"}, [layers kept float unasked]).

    The first dict names the layers to replace: "sbn" for a batch norm that
    becomes a StateBatchNormalization, (wbits, abits) for a kernel layer that
    becomes an SLB layer. The list holds the layers with a weight matrix
    (`has_weight_matrix`) that stay float although neither `skip_first_last`
    nor `config` keeps them so: they have no SLB version (LSTM, Embedding,
    MultiHeadAttention, ...).

    Raises:
        ValueError: kernel layers to quantize that cannot be converted (all
            listed, with the layer_config that keeps them float), or a config
            entry that does not fit its layer.
    """
    kernel_layers = [layer for layer in leaves if isinstance(layer, checks.KERNEL_LAYERS)]
    ends = set()
    if skip_first_last and kernel_layers:
        ends = {id(kernel_layers[0]), id(kernel_layers[-1])}
    steps, problems, kept_float = {}, [], []
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
            steps[id(layer)] = "sbn"
            continue
        if entry is None or isinstance(layer, slb_layers_lib.SLBLayerMixin):
            continue
        if not isinstance(layer, checks.KERNEL_LAYERS):
            if entry != ():
                raise ValueError(
                    f"Invalid layer_config entry for {layer.name!r} ({cls}): that "
                    "layer has no kernel to quantize; use None or remove it."
                )
            if has_weight_matrix(layer):
                kept_float.append(layer)
            continue
        reason = _unconvertible_reason(layer)
        if reason is not None:
            problems.append(f"{layer.name!r} ({reason})")
            continue
        wbits_, abits_ = entry if entry != () else (None, None)
        steps[id(layer)] = (
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
    return steps, kept_float


def float_notice(kept_float):
    """The warning text for layers with weights that stay float unasked, or None.

    Example:

    >>> embedding = keras.layers.Embedding(10, 4, name="emb")
    >>> embedding.build((None, 3))
    >>> print(float_notice([embedding]))  # doctest: +NORMALIZE_WHITESPACE
    quantize_model keeps these layers float (they have weights but no SLB
    version): 'emb' (Embedding, 40 parameters). They stay full precision in the
    model and in its exports. To keep them float without this warning, say so
    in layer_config={'emb': None}; slb_keras.summary(model) lists every
    layer's bits.
    """
    if not kept_float:
        return None
    names = ", ".join(
        f"{layer.name!r} ({type(layer).__name__}, {layer.count_params():,} parameters)"
        for layer in kept_float
    )
    keep = ", ".join(f"{layer.name!r}: None" for layer in kept_float)
    return (
        "quantize_model keeps these layers float (they have weights but no SLB "
        f"version): {names}. They stay full precision in the model and in its "
        "exports. To keep them float without this warning, say so in "
        f"layer_config={{{keep}}}; slb_keras.summary(model) lists every layer's bits."
    )


# -- the sign warning ----------------------------------------------------------------

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


def activation_name(layer):
    """The name of a layer's built-in activation, or None.

    Example:

    >>> activation_name(keras.layers.Dense(2, activation="relu")), activation_name(keras.layers.ReLU())
    ('relu', None)
    """
    try:
        name = keras.activations.serialize(getattr(layer, "activation", None))
    except (TypeError, ValueError):
        return None
    return name if isinstance(name, str) else None


def _non_negative(layer):
    """Whether `layer` outputs only values >= 0 (ReLU-like)."""
    if isinstance(layer, keras.layers.ReLU):
        return float(layer.negative_slope) == 0 and float(layer.threshold) >= 0
    return activation_name(layer) in ("relu", "relu6")


def _is_sign(abits):
    quantizer = input_quantizer(abits)
    return isinstance(quantizer, quantizers.ActivationQuantizer) and quantizer.bits == 1


def warn_sign_after_relu(steps, leaves, producers, stacklevel=2):
    """Warns about 1-bit input quantizers whose inputs are never negative."""
    dead = []
    for layer in leaves:
        action = steps.get(id(layer))
        if not isinstance(action, tuple) or not _is_sign(action[1]):
            continue
        source = graph.sole(producers.get(id(layer)))
        while isinstance(source, _PASS_THROUGH):
            source = graph.sole(producers.get(id(source)))
        if source is not None and _non_negative(source):
            dead.append(f"{layer.name!r} (after {source.name!r})")
    if dead:
        warnings.warn(
            "1-bit activations are sign(x), but these layers get non-negative "
            "inputs (after a ReLU), so every input becomes +1: "
            + ", ".join(dead)
            + ". Use abits >= 2 (DoReFa on [0, 1]) or models without the ReLU before "
            "them (binary networks put sign right after batch normalization).",
            stacklevel=stacklevel + 1,
        )
