"""Exported size and LiteRT latency: float TFLite vs SLB TFLite vs packed codes.

For each --wbits, builds the same network with method "fp" and "slb", exports the
float network with the plain TFLiteConverter, the SLB network with
`slb_keras.export_tflite` (int8 codes, exact) and `slb_keras.export_packed`
(b-bit codes), and times single-image inference of both .tflite files with the
LiteRT interpreter, interleaved. Prints sizes (and their ratio to the float
TFLite), median latencies and their ratio, and writes JSON.

Example:

    python benchmarks/export_size.py --model=vgg_small --wbits=1,2,4 --runs=50 \
        --out=runs/export_size.json
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _common  # noqa: E402


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="vgg_small", choices=["vgg_small", "resnet20", "resnet18"])
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--wbits", default="1,2,4", type=lambda s: [int(b) for b in s.split(",")])
    parser.add_argument("--abits", type=int, default=32)
    parser.add_argument("--runs", type=int, default=50, help="timed inferences per model")
    parser.add_argument("--out", default=None, help="JSON output path")
    args = parser.parse_args(argv)
    if args.runs <= 0:
        parser.error("--runs must be > 0")
    return args


def _float_tflite(model, path):
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    with open(path, "wb") as f:
        f.write(converter.convert())
    return os.path.getsize(path)


def _interpreter(path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path, num_threads=1)
    interpreter.allocate_tensors()
    return interpreter


def _latencies(paths, shape, runs):
    """Interleaved single-image latency (seconds) of each .tflite file."""
    x = np.random.default_rng(0).normal(size=(1,) + shape).astype(np.float32)
    interpreters = {name: _interpreter(path) for name, path in paths.items()}
    times = {name: [] for name in paths}
    for _ in range(3):  # warm-up
        for interp in interpreters.values():
            interp.set_tensor(interp.get_input_details()[0]["index"], x)
            interp.invoke()
    for _ in range(runs):
        for name, interp in interpreters.items():
            interp.set_tensor(interp.get_input_details()[0]["index"], x)
            start = time.perf_counter()
            interp.invoke()
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def main(argv=None):
    args = _parse(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import models
    import slb_keras

    shape = (args.image_size, args.image_size, 3)
    num_classes = 1000 if args.model == "resnet18" else 10
    report = {"model": args.model, "image_size": args.image_size, "abits": args.abits, "rows": {}}
    with tempfile.TemporaryDirectory() as tmp:
        fp = models.get_model(args.model, method="fp", input_shape=shape, num_classes=num_classes)
        fp_path = os.path.join(tmp, "fp.tflite")
        fp_bytes = _float_tflite(fp, fp_path)
        report["float_tflite_bytes"] = fp_bytes
        for wbits in args.wbits:
            slb = models.get_model(args.model, method="slb", wbits=wbits, abits=args.abits,
                                   input_shape=shape, num_classes=num_classes)
            tfl_path = os.path.join(tmp, f"slb_w{wbits}.tflite")
            packed_path = os.path.join(tmp, f"slb_w{wbits}.npz")
            tfl = slb_keras.export_tflite(slb, tfl_path)
            packed = slb_keras.export_packed(slb, packed_path)
            assert tfl.file_bytes == os.path.getsize(tfl_path)
            assert packed.file_bytes == os.path.getsize(packed_path)
            lat = _latencies({"fp": fp_path, "slb": tfl_path}, shape, args.runs)
            report["rows"][f"W{wbits}"] = {
                "slb_tflite_bytes": tfl.file_bytes,
                "packed_bytes": packed.file_bytes,
                "ideal_packed_bytes": tfl.packed_bytes,
                "tflite_vs_float": tfl.file_bytes / fp_bytes,
                "packed_vs_float": packed.file_bytes / fp_bytes,
                "fp_latency_s": lat["fp"],
                "slb_latency_s": lat["slb"],
                "latency_ratio": lat["slb"] / lat["fp"],
            }
    print(f"{args.model} {shape}, abits {args.abits}: float TFLite {fp_bytes / 2**20:.2f} MiB")
    for label, row in report["rows"].items():
        print(f"  {label}: TFLite {row['slb_tflite_bytes'] / 2**20:6.2f} MiB "
              f"({100 * row['tflite_vs_float']:5.1f}% of float), packed "
              f"{row['packed_bytes'] / 2**20:6.3f} MiB ({100 * row['packed_vs_float']:4.1f}%), "
              f"LiteRT latency {1000 * row['slb_latency_s']:.2f} ms vs float "
              f"{1000 * row['fp_latency_s']:.2f} ms (x{row['latency_ratio']:.2f})")
    if args.out:
        _common.write_report(args.out, report)


if __name__ == "__main__":
    main()
