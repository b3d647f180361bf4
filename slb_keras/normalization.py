"""State batch normalization: BN with one set of statistics per SLB state.

An SLB network computes different activations with its soft weights
(training) and its hard weights (inference), so a BN layer after an SLB layer
needs statistics for each state (SLB_SPEC section 3).
`StateBatchNormalization` is `keras.layers.BatchNormalization` plus

- `hard_moving_mean`, `hard_moving_variance`: the hard-state statistics, set
  by `slb_keras.calibrate_bn` (exact averages over calibration batches);
- `calibrated`: a float32 scalar, 0.0 until the first calibration, then 1.0.

The inherited `moving_mean` / `moving_variance` are the soft-state statistics,
updated by ordinary training steps exactly as Keras does. With
`training=False` the layer normalizes with the hard statistics once
calibrated, with the soft ones before.
"""

import contextlib
import threading

import keras
from keras import ops

# Calibration (see slb_keras.callbacks.calibrate_bn). The set of layers being
# calibrated is shared by all threads (MirroredStrategy traces each replica in
# its own thread); the records of what each call saw are per thread (= per
# replica), read back by the replica function that made the calls.
_CALIBRATING = set()
_LOCAL = threading.local()


def _records():
    if not hasattr(_LOCAL, "records"):
        _LOCAL.records = {}
    return _LOCAL.records


@contextlib.contextmanager
def _calibrating(layers):
    """Puts `layers` in calibration mode while tracing/running a calibration."""
    ids = {id(layer) for layer in layers}
    _CALIBRATING.update(ids)
    try:
        yield
    finally:
        _CALIBRATING.difference_update(ids)


def _clone_initializer(initializer):
    config = keras.initializers.serialize(initializer)
    return keras.initializers.deserialize(config)


@keras.saving.register_keras_serializable(package="slb_keras")
class StateBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` with separate soft and hard statistics.

    Takes exactly the arguments of `keras.layers.BatchNormalization` (same
    names and defaults), and behaves like it during training: batch statistics
    normalize the batch and update the soft-state `moving_mean` and
    `moving_variance` with `momentum`.

    The hard-state statistics `hard_moving_mean` / `hard_moving_variance` are
    never touched by training; `slb_keras.calibrate_bn` (or the
    `slb_keras.BNCalibration` callback) sets them to the exact population
    statistics of the layer's inputs in the hard network and sets the
    `calibrated` flag (float32 scalar variable, 1.0 once calibrated).

    With `training=False` (evaluate, predict, export) the layer computes

        gamma * (x - mu) / sqrt(var + epsilon) + beta

    with (mu, var) = hard statistics if `calibrated` else soft statistics,
    chosen in the graph from the variable, so a compiled model picks up a
    calibration without retracing. `gamma`, `beta`, `epsilon` and `axis` are
    the inherited ones.

    Example:

    >>> bn = StateBatchNormalization()
    >>> y = bn(np.random.rand(8, 4).astype("float32"), training=True)
    >>> [w.path.split("/")[-1] for w in bn.non_trainable_weights]
    ['moving_mean', 'moving_variance', 'hard_moving_mean', 'hard_moving_variance', 'calibrated']
    >>> float(bn.calibrated.numpy())
    0.0
    """

    def build(self, input_shape):
        super().build(input_shape)
        shape = (input_shape[self.axis],)
        self.hard_moving_mean = self.add_weight(
            shape=shape,
            name="hard_moving_mean",
            initializer=_clone_initializer(self.moving_mean_initializer),
            trainable=False,
            autocast=False,
        )
        self.hard_moving_variance = self.add_weight(
            shape=shape,
            name="hard_moving_variance",
            initializer=_clone_initializer(self.moving_variance_initializer),
            trainable=False,
            autocast=False,
        )
        self.calibrated = self.add_weight(
            shape=(),
            name="calibrated",
            initializer="zeros",
            dtype="float32",
            trainable=False,
            autocast=False,
        )

    def inference_statistics(self):
        """The (mean, variance) used with `training=False`, as float32 tensors.

        The hard statistics once `calibrated` is set, the soft ones before.

        Example:

        >>> bn = StateBatchNormalization()
        >>> bn.build((None, 3))
        >>> _ = bn.hard_moving_mean.assign([1.0, 2.0, 3.0])
        >>> mean, _ = bn.inference_statistics()
        >>> mean.numpy().tolist()
        [0.0, 0.0, 0.0]
        >>> _ = bn.calibrated.assign(1.0)
        >>> bn.inference_statistics()[0].numpy().tolist()
        [1.0, 2.0, 3.0]
        """
        use_hard = ops.greater(self.calibrated, 0.5)
        mean = ops.where(use_hard, self.hard_moving_mean, self.moving_mean)
        variance = ops.where(use_hard, self.hard_moving_variance, self.moving_variance)
        return mean, variance

    def call(self, inputs, training=None, mask=None):
        if id(self) in _CALIBRATING:
            return self._calibration_call(inputs, mask)
        if training and self.trainable:
            # Soft state: Keras's own training path (updates moving_*).
            return super().call(inputs, training=training, mask=mask)
        compute_dtype = keras.backend.result_type(inputs.dtype, "float32")
        inputs = ops.cast(inputs, compute_dtype)
        mean, variance = self.inference_statistics()
        outputs = ops.batch_normalization(
            x=inputs,
            mean=ops.cast(mean, compute_dtype),
            variance=ops.cast(variance, compute_dtype),
            axis=self.axis,
            offset=None if self.beta is None else ops.cast(self.beta, compute_dtype),
            scale=None if self.gamma is None else ops.cast(self.gamma, compute_dtype),
            epsilon=self.epsilon,
        )
        return ops.cast(outputs, self.compute_dtype)

    def _calibration_call(self, inputs, mask):
        """Normalizes with the global batch's statistics and records them.

        The statistics are reduced over all replicas (so every replica
        normalizes with the statistics of the whole global batch, as on one
        device), computed in two passes (mean, then centred sum of squares),
        in float32. Records (count, mean, centred sum of squares) per channel.
        No variable changes.
        """
        import tensorflow as tf  # calibration needs the TensorFlow backend

        x = tf.cast(inputs, "float32")
        axes = self._reduction_axes
        if mask is None:
            weights = tf.ones_like(x)
        else:
            weights = tf.broadcast_to(
                tf.cast(tf.expand_dims(mask, -1), "float32"), tf.shape(x)
            )
        context = tf.distribute.get_replica_context()

        def all_sum(value):
            if context is None:
                return value
            return context.all_reduce(tf.distribute.ReduceOp.SUM, value)

        count = all_sum(tf.reduce_sum(weights, axis=axes, keepdims=True))
        total = all_sum(tf.reduce_sum(weights * x, axis=axes, keepdims=True))
        mean = tf.math.divide_no_nan(total, count)
        m2 = all_sum(
            tf.reduce_sum(weights * tf.square(x - mean), axis=axes, keepdims=True)
        )
        count, mean, m2 = (tf.reshape(t, [-1]) for t in (count, mean, m2))
        _records().setdefault(id(self), []).append((count, mean, m2))
        outputs = ops.batch_normalization(
            x=x,
            mean=mean,
            variance=tf.math.divide_no_nan(m2, count),
            axis=self.axis,
            offset=None if self.beta is None else ops.cast(self.beta, "float32"),
            scale=None if self.gamma is None else ops.cast(self.gamma, "float32"),
            epsilon=self.epsilon,
        )
        return ops.cast(outputs, self.compute_dtype)
