"""The model's characters, and the one function that turns a prompt into its window."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from charlm import WINDOW
from charlm.corpus import normalise
from charlm.errors import CharLMError

PAD_CHAR = " "
"""Left padding for short prompts in folders that do not name their own (`vocab.json`'s
"pad", chosen by measurement when a model is trained: charlm.padding)."""


@dataclass(frozen=True)
class Encoded:
    """Ids of a text mapped onto a vocabulary, and what could not be mapped."""

    ids: np.ndarray
    dropped: Counter[str] = field(default_factory=Counter)

    @property
    def dropped_count(self) -> int:
        return sum(self.dropped.values())


@dataclass(frozen=True)
class PromptWindow:
    """A prompt as the model sees it: exactly `size` ids, plus how it got there."""

    ids: np.ndarray
    text: str  # the window decoded back, padding included
    padded: int  # pad characters added on the left
    cut: int  # characters cut from the front of a long prompt
    dropped: Counter[str]  # characters the vocabulary cannot represent

    @property
    def prompt_text(self) -> str:
        """The part of the window that came from the user (no padding)."""
        return self.text[self.padded :]


class Vocabulary:
    """Sorted characters of a training text; id i is the i-th character."""

    def __init__(self, chars: list[str] | str, lowercase: bool = True, pad: str = PAD_CHAR) -> None:
        chars = list(chars)
        if len(chars) < 2 or len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars):
            raise CharLMError("a vocabulary needs at least 2 distinct single characters")
        self.chars: list[str] = chars
        self.lowercase = lowercase
        self.index: dict[str, int] = {c: i for i, c in enumerate(chars)}
        if pad != PAD_CHAR and pad not in self.index:
            raise CharLMError(f"the padding character {pad!r} is not one of the vocabulary's characters")
        self.pad = pad  # the character short prompts are left-padded with
        self.pad_id = self.index.get(pad, self.index.get(PAD_CHAR, 0))

    def with_pad(self, pad: str) -> "Vocabulary":
        """The same characters, padding short prompts with `pad` (one of them)."""
        return Vocabulary(self.chars, self.lowercase, pad)

    @classmethod
    def from_text(cls, text: str, lowercase: bool = True) -> "Vocabulary":
        return cls(sorted(set(text)), lowercase)

    def __len__(self) -> int:
        return len(self.chars)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.chars == other.chars

    def encode(self, text: str) -> Encoded:
        """Normalise like training text, map what the vocabulary has, drop the rest."""
        text = normalise(text)
        if self.lowercase:
            text = text.lower()
        ids = [self.index.get(c, -1) for c in text]
        dropped = Counter(c for c, i in zip(text, ids) if i < 0)
        return Encoded(np.array([i for i in ids if i >= 0], dtype=np.int32), dropped)

    def decode(self, ids: np.ndarray | list[int]) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def window(self, prompt: str, size: int = WINDOW) -> PromptWindow:
        """The prompt encoded, then cut to its last `size` characters or left-padded.

        This is the single place a prompt becomes model input; the bot and CLI use it.
        """
        encoded = self.encode(prompt)
        ids = encoded.ids[-size:]
        cut = len(encoded.ids) - len(ids)
        padded = size - len(ids)
        ids = np.concatenate([np.full(padded, self.pad_id, dtype=np.int32), ids])
        return PromptWindow(ids, self.decode(ids), padded, cut, encoded.dropped)

    def to_json(self) -> dict:
        return {"chars": self.chars, "lowercase": self.lowercase, "pad": self.pad}

    def save(self, path: Path) -> None:
        path.write_text(self.to_text(), "utf-8")

    def to_text(self) -> str:
        return json.dumps(self.to_json(), ensure_ascii=False, indent=1)

    @classmethod
    def load(cls, path: Path) -> "Vocabulary":
        try:
            data = json.loads(path.read_text("utf-8"))
            return cls(data["chars"], bool(data.get("lowercase", True)), str(data.get("pad", PAD_CHAR)))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CharLMError(f"{path} is not a valid vocabulary file ({exc.__class__.__name__})") from None
