"""Exotel requests: the Connect applet's URL (dial whom, or programmable connect), the status
callback and the passthru. Authenticated by the secret token in the URL, then parsed and
enqueued."""

from __future__ import annotations

from typing import Any

import redis
from flask import Blueprint, Response, abort, request

from providers.exotel import callbacks
from providers.exotel.callbacks import MAX_ID
from providers.exotel.handoff import normalise_status
from providers.exotel.signature import verify_exotel
from shared.celery_config import TASK_CALL_STATUS, TASK_PROVIDER_CALLBACK, TRANSFERS_QUEUE
from shared.logs import get_logger
from webhooks.deps import Deps, deps, enqueue, with_account

bp = Blueprint("exotel", __name__, url_prefix="/exotel")
log = get_logger("webhooks.exotel")


def _call_sid(values: Any) -> str:
    call_sid = values.get("CallSid") if hasattr(values, "get") else None
    if not isinstance(call_sid, str) or not call_sid or len(call_sid) > MAX_ID:
        abort(400, "missing CallSid")
    return call_sid


def _body() -> dict[str, Any]:
    """Exotel posts form or JSON (StatusCallbackContentType)."""
    if request.is_json:
        try:
            body = request.get_json(silent=True)
        except RecursionError:  # '[[[[…' nested past the parser's limit
            abort(400, "JSON nested too deeply")
        if not isinstance(body, dict):
            abort(400, "expected a JSON object")
        return body
    return {k: v for k, v in request.values.items() if k != "token"}


def _nothing_pending() -> Response:
    """One answer for no transfer, an ended one, an unknown or a foreign lead, and Redis
    unreachable: nothing tells them apart. Exotel's flow goes on to the Connect applet's next
    applet, which the README has operators point back to the AI."""
    return Response("no transfer pending\n", status=404, mimetype="text/plain")


@bp.route("/dial-up", methods=["GET", "HEAD"])
def dial_up() -> Response:
    """Whom the Connect applet dials: the pending transfer's number, as text ("Dial whom" URL)
    or as programmable-connect JSON (dynamic URL, told apart by its Exotel-Version header)."""
    verify_exotel()
    call_sid = _call_sid(request.args)
    d = deps()
    try:
        answer = callbacks.dial_up(d.store, d.settings, call_sid,
                                   request.args.get("CustomField", ""),
                                   head=request.method == "HEAD",
                                   exotel_version=request.headers.get("Exotel-Version"))
    except redis.RedisError:
        # The number lives only in Redis: nothing Exotel sends (CallSid, CallFrom, CallTo,
        # CustomField set when the call was created) names it. Answer at once so the flow
        # moves on (to the AI, as configured); the deadline sweep fails the transfer later.
        log.warning("dial-up without Redis: answered as nothing pending",
                    extra={"provider": "exotel"})
        return _nothing_pending()
    if answer.missing:
        _tell_worker(d, answer.missing, call_sid)
    if answer.body is None:
        return _nothing_pending()
    # Flask drops the body of a HEAD answer but keeps its headers, Content-Length included.
    return Response(answer.body, status=200, mimetype=answer.mimetype)


def _tell_worker(d: Deps, transfer_id: str, call_sid: str) -> None:
    """The transfer fails at once rather than at its deadline; if the broker is down the
    deadline does it, and the customer's call is answered regardless."""
    _quietly(lambda: d.celery.send_task(
        TASK_PROVIDER_CALLBACK, queue=TRANSFERS_QUEUE,
        kwargs=with_account({"provider": "exotel", "kind": "dial-up-missing",
                             "transfer_id": transfer_id, "params": {"CallSid": call_sid}})))


def _quietly(step: Any) -> None:
    try:
        step()
    except Exception:  # bookkeeping must not cost the live call its answer
        log.warning("exotel dial-up bookkeeping failed", exc_info=True)


@bp.post("/status")
def customer_status() -> Response:
    """The customer call's StatusCallback (form or JSON); ?lead_id=... optional."""
    verify_exotel()
    body = _body()
    call_sid = _call_sid(body)
    params = normalise_status(body)
    lead_id = request.args.get("lead_id") or None
    if lead_id is not None:
        lead_id, accept = callbacks.checked_lead(deps().store, call_sid, lead_id)
        if not accept:
            # Same answer as an accepted callback: no oracle for which leads exist.
            log.warning("exotel status names a lead whose transfer is on another call; ignored",
                        extra={"provider": "exotel"})
            return Response(status=200)
    enqueue(TASK_CALL_STATUS, provider="exotel", call_id=call_sid,
            status=params.get("Status") or "completed", lead_id=lead_id, params=params)
    return Response(status=200)


@bp.route("/passthru", methods=["GET", "POST"])
def passthru() -> Response:
    """A Passthru applet after the Connect applet: CallType and DialWhomNumber say how the
    Connect ended. Found by CallSid in the worker."""
    verify_exotel()
    body = _body()
    call_sid = _call_sid(body)
    enqueue(TASK_PROVIDER_CALLBACK, provider="exotel", kind="passthru", transfer_id="",
            call_id=call_sid, params=normalise_status(body))
    return Response(status=200)
