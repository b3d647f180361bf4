"""slb_keras: SLB low-bit weight search for Keras 3, with TFLite export.

Every public name is exported here; the subpackages are how the library is built,
one concern each, importing one way (each only from those before it):

- top-level utilities: `checks` (argument checks), `keras_private` (the one gateway to
  private Keras API), `files` (safe writes), `datasets` (bundled data);
- `core`: the SLB method (value sets, ops, quantizers, `LayerFamily`, the SLB rule on a
  layer, the STE baseline, state BN, optimizers);
- `layers`: one module per layer family (Dense, Conv1D/2D, DepthwiseConv2D,
  Conv2DTranspose);
- `search`: the temperature schedule, BN calibration, callbacks, `summary`;
- `convert`: `quantize_model`, `to_slb_model` and the layer graph they walk;
- `deploy`: the inference model, TFLite, packed and LCE exports; `export` is their
  command line (`python -m slb_keras.export`).

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

from slb_keras.search.calibration import calibrate_bn
from slb_keras.search.bit_budget import BitBudget
from slb_keras.search.bit_budget import average_wbits
from slb_keras.search.callbacks import BNCalibration
from slb_keras.search.callbacks import SLBMetrics
from slb_keras.core.initializers import QuadraticLogits
from slb_keras.layers import SLBConv1D
from slb_keras.layers import SLBConv2D
from slb_keras.layers import SLBConv2DTranspose
from slb_keras.layers import SLBDense
from slb_keras.layers import SLBDepthwiseConv2D
from slb_keras.layers import SLBLayerMixin
from slb_keras.layers import set_temperature
from slb_keras.layers import slb_layers
from slb_keras.core.normalization import StateBatchNormalization
# Registers the optimizers train.py saves in model.keras, so that `import slb_keras`
# alone lets `keras.models.load_model` (safe mode on) rebuild them.
from slb_keras.core.optimizers import CoupledAdam
from slb_keras.core.optimizers import CoupledSGD
from slb_keras.core.quantizers import ActivationQuantizer
from slb_keras.core.quantizers import PACTQuantizer
from slb_keras.convert.conversion import quantize_model
from slb_keras.convert.fix_widths import choose_widths
from slb_keras.convert.fix_widths import fix_bit_widths
from slb_keras.layers import STEConv2D
from slb_keras.layers import STEDense
from slb_keras.core.ste import ClipWeights
from slb_keras.convert.conversion import to_slb_model
from slb_keras.search.summary import LayerSummary
from slb_keras.search.summary import ModelSummary
from slb_keras.search.summary import summary
from slb_keras.search.temperature import HARD_TEMPERATURE
from slb_keras.search.temperature import TemperatureScheduler
from slb_keras.core.value_sets import codes_to_values
from slb_keras.core.value_sets import integer_values
from slb_keras.core.value_sets import value_set
from slb_keras.core.value_sets import values_to_codes

# Imported on first use, so that `python -m slb_keras.export` does not find the
# module already imported by the package (runpy warns about that).
_LAZY = {
    "ExportReport": "slb_keras.deploy.export_report",
    "LayerExport": "slb_keras.deploy.export_report",
    "export_lce": "slb_keras.deploy.lce_export",
    "export_tflite": "slb_keras.deploy.tflite_export",
    "to_inference_model": "slb_keras.deploy.inference_model",
    "export_packed": "slb_keras.deploy.packed",
    "load_packed": "slb_keras.deploy.packed",
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
    "BitBudget",
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
    "average_wbits",
    "calibrate_bn",
    "choose_widths",
    "codes_to_values",
    "fix_bit_widths",
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
