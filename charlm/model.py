"""The network: Embedding -> stacked LSTMs with dropout -> Dense logits over the vocabulary."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import keras
import numpy as np

from charlm.errors import CharLMError


@dataclass(frozen=True)
class ModelSpec:
    """Layer sizes of one architecture."""

    embed: int
    units: int
    layers: int
    dropout: float

    def to_json(self) -> dict:
        return asdict(self)


PRESETS: dict[str, ModelSpec] = {
    # For tests: trains in seconds.
    "tiny": ModelSpec(embed=16, units=48, layers=1, dropout=0.0),
    # Quick experiments on a laptop.
    "small": ModelSpec(embed=32, units=256, layers=2, dropout=0.2),
    # What we ship: trains on 2 CPU cores in under an hour, fast on a GPU.
    "default": ModelSpec(embed=64, units=512, layers=2, dropout=0.3),
    # The recipe's 3x700 LSTM with dropout 0.2.
    "gigantic": ModelSpec(embed=64, units=700, layers=3, dropout=0.2),
}


def preset(name: str) -> ModelSpec:
    try:
        return PRESETS[name]
    except KeyError:
        raise CharLMError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None


def build_model(vocab_size: int, spec: ModelSpec) -> keras.Model:
    """Int ids (batch, time) -> logits (batch, time, vocab)."""
    ids = keras.Input(shape=(None,), dtype="int32", name="ids")
    x = keras.layers.Embedding(vocab_size, spec.embed, name="embedding")(ids)
    for i in range(spec.layers):
        if spec.dropout:
            x = keras.layers.Dropout(spec.dropout, name=f"dropout_{i}")(x)
        x = keras.layers.LSTM(spec.units, return_sequences=True, name=f"lstm_{i}")(x)
    if spec.dropout:
        x = keras.layers.Dropout(spec.dropout, name="dropout_out")(x)
    logits = keras.layers.Dense(vocab_size, name="logits")(x)
    return keras.Model(ids, logits, name="charlm")


def with_dropout(model: keras.Model, rate: float) -> keras.Model:
    """A copy with every Dropout layer at `rate`: more dropout regularises fine-tuning
    on a small corpus, where the base's rate lets the model overfit within a few epochs."""
    config = model.get_config()
    for layer in config["layers"]:
        if layer["class_name"] == "Dropout":
            layer["config"]["rate"] = rate
    copy = keras.Model.from_config(config)
    copy.set_weights(model.get_weights())
    return copy


def dropout_rate(model: keras.Model) -> float:
    """The rate of the model's Dropout layers (0 when it has none)."""
    return next((layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)), 0.0)


def inference_copy(model: keras.Model) -> keras.Model:
    """The same network and weights without optimizer state: small enough to ship."""
    copy = keras.Model.from_config(model.get_config())  # never compiled: no optimizer variables
    copy.set_weights(model.get_weights())
    return copy


GATES = 4  # Keras LSTM weight blocks, in its order: input, forget, cell, output


def _widen_gates(old: np.ndarray, old_units: int, units: int, rows: int, old_rows: int,
                 rng: np.random.Generator) -> np.ndarray:
    """A (rows, 4*units) LSTM weight matrix holding `old` (old_rows, 4*old_units): each
    gate block's first old_units columns are the old ones, fed only by the old rows (the
    new rows into them are zero); the new units' columns are small random weights."""
    wide = rng.normal(0.0, 0.5 / np.sqrt(rows), size=(rows, GATES * units)).astype(old.dtype)
    for g in range(GATES):
        wide[:old_rows, g * units : g * units + old_units] = old[:, g * old_units : (g + 1) * old_units]
        wide[old_rows:, g * units : g * units + old_units] = 0.0
    return wide


def widen(model: keras.Model, spec: ModelSpec, units: int, seed: int = 0) -> tuple[keras.Model, ModelSpec]:
    """The same network with `units` per LSTM layer, computing exactly the same function.

    Net2Net-style growth, so a wider base starts from what the narrow one learnt instead
    of from scratch: every new unit gets random incoming weights, but its outgoing
    weights (to the old units' gates, to the next layer's old units, to the logits)
    start at zero, so until training moves them the old units and the logits are
    untouched. Training then gives the new units a part to play."""
    if units <= spec.units:
        raise CharLMError(f"can only widen: the model has {spec.units} units per layer, asked for {units}")
    rng = np.random.default_rng(seed)
    wide_spec = replace(spec, units=units)
    vocab_size = model.get_layer("logits").get_weights()[1].shape[0]
    wide = build_model(vocab_size, wide_spec)
    wide.get_layer("embedding").set_weights(model.get_layer("embedding").get_weights())
    old_u = spec.units
    for i in range(spec.layers):
        kernel, recurrent, bias = model.get_layer(f"lstm_{i}").get_weights()
        in_rows, old_in = (spec.embed, spec.embed) if i == 0 else (units, old_u)
        new_bias = np.zeros(GATES * units, bias.dtype)
        new_bias[units : 2 * units] = 1.0  # Keras's unit_forget_bias for the new units
        for g in range(GATES):
            new_bias[g * units : g * units + old_u] = bias[g * old_u : (g + 1) * old_u]
        wide.get_layer(f"lstm_{i}").set_weights([
            _widen_gates(kernel, old_u, units, in_rows, old_in, rng),
            _widen_gates(recurrent, old_u, units, units, old_u, rng),
            new_bias,
        ])
    dense, dense_b = model.get_layer("logits").get_weights()
    wide_dense = np.zeros((units, vocab_size), dense.dtype)
    wide_dense[:old_u] = dense
    wide.get_layer("logits").set_weights([wide_dense, dense_b])
    return wide, wide_spec
