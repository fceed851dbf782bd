"""Liveness and readiness."""

from __future__ import annotations

import redis
from flask import Blueprint, Response, jsonify
from prometheus_client import CONTENT_TYPE_LATEST

from webhooks.deps import deps

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text format; the numbers of every process, kept in Redis."""
    try:
        body = deps().metrics.render()
    except redis.RedisError:
        return Response("redis unavailable\n", status=503, mimetype="text/plain")
    return Response(body, mimetype=CONTENT_TYPE_LATEST)


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
