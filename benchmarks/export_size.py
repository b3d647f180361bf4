"""Exported size, LiteRT latency and agreement: float TFLite vs SLB exports, one table.

For one network (a trained `.keras` file, or a freshly built VGG-Small /
ResNet-20 / MobileNetV2 converted by `quantize_model`), writes

- "float": the inference model (`to_inference_model`, W_h as float32) through the
  plain `tf.lite.TFLiteConverter`;
- "dequantize": `export_tflite(arithmetic="float")` (int8 codes + DEQUANTIZE);
- "integer": `export_tflite()` (the integer route where it is exact);
- "packed": `export_packed` (size only);
- "lce": `export_lce` when larq-compute-engine is installed (size and ops; its
  latency and outputs come from `--lce_python`, a Python with LCE's interpreter,
  which needs numpy < 2: there the LCE file runs interleaved with the float file,
  both in LCE's interpreter, and its ratio is to that float run);

then times single-image inference of each .tflite file with the LiteRT
interpreter (one thread), interleaved round by round, and compares each file's
outputs with the Keras hard network (`model.predict`) on real images (the digits
test set, as load_digits returns them when the model normalizes its input, as train.py's
models do, else normalized by the training set's channel mean / std) or random ones:
top-1 agreement and max |diff|. Prints one table and writes JSON.

Example:

    python benchmarks/export_size.py --model_path=/tmp/vgg_w1a1_digits/model.keras \\
        --dataset=digits --runs=100 --out=runs/export_size.json
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _common  # noqa: E402

_TFLITE = ("float", "dequantize", "integer")


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model_path", default=None, help="a trained .keras file (else --model)")
    parser.add_argument("--model", default="vgg_small", choices=["vgg_small", "resnet20", "mobilenet_v2"])
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--wbits", type=int, default=1)
    parser.add_argument("--abits", type=int, default=1, help="1 or 32 (mobilenet_v2: 32)")
    parser.add_argument("--dataset", default="random", choices=["random", "digits"])
    parser.add_argument("--images", type=int, default=0, help="images to compare (0: all)")
    parser.add_argument("--runs", type=int, default=50, help="timed rounds (one image per file each)")
    parser.add_argument("--lce_python", default=None,
                        help="a Python with larq-compute-engine, numpy < 2 and tqdm (no TensorFlow needed)")
    parser.add_argument("--out", default=None, help="JSON output path")
    args = parser.parse_args(argv)
    if args.runs <= 0:
        parser.error(f"--runs={args.runs} must be > 0")
    if args.image_size < 8:
        parser.error(f"--image_size={args.image_size} must be >= 8")
    return args


def _network(args):
    import keras

    import models
    import slb_keras

    if args.model_path:
        return keras.models.load_model(args.model_path, compile=False)  # no optimizer needed
    shape = (args.image_size, args.image_size, 3)
    if args.model == "mobilenet_v2":
        float_model = keras.applications.MobileNetV2(
            input_shape=shape, weights=None, classes=10, alpha=1.0, classifier_activation=None
        )
        return slb_keras.quantize_model(float_model, wbits=args.wbits, abits=32)  # BN: see main
    return models.get_model(args.model, method="slb", wbits=args.wbits, abits=args.abits,
                            input_shape=shape, num_classes=10)


def _images(args, shape, model):
    if args.dataset == "digits":
        from models import method as method_lib
        from slb_keras.datasets import load_digits

        (x_train, _), (x_test, _) = load_digits(image_size=shape[0], channels=shape[-1])
        if method_lib.normalizes_input(model):
            return x_test[: args.images] if args.images else x_test  # the model normalizes
        # A model without its normalization (built here, or by train.py before it had one):
        # the training-set channel mean / std.
        mean = x_train.mean(axis=(0, 1, 2), dtype=np.float64)
        std = np.maximum(x_train.std(axis=(0, 1, 2), dtype=np.float64), 1e-3)
        x = ((x_test - mean) / std).astype(np.float32)
    else:
        x = np.random.default_rng(0).normal(size=(128,) + shape).astype(np.float32)
    return x[: args.images] if args.images else x


def _float_tflite(inference, path):
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(inference)
    data = converter.convert()
    with open(path, "wb") as f:
        f.write(data)


def _interpreter(path, batch=1):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path, num_threads=1)
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, (batch,) + tuple(interpreter.get_input_details()[0]["shape"][1:]))
    interpreter.allocate_tensors()
    return interpreter


def _predict(path, x):
    interpreter = _interpreter(path, len(x))
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def _latencies(paths, x, runs):
    """Interleaved single-image latency (seconds) of each .tflite file, per round."""
    interpreters = {name: _interpreter(path) for name, path in paths.items()}
    times = {name: [] for name in paths}
    for round_index in range(runs + 3):  # 3 warm-up rounds
        image = x[round_index % len(x)][None]
        for name, interp in interpreters.items():
            interp.set_tensor(interp.get_input_details()[0]["index"], image)
            start = time.perf_counter()
            interp.invoke()
            if round_index >= 3:
                times[name].append(time.perf_counter() - start)
    return times


def summarize(times, reference="float"):
    """Median and IQR (seconds) per config; the median of per-round ratios to `reference`."""
    out = {}
    for name, t in times.items():
        t = np.asarray(t)
        q1, median, q3 = np.percentile(t, [25, 50, 75])
        ratios = t / np.asarray(times[reference])
        out[name] = {"median_s": float(median), "iqr_s": float(q3 - q1),
                     "ratio_to_float": float(np.median(ratios))}
    return out


def _agreement(expected, actual, tolerance=1e-4):
    """Top-1 agreement, max |diff|, and the samples off by more than `tolerance` of the scale.

    `tolerance` is the export tests' (tests/test_export.py: assert_tflite_matches).
    """
    scale = float(np.max(np.abs(expected)))
    errors = np.max(np.abs(expected - actual), axis=-1)
    return {
        "top1_agreement": float(np.mean(expected.argmax(-1) == actual.argmax(-1))),
        "max_abs_diff": float(errors.max()),
        "output_scale": scale,
        "samples_over_tolerance": int(np.sum(errors > tolerance * scale)),
    }


def _lce_run(python, path, float_path, x, runs):
    """LCE's outputs and latency, from a Python that has LCE's interpreter.

    In that process the LCE file and the float TFLite file run interleaved, one
    image per round, both in LCE's interpreter (which runs stock files too):
    returns (LCE times, float times, LCE outputs).
    """
    with tempfile.TemporaryDirectory() as tmp:
        np.save(os.path.join(tmp, "x.npy"), x)
        code = (
            "import importlib.util, json, sys, time, types, numpy as np\n"
            # The package's __init__ imports the converter (and TensorFlow): skip it.
            "spec = importlib.util.find_spec('larq_compute_engine')\n"
            "package = types.ModuleType('larq_compute_engine')\n"
            "package.__path__ = list(spec.submodule_search_locations)\n"
            "sys.modules['larq_compute_engine'] = package\n"
            "from larq_compute_engine.tflite.python.interpreter import Interpreter\n"
            "x = np.load(sys.argv[3])\n"
            "def make(p):\n"
            "    return Interpreter(open(p, 'rb').read(), num_threads=1, use_indirect_bgemm=True,"
            " use_xnnpack=True)\n"
            "lce, fp = make(sys.argv[1]), make(sys.argv[2])\n"
            "y = np.concatenate([lce.predict(x[i:i + 1]) for i in range(len(x))])\n"
            "np.save(sys.argv[4], y)\n"
            "t = {'lce': [], 'float': []}\n"
            "for i in range(int(sys.argv[5]) + 3):\n"
            "    for name, it in (('float', fp), ('lce', lce)):\n"
            "        s = time.perf_counter(); it.predict(x[i % len(x)][None])\n"
            "        t[name].append(time.perf_counter() - s)\n"
            "print(json.dumps({k: v[3:] for k, v in t.items()}))\n"
        )
        result = subprocess.run(
            [python, "-c", code, path, float_path, os.path.join(tmp, "x.npy"),
             os.path.join(tmp, "y.npy"), str(runs)],
            check=True, capture_output=True, text=True,
        )
        times = json.loads(result.stdout.strip().splitlines()[-1])
        return times["lce"], times["float"], np.load(os.path.join(tmp, "y.npy"))


def main(argv=None):
    args = _parse(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import slb_keras

    model = _network(args)
    shape = tuple(model.inputs[0].shape[1:])
    x = _images(args, shape, model)
    if args.model == "mobilenet_v2" and not args.model_path:
        # Untrained: give its batch norms the statistics of these images, so that
        # activations keep their scale through the network.
        import tensorflow as tf

        slb_keras.calibrate_bn(model, tf.data.Dataset.from_tensor_slices(x).batch(32))
    expected = model.predict(x, verbose=0)
    report = {"model": args.model_path or args.model, "input_shape": list(shape),
              "dataset": args.dataset, "images": len(x), "runs": args.runs, "configs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {name: os.path.join(tmp, f"{name}.tflite") for name in _TFLITE}
        _float_tflite(slb_keras.to_inference_model(model), paths["float"])
        slb_keras.export_tflite(model, paths["dequantize"], arithmetic="float")
        slb_keras.export_tflite(model, paths["integer"])
        packed = slb_keras.export_packed(model, os.path.join(tmp, "model.slb"))
        configs = report["configs"]
        outputs = {name: _predict(path, x) for name, path in paths.items()}
        for name, path in paths.items():
            configs[name] = {"bytes": os.path.getsize(path), **_agreement(expected, outputs[name])}
        report["integer_vs_dequantize_max_abs_diff"] = float(
            np.max(np.abs(outputs["integer"] - outputs["dequantize"]))
        )
        configs["packed"] = {"bytes": packed.file_bytes}
        times = _latencies(paths, x, args.runs)
        try:
            lce = slb_keras.export_lce(model, os.path.join(tmp, "model.lce.tflite"))
        except ImportError as error:
            report["lce"] = f"not run: {error}"
        else:
            configs["lce"] = {"bytes": lce.file_bytes, "ops": lce.ops}
        for name, row in summarize(times).items():
            configs[name].update(row)
        if "lce" in configs and args.lce_python:
            # LCE's own interpreter, in another process: interleaved there with the
            # float file (run by the same interpreter), the ratio is to that.
            lce_times, float_times, y = _lce_run(args.lce_python, lce.path, paths["float"], x, args.runs)
            configs["lce"].update(_agreement(expected, y))
            row = summarize({"float": float_times, "lce": lce_times})["lce"]
            configs["lce"].update(row, float_in_lce_median_s=float(np.median(float_times)))
    float_bytes = configs["float"]["bytes"]
    print(f"{report['model']} {shape}, {len(x)} {args.dataset} images, "
          f"one image, one thread, {args.runs} rounds")
    print(f"  {'config':<11} {'bytes':>10} {'% float':>8} {'median ms':>10} {'IQR ms':>7} "
          f"{'x float':>8} {'top-1 agr':>9} {'max|diff|':>10} {'>tol':>5}")
    for name, row in configs.items():
        row["bytes_vs_float"] = row["bytes"] / float_bytes
        timing = (f"{1000 * row['median_s']:>10.2f} {1000 * row['iqr_s']:>7.2f} "
                  f"{row['ratio_to_float']:>8.3f}") if "median_s" in row else f"{'-':>10} {'-':>7} {'-':>8}"
        agreement = (f"{100 * row['top1_agreement']:>8.1f}% {row['max_abs_diff']:>10.2e} "
                     f"{row['samples_over_tolerance']:>5}"
                     if "top1_agreement" in row else f"{'-':>9} {'-':>10} {'-':>5}")
        print(f"  {name:<11} {row['bytes']:>10} {100 * row['bytes_vs_float']:>7.1f}% {timing} {agreement}")
    print(f"  output scale {configs['float']['output_scale']:.3g}; integer vs dequantize max |diff| "
          f"{report['integer_vs_dequantize_max_abs_diff']:.2e}")
    if "lce" in report:
        print(f"  lce: {report['lce']}")
    if args.out:
        _common.write_report(args.out, report)
    return report


if __name__ == "__main__":
    main()
