"""The paper's networks, each trainable with SLB, the STE baseline or in full precision.

| name        | network                      | default input  | paper's data | blocks (default first)        |
|-------------|------------------------------|----------------|--------------|-------------------------------|
| "vgg_small" | VGG-Small (LQ-Nets), 4.66M   | 32x32x3, 10    | CIFAR-10     | conv                          |
| "resnet20"  | ResNet-20 (16/32/64), 0.27M  | 32x32x3, 10    | CIFAR-10     | convprelubn, standard, bireal |
| "resnet18"  | ResNet-18, 11.7M             | 224x224x3, 1000| ImageNet     | bireal, standard              |

Every builder is keyword-only and takes `method` ("slb" | "ste" | "fp"), `wbits`,
`abits`, `input_shape`, `num_classes`, `width_multiplier`, `activation_quantizer`,
`block` (the default is the authors' network), `sbn`, `sync_bn`, `ste_clip`, `logits_init` and `name`; the first
conv and the classifier are always full precision.

Example:

>>> model = get_model("vgg_small", method="slb", wbits=1, abits=1, width_multiplier=0.125)
>>> model.name, model.output_shape
('vgg_small', (None, 10))
"""

import math

import keras

from models import resnet_cifar
from models import resnet_imagenet
from models import vgg_small as vgg_small_module
from models.method import METHODS
from models.method import Method
from models.resnet_cifar import resnet20
from models.resnet_imagenet import resnet18
from slb_keras import keras_private
from slb_keras.convert.conversion import to_slb_model
from slb_keras.layers import STEConv2D
from slb_keras.layers import STEDense
from slb_keras.core.ste import dorefa_weight
from models.vgg_small import vgg_small

MODELS = {
    "vgg_small": vgg_small,
    "resnet20": resnet20,
    "resnet18": resnet18,
}
# The block types of each builder; the first is its default (the authors' network).
BLOCKS = {
    "vgg_small": vgg_small_module.BLOCKS,
    "resnet20": resnet_cifar.BLOCKS,
    "resnet18": resnet_imagenet.BLOCKS,
}


def get_model(name, **kwargs):
    """Builds the model registered under `name` with the builder's keyword arguments.

    Args:
        name: one of "vgg_small", "resnet20", "resnet18".
        **kwargs: keyword arguments of that builder (method, wbits, abits, ...).

    Returns:
        A `keras.Model` (not compiled).

    Raises:
        ValueError: for an unknown name, or a bad argument of the builder.

    Example:

    >>> get_model("resnet20", method="fp", width_multiplier=0.25).count_params() > 0
    True
    """
    if name not in MODELS:
        raise ValueError(
            f"Invalid model={name!r}: expected one of {', '.join(sorted(MODELS))}."
        )
    return MODELS[name](**kwargs)


def count_weights(model):
    """Kernel weights of the conv and dense layers (an SLB weight counts once, not 2**wbits times).

    Returns:
        dict with "weights" (all kernels), "quantized_weights" (SLB and STE kernels)
        and "parameters" (`model.count_params()`, SLB logits included).

    Example:

    >>> count_weights(get_model("vgg_small", method="fp"))["weights"]
    4656512
    """
    total = quantized = 0
    for layer in keras_private.flatten_layers(model):
        if hasattr(layer, "kernel_logits"):
            size = math.prod(layer.kernel_logits.shape[:-1])
            quantized += size
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            size = math.prod(layer.kernel.shape)
            if isinstance(layer, (STEConv2D, STEDense)):
                quantized += size
        else:
            continue
        total += size
    return {"weights": total, "quantized_weights": quantized, "parameters": model.count_params()}


__all__ = [
    "BLOCKS",
    "METHODS",
    "MODELS",
    "Method",
    "STEConv2D",
    "STEDense",
    "count_weights",
    "dorefa_weight",
    "get_model",
    "resnet18",
    "resnet20",
    "to_slb_model",
    "vgg_small",
]
