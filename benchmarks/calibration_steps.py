"""How many BN calibration batches a trained SLB network needs: statistics and accuracy.

train.py calibrates the hard BN statistics with as many training batches as the
validation (or test) part has (the authors' choice: 50 at 5,000 validation images,
100 at CIFAR-10's 10,000 held-apart ones). This measures what fewer or more batches
change on a finished train.py run: for each number of batches and each batch order
(`--orders`: the training stream with that seed, augmented as train.py's), the hard
statistics are recalibrated (`slb_keras.calibrate_bn`) and the run's test part
evaluated. Reported per number of batches: hard test accuracy (mean, std, min, max over
orders), the largest relative change of any layer's hard mean and variance against the
reference (the most batches of the first order, in units of the reference's standard
deviation for the mean), and the seconds the calibration took (median).

Example (a finished ResNet-20 SLB run of benchmarks/cifar10.py):

    python benchmarks/calibration_steps.py \
        --model_dir=/tmp/cifar10_runs/resnet20_slb_w1a32_e4_s1_v0.125 \
        --steps=10,25,50,100,200 --orders=3 --out=benchmarks/results/calibration_steps.json
"""

import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import _common  # noqa: E402


def hard_statistics(model):
    """Every state BN layer's hard (mean, variance), float64 copies."""
    from slb_keras.search.calibration import state_bn_layers

    return [(np.asarray(layer.hard_moving_mean.numpy(), np.float64),
             np.asarray(layer.hard_moving_variance.numpy(), np.float64)) for layer in state_bn_layers(model)]


def deviation(stats, reference):
    """Largest change of a mean (in reference std units) and of a variance (relative)."""
    mean_dev = max(float(np.max(np.abs(m - rm) / np.sqrt(rv + 1e-12))) for (m, _), (rm, rv) in zip(stats, reference))
    var_dev = max(float(np.max(np.abs(v - rv) / (rv + 1e-12))) for (_, v), (_, rv) in zip(stats, reference))
    return mean_dev, var_dev


def test_accuracy(model, test_ds):
    correct = total = 0
    for images, labels in test_ds:
        predicted = np.argmax(model(images, training=False), axis=-1)
        correct += int(np.sum(predicted == labels.numpy()))
        total += int(labels.shape[0])
    return correct / total


def measure(args):
    import keras

    import input_pipeline
    import slb_keras

    with open(os.path.join(args.model_dir, "summary.json")) as file:
        config = json.load(file)["config"]
    model = keras.models.load_model(os.path.join(args.model_dir, "model.keras"))
    data = dict(data_dir=config["data_dir"], image_size=config["image_size"],
                validation_split=config["validation_split"])
    batch = config["batch_size"]
    test_ds = input_pipeline.build_dataset(config["dataset"], "test", batch, **data)
    saved = hard_statistics(model)
    saved_accuracy = test_accuracy(model, test_ds)
    results, reference = [], None
    for order in range(args.orders):
        train_ds = input_pipeline.build_dataset(config["dataset"], "train", batch, seed=config["seed"] + order,
                                                augment=config["augment"], **data)
        for steps in sorted(args.steps, reverse=True):  # the reference (most batches, order 0) first
            start = time.perf_counter()
            slb_keras.calibrate_bn(model, train_ds, steps=steps)
            seconds = time.perf_counter() - start
            stats = hard_statistics(model)
            if reference is None:
                reference = stats
            mean_dev, var_dev = deviation(stats, reference)
            results.append({"steps": steps, "order": order, "seconds": seconds, "mean_deviation": mean_dev,
                            "variance_deviation": var_dev, "test_accuracy": test_accuracy(model, test_ds)})
            print(f"  {steps:4d} batches, order {order}: test {100 * results[-1]['test_accuracy']:.2f}%, "
                  f"mean dev {mean_dev:.4f} std, var dev {var_dev:.4f} ({seconds:.1f} s)", flush=True)
    return {"model_dir": args.model_dir, "batch_size": batch, "run_config": config,
            "saved_test_accuracy": saved_accuracy, "saved_deviation": deviation(saved, reference),
            "results": results}


def table(results):
    """Rows per number of batches: accuracy over orders and the largest deviations."""
    rows = []
    for steps in sorted({r["steps"] for r in results}):
        group = [r for r in results if r["steps"] == steps]
        acc = np.array([r["test_accuracy"] for r in group])
        rows.append({"steps": steps, "n": len(group), "mean": float(acc.mean()), "std": float(acc.std()),
                     "min": float(acc.min()), "max": float(acc.max()),
                     "mean_deviation": max(r["mean_deviation"] for r in group),
                     "variance_deviation": max(r["variance_deviation"] for r in group),
                     "seconds": float(np.median([r["seconds"] for r in group]))})
    return rows


def print_table(report):
    print(f"{report['model_dir']}: as saved {100 * report['saved_test_accuracy']:.2f}% test")
    print(f"  {'batches':>7s} {'orders':>6s} {'test %':>7s} {'std':>5s} {'min-max':>13s} "
          f"{'mean dev':>9s} {'var dev':>8s} {'s':>6s}")
    for r in report["table"]:
        print(f"  {r['steps']:7d} {r['n']:6d} {100 * r['mean']:7.2f} {100 * r['std']:5.2f} "
              f"{100 * r['min']:6.2f}-{100 * r['max']:6.2f} {r['mean_deviation']:9.4f} "
              f"{r['variance_deviation']:8.4f} {r['seconds']:6.1f}")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_dir", required=True, help="a finished train.py SLB run (model.keras, summary.json)")
    parser.add_argument("--steps", default="10,25,50,100,200",
                        type=lambda s: [int(x) for x in s.split(",")], help="numbers of calibration batches")
    parser.add_argument("--orders", type=int, default=3, help="batch orders (training-stream seeds) per number")
    parser.add_argument("--out", required=True, help="the JSON report")
    args = parser.parse_args(argv)
    for name in ("model.keras", "summary.json"):
        if not os.path.isfile(os.path.join(args.model_dir, name)):
            parser.error(f"--model_dir={args.model_dir}: no {name} (expected a finished train.py run)")
    if min(args.steps) < 1 or args.orders < 1:
        parser.error(f"--steps={args.steps} --orders={args.orders}: expected integers >= 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    load_before = os.getloadavg()
    report = measure(args)
    report.update(load_before=load_before, load_after=os.getloadavg())
    report["table"] = table(report["results"])
    _common.write_report(args.out, report)
    print_table(report)


if __name__ == "__main__":
    main()
