"""The layer graph of a Sequential or Functional model, nested models included.

One walk shared by `quantize_model` (which layers, in which order, what feeds
each), `to_inference_model` (which batch norm follows which kernel layer) and
`export_tflite` (which batch norm and activation follow a kernel layer). Running a
graph with some layers replaced is `slb_keras.core.model_helpers.run_graph`. A nested Sequential
or Functional model is walked into; its layers count as the model's own. The
private Keras attributes this needs are read in `slb_keras.checks` only.

Example:

>>> model = keras.Sequential([
...     keras.Input((4,)),
...     keras.layers.Dense(3, name="a"),
...     keras.layers.ReLU(name="r"),
...     keras.layers.Dense(2, name="b"),
... ])
>>> [layer.name for layer in leaf_layers(model)]
['a', 'r', 'b']
>>> consumers, producers = neighbours(model)
>>> [layer.name for layer in producers[id(model.layers[1])]]
['a']
>>> consumers[id(model.layers[2])]  # the model's output: read outside the graph
[None]
"""

import keras

from slb_keras import keras_private


def leaf_layers(model, seen=None):
    """The layers of `model` in order, nested Sequential/Functional expanded.

    Input layers are left out; a layer used twice is listed once.

    Raises:
        ValueError: `model` holds a subclassed model (it has no graph to walk).
    """
    seen = set() if seen is None else seen
    leaves = []
    for layer in model.layers:
        if id(layer) in seen or isinstance(layer, keras.layers.InputLayer):
            continue
        seen.add(id(layer))
        if keras_private.is_graph_model(layer):
            leaves.extend(leaf_layers(layer, seen))
        elif isinstance(layer, keras.Model):
            raise ValueError(
                f"Invalid model={model.name!r}: it contains the subclassed model "
                f"{layer.name!r} ({type(layer).__name__}), which cannot be cloned "
                "layer by layer. Use the SLB layers directly inside that subclass."
            )
        else:
            leaves.append(layer)
    return leaves


def neighbours(model, recursive=True, consumers=None, producers=None):
    """({id(layer): consumers}, {id(layer): producers}) within each (nested) graph.

    A layer called n times has n entries among its producers' consumers. A
    layer whose output is also an output of its model gets None among its
    consumers (something outside the graph reads it). With `recursive`, the
    graphs of nested Sequential/Functional models are added too (a nested
    model is also a node of its parent's graph).

    Example:

    >>> x = keras.Input((2,), name="x")
    >>> dense = keras.layers.Dense(2, name="d")
    >>> model = keras.Model(x, dense(dense(x)))  # d called twice
    >>> consumers, producers = neighbours(model)
    >>> [op.name if op else None for op in consumers[id(dense)]]
    ['d', None]
    >>> sole(producers[id(dense)]) is None  # fed by x and by itself
    True
    """
    consumers = {} if consumers is None else consumers
    producers = {} if producers is None else producers
    if isinstance(model, keras.Sequential):
        chain = list(model.layers)
        edges = list(zip(chain, chain[1:]))
        ends = [chain[-1]] if chain else []
    else:
        edges, ends = keras_private.graph_edges(model)
    for producer, consumer in edges:
        consumers.setdefault(id(producer), []).append(consumer)
        producers.setdefault(id(consumer), []).append(producer)
    for end in ends:
        consumers.setdefault(id(end), []).append(None)
    if recursive:
        for layer in model.layers:
            if keras_private.is_graph_model(layer):
                neighbours(layer, True, consumers, producers)
    return consumers, producers


def sole(layers):
    """The one entry of `layers` (a list from `neighbours`), else None.

    Example:

    >>> sole(["a"]), sole(["a", "b"]), sole(None)
    ('a', None, None)
    """
    return layers[0] if layers is not None and len(layers) == 1 else None


def as_functional(model):
    """`model` as a Functional model: a Sequential is rewrapped (same layers).

    Example:

    >>> seq = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)], name="s")
    >>> functional = as_functional(seq)
    >>> type(functional).__name__, functional.name, functional.layers[-1] is seq.layers[-1]
    ('Functional', 's', True)
    """
    if isinstance(model, keras.Sequential):
        inputs, outputs = model.inputs, model.outputs
        return keras.Model(
            inputs[0] if len(inputs) == 1 else inputs,
            outputs[0] if len(outputs) == 1 else outputs,
            name=model.name,
        )
    return model
