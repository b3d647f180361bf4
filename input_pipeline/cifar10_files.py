"""CIFAR-10's official python version: `cifar-10-batches-py/`, read without running its pickles.

The folder `cifar-10-batches-py/` (what `cifar-10-python.tar.gz` holds, and what
`keras.datasets.cifar10.load_data()` extracts into Keras's cache) holds `data_batch_1` ..
`data_batch_5` (the 50,000 training images) and `test_batch` (the 10,000 test images),
each a pickle of a dict: `b"data"`, a `(n, 3072)` uint8 array of channel-planar rows (1024
red, 1024 green, 1024 blue values of a 32x32 image, row by row; the same rows as n * 3072
raw bytes are read too), `b"labels"`, n ints in
0 .. 9, and `b"batch_label"` and `b"filenames"`, which are not used.

Where it is looked for (`batches_dir_in`, `keras_batches_dir`): in a given folder, which
may be `cifar-10-batches-py/` itself or its parent, and in Keras's cache, `$KERAS_HOME`
(default `~/.keras`; also `/tmp/.keras` when that is not writable, as Keras does) under
`datasets/cifar-10-batches-py` (Keras 2 and early Keras 3) or
`datasets/cifar-10-batches-py-target/cifar-10-batches-py` (recent Keras 3, 3.15 here).

The pickles are read by a restricted unpickler (`read_batch`): it refuses every global
but the numpy names an array needs (its reconstructors, limited to plain arrays of the
file's own bytes, `ndarray` only as the reconstructor's argument, `dtype`) and
`_codecs.encode` limited to latin1 text and `bytes()` without arguments (the bytes of a
protocol-2 pickle written by Python 3), so a crafted file fails with one line naming
it and never runs code. Every file is then checked: a dict with `b"data"` a non-empty
`(n, 3072)` uint8 array and `b"labels"` n integers in 0 .. 9.

The source (`cifar10_batches_source`) behaves like the TFDS one: uint8 32x32x3 images in
memory, the CIFAR-10 augmentation (pad 4 + random 32x32 crop + flip,
`preprocessing.cifar10_train`, unless `augment=False`), the CIFAR-10 channel statistics,
and `validation_split` held out by `holdout`'s fixed permutation.
"""

import functools
import io
import os
import pickle
import tempfile
from types import MappingProxyType

import numpy as np
import tensorflow as tf

from input_pipeline.holdout import held_out_splits
from input_pipeline.preprocessing import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    cifar10_test,
    cifar10_train,
    scaled,
)
from input_pipeline.source import DataError, DatasetInfo, Source

CIFAR10_BATCHES_DIR = "cifar-10-batches-py"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"
CIFAR10_CLASSES = 10
CIFAR10_ROW_BYTES = 32 * 32 * 3
# Where Keras puts it, under its cache's datasets/ folder: Keras 2 and early Keras 3 extract
# the tarball's folder there, recent Keras 3 into `cifar-10-batches-py-target/`.
KERAS_CACHE_SUBDIRS = (
    os.path.join("datasets", CIFAR10_BATCHES_DIR),
    os.path.join("datasets", "cifar-10-batches-py-target", CIFAR10_BATCHES_DIR),
)
ALLOWED_PICKLE_CONTENT = "dicts, lists, bytes, strings, numbers and numpy arrays"


class _Refused(pickle.UnpicklingError):
    """What the restricted unpickler refuses: a global, or a call it does not allow."""


class _Frozen:
    """No attribute or state can be set on it: a crafted pickle's BUILD on an allowed global
    (which would otherwise change it for every later read) is refused."""

    __slots__ = ()

    def __setattr__(self, name, value):
        raise _Refused(f"it sets the attribute {name} of an allowed global")

    def __setstate__(self, state):
        raise _Refused("it sets the state of an allowed global")


class _ArrayType(_Frozen):
    """numpy.ndarray as a batch names it: only the array reconstructor's argument."""

    __slots__ = ()

    def __call__(self, *args, **kwargs):
        raise _Refused(
            "it calls numpy.ndarray, which is accepted only as the array reconstructor's argument"
        )


class _Global(_Frozen):
    """An allowed global as the unpickler hands it out: a call of `function`, nothing else."""

    __slots__ = ("_function",)

    def __init__(self, function):
        object.__setattr__(self, "_function", function)

    def __call__(self, *args):
        return self._function(*args)


_NDARRAY = _ArrayType()  # stands for numpy.ndarray in _reconstruct_array
_RECONSTRUCT = np.zeros(0).__reduce__()[0]  # numpy's own array reconstructor


def _reconstruct_array(subtype, shape, dtype):
    """numpy's array reconstructor, limited to an empty plain array (`ndarray` is accepted
    only as this argument, never called); the array's `__setstate__` then gives it its
    shape and data, bounded by the bytes of the file."""
    if subtype is not _NDARRAY:
        raise _Refused("it calls numpy's array reconstructor on something else than numpy.ndarray")
    del shape  # numpy pickles (0,)
    return _RECONSTRUCT(np.ndarray, (0,), dtype)


def _array_from_buffer(buffer, dtype, shape, order):
    """numpy's protocol-5 array reconstructor: the array of the bytes a pickle holds."""
    if not isinstance(buffer, (bytes, bytearray, pickle.PickleBuffer)) or order not in ("C", "F"):
        raise _Refused("it calls numpy's buffer reconstructor on something else than bytes")
    return np.frombuffer(buffer, dtype=np.dtype(dtype)).reshape(shape, order=order)


def _latin1_bytes(text, encoding):
    """Bytes as a protocol-2 pickle written by Python 3 stores them: `_codecs.encode(text, "latin1")`."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused("it calls _codecs.encode on something else than latin1 text")
    return text.encode("latin1")


def _empty_bytes(*args):
    """`bytes()`, which a protocol-2 pickle written by Python 3 stores for b''."""
    if args:
        raise _Refused("it calls bytes with arguments")
    return b""


# Everything the batch files may name: numpy's array reconstructors and the bytes of
# protocol-2 pickles written by Python 3; every other global is refused.
_ALLOWED_GLOBALS = MappingProxyType({
    ("numpy.core.multiarray", "_reconstruct"): _Global(_reconstruct_array),  # numpy < 2 and Python 2
    ("numpy._core.multiarray", "_reconstruct"): _Global(_reconstruct_array),  # numpy >= 2
    ("numpy.core.numeric", "_frombuffer"): _Global(_array_from_buffer),  # pickle protocol 5
    ("numpy._core.numeric", "_frombuffer"): _Global(_array_from_buffer),
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _Global(np.dtype),
    ("_codecs", "encode"): _Global(_latin1_bytes),
    ("__builtin__", "bytes"): _Global(_empty_bytes),
})


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles the dict of one CIFAR-10 batch; refuses every other global."""

    def find_class(self, module, name):
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise _Refused(f"it refers to {module}.{name}, which is never loaded")
        return allowed


def read_batch(path):
    """The `(images, labels)` of one batch file: uint8 `(n, 32, 32, 3)`, int32 `(n,)`.

    Raises:
        DataError: the file is not a CIFAR-10 python batch (unreadable, a pickle of
            anything else than the batch's dict, a global other than numpy's array
            names, wrong shapes or labels); one line naming the file.

    Example:

    >>> import pickle
    >>> batch = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [3, 7]}
    >>> with open("data_batch_1", "wb") as file:
    ...     pickle.dump(batch, file, protocol=2)
    >>> images, labels = read_batch("data_batch_1")
    >>> images.shape, images.dtype.name, labels.tolist()
    ((2, 32, 32, 3), 'uint8', [3, 7])
    >>> class Shell:
    ...     def __reduce__(self):
    ...         return (os.system, ("echo never run",))
    >>> with open("test_batch", "wb") as file:
    ...     pickle.dump({b"data": Shell()}, file)
    >>> try:
    ...     read_batch("test_batch")
    ... except DataError as error:
    ...     print(str(error).split(";")[0])
    test_batch is not a CIFAR-10 python batch (it refers to posix.system, which is never loaded
    """
    try:
        with tf.io.gfile.GFile(path, "rb") as file:
            content = file.read()
    except (OSError, tf.errors.OpError) as error:
        raise DataError(
            f"{path} cannot be read ({type(error).__name__}: {error}); extract it again"
        ) from None
    retry = f"extract {CIFAR10_BATCHES_DIR} again from cifar-10-python.tar.gz"
    if not content:
        raise DataError(f"{path} is not a CIFAR-10 python batch (it is empty); {retry}")
    try:
        batch = _BatchUnpickler(io.BytesIO(content), encoding="bytes").load()
    except _Refused as error:
        raise DataError(
            f"{path} is not a CIFAR-10 python batch ({error}; only {ALLOWED_PICKLE_CONTENT} "
            f"are read); {retry}"
        ) from None
    except Exception as error:  # truncated or garbled: EOFError, ValueError, TypeError ...
        raise DataError(
            f"{path} is not a CIFAR-10 python batch ({type(error).__name__}: "
            f"{' '.join(str(error).split())[:200]}); {retry}"
        ) from None
    return _check_batch(path, batch, retry)


def _check_batch(path, batch, retry):
    """The images (HWC) and labels of an unpickled batch, refused unless CIFAR-10's."""
    if not isinstance(batch, dict) or not {b"data", b"labels"} <= set(batch):
        holds = type(batch).__name__
        if isinstance(batch, dict):
            holds = "the keys " + (", ".join(sorted(map(repr, batch))) or "none")
        raise DataError(
            f"{path} is not a CIFAR-10 python batch (a pickle of a dict holding b'data' and "
            f"b'labels'; it holds {holds}); {retry}"
        )
    data = batch[b"data"]
    if isinstance(data, (bytes, bytearray)) and data and len(data) % CIFAR10_ROW_BYTES == 0:
        data = np.frombuffer(data, np.uint8).reshape(-1, CIFAR10_ROW_BYTES)  # rows as raw bytes
    if (
        not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2
        or data.shape[1] != CIFAR10_ROW_BYTES or not len(data)
    ):
        got = type(data).__name__
        if isinstance(data, np.ndarray):
            got = f"{data.dtype} array of shape {data.shape}"
        raise DataError(
            f"{path}: b'data' must be a non-empty (n, {CIFAR10_ROW_BYTES}) uint8 array or n * {CIFAR10_ROW_BYTES} bytes (one "
            f"32x32 RGB image per row, channel-planar). Received a {got}; {retry}"
        )
    labels, got = _as_array(batch[b"labels"])
    if labels is not None:
        got = f"{labels.dtype} of shape {labels.shape}"
        if labels.size and np.issubdtype(labels.dtype, np.integer):
            got += f" with values {labels.min()} .. {labels.max()}"
    if (
        labels is None or labels.shape != (len(data),)
        or not np.issubdtype(labels.dtype, np.integer)
        or labels.min() < 0 or labels.max() >= CIFAR10_CLASSES
    ):
        raise DataError(
            f"{path}: b'labels' must be {len(data)} integers in 0 .. {CIFAR10_CLASSES - 1}, "
            f"one per row of b'data'. Received {got}; {retry}"
        )
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.astype(np.int32)


def _as_array(labels):
    """(labels as an array, None) or (None, what they are) when not a list of one kind."""
    if not isinstance(labels, (list, tuple, np.ndarray)):
        return None, type(labels).__name__
    try:
        return np.asarray(labels), None
    except ValueError:  # a ragged list
        return None, "a ragged list"


def batches_dir_in(directory):
    """The `cifar-10-batches-py` folder at `directory` (it or its child), or None.

    `directory` is the folder itself when it holds any of the batch files, or its parent
    when it has a `cifar-10-batches-py/` subfolder.

    Example:

    >>> os.makedirs("downloads/cifar-10-batches-py", exist_ok=True)
    >>> batches_dir_in("downloads"), batches_dir_in("downloads/cifar-10-batches-py")
    ('downloads/cifar-10-batches-py', None)
    """
    directory = os.fspath(directory)
    if any(
        tf.io.gfile.exists(os.path.join(directory, name))
        for name in (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE)
    ):
        return directory
    child = os.path.join(directory, CIFAR10_BATCHES_DIR)
    return child if tf.io.gfile.isdir(child) else None


def keras_cache_dirs():
    """The `cifar-10-batches-py` folders `keras.datasets.cifar10.load_data()` may have made.

    Keras's cache is `$KERAS_HOME`, by default `~/.keras`, and also `/tmp/.keras` when that
    is not writable (where Keras's `get_file` then writes), read from the environment at
    each call.

    Example:

    >>> os.makedirs("keras_home", exist_ok=True)
    >>> os.environ["KERAS_HOME"] = "keras_home"
    >>> keras_cache_dirs()
    ('keras_home/datasets/cifar-10-batches-py', 'keras_home/datasets/cifar-10-batches-py-target/cifar-10-batches-py')
    >>> del os.environ["KERAS_HOME"]
    """
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    homes = [home]
    if not os.access(os.path.expanduser(home), os.W_OK):  # get_file's fallback
        temp = "/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()
        homes.append(os.path.join(temp, ".keras"))
    return tuple(os.path.join(home, subdir) for home in homes for subdir in KERAS_CACHE_SUBDIRS)


def keras_batches_dir():
    """The first of `keras_cache_dirs()` that exists, or None.

    Example:

    >>> os.makedirs("empty_keras_home", exist_ok=True)
    >>> os.environ["KERAS_HOME"] = "empty_keras_home"
    >>> print(keras_batches_dir())
    None
    >>> del os.environ["KERAS_HOME"]
    """
    return next((path for path in keras_cache_dirs() if tf.io.gfile.isdir(path)), None)


def read_batches(directory):
    """`((x_train, y_train), (x_test, y_test))` of a `cifar-10-batches-py` folder, checked.

    Raises:
        DataError: a batch file is missing or is not a CIFAR-10 python batch.

    Example:

    >>> import pickle
    >>> os.makedirs("fake_cifar", exist_ok=True)
    >>> for name in (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE):
    ...     with open(os.path.join("fake_cifar", name), "wb") as file:
    ...         pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 9]}, file)
    >>> (x_train, y_train), (x_test, y_test) = read_batches("fake_cifar")
    >>> x_train.shape, x_test.shape, y_train.tolist()
    ((10, 32, 32, 3), (2, 32, 32, 3), [0, 9, 0, 9, 0, 9, 0, 9, 0, 9])
    """
    names = (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE)
    missing = [name for name in names if not tf.io.gfile.exists(os.path.join(directory, name))]
    if missing:
        raise DataError(
            f"{directory} lacks {', '.join(missing)}: the CIFAR-10 python version holds "
            f"{', '.join(names)}; extract it again from cifar-10-python.tar.gz"
        )
    train = [read_batch(os.path.join(directory, name)) for name in CIFAR10_TRAIN_FILES]
    x_test, y_test = read_batch(os.path.join(directory, CIFAR10_TEST_FILE))
    x_train = np.concatenate([images for images, _ in train])
    y_train = np.concatenate([labels for _, labels in train])
    return (x_train, y_train), (x_test, y_test)


def cifar10_batches_source(directory, image_size, validation_split=0.0, augment=True):
    """The `Source` of the CIFAR-10 python version in `directory` (a `cifar-10-batches-py`).

    Images are kept in memory as uint8 and augmented as the TFDS cifar10 (pad-crop and
    flip, unless `augment=False`); the model normalizes them by the CIFAR-10 statistics.

    Example:

    >>> import pickle
    >>> os.makedirs("tiny_cifar", exist_ok=True)
    >>> for name in (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE):
    ...     with open(os.path.join("tiny_cifar", name), "wb") as file:
    ...         pickle.dump({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 3]}, file)
    >>> cifar10_batches_source("tiny_cifar", 32, validation_split=0.1).info[:5]
    (10, (32, 32, 3), 18, 4, 2)
    """
    (x_train, y_train), (x_test, y_test) = read_batches(directory)
    splits = held_out_splits(directory, x_train, y_train, x_test, y_test, validation_split)
    del x_train  # the splits hold copies
    num_train, num_validation = len(splits["train"][0]), len(splits["validation"][0])
    test_fn = functools.partial(cifar10_test, image_size=image_size)
    return Source(
        info=DatasetInfo(
            num_classes=CIFAR10_CLASSES,
            input_shape=(image_size, image_size, 3),
            num_train=num_train,
            num_test=len(x_test),
            num_validation=num_validation,
            channel_mean=scaled(CIFAR10_MEAN),
            channel_std=scaled(CIFAR10_STD),
        ),
        load=lambda split, seed: tf.data.Dataset.from_tensor_slices(splits[split]),
        train_fn=(
            functools.partial(cifar10_train, image_size=image_size) if augment
            else lambda image, seed: test_fn(image)
        ),
        test_fn=test_fn,
        cache=True,
        shuffle_buffer=num_train,
    )
