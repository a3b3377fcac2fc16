"""charlm: a character-level LSTM language model (corpus, vocabulary, model, training,
generation, evaluation and a batching inference engine). No Discord code lives here."""

import os

# Quiet TensorFlow's C++ start-up chatter before anything imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from charlm.blas import pin_blas_threads  # noqa: E402

pin_blas_threads()  # one OpenBLAS thread, before numpy loads: see charlm.blas for the measurement

from charlm.errors import CharLMError, TrainingCancelled  # noqa: E402

WINDOW = 100
"""Characters of context a prompt is cut or padded to, as in the recipe."""

__all__ = ["CharLMError", "TrainingCancelled", "WINDOW"]
