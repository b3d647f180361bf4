"""Image folders: one folder per class, files listed as paths and decoded after sharding.

Either `train/` plus `test/` (or `val/`, `validation/`), each holding one folder per
class, or the class folders directly, in which case every 5th image of each class's
sorted files (positions 4, 9, 14, ... within the class: 20% of each class, and for
classes of multiples of 5 images the same files as every 5th of the whole list) is the
test set; a class of fewer than 5 images is then refused. Hidden files and folders
(".name") are skipped; symbolic links are not followed out of their class folder (see
`_list_class_folders`); class folders without images are left out with a warning, and
classes missing from test/ are named in a warning. `DatasetInfo.class_sizes` counts
each split's examples per class. Files (.bmp, .gif, .jpeg, .jpg, .png) are decoded
as RGB 0..255, resized to `image_size` (32) and rounded to uint8; the model normalizes
them by the ImageNet channel mean / std (`DatasetInfo.channel_mean`).

Each image is decoded once per run when the decoded images fit in memory (at most
`FOLDER_CACHE_FRACTION` of the machine's memory: CIFAR-10's 50,000 32x32 images take
154 MB), and per epoch, after shuffling and sharding, otherwise. Training images are
augmented on the fly, as the paper's CIFAR-10 runs: a random crop of the image padded by
1/8 of its side and a random horizontal flip (`preprocessing.pad_crop_flip`), unless
`augment=False`.

Before any training step, every file is proven decodable, cheaply (`_check_image_files`):
its header is parsed for the format and the declared size (`image_headers`: an empty or
non-image file, or an absurd declared size such as 30000x30000, is refused), and only a
file whose header or end is unusual (a truncated JPEG lacks its end marker) is decoded
to confirm; one line names the first bad file. CIFAR-10's 50,000 JPEGs take about a
second. A single class folder is refused.
"""

import functools
import os

from absl import logging

import numpy as np
import tensorflow as tf

from input_pipeline.holdout import held_out_splits
from input_pipeline.image_headers import read_header
from input_pipeline.preprocessing import IMAGENET_MEAN, IMAGENET_STD, pad_crop_flip, scaled
from input_pipeline.source import DataError, DatasetInfo, DatasetNotFoundError, Source

FOLDER_IMAGE_SIZE = 32
FOLDER_TEST_EVERY = 5
FOLDER_TEST_NAMES = ("test", "val", "validation")
FOLDER_IMAGE_FORMATS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
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
        is_test = _every_fifth_per_class(path, labels, class_names)
        train_files, train_labels = files[~is_test], labels[~is_test]
        test_files, test_labels = files[is_test], labels[is_test]
    if len(class_names) < 2:
        raise DataError(
            f"{path} holds one class folder ({class_names[0]}); a classifier needs at least 2"
        )
    _check_image_files(path, [*train_files, *test_files])
    splits = held_out_splits(path, train_files, train_labels, test_files, test_labels, validation_split)
    num_train, num_validation = len(splits["train"][0]), len(splits["validation"][0])
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
            num_train=num_train,
            num_test=len(test_files),
            num_validation=num_validation,
            channel_mean=scaled(IMAGENET_MEAN),
            channel_std=scaled(IMAGENET_STD),
            class_sizes={
                name: np.bincount(labels, minlength=len(class_names)).tolist()
                for name, (_, labels) in splits.items()
            },
        ),
        load=load,
        train_fn=train_fn,
        test_fn=lambda image: tf.cast(decode(image), tf.float32),
        cache=cache,
        shuffle_buffer=num_train,
    )


def _every_fifth_per_class(path, labels, class_names):
    """The test mask of a folder without train/ and test/: positions 4, 9, 14, ... of each
    class's sorted files (with classes of multiples of 5 files, the same files as every
    5th of the whole list). Refuses a class too small to have a test image."""
    counts = np.bincount(labels, minlength=len(class_names))
    small = [(name, int(n)) for name, n in zip(class_names, counts) if n < FOLDER_TEST_EVERY]
    if small:
        listed = ", ".join(f"{name} ({n})" for name, n in small)
        raise DataError(
            f"{path}: the classes {listed} hold fewer than {FOLDER_TEST_EVERY} images; a "
            f"folder without train/ and test/ subfolders tests every {FOLDER_TEST_EVERY}th "
            "image of each class: add images, or give train/ and test/ subfolders"
        )
    position = np.zeros(len(labels), np.int64)
    for label in range(len(class_names)):
        position[labels == label] = np.arange(counts[label])
    return position % FOLDER_TEST_EVERY == FOLDER_TEST_EVERY - 1


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
    its training folder); files are in sorted order, class by class. Hidden files and
    folders (a name starting with ".") are skipped at every level. Symbolic links are
    not followed out of their class folder: a link to a folder, a link whose target
    (after `os.path.realpath`) is outside its class folder, and a dangling link are
    refused with one line naming the link and its target; a link to a file inside the
    same class folder is read. A class folder that is itself a link must lead outside
    `directory` and to no other class's folder. Class folders without images are left
    out of the classes (a classifier output no example could teach), with a warning
    naming them; with `class_names`, the classes missing here are named in a warning.

    Example:

    >>> import os
    >>> for name in ("cat", "dog", ".ipynb_checkpoints"):
    ...     os.makedirs(os.path.join("listed", name))
    ...     _ = tf.io.write_file(f"listed/{name}/0.png", tf.io.encode_png(tf.zeros((8, 8, 3), tf.uint8)))
    >>> files, labels, names = _list_class_folders("listed")
    >>> names, labels.tolist()
    (['cat', 'dog'], [0, 1])
    """
    local = "://" not in directory
    # os.listdir locally: it hands a name that is not UTF-8 over (surrogate-escaped) for
    # _check_utf8 to name, where tf.io.gfile.listdir raises a UnicodeDecodeError.
    names = os.listdir(directory) if local else tf.io.gfile.listdir(directory)
    _check_utf8(directory, names)
    listed = sorted(
        name.rstrip("/") for name in names
        if not name.startswith(".") and tf.io.gfile.isdir(os.path.join(directory, name))
    )
    if local:
        _check_class_links(directory, listed)
    per_class = {name: _class_images(os.path.join(directory, name), local) for name in listed}
    empty = [name for name in listed if not per_class[name]]
    if empty:
        logging.warning(
            "%s: class folders without images (%s) are left out of the classes",
            directory, ", ".join(empty),
        )
    folders = [name for name in listed if per_class[name]]
    if class_names is not None and not set(folders) <= set(class_names):
        raise DataError(
            f"{directory} has images of the classes {sorted(set(folders) - set(class_names))} "
            f"that the training folder has none of; its classes are {class_names}"
        )
    if class_names is None:
        class_names = folders
    else:
        missing = [name for name in class_names if name not in folders]
        if missing and folders:
            logging.warning(
                "%s has no images of the classes %s: they are not tested",
                directory, ", ".join(missing),
            )
    files, labels = [], []
    for name in folders:
        files += per_class[name]
        labels += [class_names.index(name)] * len(per_class[name])
    if not files:
        raise DatasetNotFoundError(
            f"no images ({', '.join(FOLDER_IMAGE_FORMATS)}) in class folders under "
            f"{directory}: put each class's images in a folder named after the class"
        )
    return np.array(files), np.array(labels, np.int32), class_names


def _check_utf8(directory, names):
    """Refuses file names that are not valid UTF-8 (TensorFlow takes paths as UTF-8)."""
    for name in names:
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise DataError(
                f"{directory}: the file name "
                f"'{os.fsencode(name).decode('utf-8', 'backslashreplace')}' is not valid "
                "UTF-8; rename it"
            ) from None


def _check_class_links(directory, names):
    """Refuses class folders that are links into `directory`, to an ancestor of it, or
    to the same folder as another class."""
    root = os.path.realpath(directory)
    seen = {}
    for name in names:
        folder = os.path.join(directory, name)
        target = os.path.realpath(folder)
        if os.path.islink(folder) and os.path.commonpath([root, target]) in (root, target):
            raise DataError(
                f"{folder} is a link to {target}, inside {directory} or above it: class "
                "folders are not read twice; replace the link by the folder it means"
            )
        if target in seen:
            raise DataError(
                f"{folder} and {seen[target]} are the same folder ({target}): each class "
                "needs its own folder"
            )
        seen[target] = folder


def _class_images(folder, local):
    """The sorted image files under one class folder (hidden ones skipped, links checked)."""
    if not local:  # gfile: no links to follow
        walk = tf.io.gfile.walk(folder)
    else:
        walk = os.walk(folder, followlinks=False)
    found = []
    top = os.path.realpath(folder)
    for root, dirs, names in walk:  # top-down: pruning `dirs` skips hidden folders
        dirs[:] = sorted(d.rstrip("/") for d in dirs if not d.startswith("."))
        relative = os.path.relpath(root, folder)
        if any(part.startswith(".") for part in relative.split(os.sep) if part != "."):
            continue
        _check_utf8(root, [*dirs, *names])
        if local:
            for d in dirs:
                if os.path.islink(os.path.join(root, d)):
                    link = os.path.join(root, d)
                    raise DataError(
                        f"{link} is a link to the folder {os.path.realpath(link)}: links to "
                        f"folders are not followed in class folders ({folder}); move or "
                        "copy the images there"
                    )
        chosen = sorted(
            n for n in names if not n.startswith(".") and n.lower().endswith(FOLDER_IMAGE_FORMATS)
        )
        for n in chosen:
            file = os.path.join(root, n)
            if local and os.path.islink(file):
                _check_file_link(file, top, folder)
            found.append((root, file))
    return [file for _, file in sorted(found)]


def _check_file_link(link, top, folder):
    """Refuses a link to a file that is dangling or leads out of its class folder."""
    target = os.path.realpath(link)
    if not os.path.exists(target):
        raise DataError(
            f"{link} is a link to {os.readlink(link)}, which does not exist; remove the "
            "link or restore its target"
        )
    if os.path.isdir(target):
        raise DataError(
            f"{link} is a link to the folder {target}: links to folders are not followed "
            f"in class folders ({folder})"
        )
    if os.path.commonpath([top, target]) != top:
        raise DataError(
            f"{link} is a link to {target}, outside its class folder {folder}: links may "
            "only point to files of the same class folder; copy the image instead"
        )


def _check_image_files(path, files):
    """Refuses, before any training, every file no decoder reads: one line naming the first.

    Each file's header is parsed (`image_headers.read_header`: empty, not a PNG, JPEG,
    GIF or BMP, a zero or absurd declared size such as 30000x30000 are refused); a file
    whose header or end looks unusual (a JPEG without its end marker, as a truncated one
    is, a PNG without IEND, an uncommon sub-format) is decoded as training will decode
    it, and refused if that fails. Common, whole files are not decoded here.
    """
    opener = open if "://" not in path else (lambda file, mode: tf.io.gfile.GFile(file, mode))
    bad, unusual = {}, []
    for i, file in enumerate(files):
        try:
            header = read_header(file, opener)
        except (OSError, tf.errors.OpError) as error:
            bad[i] = f"it cannot be read: {getattr(error, 'strerror', None) or error}"
            continue
        if header.problem:
            bad[i] = header.problem
        elif header.unusual:
            unusual.append((i, header.unusual))
    for i, why in unusual:
        failure = _decode_failure(files[i])
        if failure:
            bad[i] = f"{why}, and it does not decode: {failure}"
    if bad:
        first, more = min(bad), len(bad) - 1
        raise DataError(
            f"{path}: {files[first]} is not a readable image ({bad[first]})"
            + (f", nor are {more} other files" if more else "")
            + "; remove or replace them"
        )


def _decode_failure(file):
    """Why TensorFlow cannot decode `file` as training does (first line), or None."""
    try:
        tf.io.decode_image(tf.io.read_file(file), channels=3, expand_animations=False)
    except tf.errors.OpError as error:
        text = str(error.message).split("\n")[0]
        text = text.split("}} ")[-1].split(" [Op:")[0].strip()
        return text or type(error).__name__
    return None


def _read_image_file(file, image_size):
    """Reads, decodes (as RGB) and resizes one image file: uint8 (resized values rounded)."""
    image = tf.io.decode_image(tf.io.read_file(file), channels=3, expand_animations=False)
    image.set_shape((None, None, 3))
    resized = tf.image.resize(image, (image_size, image_size))
    return tf.ensure_shape(tf.saturate_cast(tf.round(resized), tf.uint8), (image_size, image_size, 3))
