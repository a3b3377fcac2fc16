"""`python -m bot [--config PATH] [--check | --health]`: run, check or probe the bot.

Errors are one line on stderr and a non-zero exit code; the token is read from the
DISCORD_TOKEN environment variable only, and never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

import discord

from charlm.errors import CharLMError

NO_TOKEN = ("DISCORD_TOKEN is not set: in the Discord developer portal (https://discord.com/developers/applications) "
            "open your application, then Bot -> Reset Token, and run export DISCORD_TOKEN=<the token>")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bot", description="The charlm Discord bot (/alice, /seuss).")
    parser.add_argument("--config", type=Path, default=Path("config.toml"),
                        help="settings file (default: config.toml in the current folder)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true",
                      help="check the config, models and database, generate a sample, and exit")
    mode.add_argument("--health", action="store_true",
                      help="exit 0 if the running bot's health file is fresh and its database opens, else 1 "
                           "with the reason; lists this process's shards and the database")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from bot.config import load_config

    try:
        config = load_config(args.config)
        if args.health:
            from bot.health import probe

            lines, problem = probe(config)
            if problem:
                print(problem, file=sys.stderr)
            print("\n".join(lines if problem else ["healthy", *lines]))
            return 1 if problem else 0
        from bot.finetune.settings import finetune_config

        finetune_config(config)  # the extension's own table: a bad value is one line here, not a traceback later
        if args.check:
            from bot.check import run_check

            discord.utils.setup_logging(level=logging.WARNING)
            for line in asyncio.run(run_check(config)):
                print(line)
            return 0
        token = os.environ.get("DISCORD_TOKEN", "").strip()
        if not token:
            raise CharLMError(NO_TOKEN)
        from bot.runner import run

        discord.utils.setup_logging(level=logging.INFO)
        asyncio.run(run(config, token))
    except CharLMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except discord.LoginFailure:
        print("error: Discord rejected DISCORD_TOKEN; reset it in the developer portal (Bot -> Reset Token)",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
