"""`export_lce`: the hard-quantized network for Larq Compute Engine (LCE), optional.

LCE is the reference runtime for binary networks: its converter turns a
convolution whose input is a sign and whose kernel is +-1 into `LceBconv2d`,
which stores 1 bit per weight and computes with XNOR and popcount. `export_lce`
gives it the plain-Keras inference model (`to_inference_model`, whose sign is
`where(x >= 0, 1, -1)`) as a SavedModel; no larq and no tf-keras are needed.

Install with the extra: `pip install slb_keras[lce]` (`larq-compute-engine`).
Known constraints of LCE (version 0.16): wheels for Python 3.10-3.12 on x86_64
(and aarch64/macOS) only; its Python interpreter needs numpy < 2 (the converter
works with numpy 2); its files use LCE's custom ops, so they run only in LCE's
runtime (`larq_compute_engine.tflite.python.interpreter.Interpreter` or its C++
library), not in stock LiteRT; on x86 its binary convolutions are fast only
with `use_indirect_bgemm=True`.

Usage (with the extra installed):

    report = slb_keras.export_lce(model, "model.lce.tflite")
    report.ops["LceBconv2d"]  # one per binary convolution
"""

import collections
import dataclasses
import tempfile

from slb_keras.deploy import export_report
from slb_keras import files
from slb_keras.deploy import inference_model as inference_module

_MISSING = (
    "export_lce needs larq-compute-engine: pip install 'slb_keras[lce]' "
    "(wheels for Python 3.10-3.12)."
)


@dataclasses.dataclass(frozen=True)
class LCEReport(export_report.ExportReport):
    """An `ExportReport` with the op counts of the LCE flatbuffer.

    Attributes:
        ops: op name -> count, e.g. {"LceBconv2d": 6, "CONV_2D": 1, ...}.

    Example:

    >>> LCEReport("m.tflite", "lce", (), 100, 400, 50, ops={"LceBconv2d": 1}).ops
    {'LceBconv2d': 1}
    """

    ops: dict = dataclasses.field(default_factory=dict)


def export_lce(model, path):
    """Writes the hard-quantized network as an LCE flatbuffer (binary convolutions).

    Args:
        model: a built Sequential/Functional model with SLB layers.
        path: the file to write (atomically).

    Returns:
        An `LCEReport`: the size report (SLB kernels at 1 bit for binary
        convolutions LCE recognized, 4 bytes otherwise, as LCE stores them) and
        the op counts.

    Raises:
        ImportError: larq-compute-engine is not installed (the message says how).
        ValueError: bad model (see `to_inference_model`) or path.

    Example:

    >>> model = keras.Sequential([
    ...     keras.Input((8, 8, 16)),
    ...     slb_keras.SLBConv2D(16, 3, wbits=1, input_quantizer="ste_sign"),
    ... ])
    >>> try:
    ...     report = slb_keras.export_lce(model, "model.lce.tflite")
    ... except ImportError as error:  # without the [lce] extra
    ...     print("larq-compute-engine" in str(error))
    ... else:
    ...     print(report.ops.get("LceBconv2d", 0) == 1)
    True
    """
    try:
        from larq_compute_engine.mlir.python.converter import convert_saved_model
    except ImportError as error:
        raise ImportError(_MISSING) from error

    path = files.check_output_path(path, "path")
    inference, kernels = inference_module.inference_model_and_kernels(model, float32=True)
    with tempfile.TemporaryDirectory() as directory:
        inference.export(directory, format="tf_saved_model", verbose=False)
        data = convert_saved_model(directory)
    files.atomic_write(path, data)
    ops = _op_counts(data)
    binary = ops.get("LceBconv2d", 0)
    report = export_report.size_report(
        path, "lce", inference, kernels,
        stored=lambda n, bits, slb: (n + 7) // 8 if slb and bits == 1 and binary else 4 * n,
    )
    return LCEReport(**dataclasses.asdict(report) | {"layers": report.layers}, ops=ops)


def _op_counts(data):
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(data)
    names = []
    for op in model.subgraphs[0].operators:
        code = model.operatorCodes[op.opcodeIndex]
        names.append(code.customCode.decode() if code.customCode else
                     flatbuffer_utils.opcode_to_name(model, op.opcodeIndex))
    return dict(collections.Counter(names))
