"""`LayerFamily`: what one family of Keras kernel layers is, said in one place.

A family is a stock Keras layer with a weight kernel (Dense, Conv1D, Conv2D,
DepthwiseConv2D, ...) and everything slb_keras needs to know about it:

- `keras_class`, and its quantized versions `slb_class` (and `ste_class`, the
  STE baseline, where there is one);
- `linear(layer, inputs, kernel)`: the family's linear op with the layer's own
  strides, padding, dilation and groups, and no bias or activation. It is the
  one function that the SLB and STE layers' `call`, the inference model and the
  TFLite lowering use (`bias_and_activation` is the shared tail after it);
- the kernel layout: `output_axes`, the kernel axes that make the output channel
  ((-1,) mostly; (-2, -1) for depthwise: input channel x multiplier; (-2,) for
  transposed convolutions), which float initialisation and batch-norm folding need;
- its TFLite lowering: the LiteRT builtins that read its kernel (`tflite_ops`),
  the layout the converter is fed (`tflite_layout`), and `hybrid`, LiteRT's
  hybrid int8 kernel of the family (the integer route of sign-input layers), or
  None where LiteRT has none.

Each family lives in the module of its layers (`slb_keras.layers.dense`, `.conv`,
`.depthwise`, ...): this module is what they share (the class, the linear ops,
the tail), below them in the import order; `slb_keras.layers.FAMILIES` lists them, and conversion,
export, float initialisation and the checks ask `family_of(layer)` instead of
keeping lists of classes.

Example:

>>> from slb_keras.layers import family_of
>>> family = family_of(keras.layers.Conv2D(4, 3))
>>> family.name, family.slb_class.__name__, family.hybrid
('Conv2D', 'SLBConv2D', ('CONV_2D', 5, 0))
"""

import dataclasses
from typing import Callable

import numpy as np
from keras import ops


@dataclasses.dataclass(frozen=True)
class LayerFamily:
    """One family of Keras kernel layers and its quantized versions (see the module).

    Example:

    >>> family = LayerFamily("Dense", keras.layers.Dense, matmul, tflite_ops=("FULLY_CONNECTED",))
    >>> layer = keras.layers.Dense(2, use_bias=False)
    >>> y = family.linear(layer, np.ones((1, 3), "float32"), np.ones((3, 2), "float32"))
    >>> ops.convert_to_numpy(y).tolist()
    [[3.0, 3.0]]
    """

    name: str
    keras_class: type
    linear: Callable  # linear(layer, inputs, kernel) -> outputs, no bias, no activation
    slb_class: type = None  # None: a float family only (its stock layers fold BN, nothing more)
    ste_class: type = None
    output_axes: tuple = (-1,)  # the kernel axes that make the output channel, in order
    tflite_ops: tuple = ()  # the LiteRT builtins that read the kernel (after DEQUANTIZE)
    tflite_layout: tuple = None  # axes permutation of the kernel fed to the converter
    hybrid: tuple = None  # (builtin, op version, output-channel axis) of LiteRT's hybrid kernel

    def output_channels(self, kernel_shape):
        """Number of output channels of a kernel of `kernel_shape`.

        Example:

        >>> from slb_keras.layers import family_of
        >>> family_of(keras.layers.DepthwiseConv2D(3, depth_multiplier=2)).output_channels((3, 3, 4, 2))
        8
        """
        count = 1
        for axis in self.output_axes:
            count *= int(kernel_shape[axis])
        return count

    def channel_shape(self, kernel_shape):
        """The shape that broadcasts one value per output channel over a kernel.

        Example:

        >>> from slb_keras.layers import family_of
        >>> family_of(keras.layers.Conv2D(8, 3)).channel_shape((3, 3, 4, 8))
        (1, 1, 1, 8)
        """
        rank = len(kernel_shape)
        axes = {axis % rank for axis in self.output_axes}
        return tuple(int(kernel_shape[i]) if i in axes else 1 for i in range(rank))

    def as_matrix(self, kernel):
        """The NumPy kernel as [taps x inputs, output channels] (`from_matrix` undoes it).

        Example:

        >>> from slb_keras.layers import family_of
        >>> kernel = np.arange(24.0).reshape(2, 3, 4)
        >>> family = family_of(keras.layers.Conv1D(4, 2))
        >>> family.as_matrix(kernel).shape, bool(np.all(family.from_matrix(family.as_matrix(kernel), kernel.shape) == kernel))
        ((6, 4), True)
        """
        last = tuple(range(-len(self.output_axes), 0))
        moved = np.moveaxis(kernel, self.output_axes, last)
        return moved.reshape(-1, self.output_channels(kernel.shape))

    def from_matrix(self, matrix, kernel_shape):
        """The kernel of `kernel_shape` whose `as_matrix` is `matrix`."""
        last = tuple(range(-len(self.output_axes), 0))
        rank = len(kernel_shape)
        axes = [axis % rank for axis in self.output_axes]
        moved_shape = [int(d) for i, d in enumerate(kernel_shape) if i not in axes]
        moved_shape += [int(kernel_shape[a]) for a in axes]
        return np.moveaxis(matrix.reshape(moved_shape), last, self.output_axes)

    def tap_sums(self, kernel):
        """The NumPy kernel summed over its input channels, shaped [..., 1, output channels].

        What a one-channel map convolved with it gives at each output: the constant
        (or, with padding, the border) term of the integer route, for the families
        with a `hybrid` kernel (output channels last).
        """
        if len(self.output_axes) == 2:  # depthwise: each output channel reads one input channel
            return kernel.reshape(kernel.shape[:-2] + (1, -1))
        return kernel.sum(axis=-2, keepdims=True)


# -- the linear ops ----------------------------------------------------------------------


def matmul(layer, inputs, kernel):
    """inputs @ kernel (Dense).

    Example:

    >>> layer = keras.layers.Dense(1)
    >>> ops.convert_to_numpy(matmul(layer, np.ones((1, 2), "float32"), np.ones((2, 1), "float32"))).tolist()
    [[2.0]]
    """
    return ops.matmul(inputs, kernel)


def convolution(layer, inputs, kernel):
    """Keras's convolution of `layer` (Conv1D/2D/3D), causal padding included.

    The same call as Keras's `convolution_op` (strides, padding, dilation; groups
    follow from the kernel's input channels); for `padding="causal"` the time axis
    is first padded on the left, as Keras's Conv1D does.

    Example:

    >>> layer = keras.layers.Conv1D(1, 2, padding="causal")
    >>> x = np.arange(3, dtype="float32").reshape(1, 3, 1)
    >>> ops.convert_to_numpy(convolution(layer, x, np.ones((2, 1, 1), "float32"))).ravel().tolist()
    [0.0, 1.0, 3.0]
    """
    padding = layer.padding
    if padding == "causal":
        left = layer.dilation_rate[0] * (layer.kernel_size[0] - 1)
        channels_first = getattr(layer, "data_format", "channels_last") == "channels_first"
        pads = [[0, 0], [0, 0], [left, 0]] if channels_first else [[0, 0], [left, 0], [0, 0]]
        inputs, padding = ops.pad(inputs, pads), "valid"
    return ops.conv(
        inputs, kernel, strides=list(layer.strides), padding=padding,
        dilation_rate=layer.dilation_rate, data_format=layer.data_format,
    )


def depthwise_convolution(layer, inputs, kernel):
    """Depthwise convolution with the strides, padding and dilation of `layer`.

    Example:

    >>> layer = keras.layers.DepthwiseConv2D(1)
    >>> y = depthwise_convolution(layer, np.ones((1, 2, 2, 3), "float32"), np.full((1, 1, 3, 1), 2.0, "float32"))
    >>> tuple(y.shape), float(ops.convert_to_numpy(y).max())
    ((1, 2, 2, 3), 2.0)
    """
    return ops.depthwise_conv(
        inputs, kernel, strides=layer.strides, padding=layer.padding,
        dilation_rate=layer.dilation_rate, data_format=layer.data_format,
    )


def bias_and_activation(layer, outputs):
    """The shared tail of a Keras conv / dense `layer` after its linear op: bias, activation.

    Used by the SLB and STE layers and by the TFLite export on the stock layers of the
    inference model.

    Example:

    >>> layer = keras.layers.Dense(2, activation="relu", bias_initializer="ones")
    >>> layer.build((None, 3))
    >>> ops.convert_to_numpy(bias_and_activation(layer, ops.convert_to_tensor([[-2.0, 0.5]]))).tolist()
    [[0.0, 1.5]]
    """
    if layer.use_bias:
        bias = layer.bias
        if getattr(layer, "data_format", "channels_last") == "channels_first":
            bias = ops.reshape(bias, (-1,) + (1,) * (len(outputs.shape) - 2))
        outputs = ops.add(outputs, bias)
    if layer.activation is not None:
        outputs = layer.activation(outputs)
    return outputs
