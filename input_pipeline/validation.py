"""Checks of in-memory data before anything is trained or written: one clear line per problem.

`read_npz` loads an .npz file without ever unpickling (`allow_pickle=False`) and turns
an unreadable file (empty, truncated, not an .npz, object arrays) into a `DataError`.
`check_images` and `check_labels` refuse arrays a network cannot train on (wrong shape,
empty images, non-finite values, non-integer or negative labels); `check_classes`
refuses a single class or more classes than training examples (a stray label like 1e9)
and warns, with the label histogram, when some classes have no training example (a
typo like 50 in a 4-class set).
"""

import zipfile
import zlib

import numpy as np
import tensorflow as tf
from absl import logging

from input_pipeline.source import DataError

HISTOGRAM_ENTRIES = 20  # label counts shown in a warning


def read_npz(path, keys):
    """The arrays `keys` of the .npz file `path`, as a dict; never unpickles.

    Raises:
        DataError: the file is not a readable .npz (empty, truncated, an .npy or
            pickle, object arrays) or lacks some of `keys`.

    Example:

    >>> np.savez("pair.npz", a=np.arange(3), b=np.zeros(2))
    >>> read_npz("pair.npz", ("a",))
    {'a': array([0, 1, 2])}
    >>> with open("empty.npz", "wb"):
    ...     pass
    >>> try:
    ...     read_npz("empty.npz", ("a",))
    ... except DataError as error:
    ...     print(error)
    empty.npz is not a readable .npz file (it is empty): write it with numpy.savez
    """
    if tf.io.gfile.stat(path).length == 0:
        raise DataError(f"{path} is not a readable .npz file (it is empty): write it with numpy.savez")
    try:
        with tf.io.gfile.GFile(path, "rb") as file:
            arrays = np.load(file, allow_pickle=False)
            if not isinstance(arrays, np.lib.npyio.NpzFile):
                raise DataError(
                    f"{path} is not a readable .npz file (it holds one array, as numpy.save "
                    "writes): write it with numpy.savez"
                )
            with arrays:
                missing = [key for key in keys if key not in arrays.files]
                if missing:
                    raise DataError(
                        f"{path} lacks {', '.join(missing)}: an .npz data set must hold "
                        f"{', '.join(keys)}; it holds {', '.join(arrays.files) or 'nothing'}"
                    )
                return {key: arrays[key] for key in keys}
    except DataError:
        raise
    except ValueError:  # pickled data or object arrays: refused by allow_pickle=False
        raise DataError(
            f"{path} is not a readable .npz file (it holds pickled data or object arrays, "
            "which are never loaded): write numeric arrays with numpy.savez"
        ) from None
    except (EOFError, OSError, zipfile.BadZipFile, zlib.error) as error:
        raise DataError(
            f"{path} is not a readable .npz file ({type(error).__name__}: {error}; "
            "truncated or not written by numpy.savez): write it again with numpy.savez"
        ) from None


def check_images(path, key, images):
    """`images` with a channel axis, refused unless usable as a split's images.

    Images must be a non-empty `(n, h, w)` or `(n, h, w, c)` array of uint8 or float,
    with positive h, w, c and only finite values.

    Raises:
        DataError: naming `path`, `key` (the split's array) and the problem.

    Example:

    >>> check_images("data.npz", "x_train", np.zeros((2, 4, 4), np.uint8)).shape
    (2, 4, 4, 1)
    >>> try:
    ...     check_images("data.npz", "x_test", np.array([[[np.inf]]]))
    ... except DataError as error:
    ...     print(error)
    data.npz: x_test holds 1 non-finite values (NaN or infinity); replace or drop the images that hold them
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., np.newaxis]
    if images.ndim != 4 or len(images) == 0:
        raise DataError(
            f"{path}: {key} images must be a non-empty (n, h, w) or (n, h, w, c) array. "
            f"Received shape {images.shape}"
        )
    if 0 in images.shape[1:]:
        raise DataError(
            f"{path}: {key} images have a zero-size side (shape {images.shape}); "
            "images need height, width and channels >= 1"
        )
    if images.dtype != np.uint8 and not np.issubdtype(images.dtype, np.floating):
        raise DataError(f"{path}: {key} images must be uint8 or float. Received dtype {images.dtype}")
    if images.dtype != np.uint8:
        bad = images.size - int(np.count_nonzero(np.isfinite(images)))
        if bad:
            raise DataError(
                f"{path}: {key} holds {bad} non-finite values (NaN or infinity); replace or "
                "drop the images that hold them"
            )
    return images


def check_labels(path, key, labels, num_images):
    """`labels` as int32 `(n,)`, refused unless one non-negative integer per image.

    `(n, 1)` labels are flattened; one-hot or float labels are refused.

    Raises:
        DataError: naming `path`, `key` (the split's array) and the problem.

    Example:

    >>> check_labels("data.npz", "y_train", [[1], [0]], num_images=2)
    array([1, 0], dtype=int32)
    >>> try:
    ...     check_labels("data.npz", "y_train", [0.5, 1.0], num_images=2)
    ... except DataError as error:
    ...     print(error)
    data.npz: y_train labels must be 2 non-negative integers, one per image. Received shape (2,), dtype float64
    """
    labels = np.asarray(labels)
    if labels.ndim == 2:
        labels = labels.reshape(-1)
    if labels.shape != (num_images,) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{path}: {key} labels must be {num_images} non-negative integers, one per image. "
            f"Received shape {labels.shape}, dtype {labels.dtype}"
        )
    if labels.min() < 0:
        raise DataError(
            f"{path}: {key} holds the negative label {labels.min()}; labels must be "
            "0 .. number of classes - 1"
        )
    if labels.max() > np.iinfo(np.int32).max:
        raise DataError(f"{path}: {key} holds the label {labels.max()}, more than an int32 holds")
    return labels.astype(np.int32)


def check_classes(path, train_labels, test_labels):
    """The number of classes, max label + 1, once the labels are checked as a whole.

    Raises:
        DataError: the training labels hold one class only, or imply more classes than
            there are training examples (a stray label such as 1e9).

    Logs a warning with the training labels' histogram when some of the classes
    0 .. max label have no training example (a typo such as 50 in a 4-class set).

    Example:

    >>> check_classes("data.npz", np.array([0, 1, 1, 2]), np.array([2, 0]))
    3
    >>> try:
    ...     check_classes("data.npz", np.array([0, 1_000_000_000]), np.array([0]))
    ... except DataError as error:
    ...     print(error)
    data.npz: the labels imply 1000000001 classes (labels 0 .. 1000000000) but there are only 2 training examples; labels must be 0 .. number of classes - 1
    """
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    if num_classes > len(train_labels):
        raise DataError(
            f"{path}: the labels imply {num_classes} classes (labels 0 .. {num_classes - 1}) "
            f"but there are only {len(train_labels)} training examples; labels must be "
            "0 .. number of classes - 1"
        )
    counts = np.bincount(train_labels, minlength=num_classes)
    present = np.flatnonzero(counts)
    if len(present) < 2:
        raise DataError(
            f"{path}: every training label is {present[0]}; a classifier needs at least 2 classes"
        )
    missing = sorted(set(range(num_classes)) - set(present.tolist()))
    if missing:
        histogram = {int(label): int(counts[label]) for label in present}
        shown = dict(list(histogram.items())[:HISTOGRAM_ENTRIES])
        more = "" if len(shown) == len(histogram) else f" and {len(histogram) - len(shown)} more"
        logging.warning(
            "%s: %d of the %d classes (labels 0 .. %d) have no training example: %s. "
            "Training label counts: %s%s. A typo in the labels?",
            path,
            len(missing),
            num_classes,
            num_classes - 1,
            _ranges(missing),
            shown,
            more,
        )
    return num_classes


def _ranges(values):
    """'1, 4 .. 7' for [1, 4, 5, 6, 7] (sorted ints)."""
    parts, start = [], None
    for i, value in enumerate(values):
        if start is None:
            start = value
        if i + 1 == len(values) or values[i + 1] != value + 1:
            parts.append(str(start) if start == value else f"{start} .. {value}")
            start = None
    return ", ".join(parts)
