"""Per-server settings (/settings): where the bot answers, mentions on or off, the default
model, temperature and length, and the output filter with its extra words.

Revision ID: 0004
Revises: 0002 (the merge puts it after 0003)
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "server_settings",
        sa.Column("guild_id", sa.BigInteger, primary_key=True),
        sa.Column("channels", sa.JSON, nullable=False),
        sa.Column("mentions", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("model", sa.String(32), nullable=False, server_default=""),
        sa.Column("temperature", sa.Float, nullable=True),
        sa.Column("length", sa.Integer, nullable=True),
        sa.Column("filter", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("words", sa.JSON, nullable=False),
        sa.Column("updated_by", sa.BigInteger, nullable=True),
        sa.Column("updated_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("server_settings")
