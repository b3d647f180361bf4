"""State batch normalization: BN with one set of statistics per SLB state.

An SLB network computes different activations with its soft weights
(training) and its hard weights (inference), so a BN layer after an SLB layer
needs statistics for each state.
`StateBatchNormalization` is `keras.layers.BatchNormalization` plus

- `hard_moving_mean`, `hard_moving_variance`: the hard-state statistics, set
  by `slb_keras.calibrate_bn` (exact averages over calibration batches);
- `calibrated`: a float32 scalar, 0.0 until the first calibration, then 1.0;
- `calibration`: a `CalibrationAccumulators`, what the layer saw while
  `calibrating` (per channel: count, mean, centred sum of squares), read and
  reset by `slb_keras.calibrate_bn`; scratch variables owned by the layer but
  not among its weights (neither saved nor counted).

The inherited `moving_mean` / `moving_variance` are the soft-state statistics,
updated by ordinary training steps exactly as Keras does. With
`training=False` the layer normalizes with the hard statistics once
calibrated, with the soft ones before.
"""

import keras
from keras import ops

from slb_keras import keras_private


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

    While its `calibrating` attribute is True (set by `calibrate_bn` around
    its forward passes) the layer instead normalizes each batch with the
    batch's own statistics and merges them into its accumulators (see
    `calibration_call`).

    Example:

    >>> bn = StateBatchNormalization()
    >>> y = bn(np.random.rand(8, 4).astype("float32"), training=True)
    >>> [w.path.split("/")[-1] for w in bn.non_trainable_weights]
    ['moving_mean', 'moving_variance', 'hard_moving_mean', 'hard_moving_variance', 'calibrated']
    >>> float(bn.calibrated.numpy())
    0.0
    """

    # Set on the instance by slb_keras.calibrate_bn around its forward passes: the one
    # Python attribute read in a call. Not a scratch.Switch (read by a cond), because the
    # calibration pass all-reduces its statistics over replicas and tf.distribute refuses
    # an all-reduce inside a cond branch (measured: calibrate_bn under MirroredStrategy
    # raised RuntimeError). It is read only inside calibrate_bn's own function, traced
    # while it is on (one function per Calibrator), never by the model's own functions.
    calibrating = False

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
        self.calibration = CalibrationAccumulators(shape[0], self.name)

    def reset_calibration_accumulators(self):
        """Sets the calibration accumulators to 0."""
        self.calibration.reset()

    def calibration_accumulators(self):
        """(count, mean, m2) as float64 numpy arrays (one entry per channel)."""
        return self.calibration.numpy()

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
        use_hard = ops.greater(self.calibrated.value, 0.5)
        mean = ops.where(use_hard, self.hard_moving_mean.value, self.moving_mean.value)
        variance = ops.where(
            use_hard, self.hard_moving_variance.value, self.moving_variance.value
        )
        return mean, variance

    def call(self, inputs, training=None, mask=None):
        if self.calibrating:
            return self.calibration_call(inputs, mask)
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

    def calibration_call(self, inputs, mask=None):
        """Normalizes with the global batch's statistics and accumulates them.

        The statistics are reduced over all replicas under a `tf.distribute`
        strategy (so every replica normalizes with the statistics of the whole
        global batch, as on one device), computed in two passes (mean, then
        centred sum of squares), in float32, and merged into the accumulators
        (Chan et al.'s formula; the first merge after a reset is exact). No
        other variable changes.
        """
        x = ops.cast(inputs, "float32")
        axes = keras_private.reduction_axes(self)
        if mask is None:
            weights = ops.ones_like(x)
        else:
            weights = ops.broadcast_to(
                ops.cast(ops.expand_dims(mask, -1), "float32"), ops.shape(x)
            )
        count = _sum_over_replicas(ops.sum(weights, axis=axes, keepdims=True))
        total = _sum_over_replicas(ops.sum(weights * x, axis=axes, keepdims=True))
        mean = ops.divide_no_nan(total, count)
        m2 = _sum_over_replicas(
            ops.sum(weights * ops.square(x - mean), axis=axes, keepdims=True)
        )
        variance = ops.divide_no_nan(m2, count)
        self._accumulate(*(ops.reshape(t, (-1,)) for t in (count, mean, m2)))
        outputs = ops.batch_normalization(
            x=x,
            mean=ops.reshape(mean, (-1,)),
            variance=ops.reshape(variance, (-1,)),
            axis=self.axis,
            offset=None if self.beta is None else ops.cast(self.beta, "float32"),
            scale=None if self.gamma is None else ops.cast(self.gamma, "float32"),
            epsilon=self.epsilon,
        )
        return ops.cast(outputs, self.compute_dtype)

    def _accumulate(self, count, mean, m2):
        # Every new value is computed before the first assignment.
        count_a = self.calibration.count.value
        mean_a = self.calibration.mean.value
        m2_a = self.calibration.m2.value
        total = count_a + count
        share = ops.divide_no_nan(count, total)
        delta = mean - mean_a
        new_mean = mean_a + delta * share
        new_m2 = m2_a + m2 + delta * delta * count_a * share
        self.calibration.count.assign(total)
        self.calibration.mean.assign(new_mean)
        self.calibration.m2.assign(new_m2)


class CalibrationAccumulators:
    """Per-channel count, mean and centred sum of squares (M2) of calibration inputs.

    Three float32 Keras variables of shape (channels,), held by a
    `StateBatchNormalization` layer but not among its weights: they are the
    scratch state of `slb_keras.calibrate_bn`, neither saved nor counted as
    parameters. Under a `tf.distribute` strategy every replica holds the same
    (all-reduced) values, so the first replica's are kept.

    Example:

    >>> accumulators = CalibrationAccumulators(3, "bn")
    >>> [a.tolist() for a in accumulators.numpy()]
    [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    """

    def __init__(self, channels, name):
        self.count, self.mean, self.m2 = (
            keras.Variable(
                keras.initializers.Zeros(),
                shape=(channels,),
                dtype="float32",
                trainable=False,
                autocast=False,
                aggregation="only_first_replica",
                name=f"{name}_calibration_{part}",
            )
            for part in ("count", "mean", "m2")
        )

    def reset(self):
        """Sets all three to 0."""
        for variable in (self.count, self.mean, self.m2):
            variable.assign(ops.zeros(variable.shape, "float32"))

    def numpy(self):
        """(count, mean, m2) as float64 NumPy arrays."""
        return tuple(
            ops.convert_to_numpy(v).astype("float64") for v in (self.count, self.mean, self.m2)
        )


def _sum_over_replicas(value):
    """The sum of `value` over the replicas of a tf.distribute strategy (else `value`)."""
    if keras.backend.backend() != "tensorflow":
        return value
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)
