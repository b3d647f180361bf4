"""The Conv2DTranspose family: `SLBConv2DTranspose` and `FAMILY`.

A transposed convolution's kernel is [h, w, filters, in]: the output channel is the
second last axis. LiteRT computes it with TRANSPOSE_CONV, which has no hybrid int8
kernel: SLB kernels of this family always take the dequantize route (exact float32
arithmetic on the int8 codes), whatever the input quantizer.

Example:

>>> FAMILY.output_axes, FAMILY.channel_shape((3, 3, 8, 4)), FAMILY.hybrid
((-2,), (1, 1, 8, 1), None)
"""

import keras
from keras import ops

from slb_keras.core import family
from slb_keras.core.mixin import SLBLayerMixin


def transposed_convolution(layer, inputs, kernel):
    """Keras's transposed convolution of `layer` (strides, padding, output padding, dilation).

    On symbolic inputs (a Functional model being built, as the TFLite export builds
    one with the kernel as an input) the op is recorded as a `_TransposedConvolution`
    layer instead of Keras's `ops.conv_transpose` operation: that operation's `call`
    (Keras 3.15) hands `output_padding` to the backend where `padding` goes, so a
    Functional model holding it fails when run. Eager and traced tensors go to
    `ops.conv_transpose` directly.

    Example:

    >>> layer = keras.layers.Conv2DTranspose(1, 2, strides=2)
    >>> y = transposed_convolution(layer, np.ones((1, 2, 2, 1), "float32"), np.ones((2, 2, 1, 1), "float32"))
    >>> tuple(y.shape), float(ops.convert_to_numpy(y).sum())
    ((1, 4, 4, 1), 16.0)
    """
    arguments = {
        "strides": list(layer.strides), "padding": layer.padding,
        "output_padding": layer.output_padding, "dilation_rate": layer.dilation_rate,
        "data_format": layer.data_format,
    }
    if any(isinstance(x, keras.KerasTensor) for x in (inputs, kernel)):
        return _TransposedConvolution(arguments, name=f"{layer.name}_conv_transpose")(inputs, kernel)
    return ops.conv_transpose(inputs, kernel, **arguments)


class _TransposedConvolution(keras.layers.Layer):
    """`ops.conv_transpose(inputs, kernel, **arguments)` as a layer (see `transposed_convolution`)."""

    def __init__(self, arguments, **kwargs):
        super().__init__(**kwargs)
        self.arguments = dict(arguments)

    def call(self, inputs, kernel):
        return ops.conv_transpose(inputs, kernel, **self.arguments)

    def compute_output_spec(self, inputs, kernel):
        spec = ops.conv_transpose(inputs, kernel, **self.arguments)  # Keras's shape rule
        return keras.KerasTensor(spec.shape, dtype=inputs.dtype)


@keras.saving.register_keras_serializable(package="slb_keras")
class SLBConv2DTranspose(SLBLayerMixin, keras.layers.Conv2DTranspose):
    """`keras.layers.Conv2DTranspose` whose kernel is searched over the `wbits` value set.

    Takes every argument of `keras.layers.Conv2DTranspose` plus `wbits`,
    `input_quantizer` and `logits_initializer` (see `SLBDense`).

    Example:

    >>> layer = SLBConv2DTranspose(4, 3, strides=2, padding="same", wbits=2)
    >>> y = layer(np.ones((1, 5, 5, 6), "float32"))
    >>> tuple(layer.kernel_logits.shape), tuple(y.shape)
    ((3, 3, 4, 6, 4), (1, 10, 10, 4))
    """

    def apply_kernel(self, inputs, kernel):
        """Keras's transposed convolution: `transposed_convolution`."""
        return transposed_convolution(self, inputs, kernel)

    def __init__(
        self,
        filters,
        kernel_size,
        strides=(1, 1),
        padding="valid",
        output_padding=None,
        data_format=None,
        dilation_rate=(1, 1),
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        wbits=1,
        input_quantizer=None,
        logits_initializer="random_normal",
        **kwargs,
    ):
        super().__init__(
            filters=filters,
            kernel_size=kernel_size,
            strides=strides,
            padding=padding,
            output_padding=output_padding,
            data_format=data_format,
            dilation_rate=dilation_rate,
            activation=activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            activity_regularizer=activity_regularizer,
            kernel_constraint=kernel_constraint,
            bias_constraint=bias_constraint,
            wbits=wbits,
            input_quantizer=input_quantizer,
            logits_initializer=logits_initializer,
            **kwargs,
        )


FAMILY = family.LayerFamily(
    name="Conv2DTranspose",
    keras_class=keras.layers.Conv2DTranspose,
    linear=transposed_convolution,
    slb_class=SLBConv2DTranspose,
    output_axes=(-2,),
    tflite_ops=("TRANSPOSE_CONV",),
)
