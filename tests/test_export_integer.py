"""The integer route of export_tflite (sign inputs: hybrid int8 ops, exact) and export_lce."""

import builtins
import functools
import os

import keras
import numpy as np
import pytest
from tensorflow.lite.tools import flatbuffer_utils

import litert_run
import models
import slb_keras
from slb_keras import files
from slb_keras.deploy import tflite_export


run_tflite = functools.partial(litert_run.run_tflite, num_threads=1)


def ops_and_kernel_readers(path):
    """(op names, {stored kernel tensor name: names of the ops reading it})."""
    model = flatbuffer_utils.read_model(os.fspath(path))
    graph = model.subgraphs[0]
    names = [flatbuffer_utils.opcode_to_name(model, op.opcodeIndex) for op in graph.operators]
    readers = {}
    for i, tensor in enumerate(graph.tensors):
        if tensor.name.decode().endswith("/kernel_int8"):
            readers[tensor.name.decode()] = [n for n, op in zip(names, graph.operators) if i in op.inputs]
    return names, readers


def binary_model(wbits=1, seed=0):
    """Every integer-route case, with no batch norm: pre-activations are exact integers,
    so a sign of an exact 0 (+1) checks the route is exact, not just close."""
    keras.utils.set_random_seed(seed)
    q = "ste_sign"
    inputs = keras.Input((9, 9, 3))
    x = slb_keras.SLBConv2D(8, 3, padding="same", use_bias=False, wbits=wbits, input_quantizer=q)(inputs)
    x = slb_keras.SLBConv2D(8, 3, strides=2, padding="same", wbits=wbits, input_quantizer=q)(x)
    x = slb_keras.SLBDepthwiseConv2D(3, padding="same", depth_multiplier=2, wbits=wbits, input_quantizer=q)(x)
    x = slb_keras.SLBConv2D(6, 3, padding="valid", wbits=wbits, input_quantizer=q, activation="relu")(x)
    x = keras.layers.Reshape((9, 6))(x)
    x = slb_keras.SLBConv1D(5, 3, padding="causal", wbits=wbits, input_quantizer=q)(x)
    x = keras.layers.Flatten()(x)
    outputs = slb_keras.SLBDense(10, wbits=wbits, input_quantizer=q)(x)
    model = keras.Model(inputs, outputs)
    for layer in model.layers:
        if layer.weights and getattr(layer, "use_bias", False):
            layer.bias.assign(np.round(np.random.default_rng(1).normal(size=layer.bias.shape)))
    return model


@pytest.mark.parametrize("wbits", [1, 2])
def test_integer_route_is_exact_without_dequantize(wbits, tmp_path):
    model = binary_model(wbits)
    report = slb_keras.export_tflite(model, tmp_path / "integer.tflite")
    names, readers = ops_and_kernel_readers(report.path)
    assert "DEQUANTIZE" not in names
    # Each int8 kernel feeds its convolution / matmul itself (hybrid int8 weights).
    assert len(readers) == len(slb_keras.slb_layers(model))
    assert all(r and set(r) <= {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"} for r in readers.values())
    x = np.random.default_rng(0).normal(size=(32, 9, 9, 3)).astype("float32")
    x[:, :3] = 0.0  # sign(0) = +1 everywhere in a band
    expected = model.predict(x, verbose=0)
    actual = run_tflite(report.path, x)
    if wbits == 1:
        # Integers throughout: bit for bit what Keras computes.
        np.testing.assert_array_equal(actual, expected)
    else:
        # W_h = q / 3 is not exact in float32; Keras's float sums round too.
        dequantized = slb_keras.export_tflite(model, tmp_path / "float.tflite", arithmetic="float")
        np.testing.assert_allclose(actual, run_tflite(dequantized.path, x), rtol=1e-5, atol=1e-5)


def test_vgg_small_w1a1_integer_route_equals_the_dequantize_route(tmp_path):
    model = models.get_model("vgg_small", method="slb", wbits=1, abits=1, input_shape=(16, 16, 3),
                             num_classes=10, width_multiplier=0.25)
    x = np.random.default_rng(0).normal(size=(16, 16, 16, 3)).astype("float32")
    integer = slb_keras.export_tflite(model, tmp_path / "integer.tflite")
    dequantize = slb_keras.export_tflite(model, tmp_path / "float.tflite", arithmetic="float")
    names, readers = ops_and_kernel_readers(integer.path)
    assert "DEQUANTIZE" not in names and len(readers) == 5  # the 5 binary convolutions
    np.testing.assert_array_equal(run_tflite(integer.path, x), run_tflite(dequantize.path, x))
    # The border terms are small (+9% at this width, +1.9% for the full VGG-Small).
    assert integer.file_bytes < 1.1 * dequantize.file_bytes


def test_auto_keeps_the_float_route_where_integers_would_not_be_exact(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8,)),
        slb_keras.SLBDense(6, wbits=1, input_quantizer="dorefa2", name="dorefa"),
        slb_keras.SLBDense(6, wbits=1, name="float_input"),
        slb_keras.SLBDense(4, wbits=1, input_quantizer="ste_sign", name="sign"),
    ])
    report = slb_keras.export_tflite(model, tmp_path / "model.tflite")
    names, readers = ops_and_kernel_readers(report.path)
    assert readers["sign/kernel_int8"] == ["FULLY_CONNECTED"]
    assert readers["dorefa/kernel_int8"] == readers["float_input/kernel_int8"] == ["DEQUANTIZE"]
    x = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
    np.testing.assert_allclose(run_tflite(report.path, x), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"arithmetic='integer'.*'dorefa'.*not the sign"):
        slb_keras.export_tflite(model, tmp_path / "forced.tflite", arithmetic="integer")
    assert not os.path.exists(tmp_path / "forced.tflite")


def test_bad_arithmetic_is_rejected(tmp_path):
    model = keras.Sequential([keras.Input((4,)), slb_keras.SLBDense(2, input_quantizer="ste_sign")])
    with pytest.raises(ValueError, match=r"arithmetic='fast'.*'auto', 'integer', 'float'"):
        slb_keras.export_tflite(model, tmp_path / "m.tflite", arithmetic="fast")
    assert tflite_export.ARITHMETIC == ("auto", "integer", "float")


def test_export_lce_without_the_extra_says_how_to_install(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_lce(name, *args, **kwargs):
        if name.startswith("larq_compute_engine"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_lce)
    model = keras.Sequential([keras.Input((4,)), slb_keras.SLBDense(2, input_quantizer="ste_sign")])
    with pytest.raises(ImportError, match=r"larq-compute-engine.*slb_keras\[lce\]"):
        slb_keras.export_lce(model, tmp_path / "m.tflite")
    assert os.listdir(tmp_path) == []


def test_atomic_write_replaces_and_check_output_path_names_the_argument(tmp_path):
    path = tmp_path / "f.bin"
    files.atomic_write(path, b"one")
    files.atomic_write(path, b"two")
    assert path.read_bytes() == b"two" and os.listdir(tmp_path) == ["f.bin"]
    with pytest.raises(ValueError, match=r"Invalid out=.*does not exist"):
        files.check_output_path(tmp_path / "no" / "f", "out")


def test_command_line_arithmetic(tmp_path, capsys):
    from slb_keras import export

    model = keras.Sequential([keras.Input((4,)), slb_keras.SLBDense(2, input_quantizer="ste_sign", name="s")])
    model.save(tmp_path / "m.keras")
    for arithmetic, reader in (("auto", "FULLY_CONNECTED"), ("float", "DEQUANTIZE")):
        out = tmp_path / f"{arithmetic}.tflite"
        assert export.main([f"--model={tmp_path / 'm.keras'}", f"--out={out}", f"--arithmetic={arithmetic}"]) == 0
        assert ops_and_kernel_readers(out)[1]["s/kernel_int8"] == [reader]
    with pytest.raises(SystemExit) as exit_info:
        export.main([f"--model={tmp_path / 'm.keras'}", f"--out={tmp_path / 'x.tflite'}", "--arithmetic=fast"])
    assert exit_info.value.code == 2 and "--arithmetic" in capsys.readouterr().err
