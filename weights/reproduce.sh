#!/usr/bin/env bash
# Rebuild the shipped models from the corpora (about 8 hours on 2 CPU cores).
# Usage: weights/reproduce.sh [CORPORA_DIR]   (default: ../shared/corpora)
set -euo pipefail
cd "$(dirname "$0")/.."
corpora=${1:-../shared/corpora}
py=${PYTHON:-.venv/bin/python}

# 1. A first base pretrained on Shakespeare, with Alice's 42 characters (Shakespeare's '$',
#    '&' and '3' are dropped), in two sittings of 38 and 60 minutes (4 + 7 epochs); the
#    second resumes from the first's checkpoint, optimizer state included.
$py -m charlm train "$corpora/tiny_shakespeare.txt" --charset-from "$corpora/alice.txt" \
    --preset default --epochs 30 --max-minutes 38 --patience 3 --out runs/shakespeare-base
$py -m charlm train "$corpora/tiny_shakespeare.txt" --charset-from "$corpora/alice.txt" \
    --preset default --epochs 30 --max-minutes 60 --patience 3 --out runs/shakespeare-base \
    --resume "$(ls runs/shakespeare-base.checkpoints/epoch-*.keras | tail -1)"

# 2. That base fine-tuned on lowercased Alice (the last 10% held out): the alice shipped
#    until 2026-12 (1.743 held-out bits/char), kept as runs/previous/alice.
$py -m charlm finetune "$corpora/alice.txt" --model runs/shakespeare-base \
    --lr 1e-3 --epochs 40 --patience 4 --max-minutes 25 --out runs/previous/alice

# 3. The first storybook (2x512, shipped until issue 21): the children's library in
#    $corpora/pretrain (39 public-domain books, each cleaned on its own, the last 10% of every book held out), trained on from step 2's
#    weights so it starts out knowing English spelling. An "epoch" is 200 steps of 64
#    windows (1.28M characters), validated on 500 held-out windows; lower dropout, since
#    10M characters are far more than this budget reads once. It ran in two sittings:
#    85 minutes on the library as the cleaner then read it, with its layout spaces
#    (centred titles, indented verse), which taught the model to write runs of spaces;
#    then 10 minutes on the library as it is read now, layout squeezed, which unlearns them
#    (1.678 held-out bits/char); then 70 more minutes on it (21 epochs: 1.632).
$py -m charlm finetune "$corpora/pretrain" --model runs/previous/alice --dropout 0.1 \
    --lr 1e-3 --epochs 100 --patience 3 --steps-per-epoch 200 --val-windows 500 \
    --max-minutes 85 --out runs/storybook   # (with the cleaner of commit 0075cd6)
$py -m charlm finetune "$corpora/pretrain" --model runs/storybook \
    --lr 1e-3 --epochs 100 --patience 3 --steps-per-epoch 100 --val-windows 500 \
    --max-minutes 10 --out runs/storybook2
$py -m charlm finetune "$corpora/pretrain" --model runs/storybook2 \
    --lr 1e-3 --epochs 100 --patience 3 --steps-per-epoch 200 --val-windows 500 \
    --max-minutes 70 --out runs/storybook512

# 4. storybook: a wider base for the whole library (pretrain and pretrain-extra, 138 books,
#    linked into one folder, the last 10% of every book held out): step 3's storybook widened
#    to 2x640 with the same function (charlm widen; 2x640 is the widest whose int8 step still
#    outruns the old 2x512 fp32 step at batch 32: bench/bench_wider.py), then trained in
#    sittings. Sitting 1, 61 minutes (4 epochs, lr 1e-3): 1.717 -> 1.678 held-out bits/char,
#    kept in weights/sittings/storybook640. Sitting 2 (lr 1e-3 again with fresh Adam moments)
#    made it worse (1.687) and was not kept. Sitting 3 continues sitting 1 at a lower rate,
#    annealed (cosine from 5e-4; 5 of the 6 planned epochs fit in its 75 minutes): 1.654. The
#    base's own held-out figure comes from its card, so no sitting re-reads the held-out tenth
#    before it trains. A next sitting continues from weights/storybook, or resumes a sitting's
#    checkpoint with --resume (its Adam moments and its cosine schedule go on where they were).
mkdir -p runs/library && ln -sf "$(realpath "$corpora")"/pretrain/*.txt "$(realpath "$corpora")"/pretrain-extra/*.txt runs/library/
$py -m charlm widen --model runs/storybook512 --units 640 --out runs/sb640-init
$py -m charlm finetune runs/library --model runs/sb640-init --lr 1e-3 --epochs 100 --patience 3 \
    --steps-per-epoch 200 --val-windows 500 --max-minutes 45 --out weights/sittings/storybook640
$py -m charlm finetune runs/library --model weights/sittings/storybook640 --lr 5e-4 --schedule cosine \
    --epochs 6 --patience 3 --steps-per-epoch 200 --val-windows 500 --max-minutes 75 --out weights/storybook

# 5. alice: storybook fine-tuned on Alice, with Alice's dropout (0.3, not charlm finetune's
#    default 0.1, which the study chose for short fine-tunes of small uploads), then a last
#    pass of 4 epochs that rehearses the library: a fifth of the characters it trains on are
#    library passages around their names, each name replaced by one of Alice's own
#    (charlm.rehearsal). It brings fewer of the library's names into Alice and scores better on
#    her held-out tenth (1.469 -> 1.459); a share of 0.4 scored the same and wrote more names.
$py -m charlm finetune "$corpora/alice.txt" --model weights/storybook --dropout 0.3 \
    --lr 1e-3 --epochs 40 --patience 4 --max-minutes 25 --out runs/alice-first
$py -m charlm finetune "$corpora/alice.txt" --model runs/alice-first --dropout 0.3 \
    --lr 3e-4 --schedule cosine --epochs 4 --patience 4 \
    --rehearse "$corpora/pretrain" --rehearse "$corpora/pretrain-extra" --rehearse-share 0.2 --out weights/alice

# 6. seuss: storybook fine-tuned on Dr Seuss mapped onto Alice's characters, then the same
#    last pass with Seuss's names. Until issue 21 it was fine-tuned from alice, as the recipe
#    did; from storybook it scores better (2.053 against 2.069 from the 2x512 alice) and brings
#    none of Alice's names along. Rehearsing from the start instead of in a last pass scored
#    worse (2.062 against 2.045 before the pass).
$py -m charlm finetune "$corpora/seuss.txt" --model weights/storybook --dropout 0.3 \
    --lr 1e-3 --epochs 40 --patience 4 --max-minutes 25 --out runs/seuss-first
$py -m charlm finetune "$corpora/seuss.txt" --model runs/seuss-first --dropout 0.3 \
    --lr 3e-4 --schedule cosine --epochs 4 --patience 4 \
    --rehearse "$corpora/pretrain" --rehearse "$corpora/pretrain-extra" --rehearse-share 0.2 --out weights/seuss

# 7. weights/README.md: figures from the cards and fresh samples, next to the replaced
#    models' (weights/previous.json, written once with --previous-from runs/previous2, copies
#    of the replaced alice, seuss and storybook); first each style's foreign names (names the
#    library's books use that its own corpus never writes, per 10,000 characters of 200
#    samples, alone and as served), saved in its card, with avoid.json, the names serving
#    steers around (charlm.word_guard); and the fine-tune study's table from
#    weights/finetune-study.jsonl (python -m bench.bench_finetune_study).
for m in alice seuss; do
    $py -m charlm names "$corpora/$m.txt" --model weights/$m --library "$corpora/pretrain" \
        --library "$corpora/pretrain-extra" --length 2000 --prompts 100 --write
done
$py weights/describe.py
