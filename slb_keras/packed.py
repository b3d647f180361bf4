"""The packed format (SLB kernels as b-bit codes: the true 32/b compression) and sizes.

`export_packed(model, path)` writes the inference model of `to_inference_model`
with every SLB kernel stored as its integer codes q = argmax_k A_k, b bits each;
`load_packed(path)` rebuilds that inference model exactly (same layers, weights
equal bit for bit, so equal predictions). Loading needs numpy and Keras only.

File format (version 1). A ZIP archive, members stored uncompressed with a
fixed timestamp (the same model gives the same bytes):

- `manifest.json`, UTF-8 JSON:

      {"format": "slb_keras.packed", "version": 1,
       "model": <the inference model's Keras config, as `model.to_json()`>,
       "weights": [<one entry per variable, in `model.weights` order>]}

  Every entry has "path" (the variable's `path`, e.g. "dense/kernel"),
  "shape" (list of ints), "dtype" (e.g. "float32"), "member" (the archive
  member holding its data) and "encoding":

  - "raw": the member is a `.npy` file (numpy format, read with
    allow_pickle=False) holding the array itself;
  - "codes": an SLB kernel. Extra keys: "bits" (b, 1..8), "values" (the
    value set v_0 < ... < v_{m-1}, m = 2**b, float32 numbers written as
    decimals that parse back to the same float32), "layer" (the SLB layer
    it came from). The member holds the codes q in 0..m-1 of the kernel in
    C (row-major) order, each written as b bits, most significant bit first,
    concatenated and zero-padded to a whole byte: ceil(n * b / 8) bytes for
    n weights. The kernel is values[q], reshaped to "shape".

- `weights/<i>.npy` and `weights/<i>.bin`: the data of entry i.

Example:

>>> codes = np.array([0, 3, 1, 2, 3])
>>> data = pack_codes(codes, bits=2)
>>> len(data), unpack_codes(data, bits=2, count=5).tolist()
(2, [0, 3, 1, 2, 3])
"""

import io
import json
import math
import os
import zipfile

import keras
import numpy as np

from slb_keras import export_report
from slb_keras import files
from slb_keras import inference_model as inference_module
from slb_keras import value_sets

FORMAT = "slb_keras.packed"
VERSION = 1
_MANIFEST = "manifest.json"
_DATE_TIME = (1980, 1, 1, 0, 0, 0)


# -- bit packing -------------------------------------------------------------------


def pack_codes(codes, bits):
    """Packs integer codes 0..2**bits-1 into bytes, `bits` bits each, MSB first.

    Args:
        codes: integer array (any shape; packed in C order).
        bits: bits per code, 1 to 8.

    Returns:
        `bytes` of length ceil(codes.size * bits / 8), zero-padded.

    Raises:
        ValueError: for bits outside 1..8 or a code that does not fit.

    Example:

    >>> pack_codes([1, 0, 1, 1], bits=1)
    b'\\xb0'
    """
    bits = value_sets.validate_bits(bits, "bits")
    codes = np.asarray(codes).ravel()
    if codes.size and (codes.min() < 0 or codes.max() >= 2**bits):
        raise ValueError(
            f"Invalid codes: values must lie in [0, {2**bits - 1}] for bits={bits}, "
            f"got range [{codes.min()}, {codes.max()}]."
        )
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint8)
    bit_array = (codes.astype(np.uint8)[:, None] >> shifts) & np.uint8(1)
    return np.packbits(bit_array.ravel()).tobytes()


def unpack_codes(data, bits, count):
    """Inverse of `pack_codes`: `count` codes of `bits` bits from `data`.

    Returns:
        An int32 array of shape (count,).

    Raises:
        ValueError: if `data` holds fewer than count * bits bits.

    Example:

    >>> unpack_codes(b"\\xb0", bits=1, count=4).tolist()
    [1, 0, 1, 1]
    """
    bits = value_sets.validate_bits(bits, "bits")
    data = np.frombuffer(bytes(data), np.uint8)
    if data.size != math.ceil(count * bits / 8):
        raise ValueError(
            f"Invalid packed data: {data.size} bytes for {count} codes of {bits} bits; "
            f"expected {math.ceil(count * bits / 8)}."
        )
    bit_array = np.unpackbits(data, count=count * bits).reshape(count, bits)
    weights = (1 << np.arange(bits - 1, -1, -1)).astype(np.int32)
    return bit_array.astype(np.int32) @ weights


# -- the packed file -----------------------------------------------------------------


def export_packed(model, path):
    """Writes the hard-quantized network with b-bit codes for every SLB kernel.

    See the module docstring for the format; `load_packed` reads it back.
    Layers of a mixed-precision model are stored computing in float32, as in
    `export_tflite`.

    Args:
        model: a built Sequential/Functional model with SLB layers (a model
            without any is written with float weights only, with a warning).
        path: the file to write (atomically; a failed export leaves no file).

    Returns:
        An `ExportReport` with format "packed".

    Raises:
        ValueError: bad model (see `to_inference_model`) or path.

    Example:

    >>> model = keras.Sequential([keras.Input((8,)), slb_keras.SLBDense(4, wbits=1)])
    >>> report = slb_keras.export_packed(model, "model.slb")
    >>> rebuilt = slb_keras.load_packed("model.slb")
    >>> bool(np.all(rebuilt.layers[-1].kernel.numpy() == model.layers[-1].hard_kernel().numpy()))
    True
    """
    path = files.check_output_path(path, "path")
    inference, kernels = inference_module.inference_model_and_kernels(model, float32=True)
    by_variable = {id(entry.layer.kernel): entry for entry in kernels}
    entries, members = [], []
    for i, variable in enumerate(inference.weights):
        array = keras.ops.convert_to_numpy(variable)
        entry = {"path": variable.path, "shape": list(array.shape), "dtype": array.dtype.name}
        kernel = by_variable.get(id(variable))
        if kernel is None:
            buffer = io.BytesIO()
            np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
            entry.update(member=f"weights/{i}.npy", encoding="raw")
            members.append((entry["member"], buffer.getvalue()))
        else:
            values = value_sets.value_set(kernel.wbits)
            if not np.array_equal(values[kernel.codes], array):
                raise RuntimeError(f"Kernel of {kernel.source!r} is not its hard codes.")
            entry.update(
                member=f"weights/{i}.bin",
                encoding="codes",
                bits=kernel.wbits,
                values=[float(v) for v in values],
                layer=kernel.source,
            )
            members.append((entry["member"], pack_codes(kernel.codes, kernel.wbits)))
        entries.append(entry)
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "model": json.loads(inference.to_json()),
        "weights": entries,
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, data in [(_MANIFEST, json.dumps(manifest).encode("utf-8"))] + members:
            archive.writestr(zipfile.ZipInfo(name, date_time=_DATE_TIME), data)
    files.atomic_write(path, buffer.getvalue())
    return export_report.size_report(
        path, "packed", inference, kernels, stored=lambda n, bits, slb: math.ceil(n * bits / 8)
    )


def load_packed(path):
    """Rebuilds the inference model written by `export_packed`.

    Args:
        path: a packed file.

    Returns:
        The Functional Keras model of stock layers, with weights equal bit for
        bit to `to_inference_model(model)`'s.

    Raises:
        ValueError: if `path` is not a packed file of a supported version, or
            is inconsistent (a missing member, a wrong size or shape).

    Example:

    >>> model = keras.Sequential([keras.Input((8,)), slb_keras.SLBDense(4, wbits=2)])
    >>> _ = slb_keras.export_packed(model, "model.slb")
    >>> slb_keras.load_packed("model.slb").output_shape
    (None, 4)
    """
    try:
        archive = zipfile.ZipFile(os.fspath(path))
    except (OSError, zipfile.BadZipFile, TypeError) as error:
        raise ValueError(f"Invalid path={path!r}: not a packed model file ({error}).") from error
    with archive:
        try:
            manifest = json.loads(archive.read(_MANIFEST))
        except (KeyError, ValueError) as error:
            raise ValueError(f"Invalid path={path!r}: no readable {_MANIFEST}.") from error
        if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
            raise ValueError(
                f"Invalid path={path!r}: format {manifest.get('format')!r} version "
                f"{manifest.get('version')!r}; expected {FORMAT!r} version {VERSION}."
            )
        model = keras.models.model_from_json(json.dumps(manifest["model"]))
        entries = manifest["weights"]
        if [e["path"] for e in entries] != [v.path for v in model.weights]:
            raise ValueError(f"Invalid path={path!r}: the weights do not match the model.")
        for variable, entry in zip(model.weights, entries):
            variable.assign(_read_weight(archive, entry, path))
    return model


def _read_weight(archive, entry, path):
    data = archive.read(entry["member"])
    shape = tuple(entry["shape"])
    if entry["encoding"] == "raw":
        array = np.load(io.BytesIO(data), allow_pickle=False)
    elif entry["encoding"] == "codes":
        values = np.asarray(entry["values"], np.float32)
        if values.size != 2 ** entry["bits"]:
            raise ValueError(f"Invalid path={path!r}: bad value set for {entry['path']!r}.")
        codes = unpack_codes(data, entry["bits"], math.prod(shape))
        array = values[codes].reshape(shape)
    else:
        raise ValueError(f"Invalid path={path!r}: unknown encoding {entry['encoding']!r}.")
    if array.shape != shape or array.dtype.name != entry["dtype"]:
        raise ValueError(f"Invalid path={path!r}: bad shape or dtype for {entry['path']!r}.")
    return array
