"""The first start after servers were kept apart: import what the older bot left in data_dir.

The older bot kept jobs in finetune.sqlite3 (PRAGMA user_version 1), fine-tuned models in
models/<name>/v<N>/ and the version every server got in models/<name>/served.json. Each
version becomes owned by the server whose job made it (the job rows record it) and keeps
serving there; a version no job row explains becomes the owners' (and, if it was served,
every server's default). Folders stay where they are (the registry stores their paths),
and the old files are left untouched. Everything is written in one transaction, together
with the marker that says it is done, so a crash midway imports everything again next time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from charlm.storage import CARD_FILE

from bot.db.schema import OWNERS, jobs, meta, serving, versions
from bot.finetune.settings import FinetuneConfig

log = logging.getLogger(__name__)
MARKER = "legacy_import"
NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
VERSION = re.compile(r"^v(\d+)$")
JOB_COLUMNS = ("id", "created_at", "finished_at", "user_id", "guild_id", "channel_id", "base", "base_version",
               "target", "corpus_name", "corpus_sha256", "corpus_chars", "cleaning", "settings",
               "state", "progress", "heldout_bpc", "base_heldout_bpc", "served", "error")


def read_legacy(settings: FinetuneConfig) -> dict[str, Any]:
    """Everything the older bot stored, read without changing a byte."""
    found: dict[str, Any] = {"jobs": [], "versions": [], "served": {}}
    if settings.database.is_file():
        with sqlite3.connect(f"file:{settings.database}?mode=ro", uri=True) as db:
            db.row_factory = sqlite3.Row
            if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'jobs'").fetchone():
                found["jobs"] = [dict(r) for r in db.execute("SELECT * FROM jobs ORDER BY id")]
        db.close()
    root = settings.models_dir
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if not (folder.is_dir() and NAME.match(folder.name)):
            continue  # guild folders (digits) belong to the new layout
        for version in sorted(folder.iterdir()):
            match = VERSION.match(version.name)
            if match and int(match.group(1)) > 0 and (version / CARD_FILE).is_file():
                card = json.loads((version / CARD_FILE).read_text("utf-8"))
                found["versions"].append((folder.name, int(match.group(1)), version, card))
        try:
            found["served"][folder.name] = json.loads((folder / "served.json").read_text("utf-8"))["version"]
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return found


async def import_legacy(db: AsyncEngine, settings: FinetuneConfig, data_dir: Path) -> bool:
    """Import once; True if this call did it."""
    async with db.connect() as conn:
        if (await conn.execute(sa.select(meta.c.value).where(meta.c.key == MARKER))).first() is not None:
            return False
    found = await asyncio.to_thread(read_legacy, settings)
    async with db.begin() as conn:
        for row in found["jobs"]:
            values = {c: row.get(c) for c in JOB_COLUMNS}
            values["settings"] = json.loads(values["settings"] or "{}")
            values["progress"] = json.loads(values["progress"] or "{}")
            values["served"] = bool(values["served"])
            values["error"] = values["error"] or ""
            values["started_at"] = values["created_at"]  # the older bot started jobs at once
            number = VERSION.match(row.get("target_version") or "")
            values["target_number"] = int(number.group(1)) if number else None
            if values["state"] == "running":  # the older bot stopped while it trained
                values.update(state="interrupted", finished_at=time.time(),
                              error="the bot stopped while this job was training")
            await conn.execute(sa.insert(jobs).values(values))
        if found["jobs"] and conn.dialect.name == "postgresql":  # ids were given: move the sequence past them
            await conn.execute(sa.text("SELECT setval(pg_get_serial_sequence('jobs', 'id'), "
                                       "(SELECT MAX(id) FROM jobs))"))
        made_by = {(j["target"], j["target_version"]): j for j in found["jobs"] if j["state"] == "succeeded"}
        ids: dict[tuple[str, int], tuple[int, int]] = {}
        for name, number, folder, card in found["versions"]:
            job = made_by.get((name, f"v{number}"))
            owner = (job or {}).get("guild_id") or OWNERS
            result = await conn.execute(sa.insert(versions).values(
                guild_id=owner, name=name, number=number, path=str(folder.relative_to(settings.models_dir)),
                card=card, created_at=(job or {}).get("finished_at") or time.time(),
                job_id=(job or {}).get("id")))
            ids[(name, number)] = (result.inserted_primary_key[0], owner)
        for name, label in found["served"].items():
            match = VERSION.match(str(label))
            if not match or (name, int(match.group(1))) not in ids:
                continue  # v0 (the shipped model) is what every server gets anyway
            version_id, owner = ids[(name, int(match.group(1)))]
            await conn.execute(sa.insert(serving).values(scope=owner, name=name, version_id=version_id,
                                                         set_by=None, set_at=time.time()))
        await conn.execute(sa.insert(meta).values(key=MARKER, value=json.dumps(
            {"at": time.time(), "jobs": len(found["jobs"]), "versions": len(found["versions"])})))
    if found["jobs"] or found["versions"]:
        log.info("imported %d fine-tune jobs and %d model versions from the older data folder %s",
                 len(found["jobs"]), len(found["versions"]), data_dir)
    return True
