import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.src import testing

import slb_keras
from slb_keras.core import quantizers


def _value_and_grad(fn, x):
    x = tf.constant(x, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
    return y.numpy(), tape.gradient(y, x).numpy()


def test_sign_forward_and_clipped_ste():
    y, g = _value_and_grad(quantizers.ste_sign, [-2.0, -1.0, -0.3, 0.0, 0.5, 1.0, 1.5])
    np.testing.assert_array_equal(y, [-1, -1, -1, 1, 1, 1, 1])
    np.testing.assert_array_equal(g, [0, 1, 1, 1, 1, 1, 0])


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_dorefa_forward_exact_and_ste_inside_clip(bits):
    n = 2**bits - 1
    x = np.linspace(-0.5, 1.5, 101).astype(np.float32)
    y, g = _value_and_grad(lambda t: quantizers.dorefa_quantize(t, bits), x)
    expected = np.round(np.clip(x, 0, 1) * n) / n
    np.testing.assert_array_equal(y, expected.astype(np.float32))
    assert len(np.unique(y)) <= n + 1
    np.testing.assert_array_equal(g, ((x >= 0) & (x <= 1)).astype(np.float32))


def test_pact_forward_and_alpha_gradient():
    layer = slb_keras.PACTQuantizer(2, alpha_initializer=3.0)
    x = tf.constant([-1.0, 0.4, 1.2, 2.9, 9.0])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y = layer(x)
    np.testing.assert_allclose(y.numpy(), [0, 0, 1, 3, 3])
    np.testing.assert_array_equal(tape.gradient(y, x).numpy(), [0, 1, 1, 1, 0])
    # d y / d alpha is 1 where x is clipped at alpha (PACT).
    assert tape.gradient(y, layer.alpha).numpy() == pytest.approx(1.0)


def test_identity_and_32_bits():
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    np.testing.assert_array_equal(slb_keras.ActivationQuantizer(32)(x).numpy(), x)


@pytest.mark.parametrize(
    "alias, cls, bits",
    [
        ("ste_sign", slb_keras.ActivationQuantizer, 1),
        ("dorefa2", slb_keras.ActivationQuantizer, 2),
        ("DoReFa8", slb_keras.ActivationQuantizer, 8),
        ("pact4", slb_keras.PACTQuantizer, 4),
        ("identity", slb_keras.ActivationQuantizer, 32),
        (3, slb_keras.ActivationQuantizer, 3),
        ({"class_name": "slb_keras>ActivationQuantizer", "config": {"bits": 4}}, slb_keras.ActivationQuantizer, 4),
    ],
)
def test_get(alias, cls, bits):
    q = quantizers.get(alias)
    assert type(q) is cls and q.bits == bits


def test_get_passes_layers_and_none():
    q = slb_keras.ActivationQuantizer(2)
    assert quantizers.get(q) is q and quantizers.get(None) is None


@pytest.mark.parametrize("bad", ["sign", "dorefa1", "dorefa99", "pact0", 1.5, [1]])
def test_get_bad(bad):
    with pytest.raises(ValueError, match=r"Invalid input_quantizer=.*ste_sign"):
        quantizers.get(bad)


@pytest.mark.parametrize("cls", [slb_keras.ActivationQuantizer, slb_keras.PACTQuantizer])
@pytest.mark.parametrize("bad", [0, 33, 17, -1, 2.5, "two", None])
def test_bad_bits(cls, bad):
    with pytest.raises(ValueError, match=r"Invalid bits=.*integer from 1 to 16 or 32"):
        cls(bad)


def test_bad_pact_alpha():
    with pytest.raises(ValueError, match="alpha_initializer"):
        slb_keras.PACTQuantizer(2, alpha_initializer=0.0)


class QuantizerLayerTest(testing.TestCase):
    def test_activation_quantizer_layer(self):
        for bits in (1, 2, 32):
            self.run_layer_test(
                slb_keras.ActivationQuantizer,
                init_kwargs={"bits": bits},
                input_shape=(2, 5),
                expected_output_shape=(2, 5),
                expected_num_trainable_weights=0,
                supports_masking=True,
            )

    def test_pact_layer(self):
        self.run_layer_test(
            slb_keras.PACTQuantizer,
            init_kwargs={"bits": 4, "alpha_initializer": 2.0, "alpha_regularizer": "l2"},
            input_shape=(2, 5),
            expected_output_shape=(2, 5),
            expected_num_trainable_weights=1,
            expected_num_losses=1,
        )

    def test_save_load_without_custom_objects(self):
        model = keras.Sequential(
            [keras.Input((4,)), slb_keras.PACTQuantizer(3, alpha_initializer=1.5), slb_keras.ActivationQuantizer(2)]
        )
        path = self.get_temp_dir() + "/q.keras"
        model.save(path)
        loaded = keras.models.load_model(path)
        x = np.linspace(-1, 3, 8, dtype=np.float32).reshape(2, 4)
        np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
