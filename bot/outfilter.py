"""The output filter: words on a list are masked in every text the bot shows, each
intermediate edit of a streamed reply included.

The default list is glin-profanity's English dictionary (a maintained package, 400+ words,
obfuscations such as `s h i t` caught too); a server adds its own words with /settings.
Masking, not regenerating: a reply keeps its length and pace, and the masked word shows
as `***` (docs/bot.md says why). Matching is per whole word (glin-profanity's word
boundaries), so `class` or `assassin` stay as they are.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable

from glin_profanity import Filter

MASK = "***"
CACHED_FILTERS = 256
"""Servers with extra words whose filters are kept built (each costs ~20 ms to build, a few
hundred kB); the least recently used is rebuilt when next needed."""


def _build(words: tuple[str, ...]) -> Filter:
    return Filter({"languages": ["english"], "replace_with": MASK, "custom_words": list(words),
                   "cache_results": False})


class OutputFilter:
    """One shared filter for the default list, one per distinct set of extra words."""

    def __init__(self) -> None:
        self._default = _build(())
        self._by_words: OrderedDict[tuple[str, ...], Filter] = OrderedDict()

    def _filter(self, extra: Iterable[str]) -> Filter:
        words = tuple(sorted({w.strip().lower() for w in extra if w.strip()}))
        if not words:
            return self._default
        found = self._by_words.get(words)
        if found is None:
            found = self._by_words[words] = _build(words)
            while len(self._by_words) > CACHED_FILTERS:
                self._by_words.popitem(last=False)
        else:
            self._by_words.move_to_end(words)
        return found

    def masker(self, extra: Iterable[str] = ()) -> Callable[[str], str]:
        """A function masking every listed word (the package's and `extra`) with `***`.

        Pick it in the event loop (the cache of filters is not thread-safe); call it from any
        thread: it costs ~8 ms per 400 characters (bench/bench_filter.py), so the bot runs it
        off the loop."""
        found = self._filter(extra)

        def mask(text: str) -> str:
            if not text.strip():
                return text
            return found.check_profanity(text)["processed_text"]

        return mask

    def mask(self, text: str, extra: Iterable[str] = ()) -> str:
        """`text` with every listed word (the package's and `extra`) replaced by `***`."""
        return self.masker(extra)(text)
