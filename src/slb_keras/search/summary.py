"""What an SLB model costs to train and what it saves when deployed: `summary`.

One row per layer (nested models expanded), in the spirit of
`larq.models.summary`:

- parameters: what is deployed. An SLB layer deploys one value per weight
  (its kernel size, not its logits) plus its bias and quantizer variables;
  a StateBatchNormalization deploys gamma, beta and its hard statistics;
  every other layer deploys all its float variables.
- logits: the SLB logits (2**wbits per weight), the training-time search. A
  searched layer (`wbits=(1, 2, 4)`) shows its chosen width (what
  `fix_bit_widths` keeps) and its logits over the widest candidate; with more
  than one width, the totals give the average bits per quantized weight.
- training memory: bytes of all variables, trainable and non-trainable
  (logits, temperature, both sets of BN statistics, ...), as Keras holds them.
- deployed memory: `wbits` bits per SLB weight, 32 bits per float parameter
  (batch norm included).

The totals compare the deployed size with the same network in float32
(32 bits per parameter): the compression ratio.
"""

import dataclasses

import keras
import numpy as np

from slb_keras import keras_private
from slb_keras import layers as slb_layers_lib
from slb_keras.core.normalization import StateBatchNormalization

FLOAT_BITS = 32


@dataclasses.dataclass(frozen=True)
class LayerSummary:
    """The costs of one layer.

    Attributes:
        name: layer name, prefixed with the names of the nested models
            that hold it ("block/conv").
        type: class name of the layer.
        wbits: weight bits: the SLB `wbits`, 32 for a layer with float
            parameters, None for a layer without parameters.
        abits: bits of the SLB input quantizer (32 when it has none), None
            for a layer that is not an SLB layer.
        params: parameters deployed.
        logits: SLB logits.
        training_bytes: bytes of all the layer's variables.
        deployed_bits: bits of the deployed parameters.
    """

    name: str
    type: str
    wbits: int | None
    abits: int | None
    params: int
    logits: int
    training_bytes: int
    deployed_bits: int


@dataclasses.dataclass(frozen=True)
class ModelSummary:
    """Per-layer costs and totals of a model (see `summary`).

    Attributes:
        layers: one `LayerSummary` per layer, in model order.
        params: deployed parameters in total.
        params_by_bits: {bits: parameters deployed with that many bits}.
        logits: SLB logits in total.
        training_bytes: bytes of all variables.
        deployed_bits: bits of the deployed parameters.
        float32_bits: bits of the same parameters in float32 (32 * params).
        compression_ratio: float32_bits / deployed_bits (1.0 when there
            are no parameters).
    """

    layers: list
    params: int
    params_by_bits: dict
    logits: int
    training_bytes: int
    deployed_bits: int
    float32_bits: int
    compression_ratio: float

    def as_dict(self):
        """The summary as plain Python data (layers as a list of dicts)."""
        return dataclasses.asdict(self)

    def table(self):
        """The summary as printable text: one line per layer, then the totals."""
        header = ("Layer", "Type", "W/A bits", "Params", "Logits", "Train mem", "Deployed")
        rows = [
            (
                row.name,
                row.type,
                _bits_text(row.wbits, row.abits),
                f"{row.params:,}",
                f"{row.logits:,}",
                _bytes_text(row.training_bytes),
                _bytes_text(row.deployed_bits / 8),
            )
            for row in self.layers
        ]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

        def line(cells):
            first = [cells[0].ljust(widths[0]), cells[1].ljust(widths[1])]
            rest = [c.rjust(w) for c, w in zip(cells[2:], widths[2:])]
            return "  ".join(first + rest).rstrip()

        rule = "-" * len(line(header))
        by_bits = ", ".join(
            f"{count:,} at {bits} bit{'s' if bits > 1 else ''}"
            for bits, count in sorted(self.params_by_bits.items())
        )
        quantized = {b: n for b, n in self.params_by_bits.items() if b != FLOAT_BITS}
        average = (
            [f"Average bits per quantized weight: {sum(b * n for b, n in quantized.items()) / sum(quantized.values()):.3f}"]
            if len(quantized) > 1 else []
        )
        totals = [
            f"Total params: {self.params:,}" + (f" ({by_bits})" if by_bits else ""),
            *average,
            f"SLB logits: {self.logits:,}",
            f"Training memory (variables): {_bytes_text(self.training_bytes)}",
            f"Deployed size: {_bytes_text(self.deployed_bits / 8)} "
            f"(float32: {_bytes_text(self.float32_bits / 8)}, "
            f"compression {self.compression_ratio:.2f}x)",
        ]
        return "\n".join([rule, line(header), rule, *map(line, rows), rule, *totals])


def summary(model, print_fn=print):
    """Prints and returns the per-layer bits, parameters and memory of a model.

    Args:
        model: a built Keras model (any kind, subclassed included) or layer.
        print_fn: called with the table text; None prints nothing.

    Returns:
        A `ModelSummary` (per-layer `LayerSummary` rows and totals).

    Raises:
        ValueError: `model` is not a Keras layer or model, is not built, or
            `print_fn` is not callable.

    Example:

    >>> model = keras.Sequential([
    ...     keras.Input((16,)),
    ...     slb_keras.SLBDense(8, use_bias=False, wbits=2, input_quantizer="dorefa4", name="q"),
    ...     keras.layers.Dense(4, name="head"),
    ... ])
    >>> result = slb_keras.summary(model, print_fn=None)
    >>> [(row.name, row.params, row.logits, row.deployed_bits) for row in result.layers]
    [('q', 128, 512, 256), ('head', 36, 0, 1152)]
    >>> result.params_by_bits, round(result.compression_ratio, 2)
    ({2: 128, 32: 36}, 3.73)
    """
    if not isinstance(model, keras.layers.Layer):
        raise ValueError(f"Invalid model={model!r}: expected a Keras model or layer.")
    if not model.built:
        raise ValueError(
            f"Invalid model={model.name!r}: the model is not built, so it has no "
            "variables yet. Give it a keras.Input or call it once."
        )
    if print_fn is not None and not callable(print_fn):
        raise ValueError(f"Invalid print_fn={print_fn!r}: expected a callable or None.")
    rows, params_by_bits, covered = [], {}, set()
    entries = list(_leaf_layers(model, ""))
    for prefix, layer in entries:
        variables = [v for v in _unique(layer.weights) if id(v) not in covered]
        covered.update(id(v) for v in variables)
        rows.append(_layer_summary(prefix + layer.name, layer, variables, params_by_bits))
    leftover = [v for v in _unique(model.weights) if id(v) not in covered]
    if leftover:  # variables a subclassed model created itself
        rows.append(_layer_summary(model.name, model, leftover, params_by_bits))
    params = sum(r.params for r in rows)
    deployed = sum(r.deployed_bits for r in rows)
    result = ModelSummary(
        layers=rows,
        params=params,
        params_by_bits=dict(sorted(params_by_bits.items())),
        logits=sum(r.logits for r in rows),
        training_bytes=sum(r.training_bytes for r in rows),
        deployed_bits=deployed,
        float32_bits=FLOAT_BITS * params,
        compression_ratio=(FLOAT_BITS * params / deployed) if deployed else 1.0,
    )
    if print_fn is not None:
        print_fn(result.table())
    return result


def _leaf_layers(model, prefix):
    """(name prefix, layer) for the layers of `model`, nested models expanded."""
    if not isinstance(model, keras.Model):
        yield prefix, model
        return
    seen = set()
    for layer in model.layers:
        if id(layer) in seen or isinstance(layer, keras.layers.InputLayer):
            continue
        seen.add(id(layer))
        if isinstance(layer, keras.Model):
            yield from _leaf_layers(layer, f"{prefix}{layer.name}/")
        else:
            yield prefix, layer


def _unique(variables):
    seen, unique = set(), []
    for variable in variables:
        if id(variable) not in seen:
            seen.add(id(variable))
            unique.append(variable)
    return unique


def _roles(layer):
    """{id(variable): (bits, values per weight) or None}: SLB logits and undeployed variables.

    A searched layer's logits deploy at its chosen width (`chosen_wbits`).

    Looks into sublayers too, so a wrapper holding SLB layers is counted right.
    """
    roles = {}
    for sub in keras_private.flatten_layers(layer, include_self=True):
        if isinstance(sub, slb_layers_lib.SLBLayerMixin) and sub.built:
            roles[id(sub.kernel_logits)] = (sub.chosen_wbits(), 2**sub.logit_bits)
            roles[id(sub.temperature)] = None
            if sub.searched:
                roles[id(sub.width_logits)] = roles[id(sub.bit_cost)] = None
        elif isinstance(sub, StateBatchNormalization) and sub.built:
            for variable in (sub.moving_mean, sub.moving_variance, sub.calibrated):
                roles[id(variable)] = None  # soft statistics: training only
    return roles


def _layer_summary(name, layer, variables, params_by_bits):
    roles = _roles(layer)
    params = logits = training_bytes = deployed_bits = 0
    wbits = set()
    for variable in variables:
        size = int(np.prod(variable.shape))
        training_bytes += size * np.dtype(variable.dtype).itemsize
        if id(variable) in roles:
            if roles[id(variable)] is None:
                continue
            bits, values = roles[id(variable)]
            count = size // values  # one deployed weight per `values` logits
            logits += size
            wbits.add(bits)
        elif np.issubdtype(np.dtype(variable.dtype), np.floating):
            bits, count = FLOAT_BITS, size
        else:
            continue  # integer state (seeds, counters): not a parameter
        params += count
        deployed_bits += bits * count
        params_by_bits[bits] = params_by_bits.get(bits, 0) + count
    if len(wbits) == 1:
        row_wbits = wbits.pop()
    else:
        row_wbits = FLOAT_BITS if params and not wbits else None
    abits = None
    if isinstance(layer, slb_layers_lib.SLBLayerMixin):
        quantizer = layer.input_quantizer
        abits = FLOAT_BITS if quantizer is None else getattr(quantizer, "bits", None)
    return LayerSummary(
        name=name,
        type=type(layer).__name__,
        wbits=row_wbits,
        abits=abits,
        params=params,
        logits=logits,
        training_bytes=training_bytes,
        deployed_bits=deployed_bits,
    )


def _bits_text(wbits, abits):
    if wbits is None and abits is None:
        return "-"
    return f"{'-' if wbits is None else wbits}/{'-' if abits is None else abits}"


def _bytes_text(count):
    if count < 1024:
        return f"{count:,.0f} B"
    if count < 1024**2:
        return f"{count / 1024:,.2f} KiB"
    return f"{count / 1024**2:,.2f} MiB"
