"""The bit-width search's Pareto table and plot: accuracy against packed size on CIFAR-10.

Reads benchmarks/cifar10.py's JSON (`--json`): the uniform SLB runs (`slb:W/A`) and the
searches (`slb+bit_budget=B:1,2,4/A`) of one model, activation width and epoch budget.
For every run it records the size of the packed export of its model.keras (true b bits
per weight, `slb_keras.export_packed`; first conv, classifier and BN in float, as in
every run) and the bits of its quantized weights, in `--out` (a rerun keeps the sizes
already measured, so the table outlives the run directories). It prints, per
configuration, mean +- std over seeds of the hard test and validation accuracy with the
average bits and the packed size, then each searched layer's width per seed, and writes
the plot (`--png`, needs matplotlib): test accuracy against packed kB.

Example:

    python benchmarks/bit_search.py --json=benchmarks/results/cifar10.json \
        --out=benchmarks/results/bit_search.json --png=benchmarks/results/bit_search_pareto.png
"""

import argparse
import json
import os
import re
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import _common  # noqa: E402

SEARCH_TEMPERATURE_END = 200  # the searches the plot joins into a front (the recipe's tau end)


def selected(records, model, abits, epochs):
    """The uniform SLB runs and the searches of `model` at A`abits` and `epochs`."""
    return [
        r for r in records
        if r["model"] == model and r["abits"] == abits and r["epochs"] == epochs
        and (r["variant"] == "slb" or r["variant"].startswith("slb+"))
    ]


def label(record):
    """"uniform W2", "uniform W4 temperature_end=200", "search B=2 (1,2,4) temperature_end=200".

    A search's label always gives its final tau, from the run's resolved settings.
    """
    settings = dict(part.split("=", 1) for part in record["variant"].split("+")[1:])
    if not isinstance(record["wbits"], (list, tuple)):
        return " ".join([f"uniform W{record['wbits']}", *(f"{k}={v}" for k, v in settings.items())])
    text = f"search B={settings.pop('bit_budget')} ({','.join(map(str, record['wbits']))})"
    # a search's tau end as it ran (the recipe's changed: at first a search took 4 bits')
    settings["temperature_end"] = f"{record['config']['temperature_end']:g}"
    return " ".join([text, *(f"{k}={v}" for k, v in settings.items())])


def measure(record):
    """{packed_bytes, quantized_bits, average_wbits, wbits_per_layer} of a run's model.keras."""
    import keras

    import slb_keras
    from slb_keras.core import model_helpers

    path = os.path.join(record["config"]["model_dir"], "model.keras")
    model = keras.models.load_model(path)
    counts = model_helpers.quantized_weight_counts(model)
    with tempfile.TemporaryDirectory() as folder:
        packed = os.path.join(folder, "model.slbpack")
        slb_keras.export_packed(model, packed)
        size = os.path.getsize(packed)
    return {
        "packed_bytes": size,
        "quantized_bits": int(sum(n * layer.wbits for layer, n in counts)),
        "average_wbits": slb_keras.average_wbits(model),
        "wbits_per_layer": {layer.name: layer.wbits for layer, _ in counts},
    }


def rows(records, sizes):
    """One row per configuration: seeds, mean/std accuracies, bits and size."""
    groups = {}
    for record in records:
        groups.setdefault(label(record), []).append(record)
    out = []
    for name, group in groups.items():
        measured = [sizes[r["key"]] for r in group if r["key"] in sizes]
        test = np.array([r["test_accuracy"] for r in group]) * 100
        val = np.array([r["val_accuracy"] for r in group if r["val_accuracy"] is not None]) * 100
        out.append({
            "config": name, "n": len(group), "seeds": sorted(r["seed"] for r in group),
            "test_mean": float(test.mean()), "test_std": float(test.std()),
            "val_mean": float(val.mean()) if val.size else None,
            "val_std": float(val.std()) if val.size else None,
            "average_wbits": float(np.mean([m["average_wbits"] for m in measured])) if measured else None,
            "packed_kb": float(np.mean([m["packed_bytes"] for m in measured]) / 1000) if measured else None,
        })
    return sorted(out, key=lambda r: (r["packed_kb"] or 0, r["config"]))


def print_report(table, records, sizes):
    print(f"  {'configuration':40s} {'n':>2s} {'avg bits':>8s} {'packed kB':>9s} "
          f"{'test %':>13s} {'val %':>13s}")
    for r in table:
        val = "" if r["val_mean"] is None else f"{r['val_mean']:6.2f} +- {r['val_std']:4.2f}"
        bits = "" if r["average_wbits"] is None else f"{r['average_wbits']:8.3f}"
        size = "" if r["packed_kb"] is None else f"{r['packed_kb']:9.1f}"
        print(f"  {r['config']:40s} {r['n']:2d} {bits:>8s} {size:>9s} "
              f"{r['test_mean']:6.2f} +- {r['test_std']:4.2f} {val:>13s}")
    searches = [r for r in records if isinstance(r["wbits"], (list, tuple)) and r["key"] in sizes]
    if not searches:
        return
    names = list(sizes[searches[0]["key"]]["wbits_per_layer"])
    print("\n  widths chosen per layer (one column per search run: budget/seed):")
    heads = [f"{i + 1}:s{r['seed']}" for i, r in enumerate(searches)]
    for i, r in enumerate(searches):
        print(f"  column {i + 1}: {label(r)}, seed {r['seed']}")
    print(f"  {'layer':30s} " + " ".join(f"{h:>7s}" for h in heads))
    for name in names:
        cells = [str(sizes[r["key"]]["wbits_per_layer"].get(name, "")) for r in searches]
        print(f"  {name:30s} " + " ".join(f"{c:>7s}" for c in cells))


def plot(table, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    recipe = [r for r in table if re.fullmatch(r"uniform W\d+", r["config"]) and r["packed_kb"]]
    search = [r for r in table if r["config"].startswith("search") and r["packed_kb"]
              and r["config"].endswith(f"temperature_end={SEARCH_TEMPERATURE_END:g}")]
    other = [r for r in table if r not in recipe and r not in search and r["packed_kb"]]
    groups = ((recipe, "s-", "uniform SLB (recipe)"),
              (search, "o-", f"searched widths (tau end {SEARCH_TEMPERATURE_END:g})"),
              (other, "x", "other settings"))
    for group, style, name in groups:
        if group:
            axes.errorbar([r["packed_kb"] for r in group], [r["test_mean"] for r in group],
                          yerr=[r["test_std"] for r in group], fmt=style, capsize=3, label=name)
            for r in group:
                text = r["config"].split(" (")[0] + "".join(" " + p for p in r["config"].split(") ")[1:])
                text = text.replace("search ", "").replace("temperature_end=", "tau end ")
                text = text.replace("uniform ", "") if style == "x" else text
                text = text.replace(f" tau end {SEARCH_TEMPERATURE_END:g}", "") if style == "o-" else text
                axes.annotate(f"{text} (n={r['n']})", (r["packed_kb"], r["test_mean"]),
                              textcoords="offset points", xytext=(4, 4), fontsize=8)
    axes.set_xlabel("packed model size (kB; quantized convs at their widths, the rest float)")
    axes.set_ylabel("hard test accuracy (%)")
    axes.set_title("ResNet-20, A2, CIFAR-10: searched widths against uniform widths")
    axes.grid(True, alpha=0.3)
    axes.legend(loc="lower left", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", required=True, help="benchmarks/cifar10.py's report")
    parser.add_argument("--out", required=True, help="the sizes measured (JSON, kept across reruns)")
    parser.add_argument("--png", default=None, help="the Pareto plot to write")
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--abits", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args(argv)
    with open(args.json) as file:
        records = selected(json.load(file)["records"], args.model, args.abits, args.epochs)
    sizes = {}
    if os.path.exists(args.out):
        with open(args.out) as file:
            sizes = json.load(file)["sizes"]
    for record in records:
        if record["key"] not in sizes and os.path.exists(
            os.path.join(record["config"]["model_dir"], "model.keras")
        ):
            sizes[record["key"]] = measure(record)
    table = rows(records, sizes)
    _common.write_report(args.out, {"sizes": sizes, "table": table, "command": " ".join(sys.argv)})
    print_report(table, records, sizes)
    if args.png:
        plot(table, args.png)


if __name__ == "__main__":
    main()
