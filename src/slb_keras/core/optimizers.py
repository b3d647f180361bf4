"""SGD and Adam with coupled (L2) weight decay, as PyTorch's `weight_decay` computes it.

Keras optimizers decay weights *decoupled* from the gradient (`weight_decay`:
w <- w - lr * wd * w after the update, AdamW style). The SLB authors trained in
PyTorch, whose SGD and Adam add wd * w to the gradient *before* momentum and
Adam's moments (coupled decay). `CoupledSGD` and `CoupledAdam` are the Keras
optimizers with that one change:

    g <- g + coupled_weight_decay * w      (every trainable variable, SLB logits too)

Under a distribution strategy the term is added to each replica's gradient
divided by the number of replicas, as Keras scales the loss, so the all-reduced
gradient carries wd * w exactly once.

Example:

>>> optimizer = CoupledSGD(0.1, momentum=0.9, coupled_weight_decay=5e-4)
>>> w = keras.Variable([1.0, -2.0])
>>> optimizer.apply([keras.ops.zeros(2)], [w])
>>> w.numpy().tolist()  # -lr * wd * w with a zero gradient: 1 - 5e-5, -2 + 1e-4
[0.9999499917030334, -1.999899983406067]
"""

import numbers

import keras
from keras import ops

from slb_keras import keras_private


def _check_decay(value):
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0 <= value < float("inf"):
        raise ValueError(f"Invalid coupled_weight_decay={value!r}: expected a finite number >= 0.")
    return float(value)


def _replicas():
    """Replicas the loss is averaged over (1 off TensorFlow or outside a strategy)."""
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


class CoupledWeightDecayMixin:
    """Adds `coupled_weight_decay` to a Keras optimizer (put it first in the bases)."""

    def __init__(self, *args, coupled_weight_decay=0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.coupled_weight_decay = _check_decay(coupled_weight_decay)

    def apply(self, grads, trainable_variables=None):
        if self.coupled_weight_decay and len(grads):
            variables = (
                keras_private.optimizer_variables(self)
                if trainable_variables is None
                else trainable_variables
            )
            decay = self.coupled_weight_decay / _replicas()
            grads = [
                g if g is None else g + ops.cast(decay, g.dtype) * ops.cast(v, g.dtype)
                for g, v in zip(grads, variables)
            ]
        return super().apply(grads, trainable_variables)

    def get_config(self):
        return {**super().get_config(), "coupled_weight_decay": self.coupled_weight_decay}


@keras.saving.register_keras_serializable(package="slb_keras")
class CoupledSGD(CoupledWeightDecayMixin, keras.optimizers.SGD):
    """`keras.optimizers.SGD` plus `coupled_weight_decay` (PyTorch's SGD weight decay).

    Example:

    >>> CoupledSGD(0.02, momentum=0.9, coupled_weight_decay=5e-4).get_config()["coupled_weight_decay"]
    0.0005
    """


@keras.saving.register_keras_serializable(package="slb_keras")
class CoupledAdam(CoupledWeightDecayMixin, keras.optimizers.Adam):
    """`keras.optimizers.Adam` plus `coupled_weight_decay` (PyTorch's Adam weight decay).

    Example:

    >>> CoupledAdam(1e-3, coupled_weight_decay=1e-4).coupled_weight_decay
    0.0001
    """
