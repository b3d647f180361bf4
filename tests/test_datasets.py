"""Tests for slb_keras.datasets: the packaged handwritten digits."""

import importlib.resources

import numpy as np
import pytest

from slb_keras.datasets import load_digits


def test_package_data_is_found_through_importlib_resources():
    resource = importlib.resources.files("slb_keras") / "data" / "digits.csv.gz"
    assert resource.is_file()


def test_default_shapes_dtypes_and_sizes():
    (x_train, y_train), (x_test, y_test) = load_digits()
    assert x_train.shape == (1438, 32, 32, 3) and x_test.shape == (359, 32, 32, 3)
    assert y_train.shape == (1438,) and y_test.shape == (359,)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int32
    assert len(x_train) + len(x_test) == 1797


def test_pixels_are_scaled_to_unit_range_and_channels_repeat():
    (x_train, _), (x_test, _) = load_digits(image_size=32, channels=3)
    for images in (x_train, x_test):
        assert images.min() == 0.0 and images.max() == 1.0
    np.testing.assert_array_equal(x_train[..., 0], x_train[..., 2])


def test_native_size_gives_the_raw_counts_over_16():
    (x_train, _), _ = load_digits(image_size=8, channels=1)
    counts = x_train * 16.0
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-5)
    assert counts.max() == 16.0


def test_upsampling_keeps_the_image_content():
    (small, _), _ = load_digits(image_size=8, channels=1)
    (large, _), _ = load_digits(image_size=32, channels=1)
    # Averaging 4x4 blocks of the (smoothing) bilinear upsampling gives back the 8x8 image.
    pooled = large.reshape(-1, 8, 4, 8, 4, 1).mean(axis=(2, 4))
    assert np.abs(pooled - small).mean() < 0.1
    assert np.corrcoef(pooled.ravel(), small.ravel())[0, 1] > 0.95


def test_labels_cover_all_ten_classes_in_both_splits():
    (_, y_train), (_, y_test) = load_digits()
    assert set(np.unique(y_train)) == set(range(10)) == set(np.unique(y_test))


def test_split_is_stratified():
    (_, y_train), (_, y_test) = load_digits(test_fraction=0.25)
    totals = np.bincount(y_train, minlength=10) + np.bincount(y_test, minlength=10)
    np.testing.assert_array_equal(np.bincount(y_test), np.round(totals * 0.25).astype(int))


def test_split_is_deterministic_and_seed_dependent():
    first = load_digits(image_size=8, channels=1, seed=3)
    again = load_digits(image_size=8, channels=1, seed=3)
    other = load_digits(image_size=8, channels=1, seed=4)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(first[1][0], other[1][0])


def test_train_and_test_are_disjoint_and_complete():
    (x_train, _), (x_test, _) = load_digits(image_size=8, channels=1)
    rows = {row.tobytes() for row in x_train.reshape(len(x_train), -1)}
    test_rows = [row.tobytes() for row in x_test.reshape(len(x_test), -1)]
    # The file has a few duplicate images, so count exact overlaps rather than expect none.
    assert sum(row in rows for row in test_rows) < 5
    assert len(x_train) + len(x_test) == 1797


def test_returned_arrays_are_fresh_copies():
    (x_train, y_train), _ = load_digits(image_size=8, channels=1)
    x_train[:] = -1.0
    y_train[:] = -1
    (x_again, y_again), _ = load_digits(image_size=8, channels=1)
    assert x_again.min() == 0.0 and y_again.min() == 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"image_size": 4}, "image_size"),
        ({"image_size": 32.0}, "image_size"),
        ({"image_size": True}, "image_size"),
        ({"channels": 2}, "channels"),
        ({"channels": "3"}, "channels"),
        ({"test_fraction": 0.0}, "test_fraction"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"test_fraction": "0.2"}, "test_fraction"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs, message):
    (name, value), = kwargs.items()
    with pytest.raises(ValueError, match=message) as error:
        load_digits(**kwargs)
    assert repr(value) in str(error.value)
