"""The DepthwiseConv2D family: `SLBDepthwiseConv2D` and `FAMILY`.

Its kernel is [h, w, in, multiplier]: output channel c = in_index * multiplier + m,
so the last two axes make the output channel.

Example:

>>> FAMILY.output_channels((3, 3, 4, 2)), FAMILY.hybrid
(8, ('DEPTHWISE_CONV_2D', 6, 3))
"""

import keras

from slb_keras.core import family
from slb_keras.core.mixin import SLBLayerMixin


@keras.saving.register_keras_serializable(package="slb_keras")
class SLBDepthwiseConv2D(SLBLayerMixin, keras.layers.DepthwiseConv2D):
    """`keras.layers.DepthwiseConv2D` with a kernel searched over the value set.

    Takes every argument of `keras.layers.DepthwiseConv2D` plus `wbits`,
    `input_quantizer` and `logits_initializer` (see `SLBDense`);
    `depthwise_regularizer` regularizes the logits, `depthwise_constraint`
    must be None.

    Example:

    >>> layer = SLBDepthwiseConv2D(3, depth_multiplier=2, wbits=2)
    >>> layer(np.ones((1, 5, 5, 4), "float32")).shape
    TensorShape([1, 3, 3, 8])
    """

    def apply_kernel(self, inputs, kernel):
        """Depthwise convolution (strides, padding, dilation): `family.depthwise_convolution`."""
        return family.depthwise_convolution(self, inputs, kernel)

    def __init__(
        self,
        kernel_size,
        strides=(1, 1),
        padding="valid",
        depth_multiplier=1,
        data_format=None,
        dilation_rate=(1, 1),
        activation=None,
        use_bias=True,
        depthwise_initializer="glorot_uniform",
        bias_initializer="zeros",
        depthwise_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        depthwise_constraint=None,
        bias_constraint=None,
        wbits=1,
        input_quantizer=None,
        logits_initializer="random_normal",
        **kwargs,
    ):
        super().__init__(
            kernel_size=kernel_size,
            strides=strides,
            padding=padding,
            depth_multiplier=depth_multiplier,
            data_format=data_format,
            dilation_rate=dilation_rate,
            activation=activation,
            use_bias=use_bias,
            depthwise_initializer=depthwise_initializer,
            bias_initializer=bias_initializer,
            depthwise_regularizer=depthwise_regularizer,
            bias_regularizer=bias_regularizer,
            activity_regularizer=activity_regularizer,
            depthwise_constraint=depthwise_constraint,
            bias_constraint=bias_constraint,
            wbits=wbits,
            input_quantizer=input_quantizer,
            logits_initializer=logits_initializer,
            **kwargs,
        )


FAMILY = family.LayerFamily(
    name="DepthwiseConv2D",
    keras_class=keras.layers.DepthwiseConv2D,
    linear=family.depthwise_convolution,
    slb_class=SLBDepthwiseConv2D,
    output_axes=(-2, -1),
    tflite_ops=("DEPTHWISE_CONV_2D",),
    hybrid=("DEPTHWISE_CONV_2D", 6, 3),
)
