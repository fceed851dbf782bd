"""Twilio callbacks. Verify, parse, enqueue, answer: the logic lives in workers/."""

from __future__ import annotations

from flask import Blueprint, Response, abort, request

from shared.celery_config import TASK_CALL_STATUS, TASK_PROVIDER_CALLBACK
from shared.store import TERMINAL_STATES
from webhooks.deps import deps, enqueue
from webhooks.parsing import require, transfer_id_arg
from webhooks.security import verify_twilio
from workers.providers import twilio as provider
from workers.providers.base import screening_key

bp = Blueprint("twilio", __name__, url_prefix="/twilio")

_FORM = "application/x-www-form-urlencoded"
_CALL_ENDED = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})


def _form(*required: str) -> dict[str, str]:
    if request.mimetype != _FORM:
        abort(400, "expected a form-encoded body")
    params = {k: v for k, v in request.form.items()}
    require(params, *required)
    return params


def _accepted() -> Response:
    return Response(status=204)


def _twiml(body: str) -> Response:
    return Response(body, mimetype="application/xml")


def _attempt() -> str:
    """Which destination's leg our callback URL is about (?attempt=, absent for the first)."""
    attempt = request.args.get("attempt", "0")
    return attempt if attempt.isdigit() and len(attempt) < 3 else "0"


@bp.post("/status")
def customer_status() -> Response:
    """The customer call's own status callback (configured by the platform on its calls;
    it may add ?lead_id=... to report hangups of calls that never had a transfer)."""
    verify_twilio()
    params = _form("CallSid", "CallStatus")
    if params["CallStatus"] in _CALL_ENDED:
        enqueue(TASK_CALL_STATUS, provider="twilio", call_id=params["CallSid"],
                status=params["CallStatus"], lead_id=request.args.get("lead_id") or None)
    return _accepted()


@bp.post("/whisper")
def whisper() -> Response:
    """The briefing TwiML Twilio fetches to announce to the human alone."""
    verify_twilio()
    transfer = deps().store.get_transfer(transfer_id_arg())
    return _twiml(provider.whisper_twiml(transfer))


@bp.post("/screen")
def screen() -> Response:
    """The screened human answered: the briefing and the key prompt (a <Gather>)."""
    verify_twilio()
    transfer = deps().store.get_transfer(transfer_id_arg())
    if transfer is not None and transfer["state"] in TERMINAL_STATES:
        transfer = None
    return _twiml(provider.screen_twiml(deps().settings, transfer, _attempt(),
                                        request.form.get("AnsweredBy", "")))


@bp.post("/screen-result")
def screen_result() -> Response:
    """The <Gather>'s answer: the key joins the human to the conference; anything else
    (or nothing) declines, and their leg is hung up."""
    verify_twilio()
    transfer_id = transfer_id_arg()
    params = _form("CallSid")
    attempt = _attempt()
    params["attempt"] = attempt
    d = deps()
    transfer = d.store.get_transfer(transfer_id)
    pending = (transfer is not None and transfer["state"] not in TERMINAL_STATES
               and transfer.get("attempt", "0") == attempt)
    if pending and transfer is not None and params.get("Digits") == screening_key(transfer):
        return _twiml(provider.agent_join_twiml(d.settings, transfer, attempt))
    if pending:
        # Read by the leg's "completed" callback, which may come before the task below.
        d.store.set_fields(transfer_id, declined="1")
    enqueue(TASK_PROVIDER_CALLBACK, provider="twilio", kind="screen", transfer_id=transfer_id,
            params=params)
    return _twiml(provider.goodbye_twiml())


@bp.post("/agent-status")
def agent_status() -> Response:
    """Status of the human agent's call, which we place."""
    verify_twilio()
    params = _form("CallSid", "CallStatus")
    params["attempt"] = _attempt()
    enqueue(TASK_PROVIDER_CALLBACK, provider="twilio", kind="agent-status",
            transfer_id=transfer_id_arg(), params=params)
    return _accepted()


@bp.post("/conference")
def conference() -> Response:
    """Conference events of `transfer-{lead_id}`."""
    verify_twilio()
    params = _form("StatusCallbackEvent")
    enqueue(TASK_PROVIDER_CALLBACK, provider="twilio", kind="conference",
            transfer_id=transfer_id_arg(), params=params)
    return _accepted()
