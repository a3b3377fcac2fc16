#!/usr/bin/env bash
# Rebuild the shipped models from the corpora (about 2 h 20 min on 2 CPU cores).
# Usage: weights/reproduce.sh [CORPORA_DIR]   (default: ../shared/corpora)
set -euo pipefail
cd "$(dirname "$0")/.."
corpora=${1:-../shared/corpora}
py=${PYTHON:-.venv/bin/python}

# 1. A base pretrained on Shakespeare, with Alice's 42 characters (Shakespeare's '$', '&'
#    and '3' are dropped): 1.1M characters of English teach spelling and syntax that
#    Alice's 129k training characters alone cannot. It ran in two sittings of 38 and 60
#    minutes (4 + 7 epochs on 2 CPU cores); the second resumes from the first's
#    checkpoint, optimizer state included.
$py -m charlm train "$corpora/tiny_shakespeare.txt" --charset-from "$corpora/alice.txt" \
    --preset default --epochs 30 --max-minutes 38 --patience 3 --out runs/shakespeare-base
$py -m charlm train "$corpora/tiny_shakespeare.txt" --charset-from "$corpora/alice.txt" \
    --preset default --epochs 30 --max-minutes 60 --patience 3 --out runs/shakespeare-base \
    --resume "$(ls runs/shakespeare-base.checkpoints/epoch-*.keras | tail -1)"

# 2. alice: the base fine-tuned on lowercased Alice; the last 10% is held out.
$py -m charlm finetune "$corpora/alice.txt" --model runs/shakespeare-base \
    --lr 1e-3 --epochs 40 --patience 4 --max-minutes 25 --out weights/alice

# 3. seuss: alice fine-tuned on Dr Seuss mapped onto Alice's characters, as the recipe did.
$py -m charlm finetune "$corpora/seuss.txt" --model weights/alice \
    --lr 1e-3 --epochs 40 --patience 4 --max-minutes 15 --out weights/seuss

# 4. weights/README.md: figures from the cards and fresh samples.
$py weights/describe.py
