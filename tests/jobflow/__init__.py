"""Helpers of the fine-tune job-flow tests: a stand-in training process, a trainer process
to kill, a serving-only bot to watch (see tests/test_job_flow.py and tests/test_scale.py)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVE_PYTHON = Path(os.environ.get("CHARLM_SERVE_PYTHON") or ROOT.parent / "serve-venv" / "bin" / "python")
"""A venv with requirements-serve.txt only (CI builds one and names it in CHARLM_SERVE_PYTHON)."""


def serve_python() -> Path:
    """That venv's python; the test skips without it (fails with CHARLM_REQUIRE_SERVE set)."""
    import pytest  # here, not at the top: the serving-only venv imports this package without pytest

    if not SERVE_PYTHON.is_file():
        message = f"no serving-only venv at {SERVE_PYTHON} (set CHARLM_SERVE_PYTHON)"
        if os.environ.get("CHARLM_REQUIRE_SERVE"):
            pytest.fail(message)
        pytest.skip(message)
    return SERVE_PYTHON
