"""Versioned models on disk, and which version of each is served.

    <models_dir>/<name>/v<N>/        model.keras, vocab.json, card.json (charlm's model folder)
    <models_dir>/<name>/served.json  {"version": "v<N>"}; absent: the newest built-in or v1

The shipped models (/alice, /seuss) are version v0 of their name and stay where the
config says (weights/ may be read-only); everything the bot trains goes under the
writable data directory. Folders are written aside and renamed, and served.json is
replaced with os.replace, so a reader never sees half of either.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from charlm.errors import CharLMError
from charlm.storage import CARD_FILE, read_card

NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
VERSION = re.compile(r"^v(\d+)$")
SERVED_FILE = "served.json"


@dataclass(frozen=True)
class Version:
    """One model folder and what its card says about it."""

    model: str
    number: int
    folder: Path
    card: dict

    @property
    def label(self) -> str:
        return f"v{self.number}"

    @property
    def heldout_bpc(self) -> float | None:
        """Bits per char on the held-out 10% of the corpus this version was trained on."""
        return (self.card.get("heldout") or {}).get("bits_per_char")

    @property
    def corpus(self) -> str:
        return (self.card.get("corpus") or {}).get("name") or "?"

    @property
    def base_heldout_bpc(self) -> float | None:
        """Its base, on the same held-out text (fine-tuned versions only)."""
        base = self.card.get("base") or {}
        return (base.get("heldout_on_this_corpus") or {}).get("bits_per_char")


@dataclass(frozen=True)
class Model:
    name: str
    versions: list[Version]  # oldest first
    served: Version

    def version(self, label: str) -> Version:
        for v in self.versions:
            if v.label == label.strip().lower():
                return v
        known = ", ".join(v.label for v in self.versions)
        raise CharLMError(f"{self.name} has no version {label!r} (it has {known})")


def check_name(name: str) -> str:
    name = name.strip().lower()
    if not NAME.match(name):
        raise CharLMError(f"{name!r} is not a usable model name: use 1-32 lowercase letters, digits, - or _, "
                          "starting with a letter")
    return name


class Registry:
    """The models the bot can serve: built-in folders plus what fine-tuning added."""

    def __init__(self, root: Path, builtin: dict[str, Path]) -> None:
        self.root = root
        self.builtin = builtin

    def names(self) -> list[str]:
        found = {p.name for p in self.root.iterdir() if p.is_dir() and NAME.match(p.name)} if self.root.is_dir() else set()
        return sorted(found | {n for n, f in self.builtin.items() if (f / CARD_FILE).is_file()})

    def versions(self, name: str) -> list[Version]:
        versions = []
        builtin = self.builtin.get(name)
        if builtin is not None and (builtin / CARD_FILE).is_file():
            versions.append(Version(name, 0, builtin, read_card(builtin)))
        folder = self.root / name
        if folder.is_dir():
            for p in folder.iterdir():
                match = VERSION.match(p.name)
                if match and int(match.group(1)) > 0 and (p / CARD_FILE).is_file():
                    versions.append(Version(name, int(match.group(1)), p, read_card(p)))
        return sorted(versions, key=lambda v: v.number)

    def model(self, name: str) -> Model:
        name = name.strip().lower()
        versions = self.versions(name)
        if not versions:
            known = ", ".join(self.names()) or "none"
            raise CharLMError(f"there is no model called {name!r} (models: {known})")
        served_label = self._served_label(name)
        served = next((v for v in versions if v.label == served_label), versions[0])
        return Model(name, versions, served)

    def models(self) -> list[Model]:
        return [self.model(n) for n in self.names()]

    def _served_label(self, name: str) -> str | None:
        try:
            return json.loads((self.root / name / SERVED_FILE).read_text("utf-8"))["version"]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def next_version(self, name: str) -> tuple[str, Path]:
        """Label and folder for a new version; the folder does not exist yet."""
        numbers = [v.number for v in self.versions(name)]
        folder = self.root / name
        if folder.is_dir():  # also folders without a card yet, e.g. one a job is writing
            numbers += [int(m.group(1)) for p in folder.iterdir() if (m := VERSION.match(p.name))]
        label = f"v{max(numbers, default=0) + 1}"
        return label, folder / label

    def set_served(self, name: str, label: str) -> Version:
        """Make `label` the served version of `name` (written atomically)."""
        version = self.model(name).version(label)
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{SERVED_FILE}.", dir=folder)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"version": version.label}, f)
            f.write("\n")
        os.replace(tmp, folder / SERVED_FILE)
        return version

    def discard(self, folder: Path) -> None:
        """Remove a version folder that never became a version, and anything half-written
        for it (charlm saves as .<label>.*.tmp and .<label>.old beside it)."""
        if folder.parent.is_dir():
            for p in folder.parent.glob(f".{folder.name}.*"):
                shutil.rmtree(p, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)
