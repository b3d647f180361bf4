"""In-memory sources: the packaged digits and .npz files, standardized by their own statistics.

An .npz file holds `x_train`, `y_train`, `x_test`, `y_test`: images `(n, h, w)` or
`(n, h, w, c)`, uint8 0..255 or float; integer labels. The images are normalized by the
training set's channel mean / std and not augmented (a flip would change a digit).
"""

import functools

import numpy as np
import tensorflow as tf

from input_pipeline.preprocessing import normalize, unit_float
from input_pipeline.source import DatasetInfo, DatasetNotFoundError, Source
from slb_keras.datasets import load_digits

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def digits_source(image_size):
    """The `Source` of the packaged digits (`slb_keras.datasets.load_digits`), offline.

    Example:

    >>> digits_source(16).info
    DatasetInfo(num_classes=10, input_shape=(16, 16, 3), num_train=1438, num_test=359)
    """
    (x_train, y_train), (x_test, y_test) = load_digits(image_size=image_size)
    return _array_source(x_train, y_train, x_test, y_test, image_size)


def npz_source(path, image_size):
    """The `Source` of an .npz file holding `NPZ_KEYS`, its arrays checked.

    Example:

    >>> import numpy as np
    >>> images, labels = np.zeros((8, 4, 4), np.uint8), np.arange(8) % 2
    >>> np.savez("tiny.npz", x_train=images, y_train=labels, x_test=images, y_test=labels)
    >>> npz_source("tiny.npz", None).info
    DatasetInfo(num_classes=2, input_shape=(4, 4, 1), num_train=8, num_test=8)
    """
    if not tf.io.gfile.exists(path):
        raise DatasetNotFoundError(
            f"no .npz file at {path!r}: write one holding {', '.join(NPZ_KEYS)}, "
            "or use --dataset=digits"
        )
    with tf.io.gfile.GFile(path, "rb") as file, np.load(file) as arrays:
        missing = [key for key in NPZ_KEYS if key not in arrays.files]
        if missing:
            raise ValueError(
                f"{path} lacks {', '.join(missing)}: an .npz data set must hold "
                f"{', '.join(NPZ_KEYS)}; it holds {', '.join(arrays.files) or 'nothing'}"
            )
        x_train, y_train, x_test, y_test = (arrays[key] for key in NPZ_KEYS)
    x_train, x_test = (_with_channels(path, x) for x in (x_train, x_test))
    y_train, y_test = (_labels(path, y, len(x)) for y, x in ((y_train, x_train), (y_test, x_test)))
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(
            f"{path}: x_train images are {x_train.shape[1:]} but x_test images are "
            f"{x_test.shape[1:]}; both splits must hold images of one shape"
        )
    return _array_source(x_train, y_train, x_test, y_test, image_size)


def _with_channels(path, images):
    if images.ndim == 3:
        images = images[..., np.newaxis]
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(
            f"{path}: images must be a non-empty (n, h, w) or (n, h, w, c) array. "
            f"Received shape {images.shape}"
        )
    if images.dtype != np.uint8 and not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"{path}: images must be uint8 or float. Received dtype {images.dtype}")
    return images


def _labels(path, labels, num_images):
    labels = np.asarray(labels).reshape(-1) if np.ndim(labels) == 2 else np.asarray(labels)
    if (
        labels.shape != (num_images,)
        or not np.issubdtype(labels.dtype, np.integer)
        or labels.min() < 0
    ):
        raise ValueError(
            f"{path}: labels must be {num_images} non-negative integers, one per image. "
            f"Received shape {labels.shape}, dtype {labels.dtype}"
        )
    return labels.astype(np.int32)


def _array_source(x_train, y_train, x_test, y_test, image_size):
    """In-memory images (uint8 0..255 or float), standardized by training-set statistics."""
    mean, std = _channel_stats(x_train)
    size = (image_size, image_size) if image_size else x_train.shape[1:3]
    if tuple(size) != x_train.shape[1:3]:
        resize = functools.partial(tf.image.resize, size=size)
    else:
        resize = tf.identity

    def preprocess(image, seed=None):
        del seed  # not augmented
        return normalize(resize(unit_float(image)), mean, std)

    splits = {True: (x_train, y_train), False: (x_test, y_test)}
    return Source(
        info=DatasetInfo(
            num_classes=int(max(y_train.max(), y_test.max())) + 1,
            input_shape=(*size, x_train.shape[-1]),
            num_train=len(x_train),
            num_test=len(x_test),
        ),
        load=lambda training, seed: tf.data.Dataset.from_tensor_slices(splits[training]),
        train_fn=preprocess,
        test_fn=preprocess,
        cache=False,
        shuffle_buffer=len(x_train),
    )


def _channel_stats(images):
    """Per-channel mean and std of images scaled like `unit_float`, as float tuples."""
    scale = 255.0 if images.dtype == np.uint8 else 1.0
    channels = [images[..., c] for c in range(images.shape[-1])]
    mean = tuple(float(np.mean(c, dtype=np.float64)) / scale for c in channels)
    std = tuple(max(float(np.std(c, dtype=np.float64)) / scale, 1e-3) for c in channels)
    return mean, std
