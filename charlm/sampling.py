"""Per-row sampling settings and the numpy sampler shared by every backend's host side."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from charlm.errors import CharLMError

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
    """Sampling settings of a batch as arrays, one entry per row."""

    temperature: np.ndarray  # (B,) float32
    top_k: np.ndarray  # (B,) int32, vocabulary size where unlimited
    top_p: np.ndarray  # (B,) float32

    @classmethod
    def of(cls, settings: list[Sampling], vocab_size: int) -> "RowParams":
        return cls(
            np.array([s.temperature for s in settings], dtype=np.float32),
            np.array([s.top_k if s.top_k else vocab_size for s in settings], dtype=np.int32),
            np.array([s.top_p for s in settings], dtype=np.float32),
        )

    def take(self, rows: np.ndarray) -> "RowParams":
        return RowParams(self.temperature[rows], self.top_k[rows], self.top_p[rows])

    @staticmethod
    def concat(parts: list["RowParams"]) -> "RowParams":
        return RowParams(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("temperature", "top_k", "top_p")))


def sample(logits: np.ndarray, params: RowParams, uniforms: np.ndarray) -> np.ndarray:
    """One character id per row: argmax where temperature is 0, else a draw from the
    temperature-scaled distribution cut to the row's top-k and top-p.

    `uniforms` (one U[0,1) number per row, from the row's own generator) makes the draw
    a deterministic function of the seed, whatever else shares the batch.
    """
    if logits.shape[0] == 1:  # one stream: the same arithmetic on 1-D arrays, fewer numpy calls
        t, k, p, u = params.temperature[0], params.top_k[0], params.top_p[0], uniforms[0]
        return np.array([_sample_row(logits[0], t, k, p, u) if t > 0 else np.argmax(logits[0])], np.int32)
    out = np.argmax(logits, axis=1).astype(np.int32)
    rows = np.flatnonzero(params.temperature > 0)
    if rows.size == 0:
        return out
    z = logits[rows].astype(np.float64) / params.temperature[rows, None]
    order = np.argsort(-z, axis=1, kind="stable")
    z = np.take_along_axis(z, order, axis=1)
    p = np.exp(z - z[:, :1])
    p /= p.sum(axis=1, keepdims=True)
    rank = np.arange(z.shape[1])[None, :]
    keep = (rank < params.top_k[rows, None]) & ((np.cumsum(p, axis=1) - p) < params.top_p[rows, None])
    cdf = np.cumsum(np.where(keep, p, 0.0), axis=1)
    idx = (cdf < uniforms[rows, None] * cdf[:, -1:]).sum(axis=1)
    idx = np.minimum(idx, keep.sum(axis=1) - 1)
    out[rows] = order[np.arange(rows.size), idx]
    return out


def _sample_row(logits: np.ndarray, temperature: float, top_k: int, top_p: float, uniform: float) -> int:
    """`sample` for one row with temperature > 0: bit for bit the same result.

    Works on the negated scaled logits (negation is exact, so the stable ascending sort
    and the differences are those of `sample`), skips the second cumsum when every
    character is kept, and counts with a binary search on the non-decreasing cdf.
    """
    neg = logits.astype(np.float64)
    neg /= -temperature
    order = np.argsort(neg, kind="stable")
    neg = neg[order]
    p = np.exp(neg[0] - neg)
    p /= p.sum()
    cdf = np.cumsum(p)
    keep = (cdf - p) < top_p
    keep[top_k:] = False
    kept = np.count_nonzero(keep)
    if kept < len(keep):
        cdf = np.cumsum(np.where(keep, p, 0.0))
    idx = min(int(cdf.searchsorted(uniform * cdf[-1])), kept - 1)
    return int(order[idx])
