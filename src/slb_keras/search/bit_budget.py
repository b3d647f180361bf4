"""The size budget of a mixed-precision search: `BitBudget` and `average_wbits`.

The budget is on the average bits per quantized weight, counted over all the
quantized weights of the model (searched layers at their expected width, fixed
layers at theirs). `BitBudget` enforces it as a constraint, by dual ascent:

    lambda <- max(0, lambda + rate * (E[average bits] - budget))     every step
    loss   += lambda * sum_l (n_l / N) * E[bits_l]                   (n_l weights of layer l)

Each searched layer adds its own term (`bit_cost * E[bits]`, with the `bit_cost`
variable the layer owns, set here); lambda grows while the expected average is
over the budget, pushing the width logits to narrower widths, and decays to 0
when it is under. `slb_keras.fix_bit_widths` then picks each layer's width,
within the budget.
"""

import math

import keras
import numpy as np
from keras import ops

from slb_keras import layers as slb_layers_lib
from slb_keras.core import mixed_precision


def average_wbits(model, expected=False):
    """Average bits per quantized weight of `model` (a float).

    Args:
        model: a Keras model with SLB layers.
        expected: for searched layers, use the expected width under the current
            tau (what the budget term sees) instead of the chosen (argmax) width.

    Example:

    >>> model = keras.Sequential([keras.Input((3,)), slb_keras.SLBDense(2, wbits=2),
    ...                           slb_keras.SLBDense(3, wbits=(1, 4))])
    >>> average_wbits(model), round(average_wbits(model, expected=True), 3)  # 6 x 2 bits, 6 x 1 / 2.5
    (1.5, 2.25)
    """
    counts = slb_layers_lib.quantized_weight_counts(model)
    if not counts:
        raise ValueError(f"Invalid model={model.name!r}: it has no SLB layer.")
    total = sum(n for _, n in counts)
    bits = [float(ops.convert_to_numpy(layer.expected_wbits())) if expected else layer.chosen_wbits()
            for layer, _ in counts]
    return sum(n * b for (_, n), b in zip(counts, bits)) / total


class BitBudget(keras.callbacks.Callback):
    """Drives the expected average bits per quantized weight to at most `budget`.

    Use it with `TemperatureScheduler` on a model with searched layers
    (`wbits=(1, 2, 4)`); logs `expected_wbits` and `bit_lambda` each epoch.

    Args:
        budget: the average bits per quantized weight allowed, between the
            narrowest and the widest candidate width of the model.
        rate: the dual ascent step of lambda, per training step (> 0).

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), slb_keras.SLBDense(3, wbits=(1, 2, 4))])
    >>> model.compile("adam", "mse")
    >>> budget = BitBudget(1.5, rate=1.0)
    >>> _ = model.fit(np.ones((8, 4)), np.zeros((8, 3)), epochs=1, verbose=0, callbacks=[budget])
    >>> budget.bit_lambda > 0  # the uniform start (2.33 bits) was over 1.5
    True
    """

    def __init__(self, budget, rate=0.01):
        super().__init__()
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not math.isfinite(budget):
            raise ValueError(f"Invalid budget={budget!r}: expected a finite number of bits.")
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate < math.inf:
            raise ValueError(f"Invalid rate={rate!r}: expected a finite number > 0.")
        self.budget = float(budget)
        self.rate = float(rate)
        self.bit_lambda = 0.0
        self._searched = []

    def on_train_begin(self, logs=None):
        counts = slb_layers_lib.quantized_weight_counts(self.model)
        searched = [(layer, n) for layer, n in counts if layer.searched]
        if not searched:
            raise ValueError(
                f"BitBudget: model {self.model.name!r} has no searched layer; give SLB layers "
                "candidate widths, e.g. wbits=(1, 2, 4)."
            )
        widths = [w for layer, _ in counts for w in layer.candidate_wbits]
        mixed_precision.validate_budget(self.budget, widths, name="budget")
        total = sum(n for _, n in counts)
        self._fixed_bits = sum(n * layer.wbits for layer, n in counts if not layer.searched) / total
        self._searched = [(layer, n / total) for layer, n in searched]
        # lambda lives in the model (each layer's bit_cost = lambda * its share) and is
        # read back from it before every update, so a resumed run, or a second fit,
        # continues exactly (bit for bit) from where the last one stopped.
        self.bit_lambda = self._saved_lambda()
        self._assign()

    def _saved_lambda(self):
        first, share = self._searched[0]
        return float(ops.convert_to_numpy(first.bit_cost)) / share

    def expected_average(self):
        """E[average bits] under the layers' current tau and width logits (a float)."""
        widths = sum(share * float(ops.convert_to_numpy(layer.expected_wbits()))
                     for layer, share in self._searched)
        return self._fixed_bits + widths

    def _assign(self):
        for layer, share in self._searched:
            layer.bit_cost.assign(np.float32(self.bit_lambda * share))

    def on_train_batch_end(self, batch, logs=None):
        excess = self.expected_average() - self.budget
        self.bit_lambda = max(0.0, self._saved_lambda() + self.rate * excess)
        self._assign()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["expected_wbits"] = self.expected_average()
            logs["bit_lambda"] = self.bit_lambda
