"""What every provider blueprint checks in a request, after authentication."""

from __future__ import annotations

from collections.abc import Mapping

from flask import abort, request


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
