"""tf.data input pipelines for train.py: cifar10, imagenet2012, digits, .npz files, folders.

One entry point, `make_datasets`, gives the train and test sets of any supported source
as distributed datasets; `get_dataset_info` gives the sizes a model and a schedule need;
`build_dataset` is the pipeline of one input worker, for tests and custom loops.

Sources (`name`):

- `"cifar10"`: TFDS, prepared under `data_dir`. Train: pad 4 + random 32x32 crop +
  random horizontal flip; both splits normalized by the CIFAR-10 channel mean / std.
- `"imagenet2012"`: TFDS, prepared under `data_dir`, or prepared on first use from
  `ILSVRC2012_img_train.tar` and `ILSVRC2012_img_val.tar` in `<data_dir>/downloads/manual`.
  Train: random-resized crop (area 8%-100%, aspect 3/4-4/3) to `image_size` (224) + flip.
  Test: the centre square of side 224/256 of the shorter side, resized to `image_size`
  (the same pixels as "resize the shorter side to 256, crop 224", one resize fewer).
  Both normalized by the ImageNet channel mean / std.
- `"digits"`: `slb_keras.datasets.load_digits` (packaged, offline), 32x32x3.
- a path ending in `.npz` holding `x_train`, `y_train`, `x_test`, `y_test` (images
  `(n, h, w)` or `(n, h, w, c)`, uint8 0..255 or float; integer labels).
- a directory of class folders: `train/` plus `test/` (or `val/`, `validation/`), each
  holding one folder per class; or the class folders directly, in which case every 5th
  image in sorted order (20% of each class) is the test set. Files (.bmp, .gif, .jpeg,
  .jpg, .png) are listed as paths and decoded after shuffling and sharding, resized to
  `image_size` (32).

digits and .npz sets are normalized by their own training-set channel mean / std,
folders by the ImageNet ones; they are not augmented (a flip would change a digit).

Order of operations (after tensorflow/models `dataset_factory`): read, cache (cifar10),
then per epoch shuffle + repeat + take one epoch, keep this worker's share, map
(decode / augment / normalize, AUTOTUNE), batch per replica, prefetch.

Properties a training script can rely on:

- Global batches are independent of the number of replicas and workers: the example
  stream is the same everywhere and each input pipeline keeps its slice of every global
  batch, so one device and two replicas see the same global batch at every step. The
  price: every worker reads the whole shuffled stream of raw records and decodes only its
  share, so with several workers imagenet2012 is read once per worker (decoded once).
- Data epochs match Keras epochs: epoch `e` is exactly `steps_per_epoch` global batches,
  shuffled with a seed derived from `(seed, e)`, and every random crop / flip is seeded
  by `(seed, e, position)`. Passing `initial_epoch=e` after a restart gives exactly the
  batches an uninterrupted run sees from epoch `e` on (imagenet2012 also shuffles its
  file order, which follows the process's own epochs, so there it is approximate).
- Training sets repeat forever (pass `steps_per_epoch` to `fit`), use drop_remainder,
  and have a static batch dimension; test sets are read once, in order, and keep the
  last partial batch.
"""

import dataclasses
import functools
import numbers
import os
from typing import Callable, NamedTuple

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging

from slb_keras.datasets import load_digits

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "DatasetNotFoundError",
    "build_dataset",
    "get_dataset_info",
    "make_datasets",
]

DATASETS = ("cifar10", "imagenet2012", "digits")
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR10_PAD = 4
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_MANUAL_FILES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")
IMAGENET_CENTRE_FRACTION = 224 / 256
IMAGENET_AREA_RANGE = (0.08, 1.0)
IMAGENET_ASPECT_RANGE = (3 / 4, 4 / 3)
IMAGENET_SHUFFLE_BUFFER = 10_000
DEFAULT_IMAGE_SIZE = {"cifar10": 32, "imagenet2012": 224, "digits": 32}
FOLDER_IMAGE_SIZE = 32
FOLDER_TEST_EVERY = 5
FOLDER_TEST_NAMES = ("test", "val", "validation")
FOLDER_IMAGE_FORMATS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
SPLITS = ("train", "test")


class DatasetNotFoundError(ValueError):
    """A data set's files are missing; the message says how to supply them.

    Example:

    >>> try:
    ...     get_dataset_info("/no/such/data.npz")
    ... except DatasetNotFoundError as error:
    ...     print(str(error).split(":")[0])
    no .npz file at '/no/such/data.npz'
    """


class DatasetInfo(NamedTuple):
    """What a model and a schedule need to know about a data set.

    Attributes:
        num_classes: number of labels; labels are 0 .. num_classes - 1.
        input_shape: `(height, width, channels)` of one preprocessed image.
        num_train: examples in the training split.
        num_test: examples in the test split.

    Example:

    >>> info = get_dataset_info("digits")
    >>> info.num_classes, info.input_shape, info.steps_per_epoch(100)
    (10, (32, 32, 3), 14)
    """

    num_classes: int
    input_shape: tuple
    num_train: int
    num_test: int

    def steps_per_epoch(self, global_batch_size):
        """Returns the full global batches in one pass over the training split.

        Args:
            global_batch_size: examples per step over all replicas.

        Returns:
            `num_train // global_batch_size`, the default epoch length of the training
            pipeline (the last partial batch of each epoch is dropped).

        Raises:
            ValueError: `global_batch_size` is larger than the training split.
        """
        _check_int("global_batch_size", global_batch_size, low=1)
        if global_batch_size > self.num_train:
            raise ValueError(
                f"`global_batch_size`={global_batch_size} is larger than the training "
                f"split ({self.num_train} examples); use a smaller batch size"
            )
        return self.num_train // global_batch_size


@dataclasses.dataclass(frozen=True)
class _Source:
    """One data set: its info, a reader of raw examples and its preprocessing.

    `load(training, seed)` gives unbatched `(raw_image, int32 label)` pairs of a split;
    `train_fn(raw_image, seed)` and `test_fn(raw_image)` give normalized float32 images.
    """

    info: DatasetInfo
    load: Callable
    train_fn: Callable
    test_fn: Callable
    cache: bool
    shuffle_buffer: int


def get_dataset_info(name, data_dir=None, image_size=None):
    """Returns the classes, input shape and split sizes of a data set.

    Checks that the data can be read, so a training script can call it first and fail
    before building a model.

    Args:
        name: `"cifar10"`, `"imagenet2012"`, `"digits"`, a path to an `.npz` file or a
            directory of class folders (see the module docstring).
        data_dir: TFDS data directory for cifar10 / imagenet2012 (default: TFDS's own,
            `$TFDS_DATA_DIR` or `~/tensorflow_datasets`); ignored by the other sources.
        image_size: side of the square images the pipeline produces; default 224 for
            imagenet2012, the stored height and width for .npz files, 32 otherwise.

    Returns:
        A `DatasetInfo`.

    Raises:
        DatasetNotFoundError: the data are missing; the message says how to supply them.
        ValueError: `name` is unknown or an argument is invalid.

    Example:

    >>> get_dataset_info("digits", image_size=16)
    DatasetInfo(num_classes=10, input_shape=(16, 16, 3), num_train=1438, num_test=359)
    """
    return _resolve_source(name, data_dir, image_size).info


def build_dataset(
    name,
    split,
    global_batch_size,
    *,
    data_dir=None,
    image_size=None,
    seed=0,
    input_context=None,
    initial_epoch=0,
    steps_per_epoch=None,
):
    """Returns the `tf.data` pipeline of one input worker, batched per replica.

    `make_datasets` calls this once per input pipeline; call it directly for a single
    device (`input_context=None`: batches of `global_batch_size`) or to inspect what one
    worker of a distributed run reads.

    Args:
        name: data set name or path, as in `get_dataset_info`.
        split: `"train"` (augmented, shuffled, repeated forever, full batches only) or
            `"test"` (read once in order, last batch may be partial).
        global_batch_size: examples per step over all replicas.
        data_dir: TFDS data directory, as in `get_dataset_info`.
        image_size: output image side, as in `get_dataset_info`.
        seed: non-negative int; fixes the shuffling and augmentation.
        input_context: a `tf.distribute.InputContext`, or None for one pipeline feeding
            one replica.
        initial_epoch: the epoch the training stream starts at (0-based); after a restart
            at epoch `e`, pass `e` to get the batches the uninterrupted run would see.
        steps_per_epoch: global batches per epoch; default
            `DatasetInfo.steps_per_epoch(global_batch_size)`. Pass the value given to
            `fit` so data epochs and Keras epochs coincide.

    Returns:
        A `tf.data.Dataset` of `(images, labels)`: float32 `(batch, h, w, c)` and int32
        `(batch,)`, with `batch = global_batch_size / replicas in sync`.

    Raises:
        DatasetNotFoundError: the data are missing.
        ValueError: an argument is invalid, e.g. `global_batch_size` not divisible by the
            replicas in sync.

    Example:

    >>> ds = build_dataset("digits", "train", 64, seed=1)
    >>> images, labels = next(iter(ds))
    >>> images.shape, labels.dtype.name
    (TensorShape([64, 32, 32, 3]), 'int32')
    """
    _check_split(split)
    _check_run_args(global_batch_size, seed, initial_epoch, steps_per_epoch)
    source = _resolve_source(name, data_dir, image_size)
    return _build(
        source, split, global_batch_size, seed, initial_epoch, steps_per_epoch, input_context
    )


def make_datasets(
    name,
    data_dir,
    global_batch_size,
    strategy,
    image_size=None,
    seed=0,
    *,
    initial_epoch=0,
    steps_per_epoch=None,
):
    """Returns the train and test sets of a data set, distributed over `strategy`.

    Each input pipeline is built by `build_dataset` inside
    `strategy.distribute_datasets_from_function`, with the per-replica batch
    `input_context.get_per_replica_batch_size(global_batch_size)`.

    Args:
        name: data set name or path, as in `get_dataset_info`.
        data_dir: TFDS data directory (None: TFDS's default).
        global_batch_size: examples per step over all replicas; must be divisible by
            `strategy.num_replicas_in_sync`.
        strategy: a `tf.distribute.Strategy` (`tf.distribute.get_strategy()` for the
            default single-device one).
        image_size: output image side, as in `get_dataset_info`.
        seed: non-negative int; fixes the shuffling and augmentation.
        initial_epoch: the epoch the training stream starts at, as in `build_dataset`.
        steps_per_epoch: global batches per epoch, as in `build_dataset`.

    Returns:
        `(train_ds, test_ds)`, `tf.distribute.DistributedDataset`s of `(images, labels)`;
        `train_ds` is infinite (pass `steps_per_epoch` to `fit`), `test_ds` is finite.

    Raises:
        DatasetNotFoundError: the data are missing.
        ValueError: an argument is invalid.

    Example:

    >>> strategy = tf.distribute.get_strategy()
    >>> train_ds, test_ds = make_datasets("digits", None, 100, strategy)
    >>> images, labels = next(iter(train_ds))
    >>> images.shape
    TensorShape([100, 32, 32, 3])
    """
    _check_run_args(global_batch_size, seed, initial_epoch, steps_per_epoch)
    _check_divisible(global_batch_size, strategy.num_replicas_in_sync)
    source = _resolve_source(name, data_dir, image_size)
    return tuple(
        strategy.distribute_datasets_from_function(
            functools.partial(
                _build,
                source,
                split,
                global_batch_size,
                seed,
                initial_epoch,
                steps_per_epoch,
            )
        )
        for split in SPLITS
    )


# --- argument checks -------------------------------------------------------------------


def _check_int(name, value, low):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < low:
        raise ValueError(f"`{name}` must be an int >= {low}. Received: {name}={value!r}")


def _check_split(split):
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}. Received: split={split!r}")


def _check_run_args(global_batch_size, seed, initial_epoch, steps_per_epoch):
    _check_int("global_batch_size", global_batch_size, low=1)
    _check_int("seed", seed, low=0)
    _check_int("initial_epoch", initial_epoch, low=0)
    if steps_per_epoch is not None:
        _check_int("steps_per_epoch", steps_per_epoch, low=1)


def _check_divisible(global_batch_size, num_replicas):
    if global_batch_size % num_replicas:
        raise ValueError(
            f"`global_batch_size`={global_batch_size} must be divisible by the "
            f"{num_replicas} replicas in sync"
        )


# --- resolving a name to a source ------------------------------------------------------


def _resolve_source(name, data_dir, image_size):
    if not isinstance(name, str) or not name:
        raise ValueError(f"`name` must be a non-empty string. Received: name={name!r}")
    if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
        raise ValueError(f"`data_dir` must be a path or None. Received: data_dir={data_dir!r}")
    if image_size is not None:
        _check_int("image_size", image_size, low=1)
    if name == "cifar10":
        return _cifar10_source(data_dir, image_size or DEFAULT_IMAGE_SIZE[name])
    if name == "imagenet2012":
        return _imagenet_source(data_dir, image_size or DEFAULT_IMAGE_SIZE[name])
    if name == "digits":
        return _digits_source(image_size or DEFAULT_IMAGE_SIZE[name])
    path = os.path.expanduser(name)
    if path.endswith(".npz"):
        return _npz_source(path, image_size)
    if tf.io.gfile.isdir(path):
        return _folder_source(path, image_size or FOLDER_IMAGE_SIZE)
    if os.sep in name or "/" in name or name.startswith((".", "~")):
        raise DatasetNotFoundError(
            f"no directory at {path!r}: pass a directory of class folders, an .npz file, "
            f"or one of {DATASETS}"
        )
    raise ValueError(
        f"Unknown dataset {name!r}. Allowed: {', '.join(DATASETS)}, a path to an .npz "
        "file holding x_train, y_train, x_test, y_test, or a directory of class folders"
    )


def _tfds_builder(name, data_dir):
    """Returns the TFDS builder of prepared data, never touching the network."""
    builder = tfds.builder(name, data_dir=data_dir)
    if builder.is_prepared():
        return builder
    root = os.fspath(builder.data_dir_root)
    if name == "imagenet2012":
        _prepare_imagenet(builder, root)
        return tfds.builder(name, data_dir=data_dir)
    raise DatasetNotFoundError(
        f"{name} is not prepared under {root}: run `tfds build {name} --data_dir=DIR` on "
        "a machine with internet access, copy DIR here and pass --data_dir=DIR, or use "
        "--dataset=digits to train offline"
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
    logging.info("Preparing imagenet2012 from %s; this runs once and takes hours.", manual_dir)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
    )


def _tfds_info(builder, test_split, image_size):
    return DatasetInfo(
        num_classes=builder.info.features["label"].num_classes,
        input_shape=(image_size, image_size, 3),
        num_train=builder.info.splits["train"].num_examples,
        num_test=builder.info.splits[test_split].num_examples,
    )


def _cifar10_source(data_dir, image_size):
    builder = _tfds_builder("cifar10", data_dir)
    info = _tfds_info(builder, "test", image_size)

    def load(training, seed):
        del seed  # one file per split: the per-epoch shuffle does all the work
        examples = builder.as_dataset(split="train" if training else "test")
        return examples.map(_image_and_label)

    return _Source(
        info=info,
        load=load,
        train_fn=functools.partial(_cifar10_train, image_size=image_size),
        test_fn=functools.partial(_cifar10_test, image_size=image_size),
        cache=True,
        shuffle_buffer=info.num_train,
    )


def _imagenet_source(data_dir, image_size):
    builder = _tfds_builder("imagenet2012", data_dir)
    info = _tfds_info(builder, "validation", image_size)

    def load(training, seed):
        examples = builder.as_dataset(
            split="train" if training else "validation",
            shuffle_files=training,
            decoders={"image": tfds.decode.SkipDecoding()},
            read_config=tfds.ReadConfig(shuffle_seed=seed),
        )
        return examples.map(_image_and_label)

    return _Source(
        info=info,
        load=load,
        train_fn=functools.partial(_imagenet_train, image_size=image_size),
        test_fn=functools.partial(_imagenet_test, image_size=image_size),
        cache=False,
        shuffle_buffer=IMAGENET_SHUFFLE_BUFFER,
    )


def _image_and_label(example):
    return example["image"], tf.cast(example["label"], tf.int32)


def _digits_source(image_size):
    (x_train, y_train), (x_test, y_test) = load_digits(image_size=image_size)
    return _array_source(x_train, y_train, x_test, y_test, image_size)


def _npz_source(path, image_size):
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
        return _normalize(resize(_unit_float(image)), mean, std)

    splits = {True: (x_train, y_train), False: (x_test, y_test)}
    return _Source(
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
    """Per-channel mean and std of images scaled like `_unit_float`, as float tuples."""
    scale = 255.0 if images.dtype == np.uint8 else 1.0
    channels = [images[..., c] for c in range(images.shape[-1])]
    mean = tuple(float(np.mean(c, dtype=np.float64)) / scale for c in channels)
    std = tuple(max(float(np.std(c, dtype=np.float64)) / scale, 1e-3) for c in channels)
    return mean, std


def _folder_source(path, image_size):
    """Class folders, read as (path, label) pairs and decoded after shuffling and sharding."""
    train_dir = os.path.join(path, "train")
    if tf.io.gfile.isdir(train_dir):
        train_files, train_labels, class_names = _list_class_folders(train_dir)
        test_files, test_labels, _ = _list_class_folders(_test_folder(path), class_names)
    else:
        files, labels, class_names = _list_class_folders(path)
        is_test = np.arange(len(files)) % FOLDER_TEST_EVERY == FOLDER_TEST_EVERY - 1
        if not is_test.any():
            raise ValueError(
                f"{path} holds {len(files)} images: a folder without train/ and test/ "
                f"subfolders needs at least {FOLDER_TEST_EVERY}, every "
                f"{FOLDER_TEST_EVERY}th going to the test set"
            )
        train_files, train_labels = files[~is_test], labels[~is_test]
        test_files, test_labels = files[is_test], labels[is_test]
    splits = {True: (train_files, train_labels), False: (test_files, test_labels)}
    read = functools.partial(_read_image_file, image_size=image_size)
    return _Source(
        info=DatasetInfo(
            num_classes=len(class_names),
            input_shape=(image_size, image_size, 3),
            num_train=len(train_files),
            num_test=len(test_files),
        ),
        load=lambda training, seed: tf.data.Dataset.from_tensor_slices(splits[training]),
        train_fn=lambda file, seed: read(file),
        test_fn=read,
        cache=False,
        shuffle_buffer=len(train_files),
    )


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
        raise ValueError(
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


def _read_image_file(file, image_size):
    """Reads, decodes (as RGB) and resizes one image file, normalized like ImageNet."""
    image = tf.io.decode_image(tf.io.read_file(file), channels=3, expand_animations=False)
    image = tf.image.resize(image, (image_size, image_size)) / 255.0
    return _normalize(image, IMAGENET_MEAN, IMAGENET_STD)


# --- preprocessing ---------------------------------------------------------------------


def _unit_float(image):
    """uint8 0..255 -> float32 0..1; float images are only cast."""
    if image.dtype == tf.uint8:
        return tf.cast(image, tf.float32) / 255.0
    return tf.cast(image, tf.float32)


def _normalize(image, mean, std):
    return (image - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def _resize(image, image_size):
    if image.shape[0] == image_size and image.shape[1] == image_size:
        return image
    return tf.image.resize(image, (image_size, image_size))


def _cifar10_train(image, seed, image_size):
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    image = _unit_float(image)
    image = tf.pad(image, [[CIFAR10_PAD, CIFAR10_PAD], [CIFAR10_PAD, CIFAR10_PAD], [0, 0]])
    image = tf.image.stateless_random_crop(image, (32, 32, 3), crop_seed)
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    return _normalize(_resize(image, image_size), CIFAR10_MEAN, CIFAR10_STD)


def _cifar10_test(image, image_size):
    return _normalize(_resize(_unit_float(image), image_size), CIFAR10_MEAN, CIFAR10_STD)


def _imagenet_train(jpeg, seed, image_size):
    """Random-resized crop of a JPEG, decoding only the crop, then a random flip."""
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.image.extract_jpeg_shape(jpeg),
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=crop_seed,
        min_object_covered=0.0,
        aspect_ratio_range=IMAGENET_ASPECT_RANGE,
        area_range=IMAGENET_AREA_RANGE,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    window = tf.stack([begin[0], begin[1], size[0], size[1]])
    image = tf.image.decode_and_crop_jpeg(jpeg, window, channels=3)
    image = tf.image.resize(image, (image_size, image_size)) / 255.0
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    return _normalize(image, IMAGENET_MEAN, IMAGENET_STD)


def _imagenet_test(jpeg, image_size):
    """Centre square of side 224/256 of the shorter side, resized to image_size."""
    shape = tf.image.extract_jpeg_shape(jpeg)
    height, width = shape[0], shape[1]
    shorter = tf.cast(tf.minimum(height, width), tf.float32)
    side = tf.maximum(tf.cast(shorter * IMAGENET_CENTRE_FRACTION, tf.int32), 1)
    window = tf.stack([(height - side + 1) // 2, (width - side + 1) // 2, side, side])
    image = tf.image.decode_and_crop_jpeg(jpeg, window, channels=3)
    image = tf.image.resize(image, (image_size, image_size)) / 255.0
    return _normalize(image, IMAGENET_MEAN, IMAGENET_STD)


# --- assembling one input pipeline -----------------------------------------------------


def _build(source, split, global_batch_size, seed, initial_epoch, steps_per_epoch, context):
    """One input pipeline; `make_datasets` binds all but `context` (the InputContext)."""
    pipeline_id, num_pipelines, batch_size = _placement(context, global_batch_size)
    keep_share = functools.partial(
        _keep_share,
        pipeline_id=pipeline_id,
        num_pipelines=num_pipelines,
        global_batch_size=global_batch_size,
    )
    if split == "train":
        steps = steps_per_epoch or source.info.steps_per_epoch(global_batch_size)
        stream = _train_stream(source, seed, initial_epoch, steps * global_batch_size)
        dataset = _train_batches(source, keep_share(stream), batch_size)
    else:
        dataset = _test_batches(source, keep_share, batch_size)
    options = tf.data.Options()
    options.deterministic = True
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(options)


def _train_batches(source, stream, batch_size):
    """Augments a `(key, position, raw_image, label)` stream into full batches, forever."""
    dataset = stream.map(
        lambda key, position, image, label: (
            source.train_fn(image, tf.stack([key, position])),
            label,
        ),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    dataset = dataset.batch(batch_size, drop_remainder=True)
    return dataset.apply(tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY))


def _test_batches(source, keep_share, batch_size):
    """The test split once, in order: this pipeline's share, preprocessed, batched."""
    dataset = source.load(False, 0)
    dataset = dataset.enumerate().map(lambda position, example: (0, position, *example))
    dataset = keep_share(dataset).map(
        lambda key, position, image, label: (source.test_fn(image), label),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    if source.cache:
        dataset = dataset.cache()
    return dataset.batch(batch_size)


def _placement(input_context, global_batch_size):
    """(this pipeline's id, number of pipelines, per-replica batch size)."""
    if input_context is None:
        return 0, 1, global_batch_size
    _check_divisible(global_batch_size, input_context.num_replicas_in_sync)
    return (
        input_context.input_pipeline_id,
        input_context.num_input_pipelines,
        input_context.get_per_replica_batch_size(global_batch_size),
    )


_EPOCH_GRAPH_SEED = 87654321


def _train_stream(source, seed, initial_epoch, examples_per_epoch):
    """Infinite `(key, position, raw_image, label)` stream, epoch by epoch.

    Epoch `e` shuffles (and, when it needs more examples than the split holds, reshuffles
    and repeats) the training split with a seed drawn from `(seed, e)` and takes
    `examples_per_epoch` examples; `key` (also drawn from `(seed, e)`) and `position`
    (0 .. examples_per_epoch - 1) seed each example's augmentation.
    """
    examples = source.load(True, seed)
    if source.cache:
        examples = examples.cache()

    def one_epoch(epoch):
        shuffle_seed, key = tf.unstack(
            tf.random.stateless_uniform(
                [2], seed=tf.stack([tf.constant(seed, tf.int64), epoch]),
                minval=None, maxval=None, dtype=tf.int64,
            )
        )
        # A tensor op seed trips tf.data's `(global, op) == (0, 0)` check when the global
        # seed is 0 (keras.utils.set_random_seed(0)); a fixed non-zero graph seed for this
        # function graph only makes the order a function of (seed, epoch) alone.
        tf.compat.v1.get_default_graph().seed = _EPOCH_GRAPH_SEED
        epoch_examples = examples.shuffle(source.shuffle_buffer, seed=shuffle_seed)
        epoch_examples = epoch_examples.repeat().take(examples_per_epoch)
        positions = tf.data.Dataset.range(examples_per_epoch)
        return tf.data.Dataset.zip((positions, epoch_examples)).map(
            lambda position, example: (key, position, *example)
        )

    return tf.data.Dataset.counter(initial_epoch).flat_map(one_epoch)


def _keep_share(dataset, *, pipeline_id, num_pipelines, global_batch_size):
    """Keeps this pipeline's contiguous slice of every global batch (by position)."""
    if num_pipelines == 1:
        return dataset
    share = global_batch_size // num_pipelines
    return dataset.filter(
        lambda key, position, image, label: (position % global_batch_size) // share
        == pipeline_id
    )
