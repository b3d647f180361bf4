"""The SLB rule on a Keras layer (`SLBLayerMixin`) and the model-level helpers.

`SLBLayerMixin` replaces the float `kernel` variable of a Keras conv/dense
layer by

- `kernel_logits`: trainable, shape kernel_shape + (2**wbits,), float32;
- `temperature`: a non-trainable float32 scalar tau (set by callbacks or
  `set_temperature`),

and its `call(inputs, training)` says what it computes:

1. the inputs go through the `input_quantizer` (if any);
2. the kernel is W_soft = sum_k softmax(tau * A)_k v_k (differentiable) with
   `training=True` (or while `soft_inference` is on: a switch the layer owns,
   `scratch.Switch`, read where the call runs), else W_hard = v[argmax_k A_k]
   (what is deployed);
3. `apply_kernel(inputs, kernel)`, the layer family's own linear op (defined
   by each class in `slb_keras.layers`, its family's `linear`);
4. one shared tail: bias, then activation.

The `kernel` attribute is always the hard kernel (a computed tensor, not a
variable).

The model-level helpers (`slb_layers`, `set_temperature`, `soft_inference`,
`layer_inputs`) are in `slb_keras.core.model_helpers`.
"""

import warnings

import keras
from keras import ops

from slb_keras import keras_private
from slb_keras.core import mixed_precision
from slb_keras.core import ops as slb_ops
from slb_keras.core import quantizers
from slb_keras.core import scratch
from slb_keras.core import value_sets
from slb_keras.core.family import bias_and_activation


class SLBLayerMixin:
    """Shared SLB behaviour; put it before the Keras layer class in the bases.

    Subclasses pass the Keras arguments through to the Keras layer and the SLB
    ones (`wbits`, `input_quantizer`, `logits_initializer`) here, and define
    `apply_kernel(inputs, kernel)`, the family's linear op.

    Attributes:
        soft_inference_switch: a `scratch.Switch` (made with the layer), off by default: with
            `training` falsy the layer uses its hard kernel (what is deployed),
            or its soft one while the switch is on (`soft_inference`; not saved).

    Example:

    >>> layer = slb_keras.SLBDense(2, wbits=1, use_bias=False)
    >>> x = np.ones((1, 3), "float32")
    >>> y = layer(x)  # hard kernel: x @ layer.kernel
    >>> bool(np.array_equal(y.numpy(), x @ layer.kernel.numpy()))
    True
    """

    def __init__(
        self,
        *args,
        wbits=1,
        input_quantizer=None,
        logits_initializer="random_normal",
        **kwargs,
    ):
        for unsupported in ("kernel_constraint", "depthwise_constraint"):
            if kwargs.get(unsupported) is not None:
                raise ValueError(
                    f"Invalid {unsupported}={kwargs[unsupported]!r}: SLB layers have no "
                    "float kernel to constrain (their weights are always in the value "
                    "set); expected None."
                )
        for unsupported in ("lora_rank", "quantization_config"):
            if kwargs.get(unsupported) is not None:
                raise ValueError(
                    f"Invalid {unsupported}={kwargs[unsupported]!r}: not supported by SLB "
                    "layers, whose kernel is already low-bit; expected None."
                )
        self.wbits = mixed_precision.validate_wbits(wbits, "wbits")
        if self.logit_bits >= 7:
            warnings.warn(
                f"wbits={self.wbits} keeps {2**self.logit_bits} logits per weight: training "
                "memory is that many times the float kernel.",
                stacklevel=3,
            )
        super().__init__(*args, **kwargs)
        self.input_quantizer = quantizers.get(input_quantizer)
        self.logits_initializer = keras.initializers.get(logits_initializer)
        self.soft_inference_switch = scratch.Switch(f"{self.name}_soft_inference")
        self._slb_building = False

    # -- variables -------------------------------------------------------------

    def build(self, input_shape):
        if self.input_quantizer is not None and not self.input_quantizer.built:
            self.input_quantizer.build(input_shape)
        self._slb_building = True
        try:
            super().build(input_shape)
        finally:
            self._slb_building = False

    def add_weight(self, *args, **kwargs):
        """Creates `kernel_logits` + `temperature` where Keras creates `kernel`."""
        if not (self._slb_building and kwargs.get("name") == "kernel"):
            return super().add_weight(*args, **kwargs)
        shape = tuple(kwargs.get("shape", args[0] if args else None))
        self.kernel_logits = super().add_weight(
            name="kernel_logits",
            shape=shape + (2**self.logit_bits,),
            initializer=self.logits_initializer,
            regularizer=kwargs.get("regularizer"),
            dtype="float32",
            autocast=False,
            trainable=True,
        )
        self.temperature = super().add_weight(
            name="temperature",
            shape=(),
            initializer="ones",
            dtype="float32",
            autocast=False,
            trainable=False,
        )
        if self.searched:
            self.width_logits = super().add_weight(
                name="width_logits",
                shape=(len(self.wbits),),
                initializer="zeros",
                dtype="float32",
                autocast=False,
                trainable=True,
            )
            self.bit_cost = super().add_weight(
                name="bit_cost",
                shape=(),
                initializer="zeros",
                dtype="float32",
                autocast=False,
                trainable=False,
            )
        return None

    @property
    def searched(self):
        """Whether the layer searches its width among candidates (`wbits` a tuple)."""
        return isinstance(self.wbits, tuple)

    @property
    def candidate_wbits(self):
        """The widths the layer may deploy with: `wbits` as a tuple (one width if not searched)."""
        return self.wbits if self.searched else (self.wbits,)

    @property
    def logit_bits(self):
        """The width of the value set the logits span: `wbits`, or the widest candidate."""
        return self.wbits[-1] if self.searched else self.wbits

    @property
    def kernel(self):
        """The hard kernel v[argmax A] (float32 tensor, kernel shape), everywhere."""
        return self.hard_kernel()

    @kernel.setter
    def kernel(self, value):
        # Keras's build assigns the result of add_weight("kernel") (None here).
        if value is not None:
            raise AttributeError(
                "The kernel of an SLB layer is computed from kernel_logits; use "
                "assign_kernel(values) to set it."
            )

    @property
    def _kernel(self):
        return self.hard_kernel()

    @_kernel.setter
    def _kernel(self, value):
        self.kernel = value

    # -- the SLB rule ------------------------------------------------------------

    def soft_kernel(self, temperature=None):
        """W_soft = sum_k softmax(tau * A)_k v_k, float32 of kernel_shape.

        Args:
            temperature: tau to use; defaults to the layer's `temperature`.
        """
        tau = self.temperature if temperature is None else temperature
        if self.searched:
            return mixed_precision.soft_weight(self.kernel_logits, self.width_logits, tau, self.wbits)
        return slb_ops.soft_weight(self.kernel_logits, tau, bits=self.wbits)

    def hard_kernel(self):
        """W_hard = v[argmax_k A_k], float32 of kernel_shape, values in V.

        A searched layer: at its chosen width (`chosen_wbits`), in that width's V.
        """
        if self.searched:
            return mixed_precision.hard_weight(self.kernel_logits, self.width_logits, self.wbits)
        return slb_ops.hard_weight(self.kernel_logits, bits=self.wbits)

    def kernel_codes(self):
        """Integer codes argmax_k A_k in 0..2**wbits-1 (int32, kernel_shape).

        A searched layer: the codes in V of its chosen width.
        """
        if self.searched:
            return mixed_precision.hard_codes(self.kernel_logits, self.width_logits, self.wbits)
        return slb_ops.hard_codes(self.kernel_logits)

    def chosen_wbits(self):
        """The width the layer deploys with: `wbits`, or the searched argmax width.

        Example:

        >>> layer = slb_keras.SLBDense(2, wbits=(1, 2, 4))
        >>> layer.build((None, 3))
        >>> layer.chosen_wbits()  # width logits start equal: the narrowest
        1
        """
        if not self.searched:
            return self.wbits
        return mixed_precision.chosen_width(self.width_logits, self.wbits)

    def expected_wbits(self, temperature=None):
        """E[bits] under softmax(tau * width_logits) (a float32 scalar); `wbits` if not searched."""
        if not self.searched:
            return ops.convert_to_tensor(float(self.wbits))
        tau = self.temperature if temperature is None else temperature
        return mixed_precision.expected_bits(self.width_logits, tau, self.wbits)

    def assign_kernel(self, values, margin=10.0):
        """Sets the logits so the hard kernel is the value of V nearest `values`.

        `values` (kernel_shape, expected in [-1, 1]; clipped) are projected onto
        V; the chosen value gets logit `margin`, the others 0. With
        tau * margin large the soft kernel equals the hard one too.
        """
        if self.searched:
            raise ValueError(
                f"Layer {self.name!r} searches its width (wbits={self.wbits}): assign_kernel "
                "needs one width; fix the widths first (slb_keras.fix_bit_widths)."
            )
        codes = value_sets.values_to_codes(ops.convert_to_numpy(values), self.wbits)
        expected = tuple(self.kernel_logits.shape[:-1])
        if codes.shape != expected:
            raise ValueError(
                f"Invalid values shape {codes.shape}: expected the kernel shape {expected}."
            )
        self.kernel_logits.assign(slb_ops.logits_from_codes(codes, self.wbits, margin))

    # -- the forward pass ----------------------------------------------------------

    def call(self, inputs, training=None):
        if self.input_quantizer is not None:
            # The quantizer has its own dtype policy: bring its output back.
            inputs = ops.cast(self.input_quantizer(inputs), self.compute_dtype)
        if training:
            kernel = self.soft_kernel()
        else:  # the hard kernel, or the soft one while soft_inference is on
            kernel = scratch.branch(self.soft_inference_switch, self.soft_kernel, self.hard_kernel)
        outputs = self.apply_kernel(inputs, ops.cast(kernel, self.compute_dtype))
        if training and self.searched:
            # The size budget's term (slb_keras.BitBudget sets bit_cost): its gradient
            # moves the width logits towards narrower widths while over the budget.
            self.add_loss(self.bit_cost * self.expected_wbits())
        return bias_and_activation(self, outputs)

    def apply_kernel(self, inputs, kernel):
        """The layer's linear op of `inputs` with `kernel` (no bias, no activation)."""
        raise NotImplementedError(f"{type(self).__name__} defines no apply_kernel.")

    # -- what Keras must not do with a computed kernel ---------------------------

    def save_own_variables(self, store):
        # Keras's conv/dense save the computed `kernel`; SLB saves its variables.
        keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store):
        self._check_saved_logits(store)
        keras.layers.Layer.load_own_variables(self, store)

    def _check_saved_logits(self, store):
        """A short ValueError if the saved kernel_logits do not fit (e.g. another wbits)."""
        variables = keras_private.saved_variable_order(self)
        index = next((i for i, v in enumerate(variables) if v is self.kernel_logits), None)
        if index is None or len(store.keys()) != len(variables):
            return  # Keras's own check names the count mismatch
        saved = tuple(getattr(store[str(index)], "shape", ()))
        expected = tuple(self.kernel_logits.shape)
        if saved == expected:
            return
        kernel_shape = expected[:-1]
        if saved[:-1] == kernel_shape and saved:
            held = saved[-1]
            bits = held.bit_length() - 1
            saved_bits = f"wbits={bits}" if held == 2**bits and bits >= 1 else "no wbits"
            raise ValueError(
                f"Cannot load the weights of layer {self.name!r}: it has wbits={self.wbits} "
                f"({2**self.logit_bits} values per weight) but the saved kernel_logits hold "
                f"{held} values per weight ({saved_bits}); build the layer with the wbits "
                "the weights were saved with."
            )
        raise ValueError(
            f"Cannot load the weights of layer {self.name!r}: its kernel_logits have shape "
            f"{expected} (kernel {kernel_shape}, wbits={self.wbits}) but the saved ones "
            f"have shape {saved}."
        )

    def enable_lora(self, *args, **kwargs):
        raise ValueError("LoRA is not supported by SLB layers: their kernel is low-bit.")

    def quantize(self, *args, **kwargs):
        raise ValueError(
            "SLB layers are already quantized; use slb_keras.export_tflite to deploy them."
        )

    def get_config(self):
        return {
            **super().get_config(),
            "wbits": self.wbits,
            "input_quantizer": quantizers.serialize(self.input_quantizer),
            "logits_initializer": keras.initializers.serialize(self.logits_initializer),
        }

