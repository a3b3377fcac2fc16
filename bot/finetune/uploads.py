"""Checks on an uploaded corpus, before any training starts.

Each problem is a CharLMError with its own one-line message, shown to the admin as is.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import discord

from charlm.corpus import Corpus, clean_bytes
from charlm.errors import CharLMError
from charlm.split import check_trainable, split_encode
from charlm.vocab import Vocabulary


@dataclass(frozen=True)
class CheckedCorpus:
    """A cleaned upload and what the base model will make of it."""

    corpus: Corpus
    usable_chars: int  # characters the base model knows, i.e. what it will train on
    unknown: Counter[str]  # characters the base model does not know: dropped

    def report(self) -> str:
        """charlm's cleaning report, plus what the base's vocabulary drops."""
        line = self.corpus.report.summary()
        if self.unknown:
            shown = ", ".join(f"{c!r}x{n}" for c, n in self.unknown.most_common(6))
            more = ", ..." if len(self.unknown) > 6 else ""
            line += f"; {sum(self.unknown.values()):,} unknown to the base model dropped ({shown}{more})"
        return line


def megabytes(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MB"


def check_declared_size(attachment: discord.Attachment, cap: int) -> None:
    """Refuse before downloading anything, on the size Discord announces."""
    if attachment.size > cap:
        raise CharLMError(f"{attachment.filename} is {megabytes(attachment.size)}; this bot accepts corpora "
                          f"of up to {megabytes(cap)}")


async def download(attachment: discord.Attachment, cap: int) -> bytes:
    """The attachment's bytes, checked again: the announced size is only a claim."""
    data = await attachment.read()
    if len(data) > cap:
        raise CharLMError(f"{attachment.filename} turned out to be {megabytes(len(data))} when downloaded; "
                          f"this bot accepts corpora of up to {megabytes(cap)}")
    return data


def check_corpus(data: bytes, filename: str, vocab: Vocabulary, min_chars: int) -> CheckedCorpus:
    """Clean the upload the way its base was cleaned; refuse what cannot train a model.

    charlm's clean_bytes refuses empty, binary and non-UTF-8 files, and texts too short
    for any training; min_chars asks for enough text to be worth a job; and each part of
    the training's 90/10 split must be usable (check_trainable), so what passes trains.
    """
    corpus = clean_bytes(data, filename, vocab.lowercase)
    ids = split_encode(corpus, vocab)  # the training's own split and encoding (charlm.jobs.finetune)
    usable = len(ids.train) + len(ids.heldout)
    if usable < min_chars:
        raise CharLMError(f"{filename} is too short: {usable:,} usable characters after cleaning, "
                          f"at least {min_chars:,} needed to fine-tune")
    check_trainable(filename, ids)
    return CheckedCorpus(corpus, usable, ids.unknown)


def safe_filename(filename: str) -> str:
    """A name to store the upload under (the card records it as the corpus name)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", filename.rsplit("/", 1)[-1]).strip("._")
    return name[:80] or "corpus.txt"
