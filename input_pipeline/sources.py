"""A data set name (or path) to its `Source`: the TFDS names, digits, .npz files, folders."""

import os
from types import MappingProxyType

import tensorflow as tf

from input_pipeline.array_sources import digits_source, npz_source
from input_pipeline.checks import check_int, check_validation_split
from input_pipeline.folder_source import FOLDER_IMAGE_SIZE, folder_source
from input_pipeline.source import DatasetNotFoundError
from input_pipeline.tfds_sources import cifar10_source, imagenet_source

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
        return cifar10_source(data_dir, image_size or DEFAULT_IMAGE_SIZE[name], validation_split, augment is not False)
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
