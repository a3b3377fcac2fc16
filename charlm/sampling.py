"""Per-row sampling settings and the numpy sampler shared by every backend's host side."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from charlm.errors import CharLMError
from charlm.kernels import sample_rows

MAX_LENGTH = 10_000


@dataclass(frozen=True)
class Sampling:
    """How one prompt is continued. temperature 0 is the recipe's argmax."""

    temperature: float = 0.8
    top_k: int = 0  # 0: no limit
    top_p: float = 1.0  # 1: no limit
    seed: int | None = None  # None: fresh randomness
    length: int = 400

    def __post_init__(self) -> None:
        if not 0.0 <= self.temperature <= 10.0:
            raise CharLMError(f"temperature must be between 0 and 10, got {self.temperature}")
        if self.top_k < 0:
            raise CharLMError(f"top-k must be 0 (off) or positive, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise CharLMError(f"top-p must be in (0, 1], got {self.top_p}")
        if not 1 <= self.length <= MAX_LENGTH:
            raise CharLMError(f"length must be between 1 and {MAX_LENGTH}, got {self.length}")

    def rng(self) -> np.random.Generator:
        return np.random.default_rng(self.seed)


@dataclass
class RowParams:
    """Sampling settings of a batch as arrays, one entry per row, and where each row
    stands in the word guard's automaton (it moves on with every draw)."""

    temperature: np.ndarray  # (B,) float32
    top_k: np.ndarray  # (B,) int32, vocabulary size where unlimited
    top_p: np.ndarray  # (B,) float32
    words: np.ndarray | None = None  # (B,) where each row is in the word it writes (charlm.word_guard), if guarded

    @classmethod
    def of(cls, settings: list[Sampling], vocab_size: int) -> "RowParams":
        return cls(
            np.array([s.temperature for s in settings], dtype=np.float32),
            np.array([s.top_k if s.top_k else vocab_size for s in settings], dtype=np.int32),
            np.array([s.top_p for s in settings], dtype=np.float32),
        )

    def take(self, rows: np.ndarray) -> "RowParams":
        return RowParams(self.temperature[rows], self.top_k[rows], self.top_p[rows],
                         None if self.words is None else self.words[rows])

    @staticmethod
    def concat(parts: list["RowParams"]) -> "RowParams":
        guarded = parts[0].words is not None
        return RowParams(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("temperature", "top_k", "top_p")),
                         np.concatenate([p.words for p in parts]) if guarded else None)


def sample(logits: np.ndarray, params: RowParams, uniforms: np.ndarray,
           out: np.ndarray | None = None) -> np.ndarray:
    """One character id per row: argmax where temperature is 0, else a draw from the
    temperature-scaled distribution cut to the row's top-k and top-p (the exact rule is
    in `charlm.kernels.sample_rows`; `charlm.tf_lstm.tf_sample` is its TensorFlow twin).

    `uniforms` (one U[0,1) number per row, from the row's own generator) makes the draw
    a deterministic function of the seed, whatever else shares the batch. `out`: a
    contiguous int32 array to write the ids into (the generation loop's own buffer).
    """
    out = np.empty(logits.shape[0], np.int32) if out is None else out
    sample_rows(logits, params.temperature, params.top_k, params.top_p, uniforms, out)
    return out
