"""The paper's training recipes (SLB_SPEC section 5): the settings of each model.

A `Config` field left `None` takes the value of its model's recipe (`config.resolve`).
Every recipe shares the temperature schedule `_TEMPERATURE`; the two CIFAR-10 networks
share `_CIFAR10`. The mappings are read-only.

Example:

>>> RECIPES["resnet20"]["lr"], RECIPES["resnet18"]["optimizer"]
(0.1, 'adam')
"""

from types import MappingProxyType


def _recipe(*bases, **settings):
    """A read-only mapping of the settings of `bases` (in order), then `settings`."""
    merged = {}
    for base in bases:
        merged.update(base)
    return MappingProxyType({**merged, **settings})


_TEMPERATURE = _recipe(  # tau 0.01 -> 10, exponential, in every recipe
    temperature_start=0.01,
    temperature_end=10.0,
    temperature_schedule="exp",
    temperature_restarts=0,
    temperature_end_fraction=0.9,
)
_CIFAR10 = _recipe(
    _TEMPERATURE,
    dataset="cifar10",
    epochs=400,
    batch_size=100,
    optimizer="sgd",
    lr_schedule="cosine",
    lr_step_epochs=(0.5, 0.75),
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
            activation_quantizer="dorefa",
            temperature_start_fraction=0.4,
        ),
    }
)
