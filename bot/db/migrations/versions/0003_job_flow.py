"""Jobs move through explicit states (queued, training, publishing, then one final state),
their version number is an integer allocated when a trainer claims them, and the trainer
stores the loss plot in the row (bot processes only show it).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

OLD_ACTIVE = sa.text("state IN ('queued', 'running')")
ACTIVE = sa.text("state IN ('queued', 'training', 'publishing')")
jobs = sa.table("jobs", sa.column("state", sa.String), sa.column("target_version", sa.String),
                sa.column("target_number", sa.Integer))


def upgrade() -> None:
    # partial indexes first: SQLite's batch mode rebuilds the table and would lose their WHERE
    op.drop_index("jobs_one_active_per_guild", "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("target_number", sa.Integer, nullable=True))
        batch.add_column(sa.Column("plot", sa.LargeBinary, nullable=True))
    op.execute(jobs.update().where(jobs.c.target_version.like("v%"))
               .values(target_number=sa.cast(sa.func.substr(jobs.c.target_version, 2), sa.Integer)))
    op.execute(jobs.update().where(jobs.c.state == "running").values(state="training"))
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("target_version")
    op.create_index("jobs_one_active_per_guild", "jobs", ["guild_id"], unique=True,
                    sqlite_where=ACTIVE, postgresql_where=ACTIVE)
    op.create_index("jobs_active_target_number", "jobs", ["target", "target_number"], unique=True,
                    sqlite_where=ACTIVE, postgresql_where=ACTIVE)


def downgrade() -> None:
    op.drop_index("jobs_active_target_number", "jobs")
    op.drop_index("jobs_one_active_per_guild", "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("target_version", sa.String(16), nullable=False, server_default=""))
    op.execute(jobs.update().where(jobs.c.target_number.is_not(None))
               .values(target_version="v" + sa.cast(jobs.c.target_number, sa.String)))
    op.execute(jobs.update().where(jobs.c.state.in_(["training", "publishing"])).values(state="running"))
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("plot")
        batch.drop_column("target_number")
    op.create_index("jobs_one_active_per_guild", "jobs", ["guild_id"], unique=True,
                    sqlite_where=OLD_ACTIVE, postgresql_where=OLD_ACTIVE)
