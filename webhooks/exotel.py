"""Exotel requests: the Connect applet's dial-whom URL, the status callback and the
passthru. Authenticated by the secret token in the URL, then parsed and enqueued."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, abort, request

from shared.celery_config import TASK_CALL_STATUS, TASK_PROVIDER_CALLBACK
from shared.store import TERMINAL_STATES
from webhooks.deps import deps, enqueue
from webhooks.security import verify_exotel
from workers.providers import exotel as provider

bp = Blueprint("exotel", __name__, url_prefix="/exotel")


def _call_sid(values: Any) -> str:
    call_sid = values.get("CallSid") if hasattr(values, "get") else None
    if not isinstance(call_sid, str) or not call_sid or len(call_sid) > 100:
        abort(400, "missing CallSid")
    return call_sid


def _body() -> dict[str, Any]:
    """Exotel posts form or JSON (StatusCallbackContentType)."""
    if request.is_json:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            abort(400, "expected a JSON object")
        return body
    return {k: v for k, v in request.values.items() if k != "token"}


@bp.route("/dial-up", methods=["GET", "HEAD"])
def dial_up() -> Response:
    """Whom the Connect applet dials: the pending transfer's number, as text (or JSON)."""
    verify_exotel()
    call_sid = _call_sid(request.args)
    d = deps()
    head = request.method == "HEAD"
    transfer_id = d.store.transfer_for_call("exotel", call_sid)
    lead = request.args.get("CustomField", "")
    if transfer_id is None and lead:
        transfer_id = d.store.active_transfer(lead)
    transfer, number = None, None
    if transfer_id and head:  # a HEAD only looks
        transfer = d.store.get_transfer(transfer_id)
        number = d.store.get_flag(transfer["lead_id"]) if transfer else None
    elif transfer_id:
        transfer, number = d.store.serve_dial_up(
            transfer_id, "dial-up served; Exotel is dialing the human agent")
    if transfer is None or transfer["state"] in TERMINAL_STATES or not number:
        if transfer is not None and not head:
            enqueue(TASK_PROVIDER_CALLBACK, provider="exotel", kind="dial-up-missing",
                    transfer_id=transfer["transfer_id"], params={"CallSid": call_sid})
        return Response("no transfer pending\n", status=404, mimetype="text/plain")
    body, mimetype = provider.dial_up_body(d.settings, transfer, number)
    # Flask drops the body of a HEAD answer but keeps its headers, Content-Length included.
    return Response(body, status=200, mimetype=mimetype)


@bp.post("/status")
def customer_status() -> Response:
    """The customer call's StatusCallback (form or JSON); ?lead_id=... optional."""
    verify_exotel()
    body = _body()
    call_sid = _call_sid(body)
    params = provider.normalise_status(body)
    enqueue(TASK_CALL_STATUS, provider="exotel", call_id=call_sid,
            status=params.get("Status") or "completed",
            lead_id=request.args.get("lead_id") or None, params=params)
    return Response(status=200)


@bp.route("/passthru", methods=["GET", "POST"])
def passthru() -> Response:
    """A Passthru applet after the Connect applet: DialCallStatus says how the dial ended."""
    verify_exotel()
    body = _body()
    call_sid = _call_sid(body)
    enqueue(TASK_PROVIDER_CALLBACK, provider="exotel", kind="passthru", transfer_id="",
            call_id=call_sid, params=provider.normalise_status(body))
    return Response(status=200)
