"""The paper's training recipes (the authors' README and rebuttal): the settings of each model.

A `Config` field left `None` takes the value of its model's recipe (`config.resolve`).
The static settings are in `RECIPES`; the temperature schedule depends on the bit
widths and on the budget (`temperature_defaults`):

- **At the authors' budget** (`--epochs` at least the recipe's: 400 on CIFAR-10, 120 on
  ImageNet) the schedule is the authors' per-epoch speed form: tau starts at 0.01 and
  is multiplied by `authors_speed(model, wbits, abits)` once per epoch between 30%
  (VGG-Small) or 40% (ResNets) and 90% of training (the speeds of their README: W1
  1.03, W2 1.04, W4 1.05 on CIFAR-10, one step more at A32; 1.05 for Bi-Real ResNet-18).
- **Shorter runs** cannot use those speeds: a per-epoch factor compounds over the
  epochs of the window, so at 6 epochs 1.03 would end at tau = 0.0113 (no sharpening at
  all). They use an exp schedule per step from 0.01 to `SHORT_BUDGET_END[wbits]` (200
  at 1, 2 and 4 bits; 1000 at other widths, unmeasured) ending at 60% of training, so the last 40%
  train at high tau, and SLB and STE train with Adam (lr 2e-3, no weight decay: SGD's
  steps on the logits grow with tau, see `SHORT_BUDGET_OPTIMIZER` and `SHORT_BUDGET_LR`;
  ResNet-18, whose recipe is Adam already, keeps its 1e-3).
  Measured on digits in BENCHMARKS.md ("Recipes"), and on real
  data outside the project (ResNet-20, 4 epochs: 95 / 97 / 96% at 1/1, 2/2, 4/4 against
  82 / 82 / 23% with tau 0.01 -> 10 ending at 90%): the network must end sharp. At 4
  bits the end was 1000 until CIFAR-10 measured it (ResNet-20, 4 epochs, 3 seeds; BENCHMARKS.md
  "Recipes chosen on CIFAR-10"): tau end 200 beats 1000 at W4A4 and W4A2 by about 3 points,
  where 1000 froze the weights (flip rate 2e-4) for the last epochs, and equals it on digits
  (W4A4 97.49 +- 0.53 against 97.44 +- 0.41, 5 seeds).

Learning rate: at the authors' budget, step decay x0.1 (their `--scheduler=step`); their
decay epochs are not published. **Decision**: CIFAR-10 decays at 50% and 75% of training
(`CIFAR10_LR_STEPS`); ImageNet at epochs 70, 90 and 110 of 120 (the rebuttal). Shorter
runs use cosine decay to 0 (`SHORT_BUDGET_LR_SCHEDULE`): with step decay the last epochs,
which train the network at high tau, run at 1/100 of the rate (on digits at 6 epochs,
W1A1: 94.2% with steps at 50/75%, 90.5% with LQ-Nets' 20/40/75%, 96.2% with cosine;
BENCHMARKS.md "Recipes"). Weight decay is coupled (PyTorch's, the authors' framework:
`slb_keras.core.optimizers`).

Example:

>>> RECIPES["resnet20"]["lr"], RECIPES["resnet18"]["optimizer"]
(0.1, 'adam')
>>> authors_speed("vgg_small", 1, 1), authors_speed("resnet20", 2, 32), authors_speed("resnet18", 1, 1)
(1.03, 1.05, 1.05)
"""

from types import MappingProxyType

import models


def _recipe(*bases, **settings):
    """A read-only mapping of the settings of `bases` (in order), then `settings`."""
    merged = {}
    for base in bases:
        merged.update(base)
    return MappingProxyType({**merged, **settings})


TEMPERATURE_START = 0.01  # the rebuttal's (the README does not give it)
AUTHORS_END_FRACTION = 0.9
SHORT_BUDGET_END = MappingProxyType({1: 200.0, 2: 200.0, 4: 200.0})  # other widths: 1000
SHORT_BUDGET_END_HIGH = 1000.0
SHORT_BUDGET_END_FRACTION = 0.6
CIFAR10_LR_STEPS = (0.5, 0.75)
SHORT_BUDGET_LR_SCHEDULE = "cosine"

_TEMPERATURE = _recipe(
    temperature_start=TEMPERATURE_START,
    temperature_schedule="exp",
    temperature_restarts=0,
)
_CIFAR10 = _recipe(
    _TEMPERATURE,
    dataset="cifar10",
    epochs=400,
    batch_size=100,
    optimizer="sgd",
    lr_schedule="step",
    lr_step_epochs=CIFAR10_LR_STEPS,
    weight_decay_mode="coupled",
)
RECIPES = MappingProxyType(
    {
        "vgg_small": _recipe(
            _CIFAR10,
            lr=0.02,
            weight_decay=5e-4,
            activation_quantizer="dorefa",
            temperature_start_fraction=0.3,
        ),
        "resnet20": _recipe(
            _CIFAR10,
            lr=0.1,
            weight_decay=1e-4,
            activation_quantizer="pact",
            temperature_start_fraction=0.4,
        ),
        "resnet18": _recipe(
            _TEMPERATURE,
            dataset="imagenet2012",
            epochs=120,
            batch_size=256,
            optimizer="adam",
            lr=1e-3,
            lr_schedule="step",
            lr_step_epochs=(70 / 120, 90 / 120, 110 / 120),
            weight_decay=0.0,
            weight_decay_mode="coupled",
            activation_quantizer="pact",
            temperature_start_fraction=0.4,
        ),
    }
)


def authors_speed(model, wbits, abits):
    """The authors' per-epoch temperature factor for `model` at W/A (their README).

    CIFAR-10 (both networks): W1 1.03, W2 1.04, W3+ 1.05, one step (+0.01) more with
    32-bit activations; Bi-Real ResNet-18: 1.05 at every W/A.
    """
    if model == "resnet18":
        return 1.05
    base = {1: 1.03, 2: 1.04}.get(wbits, 1.05)
    return round(base + (0.01 if abits == 32 else 0.0), 2)


def is_short_budget(model, epochs):
    """Whether `epochs` is below the authors' budget for `model` (its recipe's epochs)."""
    return epochs < RECIPES[model]["epochs"]


# lr and weight decay of an optimizer other than the recipe's (Adam: its usual 1e-3, no decay).
OPTIMIZER_DEFAULTS = MappingProxyType({"adam": {"lr": 1e-3, "weight_decay": 0.0}, "sgd": {"lr": 0.1, "weight_decay": 1e-4}})
# The optimizer of the quantized methods below the authors' budget: Adam (lr
# `SHORT_BUDGET_LR`, no decay). SLB: dW/dA_k = tau P_k (v_k - W) grows with tau, so plain
# SGD steps on the logits grow with tau too (x200 at tau 200 against tau 1) while the
# short schedule sharpens; Adam's per-weight normalization makes the step independent of
# tau. Digits, 6 epochs, 3 seeds (at lr 1e-3): W4A4 95.8 (SGD) -> 97.6 (Adam), W2A2 -> 97.6, W1A1 96.2 = 96.2. STE is better
# with Adam too (5 seeds: W1A1 92.7 -> 96.0, W2A2 96.5 -> 97.1; BENCHMARKS.md, "Recipes").
SHORT_BUDGET_OPTIMIZER = "adam"
SHORT_BUDGET_OPTIMIZER_METHODS = ("slb", "ste")
# Its lr where it replaces the recipe's SGD: 2e-3, chosen on CIFAR-10 (it was Keras's 1e-3,
# chosen on digits, until session 37). ResNet-20 SLB W1A1, validation split: +2.7 points at 4
# epochs (3 seeds), +1.1 at 32 epochs (one seed); STE gains at least as much (+6.4 at 4
# epochs), and digits keep or gain (VGG-Small x0.25, 6 epochs, 5 seeds: W1A1 96.21 -> 97.49,
# W2A2 97.99 = 97.99, W4A4 97.44 -> 98.27); BENCHMARKS.md, "Recipes chosen on CIFAR-10: the
# short-budget learning rate". ResNet-18's recipe is Adam already: it keeps the authors' 1e-3.
SHORT_BUDGET_LR = 2e-3


def budget_defaults(model, method, epochs, optimizer=None):
    """Defaults that depend on the budget and the optimizer: lr schedule, optimizer, lr, decay.

    Below the authors' budget the lr decays by cosine (`SHORT_BUDGET_LR_SCHEDULE`) and SLB
    and STE train with `SHORT_BUDGET_OPTIMIZER` at `SHORT_BUDGET_LR`. Otherwise, when the
    optimizer is not the recipe's, lr and weight decay come from `OPTIMIZER_DEFAULTS`
    instead of the recipe (Adam for fp on VGG-Small starts at 1e-3, not SGD's 0.02).

    Example:

    >>> budget_defaults("vgg_small", "slb", 400)
    {}
    >>> budget_defaults("vgg_small", "ste", 6)
    {'lr_schedule': 'cosine', 'optimizer': 'adam', 'lr': 0.002, 'weight_decay': 0.0}
    >>> budget_defaults("vgg_small", "fp", 6)
    {'lr_schedule': 'cosine'}
    >>> budget_defaults("vgg_small", "fp", 6, optimizer="adam")
    {'lr_schedule': 'cosine', 'lr': 0.001, 'weight_decay': 0.0}
    >>> budget_defaults("resnet18", "slb", 6)  # Adam is the authors' own: their lr
    {'lr_schedule': 'cosine', 'optimizer': 'adam'}
    """
    defaults = {}
    short = is_short_budget(model, epochs)
    if short:
        defaults["lr_schedule"] = SHORT_BUDGET_LR_SCHEDULE
        if optimizer is None and method in SHORT_BUDGET_OPTIMIZER_METHODS:
            optimizer = defaults["optimizer"] = SHORT_BUDGET_OPTIMIZER
    if optimizer is not None and optimizer != RECIPES[model]["optimizer"]:
        defaults.update(OPTIMIZER_DEFAULTS.get(optimizer, {}))
        if short and method in SHORT_BUDGET_OPTIMIZER_METHODS and optimizer == SHORT_BUDGET_OPTIMIZER:
            defaults["lr"] = SHORT_BUDGET_LR
    return defaults


def temperature_defaults(model, wbits, abits, epochs, speed=None, end=None):
    """The recipe's temperature settings not given by the user.

    Returns:
        dict with "temperature_speed", "temperature_end" (one of them None) and
        "temperature_end_fraction".

    Example:

    >>> temperature_defaults("vgg_small", 4, 4, epochs=400)
    {'temperature_speed': 1.05, 'temperature_end': None, 'temperature_end_fraction': 0.9}
    >>> temperature_defaults("vgg_small", 4, 4, epochs=6)
    {'temperature_speed': None, 'temperature_end': 200.0, 'temperature_end_fraction': 0.6}
    >>> temperature_defaults("vgg_small", 8, 8, epochs=6)["temperature_end"]
    1000.0
    """
    short = is_short_budget(model, epochs)
    if speed is None and end is None:
        if short:
            end = SHORT_BUDGET_END.get(wbits, SHORT_BUDGET_END_HIGH)
        else:
            speed = authors_speed(model, wbits, abits)
    by_step = short and speed is None
    return {
        "temperature_speed": speed,
        "temperature_end": end,
        "temperature_end_fraction": SHORT_BUDGET_END_FRACTION if by_step else AUTHORS_END_FRACTION,
    }


def default_block(model):
    """The authors' block type of `model` (the first of `models.BLOCKS[model]`)."""
    return models.BLOCKS[model][0]
