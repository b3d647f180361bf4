"""Editing the converted TFLite flatbuffer: SLB kernel inputs become integer constants.

The TFLite converter cannot be asked for exact integer SLB kernels: its
dynamic-range quantization picks its own scale (max|W| / 127, so 1/3 becomes
42/127) and it folds a following batch normalization into any constant kernel.
So `slb_keras.deploy.tflite_export` gives the converter each SLB kernel as an *input*
of the converted function (it can neither fold nor quantize it), and this
module edits the flatbuffer: each kernel input becomes an integer constant
holding the codes (m - 1) * W_h with scale 1/(m - 1), read by a DEQUANTIZE op;
the layout ops the converter put on it (TRANSPOSE, RESHAPE, EXPAND_DIMS) are
applied to the integer codes; `check_integer_kernels` reads the result back.

Example:

>>> kernel = IntegerKernel("slb_kernel_0", "dense/kernel", np.array([[1, -1]], np.int8),
...                        np.float32(1.0))
>>> kernel.stored_name
'dense/kernel_int8'
"""

import dataclasses
import re

import numpy as np

_LAYOUT_OPS = ("TRANSPOSE", "RESHAPE", "EXPAND_DIMS", "SQUEEZE")
# TFLite op versions of DEQUANTIZE by input type (tflite/tools/versioning/op_version.cc).
_DEQUANTIZE_VERSIONS = {"int8": 2, "int16": 3}


# How a kernel input is stored:
# - "dequantize": integer codes with scale 1/(m - 1), read by DEQUANTIZE into
#   the convolution, which computes in float32;
# - "direct": int8 codes read by the convolution itself (hybrid: LiteRT
#   quantizes the float input per image and accumulates in integers), scale
#   per output channel (all equal) as the converter's dynamic-range weights;
# - "float": a float32 constant (the border term of the integer route).
ROUTES = ("dequantize", "direct", "float")


@dataclasses.dataclass(frozen=True)
class IntegerKernel:
    """One tensor to store in the flatbuffer in place of a converted function's input.

    Example:

    >>> kernel = IntegerKernel("slb_kernel_0", "conv/kernel", np.array([1, -1, 3], np.int8),
    ...                        np.float32(1 / 3), readers=("CONV_2D",))
    >>> kernel.stored_name, kernel.route
    ('conv/kernel_int8', 'dequantize')
    """

    input_name: str  # the converted function's input that carried the kernel
    name: str  # name of the float tensor the consumer reads
    integers: np.ndarray  # (m - 1) * W_h as int8 (int16 for 8 bits), or float32, fed layout
    scale: np.float32  # what an integer is worth: float32(1 / (m - 1)), or 2/(m - 1) direct
    route: str = "dequantize"
    # The builtins that may read it (after its DEQUANTIZE on the "dequantize" route):
    # its layer family's `tflite_ops`, or for "direct" the family's hybrid kernel.
    readers: tuple = ()
    # "direct": (builtin, op version, output-channel axis) of the hybrid kernel
    # (the converter's versions of hybrid int8 per-channel convolutions and matmuls).
    hybrid: tuple = None

    @property
    def stored_name(self):
        """Name of the stored tensor, e.g. "conv/kernel_int8"."""
        return f"{self.name}_{self.integers.dtype.name}"


def _tensor_types():
    schema, _ = _schema()
    return {
        "int8": schema.TensorType.INT8,
        "int16": schema.TensorType.INT16,
        "float32": schema.TensorType.FLOAT32,
    }


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


def insert_integer_kernels(data, kernels, input_names):
    """Turns each kernel input of the converted model into its stored tensor.

    Args:
        data: the converter's flatbuffer, whose inputs include each kernel's
            `input_name`.
        kernels: `IntegerKernel`s; "dequantize" ones get a DEQUANTIZE op,
            "direct" and "float" ones are read by their consumers directly.
        input_names: names for the remaining inputs (the model's), in order.

    Returns:
        The edited flatbuffer (bytes) with a "serving_default" signature.

    Example: see `check_integer_kernels`, which reads back what this wrote.
    """
    schema, flatbuffer_utils = _schema()
    model = flatbuffer_utils.convert_bytearray_to_object(data)
    graph = model.subgraphs[0]
    # The converter names inputs "serving_default_<spec name>:0".
    inputs = {
        re.sub(r"^serving_default_|:\d+$", "", graph.tensors[i].name.decode()): int(i)
        for i in graph.inputs
    }
    version = max(
        [_DEQUANTIZE_VERSIONS[k.integers.dtype.name] for k in kernels if k.route == "dequantize"],
        default=2,
    )
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
    for op, kernel in zip(added, kernels):
        _fold_layout_ops(model, graph, op)
        if kernel.route != "dequantize":
            _read_directly(model, graph, op, kernel)
    for name, index in zip(input_names, graph.inputs):
        graph.tensors[index].name = name.encode()
    signature = schema.SignatureDefT()
    signature.signatureKey = "serving_default"
    signature.subgraphIndex = 0
    signature.inputs = [_tensor_map(name, i) for name, i in zip(input_names, graph.inputs)]
    signature.outputs = [_tensor_map(f"output_{k}", i) for k, i in enumerate(graph.outputs)]
    model.signatureDefs = [signature]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _read_directly(model, graph, dequantize, kernel):
    """Removes `dequantize`: its consumers read the stored tensor itself."""
    stored, out = int(dequantize.inputs[0]), int(dequantize.outputs[0])
    tensor = graph.tensors[stored]
    for op in graph.operators:
        if out in op.inputs:
            op.inputs = np.where(op.inputs == out, stored, op.inputs).astype(np.int32)
            if kernel.route == "direct":
                name = _op_name(model, op)
                if kernel.hybrid is None or name != kernel.hybrid[0]:
                    continue  # the read-back check refuses it
                _, version, axis = kernel.hybrid
                tensor.quantization.scale = [float(kernel.scale)] * int(tensor.shape[axis])
                tensor.quantization.zeroPoint = [0] * int(tensor.shape[axis])
                tensor.quantization.quantizedDimension = axis
                code = model.operatorCodes[op.opcodeIndex]
                code.version = max(code.version, version)
                if name == "FULLY_CONNECTED":
                    op.builtinOptions.asymmetricQuantizeInputs = True
    if kernel.route == "float":
        tensor.quantization = None
    graph.operators.remove(dequantize)


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


def check_integer_kernels(data, kernels):
    """Reads the edited flatbuffer back: each SLB kernel exact and used as intended.

    The stored values times the stored scale (what DEQUANTIZE, or the hybrid
    convolution, computes) must be the kernel's, bit for bit (as a multiset: the
    layout changed); a "dequantize" kernel must be read by DEQUANTIZE into
    convolutions or matmuls, a "direct" one by such an op itself with a float32
    input (the hybrid kernel), a "float" one by a convolution.

    Raises:
        RuntimeError: if a kernel is missing, inexact or read another way.

    Example:

    >>> model = keras.Sequential([keras.Input((3,)), slb_keras.SLBDense(2, wbits=1, name="d")])
    >>> _ = slb_keras.export_tflite(model, "m.tflite", arithmetic="float")
    >>> codes = model.layers[0].kernel_codes().numpy()
    >>> q = slb_keras.integer_values(1)[codes].T.astype(np.int8)  # FULLY_CONNECTED: [out, in]
    >>> data = open("m.tflite", "rb").read()
    >>> fc = ("FULLY_CONNECTED",)
    >>> check_integer_kernels(data, [IntegerKernel("", "d/kernel", q, np.float32(1.0), readers=fc)])
    >>> check_integer_kernels(data, [IntegerKernel("", "d/kernel", -q, np.float32(0.5), readers=fc)])
    Traceback (most recent call last):
    ...
    RuntimeError: The TFLite model does not hold 'd/kernel' as exact values read the 'dequantize' way into a convolution or matmul; nothing was written.
    """
    _, flatbuffer_utils = _schema()
    model = flatbuffer_utils.convert_bytearray_to_object(data)
    graph = model.subgraphs[0]
    by_name = {tensor.name.decode(): i for i, tensor in enumerate(graph.tensors)}
    for kernel in kernels:
        index = by_name.get(kernel.stored_name)
        tensor = graph.tensors[index] if index is not None else None
        ok = tensor is not None and tensor.type == _tensor_types()[kernel.integers.dtype.name]
        if ok and kernel.route == "float":
            ok = tensor.quantization is None or tensor.quantization.scale is None
            scales = [np.float32(1.0)]
        elif ok:
            scales = np.float32(tensor.quantization.scale)
            ok = (
                len(set(scales.tolist())) == 1
                and not np.any(tensor.quantization.zeroPoint)
                and (len(scales) == 1) == (kernel.route == "dequantize")
            )
        if ok:
            values = _stored_integers(model, tensor).astype(np.float32) * scales[0]
            expected = kernel.integers.ravel().astype(np.float32) * np.float32(kernel.scale)
            ok = np.array_equal(np.sort(values), np.sort(expected))
            readers = [op for op in graph.operators if index in op.inputs]
            ok = ok and bool(readers) and _read_as_intended(model, graph, readers, kernel)
        if not ok:
            raise RuntimeError(
                f"The TFLite model does not hold {kernel.name!r} as exact values read "
                f"the {kernel.route!r} way into a convolution or matmul; nothing was written."
            )


def _read_as_intended(model, graph, readers, kernel):
    names = [_op_name(model, op) for op in readers]
    if kernel.route == "dequantize":
        if names != ["DEQUANTIZE"]:
            return False
        out = int(readers[0].outputs[0])
        users = [_op_name(model, op) for op in graph.operators if out in op.inputs]
        return bool(users) and all(user in kernel.readers for user in users)
    if kernel.route == "float":
        return all(name in kernel.readers for name in names)
    float32 = _tensor_types()["float32"]
    return kernel.hybrid is not None and all(
        name == kernel.hybrid[0] and graph.tensors[int(op.inputs[0])].type == float32
        for name, op in zip(names, readers)
    )
