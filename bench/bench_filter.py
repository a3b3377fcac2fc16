"""What the output filter (bot.outfilter, glin-profanity) costs per reply.

    python bench/bench_filter.py [--repeats 20]

A streamed reply is masked at every edit (the whole text so far, prompt and output) and
once more at the end. The bench masks real book text (the shared corpora's alice.txt,
else tests' synthetic text) the way a reply of 400 and of 1000 characters would be:
the final text, and the worst case of streaming, an edit at every 16-character chunk the
engine hands over (at the default edit_interval of 1 s a reply gets a few edits, not
that many). Also the cost of building a server's filter with extra words (cached, 256
servers). Median of --repeats, in milliseconds of one CPU core.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.outfilter import OutputFilter, _build  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpora" / "alice.txt"
CHUNK = 16


def sample(chars: int) -> str:
    if CORPUS.is_file():
        text = CORPUS.read_text("utf-8")
        return text[len(text) // 3:len(text) // 3 + chars]
    from tests.conftest import make_text

    return make_text(chars)


def median_ms(work, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    output_filter = OutputFilter()
    extra = ("rabbit", "hatter", "darn", "heck", "queen")
    print(f"text: {'alice.txt' if CORPUS.is_file() else 'synthetic'}; one core, median of {args.repeats}")
    for length in (400, 1000):
        text = sample(length)
        final = median_ms(lambda: output_filter.mask(text), args.repeats)
        final_extra = median_ms(lambda: output_filter.mask(text, extra), args.repeats)
        prefixes = [text[:n] for n in range(CHUNK, length + 1, CHUNK)]
        streamed = median_ms(lambda: [output_filter.mask(p) for p in prefixes], max(3, args.repeats // 4))
        print(f"{length} chars: final mask {final:.2f} ms ({final_extra:.2f} ms with 5 extra words); "
              f"every-chunk streaming ({len(prefixes)} edits + final) {streamed + final:.1f} ms per reply")
    print(f"building a server's filter with 5 extra words: {median_ms(lambda: _build(extra), 5):.1f} ms")


if __name__ == "__main__":
    main()
