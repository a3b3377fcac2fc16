"""Alembic environment: always run on a connection the bot hands over (see bot.db.engine)."""

from alembic import context

from bot.db.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
