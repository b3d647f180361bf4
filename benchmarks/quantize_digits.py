"""quantize_model's float init against random logits on digits (8x8 images at 16x16).

Trains a float CNN on the scikit-learn digits, converts it with
`slb_keras.quantize_model` (init="float" and init="random"), trains each SLB
model with a temperature schedule and BN calibration, and prints the hard test
accuracy straight out of the conversion, after calibration, and per epoch.
tests/test_quantize.py runs `digits_experiment` on a shorter budget.

Example:

    python benchmarks/quantize_digits.py 1      # 1-bit weights (2 for 2 bits)
"""

import os
import sys

import keras
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import slb_keras  # noqa: E402
from slb_keras.datasets import load_digits  # noqa: E402

# -- init="float" against init="random" on digits ------------------------------------

# (label, init, temperature schedule start): the float init starts at the
# temperature its logits were set for (1.0, the SLB layers' initial tau);
# random logits get the paper's schedule, which starts at 0.01 to explore.
DIGITS_RUNS = (("init=float", "float", 1.0), ("init=random", "random", 0.01))


def digits_experiment(wbits=1, float_epochs=10, epochs=8, runs=DIGITS_RUNS):
    """Trains a float CNN on digits, converts it, trains the SLB model.

    Returns a dict: "float_accuracy" (of the float CNN) and, per run label,
    "converted" (hard test accuracy straight out of quantize_model),
    "curve" (hard test accuracy after calibrate_bn: before SLB training,
    then after each epoch, with BN calibration after each epoch) and
    "epochs_to_float" / "epochs_to_float_minus_1" (first epoch reaching
    the float accuracy / within one point of it; None if never).
    """
    from slb_keras import BNCalibration
    from slb_keras import TemperatureScheduler
    from slb_keras import calibrate_bn

    keras.utils.set_random_seed(0)
    (x, y), (x_test, y_test) = load_digits(image_size=16, channels=1)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def block(filters):
        return [
            keras.layers.Conv2D(filters, 3, padding="same", use_bias=False),
            keras.layers.BatchNormalization(momentum=0.9),
            keras.layers.ReLU(),
        ]

    model = keras.Sequential(
        [keras.Input((16, 16, 1)), *block(16), *block(32), keras.layers.MaxPooling2D(),
         *block(32), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)]
    )  # fmt: skip
    model.compile(keras.optimizers.Adam(3e-3), loss, metrics=["accuracy"])
    model.fit(x, y, epochs=float_epochs, batch_size=64, verbose=0)
    float_accuracy = model.evaluate(x_test, y_test, verbose=0)[1]
    results = {"float_accuracy": float_accuracy}
    calibration = tf.data.Dataset.from_tensor_slices(x).batch(256)
    for label, init, tau_start in runs:
        keras.utils.set_random_seed(1)
        slb = slb_keras.quantize_model(model, wbits=wbits, init=init)
        slb.compile(keras.optimizers.Adam(3e-3), loss, metrics=["accuracy"])
        converted = slb.evaluate(x_test, y_test, verbose=0)[1]
        calibrate_bn(slb, calibration)
        curve = [slb.evaluate(x_test, y_test, verbose=0)[1]]
        history = slb.fit(
            x, y, epochs=epochs, batch_size=64, verbose=0, validation_data=(x_test, y_test),
            callbacks=[TemperatureScheduler(tau_start, 10.0), BNCalibration(calibration)],
        )  # fmt: skip
        curve += history.history["val_accuracy"]

        def first(target, curve=curve):
            return next((epoch for epoch, acc in enumerate(curve) if acc >= target), None)

        results[label] = {
            "converted": converted,
            "curve": curve,
            "epochs_to_float": first(float_accuracy - 1e-6),
            "epochs_to_float_minus_1": first(float_accuracy - 0.01),
        }
    return results



def print_digits_experiment(wbits):
    """Prints the figures of `digits_experiment`: python benchmarks/quantize_digits.py [wbits]."""
    runs = DIGITS_RUNS + (("random, tau 1 -> 10", "random", 1.0),)
    results = digits_experiment(wbits=wbits, runs=runs)
    print(f"wbits={wbits}, float CNN test accuracy: {results['float_accuracy']:.4f}")
    for label, *_ in runs:
        run = results[label]
        curve = " ".join(f"{acc:.3f}" for acc in run["curve"])
        print(
            f"{label}: straight out of quantize_model {run['converted']:.3f}; "
            f"hard accuracy (calibrated) before training, then per epoch: {curve}; "
            f"epochs to the float accuracy: {run['epochs_to_float']}, "
            f"to within 1 point: {run['epochs_to_float_minus_1']}"
        )


if __name__ == "__main__":
    print_digits_experiment(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
