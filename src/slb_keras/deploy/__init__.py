"""Deployment: the hard-quantized network as plain Keras, TFLite, packed codes or LCE.

`inference_model` (the hard network with BN folded, plain Keras layers),
`tflite_export` with `tflite_flatbuffer` (exact TFLite flatbuffers, integer
kernels for binary layers), `packed` (b-bit codes: the true 32/b size),
`lce_export` (Larq Compute Engine, optional) and `export_report` (the size report
every export returns). The command line over them is `python -m slb_keras.export`.
Imports `slb_keras.core`, `slb_keras.layers` and `slb_keras.convert.graph`; never
the search tools. Users import the public names from `slb_keras`:

>>> import slb_keras
>>> slb_keras.export_tflite.__module__
'slb_keras.deploy.tflite_export'
"""
