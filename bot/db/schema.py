"""Table definitions: the one description of the schema the queries are written against.

Ids of Discord objects are BigInteger snowflakes. `guild_id = 0` (OWNERS) means "the bot's
owners": a version nobody's server owns, or, in `serving`, the default every server gets.
"""

from __future__ import annotations

import sqlalchemy as sa

OWNERS = 0
"""The scope of what every server gets; no Discord guild has id 0."""
STATES = ("queued", "training", "publishing", "succeeded", "failed", "cancelled", "interrupted")
"""A fine-tune job's states; docs/finetune.md draws who moves a job between them."""
ACTIVE_STATES = STATES[:3]
FINAL_STATES = STATES[3:]
ACTIVE = sa.text("state IN ('queued', 'training', 'publishing')")

metadata = sa.MetaData()

versions = sa.Table(
    "versions", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("guild_id", sa.BigInteger, nullable=False),  # the server it was trained in; 0: the owners'
    sa.Column("name", sa.String(32), nullable=False),
    sa.Column("number", sa.Integer, nullable=False),  # v<number>, unique per name across servers
    sa.Column("path", sa.String(300), nullable=False),  # model folder, relative to [finetune] models_dir
    sa.Column("card", sa.JSON, nullable=False),  # charlm's card.json: base, corpus, history, held-out
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("job_id", sa.Integer, nullable=True),
    sa.UniqueConstraint("name", "number", name="versions_name_number"),
    sa.Index("versions_guild_name", "guild_id", "name"),
)

serving = sa.Table(
    "serving", metadata,
    sa.Column("scope", sa.BigInteger, primary_key=True),  # a guild id, or 0: every server's default
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("version_id", sa.Integer, sa.ForeignKey("versions.id", ondelete="RESTRICT"), nullable=True),
    # NULL version_id: the shipped v0 (alice, seuss)
    sa.Column("set_by", sa.BigInteger, nullable=True),
    sa.Column("set_at", sa.Float, nullable=False),
)

jobs = sa.Table(
    "jobs", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),  # unix seconds, UTC; the queue's order with id
    sa.Column("started_at", sa.Float, nullable=True),
    sa.Column("finished_at", sa.Float, nullable=True),
    sa.Column("user_id", sa.BigInteger, nullable=False),
    sa.Column("guild_id", sa.BigInteger, nullable=True),
    sa.Column("channel_id", sa.BigInteger, nullable=True),
    sa.Column("base", sa.String(32), nullable=False),
    sa.Column("base_version", sa.String(16), nullable=False),  # e.g. v0 (shipped) or v3
    sa.Column("target", sa.String(32), nullable=False),
    sa.Column("target_number", sa.Integer, nullable=True),  # v<number>, allocated when a trainer claims it
    sa.Column("corpus_name", sa.String(200), nullable=False),
    sa.Column("corpus_sha256", sa.String(64), nullable=False),
    sa.Column("corpus_chars", sa.Integer, nullable=False),
    sa.Column("cleaning", sa.Text, nullable=False),
    sa.Column("settings", sa.JSON, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # STATES
    sa.Column("progress", sa.JSON, nullable=False),
    sa.Column("heldout_bpc", sa.Float, nullable=True),
    sa.Column("base_heldout_bpc", sa.Float, nullable=True),
    sa.Column("served", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("error", sa.Text, nullable=False, server_default=""),
    sa.Column("pid", sa.Integer, nullable=True),  # training process while running
    sa.Column("worker", sa.Text, nullable=True),  # who runs it: "host:pid" of a bot or bot.trainer
    sa.Column("heartbeat_at", sa.Float, nullable=True),  # refreshed by that worker while it runs
    sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),  # any process may set it
    sa.Column("plot", sa.LargeBinary, nullable=True),  # the loss plot (PNG) its trainer drew
    sa.Index("jobs_state", "state", "id"),
    sa.Index("jobs_guild", "guild_id", "id"),
    # at most one active job per server, enforced by the database itself
    sa.Index("jobs_one_active_per_guild", "guild_id", unique=True, sqlite_where=ACTIVE, postgresql_where=ACTIVE),
    # two trainers claiming jobs of one name at once never get the same number (one retries)
    sa.Index("jobs_active_target_number", "target", "target_number", unique=True, sqlite_where=ACTIVE,
             postgresql_where=ACTIVE),
)

departures = sa.Table(
    "departures", metadata,
    sa.Column("guild_id", sa.BigInteger, primary_key=True),
    sa.Column("left_at", sa.Float, nullable=False),  # the bot was removed; purged retention_days later
)

requests = sa.Table(
    "requests", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),  # unix seconds, UTC
    sa.Column("guild_id", sa.BigInteger, nullable=True),  # NULL in direct messages
    sa.Column("channel_id", sa.BigInteger, nullable=True),
    sa.Column("user_id", sa.BigInteger, nullable=False),
    sa.Column("command", sa.Text, nullable=False),
    sa.Column("prompt", sa.Text, nullable=False),  # the text as typed
    sa.Column("window", sa.Text, nullable=False),  # what the model read, padding included
    sa.Column("output", sa.Text, nullable=False),
    sa.Column("model", sa.Text, nullable=False),
    sa.Column("model_version", sa.Text, nullable=False),
    sa.Column("sampling", sa.JSON, nullable=False),  # temperature, length, ...
    sa.Column("latency_ms", sa.Integer, nullable=False),  # interaction to final reply
    sa.Column("ack_ms", sa.Integer, nullable=True),  # interaction to acknowledgement
    sa.Column("outcome", sa.Text, nullable=False),  # ok, busy, timeout, error
    sa.Column("error", sa.Text, nullable=False, server_default=""),
    sa.Index("requests_user", "user_id", "created_at"),
    sa.Index("requests_guild", "guild_id", "created_at"),
    sa.Index("requests_created", "created_at"),
)

meta = sa.Table(
    "meta", metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

server_settings = sa.Table(
    "server_settings", metadata,
    sa.Column("guild_id", sa.BigInteger, primary_key=True),  # one row per server that changed anything
    sa.Column("channels", sa.JSON, nullable=False),  # channel ids where the bot answers; []: everywhere
    sa.Column("mentions", sa.Boolean, nullable=False, server_default=sa.true()),  # answer @mentions and replies
    sa.Column("model", sa.String(32), nullable=False, server_default=""),  # mentions' default; "": the config's
    sa.Column("temperature", sa.Float, nullable=True),  # NULL: [generation] default_temperature
    sa.Column("length", sa.Integer, nullable=True),  # NULL: [generation] default_length
    sa.Column("filter", sa.Boolean, nullable=False, server_default=sa.true()),  # the output filter is on
    sa.Column("words", sa.JSON, nullable=False),  # the filter's extra words
    sa.Column("updated_by", sa.BigInteger, nullable=True),
    sa.Column("updated_at", sa.Float, nullable=False),
)
