"""Initializers of SLB logits (shape kernel_shape + (2**bits,), value axis last).

The SLB layers start from random logits by default (`"random_normal"`, as the authors
and MindSpore Golden Stick's port do). `QuadraticLogits` starts each weight from a
discretized Gaussian around a random float weight w in [-1, 1]:

    A_k = -scale * (v_k - w) ** 2

Its argmax is the value nearest w. While tau is small the logits move by a term linear
in v_k (dW/dA_k = tau P_k (v_k - W) with P nearly uniform), and a quadratic plus a
linear term is a quadratic with a shifted centre: the hard weight stays the value
nearest a moving latent weight, so every value of the set stays reachable. With random
logits plus a linear term the argmax drifts to -1 or +1 instead, and the inner values
of a multi-bit set are reached only once tau is large (BENCHMARKS.md, "Recipes").

Example:

>>> init = QuadraticLogits(seed=0)
>>> logits = init((3, 4))  # 3 weights, 2 bits
>>> codes = np.argmax(np.asarray(logits), axis=-1)
>>> bool(np.all((codes >= 0) & (codes < 4)))
True
"""

import keras
import numpy as np
from keras import ops

from slb_keras.core import value_sets


@keras.saving.register_keras_serializable(package="slb_keras")
class QuadraticLogits(keras.initializers.Initializer):
    """Logits -scale * (v_k - w)^2 around a uniform random float weight w in [-1, 1].

    Args:
        scale: a finite number > 0, the logits' curvature.
        seed: an int or None.

    Example:

    >>> logits = QuadraticLogits(scale=2.0, seed=1)((5, 2))  # 1 bit: A_1 - A_0 = 8 w
    >>> w = np.asarray(logits)
    >>> bool(np.allclose(w[:, 0], -2.0 * (-1 - ((w[:, 1] - w[:, 0]) / 8.0)) ** 2))
    True
    """

    def __init__(self, scale=1.0, seed=None):
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < float("inf"):
            raise ValueError(f"Invalid scale={scale!r}: expected a finite number > 0.")
        self.scale = float(scale)
        self.seed = seed
        self._generator = keras.random.SeedGenerator(seed)

    def __call__(self, shape, dtype=None):
        shape = tuple(int(d) for d in shape)
        m = shape[-1]
        bits = int(round(np.log2(m))) if m > 1 else 0
        if m < 2 or 2**bits != m:
            raise ValueError(
                f"Invalid logits shape {shape}: the last axis must hold 2**bits values (2, 4, 8, ...)."
            )
        values = ops.convert_to_tensor(value_sets.value_set(bits), "float32")
        w = keras.random.uniform(shape[:-1], -1.0, 1.0, seed=self._generator)
        logits = -self.scale * ops.square(values - ops.expand_dims(w, -1))
        return ops.cast(logits, dtype or "float32")

    def get_config(self):
        return {"scale": self.scale, "seed": self.seed}
