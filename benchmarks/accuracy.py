"""Hard-quantized test accuracy of SLB against STE and full precision, over seeds.

Every configuration trains the same network with the same budget through
`training.run` (the function behind train.py): fp once per seed, and each variant
at each W/A pair. Prints the hard-quantized test accuracy (after BN calibration for
slb) as mean +- std over the seeds, each method's best variant of its grid, and
writes JSON.

Variants (`--variants`, `VARIANTS`): "slb" and "ste" are the recipes of
`training.recipes` (what train.py runs); "slb_old" is the schedule and optimizer
before the authors' recipes (SGD, tau 0.01 -> 10 ending at 90%, cosine lr, decoupled
weight decay, standard ResNet blocks); the STE grid is "ste_adam" (Adam 1e-3, no
weight decay), "ste_adam_2e-3" (Adam 2e-3: the short-budget recipe since session 37,
named so that it stays what it is) and "ste_sgd" (the model recipe's SGD); the "slb_*"
names are one-change ablations of the SLB recipe ("slb_adam": Adam 1e-3, the short-budget
recipe until session 37).

Example:

    python benchmarks/accuracy.py --dataset=digits --model=vgg_small \
        --width_multiplier=0.25 --epochs=6 --seeds=0,1,2 --wa=1/1,2/2,4/4 \
        --variants=fp,ste,ste_adam,slb,slb_old --out=runs/accuracy_digits.json
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _common  # noqa: E402


# name -> (method, Config overrides); None = the recipe's value.
VARIANTS = {
    "fp": ("fp", {}),
    "ste": ("ste", {}),
    "ste_adam": ("ste", {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0}),
    "ste_sgd": ("ste", {"optimizer": "sgd"}),  # the model recipe's SGD (VGG-Small: 0.02, 5e-4)
    "ste_adam_2e-3": ("ste", {"optimizer": "adam", "lr": 2e-3, "weight_decay": 0.0}),
    "slb": ("slb", {}),
    "slb_old": ("slb", {
        "temperature_end": 10.0, "temperature_end_fraction": 0.9, "lr_schedule": "cosine",
        "weight_decay_mode": "decoupled", "block": "standard", "optimizer": "sgd",
    }),
    # ablations of the recipe (one change each)
    "slb_cosine": ("slb", {"lr_schedule": "cosine"}),
    "slb_lqnets_lr": ("slb", {"lr_step_epochs": (0.2, 0.4, 0.75)}),
    "slb_decoupled": ("slb", {"weight_decay_mode": "decoupled"}),
    "slb_tau200": ("slb", {"temperature_end": 200.0}),
    "slb_tau5000": ("slb", {"temperature_end": 5000.0}),
    "slb_end40": ("slb", {"temperature_end_fraction": 0.4}),
    "slb_hard": ("slb", {"hard_epochs": 1}),
    "slb_standard": ("slb", {"block": "standard"}),
    "ste_standard": ("ste", {"block": "standard"}),
    "slb_quadratic": ("slb", {"logits_init": "quadratic"}),
    "slb_adam": ("slb", {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0}),
    "slb_adam_2e-3": ("slb", {"optimizer": "adam", "lr": 2e-3, "weight_decay": 0.0}),
    "slb_sgd": ("slb", {"optimizer": "sgd"}),  # the CIFAR recipe's SGD (lr 0.02, coupled 5e-4)
}


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
    parser.add_argument("--variants", default="fp,ste,ste_adam,slb", type=lambda s: s.split(","),
                        help="comma-separated names of VARIANTS")
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
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {unknown[0]!r}; expected names from {', '.join(VARIANTS)}")
    return args


def _run_one(args, variant, wbits, abits, seed, workdir):
    import training

    method, overrides = VARIANTS[variant]
    if args.model == "vgg_small":
        overrides = {k: v for k, v in overrides.items() if k != "block"}
    explicit = {
        "temperature_start": args.temperature_start,
        "temperature_end": args.temperature_end,
        "temperature_end_fraction": args.temperature_end_fraction,
    }
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
        model_dir=os.path.join(workdir, f"{variant}_w{wbits}a{abits}_s{seed}"),
        verbose=0,
        **{**overrides, **{k: v for k, v in explicit.items() if v is not None}},
    )
    start = time.perf_counter()
    summary = training.run(config)
    return float(summary["test_accuracy"]), time.perf_counter() - start


def main(argv=None):
    args = _parse(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    configs = []
    if "fp" in args.variants:
        configs.append(("fp", 1, 32))  # bit widths are unused by method "fp"
    for wbits, abits in args.wa:
        configs += [(v, wbits, abits) for v in args.variants if v != "fp"]
    results = {}
    with tempfile.TemporaryDirectory() as workdir:
        for variant, wbits, abits in configs:
            method = VARIANTS[variant][0]
            label = "fp" if variant == "fp" else f"{variant} {wbits}/{abits}"
            accs, secs = [], []
            for seed in args.seeds:
                acc, sec = _run_one(args, variant, wbits, abits, seed, workdir)
                accs.append(acc)
                secs.append(sec)
                print(f"  {label:10s} seed {seed}: {100 * acc:6.2f}%  ({sec:.0f} s)", flush=True)
            results[label] = {
                "variant": variant, "method": method, "wbits": wbits, "abits": abits,
                "accuracies": accs, "mean": float(np.mean(accs)), "std": float(np.std(accs)),
                "seconds": secs,
            }
    print(f"\n{args.model} x{args.width_multiplier} on {args.dataset}, {args.epochs} epochs, "
          f"batch {args.batch_size}, seeds {args.seeds}: hard test accuracy (%)")
    for label, r in results.items():
        print(f"  {label:10s} {100 * r['mean']:6.2f} +- {100 * r['std']:.2f}")
    verdicts, best = {}, {}
    for wbits, abits in args.wa:
        for method in ("slb", "ste"):
            grid = [r for r in results.values()
                    if r["method"] == method and (r["wbits"], r["abits"]) == (wbits, abits)
                    and (method == "ste" or r["variant"] == "slb")]  # SLB: the recipe only
            if grid:
                best[f"{method} {wbits}/{abits}"] = max(grid, key=lambda r: r["mean"])
        slb, ste = best.get(f"slb {wbits}/{abits}"), best.get(f"ste {wbits}/{abits}")
        if slb and ste:
            verdicts[f"{wbits}/{abits}"] = slb["mean"] >= ste["mean"]
            print(f"  W/A {wbits}/{abits}: slb (recipe) - ste (best of its grid: "
                  f"{ste['variant']}) = {100 * (slb['mean'] - ste['mean']):+.2f} points")
    if args.out:
        _common.write_report(args.out, {"args": vars(args), "results": results,
                                        "best": {k: r["variant"] for k, r in best.items()},
                                        "slb_at_least_ste": verdicts})


if __name__ == "__main__":
    main()
