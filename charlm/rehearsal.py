"""Library passages with their names swapped for the style's own, to fine-tune beside the style.

A fine-tune on a small text keeps much of what the base learned from its library,
its characters included: asked to go on, alice may write of "the scarecrow". Passages of
the library where its names stand, with each of those names replaced by one of the
style's own (in one passage "dorothy" becomes "hatter" wherever it stands), teach the
model that in this style those places hold this style's names. They are library text, so
they also keep a small text from being learned by heart.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from charlm.corpus import load_corpus
from charlm.names import WORD, foreign_names, library_names, words


@dataclass(frozen=True)
class Rehearsal:
    """The renamed passages, and what went into them (for the card)."""

    text: str
    passages: int
    names_replaced: int
    own_names: tuple[str, ...]

    def to_json(self) -> dict:
        return {"chars": len(self.text), "passages": self.passages, "names_replaced": self.names_replaced,
                "own_names": list(self.own_names)}


def own_names(corpus_text_with_case: str) -> list[str]:
    """The names the style's own corpus uses (read with its case), likeliest first."""
    names = library_names([corpus_text_with_case], min_count=3)
    counts = Counter(w for w in words(corpus_text_with_case) if w in names)
    return sorted(names, key=lambda w: (-counts[w], w))


def renamed_passages(library_text: str, foreign: set[str], own: Sequence[str], chars: int, *,
                     size: int = 400, seed: int = 0) -> Rehearsal:
    """About `chars` characters of lowercase library passages of about `size` characters,
    each around a place where a foreign name stands (so the names that appear most often in
    the library, the likeliest to leak, appear most often here), every foreign name in a
    passage replaced by one own name chosen at random for that passage."""
    if not own:
        return Rehearsal("", 0, 0, ())
    text = library_text.lower()
    places = [m.start() for m in WORD.finditer(text) if m.group() in foreign]
    if not places or chars <= 0:
        return Rehearsal("", 0, 0, tuple(own))
    rng = np.random.default_rng(seed)
    parts: list[str] = []
    total = replaced = 0
    for place in rng.permutation(places):
        if total >= chars:
            break
        start = text.rfind(" ", 0, max(0, place - size // 2)) + 1
        end = text.find(" ", min(len(text), place + size // 2))
        passage = text[start : end if end != -1 else len(text)].strip()
        mapping: dict[str, str] = {}

        def swap(match: re.Match) -> str:
            nonlocal replaced
            word = match.group()
            if word not in foreign:
                return word
            replaced += 1
            return mapping.setdefault(word, str(own[int(rng.integers(len(own)))]))

        parts.append(WORD.sub(swap, passage))
        total += len(parts[-1]) + 2
    return Rehearsal("\n\n".join(parts), len(parts), replaced, tuple(own))


def rehearsal_for(own_text_with_case: str, library: Sequence[str | Path], chars: int, seed: int = 0) -> Rehearsal:
    """Renamed passages of the library folders for a style whose (training) text is given."""
    books = [load_corpus(folder, lowercase=False).text for folder in library]
    foreign = foreign_names(library_names(books), own_text_with_case)
    return renamed_passages("\n\n".join(books), foreign, own_names(own_text_with_case), chars, seed=seed)
