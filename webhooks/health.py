"""Liveness and readiness."""

from __future__ import annotations

import hmac

import redis
from flask import Blueprint, Response, abort, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST

from webhooks.deps import deps

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


def _operator() -> bool:
    """Whether the request may see operational detail: METRICS_TOKEN is unset (a private
    deployment), or the request carries it as a bearer token."""
    expected = deps().settings.metrics_token
    if not expected:
        return True
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(),
                                                              expected.encode())


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text format; the numbers of every process, kept in Redis. Volumes,
    outcomes and signature failures are for operators: behind METRICS_TOKEN when set."""
    if not _operator():
        abort(401)
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
    detail = checks if _operator() else {}
    return jsonify({"status": "ready" if ok else "unavailable", **detail}), 200 if ok else 503
