"""Which model versions exist, which server owns each, and which one every server serves.

The registry lives in the database (tables `versions` and `serving`, bot.db.schema); the
model files stay folders under [finetune] models_dir, written aside and renamed by charlm:

    <models_dir>/<guild_id>/<name>/v<N>/   model.keras, vocab.json, card.json

Version numbers are unique per name across all servers, so a label like `seuss v3` means
one version everywhere (a reply's footer, /models, the history). The shipped models are
v0 of `alice` and `seuss` and stay where the config says (weights/ may be read-only).

What server G gets for a name: its own `serving` row, else the owners' default (scope 0),
else the shipped v0. A server sees (and may serve) the shipped version, its own versions,
and the versions the owners' default or its own choice point at; nothing else.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from charlm.errors import CharLMError
from charlm.storage import CARD_FILE, read_card

from bot.db.schema import OWNERS, serving, versions
from bot.scope import Scope

NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
VERSION = re.compile(r"^v(\d+)$")


@dataclass(frozen=True)
class Version:
    """One model folder, who owns it, and what its card says about it."""

    model: str
    number: int
    folder: Path
    card: dict
    guild_id: int = OWNERS  # the server it was trained in; 0 for the shipped and the owners' versions
    id: int | None = None  # its row; None for the shipped v0

    @property
    def label(self) -> str:
        return f"v{self.number}"

    @property
    def shipped(self) -> bool:
        return self.id is None

    @property
    def key(self) -> str:
        """Its name in the inference engine (the shipped models keep their plain name)."""
        return self.model if self.shipped else f"{self.model}@{self.label}"

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
    """A name as one server (or the owners) sees it."""

    name: str
    versions: list[Version]  # those the viewer may serve, oldest first
    served: Version | None  # what the viewer's scope answers with; None: nothing yet
    default: Version | None = None  # what servers without a choice of their own get

    def version(self, label: str) -> Version:
        for v in self.versions:
            if v.label == label.strip().lower():
                return v
        known = ", ".join(v.label for v in self.versions)
        raise CharLMError(f"{self.name} has no version {label.strip()!r} here (it has {known}).")


def check_name(name: str) -> str:
    name = name.strip().lower()
    if not NAME.match(name):
        raise CharLMError(f"{name!r} is not a usable model name: use 1-32 lowercase letters, digits, - or _, "
                          "starting with a letter.")
    return name


def no_such_model(name: str) -> CharLMError:
    """The one answer to a model name a server cannot use."""
    return CharLMError(f"There is no model called {name!r} here; /generate's model option lists them.")


class Registry:
    """Versions and serving choices in the database, model folders on disk."""

    noun = "model versions"
    """What purge_server counts (/purge-server's answer)."""

    def __init__(self, db: AsyncEngine, root: Path, builtin: dict[str, Path],
                 on_discard: Callable[[Version], None] = lambda version: None) -> None:
        self.db = db
        self.root = root
        self.builtin = builtin
        self.on_discard = on_discard
        """Told of each version purge_server deletes: the bot unloads it from the engine."""
        self._shipped: dict[str, Version | None] = {}

    # ---- reading ----------------------------------------------------------------------------------

    async def shipped(self, name: str) -> Version | None:
        """v0 of a shipped model (its card read once). Only shipped names are remembered: a
        name a user typed that is not one costs a dict lookup, not a cache entry."""
        if name not in self.builtin:
            return None
        if name not in self._shipped:
            folder = self.builtin.get(name)
            found = None
            if folder is not None and (folder / CARD_FILE).is_file():
                found = Version(name, 0, folder, await asyncio.to_thread(read_card, folder))
            self._shipped[name] = found
        return self._shipped[name]

    def _version(self, row: sa.Row) -> Version:
        return Version(row.name, row.number, self.root / row.path, row.card, row.guild_id, row.id)

    async def _rows(self, query: sa.Select) -> list[Version]:
        async with self.db.connect() as conn:
            return [self._version(r) for r in await conn.execute(query)]

    async def by_id(self, version_id: int) -> Version | None:
        found = await self._rows(sa.select(versions).where(versions.c.id == version_id))
        return found[0] if found else None

    async def _choices(self, name: str, scopes: list[int]) -> dict[int, int | None]:
        """scope -> version id (None: the shipped v0) of the serving rows for a name."""
        query = sa.select(serving.c.scope, serving.c.version_id).where(serving.c.name == name,
                                                                       serving.c.scope.in_(scopes))
        async with self.db.connect() as conn:
            return {r.scope: r.version_id for r in await conn.execute(query)}

    async def _resolve(self, name: str, choice: int | None) -> Version | None:
        return await self.shipped(name) if choice is None else await self.by_id(choice)

    async def _pick(self, name: str, choices: dict[int, int | None], scope: int) -> Version | None:
        """What `scope` gets from the serving rows `choices`: its own choice, else the
        owners' default (scope 0), else the shipped v0."""
        for s in (scope, OWNERS):
            if s in choices:
                return await self._resolve(name, choices[s])
        return await self.shipped(name)

    async def served(self, scope: Scope, name: str) -> Version | None:
        """The version that answers `name` in a server (or a DM); None: nothing there."""
        key = scope.key
        return await self._pick(name, await self._choices(name, [key, OWNERS]), key)

    async def names(self, scope: Scope) -> list[str]:
        """Every name a server can see: shipped, its own, and those served to it."""
        key = scope.key
        owned = sa.select(versions.c.name).where(versions.c.guild_id == key)
        chosen = sa.select(serving.c.name).where(serving.c.scope.in_([key, OWNERS]))
        async with self.db.connect() as conn:
            found = {r[0] for r in await conn.execute(owned.union(chosen))}
        shipped = {n for n in self.builtin if await self.shipped(n) is not None}
        return sorted(found | shipped)

    async def model(self, viewer: Scope, name: str) -> Model:
        """`name` as a server (or a DM) sees it; Scope.ALL: as the owners see it (every server's versions)."""
        name = name.strip().lower()
        everything, scope = viewer.everything, viewer.key
        choices = await self._choices(name, [scope, OWNERS])
        default = await self._pick(name, choices, OWNERS)
        own = not everything and scope in choices  # else it gets the default
        served = await self._resolve(name, choices[scope]) if own else default
        query = sa.select(versions).where(versions.c.name == name)
        if not everything:
            shown = [i for i in (choices.get(scope), choices.get(OWNERS)) if i is not None]
            query = query.where(sa.or_(versions.c.guild_id == scope, versions.c.id.in_(shown)))
        found = await self._rows(query)
        shipped = await self.shipped(name)
        listed = sorted(([shipped] if shipped else []) + found, key=lambda v: v.number)
        if not listed:
            raise no_such_model(name)
        return Model(name, listed, served, default)

    async def models(self, viewer: Scope) -> list[Model]:
        if viewer.everything:
            async with self.db.connect() as conn:
                names = {r[0] for r in await conn.execute(sa.select(versions.c.name).distinct())}
            names |= {n for n in self.builtin if await self.shipped(n) is not None}
        else:
            names = set(await self.names(viewer))
        return [await self.model(viewer, n) for n in sorted(names)]

    async def owned_names(self, guild_id: int) -> set[str]:
        """Models this server made under names of its own (what [finetune] max_models counts)."""
        query = sa.select(versions.c.name).where(versions.c.guild_id == guild_id).distinct()
        async with self.db.connect() as conn:
            return {r[0] for r in await conn.execute(query)} - set(self.builtin)

    async def guild_ids(self) -> set[int]:
        """Every server that owns a version or made a choice."""
        query = sa.select(versions.c.guild_id).union(sa.select(serving.c.scope))
        async with self.db.connect() as conn:
            return {g for (g,) in await conn.execute(query)} - {OWNERS}

    async def version(self, scope: Scope, name: str, label: str) -> Version:
        """A version by label, as a server sees it (the base of a job)."""
        return (await self.model(scope, name)).version(label)

    # ---- writing ----------------------------------------------------------------------------------

    def folder_for(self, guild_id: int, name: str, number: int) -> Path:
        return self.root / str(guild_id) / name / f"v{number}"

    def staging_for(self, guild_id: int, name: str, number: int, job_id: int) -> Path:
        """Where a job's training writes the new version, beside its final place (same
        filesystem, so the rename is atomic); hidden and named by job, so cleanup can tell
        whose it is."""
        return self.root / str(guild_id) / name / f".v{number}.job{job_id}.tmp"

    async def add(self, guild_id: int, name: str, number: int, folder: Path, card: dict,
                  job_id: int | None = None) -> Version:
        """Record a version folder that is complete on disk."""
        async with self.db.begin() as conn:
            return await self.record(conn, guild_id, name, number, folder, card, job_id)

    async def record(self, conn: AsyncConnection, guild_id: int, name: str, number: int, folder: Path, card: dict,
                     job_id: int | None = None) -> Version:
        """add(), inside the caller's transaction (a job's publish commits it with the job's outcome)."""
        values = dict(guild_id=guild_id, name=name, number=number, path=str(folder.relative_to(self.root)),
                      card=card, created_at=time.time(), job_id=job_id)
        result = await conn.execute(sa.insert(versions).values(**values))
        return Version(name, number, folder, card, guild_id, result.inserted_primary_key[0])

    async def serve(self, scope: Scope, version: Version, user_id: int | None = None) -> None:
        """Make `version` what `scope` (a server, or Scope.ALL: every server by default) gets for its name."""
        async with self.db.begin() as conn:
            await self.serve_in(conn, scope, version, user_id)

    async def serve_in(self, conn: AsyncConnection, scope: Scope, version: Version,
                       user_id: int | None = None) -> None:
        """serve(), inside the caller's transaction."""
        if scope.kind == "dm":
            raise ValueError("a DM has no serving choice of its own: it gets every server's default")
        key = scope.key
        await conn.execute(sa.delete(serving).where(serving.c.scope == key, serving.c.name == version.model))
        await conn.execute(sa.insert(serving).values(scope=key, name=version.model, version_id=version.id,
                                                     set_by=user_id, set_at=time.time()))

    async def registered(self, name: str, number: int) -> bool:
        """Whether a version row exists (a folder without one is a leftover)."""
        query = sa.select(versions.c.id).where(versions.c.name == name, versions.c.number == number)
        async with self.db.connect() as conn:
            return (await conn.execute(query)).first() is not None

    async def prune(self, guild_id: int, name: str, keep: int, protect: set[int] = frozenset()) -> list[Version]:
        """Delete a server's oldest versions of `name` beyond `keep`; a served version (anywhere)
        and those in `protect` (bases of queued or running jobs) are never deleted."""
        async with self.db.begin() as conn:
            rows = (await conn.execute(sa.select(versions).where(
                versions.c.guild_id == guild_id, versions.c.name == name).order_by(versions.c.number))).all()
            used = {r[0] for r in await conn.execute(sa.select(serving.c.version_id).where(
                serving.c.version_id.is_not(None)))} | set(protect)
            excess = len(rows) - keep
            doomed = [self._version(r) for r in rows if r.id not in used][:max(0, excess)]
            if doomed:
                await conn.execute(sa.delete(versions).where(versions.c.id.in_([v.id for v in doomed])))
        for v in doomed:  # after the commit: a crash leaves at worst an unlisted folder
            await asyncio.to_thread(self.discard, v.folder)
        return doomed

    async def purge_server(self, guild_id: int) -> int:
        """Forget a server: its choices and versions; returns how many versions went (each is
        also handed to on_discard). A version the owners serve to every server stays, as the
        owners' (0)."""
        async with self.db.begin() as conn:
            await conn.execute(sa.delete(serving).where(serving.c.scope == guild_id))
            used = {r[0] for r in await conn.execute(sa.select(serving.c.version_id).where(
                serving.c.version_id.is_not(None)))}
            rows = (await conn.execute(sa.select(versions).where(versions.c.guild_id == guild_id))).all()
            doomed = [self._version(r) for r in rows if r.id not in used]
            kept = [r.id for r in rows if r.id in used]
            if doomed:
                await conn.execute(sa.delete(versions).where(versions.c.id.in_([v.id for v in doomed])))
            if kept:
                await conn.execute(sa.update(versions).where(versions.c.id.in_(kept)).values(guild_id=OWNERS))
        for v in doomed:
            await asyncio.to_thread(self.discard, v.folder)
            self.on_discard(v)
        return len(doomed)

    def discard(self, folder: Path) -> None:
        """Remove a version folder, and anything half-written for it (charlm saves as
        .<label>.*.tmp and .<label>.old beside it)."""
        if folder.parent.is_dir():
            for p in folder.parent.glob(f".{folder.name}.*"):
                shutil.rmtree(p, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)
        parent = folder.parent
        while parent != self.root and self.root in parent.parents:  # the model's, then the server's folder
            try:
                parent.rmdir()  # only if empty
            except OSError:
                break
            parent = parent.parent
