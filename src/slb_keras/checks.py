"""Shared checks: integer arguments, graph models, the Keras layers with a kernel.

Every bad argument raises a ValueError in one style,
``Invalid <name>=<value>: expected <what is allowed>.``
Private Keras is not read here: `slb_keras.keras_private` is its one gateway.
"""

import numbers

import keras

from slb_keras import keras_private

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
    if not keras_private.is_graph_model(model):
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
