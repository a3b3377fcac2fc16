"""`python -m bot.db copy --from URL --to URL`: copy the bot's database into another one
(see bot.db.copy and docs/scaling.md). Errors are one line on stderr, exit status 1."""

from __future__ import annotations

import argparse
import asyncio
import sys

from charlm.errors import CharLMError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot.db", description="The bot's database.")
    commands = parser.add_subparsers(dest="command", required=True)
    copy = commands.add_parser("copy", help="copy every row into an empty database (e.g. SQLite into PostgreSQL)")
    copy.add_argument("--from", dest="source", required=True, help="e.g. sqlite:///data/charbot.sqlite3")
    copy.add_argument("--to", dest="target", required=True, help="e.g. postgresql://charbot@db:5432/charbot")
    args = parser.parse_args(argv)

    from bot.config import database_url
    from bot.db.copy import copy_database
    from bot.db.engine import shown

    urls = []
    for flag, url in (("--from", args.source), ("--to", args.target)):
        normal = database_url(url)
        if normal is None:
            print(f"error: {flag} must be a sqlite:/// or postgresql:// URL", file=sys.stderr)
            return 1
        urls.append(normal)
    try:
        copied = asyncio.run(copy_database(*urls))
    except CharLMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    rows = ", ".join(f"{n} {name}" for name, n in copied.items())
    print(f"copied {shown(urls[0])} into {shown(urls[1])}: {rows}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
