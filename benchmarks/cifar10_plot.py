"""The CIFAR-10 curve: hard test accuracy against epochs, from benchmarks/cifar10.py's JSON.

One line per (method variant, W/A) given in `--series` (default: fp, SLB W1/A1 and STE
W1/A1 at the recipe's short-budget Adam lr, 2e-3, and at the 1e-3 it had until session 37,
which the longest series of runs used), each point the mean over seeds at one budget with its standard deviation as an
error bar; the x axis is logarithmic up to the authors' 400 epochs, where the paper's
numbers are marked, so the trend towards them shows. Needs matplotlib
(`pip install -e '.[benchmarks]'`).

Example:

    python benchmarks/cifar10_plot.py --json=benchmarks/results/cifar10.json \
        --out=benchmarks/results/cifar10_curve.png
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.cifar10 import table  # noqa: E402

# The paper's ResNet-20 CIFAR-10 numbers at 400 epochs: SLB "reported" (the authors' README)
# and the full-precision network of the paper's table, the distance SLB W1A1 is measured against.
PAPER_RESNET20 = {("slb", 1, 1): 85.5, ("slb", 2, 2): 90.6, ("slb", 4, 4): 91.6, ("slb", 1, 32): 90.6,
                  ("fp", 32, 32): 92.1}
PAPER_EPOCHS = 400


def _series(text):
    """`variant:W/A` pairs; fp without W/A."""
    out = []
    for item in text.split(","):
        variant, _, pair = item.partition(":")
        wbits, abits = (32, 32) if not pair else (int(v) for v in pair.split("/"))
        out.append((variant, wbits, abits))
    return out


def plot(records, series, metric, out, model="resnet20", validation_split=None):
    """Writes the PNG; returns {series label: [(epochs, mean, std, n), ...]}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in table(records, metric) if r["model"] == model
            and (validation_split is None or r["validation_split"] == validation_split)]
    figure, axes = plt.subplots(figsize=(7, 4.5))
    points = {}
    paper_marks = dict(PAPER_RESNET20) if model == "resnet20" else {}  # each drawn once
    for variant, wbits, abits in series:
        mine = sorted((r for r in rows if r["variant"] == variant and (r["wbits"], r["abits"]) == (wbits, abits)),
                      key=lambda r: r["epochs"])
        if not mine:
            continue
        label = variant if variant == "fp" else f"{variant} W{wbits}/A{abits}"
        points[label] = [(r["epochs"], 100 * r["mean"], 100 * r["std"], r["n"]) for r in mine]
        line = axes.errorbar([p[0] for p in points[label]], [p[1] for p in points[label]],
                             yerr=[p[2] for p in points[label]], marker="o", capsize=3, label=label)
        method = mine[0]["variant"].split("_")[0].split("+")[0]
        paper = paper_marks.pop((method, wbits, abits), None)
        if paper is not None:
            axes.plot([PAPER_EPOCHS], [paper], marker="*", markersize=12, color=line[0].get_color(),
                      linestyle="none")
    axes.set_xscale("log")
    axes.set_xlim(left=0.8, right=PAPER_EPOCHS * 1.3)
    axes.set_xlabel("epochs (log scale; stars: the paper at 400 epochs)")
    axes.set_ylabel(f"hard {metric.replace('_', ' ')} (%)")
    axes.set_title(f"{model} on CIFAR-10 (this project's CPU runs)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="lower right")
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    temporary = out + ".tmp.png"
    figure.savefig(temporary, dpi=110)
    plt.close(figure)
    os.replace(temporary, out)
    return points


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--series", default="fp,slb:1/1,ste:1/1,slb+lr=0.001:1/1,ste+lr=0.001:1/1",
                        type=_series)
    parser.add_argument("--metric", default="test_accuracy", choices=["test_accuracy", "val_accuracy"])
    args = parser.parse_args(argv)
    with open(args.json) as file:
        records = json.load(file)["records"]
    points = plot(records, args.series, args.metric, args.out, args.model)
    for label, values in points.items():
        print(f"  {label:14s} " + ", ".join(f"{e} ep: {m:.2f}+-{s:.2f} (n={n})" for e, m, s, n in values))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
