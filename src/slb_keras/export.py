"""Export of the hard-quantized network: the overview and the command line.

Training keeps 2**b logits per weight; the deployed network keeps only the hard
weights W_h = v[argmax_k A_k]. The export modules, each of one concern (imports
run downwards in this list):

- `slb_keras.files`: a checked output path and the atomic write.
- `slb_keras.deploy.export_report`: `ExportReport` / `LayerExport`, the size report
  every export returns.
- `slb_keras.deploy.inference_model`: `to_inference_model(model)`, the network as a
  Functional model of stock Keras layers (and BN folding).
- `slb_keras.deploy.tflite_flatbuffer`: the edit of the converted TFLite flatbuffer
  that stores SLB kernels as exact integer codes, and its read-back check.
- `slb_keras.deploy.tflite_export`: `export_tflite(model, path)`.
- `slb_keras.deploy.packed`: `export_packed` / `load_packed`, b-bit codes (the true
  32/b compression).

This module re-exports the public names and is the command line (the `.keras`
file is loaded in safe mode; a model file that is not a readable .keras archive or
whose zip directory declares more than a model takes (a zip bomb), an output that is
the model or the other output, after resolving links, or an output that cannot be
written, is refused with status 2, one line and nothing written; the arguments are
checked before Keras and TensorFlow are imported):

    python -m slb_keras.export --model=PATH.keras --out=PATH.tflite [--packed=PATH.slb]

Options: --arithmetic=auto|integer|float (see `export_tflite`), --quantize_full_precision.

Example:

>>> from slb_keras.export import export_tflite
>>> model = keras.Sequential([keras.Input((8,)), slb_keras.SLBDense(4, wbits=1)])
>>> print(export_tflite(model, "model.tflite").layers[0].kind)
SLBDense
"""

import argparse
import os
import sys
import warnings
import zipfile

# The public names, imported on first use: the command line parses and checks its
# arguments before it imports Keras and TensorFlow (`--help` and bad input stay fast).
_PUBLIC = {
    "ExportReport": "slb_keras.deploy.export_report",
    "LayerExport": "slb_keras.deploy.export_report",
    "export_packed": "slb_keras.deploy.packed",
    "export_tflite": "slb_keras.deploy.tflite_export",
    "load_packed": "slb_keras.deploy.packed",
    "to_inference_model": "slb_keras.deploy.inference_model",
}

__all__ = [
    "ExportReport",
    "LayerExport",
    "export_packed",
    "export_tflite",
    "load_packed",
    "main",
    "to_inference_model",
]

# `slb_keras.deploy.tflite_export.ARITHMETIC` (a test checks that they agree).
_ARITHMETIC = ("auto", "integer", "float")
# The sizes a .keras archive's directory may declare, checked before Keras reads a byte:
# its JSON members (config.json, metadata.json: a model config is kilobytes), and all
# members together (Keras stores them uncompressed, so at most the archive's own size;
# a re-zipped model may be deflated, by far less than this ratio).
_MAX_JSON_MEMBER_BYTES = 64 * 2**20
_MAX_EXPANSION = 16
_MIN_EXPANDED_LIMIT = 256 * 2**20


def __getattr__(name):
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_PUBLIC})


# -- command line ----------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _same_file(a, b):
    """True if paths `a` and `b` name one file (after links; hard links too)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one does not exist yet
        return False


def _check_distinct_paths(args):
    """Outputs may overwrite neither the model nor each other."""
    named = [("--model", args.model), ("--out", args.out)]
    if args.packed is not None:
        named.append(("--packed", args.packed))
    for i, (name, path) in enumerate(named[1:], start=1):
        for other_name, other in named[:i]:
            if _same_file(path, other):
                raise ValueError(
                    f"Invalid {name}={path!r}: it is the same file as {other_name}={other!r}; "
                    "the outputs must differ from the model and from each other."
                )


def _check_model_file(path):
    """A ValueError unless `path` is an existing, readable .keras (zip) archive."""
    if not path.endswith(".keras") or not os.path.isfile(path):
        raise ValueError(f"Invalid --model={path!r}: expected an existing .keras file.")
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as file:
            is_zip = zipfile.is_zipfile(file)
    except OSError as error:
        raise ValueError(
            f"Invalid --model={path!r}: the file exists but cannot be read ({error.strerror})."
        ) from None
    if not is_zip:
        problem = "it is empty" if size == 0 else "it is not a zip archive; a .keras file is one"
        raise ValueError(
            f"Invalid --model={path!r}: the file exists but cannot be read as a Keras model ({problem})."
        )
    problem = _zip_size_problem(path, size)
    if problem:
        raise ValueError(
            f"Invalid --model={path!r}: the file is not read as a Keras model ({problem})."
        )


def _zip_size_problem(path, size):
    """Why the sizes the zip directory of `path` (`size` bytes) declares are not a model's
    (a zip bomb: a small archive declaring gigabytes), or None; reads the directory only."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (OSError, zipfile.BadZipFile, ValueError) as error:
        return f"its zip directory cannot be read: {_reason(error)}"
    for member in members:
        if member.filename.endswith(".json") and member.file_size > _MAX_JSON_MEMBER_BYTES:
            return (
                f"its {member.filename} declares {member.file_size} bytes, more than the "
                f"{_MAX_JSON_MEMBER_BYTES} a model's JSON may take; a zip bomb?"
            )
    declared = sum(member.file_size for member in members)
    limit = max(_MAX_EXPANSION * size, _MIN_EXPANDED_LIMIT)
    if declared > limit:
        return (
            f"its {len(members)} members declare {declared} bytes in all, more than "
            f"{_MAX_EXPANSION} times the archive's {size}; a zip bomb?"
        )
    return None


def _reason(error):
    """The message of `error`, or its class name when it has none."""
    text = " ".join(str(error).split())
    return text if text and text != "()" else type(error).__name__


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
    parser.add_argument(
        "--arithmetic",
        choices=_ARITHMETIC,
        default="auto",
        help="SLB layers with sign inputs in integer arithmetic where exact (auto), "
        "everywhere (integer) or nowhere (float: DEQUANTIZE)",
    )
    args = parser.parse_args(argv)
    try:
        _check_model_file(args.model)
        from slb_keras import files

        files.check_output_path(args.out, "--out")
        if args.packed is not None:
            files.check_output_path(args.packed, "--packed")
        _check_distinct_paths(args)
        # The arguments are good: now Keras and TensorFlow.
        import keras

        from slb_keras.deploy import inference_model
        from slb_keras.deploy import packed
        from slb_keras.deploy import tflite_export
        # The classes a saved model may name register themselves when their module is
        # imported: import them here rather than rely on the package's __init__.
        from slb_keras.core import initializers  # noqa: F401
        from slb_keras import layers  # noqa: F401
        from slb_keras.core import normalization  # noqa: F401
        from slb_keras.core import optimizers  # noqa: F401
        from slb_keras.core import quantizers  # noqa: F401

        try:
            model = keras.models.load_model(args.model)
        except Exception as error:  # noqa: BLE001 - any loading failure is bad input
            raise ValueError(
                f"Invalid --model={args.model!r}: the file exists but cannot be read as a Keras "
                f"model ({_reason(error)})."
            ) from error
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            report = tflite_export.export_tflite(
                model, args.out, args.quantize_full_precision, args.arithmetic
            )
            if args.packed is not None:
                packed_report = packed.export_packed(model, args.packed)
        notices = []
        for warning in caught:
            if issubclass(warning.category, inference_model.NoSLBLayersWarning):
                if str(warning.message) not in notices:
                    notices.append(str(warning.message))
            else:
                warnings.warn_explicit(
                    warning.message, warning.category, warning.filename, warning.lineno
                )
        for notice in notices:
            print(f"notice: {notice}", file=sys.stderr)
    except (ValueError, OSError) as error:
        parser.exit(2, f"{parser.prog}: error: {_message(error, args)}\n")
    print(report)
    if args.packed is not None:
        print(f"packed: {packed_report.file_bytes} B written to {packed_report.path}")
    return 0


def _message(error, args):
    """One line for `error`; a file that could not be written is named by its flag."""
    filename = getattr(error, "filename", None)
    if getattr(error, "strerror", None) and filename:
        for flag, path in (("--out", args.out), ("--packed", args.packed)):
            if path is not None and os.path.abspath(path) == os.path.abspath(os.fspath(filename)):
                return f"Invalid {flag}={path!r}: the file cannot be written there ({error.strerror})."
    return _reason(error)


if __name__ == "__main__":
    sys.exit(main())
