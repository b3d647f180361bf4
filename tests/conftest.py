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
    """MirroredStrategy over the two logical CPUs, with its own collective keys.

    Every MirroredStrategy starts its CPU collective keys from the same base, so a
    second strategy in one process could reuse the first one's keys ("Shape mismatch
    in the collective instance"); like TF's own tests, bump the base per strategy.
    """
    tf.distribute.MirroredStrategy._collective_key_base += 100000
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    assert len(devices) == 2, devices
    yield tf.distribute.MirroredStrategy(devices)
    tf.distribute.MirroredStrategy._collective_key_base += 100000
