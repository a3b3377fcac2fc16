"""The inference engine: same text as direct generation, batching, backpressure, deadlines,
cancel, hot swap, crash isolation, shutdown, streaming and the asyncio API."""

import asyncio
import threading
from concurrent.futures import CancelledError, wait

import numpy as np
import pytest

from charlm.engine import Engine, EngineBusy, EngineClosed, EngineTimeout, GenerationFailed
from charlm.errors import CharLMError
from charlm.generate import SERVING_PRECISION, Generator
from charlm.model import ModelSpec, build_model
from charlm.numpy_lstm import NumpyLSTM
from charlm.sampling import Sampling
from charlm.storage import save_model_folder
from charlm.vocab import Vocabulary

VOCAB = Vocabulary.from_text("abcdefghijklmnopqrstuvwxyz .,'\n")
UNITS = {"a": 48, "a2": 48, "b": 32}  # "b" differs in size so a test can break only "a"'s step


def _save(tmp_path_factory, name: str, seed: int):
    import keras

    keras.utils.set_random_seed(seed)
    model = build_model(len(VOCAB), ModelSpec(embed=16, units=UNITS[name], layers=2, dropout=0.0))
    for w in model.weights:  # larger weights make the output depend on the prompt
        w.assign(np.asarray(w) * 3.0)
    return save_model_folder(model, VOCAB, {"name": f"random-{name}", "created": "2024-01-01",
                                            "vocab_size": len(VOCAB)}, tmp_path_factory.mktemp("m") / name)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return {name: _save(tmp_path_factory, name, seed) for seed, name in enumerate(UNITS)}


@pytest.fixture(scope="module")
def engine(folders):
    with Engine({"a": folders["a"], "b": folders["b"]}, backend="numpy") as e:
        yield e


def _direct(folder, prompt: str, settings: Sampling) -> str:
    gen = Generator.from_folder(folder, "numpy", SERVING_PRECISION)  # what the engine steps in by default
    return gen.generate([gen.vocab.window(prompt).ids], [settings])[0]


class Gate:
    """A streaming callback that holds the engine thread until released."""

    def __init__(self) -> None:
        self.entered, self.release, self.calls = threading.Event(), threading.Event(), 0

    def __call__(self, text: str) -> None:
        self.calls += 1
        self.entered.set()
        assert self.release.wait(10)


def test_results_equal_direct_generation_and_report_what_served_them(engine, folders):
    settings = Sampling(temperature=0.9, top_k=10, seed=7, length=70)
    result = engine.submit("a", "Alice was beginning to get very tired", settings).result(10)
    assert result.text == _direct(folders["a"], "Alice was beginning to get very tired", settings)
    assert (result.model, result.version.number, result.version.card_name) == ("a", 1, "random-a")
    assert result.backend == result.version.backend == "numpy" and result.settings == settings
    assert result.window.prompt_text == "alice was beginning to get very tired" and result.window.padded == 63
    assert result.queued_s >= 0 and result.generation_s > 0
    assert set(engine.models()) == {"a", "b"}


def test_many_concurrent_requests_with_mixed_settings_do_not_mix(engine, folders):
    jobs = [(("a", "b")[i % 2], f"prompt number {i} " * (i % 4), Sampling(
        temperature=(0, 0.5, 1.0, 1.5)[i % 4], top_k=i % 3, top_p=(1.0, 0.9)[i % 2], seed=i, length=5 + 7 * i))
        for i in range(24)]
    futures = []
    barrier = threading.Barrier(4)

    def submit_some(part):
        barrier.wait()
        futures.extend((job, engine.submit(*job)) for job in part)

    threads = [threading.Thread(target=submit_some, args=(jobs[k::4],)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (model, prompt, settings), future in futures:
        result = future.result(20)
        assert result.model == model and len(result.text) == settings.length
        assert result.text == _direct(folders[model], prompt, settings)


def test_overrides_and_unknown_model(engine):
    result = engine.submit("a", "x", Sampling(temperature=1.0), length=9, seed=3).result(10)
    assert result.settings == Sampling(temperature=1.0, length=9, seed=3) and len(result.text) == 9
    with pytest.raises(CharLMError, match="no model named 'zzz'"):
        engine.submit("zzz", "hello")
    with pytest.raises(CharLMError, match="length"):
        engine.submit("a", "hello", length=0)


def test_full_queue_is_busy_at_once_then_serves(folders):
    with Engine({"a": folders["a"]}, backend="numpy", max_queue=2, max_batch=1) as e:
        gate = Gate()
        first = e.submit("a", "hold", length=40, on_text=gate, every=1)
        assert gate.entered.wait(10)
        queued = [e.submit("a", "one", length=5), e.submit("a", "two", length=5)]
        with pytest.raises(EngineBusy, match="busy"):
            e.submit("a", "three", length=5)
        gate.release.set()
        assert [len(f.result(10).text) for f in [first] + queued] == [40, 5, 5]


def test_timeouts_while_queued_and_while_running(folders):
    with Engine({"a": folders["a"]}, backend="numpy", max_batch=1, chunk=4) as e:
        gate = Gate()
        running = e.submit("a", "hold", length=200, on_text=gate, every=1, timeout=0.2)
        assert gate.entered.wait(10)
        queued = e.submit("a", "late", length=5, timeout=0.05)
        threading.Event().wait(0.3)
        gate.release.set()
        with pytest.raises(EngineTimeout, match="of 200 characters"):
            running.result(10)
        with pytest.raises(EngineTimeout, match="queue"):
            queued.result(10)
        assert len(e.submit("a", "after", length=12).result(10).text) == 12


def test_cancelled_request_leaves_the_batch(folders):
    with Engine({"a": folders["a"]}, backend="numpy", chunk=4) as e:
        gate = Gate()
        doomed = e.submit("a", "hold", length=5000, on_text=gate, every=1)
        other = e.submit("a", "other", length=300)
        assert gate.entered.wait(10)
        assert doomed.cancel()
        gate.release.set()
        assert len(other.result(10).text) == 300
        calls = gate.calls
        assert len(e.submit("a", "after", length=50).result(10).text) == 50
        assert gate.calls == calls and calls < 5000 / 4
        with pytest.raises(CancelledError):
            doomed.result(0)


def test_hot_swap_in_flight_requests_finish_on_their_version(folders):
    with Engine({"a": folders["a"]}, backend="numpy") as e:
        assert e.running
        gate = Gate()
        settings = Sampling(temperature=0.8, seed=11, length=60)
        old = e.submit("a", "the queen", settings, on_text=gate, every=1)
        assert gate.entered.wait(10)
        queued_old = e.submit("a", "the king", settings)
        version = e.load("a", folders["a2"])  # returns while the thread is still busy with v1
        assert version.number == 2 and e.models()["a"] == version and version.card_name == "random-a2"
        new = e.submit("a", "the queen", settings)
        gate.release.set()
        old_result, queued_result, new_result = old.result(10), queued_old.result(10), new.result(10)
        assert old_result.version.number == queued_result.version.number == 1 and new_result.version == version
        assert old_result.text == _direct(folders["a"], "the queen", settings)
        assert queued_result.text == _direct(folders["a"], "the king", settings)
        assert new_result.text == _direct(folders["a2"], "the queen", settings) != old_result.text
        assert e.unload("a") == version and e.models() == {}
        with pytest.raises(CharLMError, match="no model named 'a'"):
            e.submit("a", "gone")


def test_crashing_step_fails_only_its_batch_and_the_engine_goes_on(engine, folders, monkeypatch):
    real = NumpyLSTM.advance
    crashes = []

    def flaky(self, *args):
        if self.units == [UNITS["a"]] * 2 and not crashes:
            crashes.append(1)
            raise FloatingPointError("boom")
        return real(self, *args)

    monkeypatch.setattr(NumpyLSTM, "advance", flaky)
    gate = Gate()
    good = engine.submit("b", "fine", length=300, on_text=gate, every=1)
    assert gate.entered.wait(10)  # the three "a" requests queue up and join one batch
    bad = [engine.submit("a", f"crash {i}", length=300) for i in range(3)]
    gate.release.set()
    for future in bad:
        with pytest.raises(GenerationFailed, match="a v1 .*FloatingPointError: boom"):
            future.result(10)
    assert len(good.result(10).text) == 300
    settings = Sampling(seed=1, length=30)
    assert engine.submit("a", "again", settings).result(10).text == _direct(folders["a"], "again", settings)


def test_close_fails_pending_and_running_requests_and_joins(folders):
    e = Engine({"a": folders["a"]}, backend="numpy", max_batch=1)
    running = e.submit("a", "long", length=10_000)
    queued = [e.submit("a", f"q{i}", length=10) for i in range(3)]
    e.close(timeout=10)
    assert not e.running
    done, _ = wait([running] + queued, timeout=5)
    assert len(done) == 4
    errors = [f.exception() for f in [running] + queued]
    assert any(isinstance(x, EngineClosed) for x in errors)
    assert all(x is None or isinstance(x, EngineClosed) for x in errors)
    with pytest.raises(EngineClosed):
        e.submit("a", "after")


def test_streaming_sees_growing_prefixes(engine):
    seen: list[str] = []
    result = engine.submit("b", "stream", length=100, seed=2, on_text=seen.append, every=10).result(10)
    assert len(seen) >= 5
    assert all(result.text.startswith(s) for s in seen)
    assert [len(s) for s in seen] == sorted({len(s) for s in seen})


def test_asyncio_api_streams_on_the_loop_and_cancels(engine, folders):
    async def main():
        loop_thread = threading.get_ident()
        seen: list[tuple[int, str]] = []
        settings = Sampling(seed=5, length=80)
        result = await engine.generate("a", "async", settings,
                                       on_text=lambda text: seen.append((threading.get_ident(), text)), every=8)
        assert result.text == _direct(folders["a"], "async", settings)
        assert seen and all(t == loop_thread and result.text.startswith(s) for t, s in seen)

        got_some = asyncio.Event()
        task = asyncio.create_task(engine.generate("a", "forever", length=10_000, on_text=lambda _: got_some.set()))
        await asyncio.wait_for(got_some.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        again = await asyncio.gather(*(engine.generate("b", f"p{i}", length=20) for i in range(5)))
        assert [len(r.text) for r in again] == [20] * 5

    asyncio.run(main())
