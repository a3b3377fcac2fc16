"""The bot's database: one schema (SQLAlchemy Core tables, Alembic migrations) for the request
history, the model registry, the serving choices of every server, fine-tune jobs and their
queue, and servers the bot left. SQLite (aiosqlite) by default; the same tables and queries
run on PostgreSQL (asyncpg) by changing only the URL. `python -m bot.db copy` moves one
database into another."""
