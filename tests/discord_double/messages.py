"""Message bodies: Discord's validation rules and how creates/edits change a stored message."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .recording import EPHEMERAL, LOADING, RecordedFile, Revision, StoredAttachment

MAX_CONTENT, MAX_EMBED_TITLE, MAX_EMBED_DESCRIPTION = 2000, 256, 4096


class DiscordError(Exception):
    """An API error the double answers with instead of succeeding (also recorded as a violation)."""

    def __init__(self, status: int, code: int, message: str, errors: dict[str, Any] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.errors = status, code, message, errors

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors is not None:
            body["errors"] = self.errors
        return body


def _form_error(field: str, code: str, message: str) -> DiscordError:
    errors: dict[str, Any] = {"_errors": [{"code": code, "message": message}]}
    for part in reversed(field.split(".")):
        errors = {part: errors}
    return DiscordError(400, 50035, "Invalid Form Body", errors)


def validate(data: dict[str, Any], files: list[RecordedFile], creating: bool, prefix: str = "") -> None:
    """Raise DiscordError for bodies real Discord rejects (length limits, empty messages)."""
    content = data.get("content")
    if content is not None and len(content) > MAX_CONTENT:
        raise _form_error(prefix + "content", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_CONTENT} or fewer in length.")
    for index, embed in enumerate(data.get("embeds") or []):
        if len(embed.get("title") or "") > MAX_EMBED_TITLE:
            raise _form_error(f"{prefix}embeds.{index}.title", "BASE_TYPE_MAX_LENGTH", "Must be 256 or fewer in length.")
        if len(embed.get("description") or "") > MAX_EMBED_DESCRIPTION:
            raise _form_error(
                f"{prefix}embeds.{index}.description", "BASE_TYPE_MAX_LENGTH", "Must be 4096 or fewer in length."
            )
    if creating and not (content or data.get("embeds") or files or data.get("components") or data.get("poll")):
        raise DiscordError(400, 50006, "Cannot send an empty message")


def check_sizes(files: list[RecordedFile], limit: int) -> None:
    for file in files:
        if len(file.data) > limit:
            raise DiscordError(413, 40005, "Request entity too large")


def revise(
    previous: Revision | None,
    data: dict[str, Any],
    files: list[RecordedFile],
    at: float,
    store_file: Callable[[RecordedFile], StoredAttachment],
) -> Revision:
    """Apply a create (previous=None) or an edit body; unspecified fields keep their old value."""
    if previous is None:
        flags = int(data.get("flags") or 0)
    else:
        flags = previous.flags & ~LOADING
        if "flags" in data:
            flags = (previous.flags & EPHEMERAL) | (int(data["flags"] or 0) & ~EPHEMERAL)
    content = data["content"] if "content" in data else (previous.content if previous else "")
    return Revision(
        at=at,
        content=content or "",
        flags=flags,
        embeds=data["embeds"] or [] if "embeds" in data else (previous.embeds if previous else []),
        components=data["components"] or [] if "components" in data else (previous.components if previous else []),
        attachments=_attachments(previous, data, files, store_file),
        allowed_mentions=data.get("allowed_mentions", previous.allowed_mentions if previous else None),
    )


def _attachments(
    previous: Revision | None,
    data: dict[str, Any],
    files: list[RecordedFile],
    store_file: Callable[[RecordedFile], StoredAttachment],
) -> list[StoredAttachment]:
    """discord.py lists kept attachments by snowflake and new uploads by files[N] index in 'attachments'."""
    old = {str(a.id): a for a in (previous.attachments if previous else [])}
    uploads = {f.field: f for f in files}
    if "attachments" not in data:
        return list(old.values()) + [store_file(f) for f in files]
    result: list[StoredAttachment] = []
    for entry in data["attachments"] or []:
        key = str(entry["id"])
        if f"files[{key}]" in uploads:
            result.append(store_file(uploads[f"files[{key}]"]))
        elif key in old:
            result.append(old[key])
    return result


MESSAGE_CONTENT_INTENT = 1 << 15


def visible_content(payload: dict[str, Any], intents: int, bot_id: int) -> None:
    """Blank what a bot without the privileged MESSAGE_CONTENT intent does not get, as Discord
    does: content, embeds, attachments and components of messages that neither mention the
    bot nor are in a DM with it nor are its own."""
    if intents & MESSAGE_CONTENT_INTENT or "guild_id" not in payload:
        return
    if str(payload.get("author", {}).get("id")) == str(bot_id):
        return
    if any(str(m.get("id")) == str(bot_id) for m in payload.get("mentions", [])):
        return
    payload.update(content="", embeds=[], attachments=[], components=[])
