"""The layer core on the JAX backend, in a child process with KERAS_BACKEND=jax.

The pytest process has imported Keras with TensorFlow, and a Keras process has
one backend, so `test_layer_core_on_jax` runs this file as a script with
KERAS_BACKEND=jax set before Keras is imported. The script (`jax_checks`)
builds an SLB network (SLBConv2D with PACT inputs, StateBatchNormalization,
SLBDepthwiseConv2D with sign inputs, SLBConv1D, SLBDense with DoReFa inputs),
checks the quantizers' straight-through gradients and the soft kernel against
NumPy, fits it with `TemperatureScheduler`, `BNCalibration` and `SLBMetrics`,
runs `calibrate_bn` (hard and soft) and `quantize_model`, checks soft == hard
once the logits are one-hot, and saves the model and its predictions. The test
then loads the `.keras` file on TensorFlow and compares the predictions.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHECKS = (
    "backend",
    "quantizer_gradients",
    "soft_kernel",
    "fit",
    "temperature_scheduler",
    "calibrate_bn",
    "soft_equals_hard",
    "quantize_model",
    "save",
)


def _inputs(n=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 8, 8, 3)).astype("float32"), rng.integers(0, 4, size=n)


def _model(keras, slb_keras):
    inputs = keras.Input((8, 8, 3))
    x = slb_keras.SLBConv2D(8, 3, padding="same", wbits=2, input_quantizer="pact2", name="c1")(inputs)
    x = slb_keras.StateBatchNormalization(name="bn1")(x)
    x = slb_keras.SLBDepthwiseConv2D(3, wbits=1, input_quantizer="ste_sign", use_bias=False, name="dw")(x)
    x = slb_keras.StateBatchNormalization(name="bn2")(x)
    x = keras.layers.Reshape((36, 8))(x)
    x = slb_keras.SLBConv1D(8, 3, padding="causal", wbits=3, name="c3")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    outputs = slb_keras.SLBDense(4, wbits=2, input_quantizer="dorefa4", name="d")(x)
    return keras.Model(inputs, outputs)


def jax_checks(out):
    """The checks, on the backend of this process; writes out/report.json."""
    import jax
    import keras
    import tensorflow as tf  # tf.data only: the model runs on JAX

    import slb_keras
    from slb_keras.core import ops as slb_ops
    from slb_keras.core import quantizers

    report = {}
    report["backend"] = keras.backend.backend()
    assert report["backend"] == "jax", report

    # Straight-through gradients, taken by JAX.
    x = np.array([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0], "float32")
    sign_grad = jax.grad(lambda v: quantizers.ste_sign(v).sum())(x)
    np.testing.assert_array_equal(sign_grad, np.abs(x) <= 1)
    np.testing.assert_array_equal(quantizers.ste_sign(x), np.where(x >= 0, 1.0, -1.0))
    dorefa_grad = jax.grad(lambda v: quantizers.dorefa_quantize(v, 2).sum())(x)
    np.testing.assert_array_equal(dorefa_grad, (x >= 0) & (x <= 1))
    x_grad, alpha_grad = jax.grad(lambda v, a: quantizers.pact_quantize(v, a, 2).sum(), argnums=(0, 1))(
        x, np.float32(1.5)
    )
    np.testing.assert_array_equal(x_grad, (x >= 0) & (x <= 1.5))
    assert float(alpha_grad) == 1.0  # one input above alpha
    report["quantizer_gradients"] = True

    # The soft kernel (keras.ops reference path, jit-compiled) against NumPy.
    logits = np.random.default_rng(1).normal(size=(5, 7, 4)).astype("float32")
    soft = jax.jit(lambda a, t: slb_ops.soft_weight(a, t, bits=2))(logits, np.float32(3.0))
    z = np.exp(3.0 * (logits - logits.max(-1, keepdims=True)))
    expected = (z / z.sum(-1, keepdims=True)) @ slb_keras.value_set(2)
    np.testing.assert_allclose(np.asarray(soft), expected, rtol=1e-5, atol=1e-6)
    report["soft_kernel"] = True

    keras.utils.set_random_seed(0)
    images, labels = _inputs()
    model = _model(keras, slb_keras)
    model.compile(
        keras.optimizers.Adam(1e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    calibration = tf.data.Dataset.from_tensor_slices(images).batch(8)
    before = np.asarray(model.get_layer("c1").kernel_logits.numpy()).copy()
    history = model.fit(
        images,
        labels,
        batch_size=8,
        epochs=2,
        verbose=0,
        validation_data=(images[:8], labels[:8]),
        callbacks=[
            # Per epoch: on JAX, fit carries the variables in its own state within
            # an epoch, so a per-step update would need the scheduler to sync it.
            slb_keras.TemperatureScheduler(start=0.5, end=5.0, update_freq="epoch"),
            slb_keras.BNCalibration(calibration, steps=2),
            slb_keras.SLBMetrics(x=images[:8]),
        ],
    )
    assert np.all(np.isfinite(history.history["loss"])), history.history
    assert not np.array_equal(model.get_layer("c1").kernel_logits.numpy(), before)
    assert 0.0 <= history.history["slb_output_gap"][-1] <= 2.0
    report["fit"] = {key: [float(v) for v in values] for key, values in history.history.items()}
    tau = [float(layer.temperature.numpy()) for layer in slb_keras.slb_layers(model)]
    assert len(set(tau)) == 1 and 0.5 < tau[0] <= 5.0, tau
    np.testing.assert_allclose(tau[0], history.history["temperature"][-1], rtol=1e-6)
    report["temperature_scheduler"] = tau[0]

    assert slb_keras.calibrate_bn(model, calibration, steps=3) == 3
    assert float(model.get_layer("bn1").calibrated.numpy()) == 1.0
    assert slb_keras.calibrate_bn(model, calibration, steps=1, state="soft") == 1
    h = np.asarray(model.get_layer("c1")(images[:8], training=False), np.float64)
    np.testing.assert_allclose(model.get_layer("bn1").moving_mean.numpy(), np.asarray(
        model.get_layer("c1")(images[:8], training=True), np.float64).mean((0, 1, 2)), rtol=1e-4, atol=1e-5)
    assert h.shape == (8, 8, 8, 8)
    report["calibrate_bn"] = True

    # One-hot logits and a high tau: the soft layer computes the hard one.
    for layer in slb_keras.slb_layers(model):
        x_in = np.random.default_rng(2).normal(size=(2,) + tuple(layer.input.shape[1:])).astype("float32")
        layer.assign_kernel(layer.hard_kernel(), margin=100.0)
        layer.temperature.assign(10.0)
        np.testing.assert_allclose(
            np.asarray(layer(x_in, training=True)), np.asarray(layer(x_in, training=False)), rtol=1e-5, atol=1e-5
        )
    report["soft_equals_hard"] = True

    float_model = keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, use_bias=False), keras.layers.BatchNormalization(),
         keras.layers.Conv2D(4, 3, use_bias=False), keras.layers.BatchNormalization(), keras.layers.Flatten(),
         keras.layers.Dense(2)]
    )  # fmt: skip
    converted = slb_keras.quantize_model(float_model, wbits=2, abits=4)
    assert [type(layer).__name__ for layer in converted.layers][2] == "SLBConv2D"
    assert np.all(np.isfinite(np.asarray(converted.predict(images[:4], verbose=0))))
    report["quantize_model"] = True

    model.save(os.path.join(out, "jax_model.keras"))
    np.save(os.path.join(out, "jax_predictions.npy"), model.predict(images, verbose=0))
    report["save"] = True
    with open(os.path.join(out, "report.json"), "w") as file:
        json.dump(report, file)


@pytest.mark.slow
def test_layer_core_on_jax(tmp_path):
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    child = subprocess.run(
        [sys.executable, __file__, str(tmp_path)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert child.returncode == 0, child.stdout[-2000:] + child.stderr[-6000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert tuple(report) == CHECKS and report["backend"] == "jax"

    import keras

    import slb_keras  # noqa: F401  (registers the SLB classes)

    assert keras.backend.backend() == "tensorflow"
    loaded = keras.models.load_model(tmp_path / "jax_model.keras")
    images, _ = _inputs()
    np.testing.assert_allclose(
        loaded.predict(images, verbose=0), np.load(tmp_path / "jax_predictions.npy"), rtol=1e-4, atol=1e-4
    )
    assert float(loaded.get_layer("bn1").calibrated.numpy()) == 1.0


if __name__ == "__main__":
    jax_checks(sys.argv[1])
