"""The size report of an export: `ExportReport` with a `LayerExport` per kernel.

Every export (`export_tflite`, `export_packed`, `export_lce`) returns an
`ExportReport`; `str(report)` is a table of the kernels (bits, values in use,
bytes as float32, in the file and ideally packed) and the totals.

Example:

>>> row = LayerExport("conv", "SLBConv2D", 1, 9, (-1.0, 1.0), 36, 9, 2)
>>> report = ExportReport("m.tflite", "tflite", (row,), file_bytes=100,
...                       float32_bytes=400, packed_bytes=2)
>>> report.compression
4.0
"""

import dataclasses
import math
import os

import keras
import numpy as np

from slb_keras import keras_private
from slb_keras.core import value_sets

# The TFLite converter's dynamic-range quantization leaves smaller weights float.
_DYNAMIC_RANGE_MIN_WEIGHTS = 1024


@dataclasses.dataclass(frozen=True)
class LayerExport:
    """Size and content of one kernel in an export.

    Attributes:
        name: layer name (the SLB layer's name for SLB kernels).
        kind: class of the source layer, e.g. "SLBConv2D" or "Dense".
        bits: weight bits in the export: the SLB `wbits`, 8 for a full-precision
            kernel quantized to int8, 32 for a float one.
        num_weights: number of kernel entries.
        values: the distinct values of W_h in use (empty for float kernels).
        float32_bytes: 4 * num_weights.
        stored_bytes: bytes the kernel takes in the exported file.
        packed_bytes: the size in the packed file: ceil(num_weights * bits / 8)
            for an SLB kernel, 4 * num_weights for a full-precision one.
    """

    name: str
    kind: str
    bits: int
    num_weights: int
    values: tuple
    float32_bytes: int
    stored_bytes: int
    packed_bytes: int


@dataclasses.dataclass(frozen=True)
class ExportReport:
    """What an export wrote: per-layer kernels and the totals.

    Attributes:
        path: the file written.
        format: "tflite" or "packed".
        layers: a `LayerExport` per Dense/Conv kernel (SLB or not).
        file_bytes: size of the written file, `os.path.getsize(path)`.
        float32_bytes: all parameters of the inference model at 4 bytes each.
        packed_bytes: the ideal packed size: b bits per SLB weight, 4 bytes per
            other parameter.
    """

    path: str
    format: str
    layers: tuple
    file_bytes: int
    float32_bytes: int
    packed_bytes: int

    @property
    def compression(self):
        """float32_bytes / file_bytes."""
        return self.float32_bytes / self.file_bytes if self.file_bytes else float("inf")

    def __str__(self):
        rows = [f"{'layer':<28} {'kind':<20} {'bits':>4} {'weights':>10} "
                f"{'float32 B':>11} {'stored B':>10} {'packed B':>10}  values"]
        for layer in self.layers:
            values = _format_values(layer.values, layer.bits) if layer.values else "float"
            rows.append(
                f"{layer.name:<28} {layer.kind:<20} {layer.bits:>4} {layer.num_weights:>10} "
                f"{layer.float32_bytes:>11} {layer.stored_bytes:>10} "
                f"{layer.packed_bytes:>10}  {values}"
            )
        rows.append(
            f"total: float32 {self.float32_bytes} B, {self.format} file {self.file_bytes} B "
            f"({100.0 * self.file_bytes / max(self.float32_bytes, 1):.1f}% of float32), "
            f"ideal packed {self.packed_bytes} B "
            f"({100.0 * self.packed_bytes / max(self.float32_bytes, 1):.1f}%): {self.path}"
        )
        return "\n".join(rows)


def _format_values(values, bits):
    m1 = 2**bits - 1
    if len(values) > 8:
        return f"{len(values)} of the {m1 + 1} values"
    integers = ", ".join(str(int(round(v * m1))) for v in values)
    return f"{{{integers}}}" + (f"/{m1}" if m1 > 1 else "")


def size_report(path, fmt, inference, kernels, stored, float_bits=32):
    """The ExportReport of a file written from `inference` and its SLB kernels.

    Args:
        path: the written file.
        fmt: the report's format name, e.g. "tflite".
        inference: the inference model that was written.
        kernels: its `SLBKernel`s (see `slb_keras.deploy.inference_model`).
        stored: (num_weights, bits, is_slb) -> bytes that kernel takes in the file.
        float_bits: 8 if full-precision kernels of >= 1024 weights were stored as
            int8 (the converter's dynamic-range rule), else 32.

    Example:

    >>> from slb_keras.deploy.inference_model import inference_model_and_kernels
    >>> model = keras.Sequential([keras.Input((16,)), slb_keras.SLBDense(8, wbits=1)])
    >>> inference, kernels = inference_model_and_kernels(model)
    >>> open("m.bin", "wb").write(bytes(16))
    16
    >>> report = size_report("m.bin", "bits", inference, kernels, lambda n, bits, slb: n * bits // 8)
    >>> report.layers[0].stored_bytes, report.file_bytes, report.packed_bytes
    (16, 16, 48)
    """
    by_layer = {id(entry.layer): entry for entry in kernels}
    rows = []
    slb_params = 0
    for layer in keras_private.flatten_layers(inference):
        if not isinstance(getattr(layer, "kernel", None), keras.Variable):
            continue
        n = int(np.prod(layer.kernel.shape))
        entry = by_layer.get(id(layer))
        if entry is not None:
            slb_params += n
            values = tuple(float(v) for v in value_sets.value_set(entry.wbits)[np.unique(entry.codes)])
            bits, name, kind = entry.wbits, entry.source, entry.kind
        else:
            values, name, kind = (), layer.name, type(layer).__name__
            quantized = float_bits == 8 and n >= _DYNAMIC_RANGE_MIN_WEIGHTS
            bits = 8 if quantized else 32
        rows.append(
            LayerExport(
                name=name,
                kind=kind,
                bits=bits,
                num_weights=n,
                values=values,
                float32_bytes=4 * n,
                stored_bytes=stored(n, bits, entry is not None),
                packed_bytes=math.ceil(n * bits / 8) if entry is not None else 4 * n,
            )
        )
    total = int(inference.count_params())
    packed = sum(math.ceil(e.codes.size * e.wbits / 8) for e in kernels) + 4 * (total - slb_params)
    return ExportReport(
        path=str(path),
        format=fmt,
        layers=tuple(rows),
        file_bytes=os.path.getsize(path),
        float32_bytes=4 * total,
        packed_bytes=packed,
    )
