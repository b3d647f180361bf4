"""Model-level helpers over the SLB layers of a model.

`slb_layers` finds them (nested models included), `quantized_weight_counts` counts
their weights, `set_temperature` sets their tau,
`soft_inference` makes inference use the soft kernels for a while, and `layer_inputs`
records the input each one receives (what calibration and the metrics need), through
`run_graph` (a model's graph with some layers replaced).
"""

import contextlib
import math

import keras
import numpy as np
from keras import ops

from slb_keras import keras_private
from slb_keras.core.mixin import SLBLayerMixin

def slb_layers(model):
    """All SLB layers of `model` (or a layer), nested models included, in order.

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), slb_keras.SLBDense(2)])
    >>> [type(l).__name__ for l in slb_layers(model)]
    ['SLBDense']
    """
    if not isinstance(model, keras.layers.Layer):
        raise ValueError(
            f"Invalid model={model!r}: expected a Keras model or layer."
        )
    return [
        layer
        for layer in keras_private.flatten_layers(model, include_self=True)
        if isinstance(layer, SLBLayerMixin)
    ]


def quantized_weight_counts(model):
    """[(layer, number of quantized weights)] for every SLB layer of `model`.

    Example:

    >>> model = keras.Sequential([keras.Input((3,)), slb_keras.SLBDense(2, wbits=(1, 2))])
    >>> [(layer.name, n) for layer, n in quantized_weight_counts(model)]  # doctest: +ELLIPSIS
    [('slb_dense...', 6)]
    """
    counts = []
    for layer in slb_layers(model):
        if not layer.built:
            raise ValueError(f"Layer {layer.name!r} is not built: build the model first.")
        counts.append((layer, math.prod(layer.kernel_logits.shape[:-1])))
    return counts


def set_temperature(model, temperature):
    """Sets tau on every SLB layer of `model` (nested models included).

    Args:
        model: a Keras model or layer.
        temperature: tau, a finite number > 0: an int or float (numpy
            scalars included) or a scalar tensor. A string such as "1" or a
            bool is refused, not converted.

    Returns:
        The number of SLB layers updated.

    Raises:
        ValueError: if `temperature` is not a finite positive number.

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), slb_keras.SLBDense(2)])
    >>> set_temperature(model, 10.0)
    1
    >>> float(model.layers[0].temperature.numpy())
    10.0
    >>> set_temperature(model, "1")
    Traceback (most recent call last):
    ...
    ValueError: Invalid temperature='1': expected a finite number > 0 (an int, a float or a scalar tensor); got a str.
    """
    tau = _temperature_value(temperature)
    layers = slb_layers(model)
    for layer in layers:
        if not layer.built:
            raise ValueError(
                f"Layer {layer.name!r} is not built: build the model before setting "
                "its temperature."
            )
    assign_temperature(layers, tau)
    return len(layers)


def assign_temperature(layers, tau):
    """Writes tau into each SLB layer's own `temperature` variable: the one writer of tau.

    `tau` must already be a checked finite float > 0: `set_temperature` checks its
    argument, `TemperatureScheduler` its schedule when it is made; this runs every
    step, so it checks nothing again.

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), slb_keras.SLBDense(2)])
    >>> assign_temperature(slb_layers(model), 3.0)
    >>> float(model.layers[0].temperature.numpy())
    3.0
    """
    for layer in layers:
        layer.temperature.assign(tau)


def _temperature_value(temperature):
    """`temperature` as a float, or a ValueError naming it (strings and bools refused)."""
    try:
        array = np.asarray(ops.convert_to_numpy(temperature))
    except (TypeError, ValueError):
        array = None
    kind = "" if array is None or array.ndim else array.dtype.kind
    if kind not in ("i", "u", "f"):
        received = type(temperature).__name__
        if array is not None and array.ndim:
            received += f" of shape {array.shape}"
        raise ValueError(
            f"Invalid temperature={temperature!r}: expected a finite number > 0 (an int, "
            f"a float or a scalar tensor); got a {received}."
        )
    tau = float(array)
    if not 0 < tau < math.inf:
        raise ValueError(f"Invalid temperature={temperature!r}: expected a finite number > 0.")
    return tau


@contextlib.contextmanager
def soft_inference(model):
    """Makes every SLB layer of `model` use its soft kernel with `training=False`.

    Inside the block, calls with `training=False` compute W_soft with the
    current tau in inference mode (dropout off, batch norms on their moving
    statistics): eager calls and, on TensorFlow, functions traced before or
    inside the block alike (each layer's switch, `scratch.Switch`, is read
    where the function runs); on exit each layer's switch is restored.

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), slb_keras.SLBDense(2)])
    >>> x = np.ones((1, 4), "float32")
    >>> with soft_inference(model):
    ...     soft = model(x)
    >>> bool(np.allclose(soft, model(x, training=True)))
    True
    >>> hard = model.predict(x, verbose=0)  # traced with the switch off
    >>> with soft_inference(model):
    ...     bool(np.allclose(model.predict(x, verbose=0), soft))  # the same function, soft
    True
    """
    layers = slb_layers(model)
    before = [layer.soft_inference_switch.is_on() for layer in layers]
    for layer in layers:
        layer.soft_inference_switch.set(True)
    try:
        yield model
    finally:
        for layer, state in zip(layers, before):
            layer.soft_inference_switch.set(state)


def layer_inputs(model, x):
    """{SLB layer name: the input it receives} when `model` runs on `x` in inference mode.

    The model's graph runs with each SLB layer wrapped to keep its first input
    (before its `input_quantizer`: calling the layer on it repeats that call),
    nested Sequential and Functional models included; nothing is set on the
    layers. Layers the graph does not reach are absent.

    Raises:
        ValueError: for a model that is not Sequential or Functional (its layers'
            inputs are not in a graph).

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), slb_keras.SLBDense(2, name="d")])
    >>> tuple(layer_inputs(model, np.ones((3, 4), "float32"))["d"].shape)
    (3, 4)
    """
    if not keras_private.is_graph_model(model):
        raise ValueError(
            f"Invalid model={model.name!r}: layer_inputs reads a Sequential or Functional "
            f"model's graph; {type(model).__name__} has none."
        )
    seen = {}

    def recorder(layer):
        def recorded(inputs):
            seen.setdefault(layer.name, inputs)
            return layer(inputs)
        return recorded

    run_graph(model, [x], {id(layer): recorder(layer) for layer in slb_layers(model)})
    return seen


def run_graph(model, inputs, replaced):
    """`model`'s graph on `inputs`, with `replaced[id(layer)](x)` in place of those layers.

    `model` is Sequential or Functional; nested ones are run the same way, so a
    replaced layer inside one is replaced too. Other operations run as they are
    (shared weights). `layer_inputs` and `export_tflite` run graphs with it.

    Example:

    >>> x = keras.Input((2,))
    >>> relu = keras.layers.ReLU()
    >>> model = keras.Model(x, relu(x))
    >>> out = run_graph(model, [np.array([[-1.0, 2.0]])], {id(relu): lambda t: t * 2})
    >>> np.asarray(out).tolist()
    [[-2.0, 4.0]]
    """

    def operation_fn(op):
        if id(op) in replaced:
            return lambda x, **kwargs: replaced[id(op)](x)
        if keras_private.is_graph_model(op):
            return lambda *args, **kwargs: run_graph(op, list(args), replaced)
        return op

    return keras_private.run_through_graph(model, inputs, operation_fn)
