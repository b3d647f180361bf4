"""A model saved by an earlier version loads, computes and exports exactly as it did.

`fixtures/layout_model.keras` was written by `fixtures/make_layout_fixture.py` with
slb_keras 0.1.0 before the library was split into subpackages (every SLB layer
family, STE-free, state BN, DoReFa, PACT and sign input quantizers). Its TFLite
and packed exports then are stored beside it: the current library must load the
file with safe mode on, give the same outputs, and write the same bytes.
"""

import json
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import slb_keras
from tiny_run import child_env

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
VERSIONS = json.loads((FIXTURES / "layout_versions.json").read_text())


@pytest.fixture(scope="module")
def model():
    return keras.models.load_model(FIXTURES / "layout_model.keras")


def test_the_saved_model_loads_and_computes_what_it_computed(model):
    io = np.load(FIXTURES / "layout_io.npz")
    np.testing.assert_array_equal(model.predict(io["images"], verbose=0), io["outputs"])
    assert [type(layer).__name__ for layer in slb_keras.slb_layers(model)] == [
        "SLBConv2D", "SLBDepthwiseConv2D", "SLBConv1D", "SLBDense",
    ]


def _same_converter():
    """Whether this TF and Keras wrote the fixture (then bytes must match, else what they compute)."""
    return tf.__version__ == VERSIONS["tensorflow"] and keras.__version__ == VERSIONS["keras"]


def _assert_identical_up_to_constant_folding(new, old):
    """Byte for byte, except float32 words at most 2 ulp apart.

    The TFLite converter folds constant subgraphs (a BatchNormalization's
    beta - mean * gamma * rsqrt(var + eps)) with TensorFlow's CPU kernels, whose
    last bit depends on the instruction set: measured, one word of bn2's offset
    (0x3f303cea here, 0x3f303ce9 in the fixture) on a machine other than the
    one that wrote it, ten words of the folded constants on another. Everything
    else (the flatbuffer's layout, names, codes, every other constant) must be
    the same bytes: a differing word must read as a normal float32 on both sides
    (a flatbuffer offset, size or code reads as a denormal) and be within 2 ulp.
    """
    assert len(new) == len(old)
    a, b = np.frombuffer(new, np.uint8), np.frombuffer(old, np.uint8)
    words = sorted({i // 4 for i in np.flatnonzero(a != b)})
    for word in words:
        x, y = (np.frombuffer(data[4 * word: 4 * word + 4], "<i4")[0] for data in (new, old))
        floats = [np.frombuffer(data[4 * word: 4 * word + 4], "<f4")[0] for data in (new, old)]
        assert all(np.isfinite(f) and abs(f) >= 1e-30 for f in floats), f"bytes {4 * word}.. differ: {x:#x} != {y:#x}"
        assert abs(int(x) - int(y)) <= 2, f"bytes {4 * word}..{4 * word + 3} differ: {floats[0]} != {floats[1]}"


def test_the_tflite_export_is_byte_identical(model, tmp_path):
    out = tmp_path / "m.tflite"
    slb_keras.export_tflite(model, str(out))
    if _same_converter():
        _assert_identical_up_to_constant_folding(out.read_bytes(), (FIXTURES / "layout_model.tflite").read_bytes())
    else:  # another TF converter may order the flatbuffer differently: compare what it computes
        from ai_edge_litert.interpreter import Interpreter

        io = np.load(FIXTURES / "layout_io.npz")
        outputs = []
        for path in (out, FIXTURES / "layout_model.tflite"):
            interpreter = Interpreter(model_path=str(path))
            runner = interpreter.get_signature_runner()
            (name,) = runner.get_input_details()
            outputs.append([list(runner(**{name: image[None]}).values())[0] for image in io["images"]])
        np.testing.assert_array_equal(outputs[0], outputs[1])


def test_the_packed_export_is_byte_identical(model, tmp_path):
    out = tmp_path / "m.slb"
    # In a fresh process that does what the fixture's did (the TFLite export, then the
    # packed one): the manifest holds the inference model's config, whose automatic op
    # names (clip_2, ...) count the ops the process built before (a full test run builds
    # many more).
    script = (
        "import sys, keras, slb_keras\n"
        "model = keras.models.load_model(sys.argv[1])\n"
        "slb_keras.export_tflite(model, sys.argv[2] + '.tflite')\n"
        "slb_keras.export_packed(model, sys.argv[2])\n"
    )
    subprocess.run([sys.executable, "-c", script, str(FIXTURES / "layout_model.keras"), str(out)],
                   check=True, env=child_env(), capture_output=True, timeout=300)
    if _same_converter():  # the manifest holds Keras configs, which other versions may word differently
        assert out.read_bytes() == (FIXTURES / "layout_model.slb").read_bytes()
    for a, b in zip(slb_keras.load_packed(str(out)).weights,
                    slb_keras.load_packed(str(FIXTURES / "layout_model.slb")).weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(
        slb_keras.load_packed(str(out)).predict(np.load(FIXTURES / "layout_io.npz")["images"], verbose=0),
        np.load(FIXTURES / "layout_io.npz")["outputs"],
    )
