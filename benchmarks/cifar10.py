"""CIFAR-10 accuracy of SLB against STE and full precision, run by run through train.py.

Each configuration is one `python train.py ...` child process (exactly what a user
runs: its input pipeline, callbacks, BN calibration and files), in its own model_dir
under `--runs_dir`. After every run the JSON report (`--out`) is rewritten atomically
with that run's record: the command, the hard test accuracy (the images every 5th of
each class folder holds apart: they neither train nor choose anything), the final
val_accuracy when `--validation_split` > 0 (what recipes are chosen on), the wall time,
train.py's seconds per epoch, the per-epoch history (train and val accuracy,
temperature, SLB's flip rate and sharpness) and the load average before and after. A
rerun skips the records the report already holds and train.py resumes a killed run from
its backup, so a long grid can be stopped and continued.

Configurations (`--configs`): `VARIANT` or `VARIANT:W/A`, VARIANT one of
`benchmarks.accuracy.VARIANTS` (fp, ste, ste_adam, ste_sgd, slb and its one-change
ablations) or `VARIANT+key=value+...` for Config overrides of train.py's flags (e.g.
`slb+temperature_end=50:1/1`); fp ignores W/A.

Example (the 4-epoch recipe check on a validation split, then the report alone):

    tar xzf ../shared/data/cifar10-train.tar.gz -C /tmp
    python benchmarks/cifar10.py --data=/tmp/cifar10-train --epochs=4 --seeds=0 \
        --validation_split=0.125 --configs=fp,slb:1/1,ste:1/1 --out=benchmarks/results/cifar10.json
    python benchmarks/cifar10.py --out=benchmarks/results/cifar10.json --report
"""

import argparse
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import _common  # noqa: E402
from benchmarks.accuracy import VARIANTS  # noqa: E402


def parse_config(text):
    """`VARIANT[+key=value...][:W/A]` -> (name, method, overrides, wbits, abits).

    Example:

    >>> parse_config("slb+temperature_end=50:2/2")
    ('slb+temperature_end=50', 'slb', {'temperature_end': '50'}, 2, 2)
    >>> parse_config("fp")
    ('fp', 'fp', {}, 32, 32)
    >>> parse_config("slb+bit_budget=2:1,2,4/2")  # a bit-width search
    ('slb+bit_budget=2', 'slb', {'bit_budget': '2'}, (1, 2, 4), 2)
    """
    name, _, pair = text.partition(":")
    variant, *settings = name.split("+")
    if variant not in VARIANTS:
        raise ValueError(f"--configs: unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    method, overrides = VARIANTS[variant]
    overrides = dict(overrides)
    for setting in settings:
        key, eq, value = setting.partition("=")
        if not eq:
            raise ValueError(f"--configs: {setting!r} in {text!r} is not key=value")
        overrides[key] = value
    if method == "fp":
        return name, method, overrides, 32, 32
    if not pair:
        raise ValueError(f"--configs: {text!r} needs :W/A (e.g. {name}:1/1)")
    wbits, abits = pair.split("/")
    widths = tuple(int(v) for v in wbits.split(","))  # 1,2,4: a bit-width search
    return name, method, overrides, widths[0] if len(widths) == 1 else widths, int(abits)


def split_configs(text):
    """--configs as a list: commas separate configurations, except inside a W list.

    Example:

    >>> split_configs("slb:2/2,slb+bit_budget=2:1,2,4/2,fp")
    ['slb:2/2', 'slb+bit_budget=2:1,2,4/2', 'fp']
    """
    configs = []
    for part in text.split(","):
        if configs and part[:1].isdigit():  # a variant never starts with a digit
            configs[-1] += "," + part
        else:
            configs.append(part)
    return configs


def _flag(key, value):
    if isinstance(value, bool):
        return f"--{key}" if value else f"--no{key}"
    if isinstance(value, (tuple, list)):
        return f"--{key}={','.join(str(v) for v in value)}"
    return f"--{key}={value}"


def command(args, config, seed):
    """The train.py command line of one run, and its model_dir."""
    name, method, overrides, wbits, abits = config
    wlabel = "-".join(map(str, wbits)) if isinstance(wbits, tuple) else wbits
    tag = f"{args.model}_{name.replace('+', '_').replace('=', '')}_w{wlabel}a{abits}_e{args.epochs}_s{seed}"
    if args.validation_split:
        tag += f"_v{args.validation_split:g}"
    model_dir = os.path.join(args.runs_dir, tag)
    flags = {
        "model": args.model, "method": method, "dataset": args.data, "epochs": args.epochs,
        "seed": seed, "model_dir": model_dir, "validation_split": args.validation_split,
        "width_multiplier": args.width_multiplier,
    }
    if method != "fp":
        flags.update(wbits=wbits, abits=abits)
    for key in ("batch_size", "steps_per_epoch"):
        if getattr(args, key) is not None:
            flags[key] = getattr(args, key)
    if args.model == "vgg_small":
        overrides = {k: v for k, v in overrides.items() if k != "block"}
    flags.update(overrides)
    if "lr_step_epochs" in flags:  # a recipe-only setting, no flag
        del flags["lr_step_epochs"]
    argv = [sys.executable, os.path.join(ROOT, "train.py"), *(_flag(k, v) for k, v in flags.items())]
    return argv, model_dir


# The per-epoch values kept in a record's "history" (train.py's summary.json has more).
HISTORY_KEYS = ("accuracy", "val_accuracy", "temperature", "slb_flip_rate", "slb_max_prob", "epoch_seconds")


def epoch_history(history):
    """train.py's per-epoch history reduced to `HISTORY_KEYS` (the keys an epoch has).

    Example:

    >>> epoch_history([{"accuracy": 0.5, "loss": 1.2, "temperature": 0.01}])
    [{'accuracy': 0.5, 'temperature': 0.01}]
    """
    return [{key: epoch[key] for key in HISTORY_KEYS if epoch.get(key) is not None} for epoch in history]


def run_one(args, config, seed):
    """Runs one configuration (or resumes it); returns its record."""
    argv, model_dir = command(args, config, seed)
    load_before = os.getloadavg()
    summary, wall, line = _common.run_train_py(argv, model_dir)
    history = summary.get("history") or []
    name, method, _, wbits, abits = config
    return {
        "key": os.path.basename(model_dir),
        "model": args.model, "variant": name, "method": method, "wbits": wbits, "abits": abits,
        "epochs": args.epochs, "seed": seed, "validation_split": args.validation_split,
        "test_accuracy": summary["test_accuracy"],
        "val_accuracy": history[-1].get("val_accuracy") if history else None,
        "train_accuracy": history[-1].get("accuracy") if history else None,
        "split_sizes": summary.get("split_sizes"),
        "seconds_per_epoch": summary.get("seconds_per_epoch"),
        "wall_seconds": wall,
        "resumed_from_epoch": summary.get("resumed_from_epoch"),
        "average_wbits": summary.get("average_wbits"),
        "wbits_per_layer": summary.get("wbits_per_layer"),
        "load_before": load_before, "load_after": os.getloadavg(),
        "history": epoch_history(history),
        "command": line,
        "config": summary.get("config"),
    }


def table(records, metric):
    """Rows (variant, W/A, epochs, n, mean, std, mean wall s) grouped over seeds."""
    groups = {}
    for record in records:
        if record.get(metric) is None:
            continue
        key = (record["model"], record["variant"], _wbits_text(record["wbits"]), record["abits"],
               record["epochs"], record["validation_split"])
        groups.setdefault(key, []).append(record)
    rows = []
    for key, group in sorted(groups.items(), key=lambda item: (item[0][0], item[0][4], item[0][2], item[0][3], item[0][1])):
        values = np.array([r[metric] for r in group], np.float64)
        rows.append({
            "model": key[0], "variant": key[1], "abits": key[3], "epochs": key[4],
            "wbits": key[2] if isinstance(group[0]["wbits"], (list, tuple)) else group[0]["wbits"],
            "validation_split": key[5], "n": len(group), "mean": float(values.mean()),
            "std": float(values.std()), "seeds": sorted(r["seed"] for r in group),
            "wall_seconds": float(np.mean([r["wall_seconds"] for r in group])),
            "seconds_per_epoch": float(np.mean([r["seconds_per_epoch"] or np.nan for r in group])),
        })
    return rows


def _wbits_text(wbits):
    """The weight bits of a record as text: "2", or "1,2,4" for a bit-width search."""
    return ",".join(map(str, wbits)) if isinstance(wbits, (list, tuple)) else str(wbits)


def print_table(records):
    for metric in ("val_accuracy", "test_accuracy"):
        rows = table(records, metric)
        if not rows:
            continue
        # Columns as wide as their longest entry (a bit search's variant and W list are long).
        wide = max([len("variant")] + [len(r["variant"]) for r in rows])
        was = [f"{r['wbits']}/{r['abits']}" for r in rows]
        wa_wide = max([len("W/A")] + [len(wa) for wa in was])
        print(f"\n{metric} (%, mean +- std over seeds; hard network after BN calibration):")
        print(f"  {'model':9s} {'variant':{wide}s} {'W/A':{wa_wide}s} {'epochs':>6s} {'n':>2s} {'mean':>6s} {'std':>5s} {'s/epoch':>8s} {'wall s':>7s}")
        for r, wa in zip(rows, was):
            print(f"  {r['model']:9s} {r['variant']:{wide}s} {wa:{wa_wide}s} {r['epochs']:6d} {r['n']:2d} "
                  f"{100 * r['mean']:6.2f} {100 * r['std']:5.2f} {r['seconds_per_epoch']:8.1f} {r['wall_seconds']:7.0f}")


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=None, help="the unpacked cifar10-train folder (class folders)")
    parser.add_argument("--model", default="resnet20", choices=["resnet20", "vgg_small"])
    parser.add_argument("--configs", default="fp,slb:1/1,ste:1/1", type=split_configs)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seeds", default="0", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--validation_split", type=float, default=0.0)
    parser.add_argument("--batch_size", type=int, default=None)
    parser.add_argument("--steps_per_epoch", type=int, default=None, help="(tests: a tiny budget)")
    parser.add_argument("--width_multiplier", type=float, default=1.0)
    parser.add_argument("--runs_dir", default="/tmp/cifar10_runs")
    parser.add_argument("--out", required=True, help="JSON report, extended run by run")
    parser.add_argument("--report", action="store_true", help="print the report's table and exit")
    args = parser.parse_args(argv)
    try:
        args.configs = [parse_config(text) for text in args.configs]
    except ValueError as error:
        parser.error(str(error))
    if not args.report and not args.data:
        parser.error("--data is required (the unpacked cifar10-train folder)")
    return args


def main(argv=None):
    args = _parse(argv)
    report = {"records": []}
    if os.path.exists(args.out):
        with open(args.out) as file:
            report = json.load(file)
    if not args.report:
        done = {record["key"] for record in report["records"]}
        for seed in args.seeds:
            for config in args.configs:
                key = os.path.basename(command(args, config, seed)[1])
                if key in done:
                    continue
                record = run_one(args, config, seed)
                report["records"].append(record)
                _common.write_report(args.out, report)
                print(f"{record['key']}: test {100 * record['test_accuracy']:.2f}%"
                      + (f", val {100 * record['val_accuracy']:.2f}%" if record["val_accuracy"] is not None else "")
                      + f" ({record['wall_seconds']:.0f} s, load {record['load_before'][0]:.1f} -> "
                      f"{record['load_after'][0]:.1f})", flush=True)
    print_table(report["records"])


if __name__ == "__main__":
    main()
