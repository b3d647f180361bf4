"""SLB layers: the stock Keras layers whose kernel is searched over a value set.

Each class is the Keras layer it extends plus `slb_keras.mixin.SLBLayerMixin`
(the SLB rule: kernel logits, temperature, soft kernel in training, hard
kernel at inference; see that module) and its family's linear op,
`apply_kernel(inputs, kernel)`: matmul (`SLBDense`), Keras's
`convolution_op` (`SLBConv2D`, `SLBConv1D`, with causal padding), depthwise
convolution (`SLBDepthwiseConv2D`). Padding, strides, groups, shapes and the
configuration are the Keras layer's own. The model-level helpers
(`slb_layers`, `set_temperature`, `soft_inference`, `record_inputs`) are
importable from here too.
"""

import keras
from keras import ops

from slb_keras.mixin import SLBLayerMixin
from slb_keras.model_helpers import record_inputs
from slb_keras.model_helpers import set_temperature
from slb_keras.model_helpers import slb_layers
from slb_keras.model_helpers import soft_inference


@keras.saving.register_keras_serializable(package="slb_keras")
class SLBDense(SLBLayerMixin, keras.layers.Dense):
    """`keras.layers.Dense` whose kernel is searched over the `wbits` value set.

    Takes every argument of `keras.layers.Dense` plus:

    Args:
        wbits: weight bit width, 1 to 8 (2**wbits values in [-1, 1]).
        input_quantizer: None, an alias ("ste_sign", "dorefa2", "pact4", ...),
            an int bit width or a quantizer layer, applied to the inputs.
        logits_initializer: initializer of `kernel_logits` (the float
            `kernel_initializer` is unused: there is no float kernel).

    `kernel_regularizer` regularizes `kernel_logits` (the authors' weight
    decay); `kernel_constraint`, `lora_rank` and `quantization_config` must
    be None.

    Example:

    >>> layer = SLBDense(10, wbits=2, input_quantizer="dorefa2")
    >>> y = layer(np.ones((4, 8), "float32"), training=True)
    >>> tuple(layer.kernel_logits.shape), y.shape
    ((8, 10, 4), TensorShape([4, 10]))
    """

    def apply_kernel(self, inputs, kernel):
        """inputs @ kernel."""
        return ops.matmul(inputs, kernel)

    def __init__(
        self,
        units,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        lora_rank=None,
        lora_alpha=None,
        quantization_config=None,
        wbits=1,
        input_quantizer=None,
        logits_initializer="random_normal",
        **kwargs,
    ):
        super().__init__(
            units=units,
            activation=activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            activity_regularizer=activity_regularizer,
            kernel_constraint=kernel_constraint,
            bias_constraint=bias_constraint,
            lora_rank=lora_rank,
            lora_alpha=lora_alpha,
            quantization_config=quantization_config,
            wbits=wbits,
            input_quantizer=input_quantizer,
            logits_initializer=logits_initializer,
            **kwargs,
        )


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
        """Keras's `convolution_op` (strides, padding, dilation, groups)."""
        return self.convolution_op(inputs, kernel)

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
        """Keras's `convolution_op`, after left padding for padding="causal"."""
        if self.padding != "causal":
            return self.convolution_op(inputs, kernel)
        left = self.dilation_rate[0] * (self.kernel_size[0] - 1)
        time = 2 if self.data_format == "channels_first" else 1
        pads = [[0, 0], [0, 0], [0, 0]]
        pads[time] = [left, 0]
        return ops.conv(
            ops.pad(inputs, pads),
            kernel,
            strides=list(self.strides),
            padding="valid",
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )

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
        """Depthwise convolution (strides, padding, dilation of the layer)."""
        return ops.depthwise_conv(
            inputs,
            kernel,
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )

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


__all__ = [
    "SLBConv1D",
    "SLBConv2D",
    "SLBDense",
    "SLBDepthwiseConv2D",
    "SLBLayerMixin",
    "record_inputs",
    "set_temperature",
    "slb_layers",
    "soft_inference",
]
