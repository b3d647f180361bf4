"""Holding out part of a training split for validation: how many, and which.

The held-out examples are fixed by the data set and the fraction alone (not by the
run's seed), so runs with different seeds monitor the same examples and a resumed run
sees the same split. In-memory sources and file lists draw them with a fixed permutation
(`holdout_indices`, so class-sorted files give every class its share on average); TFDS
splits, whose records are stored shuffled, hold out their last examples.
"""

import numpy as np

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


def holdout_indices(num_train, num_validation):
    """(training indices, validation indices) of a split of `num_train`, both sorted.

    Example:

    >>> train, validation = holdout_indices(10, 3)
    >>> len(train), len(validation), sorted([*train, *validation]) == list(range(10))
    (7, 3, True)
    """
    order = np.random.default_rng(HOLDOUT_SEED).permutation(num_train)
    return np.sort(order[num_validation:]), np.sort(order[:num_validation])
