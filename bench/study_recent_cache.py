"""Would a cache of the recent text close issue 21's held-out gap, and could it be served?

    python -m bench.study_recent_cache [--window 500] [--replies 24]

Compressors such as paq8px mix a match model into their predictions: where the last few
characters occurred before, the character that followed then is likely again. Seuss repeats
itself (refrains, "sam-i-am"), and paq8px beats our Seuss on its held-out tenth. This study
mixes such a cache into the served distribution of the shipped models (int8, word guard on):

    p(next) = (1 - lam) * p_lstm + lam * q_recent

q_recent: the characters that followed the longest match of the current suffix (1 to 32
characters, bucketed) within the last `--window` characters; lam = sigmoid(w . [1, log2
match, log2 count, log(recent hit rate + 0.02)]), the hit rate an average of q_recent's
probability of the characters that came (decay 0.9). w is fitted once, on the library's held
out text scored by storybook (text none of the models trained on), never on a style's own.

It prints held-out bits/char of each style with and without the cache, and, for 24 replies of
400 characters sampled at temperature 0.8 from held-out prompts, the share of each reply's
20-character strings that repeat one earlier in its prompt or reply, beside the same share in
the real text that follows those prompts. A cache that gains bits/char but makes replies
repeat themselves is not one to serve.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from charlm.corpus import load_corpus  # noqa: E402
from charlm.evaluate import log_softmax, sequence_logits, steered  # noqa: E402
from charlm.generate import choose_backend  # noqa: E402
from charlm.storage import read_model_folder  # noqa: E402
from charlm.word_guard import WordGuard  # noqa: E402

CORPORA = ROOT.parent / "shared" / "corpora"
STYLES = {"alice": CORPORA / "alice.txt", "seuss": CORPORA / "seuss.txt"}
LENGTHS = np.array([1, 2, 3, 4, 6, 8, 12, 16, 24, 32])  # match-length buckets
DECAY = 0.9
LIBRARY_CHUNKS, CHUNK, WARMUP = 32, 3256, 256
REPEAT = 20  # characters in a repeated string


def recent_match(history: np.ndarray, window: int, vocab_size: int) -> tuple[int, int, np.ndarray] | None:
    """(match length bucket, matches, q) for the character after `history`, from its last
    `window` characters: q is the distribution of what followed the longest match's bucket."""
    s = history[-window:]
    end = len(s) - 1
    if end < 1:
        return None
    length = (s[:end] == s[end]).astype(np.int32)  # length[j]: common suffix of s[..j] and s[..end]
    alive = np.flatnonzero(length)
    k = 1
    while len(alive) and k < LENGTHS[-1]:
        alive = alive[alive - k >= 0]
        alive = alive[s[alive - k] == s[end - k]]
        length[alive] += 1
        k += 1
    longest = int(length.max())
    if longest == 0:
        return None
    bucket = int(LENGTHS[np.searchsorted(LENGTHS, longest, side="right") - 1])
    at = np.flatnonzero(length >= bucket)
    return bucket, len(at), np.bincount(s[at + 1], minlength=vocab_size) / len(at)


class RecentCache:
    """The cache's state along one text: its features at each position, and the hit rate."""

    def __init__(self, window: int, vocab_size: int) -> None:
        self.window, self.vocab_size, self.hit_rate, self.last = window, vocab_size, 0.0, None

    def features(self, history: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """([1, log2 match, log2 count, log hit rate], q) for the next character, or None."""
        self.last = recent_match(history, self.window, self.vocab_size)
        if self.last is None:
            return None
        bucket, count, q = self.last
        return np.array([1.0, math.log2(bucket), math.log2(count), math.log(self.hit_rate + 0.02)]), q

    def saw(self, char: int) -> None:
        hit = 0.0 if self.last is None else float(self.last[2][char])
        self.hit_rate = DECAY * self.hit_rate + (1 - DECAY) * hit


def cache_rows(ids: np.ndarray, start: int, window: int, vocab_size: int):
    """(features, q at the target, has a match) for predicting ids[t + 1], t >= start - 1."""
    cache = RecentCache(window, vocab_size)
    feats, q_target, has = [], [], []
    for t in range(len(ids) - 1):
        f = cache.features(ids[: t + 1])
        if t >= start - 1:
            has.append(f is not None)
            feats.append(f[0] if f else np.zeros(4))
            q_target.append(f[1][ids[t + 1]] if f else 0.0)
        cache.saw(int(ids[t + 1]))
    return np.array(feats), np.array(q_target), np.array(has)


def mixing(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x @ w))


def fit(x: np.ndarray, p: np.ndarray, q: np.ndarray, steps: int = 3000) -> np.ndarray:
    """w minimising -log((1 - lam) p + lam q), by Adam."""
    w = np.array([-3.0, 0.0, 0.0, 0.0])
    m, v = np.zeros(4), np.zeros(4)
    for i in range(1, steps + 1):
        lam = mixing(x, w)
        g = x.T @ (-(q - p) * lam * (1 - lam) / ((1 - lam) * p + lam * q)) / len(x)
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        w -= 0.05 * (m / (1 - 0.9**i)) / (np.sqrt(v / (1 - 0.999**i)) + 1e-8)
    return w


def bits(p: np.ndarray) -> float:
    return float(-np.log(p).mean() / math.log(2))


def fit_on_library(window: int) -> np.ndarray:
    folder = ROOT / "weights" / "storybook"
    saved = read_model_folder(folder)
    stepper = choose_backend(saved.weights, "numpy", "int8")
    library = load_corpus(CORPORA / "pretrain", saved.vocab.lowercase)
    heldout = saved.vocab.encode(library.split(0.1)[1]).ids
    starts = np.linspace(0, len(heldout) - CHUNK, LIBRARY_CHUNKS).astype(int)
    x = np.stack([heldout[s : s + CHUNK] for s in starts]).astype(np.int32)
    log_p = log_softmax(sequence_logits(stepper, x))
    feats, p, q = [], [], []
    for row, lp in zip(x, log_p):
        f, qt, has = cache_rows(row, WARMUP, window, len(saved.vocab))
        t = np.arange(WARMUP - 1, len(row) - 1)
        feats.append(f[has])
        q.append(qt[has])
        p.append(np.exp(lp[t, row[t + 1]])[has])
    feats, p, q = map(np.concatenate, (feats, p, q))
    w = fit(feats, p, q)
    print(f"fitted on {len(x) * (CHUNK - WARMUP):,} held-out library characters (storybook, int8): "
          f"w = {np.round(w, 3).tolist()}; cache found a match at {len(p) / (len(x) * (CHUNK - WARMUP)):.0%}")
    return w


@dataclass
class Style:
    """A shipped style as the engine serves it (int8, its word guard), and its corpus's split."""

    name: str
    vocab_size: int
    guard: WordGuard
    stepper: object  # charlm's int8 step: prime, step, sequence_logits
    train: np.ndarray
    heldout: np.ndarray

    @classmethod
    def load(cls, name: str) -> "Style":
        saved = read_model_folder(ROOT / "weights" / name)
        guard = WordGuard.build(saved.avoid, saved.vocab)
        train, heldout = (saved.vocab.encode(t).ids for t in load_corpus(STYLES[name], saved.vocab.lowercase).split(0.1))
        return cls(name, len(saved.vocab), guard, choose_backend(saved.weights, "numpy", "int8", guard), train, heldout)


def heldout_score(style: Style, w: np.ndarray, window: int) -> None:
    context = style.train[-max(window, WARMUP):]
    ids = np.concatenate([context, style.heldout]).astype(np.int32)
    log_p = log_softmax(steered(sequence_logits(style.stepper, ids[None]), ids[None], style.guard))[0]
    t = np.arange(len(context) - 1, len(ids) - 1)
    p = np.exp(log_p[t, ids[t + 1]])
    feats, q, has = cache_rows(ids, len(context), window, style.vocab_size)
    lam = np.where(has, mixing(feats, w), 0.0)
    print(f"{style.name}: held-out {len(style.heldout):,} characters: {bits(p):.4f} bits/char alone, "
          f"{bits((1 - lam) * p + lam * q):.4f} with the cache")


def repeated_share(ids: np.ndarray, after: int) -> float:
    """Share of the REPEAT-character strings ending after position `after` seen earlier."""
    text = ids.tobytes()
    size = ids.itemsize
    seen, repeats, total = set(), 0, 0
    for end in range(REPEAT, len(ids) + 1):
        key = text[(end - REPEAT) * size : end * size]
        if end > after:
            total += 1
            repeats += key in seen
        seen.add(key)
    return repeats / total


def replies(style: Style, w: np.ndarray | None, window: int, n: int,
            temperature: float = 0.8) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(n prompts with their replies of 400 characters, sampled from the served distribution
    with the cache mixed in when `w` is given; the real text after each prompt)."""
    guard, stepper, heldout = style.guard, style.stepper, style.heldout
    starts = np.linspace(0, len(heldout) - 500, n).astype(int)
    windows = np.stack([heldout[s : s + 100] for s in starts]).astype(np.int32)
    state, logits = stepper.prime(windows)
    words = guard.start(windows)
    caches = [RecentCache(window, style.vocab_size) for _ in range(n)]
    texts = [list(row) for row in windows]
    rng = np.random.default_rng(0)
    for _ in range(400):
        p = np.exp(log_softmax(np.asarray(logits, np.float64)))
        if w is not None:
            for i, cache in enumerate(caches):
                f = cache.features(np.asarray(texts[i]))
                if f is not None:
                    lam = mixing(f[0], w)
                    p[i] = (1 - lam) * p[i] + lam * f[1]
        p[guard.refuse[words]] = 0.0
        p = p ** (1 / temperature)
        p /= p.sum(axis=1, keepdims=True)
        ids = np.array([rng.choice(len(row), p=row) for row in p], np.int32)
        for i, cache in enumerate(caches):
            cache.saw(int(ids[i]))
            texts[i].append(int(ids[i]))
        words = guard.step(words, ids)
        logits = stepper.step(state, ids)
    return [np.asarray(t, np.int32) for t in texts], [heldout[s : s + 500] for s in starts]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--window", type=int, default=500, help="characters the cache reads back (a prompt and a reply)")
    parser.add_argument("--replies", type=int, default=24)
    a = parser.parse_args()
    missing = [path for path in (CORPORA / "pretrain", *STYLES.values()) if not path.exists()]
    if missing:
        sys.exit(f"missing corpus: {missing[0]} (the study reads ../shared/corpora)")
    w = fit_on_library(a.window)
    styles = [Style.load(name) for name in STYLES]
    for style in styles:
        heldout_score(style, w, a.window)
    print(f"\nreplies of 400 characters at temperature 0.8: share of {REPEAT}-character strings repeated "
          f"within the prompt and reply (mean, worst reply)")
    for style in styles:
        plain, real = replies(style, None, a.window, a.replies)
        cached, _ = replies(style, w, a.window, a.replies)
        row = {label: [repeated_share(t, 100) for t in texts]
               for label, texts in (("real text", real), ("alone", plain), ("with the cache", cached))}
        print(f"  {style.name}: " + "; ".join(f"{label} {np.mean(s):.1%} (worst {np.max(s):.0%})" for label, s in row.items()))


if __name__ == "__main__":
    main()
