import inspect
import os
import zipfile

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf
from absl.testing import parameterized
from keras.src import testing

import slb_keras

# (SLB class, Keras class, Keras kwargs, input shape, kernel argument names)
LAYERS = [
    (slb_keras.SLBDense, keras.layers.Dense, {"units": 5}, (3, 6)),
    (slb_keras.SLBConv2D, keras.layers.Conv2D, {"filters": 4, "kernel_size": 3, "padding": "same"}, (2, 7, 7, 3)),
    (slb_keras.SLBConv2D, keras.layers.Conv2D, {"filters": 4, "kernel_size": 2, "strides": 2, "groups": 2}, (2, 8, 8, 4)),
    (slb_keras.SLBConv1D, keras.layers.Conv1D, {"filters": 4, "kernel_size": 3}, (2, 9, 3)),
    (slb_keras.SLBDepthwiseConv2D, keras.layers.DepthwiseConv2D, {"kernel_size": 3, "depth_multiplier": 2}, (2, 6, 6, 3)),
]
LAYER_IDS = ["dense", "conv2d", "conv2d_groups", "conv1d", "depthwise"]
SLB_ARGS = {"wbits": 1, "input_quantizer": None, "logits_initializer": "random_normal"}


def _build(cls, kwargs, input_shape, **slb_kwargs):
    layer = cls(**kwargs, **slb_kwargs)
    layer.build(input_shape)
    return layer


def _inputs(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


class LayerHarnessTest(testing.TestCase):
    """Keras's own layer test harness on every SLB layer."""

    @parameterized.named_parameters(
        [(f"{name}_w{w}", cls, kwargs, shape, w) for (cls, _, kwargs, shape), name in zip(LAYERS, LAYER_IDS) for w in (1, 3)]
    )
    def test_run_layer_test(self, cls, kwargs, shape, wbits):
        use_bias = wbits == 1
        self.run_layer_test(
            cls,
            init_kwargs={**kwargs, "wbits": wbits, "use_bias": use_bias, "input_quantizer": "dorefa2"},
            input_shape=shape,
            expected_num_trainable_weights=1 + int(use_bias),
            expected_num_non_trainable_weights=1,
        )

    def test_run_layer_test_with_pact_and_regularizer(self):
        self.run_layer_test(
            slb_keras.SLBConv2D,
            init_kwargs={
                "filters": 2,
                "kernel_size": 3,
                "wbits": 2,
                "input_quantizer": "pact2",
                "kernel_regularizer": "l2",
                "activation": "relu",
            },
            input_shape=(2, 5, 5, 3),
            expected_output_shape=(2, 3, 3, 2),
            expected_num_trainable_weights=3,  # alpha, logits, bias
            expected_num_non_trainable_weights=1,
            expected_num_losses=1,
        )


@pytest.mark.parametrize("slb_cls, keras_cls", [(s, k) for s, k, _, _ in LAYERS[:2]] + [(s, k) for s, k, _, _ in LAYERS[3:]])
def test_signature_parity(slb_cls, keras_cls):
    keras_params = dict(inspect.signature(keras_cls.__init__).parameters)
    slb_params = dict(inspect.signature(slb_cls.__init__).parameters)
    kwargs = keras_params.pop("kwargs")
    assert slb_params.pop("kwargs").kind == kwargs.kind
    for name, param in keras_params.items():
        assert name in slb_params, name
        assert slb_params[name].default == param.default, name
    extra = {k: v.default for k, v in slb_params.items() if k not in keras_params}
    assert extra == SLB_ARGS


@pytest.mark.parametrize("slb_cls, keras_cls, kwargs, shape", LAYERS, ids=LAYER_IDS)
@pytest.mark.parametrize("wbits", [1, 2, 4])
def test_one_hot_logits_equal_keras_layer(slb_cls, keras_cls, kwargs, shape, wbits):
    slb = _build(slb_cls, kwargs, shape, wbits=wbits)
    ref = _build(keras_cls, kwargs, shape)
    rng = np.random.default_rng(1)
    values = slb_keras.value_set(wbits)[rng.integers(0, 2**wbits, size=tuple(slb.kernel_logits.shape[:-1]))]
    slb.assign_kernel(values, margin=100.0)
    slb.temperature.assign(10.0)
    ref.kernel.assign(values)
    if ref.bias is not None:
        bias = rng.normal(size=ref.bias.shape).astype(np.float32)
        ref.bias.assign(bias)
        slb.bias.assign(bias)
    x = _inputs(shape)
    expected = ref(x).numpy()
    np.testing.assert_allclose(slb(x, training=False).numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(slb(x, training=True).numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(slb.hard_kernel().numpy(), values)
    np.testing.assert_array_equal(slb.kernel.numpy(), values)  # outside call: hard


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
def test_hard_kernel_only_values_of_v(bits):
    layer = _build(slb_keras.SLBConv2D, {"filters": 8, "kernel_size": 3}, (1, 5, 5, 4), wbits=bits)
    hard = layer.hard_kernel().numpy()
    assert set(np.unique(hard)) <= set(slb_keras.value_set(bits).tolist())
    codes = layer.kernel_codes().numpy()
    assert codes.dtype == np.int32 and codes.min() >= 0 and codes.max() < 2**bits
    np.testing.assert_array_equal(slb_keras.codes_to_values(codes, bits), hard)
    np.testing.assert_array_equal(codes, np.argmax(layer.kernel_logits.numpy(), -1))


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_soft_kernel_range_and_temperature(bits):
    layer = _build(slb_keras.SLBDense, {"units": 16}, (1, 32), wbits=bits)
    logits = np.random.default_rng(2).normal(size=layer.kernel_logits.shape) * 3
    top = np.argmax(logits, -1)[..., None]
    np.put_along_axis(logits, top, np.max(logits, -1, keepdims=True) + 0.02, -1)  # margin >= 0.02
    layer.kernel_logits.assign(logits)
    hard = layer.hard_kernel().numpy()
    gaps = []
    for tau in (1.0, 10.0, 100.0, 1000.0):
        slb_keras.set_temperature(layer, tau)
        soft = layer.soft_kernel().numpy()
        assert soft.min() >= -1 and soft.max() <= 1
        gaps.append(np.abs(soft - hard).max())
    assert gaps[-1] < 1e-3 and gaps[0] > gaps[-1]
    # training=True uses the soft kernel at the layer's temperature.
    slb_keras.set_temperature(layer, 1.0)
    x = _inputs((3, 32))
    np.testing.assert_allclose(
        layer(x, training=True).numpy(), x @ layer.soft_kernel().numpy() + layer.bias.numpy(), atol=1e-4
    )
    np.testing.assert_allclose(layer(x).numpy(), x @ hard + layer.bias.numpy(), atol=1e-4)


def test_gradients_flow_to_logits_only_in_training():
    layer = _build(slb_keras.SLBDense, {"units": 3, "use_bias": False}, (2, 4), wbits=2)
    x = _inputs((2, 4))
    with tf.GradientTape(persistent=True) as tape:
        soft = tf.reduce_sum(layer(x, training=True))
        hard = tf.reduce_sum(layer(x, training=False))
    grad = tape.gradient(soft, layer.kernel_logits)
    assert grad is not None and np.abs(grad.numpy()).sum() > 0
    assert tape.gradient(hard, layer.kernel_logits) is None


def test_input_quantizer_is_applied():
    layer = _build(slb_keras.SLBDense, {"units": 2, "use_bias": False}, (1, 3), input_quantizer="ste_sign")
    x = np.array([[0.3, -0.2, 5.0]], np.float32)
    np.testing.assert_allclose(layer(x).numpy(), np.sign(x + 1e-12) @ layer.hard_kernel().numpy(), atol=1e-6)


def test_save_load_keras_file_identical_and_stores_logits(tmp_path):
    inputs = keras.Input((8, 8, 3))
    x = slb_keras.SLBConv2D(6, 3, wbits=2, input_quantizer="pact2", name="conv")(inputs)
    x = slb_keras.SLBDepthwiseConv2D(3, wbits=3, input_quantizer="dorefa4", name="dw")(x)
    x = keras.layers.Flatten()(x)
    outputs = slb_keras.SLBDense(4, wbits=1, input_quantizer="ste_sign", name="fc")(x)
    model = keras.Model(inputs, outputs)
    slb_keras.set_temperature(model, 3.0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # no custom_objects, safe_mode on
    x = _inputs((2, 8, 8, 3))
    np.testing.assert_array_equal(loaded(x, training=True).numpy(), model(x, training=True).numpy())
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert loaded.get_layer("conv").temperature.numpy() == 3.0
    assert loaded.get_layer("dw").wbits == 3
    # The file holds the logits (value axis last) and tau, never a float kernel.
    with zipfile.ZipFile(path) as archive:
        archive.extract("model.weights.h5", tmp_path)
    shapes = []
    with h5py.File(tmp_path / "model.weights.h5") as f:
        f.visititems(lambda name, obj: shapes.append(obj.shape) if isinstance(obj, h5py.Dataset) else None)
    assert (3, 3, 3, 6, 4) in shapes and (3, 3, 6, 1, 8) in shapes and (96, 4, 2) in shapes
    assert (3, 3, 3, 6) not in shapes and (96, 4) not in shapes


def _wbits_model(wbits, filters=6):
    return keras.Sequential([
        keras.Input((8, 8, 3)),
        slb_keras.SLBConv2D(filters, 3, wbits=wbits, name="conv"),
        keras.layers.Flatten(),
        slb_keras.SLBDense(4, wbits=1, name="fc"),
    ])


@pytest.mark.parametrize("suffix", [".weights.h5", ".keras"])
def test_load_weights_across_wbits_names_wbits_in_a_short_message(suffix, tmp_path):
    path = os.fspath(tmp_path / f"saved{suffix}")
    saved = _wbits_model(2)
    saved.save_weights(path) if suffix == ".weights.h5" else saved.save(path)
    target = _wbits_model(1)
    conv = target.get_layer("conv")
    before = [v.numpy().copy() for v in conv.weights]
    with pytest.raises(ValueError) as error:
        target.load_weights(path)
    message = str(error.value)
    assert (
        "Cannot load the weights of layer 'conv': it has wbits=1 (2 values per weight) but the "
        "saved kernel_logits hold 4 values per weight (wbits=2); build the layer with the "
        "wbits the weights were saved with." in message
    )
    assert len(message) < 600 and "value=" not in message  # no dump of the variable's values
    for variable, old in zip(conv.weights, before):  # the refused layer is left as it was
        np.testing.assert_array_equal(variable.numpy(), old)
    # The matching wbits still loads, exactly.
    same = _wbits_model(2)
    same.load_weights(path)
    for a, b in zip(same.weights, saved.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_load_weights_with_another_kernel_shape_names_both_shapes(tmp_path):
    path = os.fspath(tmp_path / "saved.weights.h5")
    _wbits_model(2, filters=6).save_weights(path)
    with pytest.raises(ValueError) as error:
        _wbits_model(2, filters=5).load_weights(path)
    assert (
        "Cannot load the weights of layer 'conv': its kernel_logits have shape (3, 3, 3, 5, 4) "
        "(kernel (3, 3, 3, 5), wbits=2) but the saved ones have shape (3, 3, 3, 6, 4)."
    ) in str(error.value)
    assert len(str(error.value)) < 600


def test_mixed_precision_soft_and_hard():
    layer = slb_keras.SLBConv2D(4, 3, wbits=2, dtype="mixed_float16")
    x = _inputs((1, 6, 6, 3))
    assert layer(x, training=True).dtype == tf.float16
    assert layer(x).dtype == tf.float16
    assert layer.kernel_logits.dtype == "float32" and layer.temperature.dtype == "float32"


def test_set_temperature_nested_models():
    inner = keras.Sequential([keras.Input((4,)), slb_keras.SLBDense(4, name="inner_fc")], name="inner")
    inputs = keras.Input((4,))
    outputs = slb_keras.SLBDense(2, name="outer_fc")(inner(inputs))
    model = keras.Model(inputs, outputs)
    assert [l.name for l in slb_keras.slb_layers(model)] == ["inner_fc", "outer_fc"]
    assert slb_keras.set_temperature(model, 7.5) == 2
    assert model.get_layer("inner").get_layer("inner_fc").temperature.numpy() == 7.5
    assert model.get_layer("outer_fc").temperature.numpy() == 7.5


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan"), "hot"])
def test_set_temperature_bad(bad):
    layer = _build(slb_keras.SLBDense, {"units": 2}, (1, 3))
    with pytest.raises(ValueError, match="Invalid temperature=.*finite number > 0"):
        slb_keras.set_temperature(layer, bad)


@pytest.mark.parametrize(
    "bad, received",
    [("1", "str"), (b"1", "bytes"), (True, "bool"), (None, "NoneType"), ([2.0], "list of shape (1,)")],
)
def test_set_temperature_refuses_strings_and_non_numbers(bad, received):
    layer = _build(slb_keras.SLBDense, {"units": 2}, (1, 3))
    slb_keras.set_temperature(layer, 3.0)
    with pytest.raises(ValueError) as error:
        slb_keras.set_temperature(layer, bad)
    assert str(error.value) == (
        f"Invalid temperature={bad!r}: expected a finite number > 0 (an int, a float or a "
        f"scalar tensor); got a {received}."
    )
    assert layer.temperature.numpy() == 3.0  # unchanged


@pytest.mark.parametrize("tau", [2, np.int64(2), np.float16(2.0), tf.constant(2.0), keras.Variable(2.0)])
def test_set_temperature_takes_numbers_and_scalar_tensors(tau):
    layer = _build(slb_keras.SLBDense, {"units": 2}, (1, 3))
    assert slb_keras.set_temperature(layer, tau) == 1
    assert layer.temperature.numpy() == 2.0


def test_fit_under_mirrored_strategy(mirrored_strategy):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8, 8, 3)).astype(np.float32)
    y = (x.mean(axis=(1, 2, 3)) > 0).astype(np.int32)
    with mirrored_strategy.scope():
        model = keras.Sequential(
            [
                keras.Input((8, 8, 3)),
                keras.layers.Conv2D(8, 3, padding="same"),
                keras.layers.BatchNormalization(),
                keras.layers.ReLU(),
                slb_keras.SLBConv2D(8, 3, padding="same", use_bias=False, wbits=2, input_quantizer="dorefa2"),
                keras.layers.BatchNormalization(),
                keras.layers.GlobalAveragePooling2D(),
                slb_keras.SLBDense(2, wbits=1, input_quantizer="ste_sign"),
            ]
        )
        model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy", metrics=["accuracy"])
    assert model.distribute_strategy is mirrored_strategy
    before = model.layers[3].kernel_logits.numpy().copy()
    slb_keras.set_temperature(model, 2.0)
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert not np.allclose(before, model.layers[3].kernel_logits.numpy())
    assert model.layers[3].temperature.numpy() == 2.0


@pytest.mark.parametrize("cls, kwargs, shape", [(c, k, s) for c, _, k, s in LAYERS], ids=LAYER_IDS)
@pytest.mark.parametrize("bad", [0, 9, 2.5, "two", None])
def test_bad_wbits(cls, kwargs, shape, bad):
    with pytest.raises(ValueError, match=r"Invalid wbits=.*integer from 1 to 8"):
        cls(**kwargs, wbits=bad)


def test_bad_input_quantizer():
    with pytest.raises(ValueError, match=r"Invalid input_quantizer='sign3'.*dorefa2"):
        slb_keras.SLBDense(3, input_quantizer="sign3")


@pytest.mark.parametrize(
    "cls, kwargs",
    [
        (slb_keras.SLBDense, {"units": 2, "kernel_constraint": "non_neg"}),
        (slb_keras.SLBDense, {"units": 2, "lora_rank": 2}),
        (slb_keras.SLBDepthwiseConv2D, {"kernel_size": 3, "depthwise_constraint": "non_neg"}),
    ],
)
def test_unsupported_arguments(cls, kwargs):
    with pytest.raises(ValueError, match="Invalid (kernel_constraint|lora_rank|depthwise_constraint)"):
        cls(**kwargs)


def test_keras_quantize_and_lora_refused():
    layer = _build(slb_keras.SLBDense, {"units": 2}, (1, 3))
    with pytest.raises(ValueError, match="already quantized"):
        layer.quantize("int8")
    with pytest.raises(ValueError, match="LoRA"):
        layer.enable_lora(2)


def test_assign_kernel_shape_checked():
    layer = _build(slb_keras.SLBDense, {"units": 2}, (1, 3))
    with pytest.raises(ValueError, match="kernel shape"):
        layer.assign_kernel(np.zeros((2, 3)))


def test_eight_bit_warns_about_memory():
    with pytest.warns(UserWarning, match="256 logits per weight"):
        slb_keras.SLBDense(2, wbits=8)


def test_fit_with_jit_compile():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 6, 6, 3)).astype(np.float32)
    y = rng.integers(0, 2, size=32)
    model = keras.Sequential(
        [
            keras.Input((6, 6, 3)),
            slb_keras.SLBConv2D(4, 3, wbits=2, input_quantizer="dorefa2"),
            keras.layers.Flatten(),
            slb_keras.SLBDense(2, wbits=1, input_quantizer="ste_sign"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy", jit_compile=True)
    before = model.layers[0].kernel_logits.numpy().copy()
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert not np.allclose(before, model.layers[0].kernel_logits.numpy())
    np.testing.assert_allclose(model.predict(x, verbose=0), model(x).numpy(), atol=1e-5)


def test_kernel_is_the_hard_kernel_inside_call_too():
    seen = []

    class Probe(slb_keras.SLBDense):
        def call(self, inputs, training=None):
            seen.append(self.kernel.numpy())
            return super().call(inputs, training=training)

    layer = Probe(3, wbits=2)
    x = _inputs((2, 4))
    soft = layer(x, training=True).numpy()
    hard = layer(x, training=False).numpy()
    for kernel in seen:
        np.testing.assert_array_equal(kernel, layer.hard_kernel().numpy())
    expected_soft = x @ layer.soft_kernel().numpy() + layer.bias.numpy()
    np.testing.assert_allclose(soft, expected_soft, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(hard, x @ layer.hard_kernel().numpy() + layer.bias.numpy(), rtol=1e-6)


def test_causal_conv1d_with_bias_and_activation_equals_keras():
    kwargs = {"filters": 3, "kernel_size": 3, "padding": "causal", "dilation_rate": 2, "activation": "relu"}
    slb = _build(slb_keras.SLBConv1D, kwargs, (2, 9, 4), wbits=2)
    ref = _build(keras.layers.Conv1D, kwargs, (2, 9, 4))
    ref.kernel.assign(slb.hard_kernel())
    bias = np.arange(3, dtype=np.float32) / 3
    ref.bias.assign(bias)
    slb.bias.assign(bias)
    x = _inputs((2, 9, 4))
    np.testing.assert_allclose(slb(x).numpy(), ref(x).numpy(), atol=1e-6)


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = slb_keras.SLBDense(2)

    def call(self, x):
        return self.dense(x)


def test_soft_inference_and_layer_inputs():
    model = keras.Sequential(
        [keras.Input((4,)), slb_keras.SLBDense(3, wbits=2, name="a"), slb_keras.SLBDense(2, wbits=2, name="b")]
    )
    x = _inputs((5, 4))
    with slb_keras.layers.soft_inference(model):
        soft = model(x).numpy()
    np.testing.assert_allclose(soft, model(x, training=True).numpy(), rtol=1e-6)
    assert [layer.soft_inference_switch.is_on() for layer in model.layers] == [False, False]
    hard = model(x).numpy()
    # A traced function follows the switch: traced before the block (hard), it computes the
    # soft network inside; traced inside, the hard one after (no state frozen into a graph).
    np.testing.assert_array_equal(model.predict(x, verbose=0), hard)
    with slb_keras.layers.soft_inference(model):
        np.testing.assert_allclose(model.predict(x, verbose=0), soft, rtol=1e-6)
    np.testing.assert_array_equal(model.predict(x, verbose=0), hard)
    fresh = keras.Sequential([keras.Input((4,)), slb_keras.SLBDense(3, wbits=2)])
    with slb_keras.layers.soft_inference(fresh):
        inside = fresh.predict(x, verbose=0)
    np.testing.assert_allclose(inside, fresh(x, training=True).numpy(), rtol=1e-6)
    np.testing.assert_array_equal(fresh.predict(x, verbose=0), fresh(x).numpy())
    assert sorted(w.name for w in model.layers[0].weights) == ["bias", "kernel_logits", "temperature"]  # no switch
    inputs = slb_keras.layers.layer_inputs(model, x)
    assert sorted(inputs) == ["a", "b"]
    np.testing.assert_array_equal(inputs["a"], x)
    np.testing.assert_array_equal(model.layers[1](inputs["b"]).numpy(), hard)
    assert not any(hasattr(layer, "_input_record") for layer in model.layers)  # nothing set on them
    # Nested models: their layers' inputs too; a subclassed model has no graph to read.
    outer = keras.Sequential([keras.Input((4,)), model, slb_keras.SLBDense(2, name="c")])
    assert sorted(slb_keras.layers.layer_inputs(outer, x)) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="reads a Sequential or Functional model's graph"):
        slb_keras.layers.layer_inputs(_Subclassed(), x)
