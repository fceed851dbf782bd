"""Plivo callbacks. Verify, parse, enqueue, answer; the XML comes from workers.providers.plivo
because Plivo acts on the answer (the customer's call runs it)."""

from __future__ import annotations

from flask import Blueprint, Response, request

from shared.celery_config import TASK_CALL_STATUS, TASK_PROVIDER_CALLBACK
from shared.store import TERMINAL_STATES, Replay
from webhooks.deps import deps, enqueue
from webhooks.parsing import require, transfer_id_arg
from webhooks.security import NONCE_WINDOW, refuse_replay, verify_plivo
from workers.providers import plivo as provider

bp = Blueprint("plivo", __name__, url_prefix="/plivo")

_ENDED = frozenset({"completed", "busy", "failed", "timeout", "no-answer", "cancel", "hangup"})


def _params(*required: str) -> dict[str, str]:
    source = request.form if request.method == "POST" else request.args
    params = {k: v for k, v in source.items() if k != "transfer_id"}
    require(params, *required)
    return params


def _xml(body: str) -> Response:
    return Response(body, status=200, mimetype="application/xml")


@bp.route("/dial-up", methods=["GET", "POST"])
def dial_up() -> Response:
    """The XML for the customer's leg: dial the human, from the pending transfer's flag."""
    claim = verify_plivo(claim_nonce=False)
    transfer_id = transfer_id_arg()
    params = _params()
    d = deps()
    # The hot path: one round trip claims the nonce, reads the transfer and its flag, and
    # marks the dial-up served.
    try:
        transfer, number = d.store.serve_dial_up(
            transfer_id, "dial-up XML served; dialing the human agent", claim=claim,
            claim_ttl=NONCE_WINDOW)
    except Replay:
        refuse_replay()
        raise  # unreachable: refuse_replay aborts
    if transfer is None or transfer["state"] in TERMINAL_STATES or not number:
        # Never strand the customer: back to the AI, or an apology.
        if transfer is not None:
            enqueue(TASK_PROVIDER_CALLBACK, provider="plivo", kind="dial-up-missing",
                    transfer_id=transfer_id, params=params)
        return _xml(provider.resume_xml(d.settings))
    return _xml(provider.dial_up_xml(d.settings, transfer, number))


@bp.post("/whisper")
def whisper() -> Response:
    """Plivo's confirmSound: fetched when the human answers; played to them alone."""
    verify_plivo()
    transfer_id = transfer_id_arg()
    store = deps().store
    transfer = store.get_transfer(transfer_id)
    if transfer is not None and transfer["state"] not in TERMINAL_STATES:
        # Recorded for the outcome: a screened human who picked up but did not press the
        # key declined, rather than did not answer.
        store.set_fields(transfer_id, human_picked_up="1")
        store.note(transfer_id, "human agent picked up; briefing played")
    return _xml(provider.whisper_xml(transfer))


@bp.post("/hold")
def hold() -> Response:
    """Plivo's dialMusic: what the customer hears while the human is being reached."""
    verify_plivo()
    return _xml(provider.hold_xml(deps().store.get_transfer(transfer_id_arg())))


@bp.post("/dial-action")
def dial_action() -> Response:
    """The Dial is over; the answer decides what the customer's call does next."""
    verify_plivo()
    transfer_id = transfer_id_arg()
    params = _params("DialStatus")
    attempt = request.args.get("attempt", "0")
    params["attempt"] = attempt if attempt.isdigit() else "0"
    d = deps()
    transfer = d.store.get_transfer(transfer_id) if params["DialStatus"] != "completed" \
        else None
    if transfer is not None:
        # Not reached: the next fallback destination, if the template has one (one atomic
        # step in the store, answered at once: Plivo runs this answer on the call).
        outcome, current, number = d.store.advance_destination(
            transfer_id, int(params["attempt"]),
            provider.failure_reason(transfer, params["DialStatus"]))
        if outcome in ("next", "stale") and number:
            # The store has recorded the step; the answer dials the current destination.
            return _xml(provider.dial_up_xml(d.settings, {**transfer, "attempt": str(current)},
                                             number))
    enqueue(TASK_PROVIDER_CALLBACK, provider="plivo", kind="dial-action",
            transfer_id=transfer_id, params=params)
    return _xml(provider.dial_action_xml(d.settings, params["DialStatus"]))


@bp.post("/dial-callback")
def dial_callback() -> Response:
    """Dial events of the human's leg (DialAnswer, DialHangup)."""
    verify_plivo()
    transfer_id = transfer_id_arg()
    params = _params("Event")
    enqueue(TASK_PROVIDER_CALLBACK, provider="plivo", kind="dial-callback",
            transfer_id=transfer_id, params=params)
    return Response(status=200)


@bp.post("/status")
def customer_status() -> Response:
    """The customer call's hangup URL (configured by the platform; ?lead_id=... optional)."""
    verify_plivo()
    params = _params("CallUUID")
    status = params.get("CallStatus", "completed")
    if status in _ENDED:
        enqueue(TASK_CALL_STATUS, provider="plivo", call_id=params["CallUUID"], status=status,
                lead_id=request.args.get("lead_id") or None)
    return Response(status=200)
