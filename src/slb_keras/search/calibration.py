"""BN calibration: the hard-state statistics of the state batch norms.

- `calibrate_bn`: sets the hard statistics of every `StateBatchNormalization`
  layer from forward passes with hard weights, or the
  soft ones from passes with soft weights.
- `soft_and_hard_outputs`: the model's outputs in the soft and in the hard
  state, both in inference mode.

Each state BN layer normalizes with batch statistics and accumulates them in
its own variables while its `calibrating` attribute is on; this module turns
those per-step accumulators into exact population statistics (merged in
float64 on the host).
"""

import contextlib
import warnings

import keras
import numpy as np
import tensorflow as tf  # tf.data is the input on every backend

from slb_keras import checks
from slb_keras import keras_private
from slb_keras import layers as slb_layers_lib
from slb_keras.core import normalization

STATES = ("hard", "soft")


def state_bn_layers(model):
    """All `StateBatchNormalization` layers of `model`, nested models included.

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), slb_keras.StateBatchNormalization()])
    >>> len(state_bn_layers(model))
    1
    """
    if not isinstance(model, keras.layers.Layer):
        raise ValueError(f"Invalid model={model!r}: expected a Keras model or layer.")
    return [
        layer
        for layer in keras_private.flatten_layers(model, include_self=True)
        if isinstance(layer, normalization.StateBatchNormalization)
    ]


def _merge(accumulated, count, mean, m2):
    """Chan et al.'s exact merge of (count, mean, centred sum of squares), float64."""
    count, mean, m2 = (np.asarray(v, np.float64) for v in (count, mean, m2))
    if accumulated is None:
        return count, mean, m2
    count_a, mean_a, m2_a = accumulated
    total = count_a + count
    share = np.divide(count, total, out=np.zeros_like(total), where=total > 0)
    delta = mean - mean_a
    return total, mean_a + delta * share, m2_a + m2 + delta * delta * count_a * share


def _check_finite(layer, mean, m2, batch):
    """Raises a ValueError if a batch gave `layer` non-finite statistics (nothing is stored)."""
    bad = ~(np.isfinite(mean) & np.isfinite(m2))
    if np.any(bad):
        raise ValueError(
            f"calibrate_bn: layer {layer.name!r} got non-finite batch statistics (NaN or inf "
            f"mean/variance in {int(bad.sum())} of {bad.size} channels) from batch {batch}: "
            "its inputs hold NaN or inf (check the data and the weights before it); no "
            "statistic was changed."
        )


@contextlib.contextmanager
def _calibrating(layers):
    """Turns on the `calibrating` attribute of `layers` for the block."""
    for layer in layers:
        layer.calibrating = True
    try:
        yield
    finally:
        for layer in layers:
            layer.calibrating = False


class Calibrator:
    """The calibration of one model in one state, reusable (traced once on TensorFlow).

    `calibrate_bn(model, dataset, steps, state)` is
    `Calibrator(model, state)(dataset, steps)`; `BNCalibration` keeps one.

    Example:

    >>> model = keras.Sequential([keras.Input((2,)), slb_keras.StateBatchNormalization()])
    >>> calibrator = Calibrator(model)
    >>> calibrator(tf.data.Dataset.from_tensor_slices(np.ones((4, 2), "float32")).batch(2), None)
    2
    """

    def __init__(self, model, state="hard"):
        if state not in STATES:
            raise ValueError(f"Invalid state={state!r}: expected one of {STATES}.")
        self.state = state
        self.model = model
        self.layers = state_bn_layers(model)
        if not self.layers:
            raise ValueError(
                "calibrate_bn: the model has no slb_keras.StateBatchNormalization "
                "layers to calibrate."
            )
        unbuilt = [layer.name for layer in self.layers if not layer.built]
        if unbuilt:
            raise ValueError(f"calibrate_bn: build the model first (unbuilt: {unbuilt}).")
        self._tensorflow = keras.backend.backend() == "tensorflow"
        if self._tensorflow:
            self.strategy = getattr(model, "distribute_strategy", None) or tf.distribute.get_strategy()
            self._step = tf.function(self._distributed_step, reduce_retracing=True)

    def _replica_step(self, batch):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(batch)
        self.model(x, training=False)  # SLB layers: hard weights (or soft_inference)

    def _distributed_step(self, batch):
        # Statistics are all-reduced inside the layers, so every replica
        # accumulates those of the whole global batch.
        self.strategy.run(self._replica_step, args=(batch,))

    def _batches(self, dataset):
        if self._tensorflow:
            for batch in self.strategy.experimental_distribute_dataset(dataset):
                yield lambda batch=batch: self._step(batch)
        else:
            for batch in dataset.as_numpy_iterator():
                yield lambda batch=batch: self._replica_step(batch)

    def __call__(self, dataset, steps):
        if not isinstance(dataset, tf.data.Dataset):
            raise ValueError(
                f"Invalid dataset={dataset!r}: expected a tf.data.Dataset of batches "
                "(x, or (x, y), or (x, y, sample_weight))."
            )
        steps = checks.check_int("steps", steps, allow_none=True)
        if steps is None:
            if dataset.cardinality() == tf.data.INFINITE_CARDINALITY:
                raise ValueError(
                    "calibrate_bn: the dataset is infinite: pass steps=... (an int >= 1)."
                )
        else:
            dataset = dataset.take(steps)
        accumulated = [None] * len(self.layers)
        batches = 0
        soft = slb_layers_lib.soft_inference(self.model) if self.state == "soft" else None
        try:
            with _calibrating(self.layers), soft or contextlib.nullcontext():
                for run_step in self._batches(dataset):
                    for layer in self.layers:
                        layer.reset_calibration_accumulators()
                    run_step()
                    batches += 1
                    for index, layer in enumerate(self.layers):
                        count, mean, m2 = layer.calibration_accumulators()
                        if np.any(count > 0):
                            _check_finite(layer, mean, m2, batches)
                            accumulated[index] = _merge(accumulated[index], count, mean, m2)
        finally:
            for layer in self.layers:
                layer.reset_calibration_accumulators()
        if batches == 0:
            raise ValueError("calibrate_bn: the dataset is empty (it yielded no batch).")
        if steps is not None and batches < steps:
            warnings.warn(
                f"calibrate_bn: the dataset ran out after {batches} of steps={steps} batches.",
                stacklevel=3,
            )
        for layer, stats in zip(self.layers, accumulated):
            if stats is None or not np.all(stats[0] > 0):
                raise ValueError(
                    f"calibrate_bn: layer {layer.name!r} saw no input in the forward "
                    "pass (is it on the model's path?)."
                )
        for layer, (count, mean, m2) in zip(self.layers, accumulated):
            mean, variance = mean.astype(np.float32), (m2 / count).astype(np.float32)
            if self.state == "soft":
                layer.moving_mean.assign(mean)
                layer.moving_variance.assign(variance)
            else:
                layer.hard_moving_mean.assign(mean)
                layer.hard_moving_variance.assign(variance)
                layer.calibrated.assign(1.0)
        return batches


def calibrate_bn(model, dataset, steps=None, state="hard"):
    """Sets the hard statistics of every StateBatchNormalization layer of `model`.

    Runs `model(x, training=False)` (hard SLB weights, dropout off) over
    `steps` batches of `dataset`, with every `StateBatchNormalization` layer
    in calibration mode: it normalizes each batch with that batch's own
    statistics (as in training, so the layers after it see activations on the
    scale they were trained on; reduced over all replicas, so every replica
    uses the statistics of the whole global batch and the result does not
    depend on the number of devices) and records them. Nothing else changes:
    no gradient step, no trainable weight, no soft (`moving_*`) statistic.

    The hard statistics become the exact (cumulative, not exponential)
    population statistics of each layer's inputs over all calibration
    batches: `hard_moving_mean` is their mean and `hard_moving_variance`
    their pooled (biased, divide-by-N) variance, i.e. the variance of all
    N = sum of batch sizes inputs taken together, which equals the mean of
    the per-batch variances plus the variance of the per-batch means. Pooled,
    not the mean of per-batch variances, because inference normalizes single
    inputs drawn from the whole data distribution (the deployed network has
    no batch), and because it does not depend on how the data is split into
    batches or replicas. It is computed stably: each batch gives (count,
    mean, centred sum of squares) in float32, merged exactly in float64 with
    Chan et al.'s parallel formula. Then `calibrated` is set to 1.

    `state="soft"` does the same with the soft kernels (current tau) and
    writes the result into the soft statistics `moving_mean` /
    `moving_variance` instead (`calibrated` unchanged): exact statistics for
    evaluating the soft network (`soft_and_hard_outputs`), whose moving
    averages lag behind when tau or the weights change fast.

    Args:
        model: a built Keras model with `StateBatchNormalization` layers; if
            built under a `tf.distribute` strategy, the batches are
            distributed over its replicas. Any Keras backend (on TensorFlow
            the step is one traced function).
        dataset: a `tf.data.Dataset` of batches `x`, `(x, y)` or
            `(x, y, sample_weight)` (labels are ignored).
        steps: number of batches, a positive int; None runs through the
            (finite) dataset once.
        state: "hard" (default) or "soft", the state to calibrate.

    Returns:
        The number of batches used.

    Raises:
        ValueError: for `steps` <= 0, an empty or infinite (with
            steps=None) dataset, an unknown `state`, a model without
            state BN layers, or non-finite batch statistics (a NaN or inf
            in the data or the weights reached a state BN layer); nothing is
            stored then, every layer keeps its previous statistics.

    Example:

    >>> model = keras.Sequential([
    ...     keras.Input((4,)), slb_keras.SLBDense(3, wbits=1),
    ...     slb_keras.StateBatchNormalization()])
    >>> data = tf.data.Dataset.from_tensor_slices(np.random.rand(20, 4).astype("float32"))
    >>> calibrate_bn(model, data.batch(5), steps=4)
    4
    >>> float(model.layers[1].calibrated.numpy())
    1.0
    """
    return Calibrator(model, state)(dataset, steps)


def soft_and_hard_outputs(model, x):
    """The model's outputs on `x` in the soft and in the hard state.

    Both run in inference mode (dropout off, no statistic updated):

    - soft: soft SLB kernels sum_k P_k v_k with the current tau, and the soft
      (`moving_*`) statistics of the state BN layers;
    - hard: hard kernels v[argmax A] and the hard statistics once calibrated
      (what `model(x, training=False)` and the exported model compute).

    Runs eagerly (the soft call sets the layers' `inference_kernel` to
    "soft" and the state BN layers' `calibrated` to 0, then restores them).

    Args:
        model: a built Keras model with SLB layers.
        x: a batch of inputs.

    Returns:
        `(soft_outputs, hard_outputs)` as NumPy arrays.

    Example:

    >>> keras.utils.set_random_seed(0)
    >>> model = keras.Sequential([keras.Input((4,)), slb_keras.SLBDense(2)])
    >>> soft, hard = soft_and_hard_outputs(model, np.ones((3, 4), "float32"))
    >>> soft.shape, bool(np.abs(soft).max() < np.abs(hard).max())
    ((3, 2), True)
    """
    hard = keras.ops.convert_to_numpy(model(x, training=False))
    bns = state_bn_layers(model)
    flags = [layer.calibrated.numpy() for layer in bns]
    try:
        for layer in bns:
            layer.calibrated.assign(0.0)
        with slb_layers_lib.soft_inference(model):
            soft = keras.ops.convert_to_numpy(model(x, training=False))
    finally:
        for layer, flag in zip(bns, flags):
            layer.calibrated.assign(flag)
    return soft, hard
