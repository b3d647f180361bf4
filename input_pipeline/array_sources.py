"""In-memory sources: the packaged digits and .npz files, standardized by their own statistics.

An .npz file holds `x_train`, `y_train`, `x_test`, `y_test`: images `(n, h, w)` or
`(n, h, w, c)`, uint8 0..255 or float; integer labels. The images keep their stored
values (as float32) and are not augmented unless asked (`augment=True`: pad-crop and flip,
`preprocessing.pad_crop_flip`; off by default, as a flip would change a digit); their channel
mean / std over the training examples go to `DatasetInfo` for the model's input
normalization.
"""

import functools

import numpy as np
import tensorflow as tf

from input_pipeline.holdout import held_out_splits
from input_pipeline.preprocessing import pad_crop_flip
from input_pipeline.source import DataError, DatasetInfo, DatasetNotFoundError, Source
from input_pipeline.validation import check_classes, check_images, check_labels, read_npz
from slb_keras.datasets import load_digits

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def digits_source(image_size, validation_split=0.0, augment=False):
    """The `Source` of the packaged digits (`slb_keras.datasets.load_digits`), offline.

    Example:

    >>> digits_source(16).info[:4]
    (10, (16, 16, 3), 1438, 359)
    >>> digits_source(16, validation_split=0.1).info[:5]
    (10, (16, 16, 3), 1294, 359, 144)
    """
    (x_train, y_train), (x_test, y_test) = load_digits(image_size=image_size)
    return _array_source("digits", x_train, y_train, x_test, y_test, image_size, validation_split, augment)


def npz_source(path, image_size, validation_split=0.0, augment=False):
    """The `Source` of an .npz file holding `NPZ_KEYS`, its arrays checked (`validation`).

    Example:

    >>> import numpy as np
    >>> images, labels = np.zeros((8, 4, 4), np.uint8), np.arange(8) % 2
    >>> np.savez("tiny.npz", x_train=images, y_train=labels, x_test=images, y_test=labels)
    >>> npz_source("tiny.npz", None).info
    DatasetInfo(num_classes=2, input_shape=(4, 4, 1), num_train=8, num_test=8, num_validation=0, channel_mean=(0.0,), channel_std=(0.255,))
    """
    if not tf.io.gfile.exists(path):
        raise DatasetNotFoundError(
            f"no .npz file at {path!r}: write one holding {', '.join(NPZ_KEYS)}, "
            "or use --dataset=digits"
        )
    arrays = read_npz(path, NPZ_KEYS)
    x_train, x_test = (check_images(path, key, arrays[key]) for key in ("x_train", "x_test"))
    y_train, y_test = (
        check_labels(path, key, arrays[key], len(x))
        for key, x in (("y_train", x_train), ("y_test", x_test))
    )
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(
            f"{path}: x_train images are {x_train.shape[1:]} but x_test images are "
            f"{x_test.shape[1:]}; both splits must hold images of one shape"
        )
    return _array_source(path, x_train, y_train, x_test, y_test, image_size, validation_split, augment)


def _array_source(name, x_train, y_train, x_test, y_test, image_size, validation_split, augment):
    """In-memory images (uint8 0..255 or float) as float32, with their channel statistics."""
    num_classes = check_classes(name, y_train, y_test)
    splits = held_out_splits(name, x_train, y_train, x_test, y_test, validation_split)
    x_train = splits["train"][0]
    mean, std = _channel_stats(x_train)
    size = (image_size, image_size) if image_size else x_train.shape[1:3]
    if tuple(size) != x_train.shape[1:3]:
        resize = functools.partial(tf.image.resize, size=size)
    else:
        resize = tf.identity

    def preprocess(image):
        return resize(tf.cast(image, tf.float32))

    def train_preprocess(image, seed):
        return pad_crop_flip(preprocess(image), seed) if augment else preprocess(image)

    return Source(
        info=DatasetInfo(
            num_classes=num_classes,
            input_shape=(*size, x_train.shape[-1]),
            num_train=len(x_train),
            num_test=len(x_test),
            num_validation=len(splits["validation"][0]),
            channel_mean=mean,
            channel_std=std,
        ),
        load=lambda split, seed: tf.data.Dataset.from_tensor_slices(splits[split]),
        train_fn=train_preprocess,
        test_fn=preprocess,
        cache=False,
        shuffle_buffer=len(x_train),
    )


def _channel_stats(images):
    """Per-channel mean and std of images in their stored units; the std is at least 1e-3
    of the unit range (1 for floats, 255 for uint8), so a constant channel stays finite."""
    floor = 1e-3 * (255.0 if images.dtype == np.uint8 else 1.0)
    channels = [images[..., c] for c in range(images.shape[-1])]
    mean = tuple(float(np.mean(c, dtype=np.float64)) for c in channels)
    std = tuple(max(float(np.std(c, dtype=np.float64)), floor) for c in channels)
    return mean, std
