"""Every image of a folder is proven decodable before the first step (issue 24), cheaply:
the header gives the format and declared size, only an unusual file is decoded, and a
bad one is refused with one line naming it."""

import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import tensorflow as tf

import input_pipeline as ip
from input_pipeline import folder_source as fs
from input_pipeline.image_headers import MAX_IMAGE_PIXELS, read_header
from tiny_run import TINY_FLAGS, child_env, refused

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def image(height=30, width=40, seed=0):
    return tf.constant(np.random.default_rng(seed).integers(0, 256, (height, width, 3), np.uint8))


def jpeg(**kwargs):
    return tf.io.encode_jpeg(image(**kwargs)).numpy()


def png(**kwargs):
    return tf.io.encode_png(image(**kwargs)).numpy()


def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def huge_png(side=30000):
    """A small PNG declaring side x side RGB pixels (the issue's 30000x30000 case)."""
    rows = zlib.compress(b"\x00" * (1 + 3 * side) * 4)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def bmp(height=3, width=5):
    row = (width * 3 + 3) // 4 * 4
    pixels = b"\x7f" * row * height
    header = struct.pack("<2sIHHI", b"BM", 54 + len(pixels), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    return header + info + pixels


def write_folder(root, bad=None, per_class=5):
    """cat/ and dog/ of `per_class` JPEGs each; `bad` ({name: bytes}) added to cat/."""
    for c, name in enumerate(("cat", "dog")):
        os.makedirs(root / name, exist_ok=True)
        for i in range(per_class):
            (root / name / f"{i}.jpg").write_bytes(jpeg(seed=10 * c + i))
    for name, data in (bad or {}).items():
        (root / "cat" / name).write_bytes(data)
    return os.fspath(root)


# --- the header parse -------------------------------------------------------------------


def test_headers_give_the_declared_size_of_each_format(tmp_path):
    gif = b"GIF89a" + struct.pack("<HH", 7, 9) + b"\x00\x00\x00" + b";"
    cases = {"a.jpg": (jpeg(), "jpeg"), "a.png": (png(), "png"), "a.bmp": (bmp(3, 5), "bmp"),
             "a.gif": (gif, "gif")}
    sizes = {"jpeg": (40, 30), "png": (40, 30), "bmp": (5, 3), "gif": (7, 9)}
    for name, (data, kind) in cases.items():
        (tmp_path / name).write_bytes(data)
        header = read_header(tmp_path / name)
        assert (header.format, (header.width, header.height)) == (kind, sizes[kind]), name
        assert header.problem is None and header.unusual is None, (name, header)


def test_a_jpeg_frame_header_beyond_the_first_bytes_is_found(tmp_path):
    data = jpeg(height=12, width=20)
    app = b"\xff\xe1" + struct.pack(">H", 65535) + b"\x00" * 65533  # a 64 KB APP1 (EXIF)
    (tmp_path / "exif.jpg").write_bytes(data[:2] + app + app + data[2:])
    header = read_header(tmp_path / "exif.jpg")
    assert (header.width, header.height, header.problem, header.unusual) == (20, 12, None, None)
    assert tf.io.decode_jpeg((tmp_path / "exif.jpg").read_bytes()).shape == (12, 20, 3)


def test_headers_that_no_decoder_reads_are_problems(tmp_path):
    cases = {
        "empty.jpg": b"",
        "text.jpg": b"hello",
        "huge.png": huge_png(),
        "zero.gif": b"GIF89a" + struct.pack("<HH", 0, 9) + b"\x00\x00\x00;",
        "cut.jpg": jpeg()[:40],  # ends before its frame header
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    problems = {name: read_header(tmp_path / name).problem for name in cases}
    assert problems["empty.jpg"] == "it is empty"
    assert problems["text.jpg"] == "not a PNG, JPEG, GIF or BMP file"
    assert problems["huge.png"] == f"it declares 30000x30000 pixels, more than the {MAX_IMAGE_PIXELS} an image may have"
    assert problems["zero.gif"] == "it declares a 0x9 image"
    assert "ends before its frame header" in problems["cut.jpg"]


# --- the folder check -------------------------------------------------------------------


def test_a_truncated_jpeg_is_refused_naming_it(tmp_path):
    data = jpeg()
    path = write_folder(tmp_path, {"cut.jpg": data[: len(data) * 2 // 3]})
    message = refused(path)
    assert message.startswith(f"{path}: {tmp_path / 'cat' / 'cut.jpg'} is not a readable image (a JPEG "
                              "without its end marker, as a truncated file is, and it does not decode: ")
    assert "Invalid JPEG data" in message and message.endswith("; remove or replace them")


def test_an_absurd_declared_size_is_refused_without_decoding(tmp_path, monkeypatch):
    path = write_folder(tmp_path, {"huge.png": huge_png()})
    assert len(huge_png()) < 2_000_000
    monkeypatch.setattr(fs, "_decode_failure", lambda file: pytest.fail(f"decoded {file}"))
    assert f"{tmp_path / 'cat' / 'huge.png'} is not a readable image (it declares 30000x30000 pixels" in refused(path)


def test_truncated_png_gif_and_bmp_are_refused(tmp_path):
    for name, data in {"cut.png": png()[:-200], "cut.bmp": bmp(40, 40)[:-300],
                       "cut.gif": b"GIF89a" + struct.pack("<HH", 4, 4) + b"\x80\x00\x00" + b"\x00" * 6}.items():
        path = write_folder(tmp_path / name, {name: data})
        message = refused(path)
        assert f"{tmp_path / name / 'cat' / name} is not a readable image (" in message, message
        assert "as a truncated file is, and it does not decode: " in message, message


def test_only_unusual_files_are_decoded_and_a_good_one_is_kept(tmp_path, monkeypatch):
    trailing = jpeg(seed=99) + b"junk after the end marker"  # no EOI at the end, but whole
    path = write_folder(tmp_path, {"trailing.jpg": trailing, "plain.bmp": bmp()})
    decoded = []
    real = fs._decode_failure
    monkeypatch.setattr(fs, "_decode_failure", lambda file: decoded.append(file) or real(file))
    info = ip.get_dataset_info(path)
    assert decoded == [os.fspath(tmp_path / "cat" / "trailing.jpg")]
    assert info.class_sizes["train"] == [6, 4] and info.class_sizes["test"] == [1, 1]


def test_many_bad_files_are_counted_in_one_line(tmp_path):
    path = write_folder(tmp_path, {"a.jpg": b"", "b.png": huge_png(), "c.jpg": jpeg()[:300]})
    message = refused(path)
    assert f"{tmp_path / 'cat' / 'a.jpg'} is not a readable image (it is empty), nor are 2 other files" in message


@pytest.mark.slow
@pytest.mark.parametrize("bad", ["cut.jpg", "huge.png", "dangling.jpg"])
def test_train_py_refuses_a_bad_image_before_training(tmp_path, bad):
    path = write_folder(tmp_path / "data", per_class=10)
    target = tmp_path / "data" / "cat" / bad
    if bad == "cut.jpg":
        target.write_bytes(jpeg()[:500])
    elif bad == "huge.png":
        target.write_bytes(huge_png())
    else:
        os.symlink("gone.jpg", target)
    flags = [f for f in TINY_FLAGS if not f.startswith("--dataset=")]
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "train.py"), *flags, f"--dataset={path}",
         f"--model_dir={tmp_path / 'run'}"],
        cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if os.fspath(target) in line]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert not (tmp_path / "run" / "model.keras").exists()


def test_a_class_folder_name_that_is_not_utf8_is_named(tmp_path):
    path = write_folder(tmp_path)
    os.makedirs(os.path.join(os.fsencode(path), b"\xffemu"))
    with open(os.path.join(os.fsencode(path), b"\xffemu", b"0.jpg"), "wb") as file:
        file.write(jpeg())
    assert refused(path) == f"{path}: the file name '\\xffemu' is not valid UTF-8; rename it"


def test_an_empty_test_folder_of_an_empty_training_class_is_not_refused(tmp_path):
    write_folder(tmp_path / "train")
    write_folder(tmp_path / "test", per_class=1)
    for split in ("train", "test"):
        (tmp_path / split / "yak").mkdir()
    info = ip.get_dataset_info(os.fspath(tmp_path))
    assert info.num_classes == 2 and info.class_sizes["test"] == [1, 1]
