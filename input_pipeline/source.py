"""What every data source provides: its `DatasetInfo` and a `Source` record; the errors.

A source family (tfds_sources, array_sources, folder_source) turns a data set name into
a `Source`; `pipeline` turns a `Source` into batches.
"""

import dataclasses
from typing import Callable, NamedTuple

from input_pipeline.checks import check_int


class DatasetNotFoundError(ValueError):
    """A data set's files are missing; the message says how to supply them.

    Example:

    >>> from input_pipeline import get_dataset_info
    >>> try:
    ...     get_dataset_info("/no/such/data.npz")
    ... except DatasetNotFoundError as error:
    ...     print(str(error).split(":")[0])
    no .npz file at '/no/such/data.npz'
    """


class DataError(DatasetNotFoundError):
    """A data set's files exist but are unusable: unreadable, non-finite, bad labels.

    A subclass of `DatasetNotFoundError` (no usable data were found), so whatever
    handles missing data (train.py: one line, exit status 2) handles this too.

    Example:

    >>> import numpy as np
    >>> from input_pipeline import get_dataset_info
    >>> images = np.full((4, 8, 8), np.nan, np.float32)
    >>> np.savez("nan.npz", x_train=images, y_train=[0, 1, 0, 1], x_test=images, y_test=[0, 1, 0, 1])
    >>> try:
    ...     get_dataset_info("nan.npz")
    ... except DataError as error:
    ...     print(error)
    nan.npz: x_train holds 256 non-finite values (NaN or infinity); replace or drop the images that hold them
    """


class DatasetInfo(NamedTuple):
    """What a model and a schedule need to know about a data set.

    Attributes:
        num_classes: number of labels; labels are 0 .. num_classes - 1.
        input_shape: `(height, width, channels)` of one preprocessed image.
        num_train: examples in the training split (without the held-out ones).
        num_test: examples in the test split.
        num_validation: examples held out of the training split for validation.
        channel_mean, channel_std: per-channel mean and standard deviation of the images
            in the units the pipeline gives them (the source's own: 0..255 for cifar10,
            imagenet2012 and image files; the stored values for digits and .npz); a
            model normalizes its input by them (`models.get_model(...,
            input_normalization=(info.channel_mean, info.channel_std))`). None: unknown.
        class_sizes: {split: [examples of class 0, class 1, ...]} for "train",
            "validation" and "test" (image folders), or None where not counted.

    Example:

    >>> from input_pipeline import get_dataset_info
    >>> info = get_dataset_info("digits")
    >>> info.num_classes, info.input_shape, info.steps_per_epoch(100)
    (10, (32, 32, 3), 14)
    >>> [round(mean, 3) for mean in info.channel_mean]
    [0.305, 0.305, 0.305]
    """

    num_classes: int
    input_shape: tuple
    num_train: int
    num_test: int
    num_validation: int = 0
    channel_mean: tuple = None
    channel_std: tuple = None
    class_sizes: dict = None

    def __repr__(self):
        """The fields, `class_sizes` only where counted."""
        fields = self._asdict()
        if fields["class_sizes"] is None:
            del fields["class_sizes"]
        return f"DatasetInfo({', '.join(f'{k}={v!r}' for k, v in fields.items())})"

    def steps_per_epoch(self, global_batch_size):
        """Returns the full global batches in one pass over the training split.

        Args:
            global_batch_size: examples per step over all replicas.

        Returns:
            `num_train // global_batch_size`, the default epoch length of the training
            pipeline (the last partial batch of each epoch is dropped).

        Raises:
            ValueError: `global_batch_size` is larger than the training split.

        Example:

        >>> DatasetInfo(10, (32, 32, 3), num_train=1000, num_test=100).steps_per_epoch(300)
        3
        """
        check_int("global_batch_size", global_batch_size, low=1)
        if global_batch_size > self.num_train:
            raise ValueError(
                f"`global_batch_size`={global_batch_size} is larger than the training "
                f"split ({self.num_train} examples); use a smaller batch size"
            )
        return self.num_train // global_batch_size


@dataclasses.dataclass(frozen=True)
class Source:
    """One data set: its info, a reader of raw examples and its preprocessing.

    `load(split, seed)` gives the unbatched `(raw_image, int32 label)` pairs of a split
    ("train", "validation" or "test"); `train_fn(raw_image, seed)` (augmenting) and
    `test_fn(raw_image)` give float32 images in the source's units (not normalized).
    `cache`: keep the raw examples in memory after the first epoch; `shuffle_buffer`:
    examples in the per-epoch shuffle buffer.

    Example:

    >>> import tensorflow as tf
    >>> source = Source(
    ...     info=DatasetInfo(2, (1, 1, 1), num_train=2, num_test=1),
    ...     load=lambda split, seed: tf.data.Dataset.from_tensor_slices(
    ...         (tf.zeros((2, 1, 1, 1)), tf.constant([0, 1]))
    ...     ),
    ...     train_fn=lambda image, seed: image,
    ...     test_fn=lambda image: image,
    ...     cache=False,
    ...     shuffle_buffer=2,
    ... )
    >>> [int(label) for _, label in source.load("train", 0)]
    [0, 1]
    """

    info: DatasetInfo
    load: Callable
    train_fn: Callable
    test_fn: Callable
    cache: bool
    shuffle_buffer: int
