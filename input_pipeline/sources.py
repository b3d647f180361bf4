"""A data set name (or path) to its `Source`: the TFDS names, digits, .npz files, folders.

cifar10 is read, offline and without asking, from whatever is on disk, in this order
(`cifar10_on_disk`):

1. the TFDS cache: cifar10 prepared under `data_dir`, or under TFDS's default
   (`$TFDS_DATA_DIR` or `~/tensorflow_datasets`) when `data_dir` is None;
2. the official python version (`cifar-10-batches-py/`: `data_batch_1` .. `data_batch_5`,
   `test_batch`) at `data_dir`, which may be that folder or its parent (`cifar10_files`);
3. an image folder at `data_dir`: 10 class folders, read by `folder_source`, normalized
   by the CIFAR-10 statistics;
4. the python version in Keras's cache, where `keras.datasets.cifar10.load_data()`
   extracts it: `$KERAS_HOME` (default `~/.keras`) under `datasets/cifar-10-batches-py`
   or `datasets/cifar-10-batches-py-target/cifar-10-batches-py`.

Everything at `data_dir` comes before Keras's cache, so a folder passed explicitly is
the one read. When none is there, one line (a `DatasetNotFoundError`) lists the ways to
provide the data.
"""

import dataclasses
import os
from types import MappingProxyType

import tensorflow as tf
from absl import logging

from input_pipeline.array_sources import digits_source, npz_source
from input_pipeline.checks import check_int, check_validation_split
from input_pipeline.cifar10_files import (
    CIFAR10_BATCHES_DIR,
    CIFAR10_CLASSES,
    CIFAR10_TEST_FILE,
    CIFAR10_TRAIN_FILES,
    batches_dir_in,
    cifar10_batches_source,
    keras_batches_dir,
    keras_cache_dirs,
)
from input_pipeline.folder_source import FOLDER_IMAGE_FORMATS, FOLDER_IMAGE_SIZE, folder_source
from input_pipeline.preprocessing import CIFAR10_MEAN, CIFAR10_STD, scaled
from input_pipeline.source import DataError, DatasetNotFoundError
from input_pipeline.tfds_sources import TfdsNotPreparedError, cifar10_source, imagenet_source

DATASETS = ("cifar10", "imagenet2012", "digits")
DEFAULT_IMAGE_SIZE = MappingProxyType({"cifar10": 32, "imagenet2012": 224, "digits": 32})


def resolve_source(name, data_dir, image_size, validation_split=0.0, augment=None):
    """The `Source` of data set `name` (see the package docstring), its data checked.

    `augment`: None for the data set's default (on for cifar10,
    imagenet2012 and image folders, off for digits and .npz files), True or False.

    Raises:
        DatasetNotFoundError: the data are missing (the message says how to supply them).
        ValueError: `name` is unknown, an argument is invalid, or the data are unusable.

    Example:

    >>> resolve_source("digits", None, 16).info.input_shape
    (16, 16, 3)
    >>> resolve_source("digits", None, 16, validation_split=0.25).info.num_validation
    360
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"`name` must be a non-empty string. Received: name={name!r}")
    if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
        raise ValueError(f"`data_dir` must be a path or None. Received: data_dir={data_dir!r}")
    if image_size is not None:
        check_int("image_size", image_size, low=1)
    check_validation_split(validation_split)
    if augment is not None and not isinstance(augment, bool):
        raise ValueError(f"`augment` must be None, True or False. Received: augment={augment!r}")
    if name == "cifar10":
        return cifar10_on_disk(data_dir, image_size or DEFAULT_IMAGE_SIZE[name], validation_split, augment is not False)
    if name == "imagenet2012":
        return imagenet_source(data_dir, image_size or DEFAULT_IMAGE_SIZE[name], validation_split, augment is not False)
    if name == "digits":
        return digits_source(image_size or DEFAULT_IMAGE_SIZE[name], validation_split, bool(augment))
    path = os.path.expanduser(name)
    if path.endswith(".npz"):
        return npz_source(path, image_size, validation_split, bool(augment))
    if tf.io.gfile.isdir(path):
        return folder_source(path, image_size or FOLDER_IMAGE_SIZE, validation_split, augment is not False)
    if os.sep in name or "/" in name or name.startswith((".", "~")):
        raise DatasetNotFoundError(
            f"no directory at {path!r}: pass a directory of class folders, an .npz file, "
            f"or one of {DATASETS}"
        )
    raise ValueError(
        f"Unknown dataset {name!r}. Allowed: {', '.join(DATASETS)}, a path to an .npz "
        "file holding x_train, y_train, x_test, y_test, or a directory of class folders"
    )


def cifar10_on_disk(data_dir, image_size, validation_split=0.0, augment=True):
    """The `Source` of CIFAR-10 from whatever is on disk, in the module docstring's order.

    Raises:
        DatasetNotFoundError: none of the formats is there; one line listing the ways to
            provide CIFAR-10.
        DataError: the files found are unusable (one line naming the file).

    Example:

    >>> import pickle
    >>> import numpy as np
    >>> os.makedirs("downloads/cifar-10-batches-py", exist_ok=True)
    >>> for name in (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE):
    ...     with open(f"downloads/cifar-10-batches-py/{name}", "wb") as file:
    ...         pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}, file)
    >>> cifar10_on_disk("downloads", 32).info[:4]
    (10, (32, 32, 3), 10, 2)
    >>> os.makedirs("nothing_here", exist_ok=True)
    >>> os.environ["KERAS_HOME"] = "nothing_here"
    >>> try:
    ...     cifar10_on_disk("nothing_here", 32)
    ... except DatasetNotFoundError as error:
    ...     print(str(error).split(": ")[0])
    cifar10 is not prepared under nothing_here and no CIFAR-10 python version or image folder is in nothing_here, nothing_here/cifar-10-batches-py or Keras's cache nothing_here/datasets
    >>> del os.environ["KERAS_HOME"]
    """
    try:
        return cifar10_source(data_dir, image_size, validation_split, augment)
    except TfdsNotPreparedError as error:
        tfds_root = error.root
    if data_dir is not None:
        data_dir = os.fspath(data_dir)
        batches = batches_dir_in(data_dir)
        if batches is not None:
            logging.info("cifar10: reading the python version in %s", batches)
            return cifar10_batches_source(batches, image_size, validation_split, augment)
        if _holds_class_folders(data_dir):
            logging.info("cifar10: reading the image folder %s", data_dir)
            return _cifar10_folder(data_dir, image_size, validation_split, augment)
    batches = keras_batches_dir()
    if batches is not None:
        logging.info("cifar10: reading the python version in Keras's cache, %s", batches)
        return cifar10_batches_source(batches, image_size, validation_split, augment)
    keras_datasets = os.path.dirname(keras_cache_dirs()[0])
    looked = f"{data_dir}, {os.path.join(data_dir, CIFAR10_BATCHES_DIR)} or " if data_dir else ""
    raise DatasetNotFoundError(
        f"cifar10 is not prepared under {tfds_root} and no CIFAR-10 python version or image "
        f"folder is in {looked}Keras's cache {keras_datasets}: run `tfds build cifar10 "
        "--data_dir=DIR` on a machine with internet access, copy DIR here and pass "
        "--data_dir=DIR; or extract cifar-10-python.tar.gz (the python version, "
        f"{CIFAR10_BATCHES_DIR}/ with data_batch_1 .. data_batch_5 and test_batch) into "
        f"{keras_datasets} or into --data_dir=DIR; or pass a folder of class folders as "
        "--dataset=PATH or --data_dir=PATH; or an .npz file holding x_train, y_train, "
        "x_test, y_test as --dataset=FILE.npz; or use --dataset=digits to train offline"
    )


def _holds_class_folders(directory):
    """Whether some subfolder of `directory` holds an image file (at any depth; hidden
    files aside)."""
    if not tf.io.gfile.isdir(directory):
        return False
    for name in tf.io.gfile.listdir(directory):
        folder = os.path.join(directory, name.rstrip("/"))
        if not name.startswith(".") and tf.io.gfile.isdir(folder):
            for _, _, files in tf.io.gfile.walk(folder):
                if any(
                    not file.startswith(".") and file.lower().endswith(FOLDER_IMAGE_FORMATS)
                    for file in files
                ):
                    return True
    return False


def _cifar10_folder(path, image_size, validation_split, augment):
    """An image folder read as CIFAR-10: 10 classes, the CIFAR-10 channel statistics."""
    source = folder_source(path, image_size, validation_split, augment)
    if source.info.num_classes != CIFAR10_CLASSES:
        raise DataError(
            f"{path} holds {source.info.num_classes} class folders but cifar10 has "
            f"{CIFAR10_CLASSES}: pass it as --dataset={path} to train on its own classes"
        )
    return dataclasses.replace(
        source,
        info=source.info._replace(channel_mean=scaled(CIFAR10_MEAN), channel_std=scaled(CIFAR10_STD)),
    )
