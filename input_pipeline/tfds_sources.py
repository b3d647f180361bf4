"""TFDS sources: cifar10 and imagenet2012, read from a prepared `data_dir`, never downloaded.

`data_dir` None: TFDS's own (`$TFDS_DATA_DIR` or `~/tensorflow_datasets`). When cifar10 is
not prepared there, `cifar10_source` raises `TfdsNotPreparedError`, and `sources` looks
for CIFAR-10's other formats on disk (the python version in `data_dir` or Keras's cache,
`cifar10_files`; an image folder at `data_dir`) before it gives up.

imagenet2012 is prepared on first use from `ILSVRC2012_img_train.tar` and
`ILSVRC2012_img_val.tar` in `<data_dir>/downloads/manual` (once; hours). Its JPEGs are
decoded after shuffling and sharding, only the crop (`preprocessing`).
"""

import functools
import os

import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging

from input_pipeline.holdout import validation_size
from input_pipeline.preprocessing import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    cifar10_test,
    cifar10_train,
    imagenet_test,
    imagenet_train,
    scaled,
)
from input_pipeline.source import DatasetInfo, DatasetNotFoundError, Source

IMAGENET_MANUAL_FILES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")
IMAGENET_SHUFFLE_BUFFER = 10_000


class TfdsNotPreparedError(DatasetNotFoundError):
    """A TFDS data set is not prepared under `root` (its TFDS data directory).

    Example:

    >>> os.makedirs("no_tfds", exist_ok=True)
    >>> try:
    ...     cifar10_source("no_tfds", 32)
    ... except TfdsNotPreparedError as error:
    ...     print(error.root.endswith("no_tfds"), isinstance(error, DatasetNotFoundError))
    True True
    """

    def __init__(self, message, root):
        super().__init__(message)
        self.root = root


def _tfds_builder(name, data_dir):
    """Returns the TFDS builder of prepared data, never touching the network.

    TFDS logs a warning for each version folder it finds without metadata while it looks
    for the data; what matters to the caller is whether the data are prepared, which the
    DatasetNotFoundError below says, so that search runs with absl's warnings off.
    """
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        prepared = builder.is_prepared()
    finally:
        logging.set_verbosity(verbosity)
    if prepared:
        return builder
    root = os.fspath(builder.data_dir_root)
    if name == "imagenet2012":
        _prepare_imagenet(builder, root)
        return tfds.builder(name, data_dir=data_dir)
    raise TfdsNotPreparedError(
        f"{name} is not prepared under {root}: run `tfds build {name} --data_dir=DIR` on "
        "a machine with internet access, copy DIR here and pass --data_dir=DIR, or use "
        "--dataset=digits to train offline",
        root,
    )


def _prepare_imagenet(builder, root):
    """Converts the manually downloaded ImageNet tars into TFDS records (once, hours)."""
    manual_dir = os.path.join(root, "downloads", "manual")
    missing = [
        file for file in IMAGENET_MANUAL_FILES
        if not tf.io.gfile.exists(os.path.join(manual_dir, file))
    ]
    if missing:
        raise DatasetNotFoundError(
            f"imagenet2012 is not prepared under {root} and {manual_dir} lacks "
            f"{' and '.join(missing)}: download them from https://image-net.org "
            f"(registration needed) into {manual_dir} and run again (the first run "
            "converts them), or pass the --data_dir of a prepared copy"
        )
    logging.warning("Preparing imagenet2012 from %s; this runs once and takes hours.", manual_dir)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
    )


def _tfds_info(builder, test_split, image_size, validation_split, mean, std):
    num_train = builder.info.splits["train"].num_examples
    num_validation = validation_size(builder.name, num_train, validation_split)
    return DatasetInfo(
        num_classes=builder.info.features["label"].num_classes,
        input_shape=(image_size, image_size, 3),
        num_train=num_train - num_validation,
        num_test=builder.info.splits[test_split].num_examples,
        num_validation=num_validation,
        channel_mean=scaled(mean),
        channel_std=scaled(std),
    )


def _split_names(info, test_split):
    """TFDS split names of train / validation / test: the last examples of train are held out."""
    return {
        "train": f"train[:{info.num_train}]" if info.num_validation else "train",
        "validation": f"train[{info.num_train}:]",
        "test": test_split,
    }


def cifar10_source(data_dir, image_size, validation_split=0.0, augment=True):
    """The `Source` of TFDS cifar10 prepared under `data_dir` (cached, fully shuffled).

    Raises `TfdsNotPreparedError` when it is not prepared there (`sources.cifar10_on_disk`
    then looks for the other formats).

    Example:

    >>> os.makedirs("no_tfds", exist_ok=True)
    >>> try:
    ...     cifar10_source("no_tfds", 32)
    ... except DatasetNotFoundError as error:
    ...     print(str(error).split(" under ")[0])
    cifar10 is not prepared
    """
    builder = _tfds_builder("cifar10", data_dir)
    info = _tfds_info(builder, "test", image_size, validation_split, CIFAR10_MEAN, CIFAR10_STD)
    split_names = _split_names(info, "test")

    def load(split, seed):
        del seed  # one file per split: the per-epoch shuffle does all the work
        return builder.as_dataset(split=split_names[split]).map(_image_and_label)

    return Source(
        info=info,
        load=load,
        train_fn=(
            functools.partial(cifar10_train, image_size=image_size) if augment
            else lambda image, seed: cifar10_test(image, image_size)
        ),
        test_fn=functools.partial(cifar10_test, image_size=image_size),
        cache=True,
        shuffle_buffer=info.num_train,
    )


def imagenet_source(data_dir, image_size, validation_split=0.0, augment=True):
    """The `Source` of TFDS imagenet2012, prepared under `data_dir` or from its manual tars.

    Example:

    >>> os.makedirs("no_tfds", exist_ok=True)
    >>> try:
    ...     imagenet_source("no_tfds", 224)
    ... except DatasetNotFoundError as error:
    ...     print(str(error).split(" under ")[0])
    imagenet2012 is not prepared
    """
    builder = _tfds_builder("imagenet2012", data_dir)
    info = _tfds_info(builder, "validation", image_size, validation_split, IMAGENET_MEAN, IMAGENET_STD)
    split_names = _split_names(info, "validation")

    def load(split, seed):
        examples = builder.as_dataset(
            split=split_names[split],
            shuffle_files=split == "train",
            decoders={"image": tfds.decode.SkipDecoding()},
            read_config=tfds.ReadConfig(shuffle_seed=seed),
        )
        return examples.map(_image_and_label)

    return Source(
        info=info,
        load=load,
        train_fn=(
            functools.partial(imagenet_train, image_size=image_size) if augment
            else lambda jpeg, seed: imagenet_test(jpeg, image_size)
        ),
        test_fn=functools.partial(imagenet_test, image_size=image_size),
        cache=False,
        shuffle_buffer=IMAGENET_SHUFFLE_BUFFER,
    )


def _image_and_label(example):
    return example["image"], tf.cast(example["label"], tf.int32)
