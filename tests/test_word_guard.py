"""Avoided words (charlm.word_guard): serving steers every draw around a style's foreign names."""

import json
import re
import shutil
from collections import Counter
from dataclasses import replace
from pathlib import Path
from string import ascii_lowercase

import numpy as np
import pytest

from charlm.engine import Engine
from charlm.errors import CharLMError
from charlm.generate import SERVING_PRECISION, Generator
from charlm.jobs import finetune
from charlm.names import words
from charlm.sampling import Sampling
from charlm.storage import AVOID_FILE, load_model_folder, read_model_folder, save_model_folder, set_avoid
from charlm.train import TrainConfig
from charlm.vocab import Vocabulary
from charlm.word_guard import WordGuard, avoid_entry, inherit_avoid
from tests.conftest import make_text

VOCAB = Vocabulary.from_text("abcdefghijklmnopqrstuvwxyz .,'\n")
NON_LETTERS = set(" .,'\n")
PROMPTS = ["alice was beginning", "the queen said", "down the rabbit hole ", "off with her hea", "pe", "curiouser and"]


def _refused(guard: WordGuard, text: str) -> set[str]:
    """The characters the guard refuses once `text` has been written."""
    state = np.zeros(1, guard.next.dtype)  # as if the model had written `text` after a boundary
    for c in VOCAB.encode(text).ids:
        state = guard.step(state, np.array([c]))
    return {VOCAB.chars[c] for c in np.flatnonzero(guard.refuse[state[0]])}


def test_a_name_may_not_begin_where_no_ordinary_word_does() -> None:
    entry = avoid_entry({"peter", "ben", "oz"}, {"pet", "petal", "pets", "bench", "bend", "the", "on", "peter"})
    assert entry["words"] == ["ben", "oz", "peter"]
    guard = WordGuard.build(entry, VOCAB)
    assert _refused(guard, " pe") == set()  # "pet", "petal", "pets" begin so
    # at three letters of "peter", the word is held to ordinary words: "peta(l)", "pets", or "pet" itself;
    # "pete" begins only "peter" (the lexicon's "peter" is avoided, not ordinary)
    assert _refused(guard, " pet") == set(ascii_lowercase) - {"a", "s"}
    assert _refused(guard, " o") == {"z"}  # "on" may be written, "oz" not
    assert _refused(guard, " ben") == NON_LETTERS | (set(ascii_lowercase) - {"c", "d"})  # only "bench", "bend"
    assert _refused(guard, " benc") == set()  # inside "bench": no avoided word begins so
    assert _refused(guard, " the ") == set() and _refused(guard, "") == set()
    assert _refused(guard, " xpet") == set()  # inside another word: nothing is refused
    # a name's plural is the name: "peters" does not make "pete" an ordinary beginning
    assert _refused(WordGuard.build(avoid_entry({"peter"}, {"peters", "petal"}), VOCAB), " pet") == \
        set(ascii_lowercase) - {"a"}
    # ... unless the style's own corpus writes it
    assert _refused(WordGuard.build(avoid_entry({"peter"}, {"petal"}, {"peters"}), VOCAB), " peter") == \
        NON_LETTERS | set(ascii_lowercase) - {"s"}
    # a prompt that writes a name itself turns the guard off for that reply
    for prompt in ("i met peter", "i met peter and ", "\noz. "):
        assert guard.start(np.array([VOCAB.encode(prompt).ids]))[0] == guard.off, prompt
    assert not guard.refuse[guard.off].any() and (guard.next[guard.off] == guard.off).all()
    # no name written; a window's first word may be the end of a longer one (a long prompt cut to the window)
    for prompt in ("i met pete", "i met peterkin ", "i met xpeter ", " ozone ", "oz. "):
        assert guard.start(np.array([VOCAB.encode(prompt).ids]))[0] != guard.off, prompt


@pytest.fixture
def folder(tiny_model, tmp_path) -> Path:
    """A copy of the tiny model (it writes its few words again and again), to give an avoid list."""
    return Path(shutil.copytree(tiny_model, tmp_path / "tiny"))


def _windows(vocab: Vocabulary) -> np.ndarray:
    return np.stack([vocab.window(p).ids for p in PROMPTS])


def _written(texts: list[str]) -> Counter[str]:
    # the first word may run on from the prompt, the last is cut off by the length ("a" of "alice")
    return Counter(w for text in texts for w in words(text)[1:-1])


def _settings(length: int = 300) -> list[Sampling]:
    return [Sampling(temperature=0.8, seed=i, length=length) for i in range(len(PROMPTS))]


def _often_written(folder: Path, precision: str = "fp32") -> tuple[dict, list[str]]:
    """An avoid list of the four words this model writes most, and its unguarded texts."""
    gen = Generator.from_folder(folder, "numpy", precision)
    texts = gen.generate(list(_windows(gen.vocab)), _settings())
    written = _written(texts)
    return avoid_entry([w for w, _ in written.most_common(4)], set(make_text().lower().split())), texts


@pytest.mark.parametrize("backend,precision", [("numpy", "fp32"), ("numpy", "int8"), ("tensorflow", "fp32")])
def test_guarded_generation_never_writes_an_avoided_word(folder, backend, precision) -> None:
    entry, unguarded = _often_written(folder, precision)
    assert sum(_written(unguarded)[w] for w in entry["words"]) >= 20  # the model does like these words
    saved = replace(read_model_folder(folder), avoid=entry)
    texts = Generator(saved, backend, precision).generate(list(_windows(saved.vocab)), _settings())
    assert [len(t) for t in texts] == [300] * len(PROMPTS)
    assert not set(_written(texts)) & set(entry["words"])
    assert sum(_written(texts).values()) >= 0.8 * sum(_written(unguarded).values())  # words still, in their place
    assert Generator(saved, backend, precision, guarded=False).generate(list(_windows(saved.vocab)),
                                                                        _settings()) == unguarded


def test_a_reply_to_a_prompt_that_writes_an_avoided_word_is_not_steered(folder) -> None:
    entry, _ = _often_written(folder)
    saved = replace(read_model_folder(folder), avoid=entry)
    named = f"{PROMPTS[0]} {entry['words'][0]} "  # the user brought the word in
    windows, settings = [saved.vocab.window(p).ids for p in (named, *PROMPTS[1:])], _settings()
    for backend in ("numpy", "tensorflow"):
        guarded = Generator(saved, backend).generate(windows, settings)
        unguarded = Generator(saved, backend, guarded=False).generate(windows, settings)
        assert guarded[0] == unguarded[0]  # as the model alone writes it
        assert not set(_written(guarded[1:])) & set(entry["words"])  # the others are steered as before


def test_tensorflow_steers_as_numpy_does(folder) -> None:
    entry, _ = _often_written(folder)
    saved = replace(read_model_folder(folder), avoid=entry)
    windows = list(_windows(saved.vocab))
    assert Generator(saved, "numpy").generate(windows, _settings(120)) == \
        Generator(saved, "tensorflow").generate(windows, _settings(120))


def test_each_row_keeps_its_place_in_its_word_as_rows_join_and_leave(folder) -> None:
    """A row's text depends on its own prompt and seed only, whoever shares its batch."""
    entry, _ = _often_written(folder)
    gen = Generator(replace(read_model_folder(folder), avoid=entry), "numpy")
    settings, windows = _settings(90), _windows(gen.vocab)
    alone = [gen.generate([w], [s])[0] for w, s in zip(windows, settings)]
    batch = gen.batch()
    rows = batch.join(windows[:3], settings[:3], len(gen.vocab))
    batch.advance(30)
    rows += batch.join(windows[3:], settings[3:], len(gen.vocab))
    batch.advance(30)
    batch.keep([1, 3, 4, 5])  # rows 0 and 2 leave after 60 characters
    batch.advance(60)
    texts = [gen.vocab.decode(row.ids) for row in rows]
    assert texts[0] == alone[0][:60] and texts[2] == alone[2][:60]
    assert [texts[i] for i in (1, 3, 4, 5)] == [alone[i] for i in (1, 3, 4, 5)]


@pytest.fixture
def guarded_folder(folder):
    entry, _ = _often_written(folder, SERVING_PRECISION)
    set_avoid(folder, entry)
    return folder, entry


def test_the_engine_serves_a_folder_with_its_avoid_list(guarded_folder) -> None:
    folder, entry = guarded_folder
    gen = Generator.from_folder(folder, "numpy", SERVING_PRECISION)
    assert gen.guard is not None and gen.guard.words == len(entry["words"])
    with Engine({"m": folder}, backend="numpy") as engine:
        results = [engine.submit("m", p, s).result(30) for p, s in zip(PROMPTS, _settings())]
    texts = [r.text for r in results]
    assert texts == gen.generate(list(_windows(gen.vocab)), _settings())
    assert not set(_written(texts)) & set(entry["words"])


def test_a_damaged_avoid_list_is_a_one_line_error(guarded_folder) -> None:
    folder, _ = guarded_folder
    (folder / AVOID_FILE).write_text('{"words": ["peter"', "utf-8")
    with pytest.raises(CharLMError, match="avoid.json is unreadable"):
        read_model_folder(folder)
    (folder / AVOID_FILE).write_text('{"words": "peter"}', "utf-8")
    with pytest.raises(CharLMError, match="needs \"words\" and \"shared\" lists"):
        read_model_folder(folder)


def test_writing_an_avoid_list_that_fails_leaves_the_old_one(guarded_folder, monkeypatch) -> None:
    folder, entry = guarded_folder
    before = (folder / AVOID_FILE).read_text("utf-8")

    def disk_full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("pathlib.Path.replace", disk_full)
    with pytest.raises(OSError):
        set_avoid(folder, {"words": ["other"], "shared": []})
    monkeypatch.undo()
    assert (folder / AVOID_FILE).read_text("utf-8") == before
    assert sorted(p.name for p in folder.iterdir()) == sorted(["model.keras", "vocab.json", "card.json", AVOID_FILE])
    assert read_model_folder(folder).avoid == entry


def test_a_fine_tunes_list_is_its_bases_less_its_own_words_as_if_made_afresh() -> None:
    library = {"pet", "petal", "pets", "bench", "bend", "the", "on", "benny", "ozone", "pete", "peter"}
    base = avoid_entry({"peter", "ben", "oz", "pete", "benjamin"}, library)
    own = ["the", "ben", "went", "to", "benjy", "oz", "zone"]
    inherited = inherit_avoid(base, own)
    assert inherited == avoid_entry({"peter", "pete", "benjamin"}, library, own)
    assert inherited["words"] == ["benjamin", "pete", "peter"]
    guard = WordGuard.build(inherited, VOCAB)
    assert _refused(guard, " o") == set()  # "oz" is now the corpus's own word
    assert _refused(guard, " ben") == set(ascii_lowercase) - {"c", "d", "j", "n"}  # "ben" may end now
    assert _refused(guard, " benj") == set(ascii_lowercase) - {"y"}  # "benjy", never "benjamin"
    assert inherit_avoid(base, []) == base


def test_a_fine_tune_of_a_guarded_model_is_guarded_but_may_write_its_corpus_words(guarded_folder, tmp_path) -> None:
    folder, entry = guarded_folder
    kept, *dropped = entry["words"]
    text = re.sub(rf"\b({'|'.join(dropped)})\b", "", make_text(8_000, seed=3), flags=re.IGNORECASE)
    text += f"\nThe {kept} said so. " * 20  # the upload writes one of the avoided words
    corpus = tmp_path / "upload.txt"
    corpus.write_text(text, "utf-8")
    assert kept in words(text) and not set(dropped) & set(words(text))

    outcome = finetune(corpus, folder, tmp_path / "tuned", TrainConfig(epochs=1, batch_size=16))
    tuned = read_model_folder(outcome.folder)
    assert tuned.avoid == {**inherit_avoid(entry, words(text)), "corpus": "upload.txt", "inherited_from": "tiny"}
    assert tuned.avoid["words"] == sorted(dropped)
    assert outcome.card["base"]["avoid"] == {"words": len(dropped), "released": [kept]}
    gen = Generator.from_folder(outcome.folder, "numpy", SERVING_PRECISION)
    assert gen.guard is not None and gen.guard.words == len(dropped)
    assert not set(_written(gen.generate(list(_windows(gen.vocab)), _settings()))) & set(dropped)

    plain = finetune(corpus, tiny_model_copy(folder, tmp_path), tmp_path / "plain", TrainConfig(epochs=1, batch_size=16))
    assert not (plain.folder / AVOID_FILE).exists() and "avoid" not in plain.card["base"]


def tiny_model_copy(folder: Path, tmp_path: Path) -> Path:
    """The guarded folder without its avoid list."""
    plain = Path(shutil.copytree(folder, tmp_path / "unguarded"))
    (plain / AVOID_FILE).unlink()
    return plain


def test_a_model_folder_whose_avoid_list_fails_to_write_is_not_saved(guarded_folder, tmp_path) -> None:
    folder, entry = guarded_folder
    saved = load_model_folder(folder)
    target = Path(shutil.copytree(folder, tmp_path / "target"))
    broken = {**entry, "words": set(entry["words"])}  # json cannot write a set: it fails at avoid.json
    with pytest.raises(TypeError):
        save_model_folder(saved.model, saved.vocab, saved.card, target, broken)
    assert read_model_folder(target).avoid == entry  # the folder that was there is untouched
    with pytest.raises(TypeError):
        save_model_folder(saved.model, saved.vocab, saved.card, tmp_path / "new", broken)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["target", "tiny"]  # no half-written folder, no .tmp
    save_model_folder(saved.model, saved.vocab, saved.card, tmp_path / "new", entry)
    assert json.loads((tmp_path / "new" / AVOID_FILE).read_text("utf-8")) == entry


def test_eval_guarded_scores_the_distribution_as_served(guarded_folder, tmp_path, capsys) -> None:
    """Held-out text the guard never refuses is only likelier as served; text that writes an
    avoided word has no served score, and says so in one line."""
    from charlm.cli import main
    from charlm.corpus import load_corpus
    from charlm.evaluate import evaluate
    from charlm.generate import choose_backend

    folder, entry = guarded_folder
    avoided = "|".join(entry["words"])
    clean = tmp_path / "clean.txt"
    clean.write_text(re.sub(rf"\b({avoided})\b", "", make_text(6_000, seed=5), flags=re.IGNORECASE), "utf-8")
    saved = read_model_folder(folder)
    scorer = choose_backend(saved.weights, "numpy", "fp32")
    ids = saved.vocab.encode(load_corpus(clean, saved.vocab.lowercase).text).ids
    guard = WordGuard.build(entry, saved.vocab)
    alone, served = evaluate(scorer, ids), evaluate(scorer, ids, guard=guard)
    assert served.chars == alone.chars and served.nats_per_char < alone.nats_per_char

    assert main(["eval", str(clean), "--model", str(folder), "--guarded"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["guarded"] is True and shown["bits_per_char"] < json.loads(
        (main(["eval", str(clean), "--model", str(folder)]), capsys.readouterr().out)[1])["bits_per_char"]

    named = tmp_path / "named.txt"
    named.write_text(clean.read_text("utf-8") + f" and then {entry['words'][-1]} said so.", "utf-8")
    assert main(["eval", str(named), "--model", str(folder), "--guarded"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: the text writes a word the style avoids") and err.count("\n") == 1
    (folder / AVOID_FILE).unlink()
    assert main(["eval", str(clean), "--model", str(folder), "--guarded"]) == 1
    assert "has no avoid.json" in capsys.readouterr().err
