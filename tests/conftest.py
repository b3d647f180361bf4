"""Test setup: two logical CPUs, so MirroredStrategy tests run on this machine."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
try:
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
    )
except RuntimeError:  # TF was initialized earlier (e.g. by a plugin): keep as is
    pass


@pytest.fixture
def mirrored_strategy():
    """MirroredStrategy over the two logical CPUs."""
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    assert len(devices) == 2, devices
    return tf.distribute.MirroredStrategy(devices)
