"""slb_keras.convert.graph: the one walk of a model's graph (quantize_model, to_inference_model, export_tflite)."""

import keras
import numpy as np
import pytest

import slb_keras
from slb_keras.convert import graph
from slb_keras.core import model_helpers


def nested_model():
    inner_x = keras.Input((4,), name="inner_x")
    inner = keras.Model(inner_x, keras.layers.Dense(4, name="inner_dense")(inner_x), name="inner")
    x = keras.Input((4,), name="x")
    a = keras.layers.Dense(4, name="a")
    h = a(x)
    h = inner(h)
    h = keras.layers.ReLU(name="relu")(h)
    return keras.Model(x, [keras.layers.Dense(2, name="b")(h), h], name="outer"), a


def test_leaf_layers_and_neighbours_walk_into_nested_models():
    model, a = nested_model()
    assert [layer.name for layer in graph.leaf_layers(model)] == ["a", "inner_dense", "relu", "b"]
    consumers, producers = graph.neighbours(model)
    names = lambda ops: [op.name if op is not None else None for op in ops]  # noqa: E731
    assert names(consumers[id(a)]) == ["inner"]
    assert names(producers[id(model.get_layer("relu"))]) == ["inner"]
    assert names(consumers[id(model.get_layer("relu"))]) == ["b", None]  # also a model output
    inner_dense = model.get_layer("inner").get_layer("inner_dense")
    assert names(producers[id(inner_dense)]) == ["inner_x"]  # the nested graph's own edges
    assert id(inner_dense) not in graph.neighbours(model, recursive=False)[1]


def test_run_graph_replaces_layers_inside_nested_models():
    model, _ = nested_model()
    inner_dense = model.get_layer("inner").get_layer("inner_dense")
    x = np.random.default_rng(0).normal(size=(3, 4)).astype("float32")
    same = model_helpers.run_graph(model, [x], {})
    for got, want in zip(same, model(x)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6)
    zeroed = model_helpers.run_graph(model, [x], {id(inner_dense): lambda t: t * 0.0})
    np.testing.assert_array_equal(np.asarray(zeroed[1]), np.zeros((3, 4)))  # relu(0)


@pytest.mark.filterwarnings("ignore:Model .* has no SLB layers")
def test_fold_batch_norm_leaves_a_kernel_whose_output_is_also_a_model_output():
    # The dense output is read by the batch norm and is a model output: folding
    # the batch norm into the dense would change that output.
    x = keras.Input((5,))
    h = keras.layers.Dense(4, name="d")(x)
    model = keras.Model(x, [keras.layers.BatchNormalization(name="bn")(h), h])
    rng = np.random.default_rng(0)
    for variable in model.weights:
        variable.assign(rng.uniform(0.5, 2.0, tuple(variable.shape)).astype("float32"))
    folded = slb_keras.to_inference_model(model, fold_batch_norm=True)
    assert any(isinstance(l, keras.layers.BatchNormalization) for l in folded.layers)
    data = rng.normal(size=(4, 5)).astype("float32")
    for got, want in zip(folded.predict(data, verbose=0), model.predict(data, verbose=0)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # Read by the batch norm alone, the same dense is folded.
    single = keras.Model(x, model.get_layer("bn").output)
    folded = slb_keras.to_inference_model(single, fold_batch_norm=True)
    assert not any(isinstance(l, keras.layers.BatchNormalization) for l in folded.layers)
    np.testing.assert_allclose(
        folded.predict(data, verbose=0), single.predict(data, verbose=0), rtol=1e-5, atol=1e-5
    )
