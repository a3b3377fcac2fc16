"""The network: Embedding -> stacked LSTMs with dropout -> Dense logits over the vocabulary."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import keras

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


def inference_copy(model: keras.Model) -> keras.Model:
    """The same network and weights without optimizer state: small enough to ship."""
    copy = keras.Model.from_config(model.get_config())  # never compiled: no optimizer variables
    copy.set_weights(model.get_weights())
    return copy
