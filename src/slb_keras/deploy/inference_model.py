"""The hard-quantized network as plain Keras: `to_inference_model` and BN folding.

Training keeps 2**b logits per weight; the deployed network keeps only the hard
weights W_h = v[argmax_k A_k]. `to_inference_model(model)` gives a Functional
Keras model of stock layers: every SLB layer becomes the Keras layer it extends
(Dense, Conv2D, ...) holding W_h; its input quantizer and every standalone
activation quantizer become `keras.ops` nodes (sign, DoReFa rounding, PACT with
its learned alpha as a constant), which serialize in safe mode; a state batch
normalization becomes `keras.layers.BatchNormalization` with the statistics
inference uses. Loading and running it needs no slb_keras class. The exporters
(`slb_keras.export_tflite`, `export_packed`, `export_lce`) start from it.

Example:

>>> model = keras.Sequential([
...     keras.Input((8,)),
...     slb_keras.SLBDense(4, wbits=2, input_quantizer="dorefa2"),
... ])
>>> inference = slb_keras.to_inference_model(model)
>>> [type(op).__name__ for op in inference.operations]  # DoReFa as keras.ops, then Dense
['InputLayer', 'Clip', 'Multiply', 'Round', 'Divide', 'Dense']
"""

import dataclasses
import warnings

import keras
import numpy as np
from keras import ops

from slb_keras import checks
from slb_keras import keras_private
from slb_keras.convert import graph
from slb_keras import layers as slb_layers_module
from slb_keras.core import normalization
from slb_keras.core import quantizers

_SLB_CONFIG_KEYS = ("wbits", "input_quantizer", "logits_initializer")


# -- the inference model ---------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SLBKernel:
    """An SLB layer of the source model and the stock layer that replaced it.

    `inference_model_and_kernels` returns one per SLB layer; the exporters use it
    to store `codes` instead of the float kernel.

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), slb_keras.SLBDense(2, wbits=2, name="s")])
    >>> _, (kernel,) = inference_model_and_kernels(model)
    >>> kernel.source, kernel.kind, kernel.wbits, kernel.codes.shape, kernel.input_bits
    ('s', 'SLBDense', 2, (4, 2), 32)
    """

    layer: keras.layers.Layer  # the stock layer in the inference model
    source: str  # name of the SLB layer
    kind: str  # class name of the SLB layer
    wbits: int
    codes: np.ndarray  # int32 codes 0..2**wbits-1, kernel shape
    input_bits: int  # bits of its input quantizer: 1 for sign, 32 for none or PACT/float


def to_inference_model(model, fold_batch_norm=False):
    """The hard-quantized network as a Functional model of stock Keras layers.

    Every SLB layer becomes the Keras layer it extends with the hard kernel W_h
    (bias, activation, padding... unchanged). Activation quantizers (an SLB
    layer's `input_quantizer` or a standalone `ActivationQuantizer` /
    `PACTQuantizer`) are kept as `keras.ops` nodes computing the same values:
    sign(x) with sign(0) = +1, round(clip(x, 0, 1) * n) / n, and PACT with its
    learned alpha as a constant. A state batch normalization becomes
    `keras.layers.BatchNormalization` with the statistics it uses at inference
    (the hard ones once calibrated). Other stock Keras layers and ops are cloned
    with their weights; nested Sequential/Functional models are converted too.
    The result saves to `.keras` and loads in safe mode with no slb_keras class,
    and computes what the model computes with training=False (the same kernels
    and ops: bit-equal outputs when both run eagerly).

    Args:
        model: a built Sequential or Functional Keras model (subclassed models
            cannot be rebuilt layer by layer).
        fold_batch_norm: if True, every BatchNormalization whose only input is
            the linear output of a Dense/Conv layer (used by nothing else,
            not an output of the model) is folded into that layer's kernel and bias. Folding into a layer that
            came from an SLB layer makes its kernel W_h * gamma / sigma per output
            channel, which is no longer in the value set; `export_tflite` and
            `export_packed` therefore never fold. Folding is exact up to float
            rounding only: a value that sits exactly on a quantizer's threshold
            (e.g. a 0 before a sign, common with untrained batch norms) can land
            a rounding error below it and flip.

    Returns:
        A new `keras.Model` (Functional); the input model is not changed.

    Raises:
        ValueError: if `model` is not a built Sequential/Functional model, or
            contains a layer that is neither a Keras layer nor an slb_keras one
            (the message names it).

    Example:

    >>> model = keras.Sequential([
    ...     keras.Input((6,)),
    ...     slb_keras.SLBDense(3, wbits=1, input_quantizer="ste_sign"),
    ... ])
    >>> inference = slb_keras.to_inference_model(model)
    >>> x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    >>> bool(np.array_equal(inference.predict(x, verbose=0), model.predict(x, verbose=0)))
    True
    >>> sorted(set(inference.layers[-1].kernel.numpy().ravel().tolist()))
    [-1.0, 1.0]
    """
    inference, _ = inference_model_and_kernels(model)
    if fold_batch_norm:
        inference = _fold_batch_norms(inference)
    return inference


def inference_model_and_kernels(model, float32=False):
    """(inference model, [SLBKernel]) for `model`, validated.

    With `float32`, layers with a float16/bfloat16 (mixed) dtype policy compute in
    float32 (their variables are float32 already), as TFLite's builtin ops need.
    Refuses (ValueError, naming the layer) NaN or infinite weights and logits.

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), slb_keras.SLBDense(2, input_quantizer="ste_sign")])
    >>> inference, kernels = inference_model_and_kernels(model)
    >>> type(inference.layers[-1]).__name__, kernels[0].layer is inference.layers[-1]
    ('Dense', True)
    """
    checks.check_graph_model(model, "exported")
    if not slb_layers_module.slb_layers(model):
        warnings.warn(
            f"Model {model.name!r} has no SLB layers: its inference model and "
            "exports are full precision.",
            NoSLBLayersWarning,
            stacklevel=3,
        )
    _check_finite(model)
    kernels = []
    return _convert_graph(model, kernels, float32), kernels


def _check_finite(model):
    """A ValueError naming the first layer with a NaN or infinite weight or logit."""
    for layer in keras_private.flatten_layers(model):
        for variable in layer.weights:
            values = ops.convert_to_numpy(variable)
            if np.issubdtype(values.dtype, np.floating) and not np.all(np.isfinite(values)):
                kind = "logits" if variable is getattr(layer, "kernel_logits", None) else "weights"
                raise ValueError(
                    f"Invalid model={model.name!r}: layer {layer.name!r} has non-finite "
                    f"{kind} ({variable.path}: {int(np.sum(~np.isfinite(values)))} of "
                    f"{values.size} values are NaN or infinite); only finite values export."
                )


def _rebuild(model, replacement):
    """Clones a graph model, calling `replacement(op)(*args, **kwargs)` per node."""
    return keras.models.clone_model(
        graph.as_functional(model),
        clone_function=replacement,
        call_function=lambda function, *args, **kwargs: function(*args, **kwargs),
    )


def _convert_graph(model, kernels, float32):
    copies = []  # (new layer, weights to set once it is built)

    def config_of(op):
        config = op.get_config()
        dtype = config.get("dtype")
        name = dtype.get("config", {}).get("name") if isinstance(dtype, dict) else dtype
        if float32 and isinstance(name, str) and "float16" in name:  # also bfloat16, mixed_*
            config["dtype"] = "float32"
        return config

    def replacement(op):
        if isinstance(op, slb_layers_module.SLBLayerMixin):
            return _replace_slb_layer(op, config_of(op), kernels, copies)
        if isinstance(op, (quantizers.ActivationQuantizer, quantizers.PACTQuantizer)):
            quantize = _quantizer_ops(op)
            return lambda inputs, **kwargs: quantize(inputs)
        if keras_private.is_graph_model(op):
            return _convert_graph(op, kernels, float32)
        if isinstance(op, normalization.StateBatchNormalization):
            return _replace_state_batch_norm(op, config_of(op), copies)
        if isinstance(op, keras.Model):
            raise _unsupported(op, "a subclassed model cannot be rebuilt layer by layer")
        if not type(op).__module__.startswith("keras."):
            raise _unsupported(op, "it is not a Keras or slb_keras layer")
        clone = type(op).from_config(config_of(op))
        if isinstance(op, keras.layers.Layer):
            copies.append((clone, op.get_weights()))
        return clone

    inference = _rebuild(model, replacement)
    for layer, weights in copies:
        layer.set_weights(weights)
    return inference


class NoSLBLayersWarning(UserWarning):
    """Warned when a model with no SLB layer is exported: the export is full precision.

    Example:

    >>> issubclass(NoSLBLayersWarning, UserWarning)
    True
    """


def _unsupported(op, reason):
    cls = type(op)
    return ValueError(
        f"Unsupported layer {op.name!r} ({cls.__module__}.{cls.__qualname__}): {reason}. "
        "to_inference_model converts slb_keras layers and stock Keras layers only."
    )


def _stock_class(layer):
    for cls in type(layer).__mro__[1:]:
        if cls.__module__.startswith("keras.") and issubclass(cls, keras.layers.Layer):
            return cls
    raise _unsupported(layer, "no stock Keras layer class among its bases")


def _replace_slb_layer(layer, config, kernels, copies):
    if layer.searched:
        raise ValueError(
            f"Layer {layer.name!r} still searches its width (wbits={layer.wbits}): fix the "
            "widths first (slb_keras.fix_bit_widths(model)), then export the fixed model."
        )
    config = {k: v for k, v in config.items() if k not in _SLB_CONFIG_KEYS}
    stock = _stock_class(layer).from_config(config)
    hard = ops.convert_to_numpy(layer.hard_kernel())
    weights = [hard] + ([ops.convert_to_numpy(layer.bias)] if layer.use_bias else [])
    copies.append((stock, weights))
    kernels.append(
        SLBKernel(
            layer=stock,
            source=layer.name,
            kind=type(layer).__name__,
            wbits=layer.wbits,
            codes=ops.convert_to_numpy(layer.kernel_codes()).astype(np.int32),
            input_bits=_input_bits(layer.input_quantizer),
        )
    )
    if layer.input_quantizer is None:
        return stock
    quantize = _quantizer_ops(layer.input_quantizer, owner=layer)

    def call(inputs, **kwargs):
        return stock(quantize(inputs), **kwargs)

    return call


def _input_bits(quantizer):
    """1 if `quantizer` is the sign (values +-1), its bits for DoReFa, else 32."""
    if isinstance(quantizer, quantizers.ActivationQuantizer):
        return quantizer.bits
    return quantizers.FULL_PRECISION_BITS


def _quantizer_ops(quantizer, owner=None):
    """x -> quantized x, from keras.ops only: the quantizer's own `inference_function`."""
    if callable(getattr(quantizer, "inference_function", None)):
        return quantizer.inference_function()
    if type(quantizer).__module__.startswith("keras.") and not quantizer.weights:
        return type(quantizer).from_config(quantizer.get_config())
    where = f" (input_quantizer of {owner.name!r})" if owner is not None else ""
    raise _unsupported(quantizer, f"unknown activation quantizer{where}")


def _replace_state_batch_norm(layer, config, copies):
    allowed = keras.layers.BatchNormalization().get_config().keys()
    config = {k: v for k, v in config.items() if k in allowed}
    batch_norm = keras.layers.BatchNormalization.from_config(config)
    mean, variance = layer.inference_statistics()
    weights = [w for w in (layer.gamma, layer.beta) if w is not None] + [mean, variance]
    copies.append((batch_norm, [ops.convert_to_numpy(w) for w in weights]))
    return batch_norm


# -- batch normalization folding -------------------------------------------------


def _fold_batch_norms(model):
    """Folds each BN fed only by a linear Dense/Conv layer into that layer."""
    model = graph.as_functional(model)
    consumers, producers = graph.neighbours(model, recursive=False)
    folds = {}  # id(producer) -> batch norm
    for layer in model.layers:
        producer = _foldable_producer(layer, consumers, producers)
        if producer is not None:
            folds[id(producer)] = layer
    folded_ids = {id(bn) for bn in folds.values()}
    copies = []

    def replacement(op):
        if id(op) in folded_ids:
            return lambda inputs, **kwargs: inputs
        if keras_private.is_graph_model(op):
            return _fold_batch_norms(op)
        config = op.get_config()
        if id(op) in folds:
            config["use_bias"] = True
        clone = type(op).from_config(config)
        if isinstance(op, keras.layers.Layer):
            weights = _folded_weights(op, folds[id(op)]) if id(op) in folds else op.get_weights()
            copies.append((clone, weights))
        return clone

    folded = _rebuild(model, replacement)
    for layer, weights in copies:
        layer.set_weights(weights)
    return folded


def _foldable_producer(layer, consumers, producers):
    """The kernel layer whose output only `layer` (a batch norm) reads, or None.

    Both are called once in the graph, and the kernel layer's output is used by
    nothing else (no other layer, not an output of the model).
    """
    if not isinstance(layer, keras.layers.BatchNormalization):
        return None
    producer = graph.sole(producers.get(id(layer)))  # None if called twice
    # A layer family knows which kernel axes are its output channels
    # (`LayerFamily.output_axes`), as `_folded_weights` needs; separable and einsum
    # layers have no family.
    if slb_layers_module.family_of(producer) is None or len(producers.get(id(producer), ())) != 1:
        return None
    if graph.sole(consumers.get(id(producer))) is not layer:
        return None
    rank = len(layer.input.shape)
    axis = layer.axis if isinstance(layer.axis, int) else None
    if axis is None or axis % rank != rank - 1:
        return None
    if getattr(producer, "data_format", "channels_last") != "channels_last":
        return None
    if producer.activation not in (None, keras.activations.linear):
        return None
    return producer


def _folded_weights(layer, batch_norm):
    kernel = ops.convert_to_numpy(layer.kernel).astype(np.float64)
    family = slb_layers_module.family_of(layer)
    channels = family.output_channels(kernel.shape)
    bias = ops.convert_to_numpy(layer.bias) if layer.use_bias else np.zeros(channels)
    gamma = ops.convert_to_numpy(batch_norm.gamma) if batch_norm.scale else np.ones(channels)
    beta = ops.convert_to_numpy(batch_norm.beta) if batch_norm.center else np.zeros(channels)
    mean = ops.convert_to_numpy(batch_norm.moving_mean).astype(np.float64)
    variance = ops.convert_to_numpy(batch_norm.moving_variance).astype(np.float64)
    scale = gamma / np.sqrt(variance + batch_norm.epsilon)
    kernel = kernel * scale.reshape(family.channel_shape(kernel.shape))
    bias = (bias - mean) * scale + beta
    return [kernel.astype(np.float32), bias.astype(np.float32)]
