import numpy as np
import pytest
import tensorflow as tf

import slb_keras
from slb_keras.core import ops as slb_ops

BITS = [1, 2, 3, 4, 8]


def _logits(bits, shape=(3, 5), scale=1.0, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=shape + (2**bits,)) * scale).astype(np.float32)


@pytest.mark.parametrize("bits", BITS)
def test_soft_weight_is_expectation_within_range(bits):
    logits, tau = _logits(bits), 0.7
    p = np.exp(tau * logits - np.max(tau * logits, -1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    expected = (p * slb_keras.value_set(bits)).sum(-1)
    soft = slb_ops.soft_weight(logits, tau).numpy()
    np.testing.assert_allclose(soft, expected, atol=1e-6)
    assert soft.min() >= -1.0 and soft.max() <= 1.0


@pytest.mark.parametrize("bits", BITS)
def test_hard_weight_in_value_set_and_argmax(bits):
    logits = _logits(bits, shape=(40, 7))
    hard = slb_ops.hard_weight(logits).numpy()
    v = slb_keras.value_set(bits)
    assert set(np.unique(hard)).issubset(set(v))
    np.testing.assert_array_equal(hard, v[np.argmax(logits, -1)])


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_soft_converges_to_hard_as_tau_grows(bits):
    # Logits with a margin of at least 0.05 between the top two values.
    logits = _logits(bits, shape=(50,), seed=1)
    top = np.argmax(logits, -1)
    logits[np.arange(50), top] = np.max(logits, -1) + 0.05
    hard = slb_ops.hard_weight(logits).numpy()
    gaps = [np.abs(slb_ops.soft_weight(logits, t).numpy() - hard).max() for t in (1, 10, 100, 1000)]
    assert all(a >= b for a, b in zip(gaps, gaps[1:])), gaps
    assert gaps[-1] < 1e-3, gaps
    assert gaps[0] > 1e-2, gaps
    # Theorem 1 bound: |W_s - W_h| <= (max V - min V) (1 - P_max).
    p_max = slb_ops.probabilities(logits, 10.0).numpy().max(-1)
    assert np.all(np.abs(slb_ops.soft_weight(logits, 10.0).numpy() - hard) <= 2 * (1 - p_max) + 1e-6)


@pytest.mark.parametrize("bits", [1, 2, 3])
def test_gradient_matches_finite_differences(bits):
    logits = tf.constant(_logits(bits, shape=(4,), seed=2), tf.float64)
    tau = 1.5
    weights = tf.constant(np.random.default_rng(3).normal(size=(4,)), tf.float64)

    def f(a):
        return tf.reduce_sum(tf.cast(slb_ops.soft_weight(a, tau), tf.float64) * weights)

    with tf.GradientTape() as tape:
        tape.watch(logits)
        y = f(logits)
    grad = tape.gradient(y, logits).numpy()
    eps, a = 1e-3, logits.numpy()
    numeric = np.zeros_like(a)
    for idx in np.ndindex(a.shape):
        plus, minus = a.copy(), a.copy()
        plus[idx] += eps
        minus[idx] -= eps
        numeric[idx] = (f(tf.constant(plus)) - f(tf.constant(minus))).numpy() / (2 * eps)
    np.testing.assert_allclose(grad, numeric, atol=2e-3, rtol=1e-2)
    # Closed form of the spec: dW/dA_k = tau P_k (v_k - W).
    p = slb_ops.probabilities(a, tau).numpy()
    w = slb_ops.soft_weight(a, tau).numpy()
    closed = tau * p * (slb_keras.value_set(bits) - w[..., None]) * weights.numpy()[:, None]
    np.testing.assert_allclose(grad, closed, atol=1e-5)


@pytest.mark.parametrize("bits", [1, 2, 8])
@pytest.mark.parametrize("tau", [1e-3, 1.0, 1e4])
@pytest.mark.parametrize("scale", [1e-30, 1.0, 1e30])
def test_numerically_safe(bits, tau, scale):
    logits = tf.constant(_logits(bits, shape=(6,), scale=scale, seed=4))
    with tf.GradientTape() as tape:
        tape.watch(logits)
        soft = slb_ops.soft_weight(logits, tau)
        loss = tf.reduce_sum(soft * tf.range(6, dtype=tf.float32))
    grad = tape.gradient(loss, logits)
    assert np.all(np.isfinite(soft.numpy())) and np.all(np.isfinite(grad.numpy()))
    assert np.all(np.isfinite(slb_ops.entropy(logits, tau).numpy()))
    np.testing.assert_allclose(slb_ops.probabilities(logits, tau).numpy().sum(-1), 1.0, rtol=1e-5)


def test_entropy_uniform_and_one_hot():
    assert np.allclose(slb_ops.entropy(np.zeros((3, 4), np.float32)).numpy(), np.log(4))
    assert np.allclose(slb_ops.entropy(slb_ops.logits_from_codes([1], 2, 100.0)).numpy(), 0, atol=1e-6)


def test_bad_logits_shape():
    with pytest.raises(ValueError, match="2\\*\\*bits"):
        slb_ops.soft_weight(np.zeros((2, 3), np.float32))


def _value_and_grads(fn, logits, tau, upstream):
    logits, tau = tf.Variable(logits), tf.Variable(tau)
    with tf.GradientTape() as tape:
        soft = fn(logits, tau)
        loss = tf.reduce_sum(soft * upstream)
    return (soft.numpy(), *(g.numpy() for g in tape.gradient(loss, [logits, tau])))


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6])
def test_fused_kernel_matches_autodiff_reference(bits):
    # The TensorFlow path (one XLA kernel each way, hand-written gradient)
    # against softmax + matmul differentiated by TensorFlow, on a conv kernel.
    logits = _logits(bits, shape=(3, 3, 4, 5), scale=2.0, seed=5)
    upstream = tf.constant(np.random.default_rng(6).normal(size=(3, 3, 4, 5)), tf.float32)
    fused = _value_and_grads(
        lambda a, t: slb_ops.soft_weight(a, t, bits=bits), logits, 0.8, upstream
    )
    reference = _value_and_grads(
        lambda a, t: slb_ops._soft_weight_reference(a, t, bits), logits, 0.8, upstream
    )
    assert fused[0].shape == (3, 3, 4, 5) and fused[1].shape == logits.shape
    for got, want in zip(fused, reference):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # Also inside a compiled step (the fused kernels nested in XLA) and a graph.
    for jit in (False, True):
        step = tf.function(
            lambda a, t: slb_ops.soft_weight(a, t, bits=bits), jit_compile=jit
        )
        compiled = _value_and_grads(step, logits, 0.8, upstream)
        for got, want in zip(compiled, reference):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_temperature_gradient_matches_finite_differences(bits):
    logits = _logits(bits, shape=(7,), seed=7)
    upstream = np.random.default_rng(8).normal(size=(7,))

    def f(tau):
        return float(np.sum(slb_ops.soft_weight(logits, tau).numpy().astype(np.float64) * upstream))

    tau = 0.9
    _, _, grad = _value_and_grads(
        lambda a, t: slb_ops.soft_weight(a, t), logits, tau, tf.constant(upstream, tf.float32)
    )
    eps = 1e-3
    np.testing.assert_allclose(grad, (f(tau + eps) - f(tau - eps)) / (2 * eps), rtol=1e-2, atol=1e-4)
