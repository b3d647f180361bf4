"""Search-time tools: what turns a soft SLB search into a hard network while it trains.

The temperature schedule (`temperature.TemperatureScheduler`), the BN calibration
of the hard statistics (`calibration`), the callbacks that run both and report the
search (`callbacks`), the size budget of a bit-width search (`bit_budget`), and
`summary` (what a model costs to train and saves when deployed). Imports `slb_keras.core` and `slb_keras.layers`; nothing here converts
or exports. Users import the public names from `slb_keras`:

>>> import slb_keras
>>> slb_keras.TemperatureScheduler(start=1.0, end=100.0).end
100.0
"""
