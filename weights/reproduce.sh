#!/usr/bin/env bash
# Rebuild the shipped models from the corpora (about 75 minutes on 2 CPU cores).
# Usage: weights/reproduce.sh [CORPORA_DIR]   (default: ../shared/corpora)
set -euo pipefail
cd "$(dirname "$0")/.."
corpora=${1:-../shared/corpora}
py=${PYTHON:-.venv/bin/python}

# 1. A base pretrained on Shakespeare, with Alice's 42 characters (Shakespeare's '$', '&'
#    and '3' are dropped): 1.1M characters of English teach spelling and syntax that
#    Alice's 129k training characters alone cannot.
$py -m charlm train "$corpora/tiny_shakespeare.txt" --charset-from "$corpora/alice.txt" \
    --preset default --epochs 30 --max-minutes 38 --patience 3 --out runs/shakespeare-base

# 2. alice: the base fine-tuned on lowercased Alice; the last 10% is held out.
$py -m charlm finetune "$corpora/alice.txt" --model runs/shakespeare-base \
    --lr 1e-3 --epochs 40 --patience 4 --max-minutes 25 --out weights/alice

# 3. seuss: alice fine-tuned on Dr Seuss mapped onto Alice's characters, as the recipe did.
$py -m charlm finetune "$corpora/seuss.txt" --model weights/alice \
    --lr 1e-3 --epochs 40 --patience 4 --max-minutes 15 --out weights/seuss

# 4. weights/README.md: figures from the cards and fresh samples.
$py weights/describe.py
