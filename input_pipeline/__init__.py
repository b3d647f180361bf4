"""tf.data input pipelines for train.py: cifar10, imagenet2012, digits, .npz files, folders.

One entry point, `make_datasets`, gives the train and test sets of any supported source
as distributed datasets; `get_dataset_info` gives the sizes a model and a schedule need;
`build_dataset` is the pipeline of one input worker, for tests and custom loops.

Sources (`name`):

- `"cifar10"`: read offline from whatever is on disk, in this order (`sources`): TFDS
  prepared under `data_dir` (None: TFDS's default); the official python version
  (`cifar-10-batches-py/`: `data_batch_1` .. `data_batch_5`, `test_batch`) at `data_dir`,
  that folder or its parent, its pickles read without running code (`cifar10_files`);
  an image folder of 10 class folders at `data_dir`; the python version in Keras's
  cache (`$KERAS_HOME`, default `~/.keras`, under `datasets/`, where
  `keras.datasets.cifar10.load_data()` extracts it). None there: one line says the ways
  to provide it. Train: pad 4 + random 32x32 crop + random horizontal flip; the model
  normalizes by the CIFAR-10 channel mean / std.
- `"imagenet2012"`: TFDS, prepared under `data_dir`, or prepared on first use from
  `ILSVRC2012_img_train.tar` and `ILSVRC2012_img_val.tar` in `<data_dir>/downloads/manual`.
  Train: random-resized crop (area 8%-100%, aspect 3/4-4/3) to `image_size` (224) + flip.
  Test: the centre square of side 224/256 of the shorter side, resized to `image_size`
  (the same pixels as "resize the shorter side to 256, crop 224", one resize fewer).
  Its TFDS "validation" split is the test split here; the model normalizes by the
  ImageNet channel mean / std.
- `"digits"`: `slb_keras.datasets.load_digits` (packaged, offline), 32x32x3.
- a path ending in `.npz` holding `x_train`, `y_train`, `x_test`, `y_test` (images
  `(n, h, w)` or `(n, h, w, c)`, uint8 0..255 or float; integer labels).
- a directory of class folders: `train/` plus `test/` (or `val/`, `validation/`), each
  holding one folder per class; or the class folders directly, in which case every 5th
  image in sorted order (20% of each class) is the test set. Files (.bmp, .gif, .jpeg,
  .jpg, .png) are decoded once, resized to `image_size` (32) and kept in memory as uint8
  when they fit (a quarter of the machine's memory; otherwise decoded every epoch after
  shuffling and sharding). Train: as cifar10 (a random crop of the image padded by 1/8 of
  its side + random horizontal flip).

digits and .npz sets are not augmented unless `augment=True` (a flip would change a
digit); `augment=False` turns the augmentation of the others off.

Images come out in the source's own units, as float32: 0..255 for cifar10, imagenet2012
and image files, the stored values for digits (0..1) and .npz files. Normalization is
not part of the pipeline: `DatasetInfo.channel_mean` / `channel_std` (the CIFAR-10 or
ImageNet statistics, or the training set's own for digits and .npz) go to the model's
first layer (`models.get_model(..., input_normalization=...)`), so a saved or exported
model takes images as the data source gives them.

Splits: "train", "test" and, with `validation_split` > 0, "validation": that fraction of
the training split, held out (not trained on) for monitoring. Which examples are held
out depends on the data set and the fraction only (`holdout`).

The data are checked when a source is resolved (by each public function, so
`get_dataset_info` fails before a training script writes anything): .npz files are
loaded without unpickling and refused, with one line naming the split or file, when
unreadable or when they hold non-finite values, zero-size images, non-integer or
negative labels, a single class or more classes than training examples; classes
without a training example are logged as a warning with the label histogram.

Modules (each imports only those listed before it):

- `checks`: argument checks (ValueError naming the argument and its value).
- `source`: `DatasetInfo`, the errors, the `Source` record every source family returns.
- `validation`: checks of in-memory data (readable .npz, finite images, labels).
- `holdout`: the size and choice of the validation examples held out of training.
- `preprocessing`: resizing, the seeded CIFAR-10 / ImageNet augmentations, the channel
  statistics.
- `image_headers`: the format and declared size of an image file, from its header (no
  decoding), and whether only a full decode can tell that it is whole.
- `cifar10_files`: CIFAR-10's python version (`cifar-10-batches-py/`), read by a
  restricted unpickler.
- `tfds_sources`, `array_sources`, `folder_source`: the source families.
- `sources`: a name or path to its `Source`.
- `pipeline`: the epoch stream, the sharding over input pipelines, the batches.

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
  and have a static batch dimension; validation and test sets are read once, in order,
  and keep the last partial batch.
"""

import functools

from input_pipeline.checks import (
    SPLITS,
    check_divisible,
    check_held_out,
    check_run_args,
    check_split,
)
from input_pipeline.pipeline import build
from input_pipeline.preprocessing import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD
from input_pipeline.source import DataError, DatasetInfo, DatasetNotFoundError
from input_pipeline.sources import DATASETS, resolve_source
from input_pipeline.tfds_sources import IMAGENET_MANUAL_FILES

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "DATASETS",
    "DataError",
    "IMAGENET_MANUAL_FILES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SPLITS",
    "DatasetInfo",
    "DatasetNotFoundError",
    "build_dataset",
    "get_dataset_info",
    "make_datasets",
]


def get_dataset_info(name, data_dir=None, image_size=None, validation_split=0.0, augment=None):
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
        validation_split: fraction of the training split held out for validation, in
            [0, 1); `num_train` counts the rest.
        augment: as in `build_dataset` (checked here; the sizes do not depend on it).

    Returns:
        A `DatasetInfo`.

    Raises:
        DatasetNotFoundError: the data are missing; the message says how to supply them.
        DataError: the data are unusable (an unreadable .npz or image file, non-finite
            values, a single class, bad labels); one line naming the split or file.
        ValueError: `name` is unknown or an argument is invalid.

    Example:

    >>> info = get_dataset_info("digits", image_size=16, validation_split=0.1)
    >>> info.num_classes, info.input_shape, info.num_train, info.num_validation, info.num_test
    (10, (16, 16, 3), 1294, 144, 359)
    """
    return resolve_source(name, data_dir, image_size, validation_split, augment).info



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
    validation_split=0.0,
    augment=None,
):
    """Returns the `tf.data` pipeline of one input worker, batched per replica.

    `make_datasets` calls this once per input pipeline; call it directly for a single
    device (`input_context=None`: batches of `global_batch_size`) or to inspect what one
    worker of a distributed run reads.

    Args:
        name: data set name or path, as in `get_dataset_info`.
        split: `"train"` (augmented, shuffled, repeated forever, full batches only),
            `"validation"` (the examples `validation_split` holds out of the training
            split) or `"test"`; these two are read once in order, without
            augmentation, and their last batch may be partial.
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
        validation_split: fraction of the training split held out, in [0, 1), as in
            `get_dataset_info`; pass the same value for every split of one run.
        augment: whether the training split is augmented (pad-crop and flip;
            imagenet2012: random-resized crop and flip); None: the data set's default
            (on for cifar10, imagenet2012 and image folders, off for digits and .npz).

    Returns:
        A `tf.data.Dataset` of `(images, labels)`: float32 `(batch, h, w, c)` in the
        source's units (not normalized) and int32 `(batch,)`, with
        `batch = global_batch_size / replicas in sync`.

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
    check_split(split)
    check_run_args(global_batch_size, seed, initial_epoch, steps_per_epoch)
    source = resolve_source(name, data_dir, image_size, validation_split, augment)
    check_held_out("split", split, (split,), source.info.num_validation, validation_split)
    return build(
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
    validation_split=0.0,
    splits=("train", "test"),
    augment=None,
):
    """Returns the splits of a data set (train and test), distributed over `strategy`.

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
        validation_split: fraction of the training split held out, as in `build_dataset`.
        splits: the splits to return, in this order (`"validation"` needs
            `validation_split` > 0).
        augment: as in `build_dataset`.

    Returns:
        A tuple of `tf.distribute.DistributedDataset`s of `(images, labels)`, one per
        name in `splits` (by default `(train_ds, test_ds)`); the training one is
        infinite (pass `steps_per_epoch` to `fit`), the others are finite.

    Raises:
        DatasetNotFoundError: the data are missing.
        ValueError: an argument is invalid.

    Example:

    >>> import tensorflow as tf
    >>> strategy = tf.distribute.get_strategy()
    >>> train_ds, test_ds = make_datasets("digits", None, 100, strategy)
    >>> images, labels = next(iter(train_ds))
    >>> images.shape
    TensorShape([100, 32, 32, 3])
    """
    check_run_args(global_batch_size, seed, initial_epoch, steps_per_epoch)
    check_divisible(global_batch_size, strategy.num_replicas_in_sync)
    if isinstance(splits, str) or not splits:
        raise ValueError(f"`splits` must be a non-empty tuple of split names. Received: splits={splits!r}")
    for split in splits:
        check_split(split)
    source = resolve_source(name, data_dir, image_size, validation_split, augment)
    check_held_out("splits", splits, splits, source.info.num_validation, validation_split)
    return tuple(
        strategy.distribute_datasets_from_function(
            functools.partial(
                build,
                source,
                split,
                global_batch_size,
                seed,
                initial_epoch,
                steps_per_epoch,
            )
        )
        for split in splits
    )
