"""Export of the hard-quantized network: a plain Keras model, TFLite, a size report.

Training keeps 2**b logits per weight; the deployed network keeps only the hard
weights W_h = v[argmax_k A_k]. This module turns a trained SLB model into

- `to_inference_model(model)`: a Functional Keras model of stock layers. Every
  SLB layer becomes the Keras layer it extends (Dense, Conv2D, ...) holding W_h;
  its input quantizer and every standalone activation quantizer become
  `keras.ops` nodes (sign, DoReFa rounding, PACT with its learned alpha as a
  constant), which serialize in safe mode; a state batch normalization becomes
  `keras.layers.BatchNormalization` with the statistics inference uses. Loading
  and running it needs no slb_keras class.
- `export_tflite(model, path)`: a TFLite flatbuffer with only builtin ops, in
  which every SLB kernel is an int8 constant holding the odd integers
  (m - 1) * W_h with per-tensor scale exactly float32(1 / (m - 1)), zero point 0,
  read by a DEQUANTIZE op. DEQUANTIZE computes q * float32(1 / (m - 1)), which is
  `slb_keras.value_set(b)` bit for bit, so the convolution runs in float32 on
  exactly W_h: the TFLite model computes what the Keras model computes. (8-bit
  kernels, +-255, are int16 with scale 1/255 the same way.)
- `export_packed` / `load_packed` (in `slb_keras.packed`): b-bit codes, the
  true 32/b compression.

How the int8 kernels get into the flatbuffer: the TFLite converter cannot be
asked for them. Its dynamic-range quantization picks its own scale
(max|W| / 127, so 1/3 becomes 42/127) and runs hybrid kernels that quantize the
activations too, and it folds a following batch normalization into any constant
kernel. So the SLB kernels are given to the converter as *inputs* of the
converted function (it can neither fold nor quantize them), and the flatbuffer
is then edited: each kernel input becomes an int8 constant with its DEQUANTIZE
op, the layout ops the converter put on it (TRANSPOSE, RESHAPE, EXPAND_DIMS)
are applied to the int8 codes, and the edited model is checked before it is
written. Full-precision layers are ordinary constants: they stay float32, or
become int8 dynamic-range weights if `quantize_full_precision=True`.

Command line (the `.keras` file is loaded in safe mode):

    python -m slb_keras.export --model=PATH.keras --out=PATH.tflite [--packed=PATH.slb]

Example:

>>> model = keras.Sequential([
...     keras.Input((8,)),
...     slb_keras.SLBDense(4, wbits=2, input_quantizer="dorefa2"),
... ])
>>> inference = slb_keras.to_inference_model(model)
>>> [type(op).__name__ for op in inference.operations]  # DoReFa as keras.ops, then Dense
['InputLayer', 'Clip', 'Multiply', 'Round', 'Divide', 'Dense']
"""

import argparse
import contextlib
import dataclasses
import os
import re
import sys
import tempfile
import warnings

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from slb_keras import layers as slb_layers_module
from slb_keras import normalization
from slb_keras import packed
from slb_keras import quantizers
from slb_keras import value_sets

_KERNEL_LAYERS = (
    keras.layers.Dense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.DepthwiseConv2D,
)
_SLB_CONFIG_KEYS = ("wbits", "input_quantizer", "logits_initializer")


# -- the inference model ---------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _SLBKernel:
    """An SLB layer of the source model and the stock layer that replaced it."""

    layer: keras.layers.Layer  # the stock layer in the inference model
    source: str  # name of the SLB layer
    kind: str  # class name of the SLB layer
    wbits: int
    codes: np.ndarray  # int32 codes 0..2**wbits-1, kernel shape


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
            the linear output of a Dense/Conv layer (used by nothing else) is
            folded into that layer's kernel and bias. Folding into a layer that
            came from an SLB layer makes its kernel W_h * gamma / sigma per output
            channel, which is no longer in the value set; `export_tflite` and
            `export_packed` therefore never fold.

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
    inference, _ = _inference_model(model)
    if fold_batch_norm:
        inference = _fold_batch_norms(inference)
    return inference


def _inference_model(model, float32=False):
    """(inference model, [_SLBKernel]) for `model`, validated.

    With `float32`, layers with a float16/bfloat16 (mixed) dtype policy compute in
    float32 (their variables are float32 already), as TFLite's builtin ops need.
    """
    _check_model(model)
    if not slb_layers_module.slb_layers(model):
        warnings.warn(
            f"Model {model.name!r} has no SLB layers: its inference model and "
            "exports are full precision.",
            stacklevel=3,
        )
    kernels = []
    return _convert_graph(model, kernels, float32), kernels


def _check_model(model):
    if not isinstance(model, keras.Model):
        raise ValueError(f"Invalid model={model!r}: expected a Keras model.")
    if not _is_graph_model(model):
        raise ValueError(
            f"Invalid model={model.name!r} ({type(model).__name__}): expected a "
            "Sequential or Functional model; a subclassed model cannot be rebuilt "
            "layer by layer."
        )
    try:
        built = model.built and bool(model.inputs)
    except (AttributeError, ValueError):  # a Sequential with no input shape
        built = False
    if not built:
        raise ValueError(
            f"Invalid model={model.name!r}: the model is not built; start it with "
            "keras.Input(shape) or call it on data before exporting."
        )


def _is_graph_model(model):
    from keras.src.models.functional import Functional

    return isinstance(model, (keras.Sequential, Functional))


def _as_functional(model):
    if isinstance(model, keras.Sequential):
        inputs, outputs = model.inputs, model.outputs
        return keras.Model(
            inputs[0] if len(inputs) == 1 else inputs,
            outputs[0] if len(outputs) == 1 else outputs,
            name=model.name,
        )
    return model


def _rebuild(model, replacement):
    """Clones a graph model, calling `replacement(op)(*args, **kwargs)` per node."""
    return keras.models.clone_model(
        _as_functional(model),
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
        if _is_graph_model(op):
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
    config = {k: v for k, v in config.items() if k not in _SLB_CONFIG_KEYS}
    stock = _stock_class(layer).from_config(config)
    hard = ops.convert_to_numpy(layer.hard_kernel())
    weights = [hard] + ([ops.convert_to_numpy(layer.bias)] if layer.use_bias else [])
    copies.append((stock, weights))
    kernels.append(
        _SLBKernel(
            layer=stock,
            source=layer.name,
            kind=type(layer).__name__,
            wbits=layer.wbits,
            codes=ops.convert_to_numpy(layer.kernel_codes()).astype(np.int32),
        )
    )
    if layer.input_quantizer is None:
        return stock
    quantize = _quantizer_ops(layer.input_quantizer, owner=layer)

    def call(inputs, **kwargs):
        return stock(quantize(inputs), **kwargs)

    return call


def _quantizer_ops(quantizer, owner=None):
    """x -> quantized x, from keras.ops only (same forward values as the layer)."""
    if isinstance(quantizer, quantizers.ActivationQuantizer):
        bits = quantizer.bits
        if bits == quantizers.FULL_PRECISION_BITS:
            return lambda x: x
        if bits == 1:
            return lambda x: ops.cast(ops.where(ops.greater_equal(x, 0.0), 1.0, -1.0), x.dtype)
        n = float(2**bits - 1)
        return lambda x: ops.divide(ops.round(ops.multiply(ops.clip(x, 0.0, 1.0), n)), n)
    if isinstance(quantizer, quantizers.PACTQuantizer):
        alpha = np.maximum(np.float32(ops.convert_to_numpy(quantizer.alpha)), np.float32(1e-3))
        if quantizer.bits == quantizers.FULL_PRECISION_BITS:
            return lambda x: ops.subtract(ops.relu(x), ops.relu(ops.subtract(x, alpha)))
        scale = alpha / np.float32(2**quantizer.bits - 1)

        def pact(x):
            # The layer's exact forward: round(clip(x, 0, alpha) / s) * s.
            return ops.multiply(ops.round(ops.divide(ops.minimum(ops.relu(x), alpha), scale)), scale)

        return pact
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
    model = _as_functional(model)
    folds = {}  # id(producer) -> batch norm
    for layer in model.layers:
        producer = _foldable_producer(layer)
        if producer is not None:
            folds[id(producer)] = layer
    folded_ids = {id(bn) for bn in folds.values()}
    copies = []

    def replacement(op):
        if id(op) in folded_ids:
            return lambda inputs, **kwargs: inputs
        if _is_graph_model(op):
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


def _foldable_producer(layer):
    if not isinstance(layer, keras.layers.BatchNormalization) or len(layer._inbound_nodes) != 1:
        return None
    inputs = layer._inbound_nodes[0].input_tensors
    if len(inputs) != 1:
        return None
    producer = inputs[0]._keras_history.operation
    if not isinstance(producer, _KERNEL_LAYERS) or len(producer._inbound_nodes) != 1:
        return None
    rank = len(inputs[0].shape)
    axis = layer.axis if isinstance(layer.axis, int) else None
    if axis is None or axis % rank != rank - 1:
        return None
    if getattr(producer, "data_format", "channels_last") != "channels_last":
        return None
    if producer.activation not in (None, keras.activations.linear):
        return None
    if len(producer._outbound_nodes) != 1:
        return None
    return producer


def _folded_weights(layer, batch_norm):
    kernel = ops.convert_to_numpy(layer.kernel).astype(np.float64)
    channels = kernel.shape[-1] * (
        kernel.shape[-2] if isinstance(layer, keras.layers.DepthwiseConv2D) else 1
    )
    bias = ops.convert_to_numpy(layer.bias) if layer.use_bias else np.zeros(channels)
    gamma = ops.convert_to_numpy(batch_norm.gamma) if batch_norm.scale else np.ones(channels)
    beta = ops.convert_to_numpy(batch_norm.beta) if batch_norm.center else np.zeros(channels)
    mean = ops.convert_to_numpy(batch_norm.moving_mean).astype(np.float64)
    variance = ops.convert_to_numpy(batch_norm.moving_variance).astype(np.float64)
    scale = gamma / np.sqrt(variance + batch_norm.epsilon)
    kernel = kernel * scale.reshape(kernel.shape[-2:] if channels != kernel.shape[-1] else -1)
    bias = (bias - mean) * scale + beta
    return [kernel.astype(np.float32), bias.astype(np.float32)]


# -- TFLite ------------------------------------------------------------------------


def export_tflite(model, path, quantize_full_precision=False):
    """Writes the hard-quantized network as a TFLite flatbuffer.

    Every SLB kernel is an int8 constant holding (m - 1) * W_h (odd integers)
    with per-tensor scale exactly float32(1 / (m - 1)) and zero point 0 (int16
    for wbits=8), read by a DEQUANTIZE op, so the model computes in float32 with
    exactly W_h (see the module docstring). Only builtin TFLite ops are used. Run the file with
    `ai_edge_litert.interpreter.Interpreter`.

    Args:
        model: a built Sequential/Functional model with SLB layers (a model
            without any is exported as a float model, with a warning).
        path: the .tflite file to write (atomically: a failed export leaves no
            file behind and an existing file unchanged).
        quantize_full_precision: if True, the full-precision kernels (first and
            last layer, ...) become int8 dynamic-range weights (not exact); by
            default they stay float32. A mixed-precision model is exported
            computing in float32 (its variables are float32 already).

    Returns:
        An `ExportReport`; `str(report)` is a readable table.

    Raises:
        ValueError: bad model (see `to_inference_model`) or a path that cannot
            be written.

    Example:

    >>> model = keras.Sequential([keras.Input((8,)), slb_keras.SLBDense(4, wbits=1)])
    >>> report = slb_keras.export_tflite(model, "model.tflite")
    >>> report.layers[0].bits, report.layers[0].values
    (1, (-1.0, 1.0))
    """
    path = packed._check_output_path(path, "path")
    inference, kernels = _inference_model(model, float32=True)
    data = _tflite_flatbuffer(inference, kernels, quantize_full_precision)
    packed._write_atomic(path, data)
    return packed._size_report(
        path, "tflite", inference, kernels, stored=_tflite_bytes,
        float_bits=8 if quantize_full_precision else 32,
    )


def _tflite_bytes(n, bits, slb):
    """Bytes of an n-weight kernel in the TFLite file."""
    if slb:
        return n if bits <= 7 else 2 * n  # int8, or int16 for 8 bits
    return n if bits == 8 else 4 * n  # int8 dynamic range, or float32


def _tflite_flatbuffer(inference, kernels, quantize_full_precision):
    inputs = list(inference.inputs)
    layouts = [_kernel_layout(entry) for entry in kernels]
    specs = [
        tf.TensorSpec((None,) + tuple(x.shape[1:]), x.dtype, name=f"input_{i}")
        for i, x in enumerate(inputs)
    ] + [
        tf.TensorSpec(codes.shape, tf.float32, name=f"slb_kernel_{i}")
        for i, (codes, _) in enumerate(layouts)
    ]

    def serve(*args):
        xs, given = args[: len(inputs)], args[len(inputs) :]
        injected = [to_keras(k) for k, (_, to_keras) in zip(given, layouts)]
        with _injected_kernels([entry.layer for entry in kernels], injected):
            return inference(list(xs) if len(xs) > 1 else xs[0], training=False)

    # The Keras route to TFLite: a SavedModel written by ExportArchive (which
    # tracks the Keras variables, so the converter freezes them), then the
    # SavedModel converter.
    with tempfile.TemporaryDirectory() as directory:
        archive = keras.export.ExportArchive()
        archive.track(inference)
        archive.add_endpoint("serve", serve, input_signature=specs)
        with _quiet_converter():
            archive.write_out(directory, verbose=False)
            converter = tf.lite.TFLiteConverter.from_saved_model(directory)
            if quantize_full_precision:
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
            data = converter.convert()
    integer_kernels = [
        _IntegerKernel(
            input_name=f"slb_kernel_{i}",
            name=f"{entry.layer.name}/kernel",
            # int8 holds (m - 1) * V for up to 7 bits; 8 bits (+-255) need int16.
            integers=value_sets.integer_values(entry.wbits)[codes].astype(
                np.int8 if entry.wbits <= 7 else np.int16
            ),
            scale=np.float32(1.0 / (2**entry.wbits - 1)),
        )
        for i, (entry, (codes, _)) in enumerate(zip(kernels, layouts))
    ]
    data = _insert_integer_kernels(data, integer_kernels, [x.name for x in inputs])
    _check_integer_kernels(data, integer_kernels)
    return data


def _kernel_layout(entry):
    """(codes in the layout fed to the converter, tensor -> Keras kernel)."""
    if isinstance(entry.layer, keras.layers.Dense):
        # Fed as [units, in], the layout of TFLite FULLY_CONNECTED.
        return entry.codes.T, lambda k: ops.transpose(k)
    return entry.codes, lambda k: k


@contextlib.contextmanager
def _injected_kernels(layers, tensors):
    """Makes each stock layer read `tensor` as its kernel while tracing."""
    saved = []
    try:
        for layer, tensor in zip(layers, tensors):
            # Dense/Conv read `_kernel` through their `kernel` property;
            # DepthwiseConv2D keeps `kernel` as a plain attribute.
            attr = "_kernel" if isinstance(getattr(type(layer), "kernel", None), property) else "kernel"
            saved.append((layer, attr, layer.__dict__[attr]))
            object.__setattr__(layer, attr, ops.cast(tensor, layer.compute_dtype))
        yield
    finally:
        for layer, attr, value in saved:
            object.__setattr__(layer, attr, value)


@contextlib.contextmanager
def _quiet_converter():
    import logging

    logger = tf.get_logger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


# -- flatbuffer editing: SLB kernel inputs -> int8 constants + DEQUANTIZE ----------

_LAYOUT_OPS = ("TRANSPOSE", "RESHAPE", "EXPAND_DIMS", "SQUEEZE")
_KERNEL_CONSUMERS = (
    "CONV_2D",
    "CONV_3D",
    "DEPTHWISE_CONV_2D",
    "FULLY_CONNECTED",
    "BATCH_MATMUL",
)
# TFLite op versions of DEQUANTIZE by input type (tflite/tools/versioning/op_version.cc).
_DEQUANTIZE_VERSIONS = {"int8": 2, "int16": 3}


@dataclasses.dataclass(frozen=True)
class _IntegerKernel:
    input_name: str  # the converted function's input that carried the kernel
    name: str  # name of the dequantized float tensor
    integers: np.ndarray  # int8 (int16 for 8 bits) (m - 1) * W_h, in the fed layout
    scale: np.float32  # float32(1 / (m - 1))

    @property
    def stored_name(self):
        """Name of the integer tensor, e.g. "conv/kernel_int8"."""
        return f"{self.name}_{self.integers.dtype.name}"


def _tensor_types():
    schema, _ = _schema()
    return {"int8": schema.TensorType.INT8, "int16": schema.TensorType.INT16}


def _schema():
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    return schema, flatbuffer_utils


def _op_name(model, op):
    _, flatbuffer_utils = _schema()
    return flatbuffer_utils.opcode_to_name(model, op.opcodeIndex)


def _opcode_index(model, builtin_code, version):
    schema, _ = _schema()
    for index, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin_code:
            code.version = max(code.version, version)
            return index
    model.operatorCodes.append(
        schema.OperatorCodeT(
            deprecatedBuiltinCode=min(builtin_code, 127),
            builtinCode=builtin_code,
            version=version,
        )
    )
    return len(model.operatorCodes) - 1


def _constant(model, tensor):
    schema, _ = _schema()
    dtypes = {schema.TensorType.INT32: np.int32, schema.TensorType.INT64: np.int64}
    data = model.buffers[tensor.buffer].data if tensor.buffer else None
    if data is None or tensor.type not in dtypes:
        return None
    return np.frombuffer(bytes(np.asarray(data, np.uint8)), dtypes[tensor.type])


def _insert_integer_kernels(data, kernels, input_names):
    """Turns each kernel input of the converted model into int8 + DEQUANTIZE."""
    schema, flatbuffer_utils = _schema()
    model = flatbuffer_utils.convert_bytearray_to_object(data)
    graph = model.subgraphs[0]
    # The converter names inputs "serving_default_<spec name>:0".
    inputs = {
        re.sub(r"^serving_default_|:\d+$", "", graph.tensors[i].name.decode()): int(i)
        for i in graph.inputs
    }
    version = max([_DEQUANTIZE_VERSIONS[k.integers.dtype.name] for k in kernels], default=2)
    dequantize = _opcode_index(model, schema.BuiltinOperator.DEQUANTIZE, version)
    added, removed = [], set()
    for kernel in kernels:
        if kernel.input_name not in inputs:
            raise RuntimeError(
                f"TFLite conversion lost the kernel input {kernel.input_name!r} "
                f"of {kernel.name!r}; inputs are {sorted(inputs)}."
            )
        index = inputs[kernel.input_name]
        removed.add(index)
        model.buffers.append(schema.BufferT())
        model.buffers[-1].data = np.ascontiguousarray(kernel.integers).view(np.uint8).ravel()
        quantization = schema.QuantizationParametersT()
        quantization.scale = [float(kernel.scale)]  # a float32 value: stored exactly
        quantization.zeroPoint = [0]
        stored = schema.TensorT()
        stored.shape = np.array(kernel.integers.shape, np.int32)
        stored.type = _tensor_types()[kernel.integers.dtype.name]
        stored.buffer = len(model.buffers) - 1
        stored.name = kernel.stored_name.encode()
        stored.quantization = quantization
        graph.tensors.append(stored)
        graph.tensors[index].name = kernel.name.encode()
        graph.tensors[index].shapeSignature = None
        op = schema.OperatorT()
        op.opcodeIndex = dequantize
        op.inputs = np.array([len(graph.tensors) - 1], np.int32)
        op.outputs = np.array([index], np.int32)
        op.builtinOptionsType = schema.BuiltinOptions.DequantizeOptions
        op.builtinOptions = schema.DequantizeOptionsT()
        added.append(op)
    graph.operators = added + list(graph.operators)
    graph.inputs = np.array([i for i in graph.inputs if int(i) not in removed], np.int32)
    for op in added:
        _fold_layout_ops(model, graph, op)
    for name, index in zip(input_names, graph.inputs):
        graph.tensors[index].name = name.encode()
    signature = schema.SignatureDefT()
    signature.signatureKey = "serving_default"
    signature.subgraphIndex = 0
    signature.inputs = [_tensor_map(name, i) for name, i in zip(input_names, graph.inputs)]
    signature.outputs = [_tensor_map(f"output_{k}", i) for k, i in enumerate(graph.outputs)]
    model.signatureDefs = [signature]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _tensor_map(name, index):
    schema, _ = _schema()
    tensor_map = schema.TensorMapT()
    tensor_map.name = name
    tensor_map.tensorIndex = int(index)
    return tensor_map


def _fold_layout_ops(model, graph, dequantize):
    """Applies the layout ops that follow a DEQUANTIZE to its int8 constant.

    The converter puts e.g. a TRANSPOSE (HWIO -> OHWI) on a conv kernel it
    receives as an input; permuting or reshaping int8 codes is exact, so the op
    is removed and DEQUANTIZE feeds the convolution directly.
    """
    while True:
        out = int(dequantize.outputs[0])
        consumers = [op for op in graph.operators if out in op.inputs]
        if out in graph.outputs or len(consumers) != 1:
            return
        op = consumers[0]
        name = _op_name(model, op)
        if name not in _LAYOUT_OPS or int(op.inputs[0]) != out:
            return
        stored = graph.tensors[int(dequantize.inputs[0])]
        codes = _stored_integers(model, stored).reshape(tuple(stored.shape))
        if name == "TRANSPOSE":
            perm = _constant(model, graph.tensors[int(op.inputs[1])])
            if perm is None:
                return
            codes = np.transpose(codes, perm)
        else:
            shape = graph.tensors[int(op.outputs[0])].shape
            if shape is None or np.any(np.asarray(shape) < 0):
                return
            codes = codes.reshape(tuple(shape))
        model.buffers[stored.buffer].data = np.ascontiguousarray(codes).view(np.uint8).ravel()
        stored.shape = np.array(codes.shape, np.int32)
        result = int(op.outputs[0])
        graph.tensors[result].name = graph.tensors[out].name
        dequantize.outputs = np.array([result], np.int32)
        graph.operators.remove(op)


def _stored_integers(model, tensor):
    dtype = {v: k for k, v in _tensor_types().items()}[tensor.type]
    return np.frombuffer(bytes(np.asarray(model.buffers[tensor.buffer].data, np.uint8)), dtype)


def _check_integer_kernels(data, kernels):
    """Reads the edited flatbuffer back: each SLB kernel integer, exact, used.

    The stored integers times the stored scale (what DEQUANTIZE computes) must be
    the kernel's values W_h, bit for bit (as a multiset: the layout changed), and
    DEQUANTIZE must feed a convolution or matmul.
    """
    schema, flatbuffer_utils = _schema()
    model = flatbuffer_utils.convert_bytearray_to_object(data)
    graph = model.subgraphs[0]
    by_name = {tensor.name.decode(): i for i, tensor in enumerate(graph.tensors)}
    for kernel in kernels:
        index = by_name.get(kernel.stored_name)
        tensor = graph.tensors[index] if index is not None else None
        ok = (
            tensor is not None
            and tensor.type == _tensor_types()[kernel.integers.dtype.name]
            and list(tensor.quantization.zeroPoint) == [0]
            and len(tensor.quantization.scale) == 1
        )
        if ok:
            scale = np.float32(tensor.quantization.scale[0])
            dequantized = _stored_integers(model, tensor).astype(np.float32) * scale
            expected = kernel.integers.ravel().astype(np.float32) * kernel.scale
            ok = np.array_equal(np.sort(dequantized), np.sort(expected))
            readers = [op for op in graph.operators if index in op.inputs]
            ok = ok and len(readers) == 1 and _op_name(model, readers[0]) == "DEQUANTIZE"
            if ok:
                out = int(readers[0].outputs[0])
                users = [_op_name(model, op) for op in graph.operators if out in op.inputs]
                ok = bool(users) and all(user in _KERNEL_CONSUMERS for user in users)
        if not ok:
            raise RuntimeError(
                f"The TFLite model does not hold {kernel.name!r} as exact integer codes "
                "read by DEQUANTIZE into a convolution or matmul; nothing was written."
            )


# -- command line ----------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv=None):
    """Command line: `python -m slb_keras.export --model=M.keras --out=M.tflite`.

    Returns 0 on success; bad input prints one line to stderr and exits with
    status 2.
    """
    parser = _Parser(
        prog="python -m slb_keras.export",
        description="Export a trained SLB model (.keras) to TFLite (and a packed file).",
    )
    parser.add_argument("--model", required=True, help="the trained model, a .keras file")
    parser.add_argument("--out", required=True, help="the .tflite file to write")
    parser.add_argument("--packed", default=None, help="also write the packed b-bit file here")
    parser.add_argument(
        "--quantize_full_precision",
        action="store_true",
        help="int8 dynamic-range weights for the full-precision layers too",
    )
    args = parser.parse_args(argv)
    try:
        if not args.model.endswith(".keras") or not os.path.isfile(args.model):
            raise ValueError(f"Invalid --model={args.model!r}: expected an existing .keras file.")
        packed._check_output_path(args.out, "--out")
        if args.packed is not None:
            packed._check_output_path(args.packed, "--packed")
        try:
            model = keras.models.load_model(args.model)
        except Exception as error:  # noqa: BLE001 - any loading failure is bad input
            raise ValueError(f"Invalid --model={args.model!r}: cannot load it ({error}).") from error
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            report = export_tflite(model, args.out, args.quantize_full_precision)
            if args.packed is not None:
                packed_report = packed.export_packed(model, args.packed)
        notices = []
        for warning in caught:
            if "has no SLB layers" in str(warning.message):
                if str(warning.message) not in notices:
                    notices.append(str(warning.message))
            else:
                warnings.warn_explicit(
                    warning.message, warning.category, warning.filename, warning.lineno
                )
        for notice in notices:
            print(f"notice: {notice}", file=sys.stderr)
    except (ValueError, OSError) as error:
        parser.exit(2, f"{parser.prog}: error: {' '.join(str(error).split())}\n")
    print(report)
    if args.packed is not None:
        print(f"packed: {packed_report.file_bytes} B written to {packed_report.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
