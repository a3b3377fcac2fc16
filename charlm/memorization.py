"""How much of a model's output is recited from its training text."""

from __future__ import annotations

import numpy as np

from charlm.generate import Generator
from charlm.sampling import Sampling


def verbatim_share(gen: Generator, train_text: str, prompts: list[str], n: int = 40,
                   length: int = 400, temperature: float = 0.8, seed: int = 0) -> float:
    """Share of the generated n-character strings found verbatim in the training text.

    One sample of `length` characters per prompt, all in one batch; every n-character
    substring of every sample counts. A model that recites the book scores near 1.
    """
    settings = [Sampling(temperature=temperature, seed=seed + i, length=length) for i in range(len(prompts))]
    samples = gen.generate([gen.vocab.window(p).ids for p in prompts], settings)
    grams = [s[i : i + n] for s in samples for i in range(len(s) - n + 1)]
    # the training text's strings are looked up in the (few) output strings, not the other
    # way round: a set of a library's 34M strings would take several GB
    wanted = set(grams)
    seen = {train_text[i : i + n] for i in range(len(train_text) - n + 1) if train_text[i : i + n] in wanted}
    return float(np.mean([g in seen for g in grams])) if grams else 0.0
