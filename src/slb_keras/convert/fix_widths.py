"""`fix_bit_widths`: the end of a mixed-precision search, one width per layer.

Each searched layer (`wbits=(1, 2, 4)`) becomes the same SLB layer class with one
`wbits`, the chosen width b, holding the logits of V_b inside the searched layer's
logits (`slb_keras.core.mixed_precision.logits_at`) and its temperature: its hard
kernel is the searched layer's hard kernel at b, value for value, so the fixed
model computes exactly the searched model's hard network. The result trains on
(fine-tuning), saves as `.keras` and exports like any SLB model.

The widths are the argmax of each layer's width logits; with a `budget`, layers
are then narrowed, cheapest first (the smallest loss of log-probability per bit
saved, a greedy multiple-choice knapsack), until the average bits per quantized
weight is within it, and then widened, the smallest loss (the largest gain) of
log-probability per bit added first, while the average stays within it: the
budget is used, not only respected (an argmax far under it would compare the
search with uniform widths at a smaller size).
"""

import keras
import numpy as np
from keras import ops

from slb_keras import checks
from slb_keras import keras_private
from slb_keras import layers as slb_layers_lib
from slb_keras.convert import conversion
from slb_keras.core import mixed_precision


def choose_widths(model, budget=None):
    """{layer name: width} for the searched layers of `model` (argmax, then the budget).

    Args:
        model: a model with searched SLB layers.
        budget: optional average bits per quantized weight (over all SLB layers) to
            stay within; None keeps the argmax widths, a budget narrows them until
            within it, then widens them while they stay within it.

    Raises:
        ValueError: if no width choice fits `budget` (even the narrowest widths).

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), slb_keras.SLBDense(3, wbits=(1, 2, 4))])
    >>> _ = model.layers[0].width_logits.assign([0.0, 0.0, 1.0])
    >>> name = model.layers[0].name
    >>> choose_widths(model)[name], choose_widths(model, budget=2.0)[name]
    (4, 2)
    """
    layers = slb_layers_lib.slb_layers(model)
    searched = [layer for layer in layers if layer.searched]
    if not searched:
        raise ValueError(
            f"Invalid model={model.name!r}: it has no searched layer (wbits=(1, 2, 4), ...)."
        )
    counts = {id(layer): n for layer, n in slb_layers_lib.quantized_weight_counts(model)}
    total = sum(counts.values())
    fixed_bits = sum(counts[id(l)] * l.wbits for l in layers if not l.searched)
    log_q = {}
    chosen = {}
    for layer in searched:
        q = np.asarray(ops.convert_to_numpy(
            mixed_precision.width_probabilities(layer.width_logits, layer.temperature)), np.float64)
        log_q[id(layer)] = np.log(np.maximum(q, 1e-30))
        chosen[id(layer)] = layer.wbits.index(layer.chosen_wbits())

    def average():
        return (fixed_bits + sum(counts[id(l)] * l.wbits[chosen[id(l)]] for l in searched)) / total

    if budget is not None:
        widths = [w for l in layers for w in l.candidate_wbits]
        budget = mixed_precision.validate_budget(budget, widths, name="budget")

        def moves(direction):  # (log q lost per bit saved or gained, name, layer)
            steps = []
            for layer in searched:
                i = chosen[id(layer)]
                j = i + direction
                if not 0 <= j < len(layer.wbits):
                    continue
                bits = counts[id(layer)] * abs(layer.wbits[j] - layer.wbits[i])
                steps.append(((log_q[id(layer)][i] - log_q[id(layer)][j]) / bits, layer.name, layer))
            return steps

        while average() > budget + 1e-9:  # narrow, cheapest first
            steps = moves(-1)
            if not steps:
                raise ValueError(
                    f"Invalid budget={budget!r}: even the narrowest widths average "
                    f"{average():.3f} bits per quantized weight."
                )
            chosen[id(min(steps, key=lambda s: (s[0], s[1]))[2])] -= 1
        while True:  # then widen, the most preferred first, while the budget allows
            fitting = []
            for lost, name, layer in moves(+1):
                chosen[id(layer)] += 1
                if average() <= budget + 1e-9:
                    fitting.append((lost, name, layer))
                chosen[id(layer)] -= 1
            if not fitting:
                break
            chosen[id(min(fitting, key=lambda s: (s[0], s[1]))[2])] += 1
    return {layer.name: layer.wbits[chosen[id(layer)]] for layer in searched}


def fix_bit_widths(model, budget=None, widths=None):
    """A model in which every searched SLB layer has one width: the end of a search.

    Args:
        model: a built Sequential or Functional model with searched SLB layers.
        budget: optional average-bits budget for `choose_widths`.
        widths: optional {layer name: width} to use instead of choosing (each a
            candidate of that layer).

    Returns:
        A new model: each searched layer replaced by its class at the chosen width,
        whose hard network equals the searched model's at those widths; every other
        layer and weight copied.

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), slb_keras.SLBDense(3, wbits=(1, 2, 4))])
    >>> _ = model.layers[0].width_logits.assign([0.0, 1.0, 0.0])
    >>> fixed = slb_keras.fix_bit_widths(model)
    >>> fixed.layers[0].wbits
    2
    >>> x = np.random.rand(2, 4).astype("float32")
    >>> bool(np.array_equal(fixed(x, training=False), model(x, training=False)))
    True
    """
    checks.check_graph_model(model, action="fixed")
    chosen = choose_widths(model, budget) if widths is None else _checked_widths(model, widths)

    def clone(layer):
        config = layer.get_config()
        if isinstance(layer, slb_layers_lib.SLBLayerMixin) and layer.searched:
            config["wbits"] = chosen[layer.name]
        return layer.__class__.from_config(config)

    fixed = keras.models.clone_model(model, clone_function=clone, recursive=True)
    old_layers = keras_private.flatten_layers(model)
    new_layers = keras_private.flatten_layers(fixed)
    for old, new in zip(old_layers, new_layers):
        if isinstance(old, slb_layers_lib.SLBLayerMixin) and old.searched:
            _copy_searched(old, new)
        elif not isinstance(old, keras.Model):
            new.set_weights(old.get_weights())
    return fixed


def _checked_widths(model, widths):
    searched = {l.name: l for l in slb_layers_lib.slb_layers(model) if l.searched}
    if not isinstance(widths, dict) or set(widths) != set(searched):
        raise ValueError(
            f"Invalid widths={widths!r}: expected a dict with one width for each searched "
            f"layer: {sorted(searched)}."
        )
    for name, width in widths.items():
        if width not in searched[name].wbits:
            raise ValueError(
                f"Invalid widths[{name!r}]={width!r}: expected one of {searched[name].wbits}."
            )
    return dict(widths)


def _copy_searched(old, new):
    """The searched layer's logits of V_b (b = new.wbits) and every other weight."""
    new.kernel_logits.assign(mixed_precision.logits_at(old.kernel_logits, new.wbits, old.wbits))
    new.temperature.assign(old.temperature)
    conversion.copy_bias_and_input_quantizer(old, new)

