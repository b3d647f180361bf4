"""Image folders: one folder per class, files listed as paths and decoded after sharding.

Either `train/` plus `test/` (or `val/`, `validation/`), each holding one folder per
class, or the class folders directly, in which case every 5th image in sorted order
(20% of each class) is the test set. Files (.bmp, .gif, .jpeg, .jpg, .png) are decoded
as RGB 0..255, resized to `image_size` (32) and rounded to uint8; the model normalizes
them by the ImageNet channel mean / std (`DatasetInfo.channel_mean`).

Each image is decoded once per run when the decoded images fit in memory (at most
`FOLDER_CACHE_FRACTION` of the machine's memory: CIFAR-10's 50,000 32x32 images take
154 MB), and per epoch, after shuffling and sharding, otherwise. Training images are
augmented on the fly, as the paper's CIFAR-10 runs: a random crop of the image padded by
1/8 of its side and a random horizontal flip (`preprocessing.pad_crop_flip`), unless
`augment=False`.

Before anything is decoded, every file's first bytes are checked (an empty or non-image
file is refused with its name), and a single class folder is refused.
"""

import functools
import os

import numpy as np
import tensorflow as tf

from input_pipeline.holdout import check_held_out_classes, holdout_indices, validation_size
from input_pipeline.preprocessing import IMAGENET_MEAN, IMAGENET_STD, pad_crop_flip, scaled
from input_pipeline.source import DataError, DatasetInfo, DatasetNotFoundError, Source

FOLDER_IMAGE_SIZE = 32
FOLDER_TEST_EVERY = 5
FOLDER_TEST_NAMES = ("test", "val", "validation")
FOLDER_IMAGE_FORMATS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
# The first bytes of the files tf.io.decode_image reads: PNG, JPEG, GIF, BMP.
IMAGE_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM")
FOLDER_CACHE_FRACTION = 0.25  # of the machine's memory, for the decoded uint8 images


def folder_source(path, image_size, validation_split=0.0, augment=True):
    """Class folders: (image, label) pairs, decoded once and kept in memory when they fit.

    `augment`: random pad-crop and flip of the training images (`pad_crop_flip`).

    Example:

    >>> import os
    >>> for name in ("cat", "dog"):
    ...     os.makedirs(os.path.join("pets", name))
    ...     for i in range(5):
    ...         _ = tf.io.write_file(f"pets/{name}/{i}.png", tf.io.encode_png(tf.zeros((8, 8, 3), tf.uint8)))
    >>> folder_source("pets", 16).info[:4]  # every 5th image of each class: test
    (2, (16, 16, 3), 8, 2)
    """
    train_dir = os.path.join(path, "train")
    if tf.io.gfile.isdir(train_dir):
        train_files, train_labels, class_names = _list_class_folders(train_dir)
        test_files, test_labels, _ = _list_class_folders(_test_folder(path), class_names)
    else:
        files, labels, class_names = _list_class_folders(path)
        is_test = np.arange(len(files)) % FOLDER_TEST_EVERY == FOLDER_TEST_EVERY - 1
        if not is_test.any():
            raise DataError(
                f"{path} holds {len(files)} images: a folder without train/ and test/ "
                f"subfolders needs at least {FOLDER_TEST_EVERY}, every "
                f"{FOLDER_TEST_EVERY}th going to the test set"
            )
        train_files, train_labels = files[~is_test], labels[~is_test]
        test_files, test_labels = files[is_test], labels[is_test]
    if len(class_names) < 2:
        raise DataError(
            f"{path} holds one class folder ({class_names[0]}); a classifier needs at least 2"
        )
    _check_image_files(path, [*train_files, *test_files])
    num_validation = validation_size(path, len(train_files), validation_split)
    train, held_out = holdout_indices(len(train_files), num_validation)
    check_held_out_classes(path, train_labels, train)
    splits = {
        "train": (train_files[train], train_labels[train]),
        "validation": (train_files[held_out], train_labels[held_out]),
        "test": (test_files, test_labels),
    }
    read = functools.partial(_read_image_file, image_size=image_size)
    cache = _fits_in_memory(len(train_files) + len(test_files), image_size)
    if cache:  # decoded once; `load` gives uint8 images
        load = lambda split, seed: tf.data.Dataset.from_tensor_slices(splits[split]).map(
            lambda file, label: (read(file), label), num_parallel_calls=tf.data.AUTOTUNE
        )
        decode = lambda image: image
    else:  # file names; decoded after shuffling and sharding, every epoch
        load = lambda split, seed: tf.data.Dataset.from_tensor_slices(splits[split])
        decode = read
    if augment:
        train_fn = lambda image, seed: pad_crop_flip(decode(image), seed)
    else:
        train_fn = lambda image, seed: tf.cast(decode(image), tf.float32)
    return Source(
        info=DatasetInfo(
            num_classes=len(class_names),
            input_shape=(image_size, image_size, 3),
            num_train=len(train_files) - num_validation,
            num_test=len(test_files),
            num_validation=num_validation,
            channel_mean=scaled(IMAGENET_MEAN),
            channel_std=scaled(IMAGENET_STD),
        ),
        load=load,
        train_fn=train_fn,
        test_fn=lambda image: tf.cast(decode(image), tf.float32),
        cache=cache,
        shuffle_buffer=len(train_files) - num_validation,
    )


def _fits_in_memory(num_images, image_size):
    """Whether `num_images` decoded uint8 RGB images take at most FOLDER_CACHE_FRACTION of
    the machine's memory (unknown memory: assume 4 GB)."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        memory = 4 << 30
    return num_images * image_size * image_size * 3 <= FOLDER_CACHE_FRACTION * memory


def _test_folder(path):
    for name in FOLDER_TEST_NAMES:
        candidate = os.path.join(path, name)
        if tf.io.gfile.isdir(candidate):
            return candidate
    raise DatasetNotFoundError(
        f"{path} has a train/ folder but no {'/, '.join(FOLDER_TEST_NAMES)}/ folder: "
        "add the test images in class folders there, or put the class folders directly "
        f"in {path} to hold out every {FOLDER_TEST_EVERY}th image"
    )


def _list_class_folders(directory, class_names=None):
    """Returns (file paths, int32 labels, class names) of `directory/<class>/**/<image>`.

    Classes are the sorted subfolder names (or `class_names`, to label a test folder like
    its training folder); files are in sorted order, class by class.
    """
    folders = sorted(
        name for name in tf.io.gfile.listdir(directory)
        if tf.io.gfile.isdir(os.path.join(directory, name))
    )
    folders = [name.rstrip("/") for name in folders]
    if class_names is None:
        class_names = folders
    elif not set(folders) <= set(class_names):
        raise DataError(
            f"{directory} has class folders {sorted(set(folders) - set(class_names))} that "
            f"the training folder lacks; its classes are {class_names}"
        )
    files, labels = [], []
    for name in folders:
        for root, _, names in sorted(tf.io.gfile.walk(os.path.join(directory, name))):
            images = sorted(n for n in names if n.lower().endswith(FOLDER_IMAGE_FORMATS))
            files += [os.path.join(root, n) for n in images]
            labels += [class_names.index(name)] * len(images)
    if not files:
        raise DatasetNotFoundError(
            f"no images ({', '.join(FOLDER_IMAGE_FORMATS)}) in class folders under "
            f"{directory}: put each class's images in a folder named after the class"
        )
    return np.array(files), np.array(labels, np.int32), class_names


def _check_image_files(path, files):
    """Refuses empty files and files that do not start like a PNG, JPEG, GIF or BMP image."""
    bad = []
    for file in files:
        with tf.io.gfile.GFile(file, "rb") as handle:
            head = handle.read(max(map(len, IMAGE_SIGNATURES)))
        if not head.startswith(IMAGE_SIGNATURES):
            bad.append((file, "it is empty" if not head else "not a PNG, JPEG, GIF or BMP file"))
    if bad:
        (file, why), more = bad[0], len(bad) - 1
        raise DataError(
            f"{path}: {file} is not a readable image ({why})"
            + (f", nor are {more} other files" if more else "")
            + "; remove or replace them"
        )


def _read_image_file(file, image_size):
    """Reads, decodes (as RGB) and resizes one image file: uint8 (resized values rounded)."""
    image = tf.io.decode_image(tf.io.read_file(file), channels=3, expand_animations=False)
    image.set_shape((None, None, 3))
    resized = tf.image.resize(image, (image_size, image_size))
    return tf.ensure_shape(tf.saturate_cast(tf.round(resized), tf.uint8), (image_size, image_size, 3))
