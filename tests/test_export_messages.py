"""Export messages name the user's path and the reason (issue 24): an output that cannot
be written (never the hidden temporary file's name; a ValueError from the API, one line
and status 2 from the command line), a .keras zip bomb refused from its zip directory
before anything is read."""

import errno
import os
import struct
import time
import zipfile

import keras
import pytest

import slb_keras
from slb_keras import export
from slb_keras import files

# /proc takes no new files, even from root (for whom os.access says yes everywhere).
UNWRITABLE = "/proc/model.tflite"


def tiny_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((8,)), slb_keras.SLBDense(4, wbits=1, name="slb")])


def test_atomic_write_names_the_path_it_was_given(tmp_path):
    with pytest.raises(files.OutputWriteError) as raised:
        files.atomic_write(UNWRITABLE, b"data", name="out")
    error = raised.value
    assert isinstance(error, OSError) and isinstance(error, ValueError)
    assert str(error) == (
        f"Invalid out={UNWRITABLE!r}: the file cannot be written there (No such file or directory)."
    )
    assert error.filename == UNWRITABLE and error.errno == errno.ENOENT and ".tmp" not in str(error)


def test_a_failed_rename_names_the_path_and_leaves_nothing(tmp_path, monkeypatch):
    def full_disk(source, target):
        raise OSError(errno.ENOSPC, "No space left on device", source)

    monkeypatch.setattr(os, "replace", full_disk)
    target = tmp_path / "out.bin"
    with pytest.raises(files.OutputWriteError) as raised:
        files.atomic_write(target, b"data")
    assert str(raised.value) == (
        f"Invalid path={os.fspath(target)!r}: the file cannot be written there (No space left on device)."
    )
    assert raised.value.filename == os.fspath(target) and os.listdir(tmp_path) == []


@pytest.mark.parametrize("export_fn", [slb_keras.export_tflite, slb_keras.export_packed])
def test_an_export_to_an_unwritable_place_raises_a_value_error(export_fn):
    with pytest.raises(ValueError, match=r"^Invalid path='/proc/model.tflite': the file cannot be "
                       r"written there \(No such file or directory\)\.$"):
        export_fn(tiny_model(), UNWRITABLE)


def test_export_tflite_names_the_path_when_the_final_write_fails(tmp_path, monkeypatch):
    model = tiny_model()
    real_replace = os.replace

    def full_disk(source, target):
        if str(target).endswith(".tflite"):
            raise OSError(errno.ENOSPC, "No space left on device", source)
        return real_replace(source, target)

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(ValueError) as raised:
        slb_keras.export_tflite(model, tmp_path / "m.tflite")
    assert str(raised.value) == (
        f"Invalid path={os.fspath(tmp_path / 'm.tflite')!r}: the file cannot be written there "
        "(No space left on device)."
    )
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("flag", ["--out", "--packed"])
def test_the_command_line_names_an_unwritable_output_by_its_flag(tmp_path, capsys, flag):
    tiny_model().save(tmp_path / "m.keras")
    outputs = {"--out": os.fspath(tmp_path / "m.tflite"), "--packed": os.fspath(tmp_path / "m.slb")}
    outputs[flag] = UNWRITABLE
    with pytest.raises(SystemExit) as exit_info:
        export.main([f"--model={tmp_path / 'm.keras'}", *(f"{k}={v}" for k, v in outputs.items())])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err == (
        f"python -m slb_keras.export: error: Invalid {flag}={UNWRITABLE!r}: the file cannot be "
        "written there (No such file or directory).\n"
    )
    assert sorted(os.listdir(tmp_path)) == ["m.keras"]  # nothing written, not even the other


def zip_declaring(path, sizes):
    """A small zip whose directory declares the uncompressed `sizes` ({member: bytes})."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sizes:
            archive.writestr(name, b"{}")
    data = bytearray(path.read_bytes())
    start = data.find(b"PK\x01\x02")
    while start >= 0:  # central directory entries: uncompressed size at +24, name at +46
        length = struct.unpack("<H", data[start + 28:start + 30])[0]
        name = data[start + 46:start + 46 + length].decode()
        data[start + 24:start + 28] = struct.pack("<I", sizes[name])
        start = data.find(b"PK\x01\x02", start + 4)
    path.write_bytes(bytes(data))
    assert [info.file_size for info in zipfile.ZipFile(path).infolist()] == list(sizes.values())


@pytest.mark.parametrize(
    "sizes, expected",
    [
        ({"metadata.json": 2, "config.json": 3_000_000_000, "model.weights.h5": 2},
         "its config.json declares 3000000000 bytes, more than the 67108864 a model's JSON may take; a zip bomb?"),
        ({"metadata.json": 2, "config.json": 2, "model.weights.h5": 4_000_000_000},
         "its 3 members declare 4000000004 bytes in all, more than 16 times the archive's"),
    ],
    ids=["config", "weights"],
)
def test_a_keras_zip_bomb_is_refused_from_its_directory(tmp_path, capsys, monkeypatch, sizes, expected):
    path = tmp_path / "bomb.keras"
    zip_declaring(path, sizes)

    def no_reading(*args, **kwargs):
        raise AssertionError("Keras was asked to load the bomb")

    monkeypatch.setattr(keras.models, "load_model", no_reading)
    start = time.perf_counter()
    with pytest.raises(SystemExit) as exit_info:
        export.main([f"--model={path}", f"--out={tmp_path / 'm.tflite'}"])
    assert time.perf_counter() - start < 5
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"Invalid --model='{path}': the file is not read as a Keras model ({expected}" in err
    assert sorted(os.listdir(tmp_path)) == ["bomb.keras"]


def test_a_model_that_keras_refuses_without_a_message_gets_a_reason(tmp_path, capsys, monkeypatch):
    tiny_model().save(tmp_path / "m.keras")

    def refuse(*args, **kwargs):
        raise KeyError()  # str(KeyError()) == "": the "()"

    monkeypatch.setattr(keras.models, "load_model", refuse)
    with pytest.raises(SystemExit):
        export.main([f"--model={tmp_path / 'm.keras'}", f"--out={tmp_path / 'm.tflite'}"])
    assert "cannot be read as a Keras model (KeyError)." in capsys.readouterr().err


def test_the_command_line_turns_the_no_slb_layers_warning_into_one_notice(tmp_path, capsys):
    # export.py recognises the warning by its class (NoSLBLayersWarning), not its text.
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="d")], name="plain")
    model.save(tmp_path / "m.keras")
    packed = tmp_path / "m.slb"
    assert export.main([f"--model={tmp_path / 'm.keras'}", f"--out={tmp_path / 'm.tflite'}",
                        f"--packed={packed}"]) == 0
    err = capsys.readouterr().err
    assert err.count("notice: Model 'plain' has no SLB layers") == 1, err  # once for both exports
