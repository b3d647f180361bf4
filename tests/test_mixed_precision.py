"""Mixed-precision search: searched layers, the size budget, fixing the widths, exports."""

import keras
import numpy as np
import pytest

import slb_keras
from litert_run import run_tflite
from slb_keras.core import mixed_precision
from slb_keras.core import ops as slb_ops


def _searched_model(seed=0):
    """Every SLB family searched, with random logits and random width logits."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 6, 3))
    x = slb_keras.SLBConv2D(4, 3, padding="same", wbits=(1, 2, 4), name="conv")(inputs)
    x = slb_keras.StateBatchNormalization(name="bn")(x)
    x = slb_keras.SLBDepthwiseConv2D(3, padding="same", wbits=(2, 4),
                                     input_quantizer="dorefa4", name="dw")(x)
    x = slb_keras.SLBConv2DTranspose(4, 3, strides=2, padding="same", wbits=(1, 2),
                                     input_quantizer="dorefa2", name="up")(x)
    x = keras.layers.Reshape((12 * 12, 4))(x)
    x = slb_keras.SLBConv1D(4, 3, padding="causal", wbits=(1, 2, 4, 8), name="c1")(x)
    x = keras.layers.Flatten()(x)
    outputs = slb_keras.SLBDense(5, wbits=(1, 4), input_quantizer="ste_sign", name="dense")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(seed)
    for layer in slb_keras.slb_layers(model):
        layer.width_logits.assign(rng.normal(size=layer.width_logits.shape).astype("float32"))
    return model


def test_the_value_sets_nest_so_narrow_logits_are_a_subset():
    for bits, within in [(1, 2), (1, 4), (2, 4), (2, 8), (4, 8), (1, 8)]:
        codes = mixed_precision.nested_codes(bits, within)
        np.testing.assert_allclose(slb_keras.value_set(within)[codes], slb_keras.value_set(bits), atol=1e-7)
    with pytest.raises(ValueError, match="V3 is not inside V4"):
        mixed_precision.nested_codes(3, 4)


def test_a_peaked_width_choice_is_that_width_soft_and_hard():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(5, 7, 16)).astype("float32")
    for i, bits in enumerate((1, 2, 4)):
        width_logits = np.full(3, -50.0, "float32")
        width_logits[i] = 50.0
        sub = mixed_precision.logits_at(logits, bits, (1, 2, 4))
        np.testing.assert_allclose(
            mixed_precision.soft_weight(logits, width_logits, 3.0, (1, 2, 4)),
            slb_ops.soft_weight(sub, 3.0, bits=bits), atol=1e-6)
        np.testing.assert_array_equal(
            mixed_precision.hard_weight(logits, width_logits, (1, 2, 4)), slb_ops.hard_weight(sub, bits=bits))
    # Uniform width probabilities: the mean of the three soft weights.
    mean = np.mean([slb_ops.soft_weight(mixed_precision.logits_at(logits, b, (1, 2, 4)), 2.0, bits=b)
                    for b in (1, 2, 4)], axis=0)
    np.testing.assert_allclose(mixed_precision.soft_weight(logits, np.zeros(3), 2.0, (1, 2, 4)), mean, atol=1e-6)


@pytest.mark.parametrize("wbits, message", [
    ((1, 3), "two or more distinct widths of 1, 2, 4, 8"),
    ((2,), "two or more distinct widths"),
    ((2, 2), "two or more distinct widths"),
    ((1, True), "two or more distinct widths"),
])
def test_bad_candidate_widths_name_the_argument(wbits, message):
    with pytest.raises(ValueError, match=f"Invalid wbits=.*{message}"):
        slb_keras.SLBDense(2, wbits=wbits)


def test_fixed_model_computes_the_searched_hard_network_exactly():
    model = _searched_model()
    x = np.random.default_rng(2).normal(size=(3, 6, 6, 3)).astype("float32")
    fixed = slb_keras.fix_bit_widths(model)
    chosen = {layer.name: layer.chosen_wbits() for layer in slb_keras.slb_layers(model)}
    assert {layer.name: layer.wbits for layer in slb_keras.slb_layers(fixed)} == chosen
    assert len(set(chosen.values())) > 1  # the random width logits chose several widths
    for old, new in zip(slb_keras.slb_layers(model), slb_keras.slb_layers(fixed)):
        np.testing.assert_array_equal(new.hard_kernel(), old.hard_kernel())
        np.testing.assert_array_equal(new.kernel_codes(), old.kernel_codes())
    np.testing.assert_array_equal(fixed(x, training=False), model(x, training=False))


def test_fixed_model_saves_and_exports_each_layer_with_its_own_codes(tmp_path):
    model = _searched_model(seed=3)
    fixed = slb_keras.fix_bit_widths(model)
    x = np.random.default_rng(4).normal(size=(2, 6, 6, 3)).astype("float32")
    expected = fixed.predict(x, verbose=0)
    fixed.save(tmp_path / "fixed.keras")
    np.testing.assert_array_equal(keras.saving.load_model(tmp_path / "fixed.keras").predict(x, verbose=0), expected)
    report = slb_keras.export_tflite(fixed, str(tmp_path / "m.tflite"))
    np.testing.assert_allclose(run_tflite(report.path, x), expected, rtol=1e-5, atol=1e-5)
    widths = {layer.name: layer.wbits for layer in slb_keras.slb_layers(fixed)}
    assert {layer.name: layer.bits for layer in report.layers} == widths
    packed = slb_keras.export_packed(fixed, str(tmp_path / "m.slb"))
    np.testing.assert_array_equal(slb_keras.load_packed(str(tmp_path / "m.slb")).predict(x, verbose=0), expected)
    for layer in packed.layers:  # true b bits per weight
        assert layer.bits == widths[layer.name]
        assert layer.packed_bytes == -(-layer.num_weights * widths[layer.name] // 8)


def test_a_searched_model_is_refused_by_the_exports_until_fixed(tmp_path):
    model = _searched_model()
    for export in (slb_keras.export_tflite, slb_keras.export_packed):
        with pytest.raises(ValueError, match="still searches its width.*fix_bit_widths"):
            export(model, str(tmp_path / "m.out"))
        assert not (tmp_path / "m.out").exists()


def test_searched_model_trains_saves_and_loads(tmp_path):
    model = _searched_model()
    model.compile("adam", keras.losses.MeanSquaredError())
    x = np.random.default_rng(5).normal(size=(8, 6, 6, 3)).astype("float32")
    y = np.zeros((8, 5), "float32")
    budget = slb_keras.BitBudget(1.0, rate=0.5)  # only all-1-bit meets it: lambda must grow
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[budget])
    assert set(history.history) >= {"loss", "expected_wbits", "bit_lambda"}
    assert history.history["bit_lambda"][-1] > 0
    before = {layer.name: layer.width_logits.numpy() for layer in slb_keras.slb_layers(model)}
    assert any(np.ptp(logits) > 0 for logits in before.values())  # the width logits trained
    model.save(tmp_path / "search.keras")
    loaded = keras.saving.load_model(tmp_path / "search.keras")
    for layer in slb_keras.slb_layers(loaded):
        np.testing.assert_array_equal(layer.width_logits.numpy(), before[layer.name])
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    # lambda is kept in the model: a second fit resumes from it.
    again = slb_keras.BitBudget(1.0, rate=0.5)
    again.set_model(loaded)
    loaded.compile("adam", keras.losses.MeanSquaredError())
    again.on_train_begin()
    assert again.bit_lambda == pytest.approx(budget.bit_lambda, rel=1e-5)


def test_the_budget_term_drives_the_expected_bits_under_the_budget():
    keras.utils.set_random_seed(6)
    model = keras.Sequential([
        keras.Input((16,)),
        slb_keras.SLBDense(32, wbits=(1, 2, 4), name="a"),
        slb_keras.SLBDense(8, wbits=(1, 2, 4), name="b"),
    ])
    model.compile(keras.optimizers.Adam(0.02), "mse")  # tau stays 1
    x = np.random.default_rng(7).normal(size=(64, 16)).astype("float32")
    y = np.random.default_rng(8).normal(size=(64, 8)).astype("float32")
    budget = slb_keras.BitBudget(1.5, rate=0.5)
    start = slb_keras.average_wbits(model, expected=True)
    model.fit(x, y, batch_size=8, epochs=8, verbose=0, callbacks=[budget])
    assert start == pytest.approx(7 / 3, rel=1e-5)  # uniform over 1, 2, 4
    assert budget.expected_average() <= 1.5  # measured: 2.33 -> 1.27 (lambda overshoots, then decays)
    assert all(np.argmax(layer.width_logits.numpy()) == 0 for layer in model.layers)
    fixed = slb_keras.fix_bit_widths(model, budget=1.5)
    assert slb_keras.average_wbits(fixed) <= 1.5


def _big_small_fixed(width_logits):
    """Two searched layers (100 and 20 weights) with these width logits, one fixed at 2 bits (6)."""
    model = keras.Sequential([
        keras.Input((10,)),
        slb_keras.SLBDense(10, wbits=(1, 2, 4), name="big"),   # 100 weights
        slb_keras.SLBDense(2, wbits=(1, 2, 4), name="small"),  # 20 weights
        slb_keras.SLBDense(3, wbits=2, name="fixed"),          # 6 weights at 2 bits
    ])
    model.get_layer("big").width_logits.assign(width_logits)
    model.get_layer("small").width_logits.assign(width_logits)
    return model


def test_choose_widths_keeps_the_budget_cheapest_first():
    model = _big_small_fixed([0.0, 0.0, 3.0])
    assert slb_keras.choose_widths(model) == {"big": 4, "small": 4}
    # 2.5 bits over 126 weights = 315: big must come down; small (the same log-prob loss
    # per bit) stays at 4 if that is enough: 100 * 2 + 20 * 4 + 12 = 292.
    assert slb_keras.choose_widths(model, budget=2.5) == {"big": 2, "small": 4}
    assert slb_keras.choose_widths(model, budget=1.1) == {"big": 1, "small": 1}
    with pytest.raises(ValueError, match=r"Invalid budget=1.0: even the narrowest widths average 1.048"):
        slb_keras.choose_widths(model, budget=1.0)  # the fixed 2-bit layer: (120 + 12) / 126
    with pytest.raises(ValueError, match=r"Invalid budget=0.5: expected a number from 1 to 4"):
        slb_keras.choose_widths(model, budget=0.5)
    with pytest.raises(ValueError, match="Invalid widths.*one width for each searched layer"):
        slb_keras.fix_bit_widths(model, widths={"big": 2})
    with pytest.raises(ValueError, match=r"Invalid widths\['big'\]=3: expected one of \(1, 2, 4\)"):
        slb_keras.fix_bit_widths(model, widths={"big": 3, "small": 1})
    fixed = slb_keras.fix_bit_widths(model, widths={"big": 1, "small": 2})
    assert [layer.wbits for layer in fixed.layers] == [1, 2, 2]


def test_choose_widths_uses_the_budget_widening_the_most_preferred_first():
    model = _big_small_fixed([3.0, 0.0, 0.0])
    assert slb_keras.choose_widths(model) == {"big": 1, "small": 1}  # 132 bits: 1.05 average
    # 2 bits = 252: big's step to 2 bits loses the least log-probability per bit (100 bits
    # share it), then small's fits exactly; no further step fits.
    assert slb_keras.choose_widths(model, budget=2.0) == {"big": 2, "small": 2}
    # 1.3 bits = 163.8: only small's step (+20 bits) fits.
    assert slb_keras.choose_widths(model, budget=1.3) == {"big": 1, "small": 2}
    fixed = slb_keras.fix_bit_widths(model, budget=2.0)
    assert slb_keras.average_wbits(fixed) == pytest.approx(2.0)
    # An argmax within the budget is kept, one over it narrowed: small now prefers 4 bits.
    model.get_layer("small").width_logits.assign([0.0, 0.0, 3.0])
    assert slb_keras.choose_widths(model, budget=1.6) == {"big": 1, "small": 4}  # 192 <= 201.6
    assert slb_keras.choose_widths(model, budget=1.5) == {"big": 1, "small": 2}  # 192 > 189


def test_bit_budget_arguments_and_a_model_without_search():
    with pytest.raises(ValueError, match="Invalid budget='2'"):
        slb_keras.BitBudget("2")
    with pytest.raises(ValueError, match="Invalid rate=0"):
        slb_keras.BitBudget(2.0, rate=0)
    model = keras.Sequential([keras.Input((3,)), slb_keras.SLBDense(2, wbits=2)])
    budget = slb_keras.BitBudget(2.0)
    budget.set_model(model)
    with pytest.raises(ValueError, match="has no searched layer"):
        budget.on_train_begin()


def test_quantize_model_searches_and_summary_shows_widths_and_average():
    keras.utils.set_random_seed(9)
    float_model = keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(8, 3, use_bias=False), keras.layers.BatchNormalization(), keras.layers.ReLU(),
        keras.layers.Conv2D(8, 3, use_bias=False), keras.layers.BatchNormalization(), keras.layers.ReLU(),
        keras.layers.Flatten(), keras.layers.Dense(4),
    ])
    slb = slb_keras.quantize_model(float_model, wbits=(1, 2, 4), skip_first_last=False, abits=2)
    layers = slb_keras.slb_layers(slb)
    assert [layer.wbits for layer in layers] == [(1, 2, 4)] * 3
    # Float init over V4: the nearest value of each narrower set is its argmax too.
    layers[0].width_logits.assign([0.0, 0.0, 1.0])
    w = float_model.layers[0].kernel.numpy()
    hard = layers[0].hard_kernel().numpy()
    assert np.corrcoef(w.ravel(), hard.ravel())[0, 1] > 0.9
    layers[1].width_logits.assign([0.0, 1.0, 0.0])
    printed = []
    result = slb_keras.summary(slb, print_fn=printed.append)
    rows = {row.name: row.wbits for row in result.layers if row.type.startswith("SLB")}
    assert sorted(rows.values()) == [1, 2, 4]
    assert "Average bits per quantized weight:" in printed[0]
    assert slb_keras.average_wbits(slb) == pytest.approx(
        sum(l.chosen_wbits() * np.prod(l.kernel_logits.shape[:-1]) for l in layers)
        / sum(np.prod(l.kernel_logits.shape[:-1]) for l in layers))
