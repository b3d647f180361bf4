"""The Dense family: `SLBDense`, `STEDense`, and `FAMILY`, what slb_keras knows of Dense.

Example:

>>> FAMILY.keras_class is keras.layers.Dense, FAMILY.tflite_layout
(True, (1, 0))
"""

import keras

from slb_keras.core import family
from slb_keras.core.mixin import SLBLayerMixin
from slb_keras.core.ste import STELayerMixin


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
        """inputs @ kernel (`family.matmul`)."""
        return family.matmul(self, inputs, kernel)

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
class STEDense(STELayerMixin, keras.layers.Dense):
    """`keras.layers.Dense` with a DoReFa/STE-quantized kernel.

    Takes every argument of `keras.layers.Dense` plus `wbits` and
    `input_quantizer` (see `STEConv2D`).

    Example:

    >>> layer = STEDense(3, wbits=2)
    >>> layer(np.ones((2, 4), "float32")).shape
    TensorShape([2, 3])
    >>> bool(np.all(np.isin(layer.quantized_kernel().numpy(), slb_keras.value_set(2))))
    True
    """

    def __init__(self, units, wbits=1, input_quantizer=None, **kwargs):
        super().__init__(units=units, wbits=wbits, input_quantizer=input_quantizer, **kwargs)

    def apply_kernel(self, inputs, kernel):
        """inputs @ kernel (`family.matmul`)."""
        return family.matmul(self, inputs, kernel)


FAMILY = family.LayerFamily(
    name="Dense",
    keras_class=keras.layers.Dense,
    linear=family.matmul,
    slb_class=SLBDense,
    ste_class=STEDense,
    # The converter reads a Dense kernel as [units, in]: FULLY_CONNECTED (or
    # BATCH_MATMUL for inputs of rank 3 and more).
    tflite_ops=("FULLY_CONNECTED", "BATCH_MATMUL"),
    tflite_layout=(1, 0),
    hybrid=("FULLY_CONNECTED", 12, 0),
)
