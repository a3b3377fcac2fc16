"""The bot's database: one schema (SQLAlchemy Core tables, Alembic migrations) for the model
registry, the serving choices of every server, fine-tune jobs and their queue, and servers
the bot left. SQLite (aiosqlite) by default; the same tables and queries are meant to run
on PostgreSQL (asyncpg) by changing only the URL."""
