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

_GUTENBERG_START = re.compile(
    r"^(\*\*\*\s*START OF (THE|THIS) PROJECT GUTENBERG"
    r"|\*END\*?\s*THE SMALL PRINT!).*$",  # pre-2000 releases: the licence comes first
    re.M | re.I,
)
_GUTENBERG_END = re.compile(
    r"^(\*\*\*\s*END OF (THE|THIS) PROJECT GUTENBERG|End of (the )?Project Gutenberg"
    r"|\*Project Gutenberg Etext of .*\*\s*$).*$",  # the 1990s releases end on their title line
    re.M | re.I,
)
# Whole paragraphs that are the transcribers' and Project Gutenberg's, not the book's:
# credits ("Produced by ...") and notes about other editions or formats.
_BOILERPLATE_PARAGRAPH = re.compile(
    r"^\s*(produced by|e-?text prepared by|transcribed from|this e-?text was|html version by)"
    r"|project gutenberg|gutenberg\.(org|net)|pgdp\.net|distributed proofread|\be-?text\b",
    re.I,
)
# Bracketed editorial blocks, possibly over several lines: picture captions and notes.
_EDITORIAL_BLOCK = re.compile(r"^[ \t]*\[(illustration|transcriber'?s? note)[^\]]*\][ \t]*(\n|$)", re.M | re.I)
# A closing "Transcriber's notes" section: everything after its heading is theirs.
_TRANSCRIBER_SECTION = re.compile(r"^[ \t]*transcriber'?s notes?:?[ \t]*$", re.M | re.I)
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
    removed_blocks: Counter[str] = field(default_factory=Counter)
    gutenberg_stripped: bool = False
    lowercased: bool = False
    chars_in: int = 0
    chars_out: int = 0

    def summary(self) -> str:
        """One human line, e.g. for the CLI or a Discord reply."""
        parts = [f"{self.chars_in:,} chars in, {self.chars_out:,} kept"]
        if self.gutenberg_stripped:
            parts.append("Project Gutenberg header/licence stripped")
        for what, n in sorted((self.removed_blocks + self.removed_lines).items()):
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
            "removed_blocks": dict(self.removed_blocks),
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
    """A cleaned training text and where it came from.

    `heldout_from` is set for a library (a folder of books): its text is every book's
    training part followed by every book's held-out part, so the held-out text samples
    every book rather than only the last ones.
    """

    text: str
    name: str
    sha256: str
    report: CleaningReport
    heldout_from: int | None = None
    holdout: float | None = None  # the fraction `heldout_from` was cut with
    books: list[dict] = field(default_factory=list)  # a library's files: name, sha256, chars, cleaning

    def split(self, holdout: float) -> tuple[str, str]:
        """(training text, held-out text): the last `holdout` of the text, or of each book."""
        if self.heldout_from is None:
            return split_holdout(self.text, holdout)
        if holdout != self.holdout:
            raise CharLMError(f"{self.name} was read with holdout {self.holdout}, not {holdout}")
        return self.text[: self.heldout_from], self.text[self.heldout_from :]


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


def strip_editorial(text: str, report: CleaningReport) -> str:
    """Remove what transcribers and Project Gutenberg added inside the book: credit and
    edition-note paragraphs, [Illustration] and [Transcriber's note] blocks, and a
    closing transcriber's notes section. Counted in `report.removed_blocks`."""
    section = _TRANSCRIBER_SECTION.search(text)
    if section and section.start() > len(text) * 0.9:
        text = text[: section.start()]
        report.removed_blocks["transcriber's notes sections"] += 1
    text, n = _EDITORIAL_BLOCK.subn("", text)
    if n:
        report.removed_blocks["illustration and note blocks"] += n
    paragraphs = re.split(r"(\n[ \t]*\n)", text)
    for i in range(0, len(paragraphs), 2):
        if _BOILERPLATE_PARAGRAPH.search(paragraphs[i]):
            paragraphs[i] = ""
            report.removed_blocks["transcriber credit and edition-note paragraphs"] += 1
    return "".join(paragraphs)


def clean_text(text: str, lowercase: bool = True) -> tuple[str, CleaningReport]:
    """Clean a raw text like the recipe did by hand, and report what changed."""
    report = CleaningReport(chars_in=len(text), lowercased=lowercase)
    text, report.gutenberg_stripped = strip_gutenberg(text)
    text = normalise(text, report)
    if report.gutenberg_stripped:
        text = strip_editorial(text, report)
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


def load_corpus(path: str | Path, lowercase: bool = True, holdout: float = 0.1) -> Corpus:
    """Read and clean a corpus file, or a folder of them (see load_library); every
    problem is a one-line CharLMError."""
    path = Path(path)
    if not path.exists():
        raise CharLMError(f"corpus not found: {path}")
    if path.is_dir():
        return load_library(path, lowercase, holdout)
    if not path.is_file():
        raise CharLMError(f"corpus is not a file or a folder: {path}")
    return clean_bytes(path.read_bytes(), path.name, lowercase)


_SPACE_RUN = re.compile(r"[ \t]{2,}|\t")
_BLANK_RUN = re.compile(r"\n{3,}")  # the gaps around title pages: one blank line is a gap enough


def squeeze_layout(text: str, report: CleaningReport) -> str:
    """Drop indentation and runs of spaces: in a library of books set by many printers they
    are typography (centred titles, indented verse), and a model that learns them writes
    runs of spaces (and of blank lines). Counted as "lines of layout spacing" in
    `report.removed_lines`."""
    lines = text.split("\n")
    out = [_SPACE_RUN.sub(" ", line.strip(" \t")) for line in lines]
    changed = sum(a != b for a, b in zip(lines, out))
    if changed:
        report.removed_lines["lines of layout spacing"] += changed
    return _BLANK_RUN.sub("\n\n", "\n".join(out))


def load_library(folder: Path, lowercase: bool = True, holdout: float = 0.1) -> Corpus:
    """Every *.txt in `folder` (sorted by name), each cleaned on its own (layout spaces
    squeezed, see squeeze_layout) and split on its own: the last `holdout` of every book
    is held out. Its sha256 covers every file."""
    paths = sorted(p for p in folder.glob("*.txt") if p.is_file())
    if not paths:
        raise CharLMError(f"{folder} has no .txt files")
    digest = hashlib.sha256()
    report = CleaningReport(lowercased=lowercase, gutenberg_stripped=True)
    train_parts, heldout_parts, books = [], [], []
    for path in paths:
        book = clean_bytes(path.read_bytes(), path.name, lowercase)
        book.text = squeeze_layout(book.text, book.report)
        digest.update(book.sha256.encode())
        train, heldout = split_holdout(book.text, holdout)
        train_parts.append(train)
        heldout_parts.append(heldout)
        r = book.report
        report.chars_in += r.chars_in
        report.replaced += r.replaced
        report.dropped += r.dropped
        report.removed_lines += r.removed_lines
        report.removed_blocks += r.removed_blocks
        report.gutenberg_stripped &= r.gutenberg_stripped
        books.append({"name": path.name, "sha256": book.sha256, "chars": len(book.text), "cleaning": r.summary()})
    train_text, heldout_text = "".join(train_parts), "".join(heldout_parts)
    report.chars_out = len(train_text) + len(heldout_text)
    return Corpus(train_text + heldout_text, folder.name, digest.hexdigest(), report,
                  heldout_from=len(train_text), holdout=holdout, books=books)


def split_holdout(text: str, holdout: float) -> tuple[str, str]:
    """The first (1 - holdout) of the text for training, the rest for validation."""
    if not 0.0 < holdout < 1.0:
        raise CharLMError(f"holdout fraction must be between 0 and 1, got {holdout}")
    cut = int(len(text) * (1.0 - holdout))
    return text[:cut], text[cut:]
