"""The output filter (bot.outfilter): glin-profanity's list plus a server's words, masked by whole word."""

from __future__ import annotations

import bot.outfilter as outfilter
from bot.outfilter import MASK, OutputFilter


def test_listed_words_are_masked_whole_words_only_and_the_rest_is_kept() -> None:
    f = OutputFilter()
    assert f.mask("Oh shit, said the cat.\n  Next line") == f"Oh {MASK}, said the cat.\n  Next line"
    assert f.mask("s h i t happens") == f"{MASK} happens"  # spaced out is caught too
    assert f.mask("a class of assassins took the scrap") == "a class of assassins took the scrap"
    assert f.mask("") == "" and f.mask("   ") == "   "


def test_a_servers_words_add_to_the_list_and_filters_are_cached_within_a_bound(monkeypatch) -> None:
    f = OutputFilter()
    assert f.mask("the Rabbit ran", ["rabbit"]) == f"the {MASK} ran"
    assert f.mask("the rabbit ran") == "the rabbit ran"  # only where that server listed it
    monkeypatch.setattr(outfilter, "CACHED_FILTERS", 2)
    for words in (["one"], ["two"], ["three"], ["two"]):
        f.mask("x", words)
    assert list(f._by_words) == [("three",), ("two",)]
