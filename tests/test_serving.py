"""Serving without TensorFlow: model folders are read straight from the .keras archive.

The serving path (engine, `python -m charlm generate|eval`, the bot's modules) must not
import Keras or TensorFlow; the arrays it reads must be the ones Keras loads, so the
same seeds give the same ids; and a damaged or foreign archive is one line.
"""

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from charlm.cli import main
from charlm.errors import CharLMError
from charlm.generate import Batch, Generator
from charlm.keras_archive import read_archive
from charlm.numpy_lstm import LSTMWeights, NumpyLSTM
from charlm.sampling import Sampling
from charlm.storage import load_model_folder, read_model_folder, save_model_folder
from charlm.vocab import Vocabulary
from tests.conftest import WEIGHTS, make_text

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = [WEIGHTS / "alice", WEIGHTS / "seuss"]

NO_TENSORFLOW = r"""
import contextlib, io, sys
from pathlib import Path

def heavy():
    return sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))

alice, seuss, corpus = sys.argv[1:4]
from charlm.engine import Engine
with Engine({"alice": alice, "seuss": seuss}, backend="numpy") as engine:
    texts = [engine.submit(name, "the queen", length=30, seed=1).result(60).text for name in ("alice", "seuss")]
assert all(len(t) == 30 for t in texts), texts
assert not heavy(), ("engine", heavy()[:5])

from charlm.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    assert main(["generate", "alice", "--model", alice, "--length", "20", "--seed", "3"]) == 0
    assert main(["eval", corpus, "--model", seuss, "--max-chars", "500"]) == 0
assert not heavy(), ("cli", heavy()[:5])

import bot.check, bot.cog, bot.finetune.cog, bot.runner  # everything the bot process imports to serve
assert not heavy(), ("bot", heavy()[:5])
assert "matplotlib" not in sys.modules  # fine-tune plots import it when they are drawn
print("no tensorflow")
"""


def test_serving_path_never_imports_tensorflow_or_keras(tmp_path):
    corpus = tmp_path / "text.txt"
    corpus.write_text(make_text(2_000), "utf-8")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "-1"}  # "auto" (the CLI's backend) picks numpy on any host
    out = subprocess.run([sys.executable, "-c", NO_TENSORFLOW, *map(str, SHIPPED), str(corpus)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0 and out.stdout.strip() == "no tensorflow", out.stderr[-3000:]


def _ids(weights: LSTMWeights, vocab: Vocabulary, length: int = 120) -> np.ndarray:
    """Ids of a mixed batch (seeds, temperatures, top-k, top-p, argmax), one chunk at a time."""
    prompts = ["alice was", "", "the cat in the hat said", "x" * 130]
    settings = [Sampling(seed=7, length=length), Sampling(seed=8, temperature=1.3, length=length),
                Sampling(seed=9, top_k=5, length=length), Sampling(seed=10, top_p=0.9, length=length),
                Sampling(temperature=0, length=length)]
    windows = np.stack([vocab.window(p).ids for p in prompts] + [vocab.window("down the rabbit hole").ids])
    batch = Batch(NumpyLSTM(weights))
    batch.join(windows, settings, len(vocab))
    return np.concatenate([batch.advance(16) for _ in range(length // 16 + 1)], axis=1)


def _same_arrays(a: LSTMWeights, b: LSTMWeights) -> bool:
    pairs = [(a.table, b.table), (a.dense_w, b.dense_w), (a.dense_b, b.dense_b)]
    pairs += list(zip(a.kernels + a.recurrent + a.biases, b.kernels + b.recurrent + b.biases))
    return len(a.recurrent) == len(b.recurrent) and all(x.dtype == y.dtype and np.array_equal(x, y)
                                                        for x, y in pairs)


@pytest.fixture(scope="module")
def finetuned(tiny_model, tmp_path_factory) -> Path:
    from charlm.jobs import finetune
    from charlm.train import TrainConfig

    corpus = tmp_path_factory.mktemp("tune") / "other.txt"
    corpus.write_text(make_text(6_000, seed=3), "utf-8")
    return finetune(corpus, tiny_model, tmp_path_factory.mktemp("tuned") / "tuned",
                    TrainConfig(epochs=1, batch_size=16)).folder


@pytest.mark.parametrize("which", ["alice", "seuss", "finetuned"])
def test_archive_reader_generates_the_ids_of_the_keras_path(which, request):
    folder = request.getfixturevalue("finetuned") if which == "finetuned" else WEIGHTS / which
    keras_saved, served = load_model_folder(folder), read_model_folder(folder)
    keras_weights = LSTMWeights.from_keras(keras_saved.model)
    assert _same_arrays(keras_weights, served.weights)  # bit for bit, so every step is too
    assert served.vocab == keras_saved.vocab and served.card == keras_saved.card
    assert np.array_equal(_ids(keras_weights, keras_saved.vocab), _ids(served.weights, served.vocab))
    old = Generator(keras_saved, "numpy")  # the public path, old way and new way
    new = Generator.from_folder(folder, "numpy")
    window = [new.vocab.window("she said").ids]
    for seed in (0, 1, 2):
        assert old.generate(window, [Sampling(seed=seed, length=200)]) == new.generate(
            window, [Sampling(seed=seed, length=200)])


def test_eval_on_the_numpy_step_matches_keras(tiny_model):
    from charlm.evaluate import evaluate

    saved = load_model_folder(tiny_model)
    ids = saved.vocab.encode(make_text(3_000, seed=5)).ids
    by_keras = evaluate(saved.model, ids)
    by_numpy = evaluate(NumpyLSTM(read_model_folder(tiny_model).weights), ids)
    assert by_numpy.chars == by_keras.chars
    assert by_numpy.bits_per_char == pytest.approx(by_keras.bits_per_char, abs=1e-4)


def _rezip(source: Path, target: Path, replace: dict[str, bytes | None]) -> None:
    """A copy of the archive with some members replaced (None: left out)."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for name in old.namelist():
            data = replace.get(name, old.read(name))
            if data is not None:
                new.writestr(name, data)


def _other_model(vocab_size: int, units: int, tmp: Path, cell: str = "LSTM") -> Path:
    """The model.keras of another network (different units, or a GRU)."""
    import keras

    ids = keras.Input(shape=(None,), dtype="int32")
    x = keras.layers.Embedding(vocab_size, 16)(ids)
    x = getattr(keras.layers, cell)(units, return_sequences=True)(x)
    model = keras.Model(ids, keras.layers.Dense(vocab_size)(x))
    path = tmp / f"{cell}-{units}.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def broken_folders(tiny_model, tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """Model folders with a damaged or foreign model.keras, and the message each must give."""
    tmp = tmp_path_factory.mktemp("broken")
    saved = load_model_folder(tiny_model)
    archive = tiny_model / "model.keras"
    config = json.loads(zipfile.ZipFile(archive).read("config.json"))
    units = next(layer for layer in config["config"]["layers"] if layer["class_name"] == "LSTM")["config"]["units"]
    other = _other_model(len(saved.vocab), units + 8, tmp)
    gru = _other_model(len(saved.vocab), 8, tmp, "GRU")
    bad_activation = json.loads(json.dumps(config))
    for layer in bad_activation["config"]["layers"]:
        if layer["class_name"] == "LSTM":
            layer["config"]["activation"] = "relu"
    cases = {
        "not a zip": (lambda p: p.write_bytes(b"this is not a zip archive"), r"could not be loaded \(BadZipFile\)"),
        "truncated": (lambda p: p.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2]),
                      r"could not be loaded \(BadZipFile\)"),
        "no weights": (lambda p: _rezip(archive, p, {"model.weights.h5": None}), r"could not be loaded \(KeyError\)"),
        "garbled weights": (lambda p: _rezip(archive, p, {"model.weights.h5": b"\x89HDF\r\n" + b"x" * 500}),
                            r"could not be loaded \(OSError\)"),
        "garbled config": (lambda p: _rezip(archive, p, {"config.json": b"{not json"}),
                           r"could not be loaded \(JSONDecodeError\)"),
        "weights of another size": (
            lambda p: _rezip(archive, p, {"model.weights.h5": zipfile.ZipFile(other).read("model.weights.h5")}),
            r"is not a charlm model \(layer '\w+' has shapes"),
        "GRU": (lambda p: p.write_bytes(gru.read_bytes()), r"is not a charlm model \(unsupported layer GRU\)"),
        "relu": (lambda p: _rezip(archive, p, {"config.json": json.dumps(bad_activation).encode()}),
                 r"is not a charlm model \(layer '\w+' has activation='relu', expected 'tanh'\)"),
    }
    folders = {}
    for i, (name, (damage, message)) in enumerate(cases.items()):
        folder = save_model_folder(saved.model, saved.vocab, saved.card, tmp / f"case{i}")
        damage(folder / "model.keras")
        folders[name] = (folder, message)
    mismatched = save_model_folder(saved.model, Vocabulary("ab"), saved.card, tmp / "mismatch")
    folders["vocabulary mismatch"] = (mismatched, rf"model predicts {len(saved.vocab)} characters but vocab.json has 2")
    return folders


@pytest.mark.parametrize("case", ["not a zip", "truncated", "no weights", "garbled weights", "garbled config",
                                  "weights of another size", "GRU", "relu", "vocabulary mismatch"])
def test_a_damaged_or_foreign_archive_is_one_line(case, broken_folders, capsys):
    folder, message = broken_folders[case]
    with pytest.raises(CharLMError, match=message) as error:
        read_model_folder(folder)
    assert "\n" not in str(error.value)
    assert main(["generate", "hi", "--model", str(folder), "--length", "5"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err


def test_archives_without_stored_layer_names_are_read_by_keras_naming(tmp_path):
    """Files whose h5 groups lack the layer-name attribute: groups are found by the key
    Keras derives from config.json's layer order (lstm, lstm_1, ...), same arrays."""
    import h5py

    source = WEIGHTS / "alice" / "model.keras"
    with zipfile.ZipFile(source) as archive:
        buffer = io.BytesIO(archive.read("model.weights.h5"))
    with h5py.File(buffer, "r+") as h5:
        for key in h5["layers"]:
            h5["layers"][key]["vars"].attrs.pop("name", None)
    stripped = tmp_path / "model.keras"
    _rezip(source, stripped, {"model.weights.h5": buffer.getvalue()})
    a, b = read_archive(source), read_archive(stripped)
    assert np.array_equal(a.embedding, b.embedding) and np.array_equal(a.dense[0], b.dense[0])
    assert all(np.array_equal(x, y) for p, q in zip(a.lstms, b.lstms) for x, y in zip(p, q))


def test_a_bot_without_tensorflow_refuses_to_fine_tune_in_one_line(tmp_path, tiny_model, monkeypatch,
                                                                   discord_log_guard):
    """An install from requirements-serve.txt (the serving-only image) cannot train."""
    from tests.test_finetune import jobs, rhymes, run, said, write_config

    import bot.finetune.cog as finetune_cog  # imported here: the attribute path needs the module loaded

    monkeypatch.setattr(finetune_cog, "can_train", lambda: False)
    config = write_config(tmp_path, tiny_model)

    async def scenario(double, bot) -> None:
        handle = await double.send_command("finetune start", {"corpus": double.add_attachment("c.txt", rhymes(9000)),
                                                              "base": "alice"}, user="alice")
        assert await handle.acknowledged() == 4
        assert handle.ephemeral and "serving-only image (no TensorFlow), so it cannot train" in said(handle)
        reply = await double.send_command("alice", {"text": "the queen", "length": 20}, user="alice")
        await reply.wait_final()
        assert not reply.ephemeral

    run(config, scenario)
    assert jobs(config) == []


def _pins(name: str) -> dict[str, str]:
    lines = (ROOT / name).read_text("utf-8").splitlines()
    pins = [line.split("==") for line in lines if line.strip() and not line.startswith(("#", "-r"))]
    names = [p[0].split("[")[0].strip().lower() for p in pins]
    assert len(names) == len(set(names)), f"{name} pins a package twice"
    return dict(zip(names, (p[1].strip() for p in pins)))


def test_every_install_pins_what_serving_needs_at_the_same_versions():
    """The serving-only and GPU installs carry every runtime package but the training stack."""
    full, serve, gpu = _pins("requirements.txt"), _pins("requirements-serve.txt"), _pins("requirements-gpu.txt")
    training = {"tensorflow-cpu", "keras", "matplotlib"}
    assert {k: v for k, v in full.items() if k not in training} == serve
    assert {k: v for k, v in full.items() if k != "tensorflow-cpu"} == {k: v for k, v in gpu.items() if k != "tensorflow"}
