"""The SLB core: the method itself, everything a training step computes.

Value sets and codes (`value_sets`), the pure SLB functions (`ops`, with the fused
TensorFlow kernel `_fused`), logit initializers, activation quantizers, the
`LayerFamily` description (`family`), the SLB rule on a Keras layer (`mixin`) and
its model-level helpers (`model_helpers`), the switches a layer owns for what
steers its call (`scratch`), the STE baseline (`ste`), state batch
normalization, the coupled-decay optimizers and `mixed_precision` (one layer
searching its width among nested value sets). Imports only `slb_keras.checks`,
`slb_keras.keras_private` and itself; the layer families (`slb_keras.layers`) are
built on it. Users import the public names from `slb_keras` itself:

>>> import slb_keras
>>> slb_keras.value_set(2).tolist()
[-1.0, -0.3333333432674408, 0.3333333432674408, 1.0]
"""
