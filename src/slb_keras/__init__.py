"""slb_keras: SLB low-bit weight search for Keras 3, with TFLite export.

Example:

>>> import keras, slb_keras
>>> model = keras.Sequential([
...     keras.Input((32, 32, 3)),
...     keras.layers.Conv2D(32, 3, padding="same"),
...     keras.layers.BatchNormalization(),
...     keras.layers.ReLU(),
...     slb_keras.SLBConv2D(32, 3, padding="same", wbits=1, input_quantizer="ste_sign"),
... ])
"""

from importlib import metadata as _metadata

from slb_keras.calibration import calibrate_bn
from slb_keras.callbacks import BNCalibration
from slb_keras.callbacks import SLBMetrics
from slb_keras.initializers import QuadraticLogits
from slb_keras.layers import SLBConv1D
from slb_keras.layers import SLBConv2D
from slb_keras.layers import SLBConv2DTranspose
from slb_keras.layers import SLBDense
from slb_keras.layers import SLBDepthwiseConv2D
from slb_keras.layers import SLBLayerMixin
from slb_keras.layers import set_temperature
from slb_keras.layers import slb_layers
from slb_keras.normalization import StateBatchNormalization
# Registers the optimizers train.py saves in model.keras, so that `import slb_keras`
# alone lets `keras.models.load_model` (safe mode on) rebuild them.
from slb_keras.optimizers import CoupledAdam
from slb_keras.optimizers import CoupledSGD
from slb_keras.quantizers import ActivationQuantizer
from slb_keras.quantizers import PACTQuantizer
from slb_keras.conversion import quantize_model
from slb_keras.layers import STEConv2D
from slb_keras.layers import STEDense
from slb_keras.ste import ClipWeights
from slb_keras.conversion import to_slb_model
from slb_keras.summary import LayerSummary
from slb_keras.summary import ModelSummary
from slb_keras.summary import summary
from slb_keras.temperature import HARD_TEMPERATURE
from slb_keras.temperature import TemperatureScheduler
from slb_keras.value_sets import codes_to_values
from slb_keras.value_sets import integer_values
from slb_keras.value_sets import value_set
from slb_keras.value_sets import values_to_codes

# Imported on first use, so that `python -m slb_keras.export` does not find the
# module already imported by the package (runpy warns about that).
_LAZY = {
    "ExportReport": "slb_keras.export_report",
    "LayerExport": "slb_keras.export_report",
    "export_lce": "slb_keras.lce_export",
    "export_tflite": "slb_keras.tflite_export",
    "to_inference_model": "slb_keras.inference_model",
    "export_packed": "slb_keras.packed",
    "load_packed": "slb_keras.packed",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'slb_keras' has no attribute {name!r}")


try:
    __version__ = _metadata.version("slb_keras")
except _metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+local"

__all__ = [
    "ActivationQuantizer",
    "HARD_TEMPERATURE",
    "BNCalibration",
    "ClipWeights",
    "CoupledAdam",
    "CoupledSGD",
    "LayerSummary",
    "ModelSummary",
    "PACTQuantizer",
    "QuadraticLogits",
    "SLBConv1D",
    "SLBConv2D",
    "SLBConv2DTranspose",
    "SLBDense",
    "SLBDepthwiseConv2D",
    "SLBLayerMixin",
    "SLBMetrics",
    "STEConv2D",
    "STEDense",
    "StateBatchNormalization",
    "TemperatureScheduler",
    "calibrate_bn",
    "codes_to_values",
    "integer_values",
    "quantize_model",
    "set_temperature",
    "slb_layers",
    "summary",
    "to_slb_model",
    "value_set",
    "values_to_codes",
    *_LAZY,
]
