"""Shared checks: integer arguments, graph models, the Keras layers with a kernel.

Every bad argument raises a ValueError in one style,
``Invalid <name>=<value>: expected <what is allowed>.``

This module is also the package's one home for private Keras: the only imports
of private Keras names (`keras.src.models.functional.Functional`: Keras exports
no class that tells a Functional model from a subclassed one;
`keras.src.backend.common.global_state`: the list of variables a StatelessScope
created and has not allocated) and the only reads of private Keras attributes
that conversion and export need (a graph's nodes and edges, the layers nested
in a layer, Functional's own graph walk: Keras 3 has no public API for them). Written against Keras 3.15; see
"Private Keras" below before upgrading.
"""

import numbers

import keras
from keras.src.backend.common import global_state
from keras.src.models.functional import Functional

# Keras layers with a weight kernel (the candidates for quantization and for
# folding a following batch norm).
KERNEL_LAYERS = (
    keras.layers.Dense,
    keras.layers.EinsumDense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
    keras.layers.SeparableConv1D,
    keras.layers.SeparableConv2D,
    keras.layers.DepthwiseConv1D,
    keras.layers.DepthwiseConv2D,
)


def is_int(value):
    """True for an integer that is not a bool (numpy integers included).

    Example:

    >>> is_int(3), is_int(np.int64(3)), is_int(True), is_int(3.0)
    (True, True, False, False)
    """
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(name, value, low=1, allow_none=False):
    """Returns `value` as an int >= `low`, or raises a ValueError naming it.

    Args:
        name: the argument's name, for the message.
        value: what was received.
        low: the smallest allowed value.
        allow_none: whether None is allowed (then returned as is).

    Raises:
        ValueError: ``Invalid <name>=<value>: expected an int >= <low>.``
            (``... or None.`` with `allow_none`).

    Example:

    >>> check_int("steps", 3)
    3
    >>> check_int("steps", 0)
    Traceback (most recent call last):
    ...
    ValueError: Invalid steps=0: expected an int >= 1.
    """
    if value is None and allow_none:
        return None
    if not is_int(value) or value < low:
        allowed = f"an int >= {low}" + (" or None" if allow_none else "")
        raise ValueError(f"Invalid {name}={value!r}: expected {allowed}.")
    return int(value)


def is_graph_model(model):
    """True for a Sequential or Functional model (one rebuilt node by node).

    Example:

    >>> is_graph_model(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))
    True
    """
    return isinstance(model, (keras.Sequential, Functional))


def check_graph_model(model, action="converted"):
    """Raises a ValueError unless `model` is a built Sequential/Functional model.

    Args:
        model: what was received.
        action: what is done to the model, for the message ("converted",
            "exported", ...).

    Example:

    >>> check_graph_model(keras.Sequential([keras.layers.Dense(1)]))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: Invalid model='sequential...': the model is not built; start it with keras.Input(shape) or call model.build(input_shape) before it is converted.
    """
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"Invalid model={model!r}: expected a keras.Sequential or Functional "
            "Keras model."
        )
    if not is_graph_model(model):
        raise ValueError(
            f"Invalid model={model.name!r} of class {type(model).__name__}: "
            "subclassed models cannot be rebuilt layer by layer. Use the SLB layers "
            "(slb_keras.SLBConv2D, SLBDense, ...) and StateBatchNormalization "
            "directly inside the subclass, or build it as a Sequential or "
            "Functional model."
        )
    try:
        built = model.built and bool(model.inputs)
    except (AttributeError, ValueError):  # a Sequential with no input shape
        built = False
    if not built:
        raise ValueError(
            f"Invalid model={model.name!r}: the model is not built; start it with "
            "keras.Input(shape) or call model.build(input_shape) before it is "
            f"{action}."
        )


# -- Private Keras ---------------------------------------------------------------
#
# Keras 3 exports no API for who feeds whom in a Functional graph, for all the
# layers nested in a layer, or for running a graph with some operations
# replaced. These three functions read Keras's private attributes; the
# conversion and export modules read them only through here. Written against Keras 3.15
# (keras/src/models/functional.py, keras/src/ops/node.py,
# keras/src/layers/layer.py); tests/test_export*.py and tests/test_quantize.py
# go through each of them, so a Keras upgrade that moves one fails there.


def flatten_layers(layer, include_self=False):
    """`layer`'s nested layers, recursively, in Keras's tracking order.

    Example:

    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> [type(l).__name__ for l in flatten_layers(model)]
    ['InputLayer', 'Dense']
    """
    return list(layer._flatten_layers(include_self=include_self, recursive=True))


def graph_edges(model):
    """(edges, ends) of a Functional model's graph, one level (nested models as nodes).

    `edges` holds a (producer, consumer) pair of operations for each input
    tensor of each node (a layer called twice appears in two nodes); `ends`, the
    operations whose output is one of the model's outputs.

    Example:

    >>> x = keras.Input((2,), name="x")
    >>> model = keras.Model(x, keras.layers.Dense(1, name="d")(x))
    >>> edges, ends = graph_edges(model)
    >>> [(a.name, b.name) for a, b in edges], [op.name for op in ends]
    ([('x', 'd')], ['d'])
    """
    nodes = [node for level in model._nodes_by_depth.values() for node in level]
    edges = [
        (tensor._keras_history.operation, node.operation)
        for node in nodes
        for tensor in node.input_tensors
    ]
    ends = [tensor._keras_history.operation for tensor in model.outputs]
    return edges, ends


def run_through_graph(model, inputs, operation_fn):
    """A Functional model's graph on `inputs`, with `operation_fn(op)` called for each op.

    What `Functional.call` runs, with a function in place of each operation.

    Example:

    >>> x = keras.Input((2,))
    >>> model = keras.Model(x, keras.layers.ReLU()(x))
    >>> outputs = run_through_graph(model, [np.array([[-1.0, 2.0]])], lambda op: op)
    >>> np.asarray(outputs).tolist()
    [[0.0, 2.0]]
    """
    return model._run_through_graph(inputs, operation_fn=operation_fn)


# Keras's list of the variables created in a `keras.StatelessScope` and not yet
# allocated (keras/src/backend/common/variables.py, Keras 3.15): the next
# StatelessScope to close allocates them, and no public API forgets them.
_UNALLOCATED = "uninitialized_variables"


def unallocated_variables():
    """The variables Keras created in a StatelessScope and has not allocated yet.

    Example:

    >>> with keras.StatelessScope(initialize_variables=False):
    ...     layer = keras.layers.Dense(3)
    ...     layer.build((None, 2))
    ...     created = unallocated_variables()
    ...     set_unallocated_variables([])  # forget them: closing the scope allocates nothing
    >>> len(created) >= 2, unallocated_variables()
    (True, [])
    """
    return list(global_state.get_global_attribute(_UNALLOCATED, None) or [])


def set_unallocated_variables(variables):
    """Makes `variables` Keras's list of unallocated variables (see `unallocated_variables`)."""
    global_state.set_global_attribute(_UNALLOCATED, list(variables))

