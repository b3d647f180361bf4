"""`export_tflite`: the hard-quantized network as a TFLite flatbuffer of builtin ops.

Every SLB kernel is an int8 constant holding the odd integers (m - 1) * W_h with
per-tensor scale exactly float32(1 / (m - 1)), zero point 0, read by a
DEQUANTIZE op. DEQUANTIZE computes q * float32(1 / (m - 1)), which is
`slb_keras.value_set(b)` bit for bit, so the convolution runs in float32 on
exactly W_h: the TFLite model computes what the Keras model computes. (8-bit
kernels, +-255, are int16 with scale 1/255 the same way.)

How: `_kernel_input_model` rebuilds the inference model (`to_inference_model`)
with every SLB kernel as an extra model *input*, applied by the layer's own
operation (`ops.conv`, `ops.depthwise_conv`, `ops.matmul`) then its bias and
activation; the TFLite converter cannot fold or quantize an input. The
flatbuffer is then edited (`slb_keras.deploy.tflite_flatbuffer`): each kernel input
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
import dataclasses
import functools
import tempfile

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from slb_keras.deploy import export_report
from slb_keras import files
from slb_keras.core import model_helpers
from slb_keras.deploy import inference_model as inference_module
from slb_keras import layers as slb_layers_lib
from slb_keras.core.family import bias_and_activation
from slb_keras.core.family import convolution
from slb_keras.deploy import tflite_flatbuffer
from slb_keras.core import value_sets


ARITHMETIC = ("auto", "integer", "float")
# The border term of the integer route is a plain convolution (`family.convolution`),
# of a map of ones that is padded first for a causal Conv1D.
_BORDER_READERS = ("CONV_2D", "PAD")


def export_tflite(model, path, quantize_full_precision=False, arithmetic="auto"):
    """Writes the hard-quantized network as a TFLite flatbuffer of builtin ops.

    Every SLB kernel is stored as its integer codes (m - 1) * W_h (odd integers,
    int8; int16 for wbits=8), computed one of two ways (see the module
    docstring), both giving the Keras model's outputs:

    - integer route, for an SLB layer whose input is a sign (values +-1): the
      int8 codes feed the convolution/matmul directly (hybrid kernel: LiteRT
      quantizes the 0/1 input exactly and accumulates in integers), several
      times faster than float;
    - float route, otherwise: scale exactly float32(1 / (m - 1)), zero point 0,
      read by a DEQUANTIZE op, so the layer computes in float32 on exactly W_h.

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
        arithmetic: "auto" (the integer route for every SLB layer where it is
            exact, the float route elsewhere), "integer" (every SLB layer; a
            ValueError names one that cannot) or "float" (DEQUANTIZE everywhere).

    Returns:
        An `ExportReport`; `str(report)` is a readable table.

    Raises:
        ValueError: bad model (see `to_inference_model`), a path that cannot be
            written (checked first, and when the final write fails:
            `files.OutputWriteError`, also an OSError, naming `path`, never the
            temporary file), or a bad `arithmetic`.

    Example:

    >>> model = keras.Sequential([keras.Input((8,)), slb_keras.SLBDense(4, wbits=1)])
    >>> report = slb_keras.export_tflite(model, "model.tflite")
    >>> report.layers[0].bits, report.layers[0].values
    (1, (-1.0, 1.0))
    """
    if arithmetic not in ARITHMETIC:
        raise ValueError(f"Invalid arithmetic={arithmetic!r}: expected one of {ARITHMETIC}.")
    path = files.check_output_path(path, "path")
    inference, kernels = inference_module.inference_model_and_kernels(model, float32=True)
    data = _tflite_flatbuffer(inference, kernels, quantize_full_precision, arithmetic)
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


def _tflite_flatbuffer(inference, kernels, quantize_full_precision, arithmetic):
    plans = [_plan(entry, arithmetic) for entry in kernels]
    kernel_model = _kernel_input_model(inference, plans)
    specs = [tf.TensorSpec(x.shape, x.dtype, name=x.name) for x in kernel_model.inputs]

    # The Keras route to TFLite: a SavedModel written by ExportArchive (which
    # tracks the Keras variables, so the converter freezes them), then the
    # SavedModel converter.
    with tempfile.TemporaryDirectory() as directory:
        archive = keras.export.ExportArchive()
        archive.track(kernel_model)
        archive.add_endpoint(
            "serve", lambda *args: kernel_model(list(args), training=False), input_signature=specs
        )
        with _quiet_converter():
            archive.write_out(directory, verbose=False)
            converter = tf.lite.TFLiteConverter.from_saved_model(directory)
            if quantize_full_precision:
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
            data = converter.convert()
    stored = []
    for i, plan in enumerate(plans):
        family = slb_layers_lib.family_of(plan.entry.layer)
        stored.append(
            tflite_flatbuffer.IntegerKernel(
                input_name=f"slb_kernel_{i}",
                name=f"{plan.entry.layer.name}/kernel",
                # int8 holds (m - 1) * V for up to 7 bits; 8 bits (+-255) need int16.
                integers=value_sets.integer_values(plan.entry.wbits)[plan.codes].astype(
                    np.int8 if plan.entry.wbits <= 7 else np.int16
                ),
                # The integer route convolves b = (s + 1) / 2 with 2 Q, Q = (m - 1) W_h.
                scale=np.float32(2.0 if plan.integer else 1.0 / (2**plan.entry.wbits - 1)),
                route="direct" if plan.integer else "dequantize",
                readers=family.tflite_ops,
                hybrid=family.hybrid if plan.integer else None,
            )
        )
        if plan.border is not None:
            stored.append(
                tflite_flatbuffer.IntegerKernel(
                    input_name=f"slb_border_{i}",
                    name=f"{plan.entry.layer.name}/border",
                    integers=plan.border,
                    scale=np.float32(1.0),
                    route="float",
                    readers=_BORDER_READERS,
                )
            )
    for key, ones in _ones_maps(plans).items():  # one per input size, shared
        stored.append(
            tflite_flatbuffer.IntegerKernel(
                input_name=f"slb_ones_{key}", name=f"slb_ones_{key}", integers=ones,
                scale=np.float32(1.0), route="float", readers=_BORDER_READERS,
            )
        )
    input_names = [x.name for x in inference.inputs]
    data = tflite_flatbuffer.insert_integer_kernels(data, stored, input_names)
    tflite_flatbuffer.check_integer_kernels(data, stored)
    return data


@dataclasses.dataclass(frozen=True)
class _Plan:
    """How one SLB kernel is fed to the converter and computed."""

    entry: inference_module.SLBKernel
    integer: bool  # the integer route (else DEQUANTIZE, float arithmetic)
    codes: np.ndarray  # the codes in the layout fed to the converter
    to_keras: object  # fed tensor -> Keras kernel layout
    constant: np.ndarray = None  # integer route, no padding: sum of Q per output channel
    border: np.ndarray = None  # integer route with padding: Q summed over input channels
    ones: np.ndarray = None  # with `border`: ones of the input's spatial size, [1, ..., 1]


def _plan(entry, arithmetic):
    layer = entry.layer
    family = slb_layers_lib.family_of(layer)
    if family.tflite_layout is None:
        codes, to_keras = entry.codes, lambda k: k
    else:  # e.g. Dense: fed as [units, in], the layout of TFLite FULLY_CONNECTED
        inverse = tuple(int(i) for i in np.argsort(family.tflite_layout))
        codes = entry.codes.transpose(family.tflite_layout)
        to_keras = lambda k: ops.transpose(k, inverse)  # noqa: E731
    reason = _integer_route_refusal(entry) if arithmetic != "float" else "float"
    if reason is not None:
        if arithmetic == "integer":
            raise ValueError(
                f"Invalid arithmetic='integer': SLB layer {entry.source!r} cannot run in "
                f"integer arithmetic exactly ({reason}); use arithmetic='auto' or 'float'."
            )
        return _Plan(entry, False, codes, to_keras)
    integers = value_sets.integer_values(entry.wbits)[entry.codes].astype(np.float32)
    per_tap = family.tap_sums(integers)  # [..., 1, out]
    padded = getattr(layer, "padding", "valid") != "valid" and any(
        k > 1 for k in layer.kernel_size
    )
    if not padded:
        constant = per_tap.reshape(-1, per_tap.shape[-1]).sum(axis=0)
        return _Plan(entry, True, codes, to_keras, constant=constant)
    ones = np.ones((1,) + tuple(layer.input.shape[1:-1]) + (1,), np.float32)
    return _Plan(entry, True, codes, to_keras, border=per_tap, ones=ones)


def _integer_route_refusal(entry):
    """None if the SLB layer of `entry` can run in integer arithmetic exactly, else why not.

    The integer route needs a sign input (values +-1), int8 codes (wbits <= 7),
    a layer family with a hybrid int8 kernel in LiteRT (`LayerFamily.hybrid`:
    Dense, Conv1D, Conv2D, DepthwiseConv2D), channels last, no groups and (for
    convolutions) a static input size.
    """
    layer = entry.layer
    if entry.input_bits != 1:
        return "its input quantizer is not the sign"
    if entry.wbits > 7:
        return "8-bit codes do not fit int8"
    if slb_layers_lib.family_of(layer).hybrid is None:
        return f"{type(layer).__name__} has no hybrid integer kernel in LiteRT"
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return "channels_first"
    if getattr(layer, "groups", 1) != 1:
        return "grouped convolution"
    if hasattr(layer, "kernel_size"):  # a convolution: its border term needs the input size
        try:
            shape = layer.input.shape
        except (AttributeError, ValueError):  # a layer called more than once
            return "the layer is shared"
        if any(d is None for d in shape[1:]):
            return "the input size is not static"
    return None


# -- the inference model with its SLB kernels as inputs ------------------------------


def _kernel_input_model(inference, plans):
    """The inference model with each SLB kernel (and border term) as an extra input.

    Inputs: "input_<i>" (the model's inputs, any batch size), then
    "slb_kernel_<j>" for `plans[j]` (its codes as fed) and, for an integer-route
    layer with padding, "slb_border_<j>"; last, a map of ones "slb_ones_<size>" per
    input size of those layers. Every other layer is the inference model's own
    (shared weights).
    """
    images = [
        keras.Input(batch_shape=(None,) + tuple(x.shape[1:]), dtype=x.dtype, name=f"input_{i}")
        for i, x in enumerate(inference.inputs)
    ]
    fed, replaced = [], {}
    ones = {
        key: keras.Input(batch_shape=values.shape, name=f"slb_ones_{key}")
        for key, values in _ones_maps(plans).items()
    }
    for j, plan in enumerate(plans):
        kernel = keras.Input(batch_shape=plan.codes.shape, name=f"slb_kernel_{j}")
        fed.append(kernel)
        border = None
        if plan.border is not None:
            border = [keras.Input(batch_shape=plan.border.shape, name=f"slb_border_{j}"),
                      ones[_ones_key(plan, j)]]
            fed.append(border[0])
        apply = _apply_integer if plan.integer else _apply_kernel
        replaced[id(plan.entry.layer)] = functools.partial(
            apply, plan.entry.layer, plan.to_keras(kernel), plan, border
        )
    outputs = model_helpers.run_graph(inference, images, replaced)
    return keras.Model(images + fed + list(ones.values()), outputs, name=f"{inference.name}_kernel_inputs")


def _ones_key(plan, j):
    """Integer-route layers with padding share a map of ones per 2D input size."""
    if plan.ones.ndim == 4:
        return "x".join(str(d) for d in plan.ones.shape[1:3])
    return f"layer{j}"  # Conv1D: the converter reshapes it for that layer


def _ones_maps(plans):
    return {
        _ones_key(plan, j): plan.ones for j, plan in enumerate(plans) if plan.border is not None
    }


def _apply_kernel(layer, kernel, plan, border, inputs):
    """What `layer` computes on `inputs`, with `kernel` in place of its own."""
    return bias_and_activation(layer, _linear(layer, ops.cast(kernel, layer.compute_dtype), inputs))


def _apply_integer(layer, kernel, plan, border, inputs):
    """The integer route: `inputs` are signs s = +-1, `kernel` will hold 2 Q.

    With Q = (m - 1) W_h (odd integers) and b = (s + 1) / 2 in {0, 1} (exact
    under LiteRT's dynamic int8 input quantization), s * Q = 2 (b * Q) - 1 * Q:
    the linear op of b with 2 Q, an even integer that the hybrid kernel returns
    within rounding and ROUND makes exact, less the same op of ones (zeros in the
    padding) with Q: a constant per output channel, or with padding the
    convolution of a one-channel map of ones with Q summed over the input
    channels (`border`: [Q summed, ones]). All integers below 2**24: exact in
    float32. Then times 1/(m - 1) for multi-bit weights, the bias and activation.
    """
    bits = ops.relu(inputs)  # (s + 1) / 2 for s = +-1, in one op
    outputs = ops.round(_linear(layer, kernel, bits))
    if border is None:
        correction = plan.constant
    else:
        summed, ones = border
        correction = convolution(layer, ones, summed)  # a plain convolution, depthwise or not
    outputs = ops.subtract(outputs, correction)
    m1 = 2**plan.entry.wbits - 1
    if m1 > 1:
        outputs = ops.multiply(outputs, np.float32(1.0 / m1))
    return bias_and_activation(layer, outputs)


def _linear(layer, kernel, inputs):
    """The linear op of `layer`'s family on `inputs` with `kernel`."""
    return slb_layers_lib.family_of(layer).linear(layer, inputs, kernel)


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
