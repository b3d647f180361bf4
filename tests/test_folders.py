"""Image folders read as the user means them (issue 24): hidden names skipped, links not
followed out of their class folder, the per-class automatic split, empty and missing
classes warned about, per-class split sizes, images proven decodable before training."""

import logging
import os

import numpy as np
import pytest
import tensorflow as tf

import input_pipeline as ip
from input_pipeline import folder_source as fs
from tiny_run import refused


def png(path, size=(6, 5), value=100):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = tf.fill((*size, 3), tf.constant(value, tf.uint8))
    tf.io.write_file(os.fspath(path), tf.io.encode_png(image))


def write_classes(root, sizes):
    """One folder per class of `sizes` ({name: count}), PNGs named 00.png, 01.png, ..."""
    for c, (name, count) in enumerate(sizes.items()):
        for i in range(count):
            png(os.path.join(root, name, f"{i:02d}.png"), value=10 * c + i)


def old_rule(path):
    """The split before issue 24: every 5th file of the whole sorted list."""
    files, labels, _ = fs._list_class_folders(os.fspath(path))
    is_test = np.arange(len(files)) % 5 == 4
    return set(files[~is_test]), set(files[is_test])


def new_split(path):
    source = fs.folder_source(os.fspath(path), 8)
    all_files, labels, names = fs._list_class_folders(os.fspath(path))
    is_test = fs._every_fifth_per_class(os.fspath(path), labels, names)
    return source, set(all_files[~is_test]), set(all_files[is_test])


# --- hidden names -----------------------------------------------------------------------


def test_hidden_folders_and_files_are_skipped_at_every_level(tmp_path):
    write_classes(tmp_path, {"cat": 5, "dog": 5})
    png(tmp_path / ".ipynb_checkpoints" / "x.png")  # would be class 0
    png(tmp_path / "cat" / ".hidden.png")
    png(tmp_path / "cat" / ".cache" / "y.png")
    png(tmp_path / "dog" / "sub" / ".z.png")
    files, labels, names = fs._list_class_folders(os.fspath(tmp_path))
    assert names == ["cat", "dog"]
    assert len(files) == 10 and not any("/." in f for f in files)
    info = ip.get_dataset_info(os.fspath(tmp_path))
    assert info[:4] == (2, (32, 32, 3), 8, 2)


# --- links ------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["..", "../dog", "."])
def test_a_link_to_a_folder_is_refused(tmp_path, target):
    write_classes(tmp_path, {"cat": 12, "dog": 12})
    os.symlink(target, tmp_path / "cat" / "loop")
    message = refused(tmp_path)
    assert f"{tmp_path / 'cat' / 'loop'} is a link to the folder" in message


def test_a_link_to_a_file_of_another_class_is_refused(tmp_path):
    write_classes(tmp_path, {"cat": 5, "dog": 5})
    os.symlink(tmp_path / "dog" / "00.png", tmp_path / "cat" / "from_dog.png")
    message = refused(tmp_path)
    assert f"{tmp_path / 'cat' / 'from_dog.png'} is a link to {tmp_path / 'dog' / '00.png'}" in message
    assert "outside its class folder" in message


def test_a_link_to_a_file_outside_the_data_is_refused(tmp_path):
    write_classes(tmp_path / "data", {"cat": 5, "dog": 5})
    png(tmp_path / "elsewhere.png")
    os.symlink(tmp_path / "elsewhere.png", tmp_path / "data" / "cat" / "x.png")
    assert "outside its class folder" in refused(tmp_path / "data")


def test_a_dangling_link_is_refused(tmp_path):
    write_classes(tmp_path, {"cat": 5, "dog": 5})
    os.symlink("gone.png", tmp_path / "cat" / "x.png")
    message = refused(tmp_path)
    assert f"{tmp_path / 'cat' / 'x.png'} is a link to gone.png, which does not exist" in message


def test_a_link_to_a_file_of_the_same_class_is_read(tmp_path):
    write_classes(tmp_path, {"cat": 4, "dog": 5})
    os.symlink("00.png", tmp_path / "cat" / "99.png")
    info = ip.get_dataset_info(os.fspath(tmp_path))
    assert info.class_sizes == {"train": [4, 4], "validation": [0, 0], "test": [1, 1]}


def test_a_class_folder_linking_to_another_class_is_refused(tmp_path):
    write_classes(tmp_path, {"cat": 5, "dog": 5})
    os.symlink("dog", tmp_path / "emu")
    assert "inside" in refused(tmp_path)


def test_a_class_folder_linking_outside_is_read(tmp_path):
    write_classes(tmp_path / "store", {"emu": 5})
    write_classes(tmp_path / "data", {"cat": 5, "dog": 5})
    os.symlink(tmp_path / "store" / "emu", tmp_path / "data" / "emu")
    assert ip.get_dataset_info(os.fspath(tmp_path / "data")).num_classes == 3


def test_a_file_name_that_is_not_utf8_is_named(tmp_path):
    write_classes(tmp_path, {"cat": 5, "dog": 5})
    bad = os.path.join(os.fsencode(tmp_path / "cat"), b"\xff\xfe.png")
    with open(bad, "wb") as file:
        file.write(open(tmp_path / "cat" / "00.png", "rb").read())
    message = refused(tmp_path)
    assert "is not valid UTF-8" in message and str(tmp_path / "cat") in message


# --- the automatic split ----------------------------------------------------------------


def test_the_split_is_per_class_and_equals_the_old_one_for_multiples_of_5(tmp_path):
    write_classes(tmp_path, {"cat": 5, "dog": 10, "emu": 5})
    source, train, test = new_split(tmp_path)
    old_train, old_test = old_rule(tmp_path)
    assert (train, test) == (old_train, old_test)
    assert test == {str(tmp_path / n / f) for n, f in
                    [("cat", "04.png"), ("dog", "04.png"), ("dog", "09.png"), ("emu", "04.png")]}
    assert source.info.class_sizes == {"train": [4, 8, 4], "validation": [0, 0, 0], "test": [1, 2, 1]}


def test_every_class_is_in_both_splits_whatever_its_size(tmp_path):
    write_classes(tmp_path, {"cat": 7, "dog": 6, "emu": 5})
    _, old_test = old_rule(tmp_path)  # positions 4, 9, 14 of the whole list: emu's 01.png
    assert sorted(f.split("/")[-2] for f in old_test) == ["cat", "dog", "emu"]
    info = ip.get_dataset_info(os.fspath(tmp_path))
    assert info.class_sizes["test"] == [1, 1, 1]
    assert info.class_sizes["train"] == [6, 5, 4]
    write_classes(tmp_path.parent / (tmp_path.name + "_many"), {"cat": 1, "dog": 1, "emu": 1, "yak": 1, "gnu": 1})
    _, old_test = old_rule(tmp_path.parent / (tmp_path.name + "_many"))  # the case: a class only tested
    assert len(old_test) == 1
    assert "gnu (1)" in refused(tmp_path.parent / (tmp_path.name + "_many"))
    labels = np.concatenate([y.numpy() for _, y in ip.build_dataset(os.fspath(tmp_path), "test", 2)])
    np.testing.assert_array_equal(labels, [0, 1, 2])


def test_a_class_too_small_for_the_split_is_refused(tmp_path):
    write_classes(tmp_path, {"cat": 5, "dog": 3, "emu": 1})
    message = refused(tmp_path)
    assert "the classes dog (3), emu (1) hold fewer than 5 images" in message


def test_classes_with_a_validation_split_are_counted(tmp_path):
    write_classes(tmp_path, {"cat": 10, "dog": 10})
    info = ip.get_dataset_info(os.fspath(tmp_path), validation_split=0.25)
    sizes = info.class_sizes
    assert sum(sizes["train"]) == info.num_train and sum(sizes["validation"]) == info.num_validation == 4
    assert sizes["test"] == [2, 2]


# --- empty and missing classes ----------------------------------------------------------


def test_an_empty_class_folder_is_left_out_with_a_warning(tmp_path, caplog):
    write_classes(tmp_path, {"cat": 5, "dog": 5})
    (tmp_path / "yak").mkdir()
    (tmp_path / "yak" / "notes.txt").write_text("no image")
    with caplog.at_level(logging.WARNING):
        info = ip.get_dataset_info(os.fspath(tmp_path))
    assert info.num_classes == 2
    assert any("class folders without images (yak)" in r.getMessage() for r in caplog.records)


def test_classes_missing_from_the_test_folder_are_named(tmp_path, caplog):
    write_classes(tmp_path / "train", {"cat": 2, "dog": 2, "emu": 2})
    write_classes(tmp_path / "test", {"cat": 1})
    (tmp_path / "test" / "dog").mkdir()
    with caplog.at_level(logging.WARNING):
        info = ip.get_dataset_info(os.fspath(tmp_path))
    assert info.class_sizes["test"] == [1, 0, 0]
    messages = [r.getMessage() for r in caplog.records]
    assert any("no images of the classes dog, emu" in m for m in messages), messages


def test_a_complete_test_folder_does_not_warn(tmp_path, caplog):
    write_classes(tmp_path / "train", {"cat": 2, "dog": 2})
    write_classes(tmp_path / "test", {"cat": 1, "dog": 1})
    with caplog.at_level(logging.WARNING):
        ip.get_dataset_info(os.fspath(tmp_path))
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


# --- summary.json -----------------------------------------------------------------------


def test_train_py_records_the_split_sizes_per_class(tmp_path):
    import json
    import subprocess
    import sys

    from tiny_run import TINY, child_env

    write_classes(tmp_path / "data", {"cat": 10, "dog": 15})
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    flags = [f"--{k}={v}" for k, v in TINY.items() if k not in ("verbose", "dataset", "batch_size")]
    result = subprocess.run(
        [sys.executable, os.path.join(root, "train.py"), *flags, "--batch_size=4",
         f"--dataset={tmp_path / 'data'}", f"--model_dir={tmp_path / 'run'}"],
        cwd=root, env=child_env(), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["split_sizes"] == {"train": 20, "validation": 0, "test": 5}
    assert summary["class_sizes"] == {"train": [8, 12], "validation": [0, 0], "test": [2, 3]}
