"""Time and memory of the soft kernel alone: fused (TensorFlow path) vs autodiff reference.

For each number of values m = 2**bits, one forward + backward pass of
`soft_weight` over logits of shape kernel_shape + (m,) (default: a 3x3x512x1000
kernel, about one VGG-Small's worth of weights), in a tf.function:

- "fused": `slb_keras.ops.soft_weight`, one XLA kernel each way with the
  closed-form gradient (for 1 bit: tanh of the logit difference);
- "reference": `softmax(tau * A) @ v` differentiated by TensorFlow.

The two variants are timed interleaved in one process (median of --runs) and,
with --memory, each runs alone in a fresh process that reports its peak
resident memory above the logits and upstream gradient it starts with, in units
of the logits' size.

Example:

    python benchmarks/soft_kernel.py --bits=2,4 --runs=10 --memory
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _common  # noqa: E402

VARIANTS = ("reference", "fused")


def _step(variant, bits, shape):
    """A compiled forward + backward pass over fresh logits; returns (step, logits bytes)."""
    import tensorflow as tf

    from slb_keras import ops as slb_ops

    rng = np.random.default_rng(0)
    logits = tf.Variable(rng.normal(size=shape + (2**bits,)).astype(np.float32))
    upstream = tf.constant(rng.normal(size=shape).astype(np.float32))
    soft = slb_ops.soft_weight if variant == "fused" else slb_ops._soft_weight_reference

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(soft(logits, 3.0, bits) * upstream)
        return tf.reduce_sum(tape.gradient(loss, logits))

    return step, logits.numpy().nbytes


def _memory_child(variant, bits, shape):
    step, logits_bytes = _step(variant, bits, shape)
    sampler = _common.RssSampler()
    for _ in range(3):
        step().numpy()
    sampler.stop()
    _common.report_to_parent(
        {"above_start_bytes": sampler.peak - sampler.base, "logits_bytes": logits_bytes})


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bits", default="1,2,4", type=lambda s: [int(b) for b in s.split(",")])
    parser.add_argument("--shape", default="3,3,512,1000",
                        type=lambda s: tuple(int(d) for d in s.split(",")))
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--memory", action="store_true", help="also measure peak memory")
    parser.add_argument("--memory_child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help="JSON output path")
    args = parser.parse_args(argv)
    if args.runs <= 0:
        parser.error(f"--runs must be > 0, got {args.runs}")
    if any(not 1 <= b <= 8 for b in args.bits):
        parser.error(f"--bits must be between 1 and 8, got {args.bits}")
    return args


def main(argv=None):
    args = _parse(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.memory_child:
        variant, bits = args.memory_child.split(":")
        _memory_child(variant, int(bits), args.shape)
        return
    report = {"shape": list(args.shape), "runs": args.runs, "bits": {}}
    for bits in args.bits:
        steps = {v: _step(v, bits, args.shape)[0] for v in VARIANTS}
        times = {v: [] for v in VARIANTS}
        for step in steps.values():
            step().numpy()  # trace and compile
        for _ in range(args.runs):
            for variant, step in steps.items():
                start = time.perf_counter()
                step().numpy()
                times[variant].append(time.perf_counter() - start)
        row = {v: {"median_s": float(np.median(t))} for v, t in times.items()}
        row["speedup"] = row["reference"]["median_s"] / row["fused"]["median_s"]
        if args.memory:
            for variant in VARIANTS:
                cmd = [sys.executable, os.path.abspath(__file__), f"--memory_child={variant}:{bits}",
                       "--shape=" + ",".join(map(str, args.shape))]
                peak = _common.run_child(cmd)
                row[variant]["peak_above_start_in_logits"] = (
                    peak["above_start_bytes"] / peak["logits_bytes"])
        report["bits"][str(bits)] = row
        line = (f"bits {bits} (m={2**bits}): reference {1000 * row['reference']['median_s']:.1f} ms, "
                f"fused {1000 * row['fused']['median_s']:.1f} ms (x{row['speedup']:.1f} faster)")
        if args.memory:
            line += (f"; peak above start {row['reference']['peak_above_start_in_logits']:.2f} vs "
                     f"{row['fused']['peak_above_start_in_logits']:.2f} x the logits")
        print(line, flush=True)
    if args.out:
        _common.write_report(args.out, report)


if __name__ == "__main__":
    main()
