"""The Conv2DTranspose family, added as a layer family is: its module and these tests.

`SLBConv2DTranspose` trains, `quantize_model` converts `keras.layers.Conv2DTranspose`
into it (float init included), and it saves, packs and exports to TFLite exactly
(its TRANSPOSE_CONV reads the int8 codes through DEQUANTIZE: LiteRT has no hybrid
kernel for it, so the integer route is refused by name).
"""

import keras
import numpy as np
import pytest

import slb_keras
from litert_run import run_tflite
from slb_keras.layers import family_of


def _float_model():
    keras.utils.set_random_seed(3)
    return keras.Sequential([
        keras.Input((6, 6, 3)),
        keras.layers.Conv2D(8, 3, padding="same", use_bias=False),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.Conv2DTranspose(8, 3, strides=2, padding="same", use_bias=False),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.Conv2DTranspose(4, 2, strides=2, output_padding=1, dilation_rate=1, use_bias=True),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(3),
    ])


@pytest.fixture(scope="module")
def trained():
    """quantize_model of the float model (W2A2), one epoch of training, hard."""
    x = np.random.default_rng(0).random((32, 6, 6, 3), dtype=np.float32)
    model = slb_keras.quantize_model(_float_model(), wbits=2, abits=2)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [layer.kernel_logits.numpy().copy() for layer in slb_keras.slb_layers(model)]
    model.fit(x, np.arange(32) % 3, epochs=1, batch_size=8, verbose=0)
    slb_keras.set_temperature(model, slb_keras.HARD_TEMPERATURE)
    return model, x, before


def test_the_layer_computes_keras_conv2d_transpose_of_its_kernel():
    layer = slb_keras.SLBConv2DTranspose(5, 3, strides=2, padding="same", wbits=2,
                                         activation="relu", bias_initializer="ones")
    x = np.random.default_rng(1).normal(size=(2, 4, 4, 3)).astype("float32")
    hard = layer(x)  # training=None: the hard kernel
    stock = keras.layers.Conv2DTranspose(5, 3, strides=2, padding="same", activation="relu")
    stock.build(x.shape)
    stock.set_weights([layer.hard_kernel().numpy(), layer.bias.numpy()])
    np.testing.assert_allclose(hard, stock(x), rtol=1e-6, atol=1e-6)
    assert set(np.unique(layer.hard_kernel().numpy())) <= set(slb_keras.value_set(2).tolist())
    soft = layer(x, training=True)
    stock.set_weights([layer.soft_kernel().numpy(), layer.bias.numpy()])
    np.testing.assert_allclose(soft, stock(x), rtol=1e-5, atol=1e-5)


def test_the_family_says_where_its_output_channels_are():
    family = family_of(slb_keras.SLBConv2DTranspose)
    assert family.keras_class is keras.layers.Conv2DTranspose and family.hybrid is None
    kernel = np.arange(2 * 2 * 3 * 5, dtype=float).reshape(2, 2, 3, 5)  # [h, w, out=3, in=5]
    matrix = family.as_matrix(kernel)
    assert matrix.shape == (20, 3)
    np.testing.assert_array_equal(matrix[:, 1], kernel[:, :, 1, :].ravel())
    np.testing.assert_array_equal(family.from_matrix(matrix, kernel.shape), kernel)


def test_quantize_model_converts_and_training_moves_the_logits(trained):
    model, _, before = trained
    types = [type(layer).__name__ for layer in model.layers]
    assert types.count("SLBConv2DTranspose") == 2 and "Conv2DTranspose" not in types
    after = [layer.kernel_logits.numpy() for layer in slb_keras.slb_layers(model)]
    assert all(not np.array_equal(a, b) for a, b in zip(before, after))


def test_float_init_keeps_the_float_network_at_8_bits():
    # Each output channel's scale (axis -2 of the kernel) moves into the batch norm after it.
    keras.utils.set_random_seed(5)
    float_model = keras.Sequential([
        keras.Input((6, 6, 3)),
        keras.layers.Conv2D(8, 3, padding="same"),
        keras.layers.Conv2DTranspose(6, 3, strides=2, padding="same", use_bias=False),
        keras.layers.BatchNormalization(moving_variance_initializer=keras.initializers.Constant(4.0)),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(3),
    ])
    x = np.random.default_rng(2).random((8, 6, 6, 3), dtype=np.float32)
    quantized = slb_keras.quantize_model(float_model, wbits=8, abits=32)
    reference = float_model.predict(x, verbose=0)
    np.testing.assert_allclose(quantized.predict(x, verbose=0), reference, atol=0.02 * np.abs(reference).max())


def test_tflite_export_is_exact(trained, tmp_path):
    model, x, _ = trained
    expected = model.predict(x, verbose=0)
    report = slb_keras.export_tflite(model, str(tmp_path / "m.tflite"))
    np.testing.assert_allclose(run_tflite(report.path, x), expected, rtol=1e-5, atol=1e-6)
    assert [layer.values for layer in report.layers if layer.values] == [tuple(slb_keras.value_set(2).tolist())] * 2


def test_sign_inputs_take_the_dequantize_route_and_integer_is_refused_by_name(tmp_path):
    keras.utils.set_random_seed(4)
    model = keras.Sequential([
        keras.Input((5, 5, 4)),
        slb_keras.SLBConv2DTranspose(3, 3, strides=2, wbits=1, input_quantizer="ste_sign"),
    ])
    x = np.random.default_rng(3).normal(size=(4, 5, 5, 4)).astype("float32")
    report = slb_keras.export_tflite(model, str(tmp_path / "s.tflite"))  # auto: no integer route
    np.testing.assert_allclose(run_tflite(report.path, x), model.predict(x, verbose=0), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="Conv2DTranspose has no hybrid integer kernel in LiteRT"):
        slb_keras.export_tflite(model, str(tmp_path / "i.tflite"), arithmetic="integer")
    assert not (tmp_path / "i.tflite").exists()


def test_saves_packs_and_folds_batch_norm(trained, tmp_path):
    model, x, _ = trained
    expected = model.predict(x, verbose=0)
    model.save(tmp_path / "m.keras")
    np.testing.assert_array_equal(keras.models.load_model(tmp_path / "m.keras").predict(x, verbose=0), expected)
    slb_keras.export_packed(model, str(tmp_path / "m.slb"))
    np.testing.assert_array_equal(slb_keras.load_packed(str(tmp_path / "m.slb")).predict(x, verbose=0),
                                  slb_keras.to_inference_model(model).predict(x, verbose=0))
    folded = slb_keras.to_inference_model(model, fold_batch_norm=True)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in folded.layers)
    np.testing.assert_allclose(folded.predict(x, verbose=0), expected, rtol=1e-4, atol=1e-5)
