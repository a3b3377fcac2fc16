"""Write the Docker test's config: a copy of the image's config.toml with the
[discord] table's api_base and gateway_url pointed at the Discord double.

    python tests/docker/make_test_config.py BASE.toml OUT.toml --api-base URL --gateway-url URL

Line-based (tomllib cannot write), so comments and everything else stay as in
the shipped config; the result is checked with tomllib.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tomllib

TABLE = re.compile(r"^\s*\[\s*([^\]\s]+)\s*\]\s*(#.*)?$")


def set_keys(text: str, table: str, values: dict[str, str]) -> str:
    lines = text.splitlines()
    out: list[str] = []
    current = None
    seen_table = False
    pending = dict(values)

    def flush() -> None:
        # Keys missing from the table go at its end.
        for key, value in pending.items():
            out.append(f"{key} = {json.dumps(value)}")
        pending.clear()

    for line in lines:
        match = TABLE.match(line)
        if match:
            if current == table:
                flush()
            current = match.group(1)
            seen_table = seen_table or current == table
        elif current == table:
            key = line.split("=", 1)[0].strip() if "=" in line else None
            if key in values:
                out.append(f"{key} = {json.dumps(values[key])}")
                pending.pop(key, None)
                continue
        out.append(line)
    if current == table:
        flush()
    if not seen_table:
        out += ["", f"[{table}]"]
        flush()
    return "\n".join(out) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("base")
    parser.add_argument("out")
    parser.add_argument("--api-base", required=True)
    parser.add_argument("--gateway-url", required=True)
    args = parser.parse_args()
    with open(args.base, encoding="utf-8") as f:
        text = f.read()
    wanted = {"api_base": args.api_base, "gateway_url": args.gateway_url}
    new = set_keys(text, "discord", wanted)
    parsed = tomllib.loads(new)
    got = {k: parsed.get("discord", {}).get(k) for k in wanted}
    if got != wanted:
        print(f"test config check failed: [discord] has {got}, wanted {wanted}", file=sys.stderr)
        return 1
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
