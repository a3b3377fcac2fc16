"""How often a model writes names from other books: the pretraining library leaking into a style.

A model fine-tuned from a base pretrained on many books may bring their characters
along ("the shaggy man" of Oz walking into Wonderland). The models are lowercase, so a
name cannot be told from its spelling in the output; it is told from the library, which
is read with its case kept: a *name* is a word that, where it stands inside a sentence
(not after `.`, `!`, `?`, a quote, a colon or a line break, where any word may be
capitalised), is written with a capital at least `capital_share` of the time, and at
least `min_count` times. A name is *foreign* to a model when its own corpus never uses
the word at all. The measure is foreign names per 10,000 generated characters, over
samples continuing evenly spaced windows of the model's held-out text.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from charlm.generate import Generator
from charlm.sampling import Sampling

WORD = re.compile(r"[A-Za-z]+")
"""A word: a run of letters ("alice's" is "alice" and "s"); charlm.rehearsal and charlm.word_guard count the same."""
_SENTENCE_START = set(".!?\"':;\n([")
NOT_NAMES = frozenset({
    "i",
    "mr", "mrs", "ms", "dr", "st",
    "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday",
    "january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
    "november", "december",
    "english", "french", "german", "dutch", "spanish", "italian", "latin", "greek", "scotch", "irish",
    "welsh", "swedish", "norwegian", "danish", "russian", "chinese", "japanese", "american", "european",
})
"""Words capitalised by rule (the pronoun, titles, days, months, languages and peoples), not
because they name someone or somewhere in a book: a style may use them without borrowing."""


def words(text: str) -> list[str]:
    """The lowercase words of a text (runs of letters; "alice's" is "alice" and "s")."""
    return WORD.findall(text.lower())


def _mid_sentence(text: str, start: int) -> bool:
    """Whether the word starting at `start` follows another word within its sentence."""
    i = start - 1
    while i >= 0 and text[i] in " \t":
        i -= 1
    return i >= 0 and text[i] not in _SENTENCE_START


def library_names(texts: Iterable[str], *, min_count: int = 5, capital_share: float = 0.9) -> set[str]:
    """Lowercase words the texts (read with their case) write as names: capitalised in at
    least `capital_share` of at least `min_count` mid-sentence uses."""
    capital: Counter[str] = Counter()
    uses: Counter[str] = Counter()
    for text in texts:
        for match in WORD.finditer(text):
            if not _mid_sentence(text, match.start()):
                continue
            word = match.group()
            if len(word) > 1 and word.isupper():
                continue  # set in capitals (a heading, a shout): says nothing either way
            lower = word.lower()
            uses[lower] += 1
            capital[lower] += word[0].isupper()
    return {w for w, n in uses.items()
            if n >= min_count and capital[w] >= capital_share * n and w not in NOT_NAMES}


def foreign_names(library: set[str], own_text: str) -> set[str]:
    """The library's names that the model's own corpus never uses, in any case."""
    return library - set(words(own_text))


def lexicon(texts: Iterable[str], min_count: int = 2) -> set[str]:
    """The words the texts use at least `min_count` times: what a style may write
    (charlm.word_guard keeps foreign names out of it; the measure counts words outside it)."""
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(words(text))
    return {w for w, n in counts.items() if n >= min_count}


@dataclass
class ForeignNameRate:
    """Foreign names per 10,000 generated characters, and which ones were written."""

    per_10k_chars: float
    chars: int
    found: Counter[str] = field(default_factory=Counter)
    samples: int = 0
    length: int = 0
    temperatures: tuple[float, ...] = ()
    names_known: int = 0
    unknown_per_10k_chars: float | None = None  # words outside the lexicon, when one was given

    def to_json(self) -> dict:
        unknown = {} if self.unknown_per_10k_chars is None else {
            "unknown_words_per_10k_chars": round(self.unknown_per_10k_chars, 1)}
        return {"per_10k_chars": round(self.per_10k_chars, 2), "chars": self.chars,
                "found": dict(self.found.most_common(20)), "samples": self.samples, "length": self.length,
                "temperatures": list(self.temperatures), "foreign_names_known": self.names_known, **unknown}


def _last_word(text: str) -> str:
    """The letters `text` ends in: its last word, when nothing follows it ("" after a space)."""
    return re.search(r"[A-Za-z]*$", text).group()


def written_words(prompt: str, sample: str) -> list[str]:
    """The words the model wrote whole after `prompt`. A word the prompt ends in may run
    on into the sample: it is judged whole, and only kept if the model added to it. A
    word the sample's length cuts off ("thi" of "this") is not judged at all."""
    tail = _last_word(prompt).lower()
    generated = words(tail + sample)
    if tail and generated and generated[0] == tail:
        generated = generated[1:]
    if generated and sample[-1:].isalpha():
        generated = generated[:-1]
    return generated


def count_foreign(prompt: str, sample: str, foreign: set[str]) -> Counter[str]:
    """The foreign names among the words the model wrote after `prompt`."""
    return Counter(w for w in written_words(prompt, sample) if w in foreign)


def heldout_prompts(heldout_text: str, n: int = 20, size: int = 100) -> list[str]:
    """`n` evenly spaced windows of the held-out text, `size` characters or a little less:
    each ends where a word ends, as a user's message does (a prompt cut inside "lizard"
    would end on the name "liza", which the word guard takes as the user's own)."""
    last = max(0, len(heldout_text) - size)
    prompts = []
    for i in range(n):
        start = last * i // max(1, n - 1)
        prompt = heldout_text[start : start + size]
        if heldout_text[start + size : start + size + 1].isalpha():  # cut inside a word: leave it out
            prompt = prompt[: len(prompt) - len(_last_word(prompt))]
        prompts.append(prompt)
    return prompts


def foreign_name_rate(gen: Generator, foreign: set[str], prompts: Sequence[str], *,
                      temperatures: Sequence[float] = (0.5, 0.8), length: int = 400,
                      seed: int = 0, known: set[str] | None = None) -> ForeignNameRate:
    """Sample `length` characters per prompt at each temperature (seeded) and count the
    generated words in `foreign`; the prompt's own words are not counted. `known`: a
    lexicon (with the names), to also count the words outside it that the model made up
    (what a guard that steered it badly would raise)."""
    windows = [gen.vocab.window(p).ids for p in prompts]
    found: Counter[str] = Counter()
    chars = unknown = 0
    for t_index, temperature in enumerate(temperatures):
        settings = [Sampling(temperature=temperature, seed=seed + 1000 * t_index + i, length=length)
                    for i in range(len(prompts))]
        for prompt, sample in zip(prompts, gen.generate(windows, settings)):
            chars += len(sample)
            written = written_words(prompt, sample)
            found.update(w for w in written if w in foreign)
            if known is not None:
                unknown += sum(w not in known for w in written)
    per_10k = (lambda n: 10_000 * n / chars if chars else 0.0)
    return ForeignNameRate(per_10k(sum(found.values())), chars, found, len(prompts) * len(temperatures),
                           length, tuple(temperatures), len(foreign), None if known is None else per_10k(unknown))
