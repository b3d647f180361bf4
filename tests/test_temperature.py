import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import slb_keras
from slb_keras.search import temperature as cb


# -- temperature schedule --------------------------------------------------------

T = 100


def _expected(schedule, start, end, p):
    """The schedule formulas (the paper and the authors' README), written independently."""
    if schedule == "exp":
        return math.exp(math.log(start) + p * (math.log(end) - math.log(start)))
    if schedule == "cos":
        return start + (end - start) * (1 - math.cos(math.pi * p)) / 2
    return start + (end - start) * p


@pytest.mark.parametrize("schedule", ["exp", "cos", "linear"])
def test_schedule_values_at_start_middle_end(schedule):
    s = cb.TemperatureScheduler(start=0.01, end=10.0, schedule=schedule, total_steps=T)
    assert s(0) == pytest.approx(0.01, rel=1e-12)
    assert s(T // 2) == pytest.approx(_expected(schedule, 0.01, 10.0, 0.5), rel=1e-12)
    assert s(T) == 10.0
    assert s(10 * T) == 10.0
    middle = {"exp": math.sqrt(0.01 * 10.0), "cos": 5.005, "linear": 5.005}[schedule]
    assert s(T // 2) == pytest.approx(middle, rel=1e-12)
    values = [s(step) for step in range(T + 1)]
    assert all(b > a for a, b in zip(values, values[1:]))  # strictly increasing


@pytest.mark.parametrize("schedule", ["exp", "cos", "linear"])
def test_schedule_window_edges(schedule):
    s = cb.TemperatureScheduler(
        start=0.01, end=10.0, schedule=schedule, total_steps=T, start_fraction=0.3, end_fraction=0.9
    )
    assert s(0) == s(29) == s(30) == 0.01
    assert s(31) == pytest.approx(_expected(schedule, 0.01, 10.0, 1 / 60), rel=1e-12)
    assert s(60) == pytest.approx(_expected(schedule, 0.01, 10.0, 0.5), rel=1e-12)
    assert s(89) == pytest.approx(_expected(schedule, 0.01, 10.0, 59 / 60), rel=1e-12)
    assert s(90) == s(95) == s(T) == 10.0


@pytest.mark.parametrize("schedule", ["exp", "cos", "linear"])
def test_schedule_restarts(schedule):
    # Window [10, 100) of T=100 in 3 cycles of 30 steps: restarts at 40 and 70.
    s = cb.TemperatureScheduler(
        start=0.1, end=5.0, schedule=schedule, total_steps=T, restarts=2, start_fraction=0.1
    )
    for first in (10, 40, 70):
        assert s(first) == pytest.approx(0.1, rel=1e-12)
        assert s(first + 15) == pytest.approx(_expected(schedule, 0.1, 5.0, 0.5), rel=1e-12)
        assert s(first + 29) == pytest.approx(_expected(schedule, 0.1, 5.0, 29 / 30), rel=1e-12)
    assert s(9) == 0.1
    assert s(T) == 5.0


def test_schedule_can_decrease():
    s = cb.TemperatureScheduler(start=4.0, end=1.0, schedule="linear", total_steps=4)
    assert [s(i) for i in range(5)] == [4.0, 3.25, 2.5, 1.75, 1.0]


def test_staircase_per_epoch():
    s = cb.TemperatureScheduler(total_steps=T, update_freq="epoch", steps_per_epoch=10)
    for epoch in range(10):
        values = {s(step) for step in range(epoch * 10, epoch * 10 + 10)}
        assert len(values) == 1
        assert values.pop() == pytest.approx(_expected("exp", 0.01, 10.0, epoch / 10), rel=1e-12)
    smooth = cb.TemperatureScheduler(total_steps=T)
    assert s(15) == smooth(10) < smooth(15)


def _model(**layer_kwargs):
    return keras.Sequential(
        [keras.Input((4,)), slb_keras.SLBDense(3, **layer_kwargs), keras.layers.Dense(1)]
    )


class _Recorder(keras.callbacks.Callback):
    """tau seen by each training step (read from the layer's variable)."""

    def __init__(self):
        super().__init__()
        self.taus = []

    def on_train_batch_end(self, batch, logs=None):
        self.taus.append(float(slb_keras.slb_layers(self.model)[0].temperature.numpy()))


def _xy(n=24, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4)).astype("float32"), rng.normal(size=(n, 1)).astype("float32")


def test_fit_assigns_schedule_and_logs_temperature():
    x, y = _xy()
    model = _model()
    model.compile("sgd", "mse")
    recorder = _Recorder()
    scheduler = cb.TemperatureScheduler(schedule="linear", start=1.0, end=4.0)
    history = model.fit(x, y, batch_size=8, epochs=2, callbacks=[scheduler, recorder], verbose=0)
    # Default T = 2 epochs x 3 steps; step s runs with tau = 1 + 3 s / 6.
    assert recorder.taus == pytest.approx([1.0 + 0.5 * s for s in range(6)], rel=1e-6)
    assert history.history["temperature"] == pytest.approx([2.0, 3.5])


def test_resume_gives_the_same_tau(tmp_path):
    x, y = _xy(32)

    def fit(model, callbacks, **kwargs):
        recorder = _Recorder()
        scheduler = cb.TemperatureScheduler(schedule="cos", restarts=1, start_fraction=0.25)
        model.fit(x, y, batch_size=8, epochs=4, callbacks=[scheduler, recorder, *callbacks], verbose=0, **kwargs)
        return recorder.taus

    keras.utils.set_random_seed(1)
    model = _model()
    model.compile("adam", "mse")
    uninterrupted = fit(model, [])

    class StopAfterTwoEpochs(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                self.model.stop_training = True

    keras.utils.set_random_seed(1)
    model = _model()
    model.compile("adam", "mse")
    first_half = fit(model, [StopAfterTwoEpochs()])
    model.save(tmp_path / "half.keras")
    restored = keras.models.load_model(tmp_path / "half.keras")
    assert int(restored.optimizer.iterations.numpy()) == 8
    second_half = fit(restored, [], initial_epoch=2)  # a new callback, restored iterations
    assert len(uninterrupted) == 16
    np.testing.assert_allclose(first_half + second_half, uninterrupted, rtol=1e-6)


def test_scheduler_under_mirrored_strategy(mirrored_strategy):
    x, y = _xy(32)
    with mirrored_strategy.scope():
        model = _model()
        model.compile("sgd", "mse")
    scheduler = cb.TemperatureScheduler(total_steps=8)
    history = model.fit(x, y, batch_size=8, epochs=2, callbacks=[scheduler], verbose=0)
    assert history.history["temperature"][-1] == pytest.approx(scheduler(7))
    assert float(model.layers[0].temperature.numpy()) == pytest.approx(scheduler(7), rel=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"start": 0.0}, "start=0.0"),
        ({"start": -1.0}, "start=-1.0"),
        ({"end": 0}, "end=0"),
        ({"end": float("inf")}, "end=inf"),
        ({"schedule": "step"}, "schedule='step'"),
        ({"total_steps": 0}, "total_steps=0"),
        ({"total_steps": 2.5}, "total_steps=2.5"),
        ({"restarts": -1}, "restarts=-1"),
        ({"start_fraction": -0.1}, r"start_fraction=-0.1.*\[0, 1\]"),
        ({"end_fraction": 1.5}, r"end_fraction=1.5.*\[0, 1\]"),
        ({"start_fraction": 0.5, "end_fraction": 0.5}, "start_fraction < end_fraction"),
        ({"start_fraction": 0.9, "end_fraction": 0.3}, "start_fraction < end_fraction"),
        ({"update_freq": "batch"}, "update_freq='batch'"),
        ({"steps_per_epoch": 0}, "steps_per_epoch=0"),
    ],
)
def test_scheduler_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        cb.TemperatureScheduler(**kwargs)


def test_scheduler_needs_known_total_steps_and_valid_step():
    with pytest.raises(ValueError, match="total_steps is unknown"):
        cb.TemperatureScheduler()(0)
    with pytest.raises(ValueError, match="step=-1"):
        cb.TemperatureScheduler(total_steps=10)(-1)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        cb.TemperatureScheduler(total_steps=10, update_freq="epoch")(3)


def test_scheduler_refuses_model_without_slb_layers():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match="no SLB layers"):
        model.fit(*_xy(8), epochs=1, callbacks=[cb.TemperatureScheduler()], verbose=0)




# -- the authors' per-epoch speed form ---------------------------------------------


def _authors_taus(start, speed, epochs, start_fraction, end_fraction):
    """The authors' scheduler written as its loop: tau *= speed at each epoch start in the window."""
    first, last = int(epochs * start_fraction), int(epochs * end_fraction)
    taus, tau = [], start
    for epoch in range(epochs):
        if first <= epoch < last:
            tau *= speed
        taus.append(tau)
    return taus


@pytest.mark.parametrize(
    "speed, epochs, start_fraction",
    [(1.03, 400, 0.3), (1.04, 400, 0.4), (1.06, 500, 0.4), (1.05, 120, 0.4), (1.2, 10, 0.3)],
)
def test_speed_form_reproduces_the_authors_sequence_exactly(speed, epochs, start_fraction):
    steps_per_epoch = 3
    s = cb.TemperatureScheduler(
        start=0.01, speed=speed, start_fraction=start_fraction, end_fraction=0.9,
        total_steps=epochs * steps_per_epoch, steps_per_epoch=steps_per_epoch,
    )
    expected = _authors_taus(0.01, speed, epochs, start_fraction, 0.9)
    got = [s(epoch * steps_per_epoch + offset) for epoch in range(epochs) for offset in (0, 2)]
    assert got == [tau for tau in expected for _ in (0, 2)]  # exact, constant within an epoch
    assert s.final_temperature() == expected[-1]


def test_speed_form_final_values_of_the_recipes():
    # The authors' speeds: 0.01 x 1.03^240 = 12, x 1.04^240 = 122, x 1.05^240 = 1.2e3.
    for speed, final in ((1.03, 12.05), (1.04, 122.4), (1.05, 1217.4)):
        s = cb.TemperatureScheduler(speed=speed, start_fraction=0.3, end_fraction=0.9)
        assert s.final_temperature(total_steps=4000, steps_per_epoch=10) == pytest.approx(final, rel=1e-3)


def test_speed_form_restarts():
    # 12 epochs in the window [2, 14) of 20, 2 restarts: 3 cycles of 4 epochs.
    s = cb.TemperatureScheduler(
        start=1.0, speed=2.0, restarts=2, start_fraction=0.1, end_fraction=0.7,
        total_steps=20, steps_per_epoch=1,
    )
    assert [s(e) for e in range(20)] == [1, 1, 2, 4, 8, 16, 2, 4, 8, 16, 2, 4, 8, 16, 16, 16, 16, 16, 16, 16]


def test_speed_form_under_fit_uses_fit_steps():
    x, y = _xy(24)
    model = _model()
    model.compile("sgd", "mse")
    recorder = _Recorder()
    scheduler = cb.TemperatureScheduler(start=1.0, speed=2.0, start_fraction=0.25, end_fraction=0.75)
    model.fit(x, y, batch_size=8, epochs=4, callbacks=[scheduler, recorder], verbose=0)
    # epochs 0..3, window [1, 3): tau 1, 2, 4, 4 (3 steps each)
    assert recorder.taus == [1.0] * 3 + [2.0] * 3 + [4.0] * 6


# -- the hard phase ------------------------------------------------------------------


def test_hard_phase_follows_the_window():
    s = cb.TemperatureScheduler(start=0.01, end=100.0, total_steps=100, end_fraction=0.6, hard_fraction=0.25)
    assert s(74) == 100.0
    assert s(75) == s(99) == cb.HARD_TEMPERATURE
    authors = cb.TemperatureScheduler(speed=2.0, start_fraction=0.2, end_fraction=0.6, hard_fraction=0.4,
                                      total_steps=10, steps_per_epoch=1)
    assert [authors(e) for e in range(10)] == [0.01, 0.01, 0.02, 0.04, 0.08, 0.16] + [cb.HARD_TEMPERATURE] * 4


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_hard_temperature_makes_soft_equal_hard_with_no_logit_gradient(bits):
    layer = slb_keras.SLBDense(16, wbits=bits)
    layer.build((None, 32))
    slb_keras.set_temperature(layer, cb.HARD_TEMPERATURE)
    np.testing.assert_array_equal(layer.soft_kernel().numpy(), layer.hard_kernel().numpy())
    x = tf.random.normal((4, 32), seed=1)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x, training=True) ** 2)
    gradient = tape.gradient(loss, layer.kernel_logits)
    assert np.all(np.isfinite(gradient.numpy()))
    assert not np.any(gradient.numpy())


def test_hard_phase_freezes_logits_during_fit():
    x, y = _xy(24)
    model = keras.Sequential([keras.Input((4,)), slb_keras.SLBDense(3, wbits=2), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.1), "mse")  # no momentum: the logits stop at once

    class Snapshot(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                self.logits = self.model.layers[0].kernel_logits.numpy().copy()
                self.dense = self.model.layers[1].kernel.numpy().copy()

    snapshot = Snapshot()
    scheduler = cb.TemperatureScheduler(start=1.0, end=10.0, end_fraction=0.5, hard_fraction=0.5)
    history = model.fit(x, y, batch_size=8, epochs=4, callbacks=[scheduler, snapshot], verbose=0)
    assert history.history["temperature"][2:] == [cb.HARD_TEMPERATURE] * 2
    np.testing.assert_array_equal(model.layers[0].kernel_logits.numpy(), snapshot.logits)
    assert not np.array_equal(model.layers[1].kernel.numpy(), snapshot.dense)  # the rest trains


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"speed": 1.03, "end": 10.0}, "end=10.0 with speed=1.03"),
        ({"speed": 0.0}, "speed=0.0"),
        ({"speed": float("inf")}, "speed=inf"),
        ({"speed": "1.03"}, "speed='1.03'"),
        ({"hard_fraction": 0.2, "end_fraction": 0.9}, r"hard_fraction=0.2.*\[0, 0.1\]"),
        ({"hard_fraction": -0.1}, "hard_fraction=-0.1"),
    ],
)
def test_speed_and_hard_phase_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        cb.TemperatureScheduler(**kwargs)


def test_public_names():
    assert slb_keras.TemperatureScheduler is cb.TemperatureScheduler
    assert slb_keras.HARD_TEMPERATURE == cb.HARD_TEMPERATURE == 1e30
