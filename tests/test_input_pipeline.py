"""Tests for input_pipeline: every source end to end, on CPU, without network.

cifar10 and imagenet2012 run through the real TFDS code paths under
`tfds.testing.mock_data`, with the TFDS metadata written to a temporary data_dir the way
TFDS recommends, so the pipeline sees prepared data sets of known sizes.
"""

import os
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import input_pipeline as ip
from slb_keras.datasets import load_digits
import tiny_run
from tiny_run import refused
from tfds_mock import write_tfds_metadata

NUM_MOCK = 24  # examples in every mocked TFDS split


# --- helpers ---------------------------------------------------------------------------


@pytest.fixture
def mock_cifar10(tmp_path):
    write_tfds_metadata(tmp_path, "cifar10", {"train": NUM_MOCK, "test": NUM_MOCK})
    with tfds.testing.mock_data(num_examples=NUM_MOCK, data_dir=os.fspath(tmp_path)):
        yield os.fspath(tmp_path)


@pytest.fixture
def mock_imagenet(tmp_path):
    write_tfds_metadata(tmp_path, "imagenet2012", {"train": NUM_MOCK, "validation": NUM_MOCK})
    with tfds.testing.mock_data(num_examples=NUM_MOCK, data_dir=os.fspath(tmp_path)):
        yield os.fspath(tmp_path)


def batches(dataset, count):
    return [(x.numpy(), y.numpy()) for x, y in dataset.take(count)]


def assert_same_batches(first, second):
    assert len(first) == len(second)
    for (x1, y1), (x2, y2) in zip(first, second):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)


def write_indexed_npz(path, num_train=40, num_test=12):
    """An .npz whose image i is the constant i (uint8), so batches reveal the order."""
    ones = np.ones((4, 4), np.uint8)
    x_train = np.arange(num_train, dtype=np.uint8)[:, None, None] * ones
    x_test = np.arange(100, 100 + num_test, dtype=np.uint8)[:, None, None] * ones
    np.savez(
        path,
        x_train=x_train,
        y_train=np.arange(num_train) % 4,
        x_test=x_test,
        y_test=np.arange(num_test) % 4,
    )
    return os.fspath(path)


def indices(images):
    """Recovers the constant value i of each image of an indexed npz (kept as stored)."""
    return np.round(images[:, 0, 0, 0]).astype(int)


def stream_indices(dataset, steps):
    return np.concatenate([indices(x) for x, _ in batches(dataset, steps)])


# --- digits ----------------------------------------------------------------------------


def test_digits_info():
    info = ip.get_dataset_info("digits")
    assert info[:5] == (10, (32, 32, 3), 1438, 359, 0)
    assert info.steps_per_epoch(100) == 14
    (x_train, _), _ = load_digits()
    np.testing.assert_allclose(info.channel_mean, x_train.mean(axis=(0, 1, 2), dtype=np.float64), rtol=1e-6)
    np.testing.assert_allclose(info.channel_std, x_train.std(axis=(0, 1, 2), dtype=np.float64), rtol=1e-6)


def test_digits_train_batches_are_load_digits_images_full_and_infinite():
    dataset = ip.build_dataset("digits", "train", 64, seed=1)
    assert dataset.cardinality() == tf.data.INFINITE_CARDINALITY
    assert dataset.element_spec[0].shape == (64, 32, 32, 3)
    x, y = next(iter(dataset))
    assert x.dtype == tf.float32 and y.dtype == tf.int32
    assert 0 <= y.numpy().min() and y.numpy().max() <= 9
    (x_train, _), _ = load_digits()
    known = {image.tobytes() for image in x_train}
    assert all(image.tobytes() in known for image in x.numpy())  # as load_digits gives them
    images = np.concatenate([x for x, _ in batches(dataset, 22)])  # one epoch
    info = ip.get_dataset_info("digits")
    np.testing.assert_allclose(images.mean(axis=(0, 1, 2)), info.channel_mean, atol=0.01)


def test_digits_test_split_is_read_once_in_order():
    dataset = ip.build_dataset("digits", "test", 100)
    labels = np.concatenate([y for _, y in batches(dataset, -1)])
    _, (_, y_test) = load_digits()
    np.testing.assert_array_equal(labels, y_test)
    assert [len(y) for _, y in batches(dataset, -1)] == [100, 100, 100, 59]


# --- epochs, seeds and restarts (indexed .npz, no augmentation) --------------------------


def test_each_epoch_is_a_new_permutation_of_the_training_split(tmp_path):
    path = write_indexed_npz(tmp_path / "data.npz")
    dataset = ip.build_dataset(path, "train", 8, seed=0)  # 40 examples: 5 steps per epoch
    order = stream_indices(dataset, 10)
    assert sorted(order[:40]) == list(range(40)) == sorted(order[40:])
    assert not np.array_equal(order[:40], order[40:])


def test_initial_epoch_resumes_the_uninterrupted_stream(tmp_path):
    path = write_indexed_npz(tmp_path / "data.npz")
    uninterrupted = stream_indices(ip.build_dataset(path, "train", 8, seed=5), 15)
    resumed = ip.build_dataset(path, "train", 8, seed=5, initial_epoch=2)
    np.testing.assert_array_equal(stream_indices(resumed, 5), uninterrupted[80:])


def test_same_seed_same_stream_other_seed_other_stream(tmp_path):
    path = write_indexed_npz(tmp_path / "data.npz")
    first = stream_indices(ip.build_dataset(path, "train", 8, seed=3), 5)
    again = stream_indices(ip.build_dataset(path, "train", 8, seed=3), 5)
    other = stream_indices(ip.build_dataset(path, "train", 8, seed=4), 5)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_long_epochs_reshuffle_and_repeat_within_the_epoch(tmp_path):
    path = write_indexed_npz(tmp_path / "data.npz")
    dataset = ip.build_dataset(path, "train", 8, steps_per_epoch=7)  # 56 > 40 examples
    epoch = stream_indices(dataset, 7)
    assert sorted(epoch[:40]) == list(range(40))
    assert set(epoch[40:]) <= set(range(40))


def test_short_epochs_take_a_fresh_shuffle_each_epoch(tmp_path):
    path = write_indexed_npz(tmp_path / "data.npz")
    dataset = ip.build_dataset(path, "train", 8, steps_per_epoch=2)
    order = stream_indices(dataset, 4)
    assert len(set(order[:16])) == 16 and not np.array_equal(order[:16], order[16:])


def test_input_pipelines_split_every_global_batch(tmp_path):
    path = write_indexed_npz(tmp_path / "data.npz")
    whole = stream_indices(ip.build_dataset(path, "train", 8, seed=2), 10)
    parts = []
    for pipeline_id in range(2):
        context = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=pipeline_id, num_replicas_in_sync=2
        )
        dataset = ip.build_dataset(path, "train", 8, seed=2, input_context=context)
        assert dataset.element_spec[0].shape[0] == 4
        parts.append(stream_indices(dataset, 10).reshape(10, 4))
    np.testing.assert_array_equal(np.concatenate(parts, axis=1).ravel(), whole)


def test_input_pipelines_split_the_test_set_without_overlap(tmp_path):
    path = write_indexed_npz(tmp_path / "data.npz", num_test=12)
    seen = []
    for pipeline_id in range(2):
        context = tf.distribute.InputContext(2, pipeline_id, 2)
        dataset = ip.build_dataset(path, "test", 8, input_context=context)
        seen.append(np.concatenate([y for _, y in batches(dataset, -1)]))
    assert sum(len(s) for s in seen) == 12
    np.testing.assert_array_equal(np.sort(np.concatenate(seen)), np.sort(np.arange(12) % 4))


def test_mirrored_strategy_splits_the_global_batch_over_replicas(mirrored_strategy):
    train_ds, test_ds = ip.make_datasets("digits", None, 32, mirrored_strategy, seed=7)
    x, y = next(iter(train_ds))
    local_x = mirrored_strategy.experimental_local_results(x)
    local_y = mirrored_strategy.experimental_local_results(y)
    assert [t.shape for t in local_x] == [(16, 32, 32, 3)] * 2
    single_x, single_y = next(iter(ip.build_dataset("digits", "train", 32, seed=7)))
    np.testing.assert_array_equal(np.concatenate(local_x), single_x)
    np.testing.assert_array_equal(np.concatenate(local_y), single_y)
    test_labels = [
        np.concatenate(mirrored_strategy.experimental_local_results(y)) for _, y in test_ds
    ]
    assert sum(len(t) for t in test_labels) == 359


def test_make_datasets_on_the_default_strategy():
    train_ds, test_ds = ip.make_datasets("digits", None, 50, tf.distribute.get_strategy())
    x, _ = next(iter(train_ds))
    assert x.shape == (50, 32, 32, 3)
    assert sum(int(y.shape[0]) for _, y in test_ds) == 359


def test_batch_size_not_divisible_by_replicas(mirrored_strategy):
    with pytest.raises(ValueError, match="global_batch_size.*5.*2 replicas"):
        ip.make_datasets("digits", None, 5, mirrored_strategy)


# --- validation split ------------------------------------------------------------------


def test_validation_split_holds_out_fixed_examples_never_trained_on(tmp_path):
    path = write_indexed_npz(tmp_path / "data.npz")  # 40 training images, image i = i
    info = ip.get_dataset_info(path, validation_split=0.25)
    assert (info.num_train, info.num_validation, info.num_test) == (30, 10, 12)
    held_out = indices(np.concatenate([x for x, _ in batches(
        ip.build_dataset(path, "validation", 4, validation_split=0.25), -1)]))
    assert len(held_out) == 10 and list(held_out) == sorted(held_out)  # once, in order
    for seed in (0, 7):  # the same examples whatever the run's seed
        train = ip.build_dataset(path, "train", 6, seed=seed, validation_split=0.25)
        trained = stream_indices(train, 10)  # two epochs
        assert sorted(set(trained)) == sorted(set(range(40)) - set(held_out))
    again = ip.build_dataset(path, "validation", 3, validation_split=0.25)
    np.testing.assert_array_equal(indices(np.concatenate([x for x, _ in batches(again, -1)])), held_out)
    # the channel statistics are those of the 30 training examples
    np.testing.assert_allclose(info.channel_mean, np.mean(sorted(set(range(40)) - set(held_out))))


def test_validation_split_of_the_digits_and_folders(tmp_path):
    info = ip.get_dataset_info("digits", validation_split=0.1)
    assert (info.num_train, info.num_validation, info.num_test) == (1294, 144, 359)
    write_class_folders(tmp_path, per_class=10)  # 8 training images per class
    info = ip.get_dataset_info(os.fspath(tmp_path), validation_split=0.25)
    assert (info.num_train, info.num_validation, info.num_test) == (18, 6, 6)
    labels = np.concatenate([y for _, y in batches(ip.build_dataset(
        os.fspath(tmp_path), "validation", 6, validation_split=0.25), -1)])
    assert len(set(labels)) > 1  # drawn across the class-sorted files, not the last class


def test_validation_split_of_cifar10_holds_out_the_last_training_examples(mock_cifar10):
    info = ip.get_dataset_info("cifar10", mock_cifar10, validation_split=0.25)
    assert (info.num_train, info.num_validation) == (NUM_MOCK - 6, 6)
    # TFDS's own slice of the last 6 (the mock makes each split name's examples)
    last = tfds.load("cifar10", split=f"train[{NUM_MOCK - 6}:]", data_dir=mock_cifar10)
    dataset = ip.build_dataset("cifar10", "validation", 4, data_dir=mock_cifar10, validation_split=0.25)
    x = np.concatenate([x for x, _ in batches(dataset, -1)])
    np.testing.assert_array_equal(x, np.stack([r["image"] for r in last.as_numpy_iterator()]).astype(np.float32))
    train_ds, validation_ds, test_ds = ip.make_datasets(
        "cifar10", mock_cifar10, 6, tf.distribute.get_strategy(),
        validation_split=0.25, splits=("train", "validation", "test"),
    )
    # (the mock gives NUM_MOCK examples for any split name: compare the examples, not counts)
    np.testing.assert_array_equal(next(iter(validation_ds))[0], x[:6])


@pytest.mark.parametrize("value", [-0.1, 1.0, "0.1", True, float("nan")])
def test_validation_split_out_of_range(value):
    with pytest.raises(ValueError, match=r"`validation_split` must be a number in \[0, 1\)"):
        ip.get_dataset_info("digits", validation_split=value)


def test_validation_split_that_takes_a_whole_class(tmp_path, caplog):
    images = np.zeros((6, 4, 4), np.uint8)
    path = os.fspath(tmp_path / "few.npz")
    # holdout_indices(6, 3) keeps a fixed half: find a labelling that loses a class
    keep, _ = ip.holdout.holdout_indices(6, 3)
    labels = np.zeros(6, np.int64)
    labels[keep[:2]] = 1  # classes 0 and 1 train; class 2 only among the held-out
    held = sorted(set(range(6)) - set(keep.tolist()))
    labels[held[0]] = 2
    np.savez(path, x_train=images, y_train=labels, x_test=images[:3], y_test=[0, 1, 2])
    with caplog.at_level("WARNING"):
        ip.get_dataset_info(path, validation_split=0.5)
    assert "holds out every training example of class(es) [2]" in caplog.text
    labels[:] = 0
    labels[held] = 1  # every example of class 1 held out: one class left to train on
    np.savez(path, x_train=images, y_train=labels, x_test=images[:3], y_test=[0, 1, 0])
    with pytest.raises(ip.DataError, match="leaves only class 0 to train on"):
        ip.get_dataset_info(path, validation_split=0.5)


def test_validation_split_that_leaves_nothing_to_train(tmp_path):
    path = write_indexed_npz(tmp_path / "data.npz", num_train=4)
    with pytest.raises(ip.DataError, match="validation_split=0.9 holds out 4 of its 4"):
        ip.get_dataset_info(path, validation_split=0.9)


def test_validation_split_is_needed_for_the_validation_split():
    with pytest.raises(ValueError, match="pass `validation_split` > 0"):
        ip.build_dataset("digits", "validation", 8)
    with pytest.raises(ValueError, match="pass `validation_split` > 0"):
        ip.make_datasets("digits", None, 8, tf.distribute.get_strategy(), splits=("validation",))


# --- .npz ------------------------------------------------------------------------------


def test_npz_uint8_info_and_normalization(tmp_path):
    path = write_indexed_npz(tmp_path / "data.npz")
    info = ip.get_dataset_info(path)
    assert info[:5] == (4, (4, 4, 1), 40, 12, 0)
    values = np.arange(40)  # image i is the constant i
    np.testing.assert_allclose([*info.channel_mean, *info.channel_std], [values.mean(), values.std()])
    x = np.concatenate([x for x, _ in batches(ip.build_dataset(path, "train", 8), 5)])
    assert x.dtype == np.float32 and sorted(indices(x)) == list(range(40))  # values as stored


def test_npz_float_images_resized(tmp_path):
    rng = np.random.default_rng(0)
    path = os.fspath(tmp_path / "float.npz")
    np.savez(
        path,
        x_train=rng.random((20, 6, 6, 3), dtype=np.float32),
        y_train=rng.integers(0, 3, (20, 1)),
        x_test=rng.random((6, 6, 6, 3), dtype=np.float32),
        y_test=np.array([0, 1, 2, 0, 1, 2]),
    )
    assert ip.get_dataset_info(path, image_size=12)[:4] == (3, (12, 12, 3), 20, 6)
    x, y = next(iter(ip.build_dataset(path, "test", 4, image_size=12)))
    assert x.shape == (4, 12, 12, 3) and y.dtype == tf.int32


def test_npz_keeps_its_own_non_square_size(tmp_path):
    path = os.fspath(tmp_path / "wide.npz")
    images = np.zeros((4, 3, 5), np.uint8)
    np.savez(path, x_train=images, y_train=[0, 1, 0, 1], x_test=images[:2], y_test=[0, 1])
    assert ip.get_dataset_info(path).input_shape == (3, 5, 1)
    x, _ = next(iter(ip.build_dataset(path, "test", 2)))
    assert x.shape == (2, 3, 5, 1)


def test_npz_missing_keys(tmp_path):
    path = os.fspath(tmp_path / "bad.npz")
    np.savez(path, x_train=np.zeros((2, 4, 4), np.uint8), y_train=np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="lacks x_test, y_test"):
        ip.get_dataset_info(path)


def test_npz_labels_must_match_images(tmp_path):
    path = os.fspath(tmp_path / "bad.npz")
    np.savez(
        path,
        x_train=np.zeros((3, 4, 4), np.uint8),
        y_train=np.zeros(2, np.int64),
        x_test=np.zeros((1, 4, 4), np.uint8),
        y_test=np.zeros(1, np.int64),
    )
    with pytest.raises(ValueError, match="3 non-negative integers"):
        ip.get_dataset_info(path)


def test_missing_npz_names_the_path(tmp_path):
    path = os.fspath(tmp_path / "absent.npz")
    with pytest.raises(ip.DatasetNotFoundError, match="absent.npz"):
        ip.get_dataset_info(path)


# --- folders of class folders ----------------------------------------------------------

COLOURS = {"cat": (200, 0, 0), "dog": (0, 200, 0), "emu": (0, 0, 200)}


def write_class_folders(root, per_class):
    for name, colour in COLOURS.items():
        os.makedirs(root / name, exist_ok=True)
        for i in range(per_class):
            image = np.broadcast_to(np.array(colour, np.uint8), (6, 5, 3))
            keras.utils.save_img(root / name / f"{i}.png", image, scale=False)


def expected_pixel(colour):
    return np.array(colour, np.float32)  # decoded RGB 0..255


def test_folder_with_train_and_val_subfolders(tmp_path):
    write_class_folders(tmp_path / "train", per_class=3)
    write_class_folders(tmp_path / "val", per_class=2)
    root = os.fspath(tmp_path)
    info = ip.get_dataset_info(root, image_size=8)
    assert info[:4] == (3, (8, 8, 3), 9, 6)
    np.testing.assert_allclose(info.channel_mean, np.array(ip.IMAGENET_MEAN) * 255)
    np.testing.assert_allclose(info.channel_std, np.array(ip.IMAGENET_STD) * 255)
    x, y = batches(ip.build_dataset(root, "test", 6, image_size=8), 1)[0]
    assert x.shape == (6, 8, 8, 3)
    np.testing.assert_array_equal(y, [0, 0, 1, 1, 2, 2])
    for image, label in zip(x, y):
        colour = list(COLOURS.values())[label]
        expected = np.broadcast_to(expected_pixel(colour), image.shape)
        np.testing.assert_allclose(image, expected, atol=1e-4)
    x, y = next(iter(ip.build_dataset(root, "train", 3, image_size=8)))
    assert x.shape == (3, 8, 8, 3)


def test_single_folder_holds_out_every_fifth_image(tmp_path):
    write_class_folders(tmp_path, per_class=5)
    root = os.fspath(tmp_path)
    assert ip.get_dataset_info(root)[:4] == (3, (32, 32, 3), 12, 3)
    test_labels = np.concatenate([y for _, y in batches(ip.build_dataset(root, "test", 2), -1)])
    np.testing.assert_array_equal(test_labels, [0, 1, 2])
    train = ip.build_dataset(root, "train", 4, seed=1)
    train_labels = np.concatenate([y for _, y in batches(train, 3)])
    np.testing.assert_array_equal(np.bincount(train_labels), [4, 4, 4])


def test_train_folder_without_test_folder(tmp_path):
    write_class_folders(tmp_path / "train", per_class=2)
    with pytest.raises(ip.DatasetNotFoundError, match="no test/, val/, validation/"):
        ip.get_dataset_info(os.fspath(tmp_path))


def test_test_folder_with_an_unknown_class(tmp_path):
    write_class_folders(tmp_path / "train", per_class=1)
    write_class_folders(tmp_path / "test", per_class=1)
    os.rename(tmp_path / "test" / "emu", tmp_path / "test" / "yak")
    with pytest.raises(ValueError, match="yak"):
        ip.get_dataset_info(os.fspath(tmp_path))


def test_folder_without_images(tmp_path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    with pytest.raises(ip.DatasetNotFoundError, match="no images"):
        ip.get_dataset_info(os.fspath(tmp_path))


def test_missing_folder_names_the_path(tmp_path):
    path = os.fspath(tmp_path / "nowhere")
    with pytest.raises(ip.DatasetNotFoundError, match="nowhere"):
        ip.get_dataset_info(path)


# --- cifar10 (TFDS, mocked) ------------------------------------------------------------


def test_cifar10_info(mock_cifar10):
    info = ip.get_dataset_info("cifar10", mock_cifar10)
    assert info[:5] == (10, (32, 32, 3), NUM_MOCK, NUM_MOCK, 0)
    np.testing.assert_allclose(info.channel_mean, np.array(ip.CIFAR10_MEAN) * 255)
    np.testing.assert_allclose(info.channel_std, np.array(ip.CIFAR10_STD) * 255)


def test_cifar10_test_split_is_the_images_in_order(mock_cifar10):
    raw = list(tfds.load("cifar10", split="test", data_dir=mock_cifar10).as_numpy_iterator())
    dataset = ip.build_dataset("cifar10", "test", 10, data_dir=mock_cifar10)
    out = batches(dataset, -1)
    assert [len(y) for _, y in out] == [10, 10, 4]
    x = np.concatenate([x for x, _ in out])
    y = np.concatenate([y for _, y in out])
    np.testing.assert_array_equal(x, np.stack([r["image"] for r in raw]).astype(np.float32))
    np.testing.assert_array_equal(y, [r["label"] for r in raw])
    assert y.dtype == np.int32 and 0 <= y.min() and y.max() < 10


def test_cifar10_train_images_are_padded_crops_or_flips_of_the_data(mock_cifar10):
    raw = tfds.load("cifar10", split="train", data_dir=mock_cifar10).as_numpy_iterator()
    raw = np.stack([r["image"] for r in raw]) / 255.0
    padded = np.pad(raw, [(0, 0), (4, 4), (4, 4), (0, 0)])
    x, _ = batches(ip.build_dataset("cifar10", "train", 8, data_dir=mock_cifar10, seed=1), 1)[0]
    unit = x / 255.0
    shifts = set()
    for image in unit:
        matches = [
            (dy, dx, flip)
            for dy in range(9)
            for dx in range(9)
            for flip in (False, True)
            if is_crop_of_any(image[:, ::-1] if flip else image, padded[:, dy:dy + 32, dx:dx + 32])
        ]
        assert matches, "a training image is not a shifted / flipped data image"
        shifts.update((dy, dx) for dy, dx, _ in matches)
    assert len(shifts) > 1  # the crop position varies


def is_crop_of_any(image, crops):
    return np.any(np.all(np.abs(crops - image) < 1e-4, axis=(1, 2, 3)))


def test_cifar10_augmentation_is_seeded(mock_cifar10):
    def stream(seed):
        return batches(ip.build_dataset("cifar10", "train", 8, data_dir=mock_cifar10, seed=seed), 3)

    first = stream(0)
    assert_same_batches(first, stream(0))
    assert not np.array_equal(first[0][0], stream(1)[0][0])


def test_cifar10_resize_and_mirrored_replicas(mock_cifar10, mirrored_strategy):
    train_ds, test_ds = ip.make_datasets(
        "cifar10", mock_cifar10, 8, mirrored_strategy, image_size=16
    )
    for dataset in (train_ds, test_ds):
        x, y = next(iter(dataset))
        local_x = mirrored_strategy.experimental_local_results(x)
        local_y = mirrored_strategy.experimental_local_results(y)
        assert [t.shape for t in local_x] == [(4, 16, 16, 3)] * 2
        assert [t.shape for t in local_y] == [(4,)] * 2


def test_cifar10_not_prepared_says_how_to_get_it(tmp_path):
    start = time.monotonic()
    with pytest.raises(ip.DatasetNotFoundError) as error:
        ip.make_datasets("cifar10", os.fspath(tmp_path), 8, tf.distribute.get_strategy())
    message = str(error.value)
    assert time.monotonic() - start < 5  # no download attempt
    assert "\n" not in message
    assert "tfds build cifar10" in message and "--dataset=digits" in message
    assert os.fspath(tmp_path) in message


# --- imagenet2012 (TFDS, mocked) -------------------------------------------------------


def test_imagenet_info(mock_imagenet):
    info = ip.get_dataset_info("imagenet2012", mock_imagenet)
    assert info[:5] == (1000, (224, 224, 3), NUM_MOCK, NUM_MOCK, 0)
    np.testing.assert_allclose(info.channel_mean, np.array(ip.IMAGENET_MEAN) * 255)


def test_imagenet_train_and_test_pipelines_end_to_end(mock_imagenet):
    low, high = 0.0, 255.0  # decoded RGB, not normalized
    for split in ("train", "test"):
        dataset = ip.build_dataset("imagenet2012", split, 8, data_dir=mock_imagenet, image_size=32)
        for x, y in batches(dataset, 3):
            assert x.shape == (8, 32, 32, 3) and x.dtype == np.float32
            assert y.dtype == np.int32 and 0 <= y.min() and y.max() < 1000
            assert np.all(x >= low - 1e-4) and np.all(x <= high + 1e-4)


def test_imagenet_augmentation_is_seeded(mock_imagenet):
    def stream(seed):
        dataset = ip.build_dataset(
            "imagenet2012", "train", 4, data_dir=mock_imagenet, image_size=16, seed=seed
        )
        return batches(dataset, 2)

    first = stream(0)
    assert_same_batches(first, stream(0))
    assert not np.array_equal(first[0][0], stream(1)[0][0])


def test_imagenet_eval_takes_the_centre_crop(tmp_path):
    # 200 x 100 red image with a green rectangle holding the centre 87 x 87 square
    # (224/256 of the shorter side); the eval image must be all green.
    image = np.zeros((200, 100, 3), np.uint8)
    image[..., 0] = 255
    image[50:150, 3:97] = (0, 255, 0)
    jpeg = tf.io.encode_jpeg(image, quality=100)

    def as_dataset(self, split, **kwargs):
        return tf.data.Dataset.from_tensors(
            {"image": jpeg, "label": tf.constant(7, tf.int64), "file_name": tf.constant("a.JPEG")}
        )

    write_tfds_metadata(tmp_path, "imagenet2012", {"train": 1, "validation": 1})
    with tfds.testing.mock_data(as_dataset_fn=as_dataset, data_dir=os.fspath(tmp_path)):
        dataset = ip.build_dataset("imagenet2012", "test", 1, image_size=24)
        (x, y), = batches(dataset, 1)
    rgb = x[0] / 255.0
    assert y[0] == 7
    np.testing.assert_allclose(rgb.mean(axis=(0, 1)), [0.0, 1.0, 0.0], atol=0.03)


def test_imagenet_not_prepared_names_the_manual_files(tmp_path):
    with pytest.raises(ip.DatasetNotFoundError) as error:
        ip.get_dataset_info("imagenet2012", os.fspath(tmp_path))
    message = str(error.value)
    manual_dir = os.path.join(os.fspath(tmp_path), "downloads", "manual")
    assert "\n" not in message and manual_dir in message
    assert "ILSVRC2012_img_train.tar" in message and "ILSVRC2012_img_val.tar" in message


def test_imagenet_is_prepared_from_the_manual_dir(tmp_path, monkeypatch):
    manual_dir = tmp_path / "downloads" / "manual"
    manual_dir.mkdir(parents=True)
    for name in ip.IMAGENET_MANUAL_FILES:
        (manual_dir / name).write_bytes(b"")
    calls = []

    def fake_prepare(self, download_config=None, **kwargs):
        calls.append(os.fspath(download_config.manual_dir))
        write_tfds_metadata(tmp_path, "imagenet2012", {"train": 5, "validation": 3})

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", fake_prepare)
    info = ip.get_dataset_info("imagenet2012", os.fspath(tmp_path), image_size=64)
    assert calls == [os.fspath(manual_dir)]
    assert info[:4] == (1000, (64, 64, 3), 5, 3)


# --- bad input -------------------------------------------------------------------------


def test_unknown_name_lists_the_allowed_ones():
    with pytest.raises(ValueError, match="Unknown dataset 'mnist'.*cifar10, imagenet2012, digits"):
        ip.get_dataset_info("mnist")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"split": "val"}, "split"),
        ({"global_batch_size": 0}, "global_batch_size"),
        ({"seed": -1}, "seed"),
        ({"initial_epoch": -1}, "initial_epoch"),
        ({"steps_per_epoch": 0}, "steps_per_epoch"),
        ({"image_size": 0}, "image_size"),
        ({"global_batch_size": 2000}, "larger than the training split"),
    ],
)
def test_bad_arguments(kwargs, message):
    args = {"split": "train", "global_batch_size": 8, **kwargs}
    with pytest.raises(ValueError, match=message):
        ip.build_dataset("digits", args.pop("split"), args.pop("global_batch_size"), **args)


def test_training_order_ignores_global_seed_including_zero():
    # keras.utils.set_random_seed(0) makes tf.data's seed check see (0, <tensor>) and fail.
    def first_labels(global_seed):
        tf.random.set_seed(global_seed)
        ds = ip.build_dataset("digits", "train", 8, seed=3)
        return next(iter(ds))[1].numpy()

    np.testing.assert_array_equal(first_labels(0), first_labels(5))


def test_docstring_examples(tmp_path, monkeypatch):
    # Every module of the input_pipeline package, in a scratch directory (some examples
    # write files).
    monkeypatch.chdir(tmp_path)
    attempted = tiny_run.package_doctests(ip)
    assert all(attempted.values()), attempted  # every module has examples


# --- bad data (issue 15): one clear line, nothing unpickled -----------------------------


def write_npz(path, **arrays):
    """A valid 4-class float .npz (40 train, 12 test 8x8 images), with `arrays` replaced."""
    return tiny_run.write_npz(path, num_train=40, num_test=12, **arrays)


def with_bad_values(shape, count, value):
    images = np.random.default_rng(1).random(shape, dtype=np.float32)
    images.reshape(-1)[:count] = value
    return images


@pytest.mark.parametrize(
    "key, value, count",
    [("x_train", np.nan, 5), ("x_test", np.inf, 3), ("x_test", -np.inf, 1)],
)
def test_non_finite_images_are_refused_naming_the_split_and_count(key, value, count, tmp_path):
    shape = (40, 8, 8) if key == "x_train" else (12, 8, 8)
    path = write_npz(tmp_path / "data.npz", **{key: with_bad_values(shape, count, value)})
    assert f"{key} holds {count} non-finite values" in refused(path)


def test_data_error_is_a_dataset_not_found_error():
    # train.py reports DatasetNotFoundError as one line with exit status 2.
    assert issubclass(ip.DataError, ip.DatasetNotFoundError)
    assert issubclass(ip.DataError, ValueError)


def test_unreadable_npz_files_are_refused(tmp_path):
    good = write_npz(tmp_path / "good.npz")
    content = open(good, "rb").read()
    cases = {
        "empty.npz": b"",
        "truncated.npz": content[: len(content) // 2],
        "random.npz": np.random.default_rng(0).bytes(4096),
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        assert "is not a readable .npz file" in refused(os.fspath(tmp_path / name)), name
    np.save(tmp_path / "single.npy", np.zeros(3))
    os.rename(tmp_path / "single.npy", tmp_path / "single.npz")
    assert "it holds one array" in refused(os.fspath(tmp_path / "single.npz"))


class _Touch:
    """Unpickling it creates a file: proof that a pickle was loaded."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickles_are_never_loaded(tmp_path):
    import pickle

    marker = tmp_path / "unpickled"
    (tmp_path / "pickle.npz").write_bytes(pickle.dumps(_Touch(os.fspath(marker))))
    objects = np.array([_Touch(os.fspath(marker))] * 40, dtype=object)
    write_npz(tmp_path / "objects.npz", y_train=objects)
    for name in ("pickle.npz", "objects.npz"):
        message = refused(os.fspath(tmp_path / name))
        assert "pickled data or object arrays, which are never loaded" in message
        assert "allow_pickle" not in message
    assert not marker.exists()


@pytest.mark.parametrize(
    "arrays, expected",
    [
        ({"x_train": np.zeros((40, 0, 0), np.float32)}, "x_train images have a zero-size side"),
        ({"x_test": np.zeros((12, 8, 8), np.int64)}, "x_test images must be uint8 or float"),
        ({"y_train": np.zeros(40, np.int64), "y_test": np.zeros(12, np.int64)}, "every training label is 0"),
        ({"y_train": np.r_[np.arange(39) % 4, 10**9]}, "imply 1000000001 classes"),
        ({"y_test": np.r_[np.arange(11) % 4, -1]}, "y_test holds the negative label -1"),
        ({"y_train": (np.arange(40) % 4).astype(np.float32)}, "y_train labels must be 40 non-negative integers"),
        ({"y_train": np.eye(4)[np.arange(40) % 4]}, "y_train labels must be 40 non-negative integers"),
        ({"x_test": np.zeros((12, 6, 6), np.float32)}, "both splits must hold images of one shape"),
    ],
    ids=["zero-size", "int64 images", "one class", "label 1e9", "negative", "float labels", "one-hot", "shapes"],
)
def test_bad_npz_arrays_are_refused_with_one_line(arrays, expected, tmp_path):
    assert expected in refused(write_npz(tmp_path / "data.npz", **arrays))


def test_tiny_images_are_read_and_resized(tmp_path):
    # 2x2 images are data the pipeline can resize; train.py asks for --image_size (test_train).
    path = write_npz(tmp_path / "tiny.npz", x_train=np.zeros((40, 2, 2), np.uint8), x_test=np.zeros((12, 2, 2), np.uint8))
    assert ip.get_dataset_info(path).input_shape == (2, 2, 1)
    x, _ = next(iter(ip.build_dataset(path, "test", 4, image_size=8)))
    assert x.shape == (4, 8, 8, 1)


def test_a_label_typo_warns_with_the_label_histogram(tmp_path, caplog):
    labels = np.arange(200) % 4
    labels[7] = 50  # a typo for 3
    path = write_npz(tmp_path / "typo.npz", x_train=np.zeros((200, 8, 8), np.uint8), y_train=labels)
    with caplog.at_level("WARNING"):
        info = ip.get_dataset_info(path)
    assert info.num_classes == 51  # the labels are trusted, but not silently
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "46 of the 51 classes (labels 0 .. 50) have no training example: 4 .. 49" in warning
    assert "{0: 50, 1: 50, 2: 50, 3: 49, 50: 1}" in warning


def test_labels_without_gaps_do_not_warn(tmp_path, caplog):
    with caplog.at_level("WARNING"):
        ip.get_dataset_info(write_npz(tmp_path / "data.npz"))
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_folder_with_an_empty_or_non_image_file(tmp_path):
    write_class_folders(tmp_path, per_class=5)
    (tmp_path / "cat" / "empty.png").write_bytes(b"")
    (tmp_path / "dog" / "notes.jpg").write_text("not an image")
    message = refused(os.fspath(tmp_path))
    assert f"{tmp_path / 'cat' / 'empty.png'} is not a readable image (it is empty)" in message
    assert "nor are 1 other files" in message


def test_folder_with_a_single_class(tmp_path):
    write_class_folders(tmp_path, per_class=5)
    for name in ("dog", "emu"):
        for file in os.listdir(tmp_path / name):
            os.remove(tmp_path / name / file)
        os.rmdir(tmp_path / name)
    assert "one class folder (cat)" in refused(os.fspath(tmp_path))
