"""`export_tflite`: the hard-quantized network as a TFLite flatbuffer of builtin ops.

Every SLB kernel is an int8 constant holding the odd integers (m - 1) * W_h with
per-tensor scale exactly float32(1 / (m - 1)), zero point 0, read by a
DEQUANTIZE op. DEQUANTIZE computes q * float32(1 / (m - 1)), which is
`slb_keras.value_set(b)` bit for bit, so the convolution runs in float32 on
exactly W_h: the TFLite model computes what the Keras model computes. (8-bit
kernels, +-255, are int16 with scale 1/255 the same way.)

How: `kernel_input_model` rebuilds the inference model (`to_inference_model`)
with every SLB kernel as an extra model *input*, applied by the layer's own
operation (`ops.conv`, `ops.depthwise_conv`, `ops.matmul`) then its bias and
activation; the TFLite converter cannot fold or quantize an input. The
flatbuffer is then edited (`slb_keras.tflite_flatbuffer`): each kernel input
becomes its integer constant, and the result is read back and checked before
it is written. Full-precision layers are ordinary constants: they stay float32,
or become int8 dynamic-range weights if `quantize_full_precision=True`.

Example:

>>> model = keras.Sequential([keras.Input((8,)), slb_keras.SLBDense(4, wbits=1)])
>>> report = slb_keras.export_tflite(model, "model.tflite")
>>> report.format, report.layers[0].values
('tflite', (-1.0, 1.0))
"""

import contextlib
import functools
import tempfile

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from slb_keras import export_report
from slb_keras import files
from slb_keras import inference_model as inference_module
from slb_keras import tflite_flatbuffer
from slb_keras import value_sets


def export_tflite(model, path, quantize_full_precision=False):
    """Writes the hard-quantized network as a TFLite flatbuffer.

    Every SLB kernel is an int8 constant holding (m - 1) * W_h (odd integers)
    with per-tensor scale exactly float32(1 / (m - 1)) and zero point 0 (int16
    for wbits=8), read by a DEQUANTIZE op, so the model computes in float32 with
    exactly W_h (see the module docstring). Only builtin TFLite ops are used.
    Run the file with `ai_edge_litert.interpreter.Interpreter`.

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
    path = files.check_output_path(path, "path")
    inference, kernels = inference_module.inference_model_and_kernels(model, float32=True)
    data = _tflite_flatbuffer(inference, kernels, quantize_full_precision)
    files.atomic_write(path, data)
    return export_report.size_report(
        path, "tflite", inference, kernels, stored=_tflite_bytes,
        float_bits=8 if quantize_full_precision else 32,
    )


def _tflite_bytes(n, bits, slb):
    """Bytes of an n-weight kernel in the TFLite file."""
    if slb:
        return n if bits <= 7 else 2 * n  # int8, or int16 for 8 bits
    return n if bits == 8 else 4 * n  # int8 dynamic range, or float32


def _tflite_flatbuffer(inference, kernels, quantize_full_precision):
    layouts = [_kernel_layout(entry) for entry in kernels]
    graph = kernel_input_model(inference, kernels, layouts)
    specs = [tf.TensorSpec(x.shape, x.dtype, name=x.name) for x in graph.inputs]

    # The Keras route to TFLite: a SavedModel written by ExportArchive (which
    # tracks the Keras variables, so the converter freezes them), then the
    # SavedModel converter.
    with tempfile.TemporaryDirectory() as directory:
        archive = keras.export.ExportArchive()
        archive.track(graph)
        archive.add_endpoint(
            "serve", lambda *args: graph(list(args), training=False), input_signature=specs
        )
        with _quiet_converter():
            archive.write_out(directory, verbose=False)
            converter = tf.lite.TFLiteConverter.from_saved_model(directory)
            if quantize_full_precision:
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
            data = converter.convert()
    integer_kernels = [
        tflite_flatbuffer.IntegerKernel(
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
    input_names = [x.name for x in inference.inputs]
    data = tflite_flatbuffer.insert_integer_kernels(data, integer_kernels, input_names)
    tflite_flatbuffer.check_integer_kernels(data, integer_kernels)
    return data


def _kernel_layout(entry):
    """(codes in the layout fed to the converter, tensor -> Keras kernel)."""
    if isinstance(entry.layer, keras.layers.Dense):
        # Fed as [units, in], the layout of TFLite FULLY_CONNECTED.
        return entry.codes.T, lambda k: ops.transpose(k)
    return entry.codes, lambda k: k


# -- the inference model with its SLB kernels as inputs ------------------------------


def kernel_input_model(inference, kernels, layouts):
    """The inference model with each SLB kernel as an extra input.

    Inputs: "input_<i>" (the model's inputs, any batch size), then
    "slb_kernel_<j>" for `kernels[j]`, of the shape of `layouts[j][0]` (the
    codes as fed); `layouts[j][1]` maps the fed tensor to the Keras kernel. Every
    other layer is the inference model's own (shared weights).
    """
    images = [
        keras.Input(batch_shape=(None,) + tuple(x.shape[1:]), dtype=x.dtype, name=f"input_{i}")
        for i, x in enumerate(inference.inputs)
    ]
    fed = [
        keras.Input(batch_shape=codes.shape, name=f"slb_kernel_{j}")
        for j, (codes, _) in enumerate(layouts)
    ]
    replaced = {
        id(entry.layer): functools.partial(_apply_kernel, entry.layer, to_keras(kernel))
        for entry, kernel, (_, to_keras) in zip(kernels, fed, layouts)
    }
    outputs = _run_graph(inference, images, replaced)
    return keras.Model(images + fed, outputs, name=f"{inference.name}_kernel_inputs")


def _run_graph(model, inputs, replaced):
    """`model`'s graph applied to `inputs`, with `replaced[id(layer)]` for those layers."""

    def operation_fn(op):
        if id(op) in replaced:
            return lambda x, **kwargs: replaced[id(op)](x)
        if inference_module.is_graph_model(op):
            return lambda *args, **kwargs: _run_graph(op, list(args), replaced)
        return op

    # Keras's own graph walk (what Functional.call runs), with our operations.
    return model._run_through_graph(inputs, operation_fn=operation_fn)


def _apply_kernel(layer, kernel, inputs):
    """What `layer` computes on `inputs`, with `kernel` in place of its own."""
    kernel = ops.cast(kernel, layer.compute_dtype)
    channels_first = getattr(layer, "data_format", "channels_last") == "channels_first"
    if isinstance(layer, keras.layers.Dense):
        outputs = ops.matmul(inputs, kernel)
    elif isinstance(layer, keras.layers.DepthwiseConv2D):
        outputs = ops.depthwise_conv(
            inputs, kernel, strides=layer.strides, padding=layer.padding,
            dilation_rate=layer.dilation_rate, data_format=layer.data_format,
        )
    else:
        padding = layer.padding
        if padding == "causal":  # Conv1D: pad the time axis on the left
            left = layer.dilation_rate[0] * (layer.kernel_size[0] - 1)
            pads = [[0, 0], [0, 0], [left, 0]] if channels_first else [[0, 0], [left, 0], [0, 0]]
            inputs, padding = ops.pad(inputs, pads), "valid"
        outputs = ops.conv(
            inputs, kernel, strides=list(layer.strides), padding=padding,
            dilation_rate=layer.dilation_rate, data_format=layer.data_format,
        )
    if layer.use_bias:
        bias = layer.bias
        if channels_first:
            bias = ops.reshape(bias, (-1,) + (1,) * (len(outputs.shape) - 2))
        outputs = ops.add(outputs, bias)
    if layer.activation is not None:
        outputs = layer.activation(outputs)
    return outputs


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
