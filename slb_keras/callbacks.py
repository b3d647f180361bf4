"""Callbacks that turn the soft SLB search into a deployable hard network.

- `calibrate_bn` / `BNCalibration`: set the hard-state statistics of every
  `StateBatchNormalization` layer from forward passes with hard weights
  (SLB_SPEC section 3), before validation, so `val_*` metrics describe the
  deployable network.
- `SLBMetrics`: how discrete the search has become (max-probability, entropy,
  flip rate, soft-vs-hard output gap), in `logs` and TensorBoard.
- `soft_and_hard_outputs`: the model's outputs in the soft and in the hard
  state, both in inference mode.
"""

import contextlib
import numbers
import os
import warnings

import keras
import numpy as np
import tensorflow as tf

from slb_keras import layers as slb_layers_lib
from slb_keras import normalization
from slb_keras import ops as slb_ops

STATES = ("hard", "soft")


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_positive_int(name, value, allow_none=False):
    if value is None and allow_none:
        return None
    if not _is_int(value) or value <= 0:
        allowed = "a positive int or None" if allow_none else "a positive int"
        raise ValueError(f"Invalid {name}={value!r}: expected {allowed}.")
    return int(value)


# -- BN calibration ---------------------------------------------------------------


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
        for layer in model._flatten_layers(include_self=True, recursive=True)
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


class _Calibrator:
    """A traced calibration step for one model, reused across calls."""

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
        self.strategy = getattr(model, "distribute_strategy", None) or tf.distribute.get_strategy()
        self._step = tf.function(self._distributed_step, reduce_retracing=True)

    def _replica_step(self, batch):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(batch)
        records = normalization._records()
        records.clear()
        self.model(x, training=False)  # SLB layers: hard weights
        result = [records.pop(id(layer), []) for layer in self.layers]
        records.clear()
        return result

    def _distributed_step(self, batch):
        per_replica = self.strategy.run(self._replica_step, args=(batch,))
        # Statistics are all-reduced inside the layers: every replica holds
        # those of the whole global batch, so the first one is enough.
        return self.strategy.experimental_local_results(per_replica)[0]

    def __call__(self, dataset, steps):
        if not isinstance(dataset, tf.data.Dataset):
            raise ValueError(
                f"Invalid dataset={dataset!r}: expected a tf.data.Dataset of batches "
                "(x, or (x, y), or (x, y, sample_weight))."
            )
        steps = _check_positive_int("steps", steps, allow_none=True)
        if steps is None:
            if dataset.cardinality() == tf.data.INFINITE_CARDINALITY:
                raise ValueError(
                    "calibrate_bn: the dataset is infinite: pass steps=... (a positive int)."
                )
        else:
            dataset = dataset.take(steps)
        accumulated = [None] * len(self.layers)
        batches = 0
        force = _capture_and_force(self.model, force_soft=True) if self.state == "soft" else None
        with normalization._calibrating(self.layers), force or contextlib.nullcontext():
            for batch in self.strategy.experimental_distribute_dataset(dataset):
                for index, calls in enumerate(self._step(batch)):
                    for count, mean, m2 in calls:
                        accumulated[index] = _merge(
                            accumulated[index], count.numpy(), mean.numpy(), m2.numpy()
                        )
                batches += 1
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
            distributed over its replicas.
        dataset: a `tf.data.Dataset` of batches `x`, `(x, y)` or
            `(x, y, sample_weight)` (labels are ignored).
        steps: number of batches, a positive int; None runs through the
            (finite) dataset once.
        state: "hard" (default) or "soft", the state to calibrate.

    Returns:
        The number of batches used.

    Raises:
        ValueError: for `steps` <= 0, an empty or infinite (with
            steps=None) dataset, an unknown `state`, or a model without
            state BN layers.

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
    return _Calibrator(model, state)(dataset, steps)


class BNCalibration(keras.callbacks.Callback):
    """Calibrates the hard BN statistics during `fit`, before validation.

    Every `every_n_epochs` epochs, once the epoch's training steps are done,
    runs `calibrate_bn(model, dataset, steps)`, and once more at the end of
    training (unless nothing was trained since the last calibration).

    Keras 3 calls `on_epoch_end` *after* validation, too late for the
    `val_*` metrics. So the calibration runs in `on_test_begin`, which `fit`
    calls when it starts validating, i.e. after the epoch's last training
    step; in epochs without validation it runs in `on_epoch_end`. The
    validation metrics therefore describe the deployable network: hard
    weights, calibrated hard statistics.

    Args:
        dataset: a `tf.data.Dataset` of training batches (see `calibrate_bn`).
        steps: batches per calibration, a positive int (SLB_SPEC: about the
            size of the validation set), or None for the whole dataset.
        every_n_epochs: calibrate after every n-th epoch, a positive int.

    Raises:
        ValueError: for `steps` or `every_n_epochs` <= 0, or a dataset that
            is not a `tf.data.Dataset`.

    Example:

    >>> model = keras.Sequential([
    ...     keras.Input((4,)), slb_keras.SLBDense(3, wbits=1),
    ...     slb_keras.StateBatchNormalization(), keras.layers.Dense(1)])
    >>> model.compile("sgd", "mse")
    >>> x, y = np.random.rand(16, 4).astype("float32"), np.random.rand(16, 1)
    >>> data = tf.data.Dataset.from_tensor_slices(x).batch(8)
    >>> _ = model.fit(x, y, validation_data=(x, y), epochs=1, verbose=0,
    ...               callbacks=[BNCalibration(data, steps=2)])
    >>> float(model.layers[1].calibrated.numpy())
    1.0
    """

    def __init__(self, dataset, steps=None, every_n_epochs=1):
        super().__init__()
        if not isinstance(dataset, tf.data.Dataset):
            raise ValueError(
                f"Invalid dataset={dataset!r}: expected a tf.data.Dataset of batches."
            )
        self.dataset = dataset
        self.steps = _check_positive_int("steps", steps, allow_none=True)
        self.every_n_epochs = _check_positive_int("every_n_epochs", every_n_epochs)
        self._calibrator = None
        self._due = False
        self._in_fit = False
        self._calibrated_at = None

    def calibrate(self):
        """Runs the calibration now; returns the number of batches used."""
        if self._calibrator is None or self._calibrator.model is not self.model:
            self._calibrator = _Calibrator(self.model)
        batches = self._calibrator(self.dataset, self.steps)
        self._calibrated_at = self._iterations()
        self._due = False
        return batches

    def _iterations(self):
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is None:
            return None
        return int(keras.ops.convert_to_numpy(optimizer.iterations))

    def on_train_begin(self, logs=None):
        self._in_fit = True
        self._due = False

    def on_epoch_begin(self, epoch, logs=None):
        self._due = (epoch + 1) % self.every_n_epochs == 0

    def on_test_begin(self, logs=None):
        if self._in_fit and self._due:
            self.calibrate()

    def on_epoch_end(self, epoch, logs=None):
        if self._due:
            self.calibrate()

    def on_train_end(self, logs=None):
        self._in_fit = False
        if self._calibrated_at is None or self._calibrated_at != self._iterations():
            self.calibrate()


# -- soft vs hard ---------------------------------------------------------------


@contextlib.contextmanager
def _capture_and_force(model, force_soft):
    """Captures each SLB layer's first input; optionally forces soft kernels.

    Eager-only: it overrides `call` on the layer instances and restores it.
    """
    captured = {}
    layers = slb_layers_lib.slb_layers(model)
    for layer in layers:
        original = layer.call

        def hook(inputs, training=None, _layer=layer, _original=original):
            captured.setdefault(id(_layer), inputs)
            return _original(inputs, training=True if force_soft else training)

        layer.call = hook
    try:
        yield captured
    finally:
        for layer in layers:
            del layer.call


def soft_and_hard_outputs(model, x):
    """The model's outputs on `x` in the soft and in the hard state.

    Both run in inference mode (dropout off, no statistic updated):

    - soft: soft SLB kernels sum_k P_k v_k with the current tau, and the soft
      (`moving_*`) statistics of the state BN layers;
    - hard: hard kernels v[argmax A] and the hard statistics once calibrated
      (what `model(x, training=False)` and the exported model compute).

    Runs eagerly (it briefly overrides the SLB layers' `call`).

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
        with _capture_and_force(model, force_soft=True):
            soft = keras.ops.convert_to_numpy(model(x, training=False))
    finally:
        for layer, flag in zip(bns, flags):
            layer.calibrated.assign(flag)
    return soft, hard


def _channel_decorrelation(soft, hard, channel_axis):
    """Mean over channels of 1 - corr(soft, hard) over all other positions.

    What a BN layer after the SLB layer cannot absorb: BN removes each
    channel's offset and scale, so the normalized soft and hard outputs
    differ by mean squared 2 * (1 - corr).
    """
    soft = np.moveaxis(np.asarray(soft, np.float64), channel_axis, -1)
    hard = np.moveaxis(np.asarray(hard, np.float64), channel_axis, -1)
    soft = soft.reshape(-1, soft.shape[-1])
    hard = hard.reshape(-1, hard.shape[-1])
    soft = soft - soft.mean(axis=0)
    hard = hard - hard.mean(axis=0)
    norms = np.sqrt(np.sum(soft * soft, axis=0) * np.sum(hard * hard, axis=0))
    dot = np.sum(soft * hard, axis=0)
    # Two constant channels are the same up to BN; one constant one is not.
    both_flat = (np.ptp(soft, axis=0) == 0) & (np.ptp(hard, axis=0) == 0)
    corr = np.where(norms > 0, dot / np.where(norms > 0, norms, 1.0), 0.0)
    corr = np.where(both_flat, 1.0, corr)
    return float(np.mean(1.0 - corr))


def _channel_axis(layer):
    return 1 if getattr(layer, "data_format", "channels_last") == "channels_first" else -1


class SLBMetrics(keras.callbacks.Callback):
    """Per-epoch statistics of the SLB search, per layer and overall.

    At each epoch end, for every SLB layer (P = softmax(tau * A)):

    - `max_prob`: mean over weights of max_k P_k (1 = fully discrete);
    - `entropy`: mean over weights of -sum_k P_k log P_k (nats);
    - `flip_rate`: fraction of weights whose argmax code changed since the
      previous epoch end (the first epoch: since the start of training);
    - `output_gap` (when `x` is given): on the fixed batch `x`, the layer's
      outputs with the soft and with the hard kernel, on the inputs it gets
      in the hard network, compared per output channel over all other
      positions as 1 - correlation, averaged over channels. It is the part
      of the soft-hard difference that the batch norm after the layer cannot
      absorb (BN removes each channel's offset and scale, and V has no
      scale, so W_soft is typically much smaller than W_hard early on): 0
      when the normalized outputs agree, 1 when they are unrelated.

    Overall: `max_prob`, `entropy` and `flip_rate` over all SLB weights
    together, `output_gap` the mean of the layers' gaps.

    The overall values go into `logs` as `slb_max_prob`, `slb_entropy`,
    `slb_flip_rate`, `slb_output_gap`; per-layer values as
    `slb/<layer>/<metric>` when `per_layer_logs` (off by default: with many
    layers they flood the progress bar). With `log_dir`, all of them are
    written as TensorBoard scalars (run `log_dir/slb`, step = epoch), and
    every `histogram_freq` epochs a histogram of each layer's max_k P_k, to
    watch the distribution become sharper during training.

    Args:
        x: a fixed batch of inputs for the output gaps (array, tensor, or a
            `tf.data.Dataset` whose first batch is used); None skips gaps.
        log_dir: TensorBoard directory, or None.
        per_layer_logs: also put the per-layer values into `logs`.
        histogram_freq: epochs between histograms, an int >= 0 (0: none).

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), slb_keras.SLBDense(2)])
    >>> model.compile("sgd", "mse")
    >>> x = np.random.rand(8, 4).astype("float32")
    >>> history = model.fit(x, np.zeros((8, 2)), epochs=1, verbose=0,
    ...                     callbacks=[SLBMetrics(x=x[:4])])
    >>> sorted(k for k in history.history if k.startswith("slb_"))
    ['slb_entropy', 'slb_flip_rate', 'slb_max_prob', 'slb_output_gap']
    """

    METRICS = ("max_prob", "entropy", "flip_rate", "output_gap")

    def __init__(self, x=None, log_dir=None, per_layer_logs=False, histogram_freq=1):
        super().__init__()
        if not _is_int(histogram_freq) or histogram_freq < 0:
            raise ValueError(
                f"Invalid histogram_freq={histogram_freq!r}: expected an int >= 0."
            )
        if isinstance(x, tf.data.Dataset):
            first = next(iter(x.take(1)), None)
            if first is None:
                raise ValueError("Invalid x: the dataset is empty (it yielded no batch).")
            x, _, _ = keras.utils.unpack_x_y_sample_weight(first)
        self.x = x
        self.log_dir = None if log_dir is None else os.fspath(log_dir)
        self.per_layer_logs = bool(per_layer_logs)
        self.histogram_freq = int(histogram_freq)
        self._codes = {}
        self._writer = None

    def on_train_begin(self, logs=None):
        layers = slb_layers_lib.slb_layers(self.model)
        if not layers:
            raise ValueError("SLBMetrics: the model has no SLB layers.")
        for layer in layers:
            self._codes.setdefault(id(layer), slb_ops.hard_codes(layer.kernel_logits).numpy())
        if self.log_dir is not None and self._writer is None:
            self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "slb"))

    def compute(self):
        """Computes the metrics now (and resets the flip reference).

        Returns:
            `(overall, per_layer, max_probs)`: a dict metric -> float, a dict
            layer name -> dict metric -> float, and a dict layer name ->
            flat array of max_k P_k.
        """
        per_layer, max_probs = {}, {}
        totals = {"max_prob": 0.0, "entropy": 0.0, "flip_rate": 0.0}
        size = 0
        layers = slb_layers_lib.slb_layers(self.model)
        for layer in layers:
            logits, tau = layer.kernel_logits, layer.temperature
            p_max = keras.ops.convert_to_numpy(
                keras.ops.max(slb_ops.probabilities(logits, tau), axis=-1)
            ).ravel()
            entropy = keras.ops.convert_to_numpy(slb_ops.entropy(logits, tau)).ravel()
            codes = slb_ops.hard_codes(logits).numpy()
            previous = self._codes.get(id(layer), codes)
            flips = float(np.mean(codes != previous))
            self._codes[id(layer)] = codes
            values = {
                "max_prob": float(np.mean(p_max)),
                "entropy": float(np.mean(entropy)),
                "flip_rate": flips,
            }
            for name in totals:
                totals[name] += values[name] * p_max.size
            size += p_max.size
            per_layer[layer.name] = values
            max_probs[layer.name] = p_max
        overall = {name: total / max(size, 1) for name, total in totals.items()}
        if self.x is not None:
            with _capture_and_force(self.model, force_soft=False) as inputs:
                self.model(self.x, training=False)
            for layer in layers:
                if id(layer) in inputs:
                    soft = layer(inputs[id(layer)], training=True)
                    hard = layer(inputs[id(layer)], training=False)
                    per_layer[layer.name]["output_gap"] = _channel_decorrelation(
                        soft, hard, _channel_axis(layer)
                    )
            gaps = [v["output_gap"] for v in per_layer.values() if "output_gap" in v]
            overall["output_gap"] = float(np.mean(gaps)) if gaps else float("nan")
        return overall, per_layer, max_probs

    def on_epoch_end(self, epoch, logs=None):
        overall, per_layer, max_probs = self.compute()
        if logs is not None:
            logs.update({f"slb_{name}": value for name, value in overall.items()})
            if self.per_layer_logs:
                for layer_name, values in per_layer.items():
                    logs.update({f"slb/{layer_name}/{k}": v for k, v in values.items()})
        if self._writer is None:
            return
        with self._writer.as_default(step=epoch):
            for name, value in overall.items():
                tf.summary.scalar(f"slb/{name}", value)
            for layer_name, values in per_layer.items():
                for name, value in values.items():
                    tf.summary.scalar(f"slb/{layer_name}/{name}", value)
            if self.histogram_freq and epoch % self.histogram_freq == 0:
                for layer_name, p_max in max_probs.items():
                    tf.summary.histogram(f"slb/{layer_name}/max_prob", p_max)
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()
