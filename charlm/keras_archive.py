"""Read the weights of a saved charlm model straight from its `.keras` archive.

Serving needs the arrays only, and importing Keras (that is, TensorFlow) to get them
costs seconds and hundreds of MB per process. A Keras 3 `.keras` file is a zip of
config.json (the layer graph), metadata.json and model.weights.h5; this module walks
config.json's layers, checks that they form the chain charlm builds (Embedding ->
[Dropout] -> LSTM x N -> [Dropout] -> Dense, see charlm.model), and reads each
layer's variables from the h5 file with h5py, finding its group through the layer
name Keras stores beside the variables (not through dataset order). Every problem is
a one-line CharLMError.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from charlm.errors import CharLMError

CONFIG, WEIGHTS = "config.json", "model.weights.h5"
_SKIPPED = {"InputLayer", "Dropout"}  # layers without weights that generation ignores


@dataclass
class ArchiveArrays:
    """The float32 arrays of one archive, in Keras layout (LSTM gates i, f, c, o)."""

    embedding: np.ndarray  # (vocab, embed)
    lstms: list[tuple[np.ndarray, np.ndarray, np.ndarray]]  # per layer: kernel, recurrent kernel, bias
    dense: tuple[np.ndarray, np.ndarray]  # kernel (units, vocab), bias (vocab,)


class _Bad(Exception):
    """An archive that is readable but not a charlm model; its message is the reason."""


def read_archive(path: str | Path) -> ArchiveArrays:
    """The weights of `path`; a corrupt or foreign archive is one CharLMError line."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read(CONFIG))
            weights = archive.read(WEIGHTS)
        return _arrays(config, weights)
    except _Bad as exc:
        raise CharLMError(f"{path} is not a charlm model ({exc})") from None
    except Exception as exc:  # zipfile, json, h5py and numpy raise many types for a damaged file
        raise CharLMError(f"{path} could not be loaded ({exc.__class__.__name__})") from None


def _arrays(config: dict, weights: bytes) -> ArchiveArrays:
    import h5py  # here, not at the top: only loading needs it

    layers = _chain(config)
    weighted = [layer for layer in layers if layer["class_name"] not in _SKIPPED]
    kinds = [layer["class_name"] for layer in weighted]
    if len(kinds) < 3 or kinds[0] != "Embedding" or kinds[-1] != "Dense" or set(kinds[1:-1]) != {"LSTM"}:
        raise _Bad(f"layers {' -> '.join(kinds) or 'none'}, expected Embedding -> LSTM ... -> Dense")
    with h5py.File(io.BytesIO(weights), "r") as h5:
        groups = _groups_by_layer(h5, layers)
        values = [_variables(groups[layer["name"]], layer["class_name"]) for layer in weighted]
    arrays = ArchiveArrays(values[0][0], [tuple(v) for v in values[1:-1]], tuple(values[-1]))
    _check_shapes(arrays, weighted)
    return arrays


def _chain(config: dict) -> list[dict]:
    """The layers of a Functional model whose every layer reads the one before it."""
    if config.get("class_name") != "Functional":
        raise _Bad(f"a {config.get('class_name')!r} model, expected a Functional one")
    layers = config["config"]["layers"]
    for before, layer in zip(layers, layers[1:]):
        if _inputs(layer) != [before["name"]]:
            raise _Bad(f"layer {layer['name']!r} does not read only {before['name']!r}")
    for layer in layers:
        if layer["class_name"] not in _SKIPPED | {"Embedding", "LSTM", "Dense"}:
            raise _Bad(f"unsupported layer {layer['class_name']}")
        _check_options(layer)
    return layers


def _inputs(layer: dict) -> list[str]:
    names = []
    for node in layer.get("inbound_nodes", []):
        for arg in node.get("args", []):
            if isinstance(arg, dict) and arg.get("class_name") == "__keras_tensor__":
                names.append(arg["config"]["keras_history"][0])
    return names


def _check_options(layer: dict) -> None:
    """The options under which the numpy step computes what Keras computes."""
    c, kind = layer["config"], layer["class_name"]
    dtype = c.get("dtype")
    if kind != "InputLayer" and isinstance(dtype, dict) and dtype.get("config", {}).get("name") != "float32":
        raise _Bad(f"layer {layer['name']!r} is not float32")
    wanted = {"Embedding": {"mask_zero": False},
              "LSTM": {"activation": "tanh", "recurrent_activation": "sigmoid", "use_bias": True,
                       "go_backwards": False, "return_sequences": True, "return_state": False},
              "Dense": {"activation": "linear", "use_bias": True}}.get(kind, {})
    for key, value in wanted.items():
        if c.get(key, value) != value:
            raise _Bad(f"layer {layer['name']!r} has {key}={c.get(key)!r}, expected {value!r}")


def _groups_by_layer(h5, layers: list[dict]) -> dict:
    """Each layer's h5 group. Keras writes the layer's name beside its variables
    (`layers/<key>/vars` has attribute name=<layer name>); files without it get the
    key Keras gives in config order: the class in snake_case, then _1, _2, ..."""
    stored = h5["layers"]
    by_name = {}
    for key in stored:
        name = stored[key]["vars"].attrs.get("name") if "vars" in stored[key] else None
        if name is not None:
            by_name[name.decode() if isinstance(name, bytes) else str(name)] = stored[key]
    groups, used = {}, {}
    for layer in layers:
        base = _snake_case(layer["class_name"])
        count = used.get(base, 0)
        used[base] = count + 1
        key = base if count == 0 else f"{base}_{count}"
        group = by_name.get(layer["name"], stored.get(key))
        if group is None:
            raise _Bad(f"no weights for layer {layer['name']!r}")
        groups[layer["name"]] = group
    return groups


def _snake_case(name: str) -> str:
    """Keras' own rule (keras.src.utils.naming.to_snake_case): LSTM -> lstm, InputLayer -> input_layer."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _variables(group, kind: str) -> list[np.ndarray]:
    """A layer's variables in the order its build() creates them: LSTM cell kernel,
    recurrent kernel, bias; Dense kernel, bias; Embedding embeddings."""
    holder = group["cell"]["vars"] if kind == "LSTM" else group["vars"]
    count = {"LSTM": 3, "Dense": 2, "Embedding": 1}[kind]
    missing = [str(i) for i in range(count) if str(i) not in holder]
    if missing:
        raise _Bad(f"{group.name} lacks variables {', '.join(missing)}")
    return [np.ascontiguousarray(holder[str(i)][()], dtype=np.float32) for i in range(count)]


def _check_shapes(arrays: ArchiveArrays, layers: list[dict]) -> None:
    """Shapes as the config says, and each layer fitting the next."""
    emb = layers[0]["config"]
    if arrays.embedding.shape != (emb["input_dim"], emb["output_dim"]):
        raise _Bad(f"embedding is {arrays.embedding.shape}, config says ({emb['input_dim']}, {emb['output_dim']})")
    width = arrays.embedding.shape[1]
    for layer, (kernel, recurrent, bias) in zip(layers[1:-1], arrays.lstms):
        u = layer["config"]["units"]
        if kernel.shape != (width, 4 * u) or recurrent.shape != (u, 4 * u) or bias.shape != (4 * u,):
            raise _Bad(f"layer {layer['name']!r} has shapes {kernel.shape}, {recurrent.shape}, {bias.shape}"
                       f" for {u} units on {width} inputs")
        width = u
    kernel, bias = arrays.dense
    units = layers[-1]["config"]["units"]
    if kernel.shape != (width, units) or bias.shape != (units,):
        raise _Bad(f"output layer has shapes {kernel.shape}, {bias.shape} for {units} outputs on {width} inputs")
