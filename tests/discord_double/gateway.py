"""Gateway websocket: HELLO/IDENTIFY/READY, heartbeats, RESUME with replay, zlib-stream frames, sharding.

Sharding follows Discord: IDENTIFY's `shard: [id, count]` decides which guilds a session
gets (guild shard = (guild_id >> 22) % count, DMs on shard 0); a bad pair closes with 4010,
and a session that would hold more than `world.max_guilds_per_session` guilds with 4011.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import zlib
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from .interactions import Notifier
from .models import World, shard_of

log = logging.getLogger("tests.discord_double")

DISPATCH, HEARTBEAT, IDENTIFY, RESUME, RECONNECT, REQUEST_MEMBERS, INVALID_SESSION, HELLO, HEARTBEAT_ACK = (
    0, 1, 2, 6, 7, 8, 9, 10, 11,
)
INVALID_SHARD, SHARDING_REQUIRED = 4010, 4011
GUILD_EVENTS = {"GUILD_CREATE", "GUILD_UPDATE", "GUILD_DELETE"}
"""Events whose guild is data["id"]; every other guild event names it in data["guild_id"]."""


class Connection:
    """One websocket; with compress=zlib-stream every frame is a Z_SYNC_FLUSH chunk of one stream."""

    def __init__(self, ws: web.WebSocketResponse, path: str, query: dict[str, str], opened_at: float):
        self.ws = ws
        self.path = path
        self.query = query
        self.opened_at = opened_at
        self.closed_at: float | None = None
        self.close_code: int | None = None
        self._zlib = zlib.compressobj() if query.get("compress") == "zlib-stream" else None
        self._lock = asyncio.Lock()

    async def send(self, payload: dict[str, Any]) -> None:
        raw = json.dumps(payload, separators=(",", ":"))
        async with self._lock:
            if self.ws.closed:
                return
            if self._zlib is None:
                await self.ws.send_str(raw)
            else:
                data = self._zlib.compress(raw.encode()) + self._zlib.flush(zlib.Z_SYNC_FLUSH)
                await self.ws.send_bytes(data)


@dataclass
class Session:
    """A gateway session; dispatches are logged so a RESUME can replay what the bot missed."""

    id: str
    seq: int = 0
    log: list[dict[str, Any]] = field(default_factory=list)
    conn: Connection | None = None
    ready: bool = False
    shard: tuple[int, int] = (0, 1)
    """(shard_id, num_shards) from IDENTIFY; an unsharded session is (0, 1) and sees every guild."""
    intents: int = 0
    """IDENTIFY's intents: without MESSAGE_CONTENT (1 << 15) message content is blanked (see messages.py)."""

    def owns(self, guild_id: int | None) -> bool:
        """Discord's rule: a guild belongs to shard (guild_id >> 22) % num_shards; DMs to shard 0."""
        shard_id, count = self.shard
        return (0 if guild_id is None else shard_of(guild_id, count)) == shard_id


@dataclass
class ResumeRecord:
    session_id: str
    client_seq: int
    replayed: int
    path: str
    at: float


def parse_shard(value: Any) -> tuple[int, int] | None:
    """IDENTIFY's optional `shard`: [shard_id, num_shards] with 0 <= shard_id < num_shards, else None."""
    if value is None:
        return (0, 1)
    ok = (isinstance(value, list) and len(value) == 2 and all(type(v) is int for v in value)
          and value[1] >= 1 and 0 <= value[0] < value[1])
    return (value[0], value[1]) if ok else None


class Gateway:
    """Serves the gateway for one bot (one or several shard sessions at once).

    dispatch() sends an event over the newest session of the shard that owns its guild.
    """

    def __init__(self, world: World, notifier: Notifier, heartbeat_interval_ms: int) -> None:
        self.world = world
        self.notifier = notifier
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.resume_url = ""
        self.sessions: dict[str, Session] = {}
        self.current: Session | None = None
        self.connections: list[Connection] = []
        self.received: list[dict[str, Any]] = []
        self.identifies = 0
        self.heartbeats = 0
        self.resumes: list[ResumeRecord] = []
        self.rejected: list[tuple[int, Any]] = []
        """(close code, IDENTIFY's shard) for every IDENTIFY closed with 4010/4011."""
        self.held: asyncio.Event | None = None
        """While set by drop(): new connections get no HELLO until restore(), as when Discord is unreachable."""
        self._resumes_before_drop = 0

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        conn = Connection(ws, request.path, dict(request.query), self._now())
        self.connections.append(conn)
        if self.held is not None:
            await self.held.wait()
        await conn.send({"op": HELLO, "d": {"heartbeat_interval": self.heartbeat_interval_ms}, "s": None, "t": None})
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    await self._on_payload(conn, json.loads(msg.data))
        except Exception:
            log.exception("gateway handler failed")
        finally:
            conn.closed_at = self._now()
            conn.close_code = ws.close_code
            for session in self.sessions.values():
                if session.conn is conn:
                    session.conn = None
            await self.notifier.bump()
        return ws

    async def _on_payload(self, conn: Connection, payload: dict[str, Any]) -> None:
        self.received.append(payload)
        op, data = payload.get("op"), payload.get("d")
        if op == HEARTBEAT:
            self.heartbeats += 1
            await conn.send({"op": HEARTBEAT_ACK})
        elif op == IDENTIFY:
            await self._identify(conn, data or {})
        elif op == RESUME:
            await self._resume(conn, data)
        elif op == REQUEST_MEMBERS:
            await self._members_chunk(conn, data)
        await self.notifier.bump()

    async def _identify(self, conn: Connection, data: dict[str, Any]) -> None:
        w = self.world
        shard = parse_shard(data.get("shard"))
        if shard is None:
            self.rejected.append((INVALID_SHARD, data.get("shard")))
            await conn.ws.close(code=INVALID_SHARD, message=b"Invalid shard.")
            return
        session = Session(secrets.token_hex(16), conn=conn, shard=shard, intents=int(data.get("intents") or 0))
        guilds = [g for g in w.guilds if session.owns(g.id)]
        if len(guilds) > w.max_guilds_per_session:
            self.rejected.append((SHARDING_REQUIRED, data.get("shard")))
            await conn.ws.close(code=SHARDING_REQUIRED, message=b"Sharding required.")
            return
        self.identifies += 1
        self.sessions[session.id] = session
        self.current = session
        ready: dict[str, Any] = {
            "v": 10,
            "user": w.bot.payload(),
            "guilds": [{"id": str(g.id), "unavailable": True} for g in guilds],
            "session_id": session.id,
            "resume_gateway_url": self.resume_url,
            "application": {"id": str(w.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "session_type": "normal",
        }
        if "shard" in data:
            ready["shard"] = list(shard)
        await self._dispatch(session, "READY", ready)
        for guild in guilds:
            await self._dispatch(session, "GUILD_CREATE", guild.payload(w.users, w.bot))
        session.ready = True

    async def _resume(self, conn: Connection, data: dict[str, Any]) -> None:
        session = self.sessions.get(data.get("session_id", ""))
        if session is None:
            await conn.send({"op": INVALID_SESSION, "d": False})
            return
        session.conn = conn
        client_seq = data.get("seq") or 0
        missed = [entry for entry in session.log if entry["s"] > client_seq]
        for entry in missed:
            await conn.send(entry)
        self.resumes.append(ResumeRecord(session.id, client_seq, len(missed), conn.path, self._now()))
        await self._dispatch(session, "RESUMED", {})

    async def _members_chunk(self, conn: Connection, data: dict[str, Any]) -> None:
        """Answer on the session that asked (the shard owning the guild)."""
        guild_id = int(data["guild_id"])
        members = [u.member_payload() for u in [self.world.bot, *self.world.users]]
        session = next((s for s in self.sessions.values() if s.conn is conn), None)
        if session is None:
            return
        await self._dispatch(session, "GUILD_MEMBERS_CHUNK", {
            "guild_id": str(guild_id),
            "members": members,
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": [],
            "nonce": data.get("nonce"),
        })

    async def _dispatch(self, session: Session, event: str, data: dict[str, Any]) -> None:
        session.seq += 1
        entry = {"op": DISPATCH, "t": event, "s": session.seq, "d": data}
        session.log.append(entry)
        if session.conn is not None:
            await session.conn.send(entry)

    def session_for(self, guild_id: int | None) -> Session | None:
        """The newest session whose shard owns guild_id (None: a DM, shard 0)."""
        owners = [s for s in self.sessions.values() if s.owns(guild_id)]
        return owners[-1] if owners else None

    def shard_session(self, shard_id: int) -> Session | None:
        """The newest session identified as shard_id (of any count)."""
        matching = [s for s in self.sessions.values() if s.shard[0] == shard_id]
        return matching[-1] if matching else None

    async def dispatch(self, event: str, data: dict[str, Any], guild_id: int | None = None) -> None:
        """Send an event over the session of the shard owning its guild (data's guild_id, or id for
        GUILD_* events; none: shard 0); while that session reconnects, the event waits for RESUME."""
        if guild_id is None:
            raw = data.get("id") if event in GUILD_EVENTS else data.get("guild_id")
            guild_id = int(raw) if raw is not None else None
        if self.current is None:
            raise RuntimeError("no bot has identified on the gateway yet")
        session = self.session_for(guild_id)
        if session is None:
            raise RuntimeError(f"no session owns guild {guild_id}: identified shards are "
                               f"{sorted({s.shard for s in self.sessions.values()})}")
        await self._dispatch(session, event, data)

    async def force_reconnect(self, how: str = "op7", timeout: float = 10.0, shard_id: int | None = None) -> ResumeRecord:
        """Make the bot reconnect (op 7 RECONNECT, or a close with resumable code 4000) and wait for RESUME.

        shard_id picks that shard's session; default: the most recently identified one.
        """
        session = self.current if shard_id is None else self.shard_session(shard_id)
        if session is None or session.conn is None:
            raise RuntimeError("no connected session to disconnect")
        before = len(self.resumes)
        if how == "op7":
            await session.conn.send({"op": RECONNECT, "d": None})
        elif how == "close":
            asyncio.get_running_loop().create_task(session.conn.ws.close(code=4000, message=b"forced by test"))
        else:
            raise ValueError("how must be 'op7' or 'close'")
        await self.notifier.wait_for(lambda: len(self.resumes) > before, timeout)
        return self.resumes[-1]

    async def drop(self, shard_id: int | None = None, timeout: float = 10.0) -> None:
        """Close a session's connection (resumable code 4000) and hold the bot's reconnection
        (no HELLO) until restore(): the gateway stays down as long as the test needs."""
        session = self.current if shard_id is None else self.shard_session(shard_id)
        if session is None or session.conn is None:
            raise RuntimeError("no connected session to drop")
        self.held = asyncio.Event()
        self._resumes_before_drop = len(self.resumes)
        conn = session.conn
        await conn.ws.close(code=4000, message=b"dropped by test")
        await self.notifier.wait_for(lambda: conn.closed_at is not None, timeout)

    async def restore(self, timeout: float = 10.0) -> ResumeRecord:
        """Let the held reconnection through and wait for its RESUME."""
        if self.held is None:
            raise RuntimeError("drop() first")
        held, self.held = self.held, None
        held.set()
        await self.notifier.wait_for(lambda: len(self.resumes) > self._resumes_before_drop, timeout)
        return self.resumes[-1]

    async def close_all(self) -> None:
        for conn in self.connections:
            if not conn.ws.closed:
                await conn.ws.close(code=1001, message=b"double shutting down")
