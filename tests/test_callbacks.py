import keras
import numpy as np
import pytest
import tensorflow as tf

import slb_keras
from slb_keras.search import calibration
from slb_keras.search import callbacks as cb
from slb_keras.core import ops as slb_ops


# -- BN calibration --------------------------------------------------------------

EPS = 1e-3


def _conv_model(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            slb_keras.SLBConv2D(4, 3, padding="same", wbits=1, name="c1"),
            slb_keras.StateBatchNormalization(epsilon=EPS, name="bn1"),
            keras.layers.ReLU(),
            slb_keras.SLBConv2D(3, 3, wbits=2, use_bias=False, name="c2"),
            slb_keras.StateBatchNormalization(epsilon=EPS, name="bn2"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2),
        ]
    )
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, slb_keras.StateBatchNormalization):
            layer.gamma.assign(rng.uniform(0.5, 2.0, size=layer.gamma.shape))
            layer.beta.assign(rng.normal(size=layer.beta.shape))
        if isinstance(layer, slb_keras.SLBConv2D) and layer.use_bias:
            layer.bias.assign(rng.normal(size=layer.bias.shape))
    return model


def _images(n=50, seed=0):
    # Offset and scaled, so the mean matters and E[x^2] - E[x]^2 would lose digits.
    return np.random.default_rng(seed).normal(3.0, 2.0, size=(n, 6, 6, 2)).astype("float32")


def _numpy_statistics(model, batches):
    """Pooled mean/variance of bn1 and bn2 inputs, from NumPy, over the same batches.

    The calibration pass: hard kernels; each BN normalizes with its batch's statistics.
    """
    c1, bn1, c2 = model.get_layer("c1"), model.get_layer("bn1"), model.get_layer("c2")
    inputs1, inputs2 = [], []
    for x in batches:
        h1 = np.asarray(c1(x, training=False), np.float64)
        mean, var = h1.mean(axis=(0, 1, 2)), h1.var(axis=(0, 1, 2))
        z = bn1.gamma.numpy() * (h1 - mean) / np.sqrt(var + EPS) + bn1.beta.numpy()
        h2 = np.asarray(c2(np.maximum(z, 0).astype("float32"), training=False), np.float64)
        inputs1.append(h1.reshape(-1, h1.shape[-1]))
        inputs2.append(h2.reshape(-1, h2.shape[-1]))
    return [(np.concatenate(a).mean(0), np.concatenate(a).var(0)) for a in (inputs1, inputs2)]


def _hard_statistics(model):
    return [
        (model.get_layer(n).hard_moving_mean.numpy(), model.get_layer(n).hard_moving_variance.numpy())
        for n in ("bn1", "bn2")
    ]


@pytest.mark.parametrize("steps", [3, None])
def test_calibrate_bn_equals_numpy_statistics(steps):
    model = _conv_model()
    x = _images(50)
    dataset = tf.data.Dataset.from_tensor_slices((x, np.zeros(50))).batch(16)  # 16, 16, 16, 2
    batches = [x[i : i + 16] for i in range(0, 50, 16)][: steps or 4]
    expected = _numpy_statistics(model, batches)
    assert calibration.calibrate_bn(model, dataset, steps) == len(batches)
    for (mean, var), (ref_mean, ref_var) in zip(_hard_statistics(model), expected):
        np.testing.assert_allclose(mean, ref_mean, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(var, ref_var, rtol=1e-5, atol=1e-5)
    assert [float(model.get_layer(n).calibrated.numpy()) for n in ("bn1", "bn2")] == [1.0, 1.0]


def test_calibrate_bn_pooled_variance_differs_from_mean_of_batch_variances():
    model = _conv_model()
    x = _images(48)
    x[:16] += 5.0  # batches with different means
    calibration.calibrate_bn(model, tf.data.Dataset.from_tensor_slices(x).batch(16))
    h1 = np.asarray(model.get_layer("c1")(x, training=False), np.float64)
    pooled = h1.var(axis=(0, 1, 2))
    per_batch = np.mean([h1[i : i + 16].var(axis=(0, 1, 2)) for i in (0, 16, 32)], axis=0)
    calibrated = model.get_layer("bn1").hard_moving_variance.numpy()
    np.testing.assert_allclose(calibrated, pooled, rtol=1e-5)
    assert np.all(np.abs(calibrated - per_batch) > 1e-2 * pooled)


def test_calibrate_bn_changes_no_other_variable():
    model = _conv_model()
    model.compile("sgd", "mse")  # an optimizer with its own variables
    x = _images(32)
    model.fit(x, np.zeros((32, 2)), epochs=1, batch_size=16, verbose=0)
    calibration_variables = {
        id(v) for n in ("bn1", "bn2") for v in (
            model.get_layer(n).hard_moving_mean,
            model.get_layer(n).hard_moving_variance,
            model.get_layer(n).calibrated,
        )
    }
    before = {v.path: v.numpy().copy() for v in model.variables}
    optimizer_before = [v.numpy().copy() for v in model.optimizer.variables]
    calibration.calibrate_bn(model, tf.data.Dataset.from_tensor_slices(x).batch(8), steps=4)
    for v in model.variables:
        if id(v) not in calibration_variables:
            assert np.array_equal(v.numpy(), before[v.path]), v.path  # bit for bit
    for v, old in zip(model.optimizer.variables, optimizer_before):
        assert np.array_equal(v.numpy(), old)
    assert len(model.trainable_variables) == 9 and all(
        id(v) not in calibration_variables for v in model.trainable_variables
    )


def test_calibrate_bn_one_device_equals_mirrored_strategy(mirrored_strategy):
    x = _images(45)
    dataset = tf.data.Dataset.from_tensor_slices(x).batch(10)  # 10, 10, 10, 10, 5 (split 3 + 2)
    single = _conv_model()
    calibration.calibrate_bn(single, dataset)
    with mirrored_strategy.scope():
        mirrored = _conv_model()
    mirrored.set_weights(single.get_weights())
    for n in ("bn1", "bn2"):  # start from the uncalibrated state
        mirrored.get_layer(n).hard_moving_mean.assign(np.zeros(mirrored.get_layer(n).hard_moving_mean.shape))
        mirrored.get_layer(n).calibrated.assign(0.0)
    assert calibration.calibrate_bn(mirrored, dataset) == 5
    for (m1, v1), (m2, v2) in zip(_hard_statistics(single), _hard_statistics(mirrored)):
        np.testing.assert_allclose(m2, m1, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(v2, v1, rtol=1e-5, atol=1e-5)
    expected = _numpy_statistics(single, [x[i : i + 10] for i in range(0, 45, 10)])
    for (m, v), (ref_m, ref_v) in zip(_hard_statistics(mirrored), expected):
        np.testing.assert_allclose(m, ref_m, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(v, ref_v, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mirrored.predict(x, verbose=0), single.predict(x, verbose=0), atol=1e-5)


def test_calibrate_bn_soft_state_writes_soft_statistics():
    model = _conv_model()
    x = _images(32)
    calibration.calibrate_bn(model, tf.data.Dataset.from_tensor_slices(x).batch(16), state="soft")
    bn1 = model.get_layer("bn1")
    h1 = np.asarray(model.get_layer("c1")(x, training=True), np.float64)  # soft kernel
    np.testing.assert_allclose(bn1.moving_mean.numpy(), h1.mean(axis=(0, 1, 2)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bn1.moving_variance.numpy(), h1.var(axis=(0, 1, 2)), rtol=1e-5, atol=1e-5)
    assert float(bn1.calibrated.numpy()) == 0.0
    np.testing.assert_array_equal(bn1.hard_moving_mean.numpy(), 0.0)
    # The layers' `call` is restored afterwards.
    assert not any("call" in vars(layer) for layer in slb_keras.slb_layers(model))


def test_calibrate_bn_mixed_precision():
    x = _images(32)
    reference = _conv_model()
    calibration.calibrate_bn(reference, tf.data.Dataset.from_tensor_slices(x).batch(16))
    try:
        keras.config.set_dtype_policy("mixed_float16")
        model = _conv_model()
    finally:
        keras.config.set_dtype_policy("float32")
    model.set_weights([w for w in reference.get_weights()])
    for n in ("bn1", "bn2"):
        model.get_layer(n).calibrated.assign(0.0)
    calibration.calibrate_bn(model, tf.data.Dataset.from_tensor_slices(x).batch(16))
    for (m1, v1), (m2, v2) in zip(_hard_statistics(reference), _hard_statistics(model)):
        np.testing.assert_allclose(m2, m1, rtol=1e-2, atol=1e-2)
        np.testing.assert_allclose(v2, v1, rtol=2e-2)


def test_calibrate_bn_bad_arguments():
    model = _conv_model()
    data = tf.data.Dataset.from_tensor_slices(_images(8)).batch(4)
    for steps in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match=f"steps={steps!r}"):
            calibration.calibrate_bn(model, data, steps)
    with pytest.raises(ValueError, match="empty"):
        calibration.calibrate_bn(model, data.take(0), 3)
    with pytest.raises(ValueError, match="infinite"):
        calibration.calibrate_bn(model, data.repeat())
    with pytest.raises(ValueError, match="tf.data.Dataset"):
        calibration.calibrate_bn(model, _images(8), 2)
    with pytest.raises(ValueError, match="state='warm'"):
        calibration.calibrate_bn(model, data, 2, state="warm")
    with pytest.raises(ValueError, match="Invalid model='model'"):
        calibration.calibrate_bn("model", data, 2)
    plain = keras.Sequential([keras.Input((4,)), keras.layers.BatchNormalization()])
    with pytest.raises(ValueError, match="no slb_keras.StateBatchNormalization"):
        calibration.calibrate_bn(plain, data, 2)
    for n in ("bn1", "bn2"):
        assert float(model.get_layer(n).calibrated.numpy()) == 0.0  # nothing was half done


@pytest.mark.parametrize("state", ["hard", "soft"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_calibrate_bn_refuses_non_finite_data_and_keeps_the_statistics(state, bad):
    model = _conv_model()
    x = _images(32)
    calibration.calibrate_bn(model, tf.data.Dataset.from_tensor_slices(x).batch(8), state=state)
    names = ("moving_mean", "moving_variance") if state == "soft" else ("hard_moving_mean", "hard_moving_variance")
    before = {(n, v): getattr(model.get_layer(n), v).numpy().copy() for n in ("bn1", "bn2") for v in names}
    x[11, 2, 3, 1] = bad  # one value, in the second batch
    data = tf.data.Dataset.from_tensor_slices(x).batch(8)
    with pytest.raises(ValueError, match=r"layer 'bn1' got non-finite batch statistics .* from batch 2: .*no statistic was changed") as error:
        calibration.calibrate_bn(model, data, state=state)
    assert "\n" not in str(error.value)
    for (n, v), old in before.items():
        np.testing.assert_array_equal(getattr(model.get_layer(n), v).numpy(), old)
    assert [float(model.get_layer(n).calibrated.numpy()) for n in ("bn1", "bn2")] == [float(state == "hard")] * 2
    # The layers are left as before: a clean calibration afterwards is exact again.
    assert calibration.calibrate_bn(model, tf.data.Dataset.from_tensor_slices(_images(32)).batch(8)) == 4
    assert all(np.isfinite(a).all() for pair in _hard_statistics(model) for a in pair)


def test_calibrate_bn_nested_and_shared_layers():
    keras.utils.set_random_seed(0)
    inner = keras.Sequential([keras.Input((4,)), slb_keras.SLBDense(3, wbits=2), slb_keras.StateBatchNormalization()])
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(2)(inner(keras.layers.Dense(4)(inputs)) + inner(inputs))  # inner used twice
    model = keras.Model(inputs, outputs)
    x = _images(20).reshape(-1, 4)[:40]
    assert calibration.calibrate_bn(model, tf.data.Dataset.from_tensor_slices(x).batch(8)) == 5
    dense, slb, bn = model.layers[1], inner.layers[0], inner.layers[1]
    h = np.concatenate([np.asarray(slb(dense(x)), np.float64), np.asarray(slb(x), np.float64)])
    np.testing.assert_allclose(bn.hard_moving_mean.numpy(), h.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bn.hard_moving_variance.numpy(), h.var(0), rtol=1e-5, atol=1e-5)


def test_calibrate_bn_warns_when_dataset_runs_out():
    model = _conv_model()
    data = tf.data.Dataset.from_tensor_slices(_images(8)).batch(4)
    with pytest.warns(UserWarning, match="ran out after 2 of steps=5"):
        assert calibration.calibrate_bn(model, data, 5) == 2


def _fit_model(seed=0):
    model = _conv_model(seed)
    model.compile(keras.optimizers.SGD(0.05), "mse")
    return model


def test_bn_calibration_runs_before_validation():
    x, y = _images(40), np.random.default_rng(1).normal(size=(40, 2)).astype("float32")
    xv, yv = x[:16] + 0.5, y[:16]
    data = tf.data.Dataset.from_tensor_slices(x).batch(8)
    model = _fit_model()
    history = model.fit(
        x, y, batch_size=8, epochs=2, validation_data=(xv, yv),
        callbacks=[cb.BNCalibration(data, steps=5)], verbose=0,
    )
    # The last epoch's val_loss is that of the calibrated hard network now.
    calibrated_now = _hard_statistics(model)
    assert history.history["val_loss"][-1] == pytest.approx(model.evaluate(xv, yv, verbose=0), rel=1e-5)
    for n in ("bn1", "bn2"):
        model.get_layer(n).calibrated.assign(0.0)
    assert model.evaluate(xv, yv, verbose=0) != pytest.approx(history.history["val_loss"][-1], rel=1e-3)
    # And those statistics are calibrate_bn's on the final weights (no calibration was skipped).
    calibration.calibrate_bn(model, data, 5)
    for (m1, v1), (m2, v2) in zip(calibrated_now, _hard_statistics(model)):
        np.testing.assert_allclose(m1, m2, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(v1, v2, rtol=1e-6, atol=1e-6)


def test_bn_calibration_every_n_epochs_and_at_train_end():
    x, y = _images(24), np.zeros((24, 2), "float32")
    data = tf.data.Dataset.from_tensor_slices(x).batch(8)
    seen = []
    probe = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: seen.append(
            (float(model.get_layer("bn1").calibrated.numpy()), model.get_layer("bn1").hard_moving_mean.numpy().copy())
        )
    )
    model = _fit_model()
    model.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[cb.BNCalibration(data, every_n_epochs=2), probe])
    assert [flag for flag, _ in seen] == [0.0, 1.0, 1.0]
    np.testing.assert_array_equal(seen[1][1], seen[2][1])  # epoch 3 (index 2) not calibrated at its end
    final = model.get_layer("bn1").hard_moving_mean.numpy()
    assert not np.allclose(final, seen[2][1])  # ... but at the end of training
    reference = _hard_statistics(model)
    calibration.calibrate_bn(model, data)
    np.testing.assert_allclose(_hard_statistics(model)[0][0], reference[0][0], rtol=1e-6, atol=1e-6)


def test_bn_calibration_bad_arguments():
    data = tf.data.Dataset.from_tensor_slices(_images(8)).batch(4)
    with pytest.raises(ValueError, match="steps=0"):
        cb.BNCalibration(data, steps=0)
    with pytest.raises(ValueError, match="every_n_epochs=0"):
        cb.BNCalibration(data, steps=2, every_n_epochs=0)
    with pytest.raises(ValueError, match="tf.data.Dataset"):
        cb.BNCalibration([1, 2], steps=2)
    model = _fit_model()
    with pytest.raises(ValueError, match="empty"):
        model.fit(_images(8), np.zeros((8, 2)), verbose=0, callbacks=[cb.BNCalibration(data.take(0))])


# -- metrics ---------------------------------------------------------------------


def _dense_model(bits=2, tau=1.0):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((5,)),
            slb_keras.SLBDense(6, wbits=bits, use_bias=False, name="d1"),
            slb_keras.StateBatchNormalization(name="bn"),
            slb_keras.SLBDense(3, wbits=1, name="d2"),
        ]
    )
    slb_keras.set_temperature(model, tau)
    return model


def test_slb_metrics_values_against_numpy():
    model = _dense_model(tau=2.0)
    metrics = cb.SLBMetrics()
    metrics.set_model(model)
    metrics.on_train_begin()
    overall, per_layer, max_probs = metrics.compute()
    all_p, all_h = [], []
    for layer in slb_keras.slb_layers(model):
        z = 2.0 * layer.kernel_logits.numpy().astype(np.float64)
        p = np.exp(z - z.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        p_max, h = p.max(-1).ravel(), -(p * np.log(p)).sum(-1).ravel()
        assert per_layer[layer.name]["max_prob"] == pytest.approx(p_max.mean(), rel=1e-5)
        assert per_layer[layer.name]["entropy"] == pytest.approx(h.mean(), rel=1e-5)
        assert per_layer[layer.name]["flip_rate"] == 0.0
        np.testing.assert_allclose(max_probs[layer.name], p_max, rtol=1e-5)
        all_p.append(p_max)
        all_h.append(h)
    assert overall["max_prob"] == pytest.approx(np.concatenate(all_p).mean(), rel=1e-5)
    assert overall["entropy"] == pytest.approx(np.concatenate(all_h).mean(), rel=1e-5)
    assert "output_gap" not in overall


def test_slb_metrics_flip_rate_counts_changed_codes():
    model = _dense_model()
    d1 = model.get_layer("d1")
    metrics = cb.SLBMetrics()
    metrics.set_model(model)
    metrics.on_train_begin()
    codes = slb_ops.hard_codes(d1.kernel_logits).numpy()
    flipped = codes.copy()
    flipped.flat[:6] = (flipped.flat[:6] + 1) % 4  # 6 of 30 weights
    d1.assign_kernel(slb_keras.codes_to_values(flipped, 2))
    _, per_layer, _ = metrics.compute()
    assert per_layer["d1"]["flip_rate"] == pytest.approx(6 / 30)
    assert per_layer["d2"]["flip_rate"] == 0.0
    _, per_layer, _ = metrics.compute()  # relative to the previous call
    assert per_layer["d1"]["flip_rate"] == 0.0


def test_slb_metrics_output_gap_shrinks_with_temperature():
    x = np.random.default_rng(0).normal(size=(64, 5)).astype("float32")
    gaps = []
    for tau in (0.01, 1.0, 100.0):
        model = _dense_model(tau=tau)
        for layer in slb_keras.slb_layers(model):
            codes = slb_ops.hard_codes(layer.kernel_logits).numpy()
            layer.assign_kernel(slb_keras.codes_to_values(codes, layer.wbits), margin=1.0)
            layer.kernel_logits.assign(layer.kernel_logits + np.random.default_rng(1).normal(0, 0.3, layer.kernel_logits.shape))
        metrics = cb.SLBMetrics(x=x)
        metrics.set_model(model)
        metrics.on_train_begin()
        overall, per_layer, _ = metrics.compute()
        assert overall["output_gap"] == pytest.approx(np.mean([v["output_gap"] for v in per_layer.values()]))
        gaps.append(overall["output_gap"])
    assert gaps[0] > gaps[1] > gaps[2] >= 0.0
    assert gaps[2] < 1e-3


def test_channel_decorrelation_ignores_scale_and_offset_per_channel():
    rng = np.random.default_rng(0)
    hard = rng.normal(size=(50, 3))
    assert cb._channel_decorrelation(0.01 * hard + [1.0, 2.0, 3.0], hard, -1) == pytest.approx(0.0, abs=1e-12)
    assert cb._channel_decorrelation(-hard, hard, -1) == pytest.approx(2.0)
    assert cb._channel_decorrelation(np.zeros((50, 3)), np.zeros((50, 3)), -1) == 0.0


def test_soft_and_hard_outputs():
    model = _dense_model(tau=0.7)
    x = np.random.default_rng(0).normal(size=(8, 5)).astype("float32")
    bn = model.get_layer("bn")
    bn.moving_mean.assign(np.full(6, 0.2))
    bn.hard_moving_mean.assign(np.full(6, -0.3))
    bn.hard_moving_variance.assign(np.full(6, 2.0))
    bn.calibrated.assign(1.0)
    d1, d2 = model.get_layer("d1"), model.get_layer("d2")

    def forward(kernel1, kernel2, mean, var):
        z = (x @ kernel1 - mean) / np.sqrt(var + 1e-3)
        return z @ kernel2 + d2.bias.numpy()

    soft, hard = calibration.soft_and_hard_outputs(model, x)
    np.testing.assert_allclose(soft, forward(d1.soft_kernel().numpy(), d2.soft_kernel().numpy(), 0.2, 1.0), atol=1e-5)
    np.testing.assert_allclose(hard, forward(d1.hard_kernel().numpy(), d2.hard_kernel().numpy(), -0.3, 2.0), atol=1e-5)
    assert float(bn.calibrated.numpy()) == 1.0
    np.testing.assert_allclose(model(x, training=False), hard, atol=1e-6)


def test_slb_metrics_logs_and_tensorboard(tmp_path):
    x = np.random.default_rng(0).normal(size=(32, 5)).astype("float32")
    model = _dense_model()
    model.compile("adam", "mse")
    metrics = cb.SLBMetrics(x=tf.data.Dataset.from_tensor_slices(x).batch(16), log_dir=tmp_path, per_layer_logs=True)
    history = model.fit(x, np.zeros((32, 3)), epochs=2, verbose=0, callbacks=[metrics])
    for key in ("slb_max_prob", "slb_entropy", "slb_flip_rate", "slb_output_gap", "slb/d1/max_prob", "slb/d2/output_gap"):
        assert len(history.history[key]) == 2, key
    assert 0.25 <= history.history["slb/d1/max_prob"][0] <= 1.0
    assert 0.5 <= history.history["slb/d2/max_prob"][0] <= 1.0
    assert 0.0 < history.history["slb_flip_rate"][0] < 1.0  # adam moves the small random logits
    # Read back as TensorBoard does: a scalar and a histogram need tags of their own.
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.plugins.histogram import metadata as histogram_metadata
    from tensorboard.plugins.scalar import metadata as scalar_metadata

    events = event_accumulator.EventAccumulator(str(tmp_path / "slb"), size_guidance={"tensors": 0})
    events.Reload()
    plugins = {tag: events.SummaryMetadata(tag).plugin_data.plugin_name for tag in events.Tags()["tensors"]}
    scalars = {tag for tag, plugin in plugins.items() if plugin == scalar_metadata.PLUGIN_NAME}
    histograms = {tag for tag, plugin in plugins.items() if plugin == histogram_metadata.PLUGIN_NAME}
    assert {"slb/max_prob", "slb/output_gap", "slb/d1/max_prob", "slb/d2/flip_rate"} <= scalars
    assert histograms == {"slb/d1/max_prob_hist", "slb/d2/max_prob_hist"}
    assert [event.step for event in events.Tensors("slb/max_prob")] == [0, 1]
    histogram = events.Tensors("slb/d1/max_prob_hist")[-1]
    assert tf.make_ndarray(histogram.tensor_proto).shape[-1] == 3  # (left, right, count) buckets


def test_slb_metrics_bad_arguments():
    with pytest.raises(ValueError, match="histogram_freq=-1"):
        cb.SLBMetrics(histogram_freq=-1)
    with pytest.raises(ValueError, match="empty"):
        cb.SLBMetrics(x=tf.data.Dataset.from_tensor_slices(np.zeros((0, 5))).batch(2))


def test_public_names():
    for module, name in ((calibration, "calibrate_bn"), (cb, "BNCalibration"), (cb, "SLBMetrics")):
        assert name in slb_keras.__all__
        assert getattr(slb_keras, name) is getattr(module, name)


# -- end to end: the digits experiment ---------------------------------------------


def _digits_run(data, constant_tau=None, seed=0, epochs=6):
    """A small 1-bit SLB CNN on the packaged digits; returns the figures of the issue."""
    (xt, yt), (xv, yv) = data
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(16, 3, padding="same", use_bias=False),  # full precision
            keras.layers.BatchNormalization(momentum=0.9),
            keras.layers.ReLU(),
            slb_keras.SLBConv2D(32, 3, padding="same", use_bias=False, wbits=1),
            slb_keras.StateBatchNormalization(momentum=0.9),
            keras.layers.ReLU(),
            keras.layers.MaxPooling2D(),
            slb_keras.SLBConv2D(32, 3, padding="same", use_bias=False, wbits=1),
            slb_keras.StateBatchNormalization(momentum=0.9),
            keras.layers.ReLU(),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10),  # full precision
        ]
    )
    model.compile(
        keras.optimizers.Adam(0.02),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    calibration_data = tf.data.Dataset.from_tensor_slices(xt).batch(128)
    callbacks = [cb.BNCalibration(calibration_data), cb.SLBMetrics(x=xv)]
    if constant_tau is None:  # the authors' shape: the schedule ends before training does
        callbacks.insert(0, slb_keras.TemperatureScheduler(start=0.01, end=10.0, end_fraction=0.7))
    else:
        slb_keras.set_temperature(model, constant_tau)
    history = model.fit(
        xt, yt, batch_size=64, epochs=epochs, validation_data=(xv, yv), callbacks=callbacks, verbose=0
    )

    def accuracy(outputs):
        return float(np.mean(np.argmax(outputs, axis=-1) == yv))

    bns = calibration.state_bn_layers(model)
    hard_after = accuracy(model.predict(xv, verbose=0))
    for layer in bns:
        layer.calibrated.assign(0.0)
    hard_before = accuracy(model.predict(xv, verbose=0))  # hard weights, soft statistics
    for layer in bns:
        layer.calibrated.assign(1.0)
    # Soft network with exact soft statistics (its moving averages lag behind tau).
    calibration.calibrate_bn(model, calibration_data, state="soft")
    soft, hard = calibration.soft_and_hard_outputs(model, xv)
    return {
        "val_accuracy": history.history["val_accuracy"][-1],
        "hard_before": hard_before,
        "hard_after": hard_after,
        "soft": accuracy(soft),
        "hard": accuracy(hard),
        "disagreement": float(np.mean(np.argmax(soft, -1) != np.argmax(hard, -1))),
        "output_gap": history.history["slb_output_gap"][-1],
        "max_prob": history.history["slb_max_prob"][-1],
    }


@pytest.mark.slow
def test_digits_schedule_and_calibration():
    from slb_keras.datasets import load_digits

    data = load_digits(image_size=8, channels=1)
    scheduled = _digits_run(data)
    constant = _digits_run(data, constant_tau=1.0)
    print(f"\nscheduled tau: {scheduled}\nconstant tau=1: {constant}")
    # val_* metrics were computed after calibration: they are the hard network's.
    assert scheduled["val_accuracy"] == pytest.approx(scheduled["hard_after"], abs=1e-6)
    assert scheduled["hard_after"] >= scheduled["hard_before"]
    assert scheduled["hard"] == scheduled["hard_after"]
    assert abs(scheduled["hard"] - scheduled["soft"]) <= 0.02
    assert scheduled["hard"] >= 0.9
    assert constant["output_gap"] > 2 * scheduled["output_gap"]
    assert constant["max_prob"] < scheduled["max_prob"]
