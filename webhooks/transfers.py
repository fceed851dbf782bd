"""POST /transfers: the producer API over HTTP, for platforms that are not in Python."""

from __future__ import annotations

from flask import Blueprint, Response, abort, jsonify, request

from webhooks.deps import deps
from webhooks.security import verify_bearer

bp = Blueprint("transfers", __name__)

_STATUS_CODES = {"transfer_requested": 202, "transfer_in_progress": 409}


@bp.post("/transfers")
def create_transfer() -> tuple[Response, int]:
    verify_bearer(deps().settings.api_token)
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        abort(400, "expected a JSON object")
    result = deps().client.connect_to_live_agent(body)
    code = _STATUS_CODES.get(result["status"], 503 if result.get("error") ==
                             "service_unavailable" else 422)
    return jsonify(result), code


@bp.get("/transfers/leads/<lead_id>")
def lead_status(lead_id: str) -> tuple[Response, int]:
    """The lead's transfer status, its latest transfer's timeline and terminal event."""
    verify_bearer(deps().settings.api_token)
    report = deps().store.lead_report(lead_id)
    if report is None:
        abort(404)
    return jsonify(report), 200
