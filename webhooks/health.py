"""Liveness and readiness."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from webhooks.deps import deps

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    checks = {"redis": False, "broker": False}
    try:
        checks["redis"] = deps().store.ping()
    except Exception:  # noqa: BLE001 - any failure means not ready
        checks["redis"] = False
    try:
        with deps().celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
            checks["broker"] = True
    except Exception:  # noqa: BLE001
        checks["broker"] = False
    ok = all(checks.values())
    return jsonify({"status": "ready" if ok else "unavailable", **checks}), 200 if ok else 503
