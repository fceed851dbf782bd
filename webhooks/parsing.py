"""What every provider blueprint checks in a request, after authentication."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from flask import abort, request
from flask.json.provider import DefaultJSONProvider

# Deeper JSON than this is refused before it is parsed: the stdlib parser recurses once per
# level, so '[' * 30000 ended in a RecursionError (500). Our bodies nest three levels.
MAX_JSON_DEPTH = 32
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_JSON_BRACKET = re.compile(rb"[\[\]{}]")


def require(params: Mapping[str, str], *names: str) -> None:
    """400 unless every named field is present and non-empty."""
    if any(not params.get(name) for name in names):
        abort(400, f"missing one of {', '.join(names)}")


def transfer_id_arg() -> str:
    """The transfer id our own callback URLs carry as ?transfer_id=; 400 without it."""
    transfer_id = request.args.get("transfer_id", "")
    if not transfer_id or len(transfer_id) > 100:
        abort(400, "missing transfer_id")
    return transfer_id


def json_depth_ok(data: str | bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether no array/object in `data` is nested deeper than `limit` (strings skipped)."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    depth = 0
    for match in _JSON_BRACKET.finditer(_JSON_STRING.sub(b'""', raw)):
        depth += 1 if match.group(0) in b"[{" else -1
        if depth > limit:
            return False
    return True


class BoundedJSONProvider(DefaultJSONProvider):
    """The app's JSON: a body nested too deeply is a ValueError, which request.get_json
    answers as malformed (400, or None with silent=True), on every route."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        if not json_depth_ok(s):
            raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        return super().loads(s, **kwargs)
