"""Exotel requests: the Connect applet's URL (dial whom, or programmable connect), the status
callback and the passthru. Authenticated by the secret token in the URL, then parsed and
enqueued."""

from __future__ import annotations

from typing import Any

import redis
from flask import Blueprint, Response, abort, request

from providers.exotel import handoff as provider
from providers.exotel.signature import verify_exotel
from shared.celery_config import TASK_CALL_STATUS, TASK_PROVIDER_CALLBACK, TRANSFERS_QUEUE
from shared.logs import get_logger
from shared.store import TERMINAL_STATES, Store
from webhooks.deps import Deps, deps, enqueue

bp = Blueprint("exotel", __name__, url_prefix="/exotel")
log = get_logger("webhooks.exotel")
MAX_ID = 100


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


def _exotel_transfer(store: Store, call_sid: str, custom_field: str, *, serve: bool
                     ) -> tuple[dict[str, str] | None, str | None]:
    """The Exotel transfer of this call, and the number to dial if it is pending.

    Found by the CallSid Exotel sends (the request's call_id). CustomField (the lead id, where
    the platform set it) is a fallback only for an Exotel transfer on this very call: a token
    that leaked must not reach another provider's transfer or another call's."""
    transfer_id = store.transfer_for_call("exotel", call_sid)
    if transfer_id is None and custom_field and len(custom_field) <= MAX_ID:
        transfer_id = store.active_transfer(custom_field)
        found = store.get_transfer(transfer_id) if transfer_id else None
        if not _ours(found, call_sid):
            return None, None
    if transfer_id is None:
        return None, None
    if serve:
        transfer, number = store.serve_dial_up(
            transfer_id, "dial-up served; Exotel is dialing the human agent")
    else:  # a HEAD only looks
        transfer = store.get_transfer(transfer_id)
        number = store.get_flag(transfer["lead_id"]) if transfer else None
    if not _ours(transfer, call_sid):
        return None, None
    return transfer, number


def _ours(transfer: dict[str, str] | None, call_sid: str) -> bool:
    return (transfer is not None and transfer.get("provider") == "exotel"
            and transfer.get("call_id") == call_sid)


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
    head = request.method == "HEAD"
    programmable = provider.programmable_connect(d.settings,
                                                request.headers.get("Exotel-Version"))
    try:
        transfer, number = _exotel_transfer(d.store, call_sid,
                                             request.args.get("CustomField", ""),
                                             serve=not head)
    except redis.RedisError:
        # The number lives only in Redis: nothing Exotel sends (CallSid, CallFrom, CallTo,
        # CustomField set when the call was created) names it. Answer at once so the flow
        # moves on (to the AI, as configured); the deadline sweep fails the transfer later.
        log.warning("dial-up without Redis: answered as nothing pending",
                    extra={"provider": "exotel"})
        return _nothing_pending()
    if transfer is None:
        return _nothing_pending()
    if transfer["state"] in TERMINAL_STATES or not number:
        if not head:
            _tell_worker(d, transfer["transfer_id"], call_sid)
        return _nothing_pending()
    if not programmable and transfer.get("attempt") == "":
        # Text dials one number: the destination reached is the first, not unknown.
        transfer_id = transfer["transfer_id"]
        _quietly(lambda: d.store.set_fields(transfer_id, attempt="0"))
    body, mimetype = provider.dial_up_body(d.settings, transfer, number, programmable)
    # Flask drops the body of a HEAD answer but keeps its headers, Content-Length included.
    return Response(body, status=200, mimetype=mimetype)


def _tell_worker(d: Deps, transfer_id: str, call_sid: str) -> None:
    """The transfer fails at once rather than at its deadline; if the broker is down the
    deadline does it, and the customer's call is answered regardless."""
    _quietly(lambda: d.celery.send_task(
        TASK_PROVIDER_CALLBACK, queue=TRANSFERS_QUEUE,
        kwargs={"provider": "exotel", "kind": "dial-up-missing", "transfer_id": transfer_id,
                "params": {"CallSid": call_sid}}))


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
    params = provider.normalise_status(body)
    lead_id = request.args.get("lead_id") or None
    if lead_id is not None:
        lead_id, accept = _checked_lead(deps().store, call_sid, lead_id)
        if not accept:
            # Same answer as an accepted callback: no oracle for which leads exist.
            log.warning("exotel status names a lead whose transfer is on another call; ignored",
                        extra={"provider": "exotel"})
            return Response(status=200)
    enqueue(TASK_CALL_STATUS, provider="exotel", call_id=call_sid,
            status=params.get("Status") or "completed", lead_id=lead_id, params=params)
    return Response(status=200)


def _checked_lead(store: Store, call_sid: str, lead_id: str) -> tuple[str | None, bool]:
    """(lead id to pass on, accept?). A call with a transfer speaks for its own lead only; a
    call without one may not speak for a lead that has a transfer in flight (a forged hangup
    would end it as transferred)."""
    if len(lead_id) > MAX_ID:
        return None, False
    transfer_id = store.transfer_for_call("exotel", call_sid)
    if transfer_id is not None:
        transfer = store.get_transfer(transfer_id)
        return (lead_id if transfer and transfer.get("lead_id") == lead_id else None), True
    if store.active_transfer(lead_id) or store.get_flag(lead_id) is not None:
        return None, False
    return lead_id, True


@bp.route("/passthru", methods=["GET", "POST"])
def passthru() -> Response:
    """A Passthru applet after the Connect applet: CallType and DialWhomNumber say how the
    Connect ended. Found by CallSid in the worker."""
    verify_exotel()
    body = _body()
    call_sid = _call_sid(body)
    enqueue(TASK_PROVIDER_CALLBACK, provider="exotel", kind="passthru", transfer_id="",
            call_id=call_sid, params=provider.normalise_status(body))
    return Response(status=200)
