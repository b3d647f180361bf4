import inspect
import zipfile

import h5py
import keras
import numpy as np
import pytest
from keras.src import testing

import slb_keras
from slb_keras import StateBatchNormalization


def _data(shape, seed=0, loc=0.0, scale=1.0):
    return np.random.default_rng(seed).normal(loc, scale, size=shape).astype(np.float32)


def _numpy_bn(x, mean, var, gamma, beta, eps, axis=-1):
    shape = [1] * x.ndim
    shape[axis] = -1
    r = lambda v: np.reshape(v, shape)  # noqa: E731
    return r(gamma) * (x - r(mean)) / np.sqrt(r(var) + eps) + r(beta)


class StateBatchNormalizationHarnessTest(testing.TestCase):
    """Keras's layer test harness: build, shapes, serialization, training, mixed precision."""

    def test_run_layer_test(self):
        self.run_layer_test(
            StateBatchNormalization,
            init_kwargs={"momentum": 0.9, "epsilon": 1e-3},
            input_shape=(2, 5, 3),
            expected_output_shape=(2, 5, 3),
            expected_num_trainable_weights=2,
            expected_num_non_trainable_weights=5,  # 2 soft, 2 hard, calibrated
            expected_num_non_trainable_variables=5,
            supports_masking=True,
        )

    def test_run_layer_test_channels_first_no_scale(self):
        self.run_layer_test(
            StateBatchNormalization,
            init_kwargs={"axis": 1, "scale": False, "center": True},
            input_shape=(2, 4, 3, 3),
            expected_output_shape=(2, 4, 3, 3),
            expected_num_trainable_weights=1,
            expected_num_non_trainable_weights=5,
            supports_masking=True,
        )


def test_signature_parity_with_keras_batch_normalization():
    ours = inspect.signature(StateBatchNormalization.__init__)
    theirs = inspect.signature(keras.layers.BatchNormalization.__init__)
    assert ours == theirs
    assert issubclass(StateBatchNormalization, keras.layers.BatchNormalization)


def test_config_roundtrip_keeps_every_keras_argument():
    layer = StateBatchNormalization(axis=1, momentum=0.8, epsilon=1e-2, center=False, renorm=True)
    config = layer.get_config()
    assert config == keras.layers.BatchNormalization.from_config(config).get_config()
    clone = StateBatchNormalization.from_config(config)
    assert clone.get_config() == config


def test_training_updates_soft_statistics_only_and_matches_keras():
    x = _data((16, 4), loc=3.0, scale=2.0)
    ours = StateBatchNormalization(momentum=0.5)
    ref = keras.layers.BatchNormalization(momentum=0.5)
    for layer in (ours, ref):
        layer.build(x.shape)
    ours.gamma.assign([1.0, 2.0, 0.5, 1.5])
    ref.gamma.assign([1.0, 2.0, 0.5, 1.5])
    np.testing.assert_allclose(ours(x, training=True), ref(x, training=True), atol=1e-6)
    np.testing.assert_allclose(ours.moving_mean.numpy(), ref.moving_mean.numpy(), atol=1e-6)
    np.testing.assert_allclose(ours.moving_variance.numpy(), ref.moving_variance.numpy(), atol=1e-6)
    assert not np.allclose(ours.moving_mean.numpy(), 0.0)
    np.testing.assert_array_equal(ours.hard_moving_mean.numpy(), np.zeros(4))
    np.testing.assert_array_equal(ours.hard_moving_variance.numpy(), np.ones(4))
    assert float(ours.calibrated.numpy()) == 0.0
    # Before calibration inference is exactly Keras's (soft statistics).
    np.testing.assert_allclose(ours(x, training=False), ref(x, training=False), atol=1e-6)


def test_inference_uses_hard_statistics_once_calibrated():
    x = _data((8, 3), loc=1.0)
    layer = StateBatchNormalization(epsilon=1e-3)
    layer.build(x.shape)
    layer.moving_mean.assign([0.5, 0.5, 0.5])
    layer.hard_moving_mean.assign([1.0, -2.0, 3.0])
    layer.hard_moving_variance.assign([4.0, 0.25, 9.0])
    layer.gamma.assign([2.0, 1.0, 0.5])
    layer.beta.assign([0.1, 0.2, 0.3])
    soft = _numpy_bn(x, [0.5] * 3, [1.0] * 3, [2.0, 1.0, 0.5], [0.1, 0.2, 0.3], 1e-3)
    hard = _numpy_bn(x, [1.0, -2.0, 3.0], [4.0, 0.25, 9.0], [2.0, 1.0, 0.5], [0.1, 0.2, 0.3], 1e-3)
    np.testing.assert_allclose(layer(x, training=False), soft, atol=1e-5)
    layer.calibrated.assign(1.0)
    np.testing.assert_allclose(layer(x, training=False), hard, atol=1e-5)
    # trainable=False makes Keras BN run in inference mode even with training=True.
    layer.trainable = False
    np.testing.assert_allclose(layer(x, training=True), hard, atol=1e-5)


def test_compiled_predict_picks_up_calibration_without_retracing():
    x = _data((8, 3), loc=2.0)
    model = keras.Sequential([keras.Input((3,)), StateBatchNormalization()])
    before = model.predict(x, verbose=0)
    bn = model.layers[0]
    bn.hard_moving_mean.assign([2.0, 2.0, 2.0])
    bn.calibrated.assign(1.0)
    after = model.predict(x, verbose=0)
    np.testing.assert_allclose(before, _numpy_bn(x, [0.0] * 3, [1.0] * 3, [1.0] * 3, [0.0] * 3, 1e-3), atol=1e-5)
    np.testing.assert_allclose(after, _numpy_bn(x, [2.0] * 3, [1.0] * 3, [1.0] * 3, [0.0] * 3, 1e-3), atol=1e-5)


def test_save_load_keras_file_without_custom_objects(tmp_path):
    x = _data((6, 5, 5, 2))
    model = keras.Sequential(
        [keras.Input((5, 5, 2)), slb_keras.SLBConv2D(3, 3, wbits=1), StateBatchNormalization(momentum=0.7)]
    )
    model(x, training=True)
    bn = model.layers[1]
    bn.hard_moving_mean.assign([0.1, 0.2, 0.3])
    bn.hard_moving_variance.assign([1.5, 2.5, 3.5])
    bn.calibrated.assign(1.0)
    path = tmp_path / "sbn.keras"
    model.save(path)
    with zipfile.ZipFile(path) as archive:
        archive.extract("model.weights.h5", tmp_path)
    with h5py.File(tmp_path / "model.weights.h5") as weights:
        names = []
        weights.visit(names.append)
    saved = [n for n in names if "state_batch_normalization/vars/" in n]
    assert len(saved) == 7  # gamma, beta, soft and hard statistics, calibrated: no accumulator
    loaded = keras.models.load_model(path, safe_mode=True)
    assert type(loaded.layers[1]) is StateBatchNormalization
    for a, b in zip(model.layers[1].weights, loaded.layers[1].weights):
        assert a.name == b.name
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))
    assert loaded.layers[1].momentum == 0.7


def test_mixed_precision_keeps_float32_statistics():
    x = _data((8, 4), loc=1.0)
    try:
        keras.config.set_dtype_policy("mixed_float16")
        layer = StateBatchNormalization()
        y_train = layer(x.astype("float16"), training=True)
        layer.hard_moving_mean.assign([1.0, 1.0, 1.0, 1.0])
        layer.calibrated.assign(1.0)
        y_eval = layer(x.astype("float16"), training=False)
    finally:
        keras.config.set_dtype_policy("float32")
    assert y_train.dtype == "float16" and y_eval.dtype == "float16"
    assert all(w.dtype == "float32" for w in layer.weights)
    expected = _numpy_bn(x, [1.0] * 4, [1.0] * 4, [1.0] * 4, [0.0] * 4, 1e-3)
    np.testing.assert_allclose(np.asarray(y_eval, "float32"), expected, atol=2e-2)


def test_exported_from_package():
    assert "StateBatchNormalization" in slb_keras.__all__
    assert slb_keras.StateBatchNormalization is StateBatchNormalization


@pytest.mark.parametrize("kwargs", [{"synchronized": True}, {"renorm": True}])
def test_keras_options_still_train(kwargs):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4), StateBatchNormalization(**kwargs)])
    model.compile("sgd", "mse")
    model.fit(_data((16, 4)), _data((16, 4), seed=1), epochs=1, batch_size=8, verbose=0)
    assert not np.allclose(model.layers[1].moving_mean.numpy(), 0.0)


def test_calibration_accumulators_are_scratch_not_weights():
    bn = StateBatchNormalization()
    bn.build((None, 3))
    assert all("calibration" not in w.path for w in bn.weights)
    bn.calibrating = True
    x = np.arange(12, dtype="float32").reshape(4, 3)
    bn(x)
    bn(x + 4.0)  # a second call merges: 8 rows, two groups 4 apart
    count, mean, m2 = bn.calibration_accumulators()
    both = np.concatenate([x, x + 4.0]).astype(np.float64)
    np.testing.assert_array_equal(count, [8, 8, 8])
    np.testing.assert_allclose(mean, both.mean(0), rtol=1e-6)
    np.testing.assert_allclose(m2, ((both - both.mean(0)) ** 2).sum(0), rtol=1e-5)
    bn.reset_calibration_accumulators()
    assert all(not a.any() for a in bn.calibration_accumulators())
    assert float(bn.calibrated.numpy()) == 0.0  # only calibrate_bn sets it
