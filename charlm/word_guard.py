"""Words a model may not write: the library's names kept out of a style as it samples.

A style fine-tuned from a library-pretrained base still gives the library's names some
probability ("peter", "woodman"); charlm.names counts how often they come out. A model
folder may carry `avoid.json`, written by `charlm names --write`: the names foreign to
its corpus, and the beginnings of ordinary words (words the library or the corpus uses)
that the rules below need. Serving then steers every draw around the names, like a
tokenizer model's banned words, but per character:

* a letter is refused when the word it would begin is the start of an avoided name and
  of no ordinary word ("pet" may be written, since "petal" and "pets" are words; "pete"
  may not, when the only word it begins is "peter");
* once a word has begun as HELD or more letters of a name, every letter must keep it an
  ordinary word's beginning ("woodm" goes on to "woodmen", never to "woodmin");
* a word may not end on an avoided name ("ben" may only go on into "bench", "bend", ...),
  and a name's plural is no ordinary word ("peters", "scarecrows").

So the model's next most likely characters write an ordinary word in the name's place;
nothing already written is taken back, which keeps streaming and seeds as they are.
A prompt that itself writes one of the names turns the guard off for that reply (the
user brought the name in, and expects it back).
The rules are a finite automaton over the characters of the vocabulary (`WordGuard`):
each row carries one state (where it is in the word it is writing), each step masks the
row's refused characters and moves the state on the drawn one, two table lookups.
A word is a run of letters a-z, as charlm.names counts them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from charlm.errors import CharLMError
from charlm.vocab import Vocabulary

AVOID_FILE = "avoid.json"
BOUNDARY, FREE = 0, 1
"""Guard states: after a non-letter (a word may start), and inside a word that is no avoided
name's beginning (nothing to refuse until it ends). States from 2 are avoided names' beginnings."""
HELD = 3
"""Letters of a name's beginning from which a word is held to ordinary words' beginnings."""
REFUSED = np.float32(-1e30)
"""A refused character's logit: no temperature, top-k or top-p cut can draw it."""


def _is_letter(ch: str) -> bool:
    return "a" <= ch <= "z"


def _beginnings(words: Iterable[str]) -> set[str]:
    return {w[:k] for w in words for k in range(1, len(w) + 1)}


def _plain_words(words: Iterable[str]) -> set[str]:
    """The words made of letters a-z only: the only ones the guard's states can spell."""
    return {w for w in words if w and all(_is_letter(c) for c in w)}


def _shared(avoided: set[str], ordinary_beginnings: set[str]) -> list[str]:
    """The ordinary beginnings the guard needs: a name's beginning, a letter past a whole
    name ("ben" -> "benc"), or a letter past HELD or more letters of a name's beginning."""
    beginnings = _beginnings(avoided)
    return sorted(p for p in ordinary_beginnings
                  if p in beginnings or p[:-1] in avoided or (len(p) > HELD and p[:-1] in beginnings))


def avoid_entry(avoided: Iterable[str], lexicon: Iterable[str], own: Iterable[str] = ()) -> dict:
    """What `avoid.json` holds: the avoided words, and `shared`: the beginnings of ordinary
    words that the guard may let a word pass through. Ordinary are the words of `lexicon`
    (the library's) that are no avoided word or its plural, and every word of `own` (the
    style's corpus: its "normans" is ordinary though "norman" is avoided)."""
    avoided = _plain_words(avoided)
    ordinary = {w for w in lexicon if w.isalpha() and w not in avoided and not (w[-1] == "s" and w[:-1] in avoided)}
    ordinary |= {w for w in own if w.isalpha() and w not in avoided}
    return {"words": sorted(avoided), "shared": _shared(avoided, _beginnings(ordinary))}


def inherit_avoid(entry: Mapping, own_words: Iterable[str]) -> dict:
    """A fine-tune's avoid list: its base's, less the words of its own corpus (a story about
    a Peter may write "peter"), with those words ordinary. This needs no library: fewer
    avoided words need fewer shared beginnings, so the base's `shared` plus the corpus's
    words' beginnings hold every one needed. (One difference from a list made afresh with
    the library: a released name's plural is ordinary only if the corpus writes it.)"""
    own = _plain_words(own_words)
    avoided = set(entry["words"]) - own
    shared = _shared(avoided, set(entry["shared"]) | _beginnings(own))
    return {**entry, "words": sorted(avoided), "shared": shared}


@dataclass(frozen=True)
class WordGuard:
    """The automaton: `refuse[s]` masks the characters state `s` may not draw,
    `next[s, c]` is the state after drawing `c`."""

    refuse: np.ndarray  # (states, vocab) bool
    next: np.ndarray  # (states, vocab) int16 (int32 past 32,767 states)
    words: int  # how many words it avoids
    whole: np.ndarray  # (states,) bool: the state is a whole avoided word
    letter: np.ndarray  # (vocab,) bool: the character is a letter a-z
    off: int  # the state of a row whose prompt wrote an avoided word: refuses nothing, stays

    @classmethod
    def build(cls, entry: Mapping, vocab: Vocabulary) -> "WordGuard":
        avoided, shared = set(entry["words"]), set(entry["shared"])
        beginnings = sorted(_beginnings(avoided))
        state_of = {"": BOUNDARY, **{p: i + 2 for i, p in enumerate(beginnings)}}
        chars = [vocab.chars[i].lower() for i in range(len(vocab))]
        size = len(state_of) + 2  # and FREE, and the last: off
        refuse = np.zeros((size, len(vocab)), bool)
        nxt = np.full((size, len(vocab)), FREE, np.int16 if size <= np.iinfo(np.int16).max else np.int32)
        letters = np.array([_is_letter(c) for c in chars])
        nxt[:, ~letters] = BOUNDARY
        for prefix, s in state_of.items():
            whole = prefix in avoided
            held = whole or len(prefix) >= HELD  # a letter leaving the names' beginnings must begin an ordinary word
            for c, ch in enumerate(chars):
                if not letters[c]:
                    refuse[s, c] = whole
                    continue
                word = prefix + ch
                if word in state_of:
                    nxt[s, c] = state_of[word]
                refuse[s, c] = (word in state_of or held) and word not in shared
        refuse[refuse.all(axis=1)] = False  # never a state with nothing left to draw (a prompt ending "pete" of "peter")
        refuse[FREE] = False
        off = size - 1
        refuse[off], nxt[off] = False, off
        whole = np.zeros(size, bool)
        whole[[s for p, s in state_of.items() if p in avoided]] = True
        return cls(refuse, nxt, len(avoided), whole, letters, off)

    def start(self, windows: np.ndarray) -> np.ndarray:
        """Each window's state after reading it (batch, time): where its last word stands,
        or `off` where the window wrote a whole avoided word (ending it, or ending on it).
        A window's first word is not judged: a long prompt cut to the window may begin
        inside a word ("liza" of "lizard")."""
        states = np.full(len(windows), FREE, self.next.dtype)
        named = np.zeros(len(windows), bool)
        for column in np.asarray(windows, np.int64).T:
            named |= self.whole[states] & ~self.letter[column]
            states = self.next[states, column]
        named |= self.whole[states]
        states[named] = self.off
        return states

    def mask(self, logits: np.ndarray, states: np.ndarray) -> None:
        """Set each row's refused characters to REFUSED, in place."""
        np.putmask(logits, self.refuse[states], REFUSED)

    def step(self, states: np.ndarray, ids: np.ndarray) -> np.ndarray:
        return self.next[states, ids]


def read_avoid(folder: str | Path) -> dict | None:
    """The folder's `avoid.json`, or None when it has none; a damaged file is a one-line error."""
    path = Path(folder) / AVOID_FILE
    try:
        entry = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise CharLMError(f"{path} is unreadable ({exc.__class__.__name__})") from None
    if not (isinstance(entry, dict) and isinstance(entry.get("words"), list) and isinstance(entry.get("shared"), list)):
        raise CharLMError(f"{path} is not an avoid list: it needs \"words\" and \"shared\" lists")
    return entry
