"""bfloat16 mixed precision (`--bf16`): SLB layers and train.py compute in bfloat16 with
float32 variables, and the run's model exports to TFLite."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import slb_keras
import training
from tiny_run import TINY


def test_slb_conv_in_bfloat16_matches_float32_within_bfloat16_rounding():
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 3)).astype("float32")
    reference = slb_keras.SLBConv2D(4, 3, wbits=2)
    reference(x)
    layer = slb_keras.SLBConv2D(4, 3, wbits=2, dtype="mixed_bfloat16")
    layer(x)
    layer.set_weights(reference.get_weights())
    for training_flag in (True, False):  # soft and hard kernels
        out = layer(x, training=training_flag)
        assert out.dtype == tf.bfloat16
        expected = reference(x, training=training_flag).numpy()
        np.testing.assert_allclose(out.numpy().astype("float32"), expected, rtol=0.05, atol=0.05)
    assert layer.kernel_logits.dtype == "float32" and layer.temperature.dtype == "float32"
    # The hard kernel is the same codes: bfloat16 holds +-1 and +-1/3's rounding identically.
    np.testing.assert_array_equal(layer.kernel_codes().numpy(), reference.kernel_codes().numpy())


def test_bf16_run_restores_the_policy_and_exports(tmp_path):
    before = keras.config.dtype_policy().name
    summary = training.run({**TINY, "method": "slb", "epochs": 1, "bf16": True, "export": True,
                            "model_dir": str(tmp_path)})
    assert keras.config.dtype_policy().name == before
    assert np.isfinite(summary["history"][0]["loss"]) and 0.0 <= summary["test_accuracy"] <= 1.0
    model = keras.models.load_model(tmp_path / "model.keras")
    assert model.get_layer("conv2").dtype_policy.name == "mixed_bfloat16"
    assert model.get_layer("fc").dtype_policy.name == "float32"
    assert (tmp_path / training.TFLITE_FILE).stat().st_size > 0


def test_bf16_and_mixed_precision_together_are_refused():
    with pytest.raises(training.UsageError, match=r"Invalid --bf16=True: expected off with --mixed_precision"):
        training.resolve(training.Config(dataset="digits", bf16=True, mixed_precision=True))


def test_augment_must_be_a_bool_or_unset():
    with pytest.raises(training.UsageError, match=r"Invalid --augment=yes"):
        training.resolve(training.Config(dataset="digits", augment="yes"))
