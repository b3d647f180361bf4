"""summary: per-layer bits, parameters and memory, checked against hand counts."""

import keras
import numpy as np
import pytest

import slb_keras


def hand_counted_model():
    return keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3, use_bias=False, name="c1"),
            slb_keras.StateBatchNormalization(name="bn1"),
            keras.layers.ReLU(name="r1"),
            slb_keras.SLBConv2D(8, 3, wbits=2, input_quantizer="pact2", name="c2"),
            slb_keras.StateBatchNormalization(name="bn2"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(10, name="d"),
        ]
    )


# name, type, wbits, abits, params, logits, training bytes, deployed bits
HAND_COUNTS = [
    # 3*3*3*4 float weights.
    ("c1", "Conv2D", 32, None, 108, 0, 108 * 4, 108 * 32),
    # gamma, beta, soft mean/var, hard mean/var (4 each) + calibrated; deployed:
    # gamma, beta and the hard statistics.
    ("bn1", "StateBatchNormalization", 32, None, 16, 0, (6 * 4 + 1) * 4, 16 * 32),
    ("r1", "ReLU", None, None, 0, 0, 0, 0),
    # 3*3*4*8 = 288 weights, 4 logits each, temperature, 8 biases, PACT alpha;
    # deployed: 288 weights at 2 bits, 8 biases + alpha at 32 bits.
    ("c2", "SLBConv2D", 2, 2, 288 + 9, 288 * 4, (288 * 4 + 1 + 8 + 1) * 4, 288 * 2 + 9 * 32),
    ("bn2", "StateBatchNormalization", 32, None, 32, 0, (6 * 8 + 1) * 4, 32 * 32),
    ("gap", "GlobalAveragePooling2D", None, None, 0, 0, 0, 0),
    ("d", "Dense", 32, None, 90, 0, 90 * 4, 90 * 32),
]


def test_matches_hand_counts():
    result = slb_keras.summary(hand_counted_model(), print_fn=None)
    rows = [
        (r.name, r.type, r.wbits, r.abits, r.params, r.logits, r.training_bytes, r.deployed_bits)
        for r in result.layers
    ]
    assert rows == HAND_COUNTS
    params = 108 + 16 + 297 + 32 + 90
    deployed = 108 * 32 + 16 * 32 + (288 * 2 + 9 * 32) + 32 * 32 + 90 * 32
    assert result.params == params == 543
    assert result.params_by_bits == {2: 288, 32: params - 288}
    assert result.logits == 1152
    assert result.training_bytes == sum(row[6] for row in HAND_COUNTS) == 5736
    assert result.deployed_bits == deployed == 8736
    assert result.float32_bits == 32 * params
    assert result.compression_ratio == pytest.approx(32 * 543 / 8736)
    data = result.as_dict()
    assert data["layers"][3]["logits"] == 1152 and data["params"] == 543


def test_quantize_model_gives_the_same_counts():
    float_model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3, use_bias=False, name="c1"),
            keras.layers.BatchNormalization(name="bn1"),
            keras.layers.ReLU(name="r1"),
            keras.layers.Conv2D(8, 3, name="c2"),
            keras.layers.BatchNormalization(name="bn2"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(10, name="d"),
        ]
    )
    before = slb_keras.summary(float_model, print_fn=None)
    assert before.params == float_model.count_params() == 542  # no PACT alpha yet
    assert before.compression_ratio == 1.0 and before.logits == 0
    converted = slb_keras.quantize_model(float_model, wbits=2, abits="pact2")
    after = slb_keras.summary(converted, print_fn=None)
    assert [
        (r.name, r.type, r.wbits, r.abits, r.params, r.logits, r.training_bytes, r.deployed_bits)
        for r in after.layers
    ] == HAND_COUNTS


def test_prints_a_table_with_totals():
    printed = []
    result = slb_keras.summary(hand_counted_model(), print_fn=printed.append)
    assert len(printed) == 1 and printed[0] == result.table()
    lines = printed[0].splitlines()
    assert lines[1].split() == ["Layer", "Type", "W/A", "bits", "Params", "Logits", "Train", "mem", "Deployed"]
    c2 = next(line for line in lines if line.startswith("c2 "))
    assert c2.split()[:5] == ["c2", "SLBConv2D", "2/2", "297", "1,152"]
    assert "Total params: 543 (288 at 2 bits, 255 at 32 bits)" in lines
    assert "SLB logits: 1,152" in lines
    assert lines[-1] == "Deployed size: 1.07 KiB (float32: 2.12 KiB, compression 1.99x)"


def test_nested_and_subclassed_models():
    inner = keras.Sequential(
        [keras.Input((4,)), slb_keras.SLBDense(3, use_bias=False, wbits=1, name="q")], name="inner"
    )
    x = keras.Input((4,))
    outer = keras.Model(x, keras.layers.Dense(2, name="head")(inner(x)))
    result = slb_keras.summary(outer, print_fn=None)
    assert [(r.name, r.params, r.deployed_bits) for r in result.layers] == [
        ("inner/q", 12, 12),
        ("head", 8, 8 * 32),
    ]

    class Scaled(keras.Model):
        def __init__(self):
            super().__init__(name="scaled")
            self.dense = slb_keras.SLBDense(2, wbits=3, name="q3")
            self.scale = self.add_weight(shape=(2,), initializer="ones", name="scale")

        def call(self, x):
            return self.dense(x) * self.scale

    model = Scaled()
    model(np.ones((1, 5), "float32"))
    result = slb_keras.summary(model, print_fn=None)
    assert [(r.name, r.wbits, r.params, r.logits, r.deployed_bits) for r in result.layers] == [
        ("q3", 3, 12, 80, 10 * 3 + 2 * 32),  # 5*2 weights at 3 bits, 2 biases
        ("scaled", 32, 2, 0, 64),  # the model's own variable
    ]


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="Invalid model='model.keras': expected a Keras model"):
        slb_keras.summary("model.keras")
    with pytest.raises(ValueError, match="not built"):
        slb_keras.summary(keras.Sequential([keras.layers.Dense(2)]))
    with pytest.raises(ValueError, match="Invalid print_fn=3"):
        slb_keras.summary(hand_counted_model(), print_fn=3)
