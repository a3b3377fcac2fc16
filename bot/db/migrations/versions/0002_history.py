"""The request history moves into the one database (it had its own SQLite file); jobs learn
which worker runs them, its heartbeat, and a cancel request another process can make.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "requests",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("guild_id", sa.BigInteger, nullable=True),
        sa.Column("channel_id", sa.BigInteger, nullable=True),
        sa.Column("user_id", sa.BigInteger, nullable=False),
        sa.Column("command", sa.Text, nullable=False),
        sa.Column("prompt", sa.Text, nullable=False),
        sa.Column("window", sa.Text, nullable=False),
        sa.Column("output", sa.Text, nullable=False),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("model_version", sa.Text, nullable=False),
        sa.Column("sampling", sa.JSON, nullable=False),
        sa.Column("latency_ms", sa.Integer, nullable=False),
        sa.Column("ack_ms", sa.Integer, nullable=True),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("error", sa.Text, nullable=False, server_default=""),
    )
    op.create_index("requests_user", "requests", ["user_id", "created_at"])
    op.create_index("requests_guild", "requests", ["guild_id", "created_at"])
    op.create_index("requests_created", "requests", ["created_at"])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("worker", sa.Text, nullable=True))
        batch.add_column(sa.Column("heartbeat_at", sa.Float, nullable=True))
        batch.add_column(sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        for column in ("cancel_requested", "heartbeat_at", "worker"):
            batch.drop_column(column)
    op.drop_table("requests")
