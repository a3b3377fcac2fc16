"""Servers kept apart: versions owned by a server, per-server serving, the job queue, departures.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ACTIVE = sa.text("state IN ('queued', 'running')")


def upgrade() -> None:
    op.create_table(
        "versions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("guild_id", sa.BigInteger, nullable=False),
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("path", sa.String(300), nullable=False),
        sa.Column("card", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("job_id", sa.Integer, nullable=True),
        sa.UniqueConstraint("name", "number", name="versions_name_number"),
    )
    op.create_index("versions_guild_name", "versions", ["guild_id", "name"])
    op.create_table(
        "serving",
        sa.Column("scope", sa.BigInteger, primary_key=True),
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("version_id", sa.Integer, sa.ForeignKey("versions.id", ondelete="RESTRICT"), nullable=True),
        sa.Column("set_by", sa.BigInteger, nullable=True),
        sa.Column("set_at", sa.Float, nullable=False),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float, nullable=True),
        sa.Column("finished_at", sa.Float, nullable=True),
        sa.Column("user_id", sa.BigInteger, nullable=False),
        sa.Column("guild_id", sa.BigInteger, nullable=True),
        sa.Column("channel_id", sa.BigInteger, nullable=True),
        sa.Column("base", sa.String(32), nullable=False),
        sa.Column("base_version", sa.String(16), nullable=False),
        sa.Column("target", sa.String(32), nullable=False),
        sa.Column("target_version", sa.String(16), nullable=False, server_default=""),
        sa.Column("corpus_name", sa.String(200), nullable=False),
        sa.Column("corpus_sha256", sa.String(64), nullable=False),
        sa.Column("corpus_chars", sa.Integer, nullable=False),
        sa.Column("cleaning", sa.Text, nullable=False),
        sa.Column("settings", sa.JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("progress", sa.JSON, nullable=False),
        sa.Column("heldout_bpc", sa.Float, nullable=True),
        sa.Column("base_heldout_bpc", sa.Float, nullable=True),
        sa.Column("served", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("error", sa.Text, nullable=False, server_default=""),
        sa.Column("pid", sa.Integer, nullable=True),
    )
    op.create_index("jobs_state", "jobs", ["state", "id"])
    op.create_index("jobs_guild", "jobs", ["guild_id", "id"])
    op.create_index("jobs_one_active_per_guild", "jobs", ["guild_id"], unique=True,
                    sqlite_where=ACTIVE, postgresql_where=ACTIVE)
    op.create_table(
        "departures",
        sa.Column("guild_id", sa.BigInteger, primary_key=True),
        sa.Column("left_at", sa.Float, nullable=False),
    )
    op.create_table(
        "meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )


def downgrade() -> None:
    for table in ("meta", "departures", "jobs", "serving", "versions"):
        op.drop_table(table)
