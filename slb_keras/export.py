"""Export of the hard-quantized network: the overview and the command line.

Training keeps 2**b logits per weight; the deployed network keeps only the hard
weights W_h = v[argmax_k A_k]. The export modules, each of one concern (imports
run downwards in this list):

- `slb_keras.files`: a checked output path and the atomic write.
- `slb_keras.export_report`: `ExportReport` / `LayerExport`, the size report
  every export returns.
- `slb_keras.inference_model`: `to_inference_model(model)`, the network as a
  Functional model of stock Keras layers (and BN folding).
- `slb_keras.tflite_flatbuffer`: the edit of the converted TFLite flatbuffer
  that stores SLB kernels as exact integer codes, and its read-back check.
- `slb_keras.tflite_export`: `export_tflite(model, path)`.
- `slb_keras.packed`: `export_packed` / `load_packed`, b-bit codes (the true
  32/b compression).

This module re-exports the public names and is the command line (the `.keras`
file is loaded in safe mode; a model file that is not a readable .keras archive, or
an output that is the model or the other output, after resolving links, is refused
with status 2 and nothing written; the arguments are checked before Keras and
TensorFlow are imported):

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
    "ExportReport": "slb_keras.export_report",
    "LayerExport": "slb_keras.export_report",
    "export_packed": "slb_keras.packed",
    "export_tflite": "slb_keras.tflite_export",
    "load_packed": "slb_keras.packed",
    "to_inference_model": "slb_keras.inference_model",
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

# `slb_keras.tflite_export.ARITHMETIC` (a test checks that they agree).
_ARITHMETIC = ("auto", "integer", "float")


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

        from slb_keras import packed
        from slb_keras import tflite_export
        # The classes a saved model may name register themselves when their module is
        # imported: import them here rather than rely on the package's __init__.
        from slb_keras import initializers  # noqa: F401
        from slb_keras import layers  # noqa: F401
        from slb_keras import normalization  # noqa: F401
        from slb_keras import optimizers  # noqa: F401
        from slb_keras import quantizers  # noqa: F401
        from slb_keras import ste  # noqa: F401

        try:
            model = keras.models.load_model(args.model)
        except Exception as error:  # noqa: BLE001 - any loading failure is bad input
            raise ValueError(
                f"Invalid --model={args.model!r}: the file exists but cannot be read as a Keras model ({error})."
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
