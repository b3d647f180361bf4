import keras
import numpy as np
import pytest

import models
import slb_keras
from slb_keras.core import initializers


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_quadratic_logits_argmax_is_the_value_nearest_a_uniform_weight(bits):
    values = np.asarray(slb_keras.value_set(bits))
    logits = np.asarray(initializers.QuadraticLogits(scale=3.0, seed=0)((2000, 2**bits)))
    # each row is -3 (v - w)^2 for one w: recover w from two entries, check the whole row
    w = (logits[:, -1] - logits[:, 0]) / (3.0 * 2 * (values[-1] - values[0])) + (values[-1] + values[0]) / 2
    np.testing.assert_allclose(logits, -3.0 * (values - w[:, None]) ** 2, atol=1e-5)
    assert w.min() >= -1 and w.max() <= 1 and w.std() == pytest.approx(2 / np.sqrt(12), rel=0.1)
    nearest = np.argmin(np.abs(values - w[:, None]), axis=-1)
    np.testing.assert_array_equal(np.argmax(logits, axis=-1), nearest)


def test_a_linear_logit_update_moves_the_centre():
    # A_k + c v_k = -s (v_k - (w + c / (2 s)))^2 + const: the argmax follows a latent weight
    values = np.asarray(slb_keras.value_set(4))
    logits = np.asarray(initializers.QuadraticLogits(scale=2.0, seed=1)((500, 16)))
    w = (logits[:, -1] - logits[:, 0]) / (2.0 * 2 * 2)
    c = 0.5
    shifted = np.argmax(logits + c * values, axis=-1)
    np.testing.assert_array_equal(shifted, np.argmin(np.abs(values - (w + c / 4.0)[:, None]), axis=-1))
    assert len(set(shifted.tolist())) > 8  # inner values stay reachable


def test_quadratic_logits_in_layers_and_saved_models(tmp_path):
    model = models.get_model("vgg_small", method="slb", wbits=2, abits=2, width_multiplier=0.0625,
                             logits_init="quadratic")
    layers = slb_keras.slb_layers(model)
    assert all(type(layer.logits_initializer) is initializers.QuadraticLogits for layer in layers)
    codes = np.concatenate([layer.kernel_codes().numpy().ravel() for layer in layers])
    assert np.bincount(codes, minlength=4).min() > 0.2 * codes.size / 4  # every value used at start
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(slb_keras.slb_layers(loaded)[0].kernel_logits.numpy(), layers[0].kernel_logits.numpy())
    with pytest.raises(ValueError, match="logits_init='gauss'"):
        models.get_model("vgg_small", logits_init="gauss")


@pytest.mark.parametrize("bad", [0, -1.0, float("inf"), "1", True])
def test_bad_scale(bad):
    with pytest.raises(ValueError, match="scale"):
        initializers.QuadraticLogits(scale=bad)


def test_bad_shape():
    with pytest.raises(ValueError, match="2\\*\\*bits"):
        initializers.QuadraticLogits()((3, 3))
