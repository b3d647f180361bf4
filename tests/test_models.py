import doctest
import importlib
import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

import models
import slb_keras
from models import method as method_lib
from models import resnet_cifar
from models import resnet_imagenet
from slb_keras.core import ste

vgg_small_module = importlib.import_module("models.vgg_small")  # models.vgg_small is the builder

# Tiny versions of every network: (name, kwargs, input shape).
TINY = {
    "vgg_small": dict(width_multiplier=0.0625, input_shape=(16, 16, 3)),
    "resnet20": dict(width_multiplier=0.25, input_shape=(16, 16, 3)),
    "resnet18": dict(width_multiplier=0.0625, input_shape=(32, 32, 3), num_classes=7),
}
QUANTIZED_TYPES = {"slb": slb_keras.SLBLayerMixin, "ste": ste.STELayerMixin}


def _tiny(name, **kwargs):
    return models.get_model(name, **{**TINY[name], **kwargs})


def _images(model, batch=2, seed=0):
    shape = (batch,) + tuple(model.input_shape[1:])
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _convs_and_denses(model):
    return [l for l in model.layers if isinstance(l, (keras.layers.Conv2D, keras.layers.Dense))]


@pytest.mark.parametrize("name, method", itertools.product(models.MODELS, models.METHODS))
def test_every_model_and_method_builds_and_runs(name, method):
    model = _tiny(name, method=method, wbits=2, abits=2)
    x = _images(model)
    num_classes = TINY[name].get("num_classes", 10)
    for training in (True, False):
        y = model(x, training=training)
        assert y.shape == (2, num_classes)
        assert y.dtype == "float32"
        assert np.all(np.isfinite(y))
    layers = _convs_and_denses(model)
    first, last = layers[0], layers[-1]
    assert not isinstance(first, (slb_keras.SLBLayerMixin, ste.STELayerMixin))
    assert not isinstance(last, (slb_keras.SLBLayerMixin, ste.STELayerMixin))
    assert first.name in ("conv1", "stem_conv") and last.name == "fc"
    inner = [l for l in layers[1:-1] if "_down_conv" not in l.name]  # Bi-Real: real shortcuts
    if method == "fp":
        assert not any(isinstance(l, (slb_keras.SLBLayerMixin, ste.STELayerMixin)) for l in inner)
    else:
        assert all(isinstance(l, QUANTIZED_TYPES[method]) for l in inner)
        assert all(l.wbits == 2 and l.input_quantizer is not None for l in inner)


def test_resnet20_recipe_model_trains():
    # (vgg_small and resnet18 train in tests/test_train.py)
    model = _tiny("resnet20", method="slb", wbits=2, abits=2, activation_quantizer="pact")
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    alphas = [l.input_quantizer.alpha for l in slb_keras.slb_layers(model)]
    assert all(float(alpha.numpy()) == 3.0 for alpha in alphas)
    for alpha in alphas:
        alpha.assign(0.5)  # below some of the inputs: the clip gets a gradient
    before = [w.numpy().copy() for w in model.trainable_weights]
    history = model.fit(_images(model, batch=4), np.arange(4), epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    changed = [not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights)]
    assert all(changed)  # logits, BN, PACT clip values and the fp layers all get gradients


def test_vgg_small_weight_count_is_lq_nets():
    counts = {method: models.count_weights(models.get_model("vgg_small", method=method)) for method in models.METHODS}
    # conv 3*128*9 + 128*128*9 + 128*256*9 + 256*256*9 + 256*512*9 + 512*512*9, fc 8192*10
    assert counts["fp"]["weights"] == 4_656_512
    assert counts["slb"]["weights"] == counts["ste"]["weights"] == 4_656_512
    assert counts["slb"]["quantized_weights"] == counts["ste"]["quantized_weights"] == 4_571_136
    assert counts["fp"]["quantized_weights"] == 0
    # SLB minus STE: one more logit per 1-bit weight and a temperature per SLB conv (5),
    # plus the hard statistics (2 per channel) and the `calibrated` flag of the 5 state BNs.
    channels = 128 + 256 + 256 + 512 + 512
    extra = counts["slb"]["parameters"] - counts["ste"]["parameters"]
    assert extra == 4_571_136 + 5 + 2 * channels + 5
    assert counts["ste"]["parameters"] == counts["fp"]["parameters"]


def test_resnet_weight_counts():
    assert models.count_weights(models.get_model("resnet20", method="fp"))["weights"] == 270_896
    assert models.count_weights(models.get_model("resnet18", method="fp"))["weights"] == 11_678_912


def test_layer_names_are_deterministic():
    names = [layer.name for layer in _tiny("resnet20", method="slb").layers]
    keras.layers.Dense(3)  # advances Keras's automatic name counters
    again = [layer.name for layer in _tiny("resnet20", method="slb").layers]
    assert names == again
    assert len(set(names)) == len(names)
    assert "stage2_block1_shortcut_conv" in names and "stage3_block3_conv2" in names
    vgg = [layer.name for layer in _tiny("vgg_small", method="fp").layers]
    assert vgg[:4] == ["image", "conv1", "bn1", "relu1"]
    assert vgg[-3:] == ["relu6", "flatten", "fc"]


@pytest.mark.parametrize(
    "abits, activation_quantizer, expected",
    [(1, "dorefa", (1, "ActivationQuantizer")), (1, "pact", (1, "ActivationQuantizer")),
     (2, "dorefa", (2, "ActivationQuantizer")), (4, "pact", (4, "PACTQuantizer")),
     (32, "dorefa", None)],
)
def test_activation_quantizers(abits, activation_quantizer, expected):
    model = _tiny("resnet20", method="slb", abits=abits, activation_quantizer=activation_quantizer,
                  block="standard")
    for layer in slb_keras.slb_layers(model):
        quantizer = layer.input_quantizer
        if expected is None:
            assert quantizer is None
        else:
            assert (quantizer.bits, type(quantizer).__name__) == expected
    relus = [l for l in model.layers if isinstance(l, keras.layers.ReLU)]
    if abits == 1:  # sign(ReLU(x)) would be +1: only the classifier's input has a ReLU
        assert [l.name for l in relus] == ["stage3_block3_out"]
    else:
        assert len(relus) == 1 + 9 * 2


def test_sbn_switch_and_methods_choose_batch_norm():
    def kinds(**kwargs):
        model = _tiny("vgg_small", **kwargs)
        return [type(l).__name__ for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]

    assert kinds(method="slb") == ["BatchNormalization"] + ["StateBatchNormalization"] * 5
    assert set(kinds(method="slb", sbn=False)) == {"BatchNormalization"}
    assert set(kinds(method="ste")) == set(kinds(method="fp")) == {"BatchNormalization"}
    model = _tiny("vgg_small", sync_bn=True)
    assert all(l.synchronized for l in model.layers if isinstance(l, keras.layers.BatchNormalization))


def test_slb_model_saves_and_loads(tmp_path):
    for method in ("slb", "ste"):
        model = _tiny("resnet20", method=method, wbits=2, abits=2)
        x = _images(model, batch=3)
        model(x, training=True)
        path = tmp_path / f"{method}.keras"
        model.save(path)
        loaded = keras.models.load_model(path)  # safe mode, no custom_objects
        np.testing.assert_array_equal(model(x, training=False), loaded(x, training=False))
        assert [l.name for l in loaded.layers] == [l.name for l in model.layers]


def test_mixed_precision_output_is_float32():
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        for method in models.METHODS:
            model = _tiny("vgg_small", method=method)
            y = model(_images(model), training=True)
            assert y.dtype == "float32"
            assert np.all(np.isfinite(y))
    finally:
        keras.config.set_dtype_policy(policy)


# --- the STE baseline ---------------------------------------------------------------------


@pytest.mark.parametrize("bits", range(1, 9))
def test_dorefa_weight_lands_exactly_on_the_slb_value_set(bits):
    w = tf.constant(np.random.default_rng(bits).normal(size=(2000,)), tf.float32)
    q = ste.dorefa_weight(w, bits).numpy()
    values = slb_keras.value_set(bits)
    assert np.all(np.isin(q, values))  # bit-identical members of V
    assert q.min() == values[0] and q.max() == values[-1]  # max |tanh w| maps to +-1
    # DoReFa: x = tanh(w) / (2 max|tanh w|) + 1/2, q = (2 round(n x) - n) / n
    n = 2**bits - 1
    t = np.tanh(w.numpy().astype(np.float64))
    x = t / (2 * np.abs(t).max()) + 0.5
    away_from_ties = np.abs(n * x - np.floor(n * x) - 0.5) > 1e-3
    expected = (2 * np.round(n * x) - n) / n
    np.testing.assert_allclose(q[away_from_ties], expected[away_from_ties], atol=1e-6)
    assert away_from_ties.mean() > 0.9


def test_dorefa_weight_gradient_is_straight_through():
    w = tf.Variable(np.linspace(-2, 2, 9).astype("float32"))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(ste.dorefa_weight(w, 1) * tf.range(9, dtype=tf.float32))
    np.testing.assert_allclose(tape.gradient(loss, w), np.arange(9))  # sign: identity
    with tf.GradientTape(persistent=True) as tape:
        upstream = tf.range(9, dtype=tf.float32)
        quantized = tf.reduce_sum(ste.dorefa_weight(w, 3) * upstream)
        t = tf.tanh(w)
        unrounded = tf.reduce_sum((t / tf.reduce_max(tf.abs(t))) * upstream)  # 2x - 1
    np.testing.assert_allclose(tape.gradient(quantized, w), tape.gradient(unrounded, w), rtol=1e-6)


def test_ste_layers_quantize_kernel_and_inputs():
    layer = slb_keras.STEConv2D(3, 3, wbits=1, input_quantizer="ste_sign", use_bias=True)
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 4)).astype("float32")
    y = layer(x)
    reference = tf.nn.conv2d(np.sign(x) + (x == 0), np.sign(layer.kernel.numpy()) + (layer.kernel.numpy() == 0), 1, "VALID")
    np.testing.assert_allclose(y, reference + layer.bias.numpy(), rtol=1e-5, atol=1e-5)
    dense = slb_keras.STEDense(4, wbits=2, activation="relu")
    out = dense(x[:, 0, 0, :])
    expected = np.maximum(x[:, 0, 0, :] @ dense.quantized_kernel().numpy() + dense.bias.numpy(), 0)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert dense.get_config()["wbits"] == 2
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(dense(x[:, 0, 0, :]))
    assert all(g is not None for g in tape.gradient(loss, dense.trainable_variables))


def test_ste_model_converts_to_the_slb_model_of_equal_hard_network():
    model = _tiny("resnet20", method="ste", wbits=2, abits=2, activation_quantizer="pact")
    x = _images(model, batch=4)
    model(x, training=True)
    model.get_layer("stage1_block1_conv1").input_quantizer.alpha.assign(3.0)
    converted = slb_keras.to_slb_model(model)
    assert [l.name for l in converted.layers] == [l.name for l in model.layers]
    assert not any(isinstance(l, ste.STELayerMixin) for l in converted.layers)
    assert len(slb_keras.slb_layers(converted)) == 20
    assert float(converted.get_layer("stage1_block1_conv1").input_quantizer.alpha.numpy()) == 3.0
    np.testing.assert_allclose(converted(x, training=False), model(x, training=False), rtol=1e-5, atol=1e-5)


def test_ste_layers_bad_arguments():
    with pytest.raises(ValueError, match="wbits=9"):
        slb_keras.STEDense(3, wbits=9)
    with pytest.raises(ValueError, match="data_format"):
        slb_keras.STEConv2D(3, 3, data_format="channels_first")
    with pytest.raises(ValueError, match="input_quantizer"):
        slb_keras.STEDense(3, input_quantizer="nope")


# --- argument validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(method="float"), "method='float'"),
        (dict(wbits=0), "wbits=0"),
        (dict(wbits=9), "wbits=9"),
        (dict(abits=0), "abits=0"),
        (dict(abits=17), "abits=17"),
        (dict(abits=2.5), "abits=2.5"),
        (dict(activation_quantizer="lsq"), "activation_quantizer='lsq'"),
        (dict(sbn="yes"), "sbn='yes'"),
        (dict(num_classes=1), "num_classes=1"),
        (dict(input_shape=(4, 4, 3)), "input_shape"),
        (dict(input_shape=(32, 32)), "input_shape"),
        (dict(width_multiplier=0), "width_multiplier=0"),
    ],
)
def test_builders_validate_arguments(kwargs, match):
    for name in models.MODELS:
        with pytest.raises(ValueError, match=match.replace("(", r"\(")):
            models.get_model(name, **kwargs)


def test_builders_are_keyword_only_and_registry_refuses_unknown_names():
    with pytest.raises(TypeError):
        models.vgg_small("slb")
    with pytest.raises(ValueError, match="model='vgg'.*resnet18, resnet20, vgg_small"):
        models.get_model("vgg")
    with pytest.raises(TypeError):
        models.get_model("resnet20", depth=56)


def test_method_settings():
    assert method_lib.Method("fp", wbits=1, abits=1).quantizer_alias is None
    assert method_lib.Method("ste", abits=32).quantizer_alias is None
    assert method_lib.Method("slb", abits=3, activation_quantizer="pact").quantizer_alias == "pact3"


@pytest.mark.parametrize("module", [models, method_lib, vgg_small_module, resnet_cifar, resnet_imagenet])
def test_docstring_examples(module):
    # setup.cfg collects doctests under src/slb_keras/ and tests/ only; run models/'s here.
    result = doctest.testmod(
        module, extraglobs={"np": np, "keras": keras, "tf": tf, "slb_keras": slb_keras}, optionflags=doctest.ELLIPSIS
    )
    assert result.failed == 0 and result.attempted > 0


# --- the authors' block types ---------------------------------------------------------


def _layer_types(model, prefix):
    return [type(layer).__name__ for layer in model.layers if layer.name.startswith(prefix)]


def test_resnet20_convprelubn_is_conv_prelu_bn_with_a_shortcut_per_block():
    model = models.get_model("resnet20", method="slb", wbits=1, abits=1, width_multiplier=0.25)
    assert _layer_types(model, "stage1_block2_") == [
        "SLBConv2D", "PReLU", "StateBatchNormalization",
        "SLBConv2D", "PReLU", "StateBatchNormalization", "Add",
    ]
    assert _layer_types(model, "stem_") == ["Conv2D", "PReLU", "BatchNormalization"]
    prelu = model.get_layer("stage1_block1_prelu1")
    assert prelu.alpha.shape == (1, 1, 4) and np.all(prelu.alpha.numpy() == 0.25)
    assert not any(isinstance(layer, keras.layers.ReLU) for layer in model.layers)
    # the downsampling shortcut is a quantized 1x1 conv; the last block feeds the pool directly
    assert isinstance(model.get_layer("stage2_block1_shortcut_conv"), slb_keras.SLBConv2D)
    assert model.get_layer("pool").input.name == model.get_layer("stage3_block3_add").output.name


def test_resnet20_standard_block_is_unchanged():
    model = models.get_model("resnet20", method="slb", wbits=2, abits=2, block="standard", width_multiplier=0.25)
    assert _layer_types(model, "stage1_block2_") == [
        "SLBConv2D", "StateBatchNormalization", "ReLU",
        "SLBConv2D", "StateBatchNormalization", "Add", "ReLU",
    ]
    assert not any(isinstance(layer, keras.layers.PReLU) for layer in model.layers)


def test_resnet18_bireal_has_a_shortcut_around_every_3x3_conv():
    model = models.get_model("resnet18", method="slb", wbits=1, abits=1, input_shape=(32, 32, 3),
                             width_multiplier=0.125)
    slb_layers = slb_keras.slb_layers(model)
    assert len(slb_layers) == 16 and all(layer.kernel_size == (3, 3) for layer in slb_layers)
    adds = [layer for layer in model.layers if isinstance(layer, keras.layers.Add)]
    assert len(adds) == 16
    assert _layer_types(model, "stage2_block1_unit1_") == [
        "AveragePooling2D", "SLBConv2D", "Conv2D", "PReLU", "BatchNormalization",
        "StateBatchNormalization", "Add",
    ]
    down = model.get_layer("stage2_block1_unit1_down_conv")  # real-valued downsampling
    assert type(down) is keras.layers.Conv2D and down.kernel_size == (1, 1)
    x = _images(model, batch=2)
    assert model(x, training=True).shape == (2, 1000)
    standard = models.get_model("resnet18", method="slb", input_shape=(32, 32, 3), width_multiplier=0.125,
                                block="standard")
    assert len(slb_keras.slb_layers(standard)) == 19  # 16 + 3 quantized projection shortcuts


def test_resnet20_bireal_has_a_real_valued_shortcut_around_every_3x3_conv():
    model = models.get_model("resnet20", method="slb", wbits=1, abits=1, block="bireal", width_multiplier=0.25)
    slb_layers = slb_keras.slb_layers(model)
    assert len(slb_layers) == 18 and all(layer.kernel_size == (3, 3) for layer in slb_layers)
    assert len([layer for layer in model.layers if isinstance(layer, keras.layers.Add)]) == 18
    assert _layer_types(model, "stem_") == ["Conv2D", "PReLU", "BatchNormalization"]
    assert _layer_types(model, "stage1_block1_unit1_") == ["SLBConv2D", "PReLU", "StateBatchNormalization", "Add"]
    assert _layer_types(model, "stage3_block1_unit1_") == [
        "AveragePooling2D", "SLBConv2D", "Conv2D", "PReLU", "BatchNormalization",
        "StateBatchNormalization", "Add",
    ]
    down = model.get_layer("stage2_block1_unit1_down_conv")  # real-valued downsampling
    assert type(down) is keras.layers.Conv2D and down.kernel_size == (1, 1) and down.strides == (1, 1)
    # the unit's output is the shortcut plus the binary conv's branch: zeroing the branch's BN
    # scale and offset leaves exactly the identity shortcut
    unit = keras.Model(model.input, model.get_layer("stage1_block2_unit1_add").output)
    before = keras.Model(model.input, model.get_layer("stage1_block1_unit2_add").output)
    bn = model.get_layer("stage1_block2_unit1_bn")
    for variable in bn.trainable_variables:
        variable.assign(np.zeros(variable.shape, variable.dtype))
    x = _images(model, batch=2)
    np.testing.assert_allclose(unit(x, training=False), before(x, training=False), rtol=1e-6, atol=1e-6)
    assert model(x, training=True).shape == (2, 10)


@pytest.mark.parametrize("name, bad", [("resnet20", "conv"), ("resnet18", "convprelubn"), ("vgg_small", "standard")])
def test_builders_refuse_a_block_of_another_network(name, bad):
    with pytest.raises(ValueError, match=f"block='{bad}': expected one of {', '.join(models.BLOCKS[name])}"):
        models.get_model(name, block=bad)


@pytest.mark.parametrize("name", ["resnet20", "resnet18"])
def test_authors_blocks_train_and_convert_to_slb_from_ste(name):
    kwargs = dict(input_shape=(32, 32, 3), width_multiplier=0.125, num_classes=4)
    model = models.get_model(name, method="ste", wbits=1, abits=2, **kwargs)
    x = _images(model, batch=4)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, np.arange(4), epochs=1, verbose=0)
    converted = slb_keras.to_slb_model(model)
    np.testing.assert_allclose(converted(x, training=False), model(x, training=False), rtol=1e-4, atol=1e-4)


# --- input normalization inside the model ------------------------------------------------


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_input_normalization_is_the_first_layer_and_saved_with_the_model(name, tmp_path):
    mean, std = (120.0, 110.0, 100.0), (60.0, 50.0, 40.0)
    model = _tiny(name, method="slb", input_normalization=(mean, std))
    assert [layer.name for layer in model.layers[:2]] == ["image", "input_norm"]
    raw = np.random.default_rng(0).uniform(0, 255, (2, *model.input_shape[1:])).astype("float32")
    np.testing.assert_allclose(
        keras.Model(model.input, model.get_layer("input_norm").output)(raw), (raw - mean) / std, rtol=1e-5
    )
    # the same network without it, fed the normalized images, gives the same outputs
    plain = _tiny(name, method="slb")
    plain.set_weights(model.get_weights())
    np.testing.assert_allclose(model(raw), plain((raw - mean) / np.float32(std)), rtol=1e-4, atol=1e-4)
    path = tmp_path / "model.keras"
    model.save(path)
    np.testing.assert_allclose(keras.models.load_model(path)(raw), model(raw), rtol=1e-6)


@pytest.mark.parametrize(
    "value, match",
    [
        (((0.5,) * 2, (0.2,) * 2), "one value per channel"),
        ((0.5, 0.2), "one value per channel"),
        (((0.5,), (0.0,)), "finite and > 0"),
        (((float("nan"),), (1.0,)), "finite and > 0"),
        ("mean", "one value per channel"),
    ],
)
def test_input_normalization_is_validated(value, match):
    with pytest.raises(ValueError, match=r"Invalid input_normalization=.*" + match):
        models.get_model("vgg_small", input_normalization=value)
