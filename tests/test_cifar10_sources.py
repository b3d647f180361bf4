"""Tests for `--dataset=cifar10` read from whatever is on disk (input_pipeline.sources,
cifar10_files): the TFDS cache, the official python version (`cifar-10-batches-py/`) in
--data_dir or in Keras's cache, an image folder; the one line when nothing is there; the
restricted unpickler. Every data set here is a tiny fake the test writes (a few images per
batch file), never the real data, never the network.
"""

import doctest
import os
import pickle
import struct
import time

import keras
import numpy as np
import pytest
import tensorflow_datasets as tfds

import input_pipeline as ip
from input_pipeline import cifar10_files
from input_pipeline.holdout import holdout_indices, validation_size
from tfds_mock import write_tfds_metadata
import tiny_run

PER_FILE = 4  # images per fake batch file
NUM_TRAIN = 5 * PER_FILE
BATCH_FILES = (*cifar10_files.CIFAR10_TRAIN_FILES, cifar10_files.CIFAR10_TEST_FILE)


# --- helpers ---------------------------------------------------------------------------


@pytest.fixture
def no_caches(tmp_path_factory, monkeypatch):
    """Keras's cache and TFDS's default data dir: empty folders of this test's own (not
    under tmp_path, which the tests use as a data_dir); returns Keras's."""
    caches = tmp_path_factory.mktemp("caches")
    keras_home = caches / "keras_home"
    tfds_default = caches / "tfds_default"
    keras_home.mkdir()
    tfds_default.mkdir()
    monkeypatch.setenv("KERAS_HOME", os.fspath(keras_home))
    monkeypatch.setattr(tfds.core.constants, "DATA_DIR", os.fspath(tfds_default))
    return keras_home


def fake_rows(num, seed):
    """`num` random CIFAR-10 rows (channel-planar uint8) and their labels (every class
    once in 10 consecutive rows of the train set: labels seed, seed + 1, ... mod 10)."""
    data = np.random.default_rng(seed).integers(0, 256, (num, 3072), dtype=np.uint8)
    labels = [(seed * PER_FILE + i) % 10 for i in range(num)]
    return data, labels


def as_hwc(data):
    """What the python version's rows are as images: (n, 32, 32, 3), by hand."""
    images = np.empty((len(data), 32, 32, 3), np.uint8)
    for n, row in enumerate(data):
        for c in range(3):
            for y in range(32):
                images[n, y, :, c] = row[c * 1024 + y * 32:c * 1024 + (y + 1) * 32]
    return images


def write_batches(directory, protocol=2, per_file=PER_FILE):
    """A fake `cifar-10-batches-py` in `directory`; returns (x_train, y_train, x_test, y_test)."""
    os.makedirs(directory, exist_ok=True)
    rows = []
    for seed, name in enumerate(BATCH_FILES):
        data, labels = fake_rows(per_file, seed)
        batch = {
            b"batch_label": f"{name} (fake)".encode(),
            b"labels": labels,
            b"data": data,
            b"filenames": [f"image_{seed}_{i}.png".encode() for i in range(per_file)],
        }
        with open(os.path.join(directory, name), "wb") as file:
            pickle.dump(batch, file, protocol=protocol)
        rows.append((data, labels))
    x_train = np.concatenate([as_hwc(d) for d, _ in rows[:5]])
    y_train = np.concatenate([l for _, l in rows[:5]])
    return x_train, y_train, as_hwc(rows[5][0]), np.array(rows[5][1])


def python2_pickle(data, labels):
    """A batch pickled as the real files are (Python 2 cPickle, protocol 2): str keys
    and bytes as 8-bit strings, numpy.core.multiarray's reconstructor."""

    def string(value):
        if len(value) < 256:
            return b"U" + bytes([len(value)]) + value
        return b"T" + struct.pack("<i", len(value)) + value

    rows, width = data.shape
    array = (
        b"cnumpy.core.multiarray\n_reconstruct\nq\x01cnumpy\nndarray\nq\x02K\x00\x85"
        + string(b"b") + b"\x87R(K\x01K" + bytes([rows]) + b"M" + struct.pack("<H", width)
        + b"\x86cnumpy\ndtype\n" + string(b"u1") + b"K\x00K\x01\x87R(K\x03" + string(b"|")
        + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89" + string(data.tobytes()) + b"tb"
    )
    return (
        b"\x80\x02}q\x00(" + string(b"data") + array
        + string(b"labels") + b"](" + b"".join(b"K" + bytes([l]) for l in labels) + b"e"
        + string(b"batch_label") + string(b"training batch 1 of 5")
        + string(b"filenames") + b"](" + b"".join(string(b"%d.png" % i) for i in range(rows)) + b"e"
        + b"u."
    )


def split_arrays(name, split, batch_size=8, **kwargs):
    """A split's images and labels: the whole of validation / test, one epoch of train."""
    dataset = ip.build_dataset(name, split, batch_size, **kwargs)
    info = ip.get_dataset_info(
        name, kwargs.get("data_dir"), validation_split=kwargs.get("validation_split", 0.0)
    )
    steps = info.steps_per_epoch(batch_size)
    out = [(x.numpy(), y.numpy()) for x, y in dataset.take(-1 if split != "train" else steps)]
    return np.concatenate([x for x, _ in out]), np.concatenate([y for _, y in out])


def refused(data_dir, error=ip.DataError):
    """The one-line message of get_dataset_info("cifar10", data_dir)'s `error`."""
    return tiny_run.refused("cifar10", data_dir, error)


def write_class_folders(root, num_classes, per_class=5):
    for label in range(num_classes):
        os.makedirs(root / f"class_{label}", exist_ok=True)
        for i in range(per_class):
            image = np.full((32, 32, 3), 20 * label + i, np.uint8)
            keras.utils.save_img(root / f"class_{label}" / f"{i}.png", image, scale=False)


# --- the python version ----------------------------------------------------------------


@pytest.mark.parametrize("given", ["the folder", "its parent"])
def test_python_version_in_data_dir_is_read_like_tfds(given, tmp_path, no_caches):
    batches = tmp_path / "data" / "cifar-10-batches-py"
    x_train, y_train, x_test, y_test = write_batches(batches)
    data_dir = os.fspath(batches if given == "the folder" else batches.parent)
    info = ip.get_dataset_info("cifar10", data_dir)
    assert info[:5] == (10, (32, 32, 3), NUM_TRAIN, PER_FILE, 0)
    np.testing.assert_allclose(info.channel_mean, np.array(ip.CIFAR10_MEAN) * 255)
    np.testing.assert_allclose(info.channel_std, np.array(ip.CIFAR10_STD) * 255)
    x, y = split_arrays("cifar10", "test", 3, data_dir=data_dir)  # in order, 3 + 1
    assert x.dtype == np.float32 and y.dtype == np.int32
    np.testing.assert_array_equal(x, x_test.astype(np.float32))
    np.testing.assert_array_equal(y, y_test)


@pytest.mark.parametrize(
    "subdir", cifar10_files.KERAS_CACHE_SUBDIRS, ids=["keras2_layout", "keras3_layout"]
)
def test_python_version_in_keras_cache_without_data_dir(subdir, no_caches):
    x_train, y_train, *_ = write_batches(no_caches / subdir)
    assert ip.get_dataset_info("cifar10")[:4] == (10, (32, 32, 3), NUM_TRAIN, PER_FILE)
    _, y = split_arrays("cifar10", "train", 10, augment=False)  # one epoch: each image once
    np.testing.assert_array_equal(np.sort(y), np.sort(y_train))


def test_keras_home_is_read_at_each_call(tmp_path, no_caches, monkeypatch):
    other = tmp_path / "other_keras_home"
    write_batches(other / "datasets" / "cifar-10-batches-py", per_file=2)
    with pytest.raises(ip.DatasetNotFoundError):
        ip.get_dataset_info("cifar10")
    monkeypatch.setenv("KERAS_HOME", os.fspath(other))
    assert ip.get_dataset_info("cifar10").num_train == 10


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_pickles_of_every_protocol_are_read(protocol, tmp_path):
    x_train, y_train, x_test, y_test = write_batches(tmp_path, protocol=protocol)
    (x, y), (xt, yt) = cifar10_files.read_batches(os.fspath(tmp_path))
    np.testing.assert_array_equal(x, x_train)
    np.testing.assert_array_equal(y, y_train)
    np.testing.assert_array_equal(xt, x_test)
    assert x.dtype == np.uint8 and x.flags.c_contiguous and y.dtype == np.int32


def test_a_python2_pickle_as_in_the_real_tarball(tmp_path):
    data, labels = fake_rows(3, seed=7)
    path = tmp_path / "data_batch_1"
    path.write_bytes(python2_pickle(data, labels))
    images, read_labels = cifar10_files.read_batch(os.fspath(path))
    np.testing.assert_array_equal(images, as_hwc(data))
    np.testing.assert_array_equal(read_labels, labels)


def test_train_images_are_pad_crops_and_flips_of_the_data(tmp_path, no_caches):
    x_train, *_ = write_batches(tmp_path)
    padded = np.pad(x_train.astype(np.float32), [(0, 0), (4, 4), (4, 4), (0, 0)])
    x, _ = split_arrays("cifar10", "train", 10, data_dir=os.fspath(tmp_path), seed=1)
    shifts = set()
    for image in x:
        matches = [
            (dy, dx)
            for dy in range(9)
            for dx in range(9)
            for flip in (False, True)
            if is_crop_of_any(image[:, ::-1] if flip else image, padded[:, dy:dy + 32, dx:dx + 32])
        ]
        assert matches, "a training image is not a shifted / flipped data image"
        shifts.update(matches)
    assert len(shifts) > 1  # the crop position varies


def is_crop_of_any(image, crops):
    return np.any(np.all(crops == image, axis=(1, 2, 3)))


def test_augment_false_gives_the_training_images_as_they_are(tmp_path, no_caches):
    x_train, *_ = write_batches(tmp_path)
    x, _ = split_arrays("cifar10", "train", 10, data_dir=os.fspath(tmp_path), augment=False)
    stored = sorted(image.tobytes() for image in x_train.astype(np.float32))
    assert sorted(image.tobytes() for image in x) == stored  # one epoch: each image once


def test_validation_split_holds_out_fixed_examples_never_trained_on(tmp_path, no_caches):
    x_train, y_train, *_ = write_batches(tmp_path)
    data_dir = os.fspath(tmp_path)
    info = ip.get_dataset_info("cifar10", data_dir, validation_split=0.25)
    num_validation = validation_size("cifar10", NUM_TRAIN, 0.25)
    assert (info.num_train, info.num_validation) == (NUM_TRAIN - num_validation, num_validation)
    _, held_out = holdout_indices(NUM_TRAIN, num_validation)
    x, y = split_arrays("cifar10", "validation", 2, data_dir=data_dir, validation_split=0.25)
    np.testing.assert_array_equal(x, x_train[held_out].astype(np.float32))
    np.testing.assert_array_equal(y, y_train[held_out])
    trained, _ = split_arrays(
        "cifar10", "train", 5, data_dir=data_dir, validation_split=0.25, augment=False
    )
    assert not {i.tobytes() for i in trained} & {i.tobytes() for i in x}


def test_mirrored_replicas_share_the_global_batch(tmp_path, no_caches, mirrored_strategy):
    write_batches(tmp_path)
    datasets = ip.make_datasets("cifar10", os.fspath(tmp_path), 4, mirrored_strategy, image_size=16)
    for dataset in datasets:
        x, _ = next(iter(dataset))
        local = mirrored_strategy.experimental_local_results(x)
        assert [t.shape for t in local] == [(2, 16, 16, 3)] * 2


# --- the order of lookup ---------------------------------------------------------------


def test_the_tfds_cache_comes_first(tmp_path, no_caches):
    write_batches(tmp_path / "cifar-10-batches-py")
    write_batches(no_caches / "datasets" / "cifar-10-batches-py", per_file=2)
    assert ip.get_dataset_info("cifar10", os.fspath(tmp_path))[2:4] == (NUM_TRAIN, PER_FILE)
    write_tfds_metadata(tmp_path, "cifar10", {"train": 24, "test": 12})
    with tfds.testing.mock_data(num_examples=24, data_dir=os.fspath(tmp_path)):
        assert ip.get_dataset_info("cifar10", os.fspath(tmp_path))[2:4] == (24, 12)
        x, _ = next(iter(ip.build_dataset("cifar10", "test", 12, data_dir=os.fspath(tmp_path))))
        assert x.shape == (12, 32, 32, 3)


def test_the_data_dir_comes_before_keras_cache(tmp_path, no_caches):
    write_batches(no_caches / "datasets" / "cifar-10-batches-py", per_file=2)
    write_batches(tmp_path / "batches")
    assert ip.get_dataset_info("cifar10", os.fspath(tmp_path / "batches")).num_train == NUM_TRAIN
    write_class_folders(tmp_path / "images", num_classes=10)
    assert ip.get_dataset_info("cifar10", os.fspath(tmp_path / "images")).num_train == 40
    empty = tmp_path / "empty"
    empty.mkdir()
    assert ip.get_dataset_info("cifar10", os.fspath(empty)).num_train == 10  # Keras's cache


def test_an_image_folder_as_data_dir_is_cifar10(tmp_path, no_caches):
    write_class_folders(tmp_path, num_classes=10)
    data_dir = os.fspath(tmp_path)
    info = ip.get_dataset_info("cifar10", data_dir)
    assert info[:4] == (10, (32, 32, 3), 40, 10)
    np.testing.assert_allclose(info.channel_mean, np.array(ip.CIFAR10_MEAN) * 255)
    x, y = split_arrays("cifar10", "test", 10, data_dir=data_dir)
    np.testing.assert_array_equal(y, np.arange(10))
    np.testing.assert_array_equal(x[:, 0, 0, 0], 20 * np.arange(10) + 4)  # every 5th image


def test_an_image_folder_of_other_classes_is_refused(tmp_path, no_caches):
    write_class_folders(tmp_path, num_classes=3)
    message = refused(tmp_path)
    assert f"{tmp_path} holds 3 class folders but cifar10 has 10" in message
    assert f"--dataset={tmp_path}" in message


@pytest.mark.parametrize("data_dir", [None, "empty"])
def test_nothing_there_says_every_way_to_provide_it_in_one_line(data_dir, tmp_path, no_caches):
    if data_dir:
        data_dir = tmp_path / data_dir
        data_dir.mkdir()
        (data_dir / "notes.txt").write_text("no data here")
    before = tiny_run.snapshot(tmp_path)
    start = time.monotonic()
    with pytest.raises(ip.DatasetNotFoundError) as error:
        ip.get_dataset_info("cifar10", data_dir and os.fspath(data_dir))
    assert time.monotonic() - start < 5  # no download attempt
    message = str(error.value)
    assert "\n" not in message and not isinstance(error.value, ip.DataError)
    for way in (
        "tfds build cifar10 --data_dir=DIR",
        "--data_dir=DIR",
        "cifar-10-batches-py",
        f"into {no_caches / 'datasets'} or into --data_dir",
        "folder of class folders as --dataset=PATH or --data_dir=PATH",
        ".npz",
        "--dataset=digits",
    ):
        assert way in message, way
    assert os.fspath(data_dir or no_caches.parent / "tfds_default") in message
    assert tiny_run.snapshot(tmp_path) == before  # nothing written


# --- bad files: one line naming the file, nothing run ----------------------------------


class Payload:
    """Pickles as a call of `function(*args)`."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def crafted_payloads(marker):
    touch = f"touch {marker}"
    code = f"open({str(marker)!r}, 'w').close()"
    return {
        "os.system": Payload(os.system, touch),
        "builtins.exec": Payload(exec, code),
        "builtins.eval": Payload(eval, code),
        "getattr": Payload(getattr, "text", "upper"),
        "bytes with an argument": Payload(bytes, 10**12),
        "numpy.load": Payload(np.load, os.fspath(marker)),
        "object array": np.array([Payload(os.system, touch)], dtype=object),
        "ndarray called": Payload(np.ndarray, (10,)),
    }


@pytest.mark.parametrize("payload", crafted_payloads("marker").keys())
def test_crafted_pickles_are_refused_without_running_code(payload, tmp_path, no_caches):
    marker = tmp_path / "marker"
    write_batches(tmp_path)
    batch = {b"data": crafted_payloads(marker)[payload], b"labels": [0]}
    with open(tmp_path / "data_batch_3", "wb") as file:
        pickle.dump(batch, file, protocol=2)
    message = refused(tmp_path)
    assert message.startswith(f"{tmp_path / 'data_batch_3'} is not a CIFAR-10 python batch (")
    assert "only dicts, lists, bytes, strings, numbers and numpy arrays are read" in message
    assert not marker.exists()


def test_a_crafted_python2_pickle_naming_os_system(tmp_path, no_caches):
    marker = tmp_path / "marker"
    write_batches(tmp_path)
    command = f"touch {marker}".encode()
    (tmp_path / "test_batch").write_bytes(
        b"\x80\x02cos\nsystem\nU" + bytes([len(command)]) + command + b"\x85R."
    )
    assert "(it refers to os.system, which is never loaded" in refused(tmp_path)
    assert not marker.exists()


def bad_batch(**changes):
    data, labels = fake_rows(PER_FILE, 0)
    batch = {b"data": data, b"labels": labels, b"batch_label": b"x", b"filenames": []}
    batch.update({key.encode(): value for key, value in changes.items() if value is not None})
    for key in [key for key, value in changes.items() if value is None]:
        del batch[key.encode()]
    return pickle.dumps(batch, protocol=2)


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"", "is not a CIFAR-10 python batch (it is empty)"),
        (bad_batch()[:-200], "is not a CIFAR-10 python batch (UnpicklingError"),
        (b"\x00not a pickle", "is not a CIFAR-10 python batch (UnpicklingError"),
        (pickle.dumps([1, 2]), "a pickle of a dict holding b'data' and b'labels'; it holds list"),
        (bad_batch(labels=None), "it holds the keys b'batch_label', b'data', b'filenames'"),
        (bad_batch(data=np.zeros((4, 3071), np.uint8)), "b'data' must be a non-empty (n, 3072) uint8 array"),
        (bad_batch(data=np.zeros((4, 3072), np.float32)), "Received a float32 array of shape (4, 3072)"),
        (bad_batch(data=np.zeros((0, 3072), np.uint8)), "Received a uint8 array of shape (0, 3072)"),
        (bad_batch(data=b"\x00" * (4 * 3072 - 1)), "Received a bytes"),
        (
            bad_batch(labels=[0, 1, 2, 10]),
            "b'labels' must be 4 integers in 0 .. 9, one per row of b'data'. "
            "Received int64 of shape (4,) with values 0 .. 10",
        ),
        (bad_batch(labels=[0, 1, 2, -1]), "with values -1 .. 2"),
        (bad_batch(labels=[0, 1, 2]), "Received int64 of shape (3,)"),
        (bad_batch(labels=["cat"] * 4), "Received <U3 of shape (4,)"),
        (bad_batch(labels=[[0], [1, 2], [3], [4]]), "Received a ragged list"),
        (bad_batch(labels=7), "Received int"),
        (pickle.dumps({}), "it holds the keys none"),
    ],
    ids=[
        "empty", "truncated", "not_a_pickle", "a_list", "no_labels", "row_width", "float_data",
        "no_rows", "bytes_not_whole_rows", "label_10", "negative_label", "label_count", "str_labels",
        "ragged_labels", "labels_not_a_list", "empty_dict",
    ],
)
def test_bad_batch_files_are_refused_with_one_line_naming_the_file(
    content, expected, tmp_path, no_caches
):
    write_batches(tmp_path)
    (tmp_path / "data_batch_2").write_bytes(content)
    message = refused(tmp_path)
    assert message.startswith(os.fspath(tmp_path / "data_batch_2")), message
    assert expected in message, message


def test_a_missing_batch_file_is_named(tmp_path, no_caches):
    write_batches(tmp_path)
    os.remove(tmp_path / "data_batch_4")
    os.remove(tmp_path / "test_batch")
    message = refused(tmp_path)
    assert message.startswith(f"{tmp_path} lacks data_batch_4, test_batch: ")


def test_docstring_examples_restore_keras_home(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KERAS_HOME", raising=False)
    for module in (cifar10_files, ip.sources, ip.tfds_sources):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0 and result.attempted >= 4, (module.__name__, result)
    assert "KERAS_HOME" not in os.environ


@pytest.mark.parametrize(
    "target",
    [b"cnumpy._core.multiarray\n_reconstruct\n", b"cnumpy\nndarray\n", b"c_codecs\nencode\n", b"cnumpy\ndtype\n"],
    ids=["reconstruct", "ndarray", "codecs_encode", "dtype"],
)
@pytest.mark.parametrize(
    "state",
    [b"(N}X\x0c\x00\x00\x00__defaults__(K\x01K\x02tst", b"}X\x03\x00\x00\x00fooK\x01s"],
    ids=["slot_state", "dict_state"],
)
def test_a_crafted_pickle_cannot_change_an_allowed_global(target, state, tmp_path, no_caches):
    x_train, y_train, *_ = write_batches(tmp_path)
    (tmp_path / "data_batch_1").write_bytes(b"\x80\x02" + target + state + b"b.")
    message = refused(tmp_path)
    assert message.startswith(f"{tmp_path / 'data_batch_1'} is not a CIFAR-10 python batch (it sets "), message
    write_batches(tmp_path)  # the allowed globals still read a real batch, unchanged
    (x, y), _ = cifar10_files.read_batches(os.fspath(tmp_path))
    np.testing.assert_array_equal(x, x_train)
    assert all(
        not hasattr(value, "__dict__") and getattr(value, "__defaults__", None) is None
        for value in cifar10_files._ALLOWED_GLOBALS.values()
    )


@pytest.mark.parametrize("container, protocol", [(bytes, 2), (bytes, 5), (bytearray, 5)])
def test_data_as_raw_bytes_is_read_as_rows(container, protocol, tmp_path):
    data, labels = fake_rows(3, seed=2)
    path = tmp_path / "data_batch_1"
    with open(path, "wb") as file:
        pickle.dump({b"data": container(data.tobytes()), b"labels": labels}, file, protocol=protocol)
    images, read_labels = cifar10_files.read_batch(os.fspath(path))
    np.testing.assert_array_equal(images, as_hwc(data))
    np.testing.assert_array_equal(read_labels, labels)
    path.write_bytes(pickle.dumps({b"data": data.tobytes(), b"labels": labels[:2]}, protocol=2))
    with pytest.raises(ip.DataError, match="b'labels' must be 3 integers"):
        cifar10_files.read_batch(os.fspath(path))
