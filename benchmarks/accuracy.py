"""Hard-quantized test accuracy of SLB against STE and full precision, over seeds.

Every configuration trains the same network with the same budget through
`training.run` (the function behind train.py): fp once per seed, and ste / slb at
each W/A pair. Prints the hard-quantized test accuracy (after BN calibration for
slb) as mean +- std over the seeds, and writes JSON.

Example:

    python benchmarks/accuracy.py --dataset=digits --model=vgg_small \
        --width_multiplier=0.25 --epochs=6 --seeds=0,1,2 --wa=1/1,2/2,4/4 \
        --temperature_end=200 --temperature_end_fraction=0.6 --out=runs/accuracy_digits.json
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _common  # noqa: E402


def _pairs(text):
    pairs = []
    for item in text.split(","):
        w, a = item.split("/")
        pairs.append((int(w), int(a)))
    return pairs


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--model", default="vgg_small")
    parser.add_argument("--width_multiplier", type=float, default=0.25)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--steps_per_epoch", type=int, default=None)
    parser.add_argument("--seeds", default="0,1,2", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--wa", default="1/1,2/2,4/4", type=_pairs, help="W/A pairs")
    parser.add_argument("--methods", default="fp,ste,slb", type=lambda s: s.split(","))
    parser.add_argument("--temperature_start", type=float, default=None,
                        help="slb: tau at the start (default: the model's recipe)")
    parser.add_argument("--temperature_end", type=float, default=None,
                        help="slb: final tau (default: the model's recipe, 10; short budgets "
                             "need a larger one so the soft kernel is discrete at the end)")
    parser.add_argument("--temperature_end_fraction", type=float, default=None,
                        help="slb: fraction of training where tau reaches its end value "
                             "(default: the recipe's, 0.9 for vgg_small)")
    parser.add_argument("--out", default=None, help="JSON output path")
    args = parser.parse_args(argv)
    if args.epochs <= 0 or args.batch_size <= 0:
        parser.error("--epochs and --batch_size must be > 0")
    return args


def _run_one(args, method, wbits, abits, seed, workdir):
    import training

    config = training.Config(
        model=args.model,
        method=method,
        wbits=wbits,
        abits=abits,
        dataset=args.dataset,
        data_dir=args.data_dir,
        width_multiplier=args.width_multiplier,
        epochs=args.epochs,
        batch_size=args.batch_size,
        steps_per_epoch=args.steps_per_epoch,
        seed=seed,
        model_dir=os.path.join(workdir, f"{method}_w{wbits}a{abits}_s{seed}"),
        verbose=0,
        temperature_start=args.temperature_start,
        temperature_end=args.temperature_end,
        temperature_end_fraction=args.temperature_end_fraction,
    )
    start = time.perf_counter()
    summary = training.run(config)
    return float(summary["test_accuracy"]), time.perf_counter() - start


def main(argv=None):
    args = _parse(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    configs = []
    if "fp" in args.methods:
        configs.append(("fp", 1, 32))  # bit widths are unused by method "fp"
    for wbits, abits in args.wa:
        configs += [(m, wbits, abits) for m in ("ste", "slb") if m in args.methods]
    results = {}
    with tempfile.TemporaryDirectory() as workdir:
        for method, wbits, abits in configs:
            label = "fp" if method == "fp" else f"{method} {wbits}/{abits}"
            accs, secs = [], []
            for seed in args.seeds:
                acc, sec = _run_one(args, method, wbits, abits, seed, workdir)
                accs.append(acc)
                secs.append(sec)
                print(f"  {label:10s} seed {seed}: {100 * acc:6.2f}%  ({sec:.0f} s)", flush=True)
            results[label] = {
                "method": method, "wbits": wbits, "abits": abits,
                "accuracies": accs, "mean": float(np.mean(accs)), "std": float(np.std(accs)),
                "seconds": secs,
            }
    print(f"\n{args.model} x{args.width_multiplier} on {args.dataset}, {args.epochs} epochs, "
          f"batch {args.batch_size}, seeds {args.seeds}: hard test accuracy (%)")
    for label, r in results.items():
        print(f"  {label:10s} {100 * r['mean']:6.2f} +- {100 * r['std']:.2f}")
    verdicts = {}
    for wbits, abits in args.wa:
        slb, ste = results.get(f"slb {wbits}/{abits}"), results.get(f"ste {wbits}/{abits}")
        if slb and ste:
            verdicts[f"{wbits}/{abits}"] = slb["mean"] >= ste["mean"]
            print(f"  W/A {wbits}/{abits}: slb - ste = {100 * (slb['mean'] - ste['mean']):+.2f} points")
    if args.out:
        _common.write_report(args.out, {"args": vars(args), "results": results,
                                        "slb_at_least_ste": verdicts})


if __name__ == "__main__":
    main()
