"""The convolution families: Conv1D (`SLBConv1D`), Conv2D (`SLBConv2D`, `STEConv2D`), Conv3D.

Conv1D and Conv2D lower to LiteRT's CONV_2D (Conv1D with a unit height, which the
converter adds); Conv3D is a float family only: its stock layers fold a following
batch norm in the inference model, and it has no SLB layer yet.

Example:

>>> CONV1D.hybrid == CONV2D.hybrid, CONV3D.slb_class
(True, None)
"""

import keras

from slb_keras.core import family
from slb_keras.core.mixin import SLBLayerMixin
from slb_keras.core.ste import STELayerMixin


@keras.saving.register_keras_serializable(package="slb_keras")
class SLBConv2D(SLBLayerMixin, keras.layers.Conv2D):
    """`keras.layers.Conv2D` whose kernel is searched over the `wbits` value set.

    Takes every argument of `keras.layers.Conv2D` plus `wbits`,
    `input_quantizer` and `logits_initializer` (see `SLBDense`).

    Example:

    >>> model = keras.Sequential([
    ...     keras.Input((8, 8, 3)),
    ...     SLBConv2D(16, 3, padding="same", use_bias=False, wbits=1),
    ...     keras.layers.BatchNormalization(),
    ... ])
    >>> tuple(model.layers[0].kernel_logits.shape)
    (3, 3, 3, 16, 2)
    """

    def apply_kernel(self, inputs, kernel):
        """Keras's convolution (strides, padding, dilation, groups): `family.convolution`."""
        return family.convolution(self, inputs, kernel)

    def __init__(
        self,
        filters,
        kernel_size,
        strides=(1, 1),
        padding="valid",
        data_format=None,
        dilation_rate=(1, 1),
        groups=1,
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
            data_format=data_format,
            dilation_rate=dilation_rate,
            groups=groups,
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



@keras.saving.register_keras_serializable(package="slb_keras")
class SLBConv1D(SLBLayerMixin, keras.layers.Conv1D):
    """`keras.layers.Conv1D` whose kernel is searched over the `wbits` value set.

    Takes every argument of `keras.layers.Conv1D` plus `wbits`,
    `input_quantizer` and `logits_initializer` (see `SLBDense`).

    Example:

    >>> layer = SLBConv1D(4, 3, wbits=2)
    >>> layer(np.ones((2, 10, 6), "float32")).shape
    TensorShape([2, 8, 4])
    """

    def apply_kernel(self, inputs, kernel):
        """Keras's convolution, causal padding included: `family.convolution`."""
        return family.convolution(self, inputs, kernel)

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        data_format=None,
        dilation_rate=1,
        groups=1,
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
            data_format=data_format,
            dilation_rate=dilation_rate,
            groups=groups,
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



@keras.saving.register_keras_serializable(package="slb_keras")
class STEConv2D(STELayerMixin, keras.layers.Conv2D):
    """`keras.layers.Conv2D` with a DoReFa/STE-quantized kernel (channels last).

    Takes every argument of `keras.layers.Conv2D` plus:

    Args:
        wbits: weight bit width, 1 to 8: the kernel takes values in
            `slb_keras.value_set(wbits)`.
        input_quantizer: None, an alias ("ste_sign", "dorefa2", "pact4", ...),
            an int bit width or a quantizer layer, applied to the inputs.

    Example:

    >>> layer = STEConv2D(4, 3, wbits=1, input_quantizer="ste_sign")
    >>> layer(np.ones((1, 5, 5, 2), "float32")).shape
    TensorShape([1, 3, 3, 4])
    >>> sorted(set(layer.quantized_kernel().numpy().ravel().tolist()))
    [-1.0, 1.0]
    """

    def __init__(self, filters, kernel_size, wbits=1, input_quantizer=None, **kwargs):
        if kwargs.get("data_format") not in (None, "channels_last"):
            raise ValueError(
                f"Invalid data_format={kwargs['data_format']!r}: STEConv2D supports "
                "'channels_last' only."
            )
        super().__init__(
            filters=filters,
            kernel_size=kernel_size,
            wbits=wbits,
            input_quantizer=input_quantizer,
            **kwargs,
        )

    def apply_kernel(self, inputs, kernel):
        """Keras's convolution: `family.convolution`."""
        return family.convolution(self, inputs, kernel)


CONV1D = family.LayerFamily(
    name="Conv1D",
    keras_class=keras.layers.Conv1D,
    linear=family.convolution,
    slb_class=SLBConv1D,
    tflite_ops=("CONV_2D",),
    hybrid=("CONV_2D", 5, 0),
)
CONV2D = family.LayerFamily(
    name="Conv2D",
    keras_class=keras.layers.Conv2D,
    linear=family.convolution,
    slb_class=SLBConv2D,
    ste_class=STEConv2D,
    tflite_ops=("CONV_2D",),
    hybrid=("CONV_2D", 5, 0),
)
CONV3D = family.LayerFamily(
    name="Conv3D",
    keras_class=keras.layers.Conv3D,
    linear=family.convolution,
    tflite_ops=("CONV_3D",),
)
