"""A switch a layer owns but does not save: state that steers `call`, read when it runs.

`soft_inference` changes what SLB layers compute with `training=False` for a block of
calls. A Python attribute read inside `call` would freeze into every function traced
while it had one value (a `model.predict` traced before the block would ignore it, one
traced inside would keep it after). A `Switch` is a float32 Keras variable held by the
layer (not among its weights: neither saved nor counted, like
`normalization.CalibrationAccumulators`), and `branch` reads it where the computation
runs: `ops.cond` on TensorFlow, so a traced function follows the switch. Other
backends branch on the value in Python: there a function jitted while the switch had
one value keeps it. (StateBatchNormalization's `calibrating` is not a switch: its
calibration pass all-reduces over replicas, which tf.distribute refuses inside a cond
branch; see `normalization`.)
"""

import keras
from keras import ops


class Switch:
    """An on/off float32 scalar variable, off at creation, not among the layer's weights.

    Example:

    >>> switch = Switch("demo")
    >>> switch.is_on(), switch.set(True), switch.is_on()
    (False, None, True)
    """

    def __init__(self, name):
        self.variable = keras.Variable(
            0.0,
            dtype="float32",
            trainable=False,
            autocast=False,
            aggregation="only_first_replica",
            name=name,
        )

    def set(self, on):
        """Turns the switch on (True) or off (False)."""
        self.variable.assign(1.0 if on else 0.0)

    def is_on(self):
        """The switch now, as a Python bool (eager)."""
        return bool(ops.convert_to_numpy(self.variable) > 0.5)


def branch(switch, on_fn, off_fn):
    """`on_fn()` if `switch` is on, else `off_fn()`, decided where the computation runs.

    Example:

    >>> switch = Switch("demo")
    >>> float(branch(switch, lambda: ops.ones(()), lambda: ops.zeros(())))
    0.0
    """
    if keras.backend.backend() == "tensorflow":
        return ops.cond(ops.greater(switch.variable.value, 0.5), on_fn, off_fn)
    return on_fn() if switch.is_on() else off_fn()
