"""quantize_model: conversion, weight transfer, float init, layer_config, errors."""

import warnings

import keras
import numpy as np
import pytest

import slb_keras
from slb_keras.convert import float_init
from slb_keras.core import quantizers
from slb_keras.core.normalization import StateBatchNormalization


def small_cnn(bias=False):
    return keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(8, 3, padding="same", use_bias=bias, name="c1"),
            keras.layers.BatchNormalization(name="bn1"),
            keras.layers.ReLU(name="r1"),
            keras.layers.Conv2D(8, 3, padding="same", use_bias=bias, name="c2"),
            keras.layers.BatchNormalization(name="bn2"),
            keras.layers.ReLU(name="r2"),
            keras.layers.DepthwiseConv2D(3, use_bias=bias, name="dw"),
            keras.layers.BatchNormalization(name="bn3"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(6, name="d1"),
            keras.layers.Dense(4, name="d2"),
        ],
        name="small_cnn",
    )


def randomize(model, seed=0):
    """Gives every weight (BN statistics included) a random, valid value."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        shape = tuple(variable.shape)
        if "variance" in variable.path:
            variable.assign(rng.uniform(0.5, 2.0, shape).astype("float32"))
        else:
            variable.assign(rng.normal(0.0, 0.5, shape).astype("float32"))
    return model


def types(model):
    return [type(layer).__name__ for layer in model.layers]


def images(n=4, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 8, 8, 3)).astype("float32")


# -- conversion ----------------------------------------------------------------


def test_converts_layers_and_keeps_first_and_last_float():
    model = randomize(small_cnn())
    slb = slb_keras.quantize_model(model, wbits=2, abits=4)
    assert types(slb) == [
        "Conv2D", "StateBatchNormalization", "ReLU", "SLBConv2D",
        "StateBatchNormalization", "ReLU", "SLBDepthwiseConv2D",
        "StateBatchNormalization", "GlobalAveragePooling2D", "SLBDense", "Dense",
    ]  # fmt: skip
    assert [layer.name for layer in slb.layers] == [layer.name for layer in model.layers]
    for name in ("c2", "dw", "d1"):
        layer = slb.get_layer(name)
        assert layer.wbits == 2
        assert isinstance(layer.input_quantizer, quantizers.ActivationQuantizer)
        assert layer.input_quantizer.bits == 4
    # Distinct quantizer layers, one per SLB layer.
    assert slb.get_layer("c2").input_quantizer is not slb.get_layer("dw").input_quantizer
    # Same Keras configuration as the float layer, plus the SLB arguments.
    float_config = model.get_layer("c2").get_config()
    slb_config = slb.get_layer("c2").get_config()
    for key in ("filters", "kernel_size", "padding", "strides", "use_bias", "name"):
        assert slb_config[key] == float_config[key]
    # The source model is untouched and still float.
    assert types(model)[3] == "Conv2D"


def test_copies_float_weights_and_batch_norm():
    model = randomize(small_cnn(bias=True))
    slb = slb_keras.quantize_model(model, init="random")
    for name in ("c1", "d2"):  # float layers: every weight copied
        for old, new in zip(model.get_layer(name).weights, slb.get_layer(name).weights):
            np.testing.assert_array_equal(old.numpy(), new.numpy())
    np.testing.assert_array_equal(slb.get_layer("c2").bias.numpy(), model.get_layer("c2").bias.numpy())
    old_bn, new_bn = model.get_layer("bn1"), slb.get_layer("bn1")
    for name in ("gamma", "beta", "moving_mean", "moving_variance"):
        np.testing.assert_array_equal(getattr(new_bn, name).numpy(), getattr(old_bn, name).numpy())
    assert new_bn.get_config() == old_bn.get_config()
    # Random init: the logits are the SLB layer's own random ones.
    logits = slb.get_layer("c2").kernel_logits.numpy()
    assert 0.0 < logits.std() < 0.2
    # Same output as the float model where nothing is quantized yet.
    x = images()
    head = keras.Model(slb.inputs[0], slb.get_layer("r1").output)
    ref = keras.Model(model.inputs[0], model.get_layer("r1").output)
    np.testing.assert_allclose(head(x), ref(x), rtol=1e-5, atol=1e-5)


def test_abits_mapping_and_aliases():
    model = small_cnn()
    with pytest.warns(UserWarning, match="sign"):  # after a ReLU, see below
        one = slb_keras.quantize_model(model, abits=1)
    assert one.get_layer("c2").input_quantizer.bits == 1
    assert slb_keras.quantize_model(model, abits=32).get_layer("c2").input_quantizer is None
    pact = slb_keras.quantize_model(model, abits="pact3")
    q1, q2 = pact.get_layer("c2").input_quantizer, pact.get_layer("dw").input_quantizer
    assert isinstance(q1, quantizers.PACTQuantizer) and q1.bits == 3 and q1 is not q2
    layer = quantizers.PACTQuantizer(2, alpha_initializer=4.0)
    copies = slb_keras.quantize_model(model, abits=layer)
    copy = copies.get_layer("c2").input_quantizer
    assert copy is not layer and copy.bits == 2 and float(copy.alpha.numpy()) == 4.0


def test_layer_config_by_name_and_class():
    model = small_cnn()
    slb = slb_keras.quantize_model(
        model,
        wbits=1,
        abits=2,
        layer_config={
            "Conv2D": {"wbits": 3},
            "c1": {"abits": 8},  # a name wins over skip_first_last
            "dw": None,  # kept float
            "bn2": None,  # kept a plain BatchNormalization
        },
    )
    assert slb.get_layer("c1").wbits == 1 and slb.get_layer("c1").input_quantizer.bits == 8
    assert slb.get_layer("c2").wbits == 3 and slb.get_layer("c2").input_quantizer.bits == 2
    assert type(slb.get_layer("dw")) is keras.layers.DepthwiseConv2D
    assert type(slb.get_layer("bn2")) is keras.layers.BatchNormalization
    assert type(slb.get_layer("bn1")) is StateBatchNormalization
    assert slb.get_layer("d1").wbits == 1
    assert type(slb.get_layer("d2")) is keras.layers.Dense  # last: float

    everything = slb_keras.quantize_model(model, wbits=2, skip_first_last=False)
    assert types(everything).count("SLBConv2D") == 2
    assert types(everything).count("SLBDense") == 2


def test_functional_with_nested_models_and_conv1d():
    inner = keras.Sequential(
        [
            keras.Input((10, 4)),
            keras.layers.Conv1D(6, 3, padding="same", use_bias=False, name="inner_conv"),
            keras.layers.BatchNormalization(name="inner_bn"),
        ],
        name="inner",
    )
    x = keras.Input((10, 4))
    h = keras.layers.Conv1D(4, 3, padding="same", name="first")(x)
    h = inner(h)
    y = keras.layers.Add(name="add")([h, keras.layers.Conv1D(6, 1, name="skip")(h)])
    y = keras.layers.GlobalAveragePooling1D()(y)
    y = keras.layers.Dense(3, name="last")(y)
    model = randomize(keras.Model(x, y, name="seq_model"))
    slb = slb_keras.quantize_model(model, wbits=2)
    nested = slb.get_layer("inner")
    assert isinstance(nested, keras.Sequential) and nested is not inner
    assert type(nested.get_layer("inner_conv")) is slb_keras.SLBConv1D
    assert type(nested.get_layer("inner_bn")) is StateBatchNormalization
    assert type(slb.get_layer("skip")) is slb_keras.SLBConv1D
    assert type(slb.get_layer("first")) is keras.layers.Conv1D
    assert type(slb.get_layer("last")) is keras.layers.Dense
    data = np.random.default_rng(0).normal(size=(2, 10, 4)).astype("float32")
    assert slb(data).shape == (2, 3)


# -- init="float" ------------------------------------------------------------------


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_float_init_puts_the_largest_logit_on_the_nearest_value(bits):
    model = randomize(small_cnn())
    slb = slb_keras.quantize_model(model, wbits=bits)
    for name in ("c2", "dw", "d1"):
        old, new = model.get_layer(name), slb.get_layer(name)
        kernel = old.kernel.numpy()
        matrix = float_init._matrix(old, kernel)
        scale = float_init.channel_scale(matrix, bits)
        projection = slb_keras.codes_to_values(
            slb_keras.values_to_codes(matrix / scale, bits), bits
        ).reshape(kernel.shape)
        np.testing.assert_array_equal(new.hard_kernel().numpy(), projection)
        # The soft kernel at the layer's temperature is close to the projection
        # for the weights lying near a value (within 1/8 of the spacing).
        u = (matrix / scale).reshape(kernel.shape)
        near = np.abs(u - projection) < 0.25 / (2**bits - 1)
        soft = new.soft_kernel().numpy()
        assert np.max(np.abs(soft - projection)[near]) < 0.1
        # ... and the nearer a weight is to a decision boundary, the less decided.
        to_boundary = 1.0 / (2**bits - 1) - np.abs(np.clip(u, -1, 1) - projection)
        gap = np.abs(soft - projection)
        ranks = [np.argsort(np.argsort(a.ravel())) for a in (to_boundary, gap)]
        assert np.corrcoef(*ranks)[0, 1] < -0.9


def test_channel_scale_minimizes_the_quantization_error():
    rng = np.random.default_rng(1)
    matrix = rng.normal(size=(50, 3)) * np.array([0.1, 1.0, 5.0])
    for bits in (1, 2, 3):
        scale = float_init.channel_scale(matrix, bits)

        def error(s):
            q = slb_keras.codes_to_values(slb_keras.values_to_codes(matrix / s, bits), bits)
            return np.sum((matrix - s * q) ** 2, axis=0)

        best = error(scale)
        for factor in (0.8, 0.95, 1.05, 1.25):
            assert np.all(best <= error(scale * factor) + 1e-9)
    np.testing.assert_allclose(float_init.channel_scale(matrix, 1), np.abs(matrix).mean(axis=0))


@pytest.mark.parametrize("layer_name", ["conv", "depthwise", "dense"])
@pytest.mark.parametrize("bias", [False, True])
def test_float_init_folds_the_scale_into_bias_and_batch_norm(layer_name, bias):
    """With 6-bit weights the converted layer + BN computes what the float one did."""
    kernel_layer = {
        "conv": lambda: keras.layers.Conv2D(5, 3, use_bias=bias),
        "depthwise": lambda: keras.layers.DepthwiseConv2D(3, depth_multiplier=2, use_bias=bias),
        "dense": lambda: keras.layers.Dense(5, use_bias=bias),
    }[layer_name]()
    shape = (6,) if layer_name == "dense" else (6, 6, 3)
    model = randomize(keras.Sequential([keras.Input(shape), kernel_layer, keras.layers.BatchNormalization()]))
    slb = slb_keras.quantize_model(model, wbits=6, skip_first_last=False)
    x = np.random.default_rng(3).normal(size=(8, *shape)).astype("float32")
    expected = model(x, training=False).numpy()
    scale = np.abs(expected).mean()
    assert np.abs(slb(x, training=False).numpy() - expected).mean() < 0.03 * scale
    # The soft statistics describe the soft network the same way.
    bn = slb.layers[1]
    bn.calibrated.assign(0.0)  # inference with the soft statistics
    soft_out = bn(slb.layers[0](x, training=True), training=False).numpy()
    assert np.abs(soft_out - expected).mean() < 0.05 * scale


def test_float_init_keeps_the_hard_network_close_to_the_float_one():
    model = randomize(small_cnn(bias=True))
    x = images(16)
    expected = model(x).numpy()
    errors = []
    for bits in (2, 4, 6):
        # Every converted layer is followed by a batch norm (the Dense ones stay float).
        slb = slb_keras.quantize_model(
            model, wbits=bits, skip_first_last=False, layer_config={"Dense": None}
        )
        errors.append(np.abs(slb(x).numpy() - expected).mean() / np.abs(expected).mean())
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.05


# -- training, saving, MobileNetV2 -------------------------------------------------


def train_save_load(model, x, y, tmp_path, loss):
    """One training step (eager: no tracing of a big graph), then save and load."""
    model.compile(keras.optimizers.Adam(1e-3), loss, run_eagerly=True)
    logits = [layer.kernel_logits.numpy() for layer in slb_keras.slb_layers(model)]
    history = model.fit(x, y, epochs=1, batch_size=len(x), verbose=0)
    assert np.isfinite(history.history["loss"][0])
    moved = [layer.kernel_logits.numpy() for layer in slb_keras.slb_layers(model)]
    assert all(not np.array_equal(a, b) for a, b in zip(logits, moved))
    path = str(tmp_path / "converted.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert types(loaded) == types(model)
    np.testing.assert_array_equal(loaded(x, training=False), model(x, training=False))
    return loaded


def test_small_cnn_trains_saves_and_loads(tmp_path):
    slb = slb_keras.quantize_model(randomize(small_cnn()), wbits=2, abits=2)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    train_save_load(slb, images(8), np.arange(8) % 4, tmp_path, loss)


@pytest.mark.slow
def test_mobilenet_v2_converts_trains_saves_and_loads(tmp_path):
    model = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), classes=10)
    slb = slb_keras.quantize_model(model, wbits=1, abits=32)
    counts = {name: types(slb).count(name) for name in set(types(slb))}
    assert counts["SLBConv2D"] == 34 and counts["SLBDepthwiseConv2D"] == 17
    assert counts["StateBatchNormalization"] == 52
    assert types(slb)[1] == "Conv2D" and types(slb)[-1] == "Dense"  # first / last float
    x = np.random.default_rng(0).uniform(size=(4, 32, 32, 3)).astype("float32")
    loaded = train_save_load(slb, x, np.arange(4), tmp_path, "sparse_categorical_crossentropy")
    assert loaded.name == model.name
    # Nothing is lost or counted twice: the deployed parameters are the float ones.
    report = slb_keras.summary(slb, print_fn=None)
    assert report.params == model.count_params()
    assert report.params_by_bits[1] == sum(
        int(np.prod(layer.kernel_logits.shape[:-1])) for layer in slb_keras.slb_layers(slb)
    )


# -- errors -------------------------------------------------------------------------


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(2)

    def call(self, x):
        return self.dense(x)


def test_rejects_what_it_cannot_convert():
    with pytest.raises(ValueError, match="Invalid model=.*expected a keras.Sequential"):
        slb_keras.quantize_model(keras.layers.Dense(3))
    with pytest.raises(ValueError, match="Invalid model="):
        slb_keras.quantize_model("model.keras")
    with pytest.raises(ValueError, match="not built"):
        slb_keras.quantize_model(keras.Sequential([keras.layers.Dense(3)]))
    subclassed = Subclassed()
    subclassed(np.ones((1, 3), "float32"))
    with pytest.raises(ValueError, match="subclassed.*SLB layers"):
        slb_keras.quantize_model(subclassed)
    x = keras.Input((3,))
    with pytest.raises(ValueError, match="contains the subclassed model"):
        slb_keras.quantize_model(keras.Model(x, Subclassed()(x)))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"wbits": 0}, r"Invalid wbits=0: expected an integer from 1 to 8"),
        ({"wbits": 9}, r"Invalid wbits=9"),
        ({"wbits": 2.5}, r"Invalid wbits=2.5"),
        ({"abits": 17}, r"Invalid abits=17: expected an integer from 1 to 16 or 32"),
        ({"abits": "dorefa1"}, r"Invalid abits='dorefa1'"),
        ({"init": "zeros"}, r"Invalid init='zeros': expected one of \('float', 'random'\)"),
        ({"skip_first_last": 1}, r"Invalid skip_first_last=1"),
        ({"layer_config": ["c2"]}, r"Invalid layer_config=\['c2'\]"),
        ({"layer_config": {"missing": None}}, r"Invalid layer_config key 'missing'.*no layer"),
        ({"layer_config": {"c2": {"wbits": 10}}}, r"Invalid layer_config\['c2'\]\['wbits'\]=10"),
        ({"layer_config": {"c2": {"abits": 0}}}, r"Invalid layer_config\['c2'\]\['abits'\]=0"),
        ({"layer_config": {"c2": {"bits": 2}}}, r"Invalid layer_config\['c2'\]=.*'wbits' and/or"),
        ({"layer_config": {"c2": 2}}, r"Invalid layer_config\['c2'\]=2"),
        ({"layer_config": {"r1": {"wbits": 2}}}, r"'r1' \(ReLU\).*no kernel"),
        ({"layer_config": {"bn1": {"wbits": 2}}}, r"'bn1'.*batch normalization takes None"),
    ],
)
def test_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        slb_keras.quantize_model(small_cnn(), **kwargs)


def test_names_the_layers_it_cannot_convert():
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3, name="first"),
            keras.layers.SeparableConv2D(4, 3, name="sep"),
            keras.layers.Conv2D(4, 3, kernel_constraint="max_norm", name="constrained"),
            keras.layers.Flatten(),
            keras.layers.Dense(2, name="last"),
        ]
    )
    with pytest.raises(ValueError) as info:
        slb_keras.quantize_model(model)
    message = str(info.value)
    assert "'sep' (SeparableConv2D has no SLB version)" in message
    assert "'constrained' (Conv2D with a kernel_constraint)" in message
    assert "layer_config={'sep': None, 'constrained': None}" in message
    slb = slb_keras.quantize_model(model, layer_config={"sep": None, "constrained": None})
    assert types(slb) == ["Conv2D", "SeparableConv2D", "Conv2D", "Flatten", "Dense"]


def test_warns_about_sign_after_relu():
    with pytest.warns(UserWarning, match=r"'c2' \(after 'r1'\)"):
        slb_keras.quantize_model(small_cnn(), abits=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        slb_keras.quantize_model(small_cnn(), abits=2)


def text_model():
    """Embedding, LSTM, a TimeDistributed Dense and a PReLU: none has an SLB version."""
    x = keras.Input((6,), dtype="int32")
    h = keras.layers.Embedding(50, 8, name="embed")(x)
    h = keras.layers.LSTM(8, return_sequences=True, name="lstm")(h)
    h = keras.layers.TimeDistributed(keras.layers.Dense(8), name="per_step")(h)
    h = keras.layers.PReLU(shared_axes=[1], name="prelu")(h)  # per-channel: not a matrix
    h = keras.layers.LayerNormalization(name="norm")(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(8, name="hidden")(h)
    return keras.Model(x, keras.layers.Dense(3, name="out")(h), name="text")


def test_names_the_layers_with_weights_that_stay_float():
    # Issue 15: an LSTM (or any layer without an SLB version) used to stay float
    # without notice.
    model = randomize(text_model())
    with pytest.warns(UserWarning) as caught:
        slb = slb_keras.quantize_model(model, wbits=2, skip_first_last=False)
    messages = [str(w.message) for w in caught if "keeps these layers float" in str(w.message)]
    assert len(messages) == 1, [str(w.message) for w in caught]
    message = messages[0]
    assert "'embed' (Embedding, 400 parameters)" in message
    assert "'lstm' (LSTM, 544 parameters)" in message
    assert "'per_step' (TimeDistributed, 72 parameters)" in message
    assert "prelu" not in message and "norm" not in message  # per-channel weights only
    assert "layer_config={'embed': None, 'lstm': None, 'per_step': None}" in message
    # What stays float is float, with its weights; the Dense layers are SLB.
    assert types(slb)[1:4] == ["Embedding", "LSTM", "TimeDistributed"]
    for name in ("embed", "lstm", "per_step"):
        for new, old in zip(slb.get_layer(name).get_weights(), model.get_layer(name).get_weights()):
            np.testing.assert_array_equal(new, old)
    rows = {row.name: row.wbits for row in slb_keras.summary(slb, print_fn=None).layers}
    assert rows["embed"] == rows["lstm"] == rows["per_step"] == 32
    assert rows["hidden"] == rows["out"] == 2
    # The layer_config the message suggests (or a class name) keeps them float quietly.
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        slb_keras.quantize_model(
            model, skip_first_last=False, layer_config={"embed": None, "lstm": None, "per_step": None}
        )
        slb_keras.quantize_model(
            model, layer_config={"Embedding": None, "LSTM": None, "TimeDistributed": None}
        )
    # A model whose weights are all converted or kept float on purpose: no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        slb_keras.quantize_model(small_cnn(), abits=2)


@pytest.mark.slow
def test_float_init_on_digits_reaches_the_float_accuracy_sooner_than_random():
    from benchmarks.quantize_digits import digits_experiment

    results = digits_experiment(epochs=6)
    float_run, random_run = results["init=float"], results["init=random"]
    assert results["float_accuracy"] > 0.95
    # Calibrated, before any SLB step: the converted float network already works.
    assert float_run["curve"][0] > 0.6
    assert random_run["curve"][0] < 0.3
    # Within one point of the float accuracy (359 test images: 1 image = 0.28
    # points), and sooner than from random logits (never = infinitely late).
    reached = float_run["epochs_to_float_minus_1"]
    assert reached is not None
    assert reached < (random_run["epochs_to_float_minus_1"] or np.inf)
