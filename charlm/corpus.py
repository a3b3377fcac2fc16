"""Reading and cleaning training text, the way the recipe cleaned Alice by hand.

Cleaning is deterministic and reported: every replaced or dropped character is counted,
so a user uploading a corpus sees exactly what the model will (and will not) learn from.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from charlm.errors import CharLMError

MIN_CORPUS_CHARS = 1_000
"""Shorter texts cannot fill even a few 100-character training windows."""

# Unicode punctuation and spaces mapped onto their ASCII forms.
PUNCTUATION_MAP: dict[str, str] = {
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
    "\u00ab": '"', "\u00bb": '"',
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-",
    "\u2015": "-", "\u2212": "-",
    "\u2026": "...",
    "\u00a0": " ", "\u2007": " ", "\u202f": " ", "\u2009": " ", "\u200a": " ",
    "\u037e": ";",  # Greek question mark: looks like, and means, a semicolon here
    "\r": "",  # CRLF line endings become LF
}
# Invisible or broken characters that carry no text.
DROPPED_CHARS: frozenset[str] = frozenset(
    {"\ufeff", "\u00ad", "\u200b", "\u200c", "\u200d", "\u2060", "\ufffd"}
)

_GUTENBERG_START = re.compile(r"^\*\*\*\s*START OF (THE|THIS) PROJECT GUTENBERG.*$", re.M | re.I)
_GUTENBERG_END = re.compile(
    r"^(\*\*\*\s*END OF (THE|THIS) PROJECT GUTENBERG|End of (the )?Project Gutenberg).*$",
    re.M | re.I,
)
_REMOVED_LINES: dict[str, re.Pattern[str]] = {
    "chapter headings": re.compile(r"^[ \t]*chapter[ \t]+([ivxlc]+|\d+)\b.*$", re.I),
    "lines of '*'": re.compile(r"^[ \t]*\*[* \t]*$"),
    "scraped image lines": re.compile(r"^[ \t]*external image \S+[ \t]*$", re.I),
}


@dataclass
class CleaningReport:
    """What cleaning changed: characters replaced or dropped, lines removed."""

    replaced: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    removed_lines: Counter[str] = field(default_factory=Counter)
    gutenberg_stripped: bool = False
    lowercased: bool = False
    chars_in: int = 0
    chars_out: int = 0

    def summary(self) -> str:
        """One human line, e.g. for the CLI or a Discord reply."""
        parts = [f"{self.chars_in:,} chars in, {self.chars_out:,} kept"]
        if self.gutenberg_stripped:
            parts.append("Project Gutenberg header/licence stripped")
        for what, n in sorted(self.removed_lines.items()):
            parts.append(f"{n} {what} removed")
        if self.replaced:
            parts.append(f"{sum(self.replaced.values())} mapped ({_top(self.replaced)})")
        if self.dropped:
            parts.append(f"{sum(self.dropped.values())} dropped ({_top(self.dropped)})")
        return "; ".join(parts)

    def to_json(self) -> dict:
        return {
            "replaced": dict(self.replaced),
            "dropped": dict(self.dropped),
            "removed_lines": dict(self.removed_lines),
            "gutenberg_stripped": self.gutenberg_stripped,
            "lowercased": self.lowercased,
            "chars_in": self.chars_in,
            "chars_out": self.chars_out,
        }


def _top(counts: Counter[str], n: int = 6) -> str:
    shown = ", ".join(f"{c!r}x{k}" for c, k in counts.most_common(n))
    return shown + (", ..." if len(counts) > n else "")


@dataclass
class Corpus:
    """A cleaned training text and where it came from."""

    text: str
    name: str
    sha256: str
    report: CleaningReport


def decode_text(data: bytes, name: str = "the file") -> str:
    """Bytes -> str, with a one-line error for binary, non-UTF-8 or empty input."""
    if not data.strip():
        raise CharLMError(f"{name} is empty")
    if b"\x00" in data[:65536]:
        raise CharLMError(f"{name} looks binary (it contains NUL bytes), not text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CharLMError(
            f"{name} is not UTF-8 text (bad byte at offset {exc.start}); save it as UTF-8"
        ) from None


def normalise(text: str, report: CleaningReport | None = None) -> str:
    """Map Unicode punctuation to ASCII and drop invisible characters, counting both."""
    out: list[str] = []
    for ch in text:
        if ch in DROPPED_CHARS:
            if report is not None:
                report.dropped[ch] += 1
        elif ch in PUNCTUATION_MAP:
            if report is not None:
                report.replaced[ch] += 1
            out.append(PUNCTUATION_MAP[ch])
        else:
            out.append(ch)
    return "".join(out)


def strip_gutenberg(text: str) -> tuple[str, bool]:
    """Keep only the book between Project Gutenberg's START and END markers, if present."""
    start = _GUTENBERG_START.search(text)
    end = _GUTENBERG_END.search(text, start.end() if start else 0)
    if not start and not end:
        return text, False
    return text[start.end() if start else 0 : end.start() if end else len(text)], True


def clean_text(text: str, lowercase: bool = True) -> tuple[str, CleaningReport]:
    """Clean a raw text like the recipe did by hand, and report what changed."""
    report = CleaningReport(chars_in=len(text), lowercased=lowercase)
    text, report.gutenberg_stripped = strip_gutenberg(text)
    text = normalise(text, report)
    kept: list[str] = []
    for line in text.split("\n"):
        removed_as = next((what for what, pat in _REMOVED_LINES.items() if pat.match(line)), None)
        if removed_as:
            report.removed_lines[removed_as] += 1
        else:
            kept.append(line)
    text = "\n".join(kept).strip("\n") + "\n"
    if lowercase:
        text = text.lower()
    report.chars_out = len(text)
    return text, report


def clean_bytes(data: bytes, name: str, lowercase: bool = True) -> Corpus:
    """Decode, clean and check an uploaded or read corpus."""
    text, report = clean_text(decode_text(data, name), lowercase)
    if len(text.strip()) < MIN_CORPUS_CHARS:
        raise CharLMError(
            f"{name} is too short: {len(text.strip()):,} characters after cleaning, "
            f"at least {MIN_CORPUS_CHARS:,} needed"
        )
    return Corpus(text, name, hashlib.sha256(data).hexdigest(), report)


def load_corpus(path: str | Path, lowercase: bool = True) -> Corpus:
    """Read and clean a corpus file; every problem is a one-line CharLMError."""
    path = Path(path)
    if not path.exists():
        raise CharLMError(f"corpus not found: {path}")
    if not path.is_file():
        raise CharLMError(f"corpus is not a file: {path}")
    return clean_bytes(path.read_bytes(), path.name, lowercase)


def split_holdout(text: str, holdout: float) -> tuple[str, str]:
    """The first (1 - holdout) of the text for training, the rest for validation."""
    if not 0.0 < holdout < 1.0:
        raise CharLMError(f"holdout fraction must be between 0 and 1, got {holdout}")
    cut = int(len(text) * (1.0 - holdout))
    return text[:cut], text[cut:]
