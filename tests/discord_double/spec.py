"""Request bodies checked against Discord's published OpenAPI spec (discord/discord-api-spec).

The spec is read from `../shared/discord-api-spec/openapi.json` next to the repository (or
the file named by DISCORD_API_SPEC); without it, or without jsonschema, nothing is
checked. Each JSON body the bot sends (a multipart request's `payload_json` too) is
validated against the `application/json` request schema of the operation its method and
path match; a mismatch is a violation (`openapi`), which `assert_no_violations` reports.
"""

from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

SPEC = Path(os.environ.get("DISCORD_API_SPEC", Path(__file__).resolve().parents[3] / "shared" / "discord-api-spec"
                           / "openapi.json"))


class SpecChecker:
    """The spec's request schemas by (method, path pattern)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        from jsonschema import Draft202012Validator

        self.components = spec.get("components", {})
        self.routes: list[tuple[str, re.Pattern[str], Any]] = []
        for path, operations in spec.get("paths", {}).items():
            pattern = re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)) + "$")
            literal = "{" not in path
            for method, operation in operations.items():
                schema = (((operation or {}).get("requestBody") or {}).get("content") or {}).get(
                    "application/json", {}).get("schema") if isinstance(operation, dict) else None
                if schema is None:
                    continue
                validator = Draft202012Validator({**schema, "components": self.components})
                # literal paths (…/@original) before templated ones (…/{message_id})
                self.routes.insert(0 if literal else len(self.routes), (method.upper(), pattern, validator))

    def errors(self, method: str, path: str, body: Any) -> list[str]:
        """Why `body` does not fit the operation's schema (empty: it fits, or none is known)."""
        for route_method, pattern, validator in self.routes:
            if route_method == method and pattern.match(path):
                found = sorted(validator.iter_errors(snowflakes_as_strings(body)), key=lambda e: list(e.absolute_path))
                return [f"{'.'.join(map(str, e.absolute_path)) or '(body)'}: {e.message[:200]}" for e in found[:3]]
        return []


def snowflakes_as_strings(value: Any, key: str = "") -> Any:
    """The spec types snowflakes as strings; Discord also takes integers (discord.py sends an
    upload's attachment `id` as its index, 0), so integer ids are compared as strings."""
    if isinstance(value, dict):
        return {k: snowflakes_as_strings(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [snowflakes_as_strings(v, key) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and (key == "id" or key.endswith("_id")):
        return str(value)
    return value


@lru_cache(maxsize=1)
def checker() -> SpecChecker | None:
    """The spec's checker, or None when the spec file or jsonschema is not there."""
    try:
        import jsonschema  # noqa: F401
    except ImportError:
        return None
    if not SPEC.is_file():
        return None
    return SpecChecker(json.loads(SPEC.read_text("utf-8")))
