"""Whole-epoch speed of train.py on an image folder: SLB against fp, fp against a plain `fit`.

Three runs per round, back to back, each in a fresh process:

- `train.py --method=fp` and `train.py --method=slb --wbits=W --abits=A` on the folder
  (`--steps_per_epoch` batches per epoch, no validation split): their whole epochs as
  summary.json's `epoch_seconds` gives them (the training steps, BN calibration, SLB
  metrics, TensorBoard: everything of the epoch but the history line and the backup
  written after it);
- "plain fit": the same fp network (`models.get_model`, the same normalization and block, train.py's
  optimizer and schedule), compiled the same way, `model.fit(x, y)` on as many of
  train.py's training images as one epoch takes, read once by its pipeline into in-memory
  arrays (no augmentation, no callbacks): what a user gets without train.py.

The report gives each run's epoch seconds and compares the runs on the same *steady*
epochs: 2..E-1 (with E >= 3). Epoch 1 holds the tracing, and an SLB run without a
validation split calibrates its BN statistics once per run, inside its last epoch: that
is a cost of the run, not of an epoch, and it is reported apart (the last epoch minus
the steady ones). Each run's fastest steady epoch gives its images per second and the
ratios SLB / fp and fp / plain fit (the targets of issue #20: at most 1.15 and 1.05),
with the load average before and after each run. Every run gets as many steady epochs
as the others: taking the fastest of two epochs for one run and of one for another
favours the first. Run it on an otherwise idle machine: a second job on the same
cores changes the ratios.

Example (ResNet-20, 100 batches of 100 images per epoch, 4 epochs: steady epochs 2 and 3):

    tar xzf ../shared/data/cifar10-train.tar.gz -C /tmp/data
    python benchmarks/epoch_speed.py --data=/tmp/data/cifar10-train \
        --out=benchmarks/results/epoch_speed.json
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import _common  # noqa: E402

RUNS = ("fp", "slb", "plain_fit")
TARGETS = {"slb/fp": 1.15, "fp/plain_fit": 1.05}


def train_py_argv(args, method, model_dir):
    """The train.py command of one timed run."""
    argv = [
        sys.executable, os.path.join(ROOT, "train.py"), f"--model={args.model}", f"--method={method}",
        f"--dataset={args.data}", f"--epochs={args.epochs}", f"--steps_per_epoch={args.steps_per_epoch}",
        f"--batch_size={args.batch_size}", f"--seed={args.seed}", f"--model_dir={model_dir}",
    ]
    if method == "slb":
        argv += [f"--wbits={args.wbits}", f"--abits={args.abits}"]
    return argv


def run_train_py(args, method, runs_dir):
    """Runs train.py once; returns its epoch and training-step seconds, the wall time, the command."""
    model_dir = os.path.join(runs_dir, method)
    argv = train_py_argv(args, method, model_dir)
    summary, wall, line = _common.run_train_py(argv, model_dir, append=False)
    return {"epoch_seconds": summary["epoch_seconds"], "train_seconds": summary["train_seconds"],
            "wall_seconds": wall, "command": line}


def plain_fit(args):
    """The child process of the "plain fit" run: returns its epoch seconds."""
    import keras

    import input_pipeline
    import models
    from training.config import Config, resolve
    from training.optimization import make_optimizer

    keras.utils.set_random_seed(args.seed)
    info = input_pipeline.get_dataset_info(args.data)  # train.py's size and normalization
    batches = input_pipeline.build_dataset(args.data, "train", args.batch_size, seed=args.seed, augment=False,
                                           steps_per_epoch=args.steps_per_epoch).take(args.steps_per_epoch)
    x, y = (np.concatenate(parts) for parts in zip(*((b[0].numpy(), b[1].numpy()) for b in batches)))
    config = resolve(Config(model=args.model, method="fp", epochs=args.epochs, batch_size=args.batch_size,
                            dataset=args.data))
    model = models.get_model(args.model, method="fp", input_shape=info.input_shape, num_classes=info.num_classes,
                             block=config.block, input_normalization=(info.channel_mean, info.channel_std))
    model.compile(optimizer=make_optimizer(config, args.steps_per_epoch),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    seconds, start = [], []
    clock = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: start.append(time.perf_counter()),
        on_epoch_end=lambda epoch, logs: seconds.append(time.perf_counter() - start[-1]),
    )
    model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, shuffle=True, callbacks=[clock], verbose=0)
    return {"epoch_seconds": seconds}


def run_plain_fit(args):
    """Runs the plain fit in a fresh process; returns its epoch seconds and wall time."""
    argv = [sys.executable, os.path.abspath(__file__), "--child", f"--data={args.data}", f"--model={args.model}",
            f"--epochs={args.epochs}", f"--steps_per_epoch={args.steps_per_epoch}",
            f"--batch_size={args.batch_size}", f"--seed={args.seed}", "--out=-"]
    start = time.perf_counter()
    result = _common.run_child(argv)
    result["wall_seconds"] = time.perf_counter() - start
    return result


def steady(seconds):
    """The steady epochs of a run: without the first (tracing) and, from 3 epochs on, the last."""
    if len(seconds) >= 3:
        return seconds[1:-1]
    return seconds[1:] or seconds


def fastest(record):
    """The fastest steady epoch of a run, seconds."""
    return min(steady(record["epoch_seconds"]))


def once_per_run(record):
    """What the last epoch took beyond the steady ones (SLB: the one final BN calibration)."""
    seconds = record["epoch_seconds"]
    return seconds[-1] - float(np.median(steady(seconds))) if len(seconds) >= 3 else None


def summarize(rounds, images_per_epoch):
    """Per run: fastest epoch and images/s (median over rounds); the ratios per round and median."""
    runs = {}
    for name in RUNS:
        best = [fastest(r[name]) for r in rounds]
        runs[name] = {"fastest_epoch_seconds": float(np.median(best)),
                      "images_per_second": float(images_per_epoch / np.median(best))}
        if "train_seconds" in rounds[0][name]:  # train.py's runs: the steps, the rest of the epoch
            rest = [min(e - t for e, t in zip(steady(r[name]["epoch_seconds"]), steady(r[name]["train_seconds"])))
                    for r in rounds]
            runs[name]["end_of_epoch_seconds"] = float(np.median(rest))
        last = [once_per_run(r[name]) for r in rounds]
        if None not in last:
            runs[name]["last_epoch_extra_seconds"] = float(np.median(last))
    ratios = {}
    for key in TARGETS:
        top, bottom = key.split("/")
        per_round = [fastest(r[top]) / fastest(r[bottom]) for r in rounds]
        ratios[key] = {"per_round": per_round, "median": float(np.median(per_round)), "target": TARGETS[key]}
    return {"runs": runs, "ratios": ratios}


def print_report(report):
    images = report["images_per_epoch"]
    print(f"{report['model']}, {images} images per epoch, batch {report['batch_size']}, "
          f"SLB W{report['wbits']}A{report['abits']}")
    print(f"  {'run':10s} {'round':>5s} {'epochs (s)':40s} {'fastest':>8s} {'images/s':>9s} {'load':>11s}"
          "  (fastest of the steady epochs 2..E-1)")
    for i, rnd in enumerate(report["rounds"]):
        for name in RUNS:
            r = rnd[name]
            epochs = " / ".join(f"{s:.1f}" for s in r["epoch_seconds"])
            load = f"{r['load_before'][0]:.1f}-{r['load_after'][0]:.1f}"
            print(f"  {name:10s} {i:5d} {epochs:40s} {fastest(r):8.1f} {images / fastest(r):9.0f} {load:>11s}")
    for name, run in report["summary"]["runs"].items():
        parts = [f"{key.replace('_', ' ')} {run[key]:.1f}" for key in ("end_of_epoch_seconds", "last_epoch_extra_seconds")
                 if key in run]
        if parts:
            print(f"  {name}: " + ", ".join(parts))
    for key, ratio in report["summary"]["ratios"].items():
        rounds = ", ".join(f"{x:.2f}" for x in ratio["per_round"])
        print(f"  {key}: {ratio['median']:.2f} (rounds: {rounds}; target <= {ratio['target']})")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a folder of class folders (the unpacked cifar10-train)")
    parser.add_argument("--model", default="resnet20", choices=["resnet20", "vgg_small"])
    parser.add_argument("--wbits", type=int, default=1)
    parser.add_argument("--abits", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--steps_per_epoch", type=int, default=100)
    parser.add_argument("--batch_size", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="the JSON report")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("epochs", "steps_per_epoch", "batch_size", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name}={getattr(args, name)}: expected an integer >= 1")
    if not os.path.isdir(args.data):
        parser.error(f"--data={args.data}: not a folder (expected a folder of class folders)")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        _common.report_to_parent(plain_fit(args))
        return
    rounds = []
    with tempfile.TemporaryDirectory(prefix="epoch_speed_") as runs_root:
        for i in range(args.rounds):
            rnd, runs_dir = {}, os.path.join(runs_root, f"round{i}")
            os.makedirs(runs_dir)
            for name in RUNS:
                load_before = os.getloadavg()
                if name == "plain_fit":
                    rnd[name] = run_plain_fit(args)
                else:
                    rnd[name] = run_train_py(args, name, runs_dir)
                rnd[name].update(load_before=load_before, load_after=os.getloadavg())
            rounds.append(rnd)
    images = args.steps_per_epoch * args.batch_size
    report = {"model": args.model, "wbits": args.wbits, "abits": args.abits, "epochs": args.epochs,
              "batch_size": args.batch_size, "images_per_epoch": images, "data": args.data,
              "rounds": rounds, "summary": summarize(rounds, images)}
    _common.write_report(args.out, report)
    print_report(report)


if __name__ == "__main__":
    main()
