"""The SLB temperature schedule: `TemperatureScheduler`.

tau multiplies the logits (P = softmax(tau * A)) and grows during training,
which turns the soft expected weight into the discrete one. Two forms:

- start/end: tau goes from `start` to `end` ("exp", "cos" or "linear") inside
  an active window of training, per step or per epoch, with optional warm
  restarts;
- speed (the authors' scheduler): tau starts at `start` and is multiplied by
  `speed` once per epoch inside the window, so the final tau is
  start * speed ** (epochs in the window).

Both are pure functions of the global step `optimizer.iterations`, so a
resumed or distributed run gets the same tau. An optional hard phase ends
training with tau = `HARD_TEMPERATURE`, where the soft kernel equals the hard
one and the logits receive no gradient (the practice of MindSpore Golden
Stick's port): the rest of the network trains on the discrete weights.
"""

import math
import numbers

import keras

from slb_keras import checks
from slb_keras import layers as slb_layers_lib

SCHEDULES = ("exp", "cos", "linear")
UPDATE_FREQS = ("step", "epoch")
DEFAULT_END = 10.0  # the rebuttal's final tau (0.01 -> 10)
# tau of the hard phase: softmax(tau * A) is one-hot in float32 for any two
# logits more than 1e-28 apart, so W_soft == W_hard exactly and dW/dA = 0.
HARD_TEMPERATURE = 1e30


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _epoch_of(fraction, epochs):
    """int(epochs * fraction), as the authors' scheduler computes it (robust to 0.3 * 10)."""
    return int(math.floor(epochs * fraction + 1e-9))


class TemperatureScheduler(keras.callbacks.Callback):
    """Sets the SLB temperature tau from the global training step.

    **start/end form** (`speed=None`): the schedule goes from `start` to `end`
    inside an active window [start_fraction * T, end_fraction * T) of the
    T = `total_steps` training steps; tau = `start` before the window and
    `end` from its end on. The window is split into `restarts + 1` equal
    cycles, each going from `start` to `end` (SGD-R style warm restarts).
    With p in [0, 1) the position in the current cycle:

    - "exp":    tau = start * (end / start) ** p
    - "cos":    tau = start + (end - start) * (1 - cos(pi * p)) / 2
    - "linear": tau = start + (end - start) * p

    With `update_freq="epoch"` the step is floored to the first step of its
    epoch: a staircase.

    **speed form** (`speed=s`, the authors' scheduler): with E epochs,
    e0 = int(E * start_fraction) and e1 = int(E * end_fraction), epoch i
    (counted from 0) trains with

        tau_i = start * s ** min(max(i + 1 - e0, 0), e1 - e0)

    i.e. tau is multiplied by s at the start of each epoch i with
    e0 <= i < e1 (computed as that literal product). The final tau is
    start * s ** (e1 - e0): 0.01 * 1.03 ** 240 = 12.05 for the authors'
    400-epoch VGG-Small W1A1 run. With `restarts=R` the e1 - e0 epochs are
    split into R + 1 cycles of (e1 - e0) // (R + 1) epochs, each starting
    again from `start * s`.

    **hard phase** (`hard_fraction=h > 0`): from step round((1 - h) * T) on,
    tau = `HARD_TEMPERATURE` (1e30): the soft kernel is the hard kernel and
    the logits get no gradient, so the last part of training fits the rest of
    the network (BN, full-precision layers, PACT clips) to the discrete
    weights. The hard phase must start after the window: 1 - h >= end_fraction.

    tau is a pure function of the step s = `optimizer.iterations` (read at
    each epoch start, plus the batch index), so a resumed run (restored
    optimizer, new callback) gets the same tau, under any distribution
    strategy. With `steps_per_execution=k` in `compile`, tau changes every k
    steps (Keras calls batch hooks once per execution).

    The value is assigned to every SLB layer's `temperature` variable
    (as `slb_keras.set_temperature` does) and written to `logs["temperature"]` (put
    this callback before `TensorBoard` / `CSVLogger` so they record it). The
    schedule is also callable on its own: `scheduler(step) -> tau`.

    Args:
        start: tau at the start of the schedule, > 0.
        end: tau at the end, > 0 (start/end form; default 10, the rebuttal's
            0.01 -> 10). Must be None with `speed`. `end < start` is allowed
            and gives a falling schedule (tau decreasing: the choice softens).
        schedule: "exp", "cos" or "linear" (start/end form).
        total_steps: T; defaults to what `fit` will run in total
            (`epochs * steps per epoch`, counted from epoch 0, so resumed
            runs keep the same T).
        restarts: number of warm restarts R >= 0.
        start_fraction: start of the active window, in [0, 1).
        end_fraction: end of the active window, in (start_fraction, 1].
        update_freq: "step", or "epoch" for a per-epoch staircase (the speed
            form is always per epoch).
        steps_per_epoch: steps of one epoch for the per-epoch forms; defaults
            to what `fit` runs.
        speed: the authors' per-epoch factor (> 0), or None for the
            start/end form.
        hard_fraction: fraction of training, at the end, run in the hard
            phase; in [0, 1 - end_fraction].

    Raises:
        ValueError: for an argument out of range.

    Example:

    >>> scheduler = TemperatureScheduler(start=0.01, end=10.0, total_steps=100)
    >>> [round(scheduler(step), 4) for step in (0, 50, 100)]
    [0.01, 0.3162, 10.0]
    >>> authors = TemperatureScheduler(start=0.01, speed=1.03, start_fraction=0.3,
    ...                                end_fraction=0.9, total_steps=400, steps_per_epoch=1)
    >>> [round(authors(epoch), 4) for epoch in (119, 120, 121, 359, 399)]
    [0.01, 0.0103, 0.0106, 12.0485, 12.0485]
    >>> model = keras.Sequential([keras.Input((4,)), slb_keras.SLBDense(2)])
    >>> model.compile("sgd", "mse")
    >>> history = model.fit(np.ones((8, 4)), np.ones((8, 2)), epochs=2, batch_size=4,
    ...                     callbacks=[TemperatureScheduler(update_freq="epoch")], verbose=0)
    >>> [round(t, 4) for t in history.history["temperature"]]  # staircase: tau(0), tau(T/2)
    [0.01, 0.3162]
    """

    def __init__(
        self,
        start=0.01,
        end=None,
        schedule="exp",
        total_steps=None,
        restarts=0,
        start_fraction=0.0,
        end_fraction=1.0,
        update_freq="step",
        steps_per_epoch=None,
        speed=None,
        hard_fraction=0.0,
    ):
        super().__init__()
        if speed is not None:
            if end is not None:
                raise ValueError(
                    f"Invalid end={end!r} with speed={speed!r}: the speed form derives the "
                    "final tau (start * speed ** epochs in the window); expected end=None."
                )
            if not _is_real(speed) or not (0 < speed < math.inf):
                raise ValueError(f"Invalid speed={speed!r}: expected a finite number > 0.")
        elif end is None:
            end = DEFAULT_END
        for name, value in (("start", start), ("end", end)):
            if value is None and name == "end":
                continue
            if not _is_real(value) or not (0 < value < math.inf):
                raise ValueError(f"Invalid {name}={value!r}: expected a finite number > 0.")
        if schedule not in SCHEDULES:
            raise ValueError(f"Invalid schedule={schedule!r}: expected one of {SCHEDULES}.")
        checks.check_int("restarts", restarts, low=0)
        for name, value in (("start_fraction", start_fraction), ("end_fraction", end_fraction)):
            if not _is_real(value) or not 0.0 <= value <= 1.0:
                raise ValueError(f"Invalid {name}={value!r}: expected a number in [0, 1].")
        if start_fraction >= end_fraction:
            raise ValueError(
                f"Invalid start_fraction={start_fraction!r}, end_fraction={end_fraction!r}: "
                "expected start_fraction < end_fraction."
            )
        if not _is_real(hard_fraction) or not 0.0 <= hard_fraction <= 1.0 - end_fraction + 1e-12:
            raise ValueError(
                f"Invalid hard_fraction={hard_fraction!r}: expected a number in "
                f"[0, 1 - end_fraction] = [0, {1.0 - end_fraction:g}] (the hard phase starts "
                "after tau stops growing)."
            )
        if update_freq not in UPDATE_FREQS:
            raise ValueError(
                f"Invalid update_freq={update_freq!r}: expected one of {UPDATE_FREQS}."
            )
        self.start = float(start)
        self.end = None if end is None else float(end)
        self.speed = None if speed is None else float(speed)
        self.schedule = schedule
        self.total_steps = checks.check_int("total_steps", total_steps, allow_none=True)
        self.restarts = int(restarts)
        self.start_fraction = float(start_fraction)
        self.end_fraction = float(end_fraction)
        self.hard_fraction = float(hard_fraction)
        self.update_freq = "epoch" if speed is not None else update_freq
        self.steps_per_epoch = checks.check_int("steps_per_epoch", steps_per_epoch, allow_none=True)
        self._fit_total_steps = None
        self._fit_steps_per_epoch = None
        self._epoch_first_step = 0
        self._layers = []
        self._tau = None

    # -- the schedule ---------------------------------------------------------------

    def __call__(self, step):
        """tau at global step `step` (an int >= 0), as a Python float."""
        checks.check_int("step", step, low=0)
        total = self.total_steps or self._fit_total_steps
        if total is None:
            raise ValueError(
                "total_steps is unknown: pass total_steps=... or let fit() set it."
            )
        if self.hard_fraction and step >= round((1.0 - self.hard_fraction) * total):
            return HARD_TEMPERATURE
        if self.update_freq == "epoch":
            per_epoch = self.steps_per_epoch or self._fit_steps_per_epoch
            if per_epoch is None:
                raise ValueError(
                    "update_freq='epoch' (and the speed form) needs steps_per_epoch: pass "
                    "it or let fit() set it."
                )
            if self.speed is not None:
                return self._by_speed(step // per_epoch, max(1, total // per_epoch))
            step = (step // per_epoch) * per_epoch
        window_start = self.start_fraction * total
        window_end = self.end_fraction * total
        if step < window_start:
            return self.start
        if step >= window_end:
            return self.end
        cycle = (window_end - window_start) / (self.restarts + 1)
        position = (step - window_start) / cycle
        p = min(max(position - math.floor(position), 0.0), 1.0)
        if self.schedule == "exp":
            return self.start * (self.end / self.start) ** p
        if self.schedule == "cos":
            return self.start + (self.end - self.start) * 0.5 * (1.0 - math.cos(math.pi * p))
        return self.start + (self.end - self.start) * p

    def _by_speed(self, epoch, epochs):
        """The authors' per-epoch product, for epoch `epoch` (from 0) of `epochs`."""
        first, last = _epoch_of(self.start_fraction, epochs), _epoch_of(self.end_fraction, epochs)
        window = last - first
        grown = min(max(epoch + 1 - first, 0), window)
        if self.restarts and grown:
            cycle = max(1, window // (self.restarts + 1))
            grown -= cycle * min((grown - 1) // cycle, self.restarts)
        tau = self.start
        for _ in range(grown):  # the literal product, as the authors' loop computes it
            tau *= self.speed
        return tau

    def final_temperature(self, total_steps=None, steps_per_epoch=None):
        """tau at the end of the window (before any hard phase).

        Example:

        >>> TemperatureScheduler(speed=1.05, start_fraction=0.4, end_fraction=0.9
        ...                      ).final_temperature(total_steps=120, steps_per_epoch=1)
        0.18679185894122988
        """
        if self.speed is None:
            return self.end
        per_epoch = steps_per_epoch or self.steps_per_epoch or self._fit_steps_per_epoch
        total = total_steps or self.total_steps or self._fit_total_steps
        if per_epoch is None or total is None:
            raise ValueError("final_temperature needs total_steps and steps_per_epoch.")
        epochs = max(1, total // per_epoch)
        return self._by_speed(epochs, epochs)

    # -- Keras hooks ------------------------------------------------------------------

    def on_train_begin(self, logs=None):
        self._layers = slb_layers_lib.slb_layers(self.model)
        if not self._layers:
            raise ValueError("TemperatureScheduler: the model has no SLB layers.")
        self._tau = None
        params = self.params or {}
        steps, epochs = params.get("steps"), params.get("epochs")
        self._fit_steps_per_epoch = steps
        self._fit_total_steps = steps * epochs if steps and epochs else None
        if self.total_steps is None and self._fit_total_steps is None:
            raise ValueError(
                "TemperatureScheduler: fit() does not know its number of steps (a "
                "dataset of unknown size?): pass total_steps=... (and steps_per_epoch "
                "for update_freq='epoch')."
            )

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_first_step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        self._set(self._epoch_first_step)

    def on_train_batch_begin(self, batch, logs=None):
        self._set(self._epoch_first_step + int(batch))

    def on_train_batch_end(self, batch, logs=None):
        if logs is not None and self._tau is not None:
            logs["temperature"] = self._tau

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self._tau is not None:
            logs["temperature"] = self._tau

    def _set(self, step):
        tau = self(step)
        if tau != self._tau:
            # The layers' own variables (no retracing), through the one writer of tau.
            slb_layers_lib.assign_temperature(self._layers, tau)
            self._tau = tau
