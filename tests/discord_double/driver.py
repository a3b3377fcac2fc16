"""Client for the double's /_control endpoints (stdlib only), usable as a script by a Docker test.

    python -m tests.discord_double.driver http://127.0.0.1:P wait_ready --commands alice seuss
    python -m tests.discord_double.driver http://127.0.0.1:P command alice --option prompt=hello --user alice
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any


def call(base_url: str, endpoint: str, body: dict[str, Any] | None = None, timeout: float = 120.0) -> dict[str, Any]:
    """POST (or GET without body) to /_control/<endpoint> and return the decoded JSON."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{base_url.rstrip('/')}/_control/{endpoint}", data=data, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:  # 504 = timed out waiting, 404 = unknown command/message
        raise RuntimeError(f"{endpoint} failed with {error.code}: {error.read().decode()}") from None


def send_command(base_url: str, name: str, options: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """Run a slash command and return the final reply summary (see control.handle_json)."""
    return call(base_url, "command", {"name": name, "options": options or {}, **fields},
                timeout=float(fields.get("timeout", 60)) + 10)


def main() -> None:
    parser = argparse.ArgumentParser(description="drive a standalone Discord double")
    parser.add_argument("url", help="double base URL, e.g. http://127.0.0.1:8765")
    sub = parser.add_subparsers(dest="action", required=True)
    ready = sub.add_parser("wait_ready")
    ready.add_argument("--commands", nargs="*", default=[])
    ready.add_argument("--timeout", type=float, default=60)
    cmd = sub.add_parser("command")
    cmd.add_argument("name", help="e.g. alice or 'finetune status'")
    cmd.add_argument("--option", action="append", default=[], help="NAME=VALUE (JSON value or plain string)")
    cmd.add_argument("--user")
    cmd.add_argument("--timeout", type=float, default=60)
    sub.add_parser("state")
    args = parser.parse_args()
    try:
        result = run_action(args)
    except RuntimeError as error:
        sys.exit(str(error))
    print(json.dumps(result, indent=2))


def run_action(args: argparse.Namespace) -> dict[str, Any]:
    if args.action == "state":
        return call(args.url, "state")
    if args.action == "wait_ready":
        return call(args.url, "wait_ready", {"commands": args.commands, "timeout": args.timeout})
    options: dict[str, Any] = {}
    for item in args.option:
        name, _, raw = item.partition("=")
        try:
            options[name] = json.loads(raw)
        except json.JSONDecodeError:
            options[name] = raw
    return send_command(args.url, args.name, options, user=args.user, timeout=args.timeout)


if __name__ == "__main__":
    main()
