"""What the double remembers: raw REST calls, rule violations and the messages the bot produced."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .models import iso_now

LOADING = 1 << 7  # message flag of a deferred "Bot is thinking..." placeholder
EPHEMERAL = 1 << 6


@dataclass
class RecordedFile:
    """One multipart file part (e.g. files[0])."""

    field: str
    filename: str
    content_type: str
    data: bytes


@dataclass
class RecordedRequest:
    """One REST call as the double received it; path is relative to /api/v10."""

    method: str
    path: str
    query: dict[str, str]
    json: Any
    files: list[RecordedFile]
    at: float
    status: int = 0


@dataclass
class Violation:
    """A broken Discord rule (late ack, double ack, too long content, ...)."""

    kind: str
    detail: str
    interaction_id: int | None
    at: float


@dataclass
class StoredAttachment:
    """A file the double can serve; declared_size may differ from len(data) on purpose."""

    id: int
    filename: str
    data: bytes
    content_type: str
    url: str
    declared_size: int

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "filename": self.filename,
            "size": self.declared_size,
            "url": self.url,
            "proxy_url": self.url,
            "content_type": self.content_type,
        }


@dataclass
class Revision:
    """The state of a message after one create/edit, with the loop time it happened."""

    at: float
    content: str
    flags: int
    embeds: list[dict[str, Any]]
    components: list[dict[str, Any]]
    attachments: list[StoredAttachment]
    allowed_mentions: dict[str, Any] | None


@dataclass
class StoredMessage:
    """A message the bot created (interaction response, follow-up or channel message)."""

    id: int
    channel_id: int
    guild_id: int | None
    author: dict[str, Any]
    application_id: int
    interaction_id: int | None
    kind: str  # "original", "followup", "channel" (the bot's), or "user" (a member's, double.send_message)
    revisions: list[Revision] = field(default_factory=list)
    reference: dict[str, Any] | None = None
    """message_reference of a reply: {"message_id", "channel_id", "guild_id"?}."""
    mentions: list[dict[str, Any]] = field(default_factory=list)
    """Users it mentions (user objects), as MESSAGE_CREATE and message payloads carry them."""
    created_iso: str = field(default_factory=iso_now)
    deleted: bool = False

    @property
    def current(self) -> Revision:
        return self.revisions[-1]

    @property
    def content(self) -> str:
        return self.current.content

    @property
    def flags(self) -> int:
        return self.current.flags

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)

    @property
    def loading(self) -> bool:
        return bool(self.flags & LOADING)

    @property
    def attachments(self) -> list[StoredAttachment]:
        return self.current.attachments

    @property
    def embeds(self) -> list[dict[str, Any]]:
        return self.current.embeds

    @property
    def components(self) -> list[dict[str, Any]]:
        return self.current.components

    @property
    def allowed_mentions(self) -> dict[str, Any] | None:
        return self.current.allowed_mentions

    @property
    def contents(self) -> list[str]:
        """Every content this message showed, oldest first, skipping the loading placeholder."""
        return [r.content for r in self.revisions if not r.flags & LOADING]

    def custom_ids(self) -> list[str]:
        """custom_id of every component, depth first (action rows are flattened)."""
        found: list[str] = []

        def walk(items: list[dict[str, Any]]) -> None:
            for item in items:
                if "custom_id" in item:
                    found.append(item["custom_id"])
                walk(item.get("components", []))

        walk(self.components)
        return found

    def payload(self) -> dict[str, Any]:
        rev = self.current
        data: dict[str, Any] = {
            "id": str(self.id),
            "channel_id": str(self.channel_id),
            "author": self.author,
            "content": rev.content,
            "timestamp": self.created_iso,
            "edited_timestamp": iso_now() if len(self.revisions) > 1 else None,
            "tts": False,
            "mention_everyone": False,
            "mentions": self.mentions,
            "mention_roles": [],
            "attachments": [a.payload() for a in rev.attachments],
            "embeds": rev.embeds,
            "components": rev.components,
            "pinned": False,
            "type": 19 if self.reference else 0 if self.kind in ("channel", "user") else 20,
            "flags": rev.flags,
        }
        if self.reference:
            data["message_reference"] = {"type": 0, **self.reference}
        if self.guild_id is not None:
            data["guild_id"] = str(self.guild_id)
        if self.kind not in ("channel", "user"):
            data["webhook_id"] = str(self.application_id)
            data["application_id"] = str(self.application_id)
        return data
