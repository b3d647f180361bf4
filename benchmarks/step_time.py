"""Training-step time and peak memory of SLB against STE and full precision.

All configurations (fp, and ste / slb at each --wbits) are built in one process
and timed interleaved, one step each per round (fp, ste-W1, slb-W1, ste-W2, ...),
after warm-up, so that slow drifts of the machine hit every configuration alike.
Prints the median step time per configuration and the ratios slb/ste and slb/fp
(median of the per-round ratios, with their interquartile range), and writes
JSON. With --memory, each configuration also runs alone in a fresh process that
reports its peak resident memory (CPU) or peak device memory (GPU), and the
script prints beside each slb/ste memory ratio its "state-only" value: the
ratio SLB would have if it cost nothing over STE but its extra float32 state,
three times the bytes of its extra trainable variables (the 2**b logits per
weight against STE's one latent weight, their SGD momentum slot and their
gradient). No implementation of SLB's parametrization goes much below it.

With --search=1,2,4 it also times an SLB model whose layers search their
width among those candidates (logits over the widest set, one soft weight per
candidate), against SLB at the widest width: what the search costs.

Example:

    python benchmarks/step_time.py --model=vgg_small --batch_size=32 --wbits=1,2,4 \
        --abits=32 --rounds=20 --memory --out=runs/step_time_cpu.json
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _common  # noqa: E402


def _configs(wbits_list, search=None):
    configs = [("fp", 32)]
    for wbits in wbits_list:
        configs += [("ste", wbits), ("slb", wbits)]
    if search:
        configs.append(("slb", tuple(search)))
    return configs


def _label(method, wbits):
    if method == "fp":
        return "fp"
    if isinstance(wbits, tuple):
        return f"search-W{'+'.join(map(str, wbits))}"
    return f"{method}-W{wbits}"


def _wbits_text(text):
    """"4" -> 4, "1+2+4" -> (1, 2, 4): a memory child's width or candidate widths."""
    return tuple(int(b) for b in text.split("+")) if "+" in text else int(text)


def _build(args, method, wbits):
    import keras

    import models

    model = models.get_model(
        args.model,
        method=method,
        wbits=wbits if isinstance(wbits, tuple) else max(1, min(wbits, 8)),
        abits=args.abits if method != "fp" else 32,
        input_shape=(args.image_size, args.image_size, 3),
        num_classes=10,
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=args.jit_compile,
    )
    return model


def _data(args):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch_size, args.image_size, args.image_size, 3)).astype(np.float32)
    y = rng.integers(0, 10, size=(args.batch_size,)).astype(np.int32)
    return x, y


def _sync(result):
    # train_on_batch returns numpy values: the step has finished when it returns.
    return float(np.asarray(result).ravel()[0])


def time_steps(args):
    """Interleaved timing of every configuration in this process."""
    import keras
    import tensorflow as tf

    if args.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    import slb_keras

    x, y = _data(args)
    x, y = tf.constant(x), tf.constant(y)
    configs = _configs(args.wbits, args.search)
    built = {}
    for method, wbits in configs:
        model = _build(args, method, wbits)
        slb_keras.set_temperature(model, 1.0)
        for _ in range(args.warmup):
            _sync(model.train_on_batch(x, y))
        built[(method, wbits)] = model
    times = {c: [] for c in configs}
    for _ in range(args.rounds):
        for config in configs:
            start = time.perf_counter()
            _sync(built[config].train_on_batch(x, y))
            times[config].append(time.perf_counter() - start)
    return {_label(*c): times[c] for c in configs}


def summarize(times, wbits_list, batch_size, search=None):
    """Medians, images/s and per-round ratios (median and interquartile range)."""
    summary = {"configs": {}, "ratios": {}}
    for label, values in times.items():
        values = np.asarray(values)
        summary["configs"][label] = {
            "median_s": float(np.median(values)),
            "images_per_s": float(batch_size / np.median(values)),
            "steps": int(values.size),
        }
    fp = np.asarray(times["fp"])
    if search and max(search) in wbits_list:
        ratio = np.asarray(times[_label("slb", tuple(search))]) / np.asarray(times[f"slb-W{max(search)}"])
        summary["ratios"][f"{_label('slb', tuple(search))}/slb-W{max(search)}"] = _ratio_stats(ratio)
    for wbits in wbits_list:
        slb = np.asarray(times[f"slb-W{wbits}"])
        ste = np.asarray(times[f"ste-W{wbits}"])
        for name, base in (("slb/ste", ste), ("slb/fp", fp)):
            summary["ratios"][f"W{wbits} {name}"] = _ratio_stats(slb / base)
    return summary


def _ratio_stats(ratio):
    """Median and interquartile range of per-round ratios."""
    return {
        "median": float(np.median(ratio)),
        "q25": float(np.percentile(ratio, 25)),
        "q75": float(np.percentile(ratio, 75)),
    }


def _peak_memory_child(args, method, wbits):
    """Runs in a fresh process: steps of one configuration, prints its peak memory."""
    import keras
    import tensorflow as tf

    if args.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    gpus = tf.config.list_physical_devices("GPU")
    x, y = _data(args)
    tf.constant(0.0).numpy()  # start the runtime before the baseline
    sampler = _common.RssSampler()
    model = _build(args, method, wbits)
    for _ in range(max(3, args.warmup)):
        _sync(model.train_on_batch(x, y))
    sampler.stop()
    trainable = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in model.trainable_variables)
    if gpus:
        peak = tf.config.experimental.get_memory_info("GPU:0")["peak"]
        result = {"device": "GPU", "peak_bytes": int(peak)}
    else:
        result = {
            "device": "CPU",
            "peak_bytes": sampler.peak,
            "peak_minus_runtime_bytes": sampler.peak - sampler.base,
        }
    result["trainable_bytes"] = trainable
    _common.report_to_parent(result)


def peak_memory(args):
    """Peak memory per configuration, each in its own process."""
    results = {}
    for method, wbits in _configs(args.wbits, args.search):
        child = "+".join(map(str, wbits)) if isinstance(wbits, tuple) else wbits
        cmd = [
            sys.executable, os.path.abspath(__file__), f"--model={args.model}",
            f"--batch_size={args.batch_size}", f"--image_size={args.image_size}",
            f"--abits={args.abits}", f"--warmup={args.warmup}",
            f"--memory_child={method}:{child}",
        ] + (["--jit_compile"] if args.jit_compile else []) + (
            ["--mixed_precision"] if args.mixed_precision else [])
        results[_label(method, wbits)] = _common.run_child(cmd)
    key = "peak_bytes" if "peak_minus_runtime_bytes" not in results["fp"] else "peak_minus_runtime_bytes"
    ratios, state_only = {}, {}
    for wbits in args.wbits:
        slb, ste = results[f"slb-W{wbits}"], results[f"ste-W{wbits}"]
        ratios[f"W{wbits} slb/ste"] = slb[key] / ste[key]
        ratios[f"W{wbits} slb/fp"] = slb[key] / results["fp"][key]
        # SLB's extra state over STE: its extra trainable variables, each with a
        # momentum slot (SGD) and a gradient of the same size.
        extra_state = 3 * (slb["trainable_bytes"] - ste["trainable_bytes"])
        state_only[f"W{wbits} slb/ste"] = (ste[key] + extra_state) / ste[key]
    if args.search and max(args.search) in args.wbits:
        searched = results[_label("slb", tuple(args.search))]
        ratios[f"{_label('slb', tuple(args.search))}/slb-W{max(args.search)}"] = (
            searched[key] / results[f"slb-W{max(args.search)}"][key])
    return {"per_config": results, "measure": key, "ratios": ratios, "state_only_ratios": state_only}


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="vgg_small", choices=["vgg_small", "resnet20"])
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--wbits", default="1,2,4", type=lambda s: [int(b) for b in s.split(",")])
    parser.add_argument("--abits", type=int, default=32)
    parser.add_argument("--search", default=None, type=lambda s: [int(b) for b in s.split(",")],
                        help="also time an SLB bit-width search over these widths (e.g. 1,2,4), "
                             "with its ratio to slb at the widest")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--jit_compile", action="store_true")
    parser.add_argument("--mixed_precision", action="store_true")
    parser.add_argument("--memory", action="store_true", help="also measure peak memory")
    parser.add_argument("--memory_child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help="JSON output path")
    args = parser.parse_args(argv)
    if args.batch_size <= 0 or args.rounds <= 0 or args.warmup < 0:
        parser.error("--batch_size and --rounds must be > 0, --warmup >= 0")
    if args.search is not None and (
        len(set(args.search)) != len(args.search) or len(args.search) < 2
        or not set(args.search) <= {1, 2, 4, 8}
    ):
        parser.error(f"--search={','.join(map(str, args.search))}: expected two or more distinct "
                     "widths of 1, 2, 4, 8")
    return args


def main(argv=None):
    args = _parse(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.memory_child:
        method, wbits = args.memory_child.split(":")
        _peak_memory_child(args, method, _wbits_text(wbits))
        return
    import tensorflow as tf

    devices = tf.config.list_physical_devices("GPU")
    report = {
        "model": args.model, "batch_size": args.batch_size, "image_size": args.image_size,
        "abits": args.abits, "jit_compile": args.jit_compile,
        "mixed_precision": args.mixed_precision, "rounds": args.rounds,
        "device": devices[0].name if devices else f"CPU x{os.cpu_count()}",
    }
    report.update(summarize(time_steps(args), args.wbits, args.batch_size, args.search))
    print(f"{args.model} batch {args.batch_size} abits {args.abits} on {report['device']} "
          f"(xla={args.jit_compile}, mixed={args.mixed_precision}, {args.rounds} rounds)")
    for label, stats in report["configs"].items():
        print(f"  {label:12s} median step {stats['median_s'] * 1000:9.1f} ms  "
              f"{stats['images_per_s']:8.1f} img/s")
    for label, stats in report["ratios"].items():
        print(f"  {label:12s} {stats['median']:.3f}  (IQR {stats['q25']:.3f}-{stats['q75']:.3f})")
    if args.memory:
        report["memory"] = peak_memory(args)
        print(f"  peak memory ({report['memory']['measure']}):")
        for label, stats in report["memory"]["per_config"].items():
            print(f"    {label:8s} {stats[report['memory']['measure']] / 2**20:9.1f} MiB")
        for label, ratio in report["memory"]["ratios"].items():
            state_only = report["memory"]["state_only_ratios"].get(label)
            print(f"    {label:12s} {ratio:.3f}" + (
                f"  (state-only {state_only:.3f}: STE + 3 x the extra trainable bytes)"
                if state_only else ""))
    if args.out:
        _common.write_report(args.out, report)


if __name__ == "__main__":
    main()
