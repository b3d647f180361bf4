"""Exports refuse what would lose data or lie: overwritten inputs, non-finite weights,
untrusted packed files; and their files get ordinary modes and sizes."""

import hashlib
import io
import json
import os
import resource
import warnings
import zipfile

import keras
import numpy as np
import pytest

import slb_keras
from slb_keras import export


def tiny_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(6, name="fc"),
        slb_keras.SLBDense(4, wbits=2, input_quantizer="ste_sign", name="slb"),
    ])


# -- command line: outputs that are the input or each other ------------------------------


def test_command_line_refuses_outputs_that_are_the_model_or_each_other(tmp_path, capsys):
    model_path = tmp_path / "m.keras"
    tiny_model().save(model_path)
    original = model_path.read_bytes()
    os.symlink(model_path, tmp_path / "link.keras")
    os.link(model_path, tmp_path / "hard.tflite")
    (tmp_path / "sub").mkdir()
    model, out = f"--model={model_path}", f"--out={tmp_path / 'm.tflite'}"
    cases = [
        [model, f"--out={model_path}"],
        [model, f"--out={tmp_path / 'sub' / '..' / 'm.keras'}"],
        [model, f"--out={tmp_path / 'link.keras'}"],  # a symbolic link to the model
        [model, f"--out={tmp_path / 'hard.tflite'}"],  # a hard link to the model
        [model, out, f"--packed={model_path}"],
        [model, out, f"--packed={tmp_path / 'm.tflite'}"],
    ]
    before = sorted(os.listdir(tmp_path))
    for argv in cases:
        with pytest.raises(SystemExit) as exit_info:
            export.main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "same file" in err, err
    assert sorted(os.listdir(tmp_path)) == before
    assert model_path.read_bytes() == original


def _not_a_keras_zip(path):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "no config.json here")


UNREADABLE_MODELS = [
    ("empty", lambda path: path.write_bytes(b""), "(it is empty)"),
    ("garbage", lambda path: path.write_bytes(b"not a zip\n" * 10), "(it is not a zip archive"),
    ("truncated", lambda path: (tiny_model().save(path), path.write_bytes(path.read_bytes()[:100])), "(it is not"),
    ("zip without a model", _not_a_keras_zip, "config.json"),
]


@pytest.mark.parametrize("write, expected", [c[1:] for c in UNREADABLE_MODELS], ids=[c[0] for c in UNREADABLE_MODELS])
def test_command_line_says_an_unreadable_model_file_exists(write, expected, tmp_path, capsys):
    model_path = tmp_path / "m.keras"
    write(model_path)
    with pytest.raises(SystemExit) as exit_info:
        export.main([f"--model={model_path}", f"--out={tmp_path / 'm.tflite'}", f"--packed={tmp_path / 'm.slb'}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "File not found" not in err, err
    assert f"Invalid --model='{model_path}': the file exists but cannot be read as a Keras model " in err
    assert expected in err
    assert os.listdir(tmp_path) == ["m.keras"]


def test_command_line_still_says_a_missing_model_file_is_missing(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        export.main([f"--model={tmp_path / 'none.keras'}", f"--out={tmp_path / 'm.tflite'}"])
    assert exit_info.value.code == 2
    assert "expected an existing .keras file" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


# -- non-finite weights ------------------------------------------------------------------------


@pytest.mark.parametrize("exporter", [slb_keras.export_tflite, slb_keras.export_packed])
@pytest.mark.parametrize("layer, variable", [("slb", "kernel_logits"), ("fc", "kernel"), ("fc", "bias")])
def test_non_finite_weights_are_refused_naming_the_layer(exporter, layer, variable, tmp_path):
    model = tiny_model()
    target = getattr(model.get_layer(layer), variable)
    values = target.numpy()
    values.flat[1] = np.nan if variable != "bias" else np.inf
    target.assign(values)
    kind = "logits" if variable == "kernel_logits" else "weights"
    with pytest.raises(ValueError, match=rf"layer '{layer}' has non-finite {kind}"):
        exporter(model, tmp_path / "out.file")
    assert os.listdir(tmp_path) == []


# -- load_packed trusts nothing ------------------------------------------------------------------


def rewrite(path, edit_manifest=None, members=None, stored_manifest=False):
    """Rewrites a packed file: manifest edited in place, members replaced (checksums kept)."""
    with zipfile.ZipFile(path) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        data = {name: archive.read(name) for name in archive.namelist() if name != "manifest.json"}
    if edit_manifest is not None:
        manifest = edit_manifest(manifest) or manifest
    data.update(members or {})
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(
            "manifest.json", json.dumps(manifest),
            zipfile.ZIP_STORED if stored_manifest else zipfile.ZIP_DEFLATED,
        )
        for name, content in data.items():
            archive.writestr(name, content)
    return manifest


@pytest.fixture
def packed_file(tmp_path):
    model = tiny_model()
    slb_keras.export_packed(model, tmp_path / "m.slb")
    return tmp_path / "m.slb"


def entry_of(manifest, encoding):
    return next(e for e in manifest["weights"] if e["encoding"] == encoding)


def set_key(encoding, key, value):
    def edit(manifest):
        entry_of(manifest, encoding)[key] = value

    return edit


def drop_key(encoding, key):
    def edit(manifest):
        del entry_of(manifest, encoding)[key]

    return edit


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m["weights"], "list, not an object"),
        (lambda m: m.update(weights={"a": 1}), "\"weights\" list"),
        (lambda m: m["weights"].__setitem__(0, [1, 2]), "not an object"),
        (drop_key("codes", "member"), "\"member\" string"),
        (drop_key("raw", "sha256"), "no sha256"),
        (set_key("codes", "values", [-1.0, -0.5, 0.5, 1.0]), r"not value_set\(2\)"),
        (set_key("codes", "bits", 9), "bits 9"),
        (set_key("codes", "member", "weights/missing.bin"), "no member"),
        (set_key("codes", "shape", [8, 5]), "implies 10"),
        (set_key("raw", "shape", [100000, 100000]), "implies 40000000000"),
        (set_key("raw", "shape", [-8, 6]), "non-negative"),
        (set_key("raw", "dtype", "object"), "dtype 'object'"),
        (set_key("codes", "sha256", "0" * 64), "sha256"),
    ],
)
def test_load_packed_checks_every_field(packed_file, edit, message):
    rewrite(packed_file, edit)
    with pytest.raises(ValueError, match=message):
        slb_keras.load_packed(packed_file)


def test_load_packed_refuses_a_lying_npy_header_and_a_deflate_bomb(packed_file, tmp_path):
    with zipfile.ZipFile(packed_file) as archive:
        manifest = json.loads(archive.read("manifest.json"))
    raw = entry_of(manifest, "raw")
    # A header claiming (100000, 100000) in a member of the right size and checksum.
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": "<f4", "fortran_order": False, "shape": (100000, 100000)})
    lying = buffer.getvalue() + b"\0" * (4 * 48)  # fc/kernel: 8 x 6 float32

    def same_checksum(m):
        entry_of(m, "raw")["sha256"] = hashlib.sha256(lying).hexdigest()

    rewrite(packed_file, same_checksum, {raw["member"]: lying})
    with pytest.raises(ValueError, match="header|implies"):
        slb_keras.load_packed(packed_file)
    # A manifest that inflates to 65 MiB is refused before it is inflated.
    bomb = tmp_path / "bomb.slb"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("manifest.json", b" " * (65 * 2**20))
    assert os.path.getsize(bomb) < 2**20
    with pytest.raises(ValueError, match="claims 68157440 bytes"):
        slb_keras.load_packed(bomb)
    # A deflated weight member is refused (weights are stored, so bounded by the file).
    slb_keras.export_packed(tiny_model(), packed_file)
    with zipfile.ZipFile(packed_file) as archive:
        contents = {name: archive.read(name) for name in archive.namelist()}
    with zipfile.ZipFile(packed_file, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in contents.items():
            archive.writestr(name, content)
    with pytest.raises(ValueError, match="stored"):
        slb_keras.load_packed(packed_file)


def conv_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((8, 8, 3)),
        slb_keras.SLBConv2D(4, 3, wbits=1, name="conv"),
        keras.layers.Flatten(),
        keras.layers.Dropout(0.2),
        slb_keras.SLBDense(3, wbits=2, name="fc"),
    ])


def huge_config(layer, key):
    """An edit making `layer`'s `key` 10**9 (and letting the layers after it follow)."""

    def edit(manifest):
        for config in manifest["model"]["config"]["layers"]:
            if config["name"] == layer:
                config["config"][key] = 10**9
            elif layer == "conv":
                config.pop("build_config", None)

    return edit


@pytest.mark.parametrize(
    "layer, key, implied",
    [
        ("fc", "units", "weight 2 'fc/kernel' of shape (144, 1000000000) (144000000000 values)"),
        ("conv", "filters", "weight 0 'conv/kernel' of shape (3, 3, 3, 1000000000) (27000000000 values)"),
    ],
    ids=["dense units=10**9", "conv filters=10**9"],
)
def test_load_packed_refuses_a_config_with_huge_layers_before_allocating(layer, key, implied, tmp_path):
    path = tmp_path / "m.slb"
    slb_keras.export_packed(conv_model(), path)
    rewrite(path, huge_config(layer, key))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ValueError) as error:
        slb_keras.load_packed(path)
    assert str(error.value).startswith(f"Invalid path={path!r}: the model config implies {implied}")
    assert "but the manifest's entry" in str(error.value) and "\n" not in str(error.value)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 2**19  # KiB: under 512 MiB
    # Nothing of the refused model waits to be allocated: later models build and load as usual.
    slb_keras.export_packed(conv_model(), path)
    rebuilt = slb_keras.load_packed(path)
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_array_equal(
        rebuilt.predict(x, verbose=0), slb_keras.to_inference_model(conv_model()).predict(x, verbose=0))


def test_load_packed_refuses_a_config_with_more_weights_than_the_manifest(packed_file):
    def drop_last_entry(manifest):
        manifest["weights"].pop()

    rewrite(packed_file, drop_last_entry)
    with pytest.raises(ValueError, match="the model config implies 4 weights, but the manifest holds 3"):
        slb_keras.load_packed(packed_file)


def test_packed_file_still_loads_exactly(packed_file):
    model = tiny_model()
    rebuilt = slb_keras.load_packed(packed_file)
    x = np.random.default_rng(0).normal(size=(5, 8)).astype("float32")
    np.testing.assert_array_equal(
        rebuilt.predict(x, verbose=0), slb_keras.to_inference_model(model).predict(x, verbose=0))


# -- modes and sizes ---------------------------------------------------------------------------


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_exported_files_get_the_umask_mode(umask, mode, tmp_path):
    old = os.umask(umask)
    try:
        tflite = slb_keras.export_tflite(tiny_model(), tmp_path / "m.tflite")
        packed = slb_keras.export_packed(tiny_model(), tmp_path / "m.slb")
    finally:
        os.umask(old)
    assert os.stat(tflite.path).st_mode & 0o777 == mode
    assert os.stat(packed.path).st_mode & 0o777 == mode


def test_a_tiny_models_packed_file_is_not_larger_than_its_tflite(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = keras.Sequential([keras.Input((8,)), slb_keras.SLBDense(4, wbits=1)])
        tflite = slb_keras.export_tflite(model, tmp_path / "m.tflite")
        packed = slb_keras.export_packed(model, tmp_path / "m.slb")
    assert packed.file_bytes <= tflite.file_bytes
