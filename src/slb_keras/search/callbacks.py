"""Callbacks that turn the soft SLB search into a deployable hard network.

- `BNCalibration`: runs `slb_keras.calibrate_bn` during `fit`, before
  validation, so `val_*` metrics describe the deployable network.
- `SLBMetrics`: how discrete the search has become (max-probability, entropy,
  flip rate, soft-vs-hard output gap), in `logs` and TensorBoard.

The calibration engine itself is `slb_keras.search.calibration`.
"""

import os

import keras
import numpy as np
import tensorflow as tf  # tf.data inputs and TensorBoard's summary writer

from slb_keras.search import calibration
from slb_keras import checks
from slb_keras import keras_private
from slb_keras import layers as slb_layers_lib
from slb_keras.core import ops as slb_ops


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
        steps: batches per calibration, an int >= 1 (the authors': about the
            size of the validation set), or None for the whole dataset.
        every_n_epochs: calibrate after every n-th epoch, an int >= 1.

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
        self.steps = checks.check_int("steps", steps, allow_none=True)
        self.every_n_epochs = checks.check_int("every_n_epochs", every_n_epochs)
        self._calibrator = None
        self._due = False
        self._in_fit = False
        self._calibrated_at = None

    def calibrate(self):
        """Runs the calibration now; returns the number of batches used."""
        if self._calibrator is None or self._calibrator.model is not self.model:
            self._calibrator = calibration.Calibrator(self.model)
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
    - `output_gap` (when `x` is given, for a Sequential or Functional model):
      on the fixed batch `x`, the layer's
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
    every `histogram_freq` epochs a histogram of each layer's max_k P_k
    (tag `slb/<layer>/max_prob_hist`: a tag of its own, so TensorBoard lists
    it under histograms), to watch the distribution become sharper.

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
        histogram_freq = checks.check_int("histogram_freq", histogram_freq, low=0)
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
            self._codes.setdefault(id(layer), keras.ops.convert_to_numpy(layer.kernel_codes()))
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
            codes = keras.ops.convert_to_numpy(layer.kernel_codes())
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
        if self.x is not None and keras_private.is_graph_model(self.model):
            inputs = slb_layers_lib.layer_inputs(self.model, self.x)
            for layer in layers:
                if layer.name in inputs:
                    soft = layer(inputs[layer.name], training=True)
                    hard = layer(inputs[layer.name], training=False)
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
                    tf.summary.histogram(f"slb/{layer_name}/max_prob_hist", p_max)
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()
