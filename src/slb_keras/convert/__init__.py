"""Conversion: Keras models into SLB models, and the layer graph both directions walk.

`conversion.quantize_model` (a float model into an SLB one, checked and planned by
`conversion_plan`, with float initialisation from `float_init`),
`fix_widths.fix_bit_widths` (the end of a bit-width search: one width per layer),
`conversion.to_slb_model` (an STE model into an SLB one), and `graph` (the leaf
layers and edges of Sequential/Functional models, nested models included).
Imports `slb_keras.core` and `slb_keras.layers`. Users import the public names
from `slb_keras`:

>>> import keras, slb_keras
>>> float_model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
>>> [type(l).__name__ for l in slb_keras.quantize_model(float_model, wbits=1, skip_first_last=False).layers]
['SLBDense']
"""
