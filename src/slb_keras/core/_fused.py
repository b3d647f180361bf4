"""Fused soft weight for the TensorFlow backend (m = 2**b > 2 values).

`ops.soft_weight` written with keras.ops is a chain of ops, each of which
reads and writes a tensor of the logits' size (shift, scale, exp, normalize,
matmul), and autodiff keeps the softmax output alive until the backward pass,
then makes several more logit-sized temporaries. Here the forward and the
backward pass are each one XLA kernel over the logits, with a hand-written
gradient

    dL/dA_k = tau * P_k * (v_k - W) * dL/dW

that recomputes P from the logits instead of storing it. The only
logit-sized tensor either pass writes is the gradient itself.

The value axis is handled as m separate columns (`unstack`) rather than as a
reduction over the last axis: XLA on CPU fuses the columns into one
elementwise loop that runs on all cores, while a fused reduction over a
minor axis of 4 or 16 entries runs on one core (about 3x slower here). The
temperature's gradient (rarely wanted: tau is not trainable) is a separate
kernel, pruned from a tf.function when nothing uses it.
"""

import functools

import tensorflow as tf

# Up to this many values the value axis is unrolled into columns; beyond it
# (6 bits and more) compiling m columns takes longer than it saves.
_MAX_COLUMNS = 16


@functools.lru_cache(maxsize=None)
def _fused_soft_weight(values):
    """The custom-gradient soft weight for one value set (a tuple of floats)."""
    m = len(values)
    logits_spec = tf.TensorSpec([None, m], tf.float32)
    scalar_spec = tf.TensorSpec([], tf.float32)
    row_spec = tf.TensorSpec([None], tf.float32)
    ones = (1.0,) * m

    def shifted_exps(logits, tau):
        """max_k A_k and exp(tau (A_k - max)): m columns, or one (N, m) tensor for large m."""
        if m > _MAX_COLUMNS:
            top = tf.reduce_max(logits, axis=-1)
            return top, tf.exp(tau * (logits - top[:, None]))
        columns = tf.unstack(logits, num=m, axis=-1)
        top = functools.reduce(tf.maximum, columns)
        return top, [tf.exp(tau * (c - top)) for c in columns]

    def value_sum(exps, coefficients):
        """sum_k c_k exps_k, for either layout of `shifted_exps`."""
        if isinstance(exps, list):
            return functools.reduce(tf.add, [e * c for e, c in zip(exps, coefficients)])
        return tf.linalg.matvec(exps, tf.constant(coefficients))

    @tf.function(input_signature=[logits_spec, scalar_spec], jit_compile=True)
    def forward(logits, tau):
        _, exps = shifted_exps(logits, tau)
        return value_sum(exps, values) / value_sum(exps, ones)

    @tf.function(input_signature=[logits_spec, scalar_spec, row_spec, row_spec], jit_compile=True)
    def logits_grad(logits, tau, weight, upstream):
        top, exps = shifted_exps(logits, tau)
        coefficient = (tau * upstream / value_sum(exps, ones))[:, None]
        all_exps = tf.exp(tau * (logits - top[:, None]))  # (N, m): the gradient's layout
        return all_exps * (coefficient * (tf.constant(values) - weight[:, None]))

    @tf.function(input_signature=[logits_spec, scalar_spec, row_spec, row_spec], jit_compile=True)
    def tau_grad(logits, tau, weight, upstream):
        # dW/dtau = sum_k P_k v_k d_k - W sum_k P_k d_k with d_k = A_k - max A.
        top, exps = shifted_exps(logits, tau)
        shifted = logits - top[:, None]
        probs = tf.exp(tau * shifted) / value_sum(exps, ones)[:, None]
        pvd = tf.linalg.matvec(probs * shifted, tf.constant(values))
        pd = tf.reduce_sum(probs * shifted, axis=-1)
        return tf.reduce_sum(upstream * (pvd - weight * pd))

    @tf.custom_gradient
    def soft_weight(logits, tau):
        weight = forward(logits, tau)

        def grad(upstream):
            # In a tf.function the tau gradient is pruned unless someone asks for it.
            return logits_grad(logits, tau, weight, upstream), tau_grad(
                logits, tau, weight, upstream
            )

        return weight, grad

    return soft_weight


def soft_weight(logits, temperature, values):
    """sum_k softmax(tau * A)_k v_k over the last axis of `logits` (float32).

    Args:
        logits: tensor or variable of shape kernel_shape + (m,).
        temperature: scalar tau.
        values: the m values, a sequence of Python floats.
    """
    logits = tf.cast(tf.convert_to_tensor(logits), tf.float32)
    tau = tf.cast(tf.convert_to_tensor(temperature), tf.float32)
    values = tuple(float(v) for v in values)
    flat = tf.reshape(logits, [-1, len(values)])
    weight = _fused_soft_weight(values)(flat, tau)
    shape = logits.shape[:-1]
    return tf.reshape(weight, shape if shape.is_fully_defined() else tf.shape(logits)[:-1])
