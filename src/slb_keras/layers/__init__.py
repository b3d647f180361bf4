"""SLB and STE layers, one module per layer family, and the families themselves.

Each module holds one family of Keras kernel layers (`slb_keras.core.family`):
its SLB layer (the Keras layer plus `slb_keras.core.mixin.SLBLayerMixin`, the SLB rule),
its STE baseline where there is one, and the `LayerFamily` that says what the
family is (Keras class, linear op, kernel layout, TFLite lowering):

- `dense`: `SLBDense`, `STEDense`;
- `conv`: `SLBConv1D` (causal padding too), `SLBConv2D`, `STEConv2D`, and Conv3D
  (float only);
- `depthwise`: `SLBDepthwiseConv2D`;
- `conv_transpose`: `SLBConv2DTranspose`.

`FAMILIES` lists them; `family_of(layer)` is how the rest of the library asks.
Adding a family is a module here and its entry in `FAMILIES`. The model-level
helpers (`slb_layers`, `set_temperature`, `soft_inference`, `layer_inputs`) are
importable from here too.

Example:

>>> [family.name for family in FAMILIES if family.slb_class is not None]
['Dense', 'Conv1D', 'Conv2D', 'DepthwiseConv2D', 'Conv2DTranspose']
>>> family_of(SLBConv1D(2, 3)).keras_class is keras.layers.Conv1D
True
"""

from slb_keras.layers import conv
from slb_keras.layers import conv_transpose
from slb_keras.layers import dense
from slb_keras.layers import depthwise
from slb_keras.layers.conv import SLBConv1D
from slb_keras.layers.conv import SLBConv2D
from slb_keras.layers.conv import STEConv2D
from slb_keras.layers.conv_transpose import SLBConv2DTranspose
from slb_keras.layers.dense import SLBDense
from slb_keras.layers.dense import STEDense
from slb_keras.layers.depthwise import SLBDepthwiseConv2D
from slb_keras.core.family import LayerFamily
from slb_keras.core.family import bias_and_activation
from slb_keras.core.mixin import SLBLayerMixin
from slb_keras.core.model_helpers import assign_temperature
from slb_keras.core.model_helpers import quantized_weight_counts
from slb_keras.core.model_helpers import layer_inputs
from slb_keras.core.model_helpers import set_temperature
from slb_keras.core.model_helpers import slb_layers
from slb_keras.core.model_helpers import soft_inference

FAMILIES = (
    dense.FAMILY, conv.CONV1D, conv.CONV2D, depthwise.FAMILY, conv_transpose.FAMILY, conv.CONV3D,
)


def family_of(layer):
    """The `LayerFamily` of `layer` (a layer or a layer class), or None.

    The nearest family class in the layer's bases: an SLB or STE layer belongs to
    the family of the Keras layer it extends, and so does a user's subclass.

    Example:

    >>> family_of(keras.layers.Dense(2)).name, family_of(keras.layers.LSTM(2))
    ('Dense', None)
    """
    cls = layer if isinstance(layer, type) else type(layer)
    by_class = {family.keras_class: family for family in FAMILIES}
    for base in cls.__mro__:
        if base in by_class:
            return by_class[base]
    return None


def convertible(layer):
    """The family whose SLB layer replaces `layer` in `quantize_model`, or None.

    Only a stock layer of a family with an SLB class: subclasses may compute
    something else, and SLB / STE layers are quantized already.

    Example:

    >>> convertible(keras.layers.Conv2D(4, 3)).slb_class.__name__
    'SLBConv2D'
    >>> convertible(SLBConv2D(4, 3)), convertible(keras.layers.Conv3D(4, 3))
    (None, None)
    """
    family = family_of(layer)
    cls = layer if isinstance(layer, type) else type(layer)
    if family is None or family.slb_class is None or cls is not family.keras_class:
        return None
    return family


__all__ = [
    "FAMILIES",
    "LayerFamily",
    "SLBConv1D",
    "SLBConv2D",
    "SLBConv2DTranspose",
    "SLBDense",
    "SLBDepthwiseConv2D",
    "SLBLayerMixin",
    "STEConv2D",
    "STEDense",
    "assign_temperature",
    "bias_and_activation",
    "convertible",
    "family_of",
    "quantized_weight_counts",
    "layer_inputs",
    "set_temperature",
    "slb_layers",
    "soft_inference",
]
