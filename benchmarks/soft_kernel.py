"""Time and memory of the soft kernel alone: fused (TensorFlow path) vs autodiff reference.

For each number of values m = 2**bits, one forward + backward pass of
`soft_weight` over logits of shape kernel_shape + (m,) (default: a 3x3x512x1000
kernel, about one VGG-Small's worth of weights), in a tf.function:

- "fused": `slb_keras.core.ops.soft_weight`, one XLA kernel each way with the
  closed-form gradient (for 1 bit: tanh of the logit difference);
- "reference": `softmax(tau * A) @ v` differentiated by TensorFlow.

The two variants are timed interleaved in one process (median of --runs) and,
with --memory, each runs alone in a fresh process that reports its peak
resident memory above the logits and upstream gradient it starts with, in units
of the logits' size.

With --jax, a third variant:

- "jax": `slb_keras.core.ops.soft_weight` on the Keras JAX backend (the keras.ops
  path: tanh for 1 bit, exp-weighted sums over the value axis otherwise),
  forward + backward by `jax.grad` under `jax.jit`.

A backend is chosen once per process, so it runs in a child process started
with KERAS_BACKEND=jax that holds its own logits (same seed) and times one
step each time the parent asks: its runs stay interleaved with the TensorFlow
ones (the idle process waits on a pipe).

Example:

    python benchmarks/soft_kernel.py --bits=2,4 --runs=10 --memory
    python benchmarks/soft_kernel.py --bits=1,2,4 --runs=10 --jax
"""

import argparse
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _common  # noqa: E402

VARIANTS = ("reference", "fused")


def _step(variant, bits, shape):
    """A compiled forward + backward pass over fresh logits; returns (step, logits bytes)."""
    import tensorflow as tf

    from slb_keras.core import ops as slb_ops

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


def _jax_child(bits, shape):
    """Times one jitted JAX forward + backward per "run" line on stdin; prints each time."""
    import jax
    import jax.numpy as jnp
    import keras

    from slb_keras.core import ops as slb_ops

    if keras.backend.backend() != "jax":
        raise SystemExit(f"the JAX child runs on Keras's {keras.backend.backend()} backend")
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=shape + (2**bits,)).astype(np.float32))
    upstream = jnp.asarray(rng.normal(size=shape).astype(np.float32))

    @jax.jit
    def step(logits):
        grad = jax.grad(lambda a: jnp.sum(slb_ops.soft_weight(a, 3.0, bits) * upstream))(logits)
        return jnp.sum(grad)

    step(logits).block_until_ready()  # trace and compile
    print(_JAX_READY, jax.default_backend(), flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        start = time.perf_counter()
        step(logits).block_until_ready()
        print(time.perf_counter() - start, flush=True)


_JAX_READY = "JAX_CHILD_READY"


class _JaxSteps:
    """The JAX child of one bit width: `step()` runs one timed step there, returns seconds."""

    def __init__(self, bits, shape):
        env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
        cmd = [sys.executable, os.path.abspath(__file__), f"--jax_child={bits}",
               "--shape=" + ",".join(map(str, shape))]
        self._child = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=subprocess.DEVNULL, text=True, env=env)
        for line in self._child.stdout:
            if line.startswith(_JAX_READY):
                self.platform = line.split()[-1]
                return
        raise RuntimeError(f"the JAX child exited ({self._child.wait()}) before it was ready")

    def step(self):
        self._child.stdin.write("run\n")
        self._child.stdin.flush()
        line = self._child.stdout.readline()
        if not line:
            raise RuntimeError(f"the JAX child exited ({self._child.wait()})")
        return float(line)

    def close(self):
        self._child.stdin.close()
        self._child.wait(timeout=60)


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
    parser.add_argument("--jax", action="store_true",
                        help="also time soft_weight on the Keras JAX backend (jax.jit), interleaved")
    parser.add_argument("--memory_child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--jax_child", default=None, type=int, help=argparse.SUPPRESS)
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
    if args.jax_child:
        _jax_child(args.jax_child, args.shape)
        return
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
        jax_steps = _JaxSteps(bits, args.shape) if args.jax else None
        if jax_steps is not None:
            times["jax"] = []
        for _ in range(args.runs):
            for variant, step in steps.items():
                start = time.perf_counter()
                step().numpy()
                times[variant].append(time.perf_counter() - start)
            if jax_steps is not None:
                times["jax"].append(jax_steps.step())
        if jax_steps is not None:
            jax_steps.close()
        row = {v: {"median_s": float(np.median(t))} for v, t in times.items()}
        row["speedup"] = row["reference"]["median_s"] / row["fused"]["median_s"]
        if jax_steps is not None:
            row["jax"]["platform"] = jax_steps.platform
            # Per-run ratios (interleaved), then their median and quartiles.
            ratios = np.array(times["jax"]) / np.array(times["fused"])
            row["jax_over_fused"] = {
                "median": float(np.median(ratios)),
                "q25": float(np.percentile(ratios, 25)),
                "q75": float(np.percentile(ratios, 75)),
            }
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
        if jax_steps is not None:
            ratio = row["jax_over_fused"]
            line += (f"; jax (jit) {1000 * row['jax']['median_s']:.1f} ms = {ratio['median']:.2f}x "
                     f"the fused time (IQR {ratio['q25']:.2f}-{ratio['q75']:.2f})")
        if args.memory:
            line += (f"; peak above start {row['reference']['peak_above_start_in_logits']:.2f} vs "
                     f"{row['fused']['peak_above_start_in_logits']:.2f} x the logits")
        print(line, flush=True)
    if args.out:
        _common.write_report(args.out, report)


if __name__ == "__main__":
    main()
