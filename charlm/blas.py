"""How many OpenBLAS threads the numpy step uses: one, chosen by measurement.

A step is a few (batch, 512) x (512, 2048) products: memory-bound, and too short for
OpenBLAS's spinning worker threads to pay off once anything else wants a core. Measured
on 2 cores with bench/bench_threads.py (ms per character step, batch 1 / batch 16):

    quiet:              1 thread 0.26 / 1.65    2 threads (OpenBLAS's default) 0.14 / 1.00
    one busy process:   1 thread 0.20 / 1.69    2 threads 2.52 / 40.0

The default threads win ~1.7x on an idle machine and lose 13-24x beside one busy
process (a fine-tune worker, a second shard, a neighbour on a VPS), so charlm uses one
thread wherever the engine runs: the bot, `python -m charlm`, and the engine as a
library. Set OPENBLAS_NUM_THREADS yourself to override it.
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys

BLAS_THREADS = 1


def pin_blas_threads() -> None:
    """Use BLAS_THREADS unless OPENBLAS_NUM_THREADS says otherwise. OpenBLAS reads the
    variable when numpy loads; if numpy is loaded already, set it through OpenBLAS's API."""
    if "OPENBLAS_NUM_THREADS" in os.environ:
        return
    os.environ["OPENBLAS_NUM_THREADS"] = str(BLAS_THREADS)
    if "numpy" in sys.modules:
        _set_loaded_openblas(BLAS_THREADS)


def _set_loaded_openblas(threads: int) -> bool:
    """Best effort for numpy's bundled OpenBLAS (numpy.libs); False when not found."""
    numpy = sys.modules["numpy"]
    for path in glob.glob(os.path.join(os.path.dirname(numpy.__file__), os.pardir, "numpy.libs", "*openblas*")):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                     "openblas_set_num_threads64_", "openblas_set_num_threads"):
            setter = getattr(lib, name, None)
            if setter is not None:
                setter(threads)
                return True
    return False
