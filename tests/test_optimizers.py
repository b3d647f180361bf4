import keras
import numpy as np
import pytest

import slb_keras
from slb_keras.core import optimizers


def _reference_sgd(w, grads, lr, momentum, wd):
    """PyTorch's SGD: d = g + wd w; buf = momentum buf + d (buf = d at step 1); w -= lr buf."""
    w = np.array(w, np.float64)
    buf = None
    for g in grads:
        d = np.asarray(g, np.float64) + wd * w
        buf = d if buf is None else momentum * buf + d
        w = w - lr * buf
    return w


def test_coupled_sgd_matches_pytorch_semantics():
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=5)
    grads = [rng.normal(size=5) for _ in range(4)]
    w = keras.Variable(w0.astype("float32"))
    # Keras momentum: m = momentum m - lr g; w += m; equals PyTorch's with the lr folded in.
    optimizer = optimizers.CoupledSGD(0.1, momentum=0.9, coupled_weight_decay=0.01)
    for g in grads:
        optimizer.apply([keras.ops.convert_to_tensor(g.astype("float32"))], [w])
    np.testing.assert_allclose(w.numpy(), _reference_sgd(w0, grads, 0.1, 0.9, 0.01), rtol=1e-5)
    plain = keras.Variable(w0.astype("float32"))
    decoupled = keras.optimizers.SGD(0.1, momentum=0.9, weight_decay=0.01)
    for g in grads:
        decoupled.apply([keras.ops.convert_to_tensor(g.astype("float32"))], [plain])
    assert not np.allclose(plain.numpy(), w.numpy(), rtol=1e-5)  # the two forms differ


def test_coupled_adam_decays_through_the_moments():
    w = keras.Variable(np.array([2.0, -4.0], "float32"))
    optimizer = optimizers.CoupledAdam(0.01, coupled_weight_decay=0.5)
    optimizer.apply([keras.ops.zeros(2)], [w])
    # first Adam step moves each weight by lr * sign(g) = lr * sign(wd w)
    np.testing.assert_allclose(w.numpy(), [1.99, -3.99], rtol=1e-5)


def test_zero_decay_is_the_keras_optimizer():
    w1, w2 = keras.Variable([1.0, 2.0]), keras.Variable([1.0, 2.0])
    optimizers.CoupledSGD(0.1, momentum=0.9).apply([keras.ops.ones(2)], [w1])
    keras.optimizers.SGD(0.1, momentum=0.9).apply([keras.ops.ones(2)], [w2])
    np.testing.assert_array_equal(w1.numpy(), w2.numpy())


def test_coupled_decay_under_mirrored_strategy_equals_one_device(mirrored_strategy):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(8, 3)).astype("float32")
    y = rng.normal(size=(8, 2)).astype("float32")

    def train(strategy=None):
        keras.utils.set_random_seed(3)
        with strategy.scope() if strategy else _null():
            model = keras.Sequential([keras.Input((3,)), slb_keras.SLBDense(2, wbits=2)])
            model.compile(optimizers.CoupledSGD(0.5, momentum=0.9, coupled_weight_decay=0.1), "mse")
        slb_keras.set_temperature(model, 1.0)
        model.fit(x, y, batch_size=8, epochs=3, verbose=0, shuffle=False)
        return model.layers[0].kernel_logits.numpy()

    np.testing.assert_allclose(train(mirrored_strategy), train(), rtol=1e-5, atol=1e-6)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *args):
        return False


def test_saved_model_keeps_the_optimizer(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizers.CoupledAdam(1e-3, coupled_weight_decay=1e-4), "mse")
    model.fit(np.ones((4, 3)), np.ones((4, 1)), verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert type(loaded.optimizer) is optimizers.CoupledAdam
    assert loaded.optimizer.coupled_weight_decay == 1e-4


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "0.1", True])
def test_bad_decay(bad):
    with pytest.raises(ValueError, match="coupled_weight_decay"):
        optimizers.CoupledSGD(0.1, coupled_weight_decay=bad)
