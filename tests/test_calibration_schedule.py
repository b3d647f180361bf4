"""train.py's BN calibration schedule: every epoch with a validation split (val_* are the
deployable network's), once after the last epoch without one, with the same final result."""

import keras
import numpy as np
import tensorflow as tf

import input_pipeline
import slb_keras
import training
from tiny_run import TINY


def _hard_statistics(model):
    return [
        (layer.hard_moving_mean.numpy(), layer.hard_moving_variance.numpy(), float(layer.calibrated.numpy()))
        for layer in slb_keras.search.calibration.state_bn_layers(model)
    ]


def test_without_validation_the_final_statistics_are_a_calibration_of_the_final_weights(tmp_path):
    config = {**TINY, "epochs": 3, "model_dir": str(tmp_path)}
    training.run(config)
    model = keras.models.load_model(tmp_path / training.MODEL_FILE)
    saved = _hard_statistics(model)
    assert saved and all(calibrated == 1.0 for _, _, calibrated in saved)
    # The calibration batches train.py uses (the training stream's first batches), on the
    # saved final weights: exactly the statistics the run stored.
    data = input_pipeline.build_dataset(
        TINY["dataset"], "train", TINY["batch_size"], image_size=TINY["image_size"],
        steps_per_epoch=TINY["steps_per_epoch"],
    )
    for layer in slb_keras.search.calibration.state_bn_layers(model):
        layer.hard_moving_mean.assign(np.zeros_like(layer.hard_moving_mean.numpy()))
    slb_keras.calibrate_bn(model, data, steps=TINY["bn_calibration_steps"])
    for (mean, variance, _), (mean2, variance2, _) in zip(saved, _hard_statistics(model)):
        np.testing.assert_array_equal(mean, mean2)
        np.testing.assert_array_equal(variance, variance2)


class _CountCalibrations(keras.callbacks.Callback):
    """Counts the epochs after which the hard statistics changed."""

    def __init__(self):
        super().__init__()
        self.changed, self._last = [], None

    def on_train_begin(self, logs=None):
        self._last = [s[0].copy() for s in _hard_statistics(self.model)]

    def on_epoch_end(self, epoch, logs=None):
        now = [s[0].copy() for s in _hard_statistics(self.model)]
        if any(not np.array_equal(a, b) for a, b in zip(now, self._last)):
            self.changed.append(epoch)
        self._last = now


def test_bn_calibration_every_n_epochs_equal_to_epochs_calibrates_once_at_the_end():
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    y = np.zeros((32, 1), "float32")
    data = tf.data.Dataset.from_tensor_slices(x).batch(8)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((4,)), slb_keras.SLBDense(3, wbits=1), slb_keras.StateBatchNormalization(),
        keras.layers.Dense(1),
    ])
    model.compile("adam", "mse")
    count = _CountCalibrations()
    model.fit(x, y, batch_size=8, epochs=3, verbose=0,
              callbacks=[slb_keras.BNCalibration(data, steps=2, every_n_epochs=3), count])
    assert count.changed == [2]  # only after the last epoch (0-based 2)
    assert float(model.layers[1].calibrated.numpy()) == 1.0
