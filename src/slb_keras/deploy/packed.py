"""The packed format (SLB kernels as b-bit codes: the true 32/b compression) and sizes.

`export_packed(model, path)` writes the inference model of `to_inference_model`
with every SLB kernel stored as its integer codes q = argmax_k A_k, b bits each;
`load_packed(path)` rebuilds that inference model exactly (same layers, weights
equal bit for bit, so equal predictions). Loading needs numpy and Keras only.

File format (version 2). A ZIP archive with a fixed timestamp (the same model
gives the same bytes); the manifest is deflated, the weight members are stored
uncompressed (so their sizes are bounded by the file's):

- `manifest.json`, compact UTF-8 JSON:

      {"format": "slb_keras.packed", "version": 2,
       "model": <the inference model's Keras config, as `model.to_json()`,
                 less "compile_config": no optimizer, loss or metrics>,
       "weights": [<one entry per variable, in `model.weights` order>]}

  Every entry has "path" (the variable's `path`, e.g. "dense/kernel"),
  "shape" (list of ints), "dtype" (e.g. "float32"), "member" (the archive
  member holding its data), "sha256" (the hex SHA-256 of that member) and
  "encoding":

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

`load_packed` trusts nothing in the file: every field is checked (the value
set must be `value_set(bits)`, each member must exist, have the size its shape
implies and its checksum) before a member is read, and a `.npy` header must
match its entry. The model config is rebuilt with its variables unallocated
and refused unless the weights it implies are the entries' (so a config
declaring a Dense with units=10**9 allocates nothing). Version 1 files (no
checksums, manifest stored) still load.

Example:

>>> codes = np.array([0, 3, 1, 2, 3])
>>> data = pack_codes(codes, bits=2)
>>> len(data), unpack_codes(data, bits=2, count=5).tolist()
(2, [0, 3, 1, 2, 3])
"""

import hashlib
import io
import json
import math
import os
import zipfile

import keras
import numpy as np
from slb_keras import keras_private
from slb_keras.deploy import export_report
from slb_keras import files
from slb_keras.deploy import inference_model as inference_module
from slb_keras.core import value_sets

FORMAT = "slb_keras.packed"  # the file format's name, kept when the module moved
VERSION = 2
_VERSIONS = (1, 2)
_MANIFEST = "manifest.json"
_MAX_MANIFEST_BYTES = 64 * 2**20
_MAX_NPY_HEADER = 4096
_DATE_TIME = (1980, 1, 1, 0, 0, 0)
_ENCODINGS = ("raw", "codes")
# Variables a rebuilt config may create besides its weights (e.g. a Dropout's
# seed state: 2 values).
_MAX_OTHER_VALUES = 2**16
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
        An `ExportReport` with format "packed". The file holds the network only:
        never the model's optimizer, loss or metrics (its Keras config without
        "compile_config"), so it loads wherever slb_keras is imported.

    Raises:
        ValueError: bad model (see `to_inference_model`) or a path that cannot
            be written (`files.OutputWriteError`, naming `path`).

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
            entry["sha256"] = hashlib.sha256(members[-1][1]).hexdigest()
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
            entry["sha256"] = hashlib.sha256(members[-1][1]).hexdigest()
        entries.append(entry)
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "model": _model_config(inference),
        "weights": entries,
    }
    text = json.dumps(manifest, separators=(",", ":")).encode("utf-8")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo(_MANIFEST, date_time=_DATE_TIME)
        info.compress_type = zipfile.ZIP_DEFLATED
        archive.writestr(info, text, compresslevel=9)
        for name, data in members:
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
        bit to `to_inference_model(model)`'s; not compiled (a "compile_config"
        that files written before it was left out hold is ignored).

    Raises:
        ValueError: if `path` is not a packed file of a supported version, or
            is inconsistent (a missing member, a wrong size, shape or
            checksum, a model config implying other weights than the
            manifest's: checked before any weight is allocated).

    Example:

    >>> model = keras.Sequential([keras.Input((8,)), slb_keras.SLBDense(4, wbits=2)])
    >>> _ = slb_keras.export_packed(model, "model.slb")
    >>> slb_keras.load_packed("model.slb").output_shape
    (None, 4)
    """
    try:
        archive = zipfile.ZipFile(os.fspath(path))
    except (OSError, zipfile.BadZipFile, TypeError, ValueError) as error:
        raise ValueError(f"Invalid path={path!r}: not a packed model file ({error}).") from error
    with archive:
        try:
            return _load(archive, path)
        except (zipfile.BadZipFile, OSError, EOFError) as error:  # e.g. a CRC mismatch
            raise ValueError(f"Invalid path={path!r}: a damaged member ({error}).") from error


def _load(archive, path):
    def bad(why):
        return ValueError(f"Invalid path={path!r}: {why}.")

    manifest = json.loads(_read_member(archive, _MANIFEST, None, _MAX_MANIFEST_BYTES, bad) or b"null")
    if not isinstance(manifest, dict):
        raise bad(f"{_MANIFEST} is a {type(manifest).__name__}, not an object")
    if manifest.get("format") != FORMAT or manifest.get("version") not in _VERSIONS:
        raise bad(
            f"format {manifest.get('format')!r} version {manifest.get('version')!r}; "
            f"expected {FORMAT!r} version {' or '.join(map(str, _VERSIONS))}"
        )
    entries = manifest.get("weights")
    if not isinstance(entries, list) or not isinstance(manifest.get("model"), dict):
        raise bad(f"{_MANIFEST} needs a \"model\" object and a \"weights\" list")
    arrays = [_read_weight(archive, entry, manifest["version"], bad) for entry in entries]
    # Every member was checked against its entry and read within its size; only
    # now is the model built, and its variables take memory only once their
    # shapes are those of the entries.
    model = _build_model(_without_compile(manifest["model"]), entries, bad)
    for variable, array in zip(model.weights, arrays):
        variable.assign(array)
    return model


def _model_config(model):
    """The Keras config of `model` (as `model.to_json()`) without its "compile_config":
    a packed file holds the network, never an optimizer, loss or metrics (a compiled
    model's optimizer may be a class only its training code registers)."""
    return _without_compile(json.loads(model.to_json()))


def _without_compile(config):
    """`config` less its top-level "compile_config" (packed files written before
    the optimizer was left out hold one; loading ignores it)."""
    return {key: value for key, value in config.items() if key != "compile_config"}


def _build_model(config, entries, bad):
    """The model of `config`, its variables allocated only if they match `entries`.

    The config is rebuilt in a `keras.StatelessScope`, where Keras creates
    variables with their shapes but no memory. A config that implies other
    weights than the manifest's entries hold (e.g. a Dense with units=10**9:
    its kernel would need gigabytes no member holds) is refused before
    anything is allocated.
    """
    pending = keras_private.unallocated_variables()
    try:
        with keras.StatelessScope(initialize_variables=False):
            try:
                model = keras.models.model_from_json(json.dumps(config))
            except Exception as error:  # noqa: BLE001 - any config Keras refuses is bad input
                raise bad(f"the model config does not load ({error})") from error
            created = [
                v for v in keras_private.unallocated_variables()
                if not any(v is p for p in pending)
            ]
            _check_implied_weights(model, created, entries, bad)
    except BaseException:
        # Forget the unallocated variables, or the next StatelessScope to close
        # (any later symbolic call) would allocate them.
        keras_private.set_unallocated_variables(pending)
        raise
    with keras.StatelessScope():  # closing it allocates the (now bounded) variables
        pass
    return model


def _check_implied_weights(model, created, entries, bad):
    """Raises `bad` unless the model's weights are the entries' (paths and shapes)."""
    implied = [(v.path, tuple(v.shape)) for v in model.weights]
    held = [(e["path"], tuple(e["shape"])) for e in entries]
    for i, (want, have) in enumerate(zip(implied, held)):
        if want != have:
            raise bad(
                f"the model config implies weight {i} {want[0]!r} of shape {want[1]} "
                f"({math.prod(want[1])} values), but the manifest's entry {i} is {have[0]!r} "
                f"of shape {have[1]}"
            )
    if len(implied) != len(held):
        raise bad(
            f"the model config implies {len(implied)} weights, but the manifest holds {len(held)}"
        )
    weights = {id(v) for v in model.weights}
    other = sum(math.prod(v.shape) for v in created if id(v) not in weights)
    if other > _MAX_OTHER_VALUES:
        raise bad(
            f"the model config creates {other} values in variables other than its weights "
            f"(seed states and the like), more than {_MAX_OTHER_VALUES}"
        )


def _read_member(archive, name, size, limit, bad):
    """The bytes of member `name`: `size` of them if given, at most `limit`."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise bad(f"no member {name!r}") from None
    if size is not None:
        if info.compress_type != zipfile.ZIP_STORED or info.file_size != size:
            raise bad(f"member {name!r} holds {info.file_size} bytes; its entry implies {size}, stored")
    elif info.file_size > limit:
        raise bad(f"member {name!r} claims {info.file_size} bytes, more than {limit}")
    with archive.open(info) as member:
        data = member.read((size if size is not None else limit) + 1)
    if len(data) != info.file_size:
        raise bad(f"member {name!r} does not hold the {info.file_size} bytes it claims")
    return data


def _read_weight(archive, entry, version, bad):
    if not isinstance(entry, dict):
        raise bad(f"a weights entry is a {type(entry).__name__}, not an object")
    name = entry.get("path")
    shape, dtype, member = entry.get("shape"), entry.get("dtype"), entry.get("member")
    encoding = entry.get("encoding")
    if not isinstance(name, str) or not isinstance(member, str):
        raise bad(f"entry {name!r} needs a \"path\" and a \"member\" string")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise bad(f"entry {name!r}: shape {shape!r} is not a list of non-negative ints")
    if dtype not in ("float32", "float16", "float64", "int32", "int64") or encoding not in _ENCODINGS:
        raise bad(f"entry {name!r}: dtype {dtype!r} / encoding {encoding!r} not supported")
    checksum = entry.get("sha256")
    if version >= 2 and not (isinstance(checksum, str) and len(checksum) == 64):
        raise bad(f"entry {name!r} has no sha256 checksum")
    n = math.prod(shape)
    if encoding == "codes":
        bits = entry.get("bits")
        if type(bits) is not int or not 1 <= bits <= 8:
            raise bad(f"entry {name!r}: bits {bits!r} not in 1..8")
        values = value_sets.value_set(bits)
        if not isinstance(entry.get("values"), list) or not np.array_equal(
            np.asarray(entry["values"], np.float64).astype(np.float32), values
        ) or dtype != "float32":
            raise bad(f"entry {name!r}: the values are not value_set({bits}) as float32")
        data = _read_member(archive, member, math.ceil(n * bits / 8), None, bad)
    else:
        info = archive.getinfo(member) if member in archive.namelist() else None
        if info is None:
            raise bad(f"no member {member!r}")
        body = n * np.dtype(dtype).itemsize
        if not body < info.file_size <= body + _MAX_NPY_HEADER:
            raise bad(f"member {member!r} holds {info.file_size} bytes; shape {shape} implies {body} + header")
        data = _read_member(archive, member, info.file_size, None, bad)
    if checksum is not None and hashlib.sha256(data).hexdigest() != checksum:
        raise bad(f"member {member!r} does not match its sha256")
    if encoding == "codes":
        return values[unpack_codes(data, bits, n)].reshape(shape)
    stream = io.BytesIO(data)
    try:
        major, _ = np.lib.format.read_magic(stream)
        header = (np.lib.format.read_array_header_1_0 if major == 1 else
                  np.lib.format.read_array_header_2_0)(stream)
    except ValueError as error:
        raise bad(f"member {member!r} is not a .npy file ({error})") from error
    if header != (tuple(shape), False, np.dtype(dtype)) or len(data) - stream.tell() != body:
        raise bad(f"member {member!r}: its header {header} does not match its entry")
    return np.frombuffer(data, dtype, count=n, offset=stream.tell()).reshape(shape)
