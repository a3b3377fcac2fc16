"""Write weights/README.md from the shipped models' cards, with fresh samples.

    python weights/describe.py [--previous-from DIR]

weights/previous.json keeps the figures and samples of the models these replaced, so
README.md shows old and new side by side after the old folders are gone; pass
--previous-from a folder holding the old model folders (alice/, seuss/) to rewrite it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from charlm.generate import Generator  # noqa: E402
from charlm.sampling import Sampling  # noqa: E402

MODELS = {
    "alice": ["alice was beginning to get very tired", "the white rabbit", "'off with her head!' said the"],
    "seuss": ["i do not like green eggs and ham", "the cat in the hat", "oh, the places you'll go"],
    "storybook": ["once upon a time", "the little girl looked up at the", "there was an old man of"],
}
PREVIOUS = HERE / "previous.json"
STUDY = HERE / "finetune-study.jsonl"
"""bench/bench_finetune_study.py's results (figures only, no text), for the fine-tune table."""
WIDER_STUDY = HERE / "finetune-study-wider.jsonl"
"""The same study's defaults checked from the 2x640 alice (issue 21)."""
TEMPERATURES = (0.5, 1.0)
LENGTH = 240
REFERENCE = {  # held-out bits per char of general-purpose compressors on the same 10%
    "alice": "bzip2 -9: 2.114, xz -9e: 2.352, gzip -9: 2.737, paq8px -8L: 1.588",
    "seuss": "bzip2 -9: 2.444, xz -9e: 2.722, gzip -9: 3.031, paq8px -8L: 2.015",
}


def samples(folder: Path, prompts: list[str]) -> dict[str, list[str]]:
    """{temperature: [prompt + continuation, ...]}, seed 0, LENGTH characters each."""
    gen = Generator.from_folder(folder)
    windows = [gen.vocab.window(p) for p in prompts]
    out = {}
    for temperature in TEMPERATURES:
        texts = gen.generate([w.ids for w in windows], [Sampling(temperature=temperature, seed=0, length=LENGTH)] * len(prompts))
        out[str(temperature)] = ["**" + w.prompt_text + "**" + t.replace("\n", " / ") for w, t in zip(windows, texts)]
    return out


def record_previous(folder: Path) -> None:
    """Keep the figures and samples of the models about to be replaced."""
    previous = {}
    for name, prompts in MODELS.items():
        if (folder / name / "card.json").is_file():
            card = json.loads((folder / name / "card.json").read_text("utf-8"))
            previous[name] = {"heldout_bpc": card["heldout"]["bits_per_char"],
                              "verbatim": card["recitation"]["verbatim_40char_share"],
                              "base": (card.get("base") or {}).get("name"), "samples": samples(folder / name, prompts)}
    PREVIOUS.write_text(json.dumps(previous, indent=1) + "\n", "utf-8")

INT8 = {  # `python -m bench.bench_int8 --quality --eval-chars 200000`: held-out bits/char of the fp32 and
    # int8 steps (storybook: the first 200,000 held-out characters of pretrain, its library's first folder),
    # and how many of the 20 held-out prompts' argmax continuations keep fp32's first 100 characters
    "alice": (1.4589, 1.4589, 13),
    "seuss": (2.0422, 2.0420, 19),
    "storybook": (1.6433, 1.6427, 10),
}

PAD_NAMES = {" ": "space", "\n": "newline"}


def pad_row(card: dict) -> str:
    """The table row for the pad short prompts get, with what it was chosen on."""
    padding = card.get("padding")
    if not padding or not padding.get("openings"):
        return "| short prompts padded with | space (not measured) |"
    bits = ", ".join(f"{PAD_NAMES[c]} {b:.3f}" for c, b in padding["bits_per_char"].items())
    return (f"| short prompts padded with | {PAD_NAMES[padding['char']]} (bits/char on {padding['openings']} held-out "
            f"paragraph openings after a window of it: {bits}) |")


def int8_row(name: str) -> str:
    """The table row for the int8 step the bot serves with ([engine] precision)."""
    if name not in INT8:
        return "| int8 step (what the bot serves) | not measured |"
    fp32, int8, agree = INT8[name]
    return (f"| int8 step (what the bot serves) | {int8:.4f} held-out bits/char ({int8 - fp32:+.4f} against the fp32 "
            f"step's {fp32:.4f}); argmax continuations of its 20 held-out prompts keep fp32's first 100 characters "
            f"in {agree} of 20 |")


def base_card(card: dict) -> dict | None:
    """The card of the model `card` continued from, when it is in this folder's tree."""
    path = (card.get("base") or {}).get("path", "")
    folder = HERE / path.split("weights/", 1)[1] if "weights/" in path else None
    return json.loads((folder / "card.json").read_text("utf-8")) if folder and (folder / "card.json").is_file() else None


def sittings_row(card: dict) -> list[str]:
    """A base trained in sittings on one corpus: each sitting's minutes and held-out figure."""
    chain = [card]
    while (base := base_card(chain[-1])) and base["corpus"]["name"] == card["corpus"]["name"]:
        chain.append(base)
    if len(chain) < 2:
        return []
    minutes = [sum(epoch["seconds"] for epoch in c["training"]["history"]) / 60 for c in reversed(chain)]
    parts = ", ".join(f"{m:.0f} min ({c['training']['epochs_run']} epochs) to {c['heldout']['bits_per_char']:.3f}"
                      for m, c in zip(minutes, reversed(chain)))
    return [f"| sittings on {card['corpus']['name']} | {parts}: {sum(minutes):.0f} min of training in all |"]


def names_row(card: dict) -> list[str]:
    """Foreign names per 10,000 generated characters (`charlm names --write`), when measured."""
    f = card.get("foreign_names")
    if not f:
        return []
    def listed(found: dict) -> str:
        return ", ".join(f"{w} {n}" if n > 1 else w for w, n in sorted(found.items(), key=lambda kv: -kv[1])) or "none"

    rows = [f"| foreign names (`charlm names`), the model alone | {f['per_10k_chars']:g} per 10,000 characters over "
            f"{f['chars']:,} ({listed(f['found'])}): names the {' + '.join(f['library'])} books capitalise that "
            f"{f['corpus']} never writes |"]
    g = f.get("guarded")
    if g:
        rows.append(f"| foreign names as served (avoid.json) | {g['per_10k_chars']:g} per 10,000 characters over the same "
                    f"prompts and seeds ({listed(g['found'])}): the engine steers around the {g['words_avoided']:,} "
                    f"names (charlm.word_guard); words no book or {f['corpus']} uses: "
                    f"{g['unknown_words_per_10k_chars']:g} per 10,000 characters, against {f['unknown_words_per_10k_chars']:g} "
                    "unguarded |")
    return rows


def rehearsal_row(card: dict) -> list[str]:
    """Library passages, renamed, trained on beside the corpus (`charlm finetune --rehearse`)."""
    r = (card.get("base") or {}).get("rehearsal")
    if not r:
        return []
    return [f"| rehearsal | {r['share']:.0%} of the training characters ({r['chars']:,}): {r['passages']} passages of "
            f"{' + '.join(r['library'])} around its names, {r['names_replaced']} of them replaced by "
            f"{card['corpus']['name']}'s own ({', '.join(r['own_names'][:6])}, ...) |"]


def section(name: str, prompts: list[str]) -> str:
    card = json.loads((HERE / name / "card.json").read_text("utf-8"))
    t = card["training"]
    lines = [
        f"## {name}",
        "",
        "| figure | value |",
        "|---|---|",
        f"| held-out bits/char | **{card['heldout']['bits_per_char']:.3f}** ({card['heldout']['chars']:,} chars, last {card['corpus']['holdout_fraction']:.0%} of {card['corpus']['name']}) |",
        f"| compressors on the same text | {REFERENCE.get(name, 'not measured')} |",
        f"| architecture | {card['preset']}: embedding {card['layers']['embed']}, {card['layers']['layers']}x{card['layers']['units']} LSTM, dropout {card['layers']['dropout']}; {card['parameters']:,} parameters |",
        f"| base | {card['base']['name'] if card.get('base') else 'none'}"
        + (f" (held-out {card['base']['heldout_on_this_corpus']['bits_per_char']:.3f} bits/char before fine-tuning)" if card.get("base") else "") + " |",
        *rehearsal_row(card),
        f"| training | {t['epochs_run']} epochs, best {t['best_epoch']} ({t['stopped']}), {t['seconds'] / 60:.1f} min, lr {t['config']['learning_rate']} |",
        f"| train / validation loss (nats) | {card['train_loss']} / {card['val_loss']} |",
        pad_row(card),
        int8_row(name),
        f"| 40-char strings of output found verbatim in training text | {card['recitation']['verbatim_40char_share']:.1%} |",
        *sittings_row(card),
        *names_row(card),
        f"| corpus sha256 | `{card['corpus']['sha256']}` |",
        "",
    ]
    previous = json.loads(PREVIOUS.read_text("utf-8")).get(name) if PREVIOUS.is_file() else None
    if previous and previous["heldout_bpc"] != card["heldout"]["bits_per_char"]:
        names = (f", {previous['foreign_names_per_10k']:g} foreign names per 10,000 characters (the same measure)"
                 if "foreign_names_per_10k" in previous else "")
        lines[5:5] = [f"| previous {name} (replaced) | {previous['heldout_bpc']:.3f} held-out bits/char, base {previous['base']}, "
                      f"{previous['verbatim']:.1%} verbatim{names}{'; ' + previous['note'] if 'note' in previous else ''} |"]
    else:
        previous = None
    new = samples(HERE / name, prompts)
    for temperature in TEMPERATURES:
        key = str(temperature)
        lines.append(f"Samples at temperature {temperature} (seed 0, {LENGTH} characters; prompt in bold)"
                     + (", the previous model's first:" if previous else ":"))
        lines.append("")
        for i, text in enumerate(new[key]):
            if previous:
                lines.append("> *previous:* " + previous["samples"][key][i])
                lines.append(">")
                lines.append("> *new:* " + text)
            else:
                lines.append("> " + text)
            lines.append("")
    return "\n".join(lines)


def study_table(path: Path) -> list[str]:
    """A study file as a table: held-out bits/char per setting and text, the mean, and CPU
    time as a ratio of the fine-tune the defaults replaced ("today")."""
    rows = [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]
    texts = list(dict.fromkeys(r["text"] for r in rows))
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    cell = {(r["setting"], r["text"]): r for r in rows}
    today_cpu = sum(cell[("today", t)]["cpu_s"] for t in texts)
    lines = [
        "| setting | " + " | ".join(f"{t.split('-', 1)[1].removesuffix('.txt').replace('-', ' ')} "
                                   f"({cell[(settings[0], t)]['chars'] // 1000}k)" for t in texts)
        + " | mean | CPU |",
        "|---" * (len(texts) + 3) + "|",
    ]
    for name in settings:
        bits = [cell[(name, t)]["bits"] for t in texts]
        cpu = sum(cell[(name, t)]["cpu_s"] for t in texts) / today_cpu
        lines.append(f"| {name} | " + " | ".join(f"{b:.4f}" for b in bits)
                     + f" | {sum(bits) / len(bits):.4f} | {cpu:.2f}x |")
    for name in dict.fromkeys(r.get("base", "the base") for r in rows):
        base = [next(r for r in rows if r["text"] == t and r.get("base", "the base") == name)["base_bits"]
                for t in texts]
        lines.append(f"| ({name}, not fine-tuned) | " + " | ".join(f"{b:.4f}" for b in base)
                     + f" | {sum(base) / len(base):.4f} | |")
    return lines


def study_section() -> str:
    """The fine-tune study on the 2x512 alice, then its check on the 2x640 one."""
    lines = [
        "## Fine-tuning defaults: the study",
        "",
        "`python -m bench.bench_finetune_study`: the shipped alice fine-tuned on public-domain books",
        "none of the shipped models saw (../shared/corpora/pretrain-extra), each scored on its own",
        "held-out 10% (bits/char). \"today\" is the fine-tune the defaults replaced (5 epochs, Adam",
        "1e-3 halved after an epoch that did not improve, the base's dropout 0.3); the others may",
        "use 1.5x its steps (7 epochs). CPU time is the sum over the texts, as a ratio of today's.",
        "",
        *study_table(STUDY),
        "",
        "longer: today's for 7 epochs; cosine: 7 epochs from Adam 2e-3 down to a tenth along a half",
        "cosine (cosine-lr1e-3: from 1e-3); avg3: the mean of the last 3 epochs' weights, kept when it",
        "validates better; drop0.5 / drop0.1: that dropout while fine-tuning. **The defaults of",
        "`charlm finetune` and /finetune are now longer-drop0.1** (charlm.train_config.FINETUNE):",
        "best on every text, 0.029 bits/char below today's on the mean. The settings from",
        "plateau-avg3 on ran in a second invocation, so their CPU ratios compare across two runs.",
    ]
    if WIDER_STUDY.is_file():
        lines += [
            "",
            "The same texts from the 2x640 alice that replaced it, with \"today\" still the replaced",
            "fine-tune of the 2x512 alice (`--today-base`): default is longer-drop0.1 stopping after 2",
            "epochs without a better held-out loss (charlm.train_config.FINETUNE); default-patience3",
            "waited 3, as it shipped first; today-drop0.1 is 5 epochs at dropout 0.1. From the wider base",
            "the 82k text is best after epoch 3, so a third idle epoch only costs time; the small texts",
            "still gain from all 7. default-patience3 and today-drop0.1 ran in a second invocation.",
            "",
            *study_table(WIDER_STUDY),
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--previous-from", type=Path, help="folder with the models being replaced (alice/, seuss/)")
    args = parser.parse_args()
    if args.previous_from:
        record_previous(args.previous_from)
    head = [
        "# Shipped models",
        "",
        "Each folder is a charlm model: `model.keras`, `vocab.json`, `card.json`; alice and seuss also",
        "have `avoid.json`, the library's names foreign to their corpus, which serving steers around",
        "(charlm.word_guard; written by `charlm names --write`). Figures below come",
        "from the cards; samples are regenerated by `python weights/describe.py`. Rebuild all three",
        "models from the corpora with `weights/reproduce.sh` (the exact commands are in it).",
        "Bits per character are on the lowercased held-out text, each character conditioned on the",
        "text before it, like the compressors' conditional figures.",
        "",
        "A prompt shorter than 100 characters is left-padded with each model's measured pad",
        "(charlm.padding); the previous models' samples were padded with spaces, which the new",
        "ones read as indented verse.",
        "",
        "The bot steps in int8 by default (charlm.quantize: 8-bit LSTM weights, one scale per",
        "output row): each table gives its held-out bits/char beside the float32 step's, and",
        "how often greedy text follows float32's (`python -m bench.bench_int8 --quality`). The",
        "samples below are the float32 step's, steered around avoid.json's names as served.",
        "",
    ]
    body = [section(name, prompts) for name, prompts in MODELS.items() if (HERE / name / "card.json").is_file()]
    if STUDY.is_file():
        body.append(study_section())
    (HERE / "README.md").write_text("\n".join(head + body) + "\n", "utf-8")
    print(f"wrote {HERE / 'README.md'}")


if __name__ == "__main__":
    main()
