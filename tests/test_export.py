"""Export: the plain Keras inference model, exact int8 TFLite, the packed file, the CLI."""

import json
import math
import os
import subprocess
import sys
import warnings
import zipfile
from unittest import mock

import keras
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter
from tensorflow.lite.tools import flatbuffer_utils

import slb_keras
from litert_run import run_tflite
from slb_keras import export
from slb_keras.deploy import packed
from slb_keras.datasets import load_digits

WBITS = (1, 2, 4)
ABITS = (1, 2, 4, 32)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- helpers -------------------------------------------------------------------------


def _quantizer(abits):
    return {1: "ste_sign", 32: "identity"}.get(abits, f"dorefa{abits}")


def _activation(x, abits):
    # Binary networks feed BN output to sign; k-bit DoReFa clips at 0 anyway.
    return x if abits == 1 else keras.layers.ReLU()(x)


def _randomize_batch_norms(model, seed=0):
    """Random statistics; StateBN gets distinct hard statistics and is calibrated."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.moving_mean.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 2.0, c))
            layer.beta.assign(rng.normal(0.0, 0.5, c))
            layer.moving_mean.assign(rng.normal(0.0, 0.5, c))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, c))
            if isinstance(layer, slb_keras.StateBatchNormalization):
                layer.hard_moving_mean.assign(rng.normal(0.0, 0.5, c))
                layer.hard_moving_variance.assign(rng.uniform(0.5, 2.0, c))
                layer.calibrated.assign(1.0)
    return model


def dense_model(wbits, abits, seed=0):
    """Digits 8x8 -> fp Dense -> 2 SLBDense (+ StateBN) -> fp Dense(10)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(32, name="fc_in")(x)
    x = _activation(keras.layers.BatchNormalization()(x), abits)
    for i in range(2):
        x = slb_keras.SLBDense(32, wbits=wbits, input_quantizer=_quantizer(abits), name=f"slb{i}")(x)
        x = _activation(slb_keras.StateBatchNormalization()(x), abits)
    outputs = keras.layers.Dense(10, name="fc_out")(x)
    return _randomize_batch_norms(keras.Model(inputs, outputs, name="dense_model"), seed)


def conv_model(wbits, abits, seed=0):
    """Every SLB layer type, PACT, a standalone quantizer, a nested model, a residual add."""
    keras.utils.set_random_seed(seed)
    q = _quantizer(abits)
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = _activation(keras.layers.BatchNormalization(name="stem_bn")(x), abits)
    block = keras.Sequential(
        [
            keras.Input((8, 8, 8)),
            slb_keras.SLBConv2D(8, 3, padding="same", use_bias=False, wbits=wbits, input_quantizer=q),
            slb_keras.StateBatchNormalization(),
        ],
        name="block",
    )
    x = keras.layers.Add()([x, block(x)])
    x = _activation(x, abits)
    x = slb_keras.SLBDepthwiseConv2D(3, depth_multiplier=2, wbits=wbits, input_quantizer=q)(x)
    x = keras.layers.BatchNormalization()(x)
    x = slb_keras.PACTQuantizer(4, alpha_initializer=1.5)(x)
    x = keras.layers.Reshape((36, 16))(x)
    pact = slb_keras.PACTQuantizer(2, alpha_initializer=1.0)
    x = slb_keras.SLBConv1D(8, 3, strides=2, wbits=wbits, input_quantizer=pact)(x)
    x = keras.layers.Flatten()(x)
    x = slb_keras.SLBDense(16, wbits=wbits, input_quantizer=q, activation="relu")(x)
    outputs = keras.layers.Dense(10, name="fc_out")(x)
    return _randomize_batch_norms(keras.Model(inputs, outputs, name="conv_model"), seed)


@pytest.fixture(scope="module")
def digits():
    """The digits test set (8x8x1) and random inputs of the same shape."""
    (_, _), (x_test, _) = load_digits(image_size=8, channels=1)
    noise = np.random.default_rng(1).normal(0.5, 1.0, size=(64, 8, 8, 1)).astype("float32")
    return x_test, noise


def threshold_margins(model, x):
    """Per sample: how close any activation-quantizer input comes to a rounding threshold.

    The distance of each quantizer input to its nearest threshold (0 for the sign,
    (k + 1/2) steps for DoReFa and PACT), relative to the largest magnitude of that
    input in the batch, minimized over all quantizers and elements of the sample.
    """
    records = []
    classes = (slb_keras.ActivationQuantizer, slb_keras.PACTQuantizer)
    originals = {cls: cls.call for cls in classes}

    def recording(cls):
        def call(self, inputs, *args, **kwargs):
            records.append((self, keras.ops.convert_to_numpy(inputs)))
            return originals[cls](self, inputs, *args, **kwargs)

        return call

    with mock.patch.object(classes[0], "call", recording(classes[0])), mock.patch.object(
        classes[1], "call", recording(classes[1])
    ):
        model(x, training=False)
    margins = np.full(len(x), np.inf)
    for quantizer, values in records:
        if quantizer.bits == 32:
            continue
        if quantizer.bits == 1 and not isinstance(quantizer, slb_keras.PACTQuantizer):
            distance = np.abs(values)
        else:
            top = max(float(quantizer.alpha.numpy()), 1e-3) if hasattr(quantizer, "alpha") else 1.0
            step = top / (2**quantizer.bits - 1)
            steps = np.clip(values, 0.0, top) / step
            distance = np.abs(steps - np.floor(steps) - 0.5) * step
        relative = distance / max(float(np.abs(values).max()), 1e-12)
        margins = np.minimum(margins, relative.reshape(len(x), -1).min(axis=1))
    return margins


def has_quantized_activations(model):
    return any(
        getattr(layer, "bits", 32) != 32
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, (slb_keras.ActivationQuantizer, slb_keras.PACTQuantizer))
    )


def assert_tflite_matches(model, path, inputs, tolerance=1e-4):
    """TFLite == Keras predict: error <= tolerance of the output scale, same top-1.

    Both compute in float32 with exactly the same weights, but in different orders
    (XNNPACK vs TensorFlow kernels), so they differ by rounding (~1e-7 of the output
    scale). With quantized activations, an activation within that rounding of a
    threshold (a sign input of 6e-8, a DoReFa input at k + 1/2 steps) can be quantized
    the other way, which changes that sample's output. Keras's own float TFLite
    conversion of the same network shows the same (more often: 24 vs 4 samples of
    359 for VGG-Small W4A4). So with quantized activations only such samples may
    differ, rarely (at most 5% of them, with at most 1% or one top-1 change); without,
    every sample must match.
    """
    quantized = has_quantized_activations(model)
    for x in inputs:
        expected = model.predict(x, verbose=0)
        actual = run_tflite(path, x)
        errors = np.max(np.abs(actual - expected), axis=-1) / np.max(np.abs(expected))
        wrong = errors > tolerance
        flipped = actual.argmax(-1) != expected.argmax(-1)
        if not quantized:
            assert not wrong.any() and not flipped.any(), (errors.max(), flipped.sum())
        elif wrong.any() or flipped.any():
            margins = threshold_margins(model, x)
            assert np.all(margins[wrong | flipped] < 1e-6), margins[wrong | flipped]
            assert wrong.sum() <= max(2, math.ceil(0.05 * len(x))), (wrong.sum(), len(x))
            assert flipped.sum() <= max(1, len(x) // 100), (flipped.sum(), len(x))


def int8_tensors(path):
    """name -> (int8/int16 array, scales, zero points), read back with the LiteRT interpreter."""
    interpreter = Interpreter(model_path=os.fspath(path))
    interpreter.allocate_tensors()
    found = {}
    for detail in interpreter.get_tensor_details():
        if detail["dtype"] in (np.int8, np.int16):
            params = detail["quantization_parameters"]
            found[detail["name"]] = (
                interpreter.get_tensor(detail["index"]),
                params["scales"],
                params["zero_points"],
            )
    return found


def tflite_layout(layer, kernel):
    """A Keras kernel in the layout of the TFLite op that uses it."""
    if isinstance(layer, keras.layers.Dense):
        return kernel.T  # FULLY_CONNECTED: [out, in]
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        h, w, c, m = kernel.shape
        return kernel.reshape(1, h, w, c * m)
    if isinstance(layer, keras.layers.Conv1D):
        return np.transpose(kernel, (2, 0, 1))[:, None]  # CONV_2D over [out, 1, k, in]
    return np.transpose(kernel, (3, 0, 1, 2))  # CONV_2D: OHWI


def integer_route(layer, arithmetic="auto"):
    """Whether export_tflite(arithmetic=...) runs this SLB layer on its integer route."""
    quantizer = layer.input_quantizer
    sign = isinstance(quantizer, slb_keras.ActivationQuantizer) and quantizer.bits == 1
    return arithmetic != "float" and sign and layer.wbits <= 7


def assert_exact_int8_kernels(model, path, arithmetic="auto"):
    """Each SLB kernel is stored as its integers (m - 1) W_h, read the expected way.

    Float route: per-tensor scale 1/(m - 1) (DEQUANTIZE gives W_h bit for bit).
    Integer route: int8 read by the hybrid op itself, scale 2 per output channel
    (it convolves b = (s + 1) / 2 with 2 (m - 1) W_h).
    """
    tensors = int8_tensors(path)
    layers = slb_keras.slb_layers(model)
    assert layers
    for layer in layers:
        m1 = 2**layer.wbits - 1
        dtype = np.int8 if layer.wbits <= 7 else np.int16  # 8 bits: +-255
        values, scales, zero_points = tensors[f"{layer.name}/kernel_{dtype.__name__}"]
        hard = tflite_layout(layer, layer.hard_kernel().numpy())
        assert values.dtype == dtype
        # The stored integers are (m-1) W_h.
        np.testing.assert_array_equal(values, np.rint(hard * m1).astype(dtype))
        if integer_route(layer, arithmetic):
            channels = values.shape[-1 if isinstance(layer, keras.layers.DepthwiseConv2D) else 0]
            np.testing.assert_array_equal(scales, np.full(channels, 2.0, np.float32))
            np.testing.assert_array_equal(zero_points, np.zeros(channels))
        else:
            np.testing.assert_array_equal(scales, [np.float32(1.0 / m1)])
            np.testing.assert_array_equal(zero_points, [0])
            # ... and dequantize to W_h bit for bit.
            np.testing.assert_array_equal(values.astype(np.float32) * scales[0].astype(np.float32), hard)


def flatbuffer_ops(path):
    model = flatbuffer_utils.read_model(os.fspath(path))
    return model, [flatbuffer_utils.opcode_to_name(model, op.opcodeIndex) for op in model.subgraphs[0].operators]


# -- the inference model -----------------------------------------------------------------


@pytest.mark.parametrize("wbits,abits", [(1, 1), (2, 2), (4, 32)])
def test_inference_model_is_plain_keras_and_computes_the_same(wbits, abits, digits, tmp_path):
    model = conv_model(wbits, abits)
    inference = slb_keras.to_inference_model(model)
    x, noise = digits
    for data in (x, noise):
        # Same layers on the same kernel values: bit for bit equal outputs.
        np.testing.assert_array_equal(inference(data).numpy(), model(data, training=False).numpy())
    layers = inference._flatten_layers(include_self=False, recursive=True)
    assert all(type(layer).__module__.startswith("keras.") for layer in layers)
    assert not [layer for layer in layers if "SLB" in type(layer).__name__]
    for source in slb_keras.slb_layers(model):
        target = next(layer for layer in layers if layer.name == source.name)
        np.testing.assert_array_equal(target.kernel.numpy(), source.hard_kernel().numpy())
    inference.save(tmp_path / "inference.keras")
    with zipfile.ZipFile(tmp_path / "inference.keras") as archive:
        assert "slb_keras" not in archive.read("config.json").decode()
    reloaded = keras.models.load_model(tmp_path / "inference.keras", safe_mode=True)
    np.testing.assert_array_equal(reloaded(x).numpy(), inference(x).numpy())


def test_inference_model_loads_and_runs_without_slb_keras(tmp_path):
    model = conv_model(2, 2)
    inference = slb_keras.to_inference_model(model)
    inference.save(tmp_path / "inference.keras")
    x = np.random.default_rng(0).random((4, 8, 8, 1), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", inference(x).numpy())
    script = (
        "import sys, numpy as np, keras\n"
        "m = keras.models.load_model(sys.argv[1] + '/inference.keras', safe_mode=True)\n"
        "y = m(np.load(sys.argv[1] + '/x.npy')).numpy()\n"
        "assert not [n for n in sys.modules if n.startswith('slb_keras')]\n"
        "np.testing.assert_array_equal(y, np.load(sys.argv[1] + '/y.npy'))\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")


def test_quantizers_become_the_same_ops():
    x = np.linspace(-2.0, 3.0, 1001, dtype=np.float32).reshape(1, -1)
    x[0, 400] = 0.0  # sign(0) = +1
    quantizers = [
        slb_keras.ActivationQuantizer(1),
        slb_keras.ActivationQuantizer(3),
        slb_keras.ActivationQuantizer(32),
        slb_keras.PACTQuantizer(2, alpha_initializer=1.7),
        slb_keras.PACTQuantizer(32, alpha_initializer=0.9),
    ]
    for quantizer in quantizers:
        model = keras.Sequential([keras.Input((1001,)), quantizer])
        with pytest.warns(UserWarning, match="no SLB layers"):
            inference = slb_keras.to_inference_model(model)
        assert not [layer for layer in inference.layers if isinstance(layer, type(quantizer))]
        np.testing.assert_array_equal(inference(x).numpy(), model(x).numpy())


def test_state_batch_norm_becomes_keras_batch_norm_with_inference_statistics():
    model = dense_model(1, 1)
    state_bns = [l for l in model.layers if isinstance(l, slb_keras.StateBatchNormalization)]
    for calibrated in (1.0, 0.0):
        for layer in state_bns:
            layer.calibrated.assign(calibrated)
        inference = slb_keras.to_inference_model(model)
        bns = [l for l in inference.layers if isinstance(l, keras.layers.BatchNormalization)]
        assert all(type(l) is keras.layers.BatchNormalization for l in bns)
        for layer in state_bns:
            target = next(l for l in bns if l.name == layer.name)
            mean = layer.hard_moving_mean if calibrated else layer.moving_mean
            variance = layer.hard_moving_variance if calibrated else layer.moving_variance
            np.testing.assert_array_equal(target.moving_mean.numpy(), mean.numpy())
            np.testing.assert_array_equal(target.moving_variance.numpy(), variance.numpy())
        x = np.random.default_rng(0).random((16, 8, 8, 1), dtype=np.float32)
        np.testing.assert_array_equal(inference(x).numpy(), model(x, training=False).numpy())


def test_fold_batch_norm_removes_batch_norms_and_keeps_outputs(digits):
    model = conv_model(2, 2)
    folded = slb_keras.to_inference_model(model, fold_batch_norm=True)
    kept = [l.name for l in folded._flatten_layers() if isinstance(l, keras.layers.BatchNormalization)]
    # stem_bn follows the stem conv; the depthwise conv's BN and the nested block's
    # StateBN follow SLB layers; all three are folded.
    assert kept == []
    stem = folded.get_layer("stem")
    assert stem.use_bias and not np.array_equal(stem.kernel.numpy(), model.get_layer("stem").kernel.numpy())
    x, _ = digits
    expected = model(x, training=False).numpy()
    error = np.max(np.abs(folded(x).numpy() - expected)) / np.max(np.abs(expected))
    assert error <= 1e-5


# -- TFLite --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dense_exports(tmp_path_factory):
    """Exports each (wbits, abits) dense model once: export(wbits, abits) -> (model, report)."""
    directory = tmp_path_factory.mktemp("dense")
    cache = {}

    def get(wbits, abits):
        if (wbits, abits) not in cache:
            model = dense_model(wbits, abits, seed=wbits * 100 + abits)
            report = slb_keras.export_tflite(model, directory / f"w{wbits}a{abits}.tflite")
            cache[wbits, abits] = model, report
        return cache[wbits, abits]

    return get


# The whole grid; the pairs outside a covering set run with the slow tests.
COVERING_BITS = [(1, 1), (2, 2), (4, 4), (2, 32)]
GRID = [
    pytest.param(w, a, marks=() if (w, a) in COVERING_BITS else pytest.mark.slow)
    for w in WBITS
    for a in ABITS
]


@pytest.mark.parametrize("wbits,abits", GRID)
def test_tflite_dense_model_is_exact(wbits, abits, dense_exports, digits):
    model, report = dense_exports(wbits, abits)
    assert_tflite_matches(model, report.path, digits)
    assert_exact_int8_kernels(model, report.path)


@pytest.mark.parametrize("wbits,abits", [(1, 1), (2, 4), (4, 2), (2, 32)])
def test_tflite_conv_model_is_exact(wbits, abits, digits, tmp_path):
    model = conv_model(wbits, abits)
    report = slb_keras.export_tflite(model, tmp_path / "model.tflite")
    assert_tflite_matches(model, report.path, digits)
    assert_exact_int8_kernels(model, report.path)
    graph_model, names = flatbuffer_ops(report.path)
    # Each float-route SLB kernel is read by DEQUANTIZE straight into its
    # convolution/matmul, each integer-route one by the op itself: the layout ops
    # the converter added were applied to the int8 codes.
    layers = slb_keras.slb_layers(model)
    assert names.count("DEQUANTIZE") == sum(not integer_route(layer) for layer in layers)
    assert "TRANSPOSE" not in names and "BATCH_MATMUL" not in names


def test_tflite_has_only_builtin_ops_and_a_signature(dense_exports):
    model, report = dense_exports(2, 2)
    graph_model, names = flatbuffer_ops(report.path)
    for code in graph_model.operatorCodes:
        assert code.customCode is None
        assert max(code.builtinCode, code.deprecatedBuiltinCode) != 32  # CUSTOM
    assert not [name for name in names if "FLEX" in name.upper()]
    interpreter = Interpreter(model_path=report.path)
    runner = interpreter.get_signature_runner("serving_default")
    x = np.random.default_rng(0).random((3, 8, 8, 1), dtype=np.float32)
    output = runner(image=x)["output_0"]
    np.testing.assert_allclose(output, model.predict(x, verbose=0), rtol=1e-4, atol=1e-4)
    assert len(interpreter.get_input_details()) == 1  # the kernels are no longer inputs


def test_kernel_without_extreme_values_keeps_scale_one_over_m_minus_1(tmp_path):
    # Weight-only quantization would take the scale from max|W| = 1/3 here.
    model = keras.Sequential([keras.Input((8,)), slb_keras.SLBDense(4, wbits=2, name="slb")])
    layer = model.layers[0]
    pattern = np.where(np.arange(32).reshape(8, 4) % 3 == 0, 1.0, -1.0) / 3.0
    layer.assign_kernel(pattern)
    assert np.unique(np.rint(layer.hard_kernel().numpy() * 3)).tolist() == [-1.0, 1.0]
    report = slb_keras.export_tflite(model, tmp_path / "model.tflite")
    assert_exact_int8_kernels(model, report.path)
    values, _, _ = int8_tensors(report.path)["slb/kernel_int8"]
    assert set(np.unique(values)) == {-1, 1}
    assert "{-1, 1}/3" in str(report)
    x = np.random.default_rng(0).normal(size=(5, 8)).astype("float32")
    np.testing.assert_allclose(run_tflite(report.path, x), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("wbits", [3, 7, 8])
def test_wide_kernels_are_exact(wbits, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 7 and 8 bits warn about training memory
        model = keras.Sequential([
            keras.Input((6, 6, 3)),
            slb_keras.SLBConv2D(4, 3, wbits=wbits, input_quantizer="dorefa4"),
            keras.layers.Flatten(),
            slb_keras.SLBDense(5, wbits=wbits),
        ])
    report = slb_keras.export_tflite(model, tmp_path / "model.tflite")
    assert_exact_int8_kernels(model, report.path)
    x = np.random.default_rng(0).random((8, 6, 6, 3), dtype=np.float32)
    assert_tflite_matches(model, report.path, [x])
    rows = {row.kind: row for row in report.layers}
    assert rows["SLBDense"].stored_bytes == 64 * 5 * (1 if wbits <= 7 else 2)  # 4x4x4 inputs


def test_mixed_precision_model_exports_in_float32(tmp_path):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = keras.Sequential([
            keras.Input((8, 8, 3)),
            slb_keras.SLBConv2D(4, 3, wbits=2, input_quantizer="dorefa2"),
            slb_keras.StateBatchNormalization(),
            keras.layers.Flatten(),
            keras.layers.Dense(3, dtype="float32"),
        ])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    # TFLite's builtin ops are float32: both exports compute in float32.
    report = slb_keras.export_tflite(model, tmp_path / "model.tflite")
    assert_exact_int8_kernels(model, report.path)
    slb_keras.export_packed(model, tmp_path / "model.slb")
    float32_model = slb_keras.load_packed(tmp_path / "model.slb")
    assert all(layer.compute_dtype == "float32" for layer in float32_model.layers)
    x = np.random.default_rng(0).random((16, 8, 8, 3), dtype=np.float32)
    assert_tflite_matches(float32_model, report.path, [x])


def test_full_precision_layers_stay_float_unless_asked(dense_exports, tmp_path, digits):
    model, report = dense_exports(2, 32)
    slb_names = {f"{layer.name}/kernel_int8" for layer in slb_keras.slb_layers(model)}
    assert set(int8_tensors(report.path)) == slb_names
    quantized = slb_keras.export_tflite(model, tmp_path / "q.tflite", quantize_full_precision=True)
    extra = set(int8_tensors(quantized.path)) - slb_names
    assert extra  # fc_in (64 x 32 >= 1024 weights) is now int8
    assert_exact_int8_kernels(model, quantized.path)
    assert quantized.file_bytes < report.file_bytes
    row = next(r for r in quantized.layers if r.name == "fc_in")
    assert row.bits == 8 and row.stored_bytes == 64 * 32
    x, _ = digits
    expected = model.predict(x, verbose=0)
    error = np.max(np.abs(run_tflite(quantized.path, x) - expected)) / np.max(np.abs(expected))
    assert error < 0.1  # dynamic range: close, not exact


def test_report_matches_the_file(dense_exports):
    model, report = dense_exports(4, 4)
    assert report.format == "tflite"
    assert report.file_bytes == os.path.getsize(report.path)
    inference = slb_keras.to_inference_model(model)
    assert report.float32_bytes == 4 * inference.count_params()
    tensors = int8_tensors(report.path)
    rows = {row.name: row for row in report.layers}
    assert set(rows) == {"fc_in", "slb0", "slb1", "fc_out"}
    slb_weights = 0
    for layer in slb_keras.slb_layers(model):
        row = rows[layer.name]
        codes = layer.kernel_codes().numpy()
        slb_weights += codes.size
        assert (row.bits, row.kind, row.num_weights) == (4, "SLBDense", codes.size)
        assert row.stored_bytes == tensors[f"{layer.name}/kernel_int8"][0].nbytes
        assert row.packed_bytes == math.ceil(codes.size * 4 / 8)
        assert row.values == tuple(slb_keras.value_set(4)[np.unique(codes)].tolist())
    assert rows["fc_out"].bits == 32 and rows["fc_out"].stored_bytes == 4 * 32 * 10
    assert report.packed_bytes == slb_weights // 2 + report.float32_bytes - 4 * slb_weights
    text = str(report)
    assert all(name in text for name in rows) and str(report.file_bytes) in text
    assert "of the 16 values" in text


# -- packed -----------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", range(1, 9))
def test_pack_codes_roundtrip(bits):
    codes = np.random.default_rng(bits).integers(0, 2**bits, size=1001)
    data = packed.pack_codes(codes, bits)
    assert len(data) == math.ceil(1001 * bits / 8)
    np.testing.assert_array_equal(packed.unpack_codes(data, bits, 1001), codes)


def test_pack_codes_rejects_bad_codes():
    with pytest.raises(ValueError, match="codes"):
        packed.pack_codes([0, 4], bits=2)
    with pytest.raises(ValueError, match="bits"):
        packed.pack_codes([0, 1], bits=9)
    with pytest.raises(ValueError, match="bytes"):
        packed.unpack_codes(b"\x00", bits=2, count=5)


@pytest.mark.parametrize("wbits", WBITS)
def test_packed_file_rebuilds_the_inference_model_exactly(wbits, digits, tmp_path):
    model = conv_model(wbits, 2)
    report = slb_keras.export_packed(model, tmp_path / "model.slb")
    assert report.format == "packed"
    assert report.file_bytes == os.path.getsize(tmp_path / "model.slb")
    rebuilt = slb_keras.load_packed(tmp_path / "model.slb")
    inference = slb_keras.to_inference_model(model)
    assert [w.path for w in rebuilt.weights] == [w.path for w in inference.weights]
    for a, b in zip(rebuilt.weights, inference.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for x in digits:
        np.testing.assert_array_equal(rebuilt.predict(x, verbose=0), inference.predict(x, verbose=0))
    # The codes are stored with wbits bits each.
    with zipfile.ZipFile(tmp_path / "model.slb") as archive:
        manifest = json.loads(archive.read("manifest.json"))
        coded = [e for e in manifest["weights"] if e["encoding"] == "codes"]
        assert len(coded) == len(slb_keras.slb_layers(model))
        for entry in coded:
            layer = next(l for l in slb_keras.slb_layers(model) if l.name == entry["layer"])
            data = archive.read(entry["member"])
            codes = layer.kernel_codes().numpy()
            assert len(data) == math.ceil(codes.size * wbits / 8)
            np.testing.assert_array_equal(packed.unpack_codes(data, wbits, codes.size), codes.ravel())
            assert entry["values"] == slb_keras.value_set(wbits).tolist()
    # Stored size: the ideal packed size plus the archive's small overhead.
    assert report.packed_bytes < report.file_bytes < report.packed_bytes + 40_000


def test_load_packed_rejects_other_files(tmp_path):
    (tmp_path / "junk.slb").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a packed model file"):
        slb_keras.load_packed(tmp_path / "junk.slb")
    with zipfile.ZipFile(tmp_path / "other.slb", "w") as archive:
        archive.writestr("manifest.json", json.dumps({"format": "something", "version": 1}))
    with pytest.raises(ValueError, match="expected 'slb_keras.packed'"):
        slb_keras.load_packed(tmp_path / "other.slb")


# -- bad input ----------------------------------------------------------------------------------


class _Custom(keras.layers.Layer):
    def call(self, inputs):
        return inputs * 2.0


def test_model_without_slb_layers_exports_with_a_notice(tmp_path, digits):
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    with pytest.warns(UserWarning, match="no SLB layers"):
        report = slb_keras.export_tflite(model, tmp_path / "float.tflite")
    assert os.path.getsize(report.path) == report.file_bytes
    assert int8_tensors(report.path) == {}
    assert_tflite_matches(model, report.path, digits)
    with pytest.warns(UserWarning, match="no SLB layers"):
        slb_keras.export_packed(model, tmp_path / "float.slb")


@pytest.mark.parametrize("exporter", [slb_keras.export_tflite, slb_keras.export_packed])
def test_bad_models_are_rejected_and_leave_no_file(exporter, tmp_path):
    inputs = keras.Input((8,))
    custom = keras.Model(inputs, _Custom(name="doubler")(slb_keras.SLBDense(4)(inputs)))
    with pytest.raises(ValueError, match=r"'doubler' \(.*_Custom\)"):
        exporter(custom, tmp_path / "model.out")
    unbuilt = keras.Sequential([slb_keras.SLBDense(4)])
    with pytest.raises(ValueError, match="not built"):
        exporter(unbuilt, tmp_path / "model.out")

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="subclassed"):
        exporter(Subclassed(), tmp_path / "model.out")
    with pytest.raises(ValueError, match="Keras model"):
        exporter("model.keras", tmp_path / "model.out")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("exporter", [slb_keras.export_tflite, slb_keras.export_packed])
def test_unwritable_paths_are_rejected(exporter, tmp_path):
    model = dense_model(1, 1)
    with pytest.raises(ValueError, match="does not exist"):
        exporter(model, tmp_path / "missing" / "model.out")
    with pytest.raises(ValueError, match="directory"):
        exporter(model, tmp_path)
    with pytest.raises(ValueError, match="path"):
        exporter(model, 42)
    assert os.listdir(tmp_path) == []


def test_failed_export_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    model = dense_model(1, 1)
    target = tmp_path / "model.tflite"
    target.write_bytes(b"old")

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(export.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        slb_keras.export_tflite(model, target)
    with pytest.raises(OSError, match="disk full"):
        slb_keras.export_packed(model, target)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["model.tflite"]


# -- command line ---------------------------------------------------------------------------------


def test_command_line_exports(tmp_path, capsys, digits):
    model = dense_model(2, 2)
    model.save(tmp_path / "model.keras")
    status = export.main(
        [f"--model={tmp_path / 'model.keras'}", f"--out={tmp_path / 'model.tflite'}",
         f"--packed={tmp_path / 'model.slb'}"]
    )
    assert status == 0
    out = capsys.readouterr().out
    assert "slb0" in out and str(os.path.getsize(tmp_path / "model.tflite")) in out
    assert_tflite_matches(model, tmp_path / "model.tflite", digits)
    rebuilt = slb_keras.load_packed(tmp_path / "model.slb")
    x, _ = digits
    np.testing.assert_array_equal(rebuilt(x).numpy(), slb_keras.to_inference_model(model)(x).numpy())


def test_command_line_bad_input_is_one_line_and_status_2(tmp_path, capsys):
    float_model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    float_model.save(tmp_path / "float.keras")
    (tmp_path / "broken.keras").write_bytes(b"not a model")
    cases = [
        [f"--model={tmp_path / 'missing.keras'}", f"--out={tmp_path / 'a.tflite'}"],
        [f"--model={tmp_path / 'broken.keras'}", f"--out={tmp_path / 'a.tflite'}"],
        [f"--model={tmp_path / 'float.keras'}", f"--out={tmp_path / 'no' / 'a.tflite'}"],
        [f"--model={tmp_path / 'float.keras'}"],
        ["--model", str(tmp_path / "float.keras"), "--out", str(tmp_path / "a.tflite"), "--bogus"],
    ]
    for argv in cases:
        with pytest.raises(SystemExit) as exit_info:
            export.main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "error" in err, err
    assert sorted(os.listdir(tmp_path)) == ["broken.keras", "float.keras"]
    # A model with no SLB layers: a notice, and the export.
    assert export.main([f"--model={tmp_path / 'float.keras'}", f"--out={tmp_path / 'f.tflite'}"]) == 0
    assert "no SLB layers" in capsys.readouterr().err
    assert os.path.isfile(tmp_path / "f.tflite")


def test_python_dash_m_entry_point(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "error::RuntimeWarning"}
    result = subprocess.run(
        [sys.executable, "-m", "slb_keras.export", f"--model={tmp_path / 'none.keras'}",
         f"--out={tmp_path / 'x.tflite'}"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("python -m slb_keras.export: error:")
    assert "none.keras" in result.stderr


# -- the paper's networks (models/), at reduced resolution --------------------------------------

MODEL_SHAPES = {
    "vgg_small": dict(input_shape=(16, 16, 3), width_multiplier=0.5),  # full width: sizes
    "resnet20": dict(input_shape=(16, 16, 3)),  # PACT activations
    "resnet18": dict(input_shape=(32, 32, 3), width_multiplier=0.25),
}


@pytest.fixture(scope="module")
def network_exports(tmp_path_factory):
    """export(name, wbits, abits) -> (model, TFLite report), each network exported once."""
    from models import get_model

    directory = tmp_path_factory.mktemp("networks")
    cache = {}

    def get(name, wbits, abits):
        if (name, wbits, abits) not in cache:
            keras.utils.set_random_seed(wbits * 10 + abits)
            model = get_model(name, method="slb", wbits=wbits, abits=abits, **MODEL_SHAPES[name])
            _randomize_batch_norms(model, seed=wbits * 10 + abits)
            report = slb_keras.export_tflite(model, directory / f"{name}_w{wbits}a{abits}.tflite")
            cache[name, wbits, abits] = model, report
        return cache[name, wbits, abits]

    return get


def network_inputs(name):
    size = MODEL_SHAPES[name]["input_shape"][0]
    (_, _), (x_test, _) = load_digits(image_size=size, channels=3)
    noise = np.random.default_rng(2).normal(0.5, 1.0, size=(32, size, size, 3)).astype("float32")
    return x_test, noise


@pytest.mark.slow
@pytest.mark.parametrize("wbits,abits", COVERING_BITS)
@pytest.mark.parametrize("name", sorted(MODEL_SHAPES))
def test_tflite_networks_are_exact(name, wbits, abits, network_exports):
    model, report = network_exports(name, wbits, abits)
    assert_tflite_matches(model, report.path, network_inputs(name))
    assert_exact_int8_kernels(model, report.path)
    assert report.file_bytes == os.path.getsize(report.path)


@pytest.mark.slow
def test_vgg_small_sizes(tmp_path):
    import tensorflow as tf
    from models import get_model

    keras.utils.set_random_seed(0)
    model = get_model("vgg_small", method="slb", wbits=1, abits=1, input_shape=(16, 16, 3))
    report = slb_keras.export_tflite(model, tmp_path / "vgg.tflite")
    converter = tf.lite.TFLiteConverter.from_keras_model(slb_keras.to_inference_model(model))
    float_tflite = tmp_path / "float.tflite"
    float_tflite.write_bytes(converter.convert())
    float_bytes = os.path.getsize(float_tflite)
    assert report.file_bytes == os.path.getsize(report.path)
    assert report.file_bytes <= 0.27 * float_bytes, (report.file_bytes, float_bytes)
    packed_report = slb_keras.export_packed(model, tmp_path / "vgg.slb")
    assert packed_report.file_bytes == os.path.getsize(tmp_path / "vgg.slb")
    assert packed_report.file_bytes <= 0.05 * float_bytes, (packed_report.file_bytes, float_bytes)
    # The report's totals agree with each other and with the model.
    slb = [row for row in report.layers if row.kind.startswith("SLB")]
    assert len(slb) == 5 and all(row.bits == 1 and row.values == (-1.0, 1.0) for row in slb)
    assert sum(row.stored_bytes for row in slb) == sum(row.num_weights for row in slb)
    assert report.float32_bytes == 4 * slb_keras.to_inference_model(model).count_params()
    assert packed_report.packed_bytes == report.packed_bytes < packed_report.file_bytes
    assert_exact_int8_kernels(model, report.path)
