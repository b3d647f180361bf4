"""Holding out part of a training split for validation: how many, and which.

The held-out examples are fixed by the data set and the fraction alone (not by the
run's seed), so runs with different seeds monitor the same examples and a resumed run
sees the same split. In-memory sources and file lists draw them with a fixed permutation
(`holdout_indices`, so class-sorted files give every class its share on average); TFDS
splits, whose records are stored shuffled, hold out their last examples.
"""

import numpy as np
from absl import logging

from input_pipeline.source import DataError

HOLDOUT_SEED = 2020  # fixed: the held-out examples do not depend on the run's seed


def validation_size(name, num_train, validation_split):
    """Examples held out of `num_train` for `validation_split` (at least 1 when > 0).

    Raises:
        DataError: the split would leave no training example.

    Example:

    >>> validation_size("digits", 1438, 0.1), validation_size("digits", 1438, 0.0)
    (144, 0)
    """
    if not validation_split:
        return 0
    size = max(1, round(num_train * validation_split))
    if size >= num_train:
        raise DataError(
            f"{name}: validation_split={validation_split} holds out {size} of its "
            f"{num_train} training examples, leaving none to train on; use a smaller fraction"
        )
    return size


def check_held_out_classes(name, labels, train_indices):
    """Refuses a holdout that leaves one class to train on; warns when it takes a class's
    every training example (a class with very few examples).

    Raises:
        DataError: the remaining training labels hold a single class.

    Example:

    >>> check_held_out_classes("data.npz", np.array([0, 1, 2]), np.array([0, 1]))  # warns: class 2
    >>> try:
    ...     check_held_out_classes("data.npz", np.array([0, 0, 1]), np.array([0, 1]))
    ... except DataError as error:
    ...     print(error)
    data.npz: the validation split leaves only class 0 to train on; use a smaller validation_split
    """
    kept = set(labels[train_indices].tolist())
    if len(kept) < 2:
        raise DataError(
            f"{name}: the validation split leaves only class {min(kept)} to train on; use a "
            "smaller validation_split"
        )
    lost = sorted(set(labels.tolist()) - kept)
    if lost:
        logging.warning(
            "%s: the validation split holds out every training example of class(es) %s; "
            "they are never trained on (use a smaller validation_split)", name, lost,
        )


def held_out_splits(name, x_train, y_train, x_test, y_test, validation_split):
    """The "train", "validation" and "test" `(examples, labels)` of a source: the fraction
    `validation_split` of the training examples held out (`validation_size`,
    `holdout_indices`), refused or warned about as in `check_held_out_classes`.

    Example:

    >>> splits = held_out_splits("data", np.arange(10), np.arange(10) % 2, np.arange(2), np.arange(2), 0.3)
    >>> {name: len(x) for name, (x, _) in splits.items()}
    {'train': 7, 'validation': 3, 'test': 2}
    """
    num_validation = validation_size(name, len(x_train), validation_split)
    train, held_out = holdout_indices(len(x_train), num_validation)
    check_held_out_classes(name, y_train, train)
    return {
        "train": (x_train[train], y_train[train]),
        "validation": (x_train[held_out], y_train[held_out]),
        "test": (x_test, y_test),
    }


def holdout_indices(num_train, num_validation):
    """(training indices, validation indices) of a split of `num_train`, both sorted.

    Example:

    >>> train, validation = holdout_indices(10, 3)
    >>> len(train), len(validation), sorted([*train, *validation]) == list(range(10))
    (7, 3, True)
    """
    order = np.random.default_rng(HOLDOUT_SEED).permutation(num_train)
    return np.sort(order[num_validation:]), np.sort(order[:num_validation])
