"""The one gateway to private Keras: every use of a Keras name or attribute that is not public API.

Keras 3 has no public API for what conversion and export need from a model's
graph, nor for a few internals that calibration, weight decay and loading
checks read. Everything of that kind goes through the functions here, so a
Keras upgrade that moves one fails in one module (tests/test_imports.py checks
that no other library module imports `keras.src` or reads these attributes).
Written against Keras 3.15:

- imports: `keras.src.models.functional.Functional` (no exported class tells a
  Functional model from a subclassed one), `keras.src.backend.common.global_state`
  (the variables a StatelessScope created and has not allocated);
- graph reads (keras/src/models/functional.py, keras/src/ops/node.py,
  keras/src/layers/layer.py): `_nodes_by_depth`, `_keras_history`,
  `_run_through_graph`, `_flatten_layers`;
- a layer's variables in the order `save_own_variables` writes them
  (`_trainable_variables + _non_trainable_variables`), an optimizer's variable
  list (`_trainable_variables`), a batch norm's reduction axes (`_reduction_axes`).

One reliance is an override rather than a read and stays with its class:
`slb_keras.core.mixin.SLBLayerMixin` answers Keras's `add_weight("kernel")` inside
`build` and defines the `_kernel` attribute Keras's Dense/Conv layers keep their
kernel in (keras/src/layers/core/dense.py, keras/src/layers/convolutional/base_conv.py).
train.py's own workaround for keras-team/keras#20585 is in `training/keras_fixes.py`.
"""

import keras
from keras.src.backend.common import global_state
from keras.src.models.functional import Functional


def is_graph_model(model):
    """True for a Sequential or Functional model (one rebuilt node by node).

    Example:

    >>> is_graph_model(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))
    True
    """
    return isinstance(model, (keras.Sequential, Functional))

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
    """A Functional (or Sequential) model's graph on `inputs`, `operation_fn(op)` for each op.

    What `Functional.call` runs, with a function in place of each operation.

    Example:

    >>> x = keras.Input((2,))
    >>> model = keras.Model(x, keras.layers.ReLU()(x))
    >>> outputs = run_through_graph(model, [np.array([[-1.0, 2.0]])], lambda op: op)
    >>> np.asarray(outputs).tolist()
    [[0.0, 2.0]]
    """
    graph = model._functional if isinstance(model, keras.Sequential) else model
    return graph._run_through_graph(inputs, operation_fn=operation_fn)


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


def saved_variable_order(layer):
    """`layer`'s own variables in the order `Layer.save_own_variables` stores them.

    Example:

    >>> layer = keras.layers.Dense(2)
    >>> layer.build((None, 3))
    >>> [v.name for v in saved_variable_order(layer)]
    ['kernel', 'bias']
    """
    return list(layer._trainable_variables) + list(layer._non_trainable_variables)


def optimizer_variables(optimizer):
    """The trainable variables `optimizer` was built for, in its gradient order.

    Example:

    >>> optimizer = keras.optimizers.SGD()
    >>> optimizer.build([keras.Variable(1.0, name="w")])
    >>> [v.name for v in optimizer_variables(optimizer)]
    ['w']
    """
    return optimizer._trainable_variables


def reduction_axes(batch_norm):
    """The axes a built `keras.layers.BatchNormalization` reduces over for its statistics.

    Example:

    >>> bn = keras.layers.BatchNormalization()
    >>> bn.build((None, 4, 4, 3))
    >>> list(reduction_axes(bn))
    [0, 1, 2]
    """
    return batch_norm._reduction_axes
