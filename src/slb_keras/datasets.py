"""Small data sets shipped with slb_keras, for runs that need no download.

`load_digits` gives the UCI handwritten digits (1797 images of 8x8 pixels, 10 classes,
CC BY 4.0; see `slb_keras/data/README.md`) upsampled to the input size of the CIFAR
models, so `train.py --dataset=digits` works offline in a few minutes on a CPU.
"""

import functools
import gzip
import importlib.resources
import numbers

import numpy as np
import tensorflow as tf

DIGITS_FILE = "digits.csv.gz"
DIGITS_NUM_CLASSES = 10
DIGITS_SIZE = 8
DIGITS_MAX_VALUE = 16.0
ALLOWED_CHANNELS = (1, 3)


def load_digits(image_size=32, channels=3, test_fraction=0.2, seed=0):
    """Loads the handwritten digits as image arrays with a stratified train/test split.

    Each class is split on its own: `round(n_c * test_fraction)` of its images (at least
    one, and at least one left for training) go to the test set, picked by a NumPy
    generator seeded with `seed`, so the split is the same on every call and machine and
    every class keeps its share. Both sets keep the file's order.

    Pixels (counts 0..16) are scaled to [0, 1], upsampled from 8x8 to
    `image_size` x `image_size` with bilinear interpolation (so values stay in [0, 1])
    and repeated over `channels`.

    Args:
        image_size: side of the returned square images, an int >= 8.
        channels: 1 or 3 (the grey image repeated, for models built for RGB input).
        test_fraction: share of each class held out for testing, in (0, 1).
        seed: non-negative int seeding the split.

    Returns:
        `(x_train, y_train), (x_test, y_test)`: images as float32 arrays of shape
        `(n, image_size, image_size, channels)`, labels as int32 arrays of shape `(n,)`
        with values 0..9. The default split has 1438 training and 359 test images.

    Raises:
        ValueError: an argument has the wrong type or is out of range.

    Example:

    >>> (x_train, y_train), (x_test, y_test) = load_digits(image_size=16, channels=1)
    >>> x_train.shape, x_test.shape
    ((1438, 16, 16, 1), (359, 16, 16, 1))
    >>> float(x_train.min()), float(x_train.max())
    (0.0, 1.0)
    """
    _check_int("image_size", image_size, low=DIGITS_SIZE)
    if not _is_int(channels) or channels not in ALLOWED_CHANNELS:
        raise ValueError(
            f"`channels` must be one of {ALLOWED_CHANNELS}. Received: channels={channels!r}"
        )
    if (
        not isinstance(test_fraction, numbers.Real)
        or isinstance(test_fraction, bool)
        or not 0.0 < test_fraction < 1.0
    ):
        raise ValueError(
            "`test_fraction` must be a number strictly between 0 and 1. "
            f"Received: test_fraction={test_fraction!r}"
        )
    _check_int("seed", seed, low=0)

    pixels, labels = _read_digits()
    images = _to_images(pixels, int(image_size), int(channels))
    test_mask = _stratified_test_mask(labels, float(test_fraction), int(seed))
    return (
        (images[~test_mask], labels[~test_mask]),
        (images[test_mask], labels[test_mask]),
    )


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_int(name, value, low):
    if not _is_int(value) or value < low:
        raise ValueError(f"`{name}` must be an int >= {low}. Received: {name}={value!r}")


@functools.lru_cache(maxsize=1)
def _read_digits():
    """Returns the packaged (pixels (1797, 64) uint8, labels (1797,) int32), read once."""
    resource = importlib.resources.files("slb_keras") / "data" / DIGITS_FILE
    with resource.open("rb") as raw, gzip.open(raw, "rt") as text:
        table = np.loadtxt(text, delimiter=",", dtype=np.int32)
    pixels, labels = table[:, :-1].astype(np.uint8), table[:, -1]
    pixels.flags.writeable = False
    labels.flags.writeable = False
    return pixels, labels


def _to_images(pixels, image_size, channels):
    """(n, 64) counts 0..16 -> (n, image_size, image_size, channels) float32 in [0, 1]."""
    images = pixels.reshape(-1, DIGITS_SIZE, DIGITS_SIZE, 1).astype(np.float32)
    images /= DIGITS_MAX_VALUE
    if image_size != DIGITS_SIZE:
        images = tf.image.resize(images, (image_size, image_size), method="bilinear")
        images = np.clip(images.numpy(), 0.0, 1.0)  # guard float rounding past the ends
    return np.repeat(images, channels, axis=-1)


def _stratified_test_mask(labels, test_fraction, seed):
    """Boolean mask choosing round(n_c * test_fraction) random images of every class."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(labels.shape, dtype=bool)
    for label in range(DIGITS_NUM_CLASSES):
        members = np.flatnonzero(labels == label)
        num_test = min(max(round(len(members) * test_fraction), 1), len(members) - 1)
        mask[rng.permutation(members)[:num_test]] = True
    return mask
