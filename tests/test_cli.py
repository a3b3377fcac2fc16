"""`python -m charlm` as a user runs it: help, the main paths, one-line errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from charlm.cli import main

ROOT = Path(__file__).resolve().parents[1]


def charlm(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "charlm", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_every_subcommand_explains_its_flags(capsys):
    for command, flags in {"train": ["--preset", "--max-minutes", "--resume", "--charset-from"],
                           "finetune": ["--model", "--holdout"],
                           "generate": ["--temperature", "--top-k", "--top-p", "--seed", "--length"],
                           "eval": ["--heldout-only"], "pad": ["--write", "--holdout"]}.items():
        with pytest.raises(SystemExit) as exit_:
            main([command, "--help"])
        text = capsys.readouterr().out
        assert exit_.value.code == 0 and all(flag in text for flag in flags), text


def test_train_generate_eval(tmp_path, text_file):
    out = charlm("train", str(text_file), "--preset", "tiny", "--epochs", "1", "--batch-size", "32",
                 "--out", str(tmp_path / "m"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"saved {tmp_path / 'm'}") and "bits/char" in out.stdout
    assert "epoch 1/1" in out.stderr  # the progress line
    gen = charlm("generate", "Alice said", "--model", str(tmp_path / "m"), "--length", "30", "--seed", "4")
    assert gen.returncode == 0 and gen.stdout.startswith("alice said") and len(gen.stdout) == len("alice said") + 31
    assert gen.stdout == charlm("generate", "Alice said", "--model", str(tmp_path / "m"), "--length", "30",
                                "--seed", "4").stdout
    ev = charlm("eval", str(text_file), "--model", str(tmp_path / "m"), "--heldout-only")
    assert ev.returncode == 0 and json.loads(ev.stdout)["bits_per_char"] > 0


@pytest.mark.parametrize("args, message", [
    (["train", "missing.txt", "--out", "x"], "error: corpus not found: missing.txt"),
    (["generate", "hi", "--model", "no/such/folder"], "error: model folder not found: no/such/folder"),
    (["generate", "hi", "--model", "weights/alice", "--temperature", "-1"], "error: temperature must be"),
    (["train", "README.md", "--out", "x", "--preset", "huge"], "error: unknown preset 'huge'"),
    (["train", "README.md", "--out", "x", "--epochs", "0"], "error: --epochs must be at least 1"),
])
def test_bad_input_is_one_line_and_exit_1(args, message, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err
