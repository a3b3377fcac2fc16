"""HTTP control endpoints (/_control/...) so an out-of-process driver can act like a Discord user."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .interactions import InteractionHandle
from .recording import StoredMessage

if TYPE_CHECKING:
    from .server import DiscordDouble

Handler = Callable[[web.Request], Awaitable[web.Response]]


def _reply(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data), status=status, content_type="application/json")


def message_json(message: StoredMessage) -> dict[str, Any]:
    """Message payload plus the double's history view (every content shown, oldest first)."""
    return {**message.payload(), "contents": message.contents, "kind": message.kind,
            "allowed_mentions": message.allowed_mentions}


def handle_json(handle: InteractionHandle) -> dict[str, Any]:
    final = handle.messages[0] if handle.messages else None
    return {
        "interaction_id": str(handle.id),
        "ack_type": handle.ack_type,
        "ack_latency": handle.ack_latency,
        "final_latency": handle.final_latency,
        "ephemeral": handle.ephemeral,
        "final": message_json(final) if final else None,
        "messages": [message_json(m) for m in handle.messages],
        "choices": handle.choices,
        "modal": handle.modal,
        "violations": [{"kind": v.kind, "detail": v.detail} for v in handle.violations],
    }


def control_routes(double: DiscordDouble) -> list[web.RouteDef]:
    """state, wait_ready, command (returns the final reply), click, reconnect."""

    def options_from_json(raw: dict[str, Any]) -> dict[str, Any]:
        options: dict[str, Any] = {}
        for name, value in raw.items():
            if isinstance(value, dict) and "attachment" in value:
                spec = value["attachment"]
                data = base64.b64decode(spec["base64"]) if "base64" in spec else spec.get("text", "").encode()
                value = double.add_attachment(
                    spec["filename"], data, spec.get("content_type", "text/plain; charset=utf-8"),
                    spec.get("declared_size"),
                )
            options[name] = value
        return options

    async def state(request: web.Request) -> web.Response:
        gw = double.gateway
        return _reply({
            "rest_base": double.rest_base,
            "gateway_url": double.gateway_url,
            "ready": gw.current is not None and gw.current.ready,
            "identifies": gw.identifies,
            "resumes": len(gw.resumes),
            "shards": double.world.shards,
            "sessions": [{"shard": list(s.shard), "ready": s.ready, "connected": s.conn is not None}
                         for s in gw.sessions.values()],
            "global_commands": sorted(double.commands()),
            "guild_commands": {str(g): sorted(c) for g, c in double.rest.guild_commands.items()},
            "violations": [{"kind": v.kind, "detail": v.detail} for v in double.violations],
            "unknown_requests": [f"{r.method} {r.path}" for r in double.unknown_requests],
        })

    async def wait_ready(request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else {}
        timeout = float(body.get("timeout", 60))
        await double.wait_ready(timeout, body.get("shards"))
        if body.get("commands"):
            await double.wait_commands(body["commands"], body.get("guild_id"), timeout)
        return await state(request)

    async def command(request: web.Request) -> web.Response:
        body = await request.json()
        handle = await double.send_command(
            body["name"], options_from_json(body.get("options", {})), user=body.get("user"),
            guild_id=body.get("guild_id"), channel_id=body.get("channel_id"),
            permissions=body.get("permissions"), focused=body.get("focused"),
        )
        await handle.wait_final(timeout=float(body.get("timeout", 60)), settle=float(body.get("settle", 0.5)))
        return _reply(handle_json(handle))

    async def click(request: web.Request) -> web.Response:
        body = await request.json()
        message = double.rest.messages[int(body["message_id"])]
        handle = await double.click(message, body["custom_id"], user=body.get("user"))
        await handle.wait_final(timeout=float(body.get("timeout", 60)), settle=float(body.get("settle", 0.5)))
        return _reply(handle_json(handle))

    async def reconnect(request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else {}
        record = await double.force_reconnect(body.get("how", "op7"))
        return _reply({"session_id": record.session_id, "replayed": record.replayed})

    def timeouts_to_504(handler: Handler) -> Handler:
        async def wrapped(request: web.Request) -> web.Response:
            try:
                return await handler(request)
            except (TimeoutError, asyncio.TimeoutError) as exc:
                return _reply({"error": f"timed out waiting for the bot {exc}".strip()}, status=504)
            except KeyError as exc:
                return _reply({"error": f"not found: {exc}"}, status=404)

        return wrapped

    return [
        web.get("/_control/state", state),
        web.post("/_control/wait_ready", timeouts_to_504(wait_ready)),
        web.post("/_control/command", timeouts_to_504(command)),
        web.post("/_control/click", timeouts_to_504(click)),
        web.post("/_control/reconnect", timeouts_to_504(reconnect)),
    ]
