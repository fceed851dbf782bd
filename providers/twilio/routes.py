"""Twilio callbacks. Verify, parse, call one provider function (`callbacks`, or the
worker through a task), answer.

Two kinds of route. Status callbacks (/status, /agent-status, /conference, /amd) enqueue
and answer 204; a repeated idempotency token is not enqueued again, nor a callback that
cannot change the transfer (recorded here instead: `callbacks.needs_worker`, whose round
trip also checks the token of /agent-status and /conference), and with Redis or the
broker down they answer 503 (Twilio's answer is only a retry). TwiML routes (/screen,
/screen-result, /whisper) steer a live call: they answer the same TwiML to a repeated
request and answer without Redis or the broker, from what our own URL carries (signed by
Twilio with the rest of the URL); only the summary needs Redis, and without it the human
hears the generic introduction.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import redis
from flask import Blueprint, Response, abort, g, request

from providers.twilio import callbacks, markup
from providers.twilio.signature import NONCE_WINDOW, idempotency_token, verify_twilio
from shared.celery_config import TASK_CALL_STATUS, TASK_PROVIDER_CALLBACK
from shared.logs import get_logger
from shared.model import CallbackKind
from shared.store import Store
from webhooks.deps import deps, enqueue, try_enqueue
from webhooks.parsing import require, transfer_id_arg

bp = Blueprint("twilio", __name__, url_prefix="/twilio")
log = get_logger("webhooks.twilio")

_FORM = "application/x-www-form-urlencoded"
_CALL_ENDED = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})
_KEYS = frozenset("0123456789*#")
# Read from the record, and whether it could be read at all (Redis may be down).
_Record = tuple[dict[str, str] | None, bool]


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


def _record(transfer_id: str) -> _Record:
    """The transfer record, or (None, False) when Redis cannot be reached."""
    try:
        return deps().store.get_transfer(transfer_id), True
    except redis.RedisError as exc:
        log.warning("redis unavailable; answering from the URL",
                    extra={"path": request.path, "error": str(exc)})
        # One wait on an unreachable Redis per request: Twilio gives up after 15 s.
        g.redis_down = True
        return None, False


def _screen(transfer_id: str, record: _Record) -> dict[str, str]:
    """What the screening answers need: from our URL (?lead_id, key, timeout), else from
    the record (URLs given to Twilio before they carried it)."""
    args = request.args
    lead, key, timeout = args.get("lead_id", ""), args.get("key", ""), args.get("timeout", "")
    if lead and key:
        if len(lead) > 100 or key not in _KEYS or not (timeout.isdigit() and
                                                        3 <= int(timeout) <= 60):
            abort(400, "malformed screening parameters")
        ext = args.get("ext", "")
        if ext and not markup.valid_extension(ext):
            abort(400, "malformed screening parameters")
        return {"transfer_id": transfer_id, "lead_id": lead, "key": key, "timeout": timeout,
                "account": g.account, **({"ext": ext} if ext else {})}
    transfer, readable = record
    if not readable:
        abort(503)
    if transfer is None:
        return {}
    return {"transfer_id": transfer_id, **markup.screen_query(transfer, _attempt()),
            "account": g.account}


def _store() -> Store | None:
    """The store, or None once this request found Redis down."""
    return None if g.get("redis_down") else deps().store


def _enqueue_once(scope: str, **kwargs: Any) -> None:
    """Enqueue a callback from a TwiML route, once per delivery (Twilio's idempotency
    token): a retry of the request gets the same TwiML but enqueues nothing again. Best
    effort: the answer never waits on Redis or the broker."""
    token = request.headers.get("I-Twilio-Idempotency-Token", "")
    claim = f"idem:twilio:{scope}:{token}" if token and len(token) <= 200 and not \
        g.get("redis_down") else ""
    store = deps().store
    try:
        if claim and not store.claim_once(claim, ttl=NONCE_WINDOW):
            return
    except redis.RedisError:
        claim = ""  # the worker's state machine makes a second delivery harmless
    if not try_enqueue(TASK_PROVIDER_CALLBACK, provider="twilio", **kwargs) and claim:
        with contextlib.suppress(redis.RedisError):  # else the claim expires
            store.release_once(claim)


@bp.post("/status")
def customer_status() -> Response:
    """The customer call's own status callback (configured by the platform on its calls;
    it may add ?lead_id=... to report hangups of calls that never had a transfer)."""
    verify_twilio(dedupe=True)
    params = _form("CallSid", "CallStatus")
    if params["CallStatus"] in _CALL_ENDED:
        enqueue(TASK_CALL_STATUS, provider="twilio", call_id=params["CallSid"],
                status=params["CallStatus"], lead_id=request.args.get("lead_id") or None)
    return _accepted()


@bp.post("/whisper")
def whisper() -> Response:
    """The briefing TwiML Twilio fetches to announce to the human alone."""
    verify_twilio(dedupe=False)
    transfer, _ = _record(transfer_id_arg())
    return _twiml(markup.whisper_twiml((transfer or {}).get("summary")))


@bp.post("/screen")
def screen() -> Response:
    """The screened human answered: the briefing and the key prompt (a <Gather>). With
    detection on, Twilio asks only once it knows who answered (AnsweredBy)."""
    verify_twilio(dedupe=False)
    transfer_id = transfer_id_arg()
    attempt = _attempt()
    answered_by = request.form.get("AnsweredBy", "")
    if callbacks.is_machine(answered_by):
        answer = callbacks.machine_answered(_store(), transfer_id, attempt,
                                            request.form.get("CallSid", ""), answered_by)
    else:
        record, readable = _record(transfer_id)
        answer = callbacks.screen(deps().settings, _screen(transfer_id, (record, readable)),
                                  record, readable, attempt)
    return _answer("screen", transfer_id, answer)


def _answer(scope: str, transfer_id: str, answer: callbacks.Answer) -> Response:
    if answer.kind is not None:
        _enqueue_once(scope, kind=str(answer.kind), transfer_id=transfer_id,
                      params=dict(answer.params))
    return _twiml(answer.twiml)


@bp.post("/screen-result")
def screen_result() -> Response:
    """The <Gather>'s answer: the key joins the human to the conference; anything else
    (or nothing) declines, and their leg is hung up."""
    verify_twilio(dedupe=False)
    transfer_id = transfer_id_arg()
    params = _form("CallSid")
    attempt = _attempt()
    params["attempt"] = attempt
    record, readable = _record(transfer_id)
    context = _screen(transfer_id, (record, readable))
    return _answer("screen-result", transfer_id, callbacks.screen_result(
        _store(), deps().settings, context, record, readable, params))


@bp.post("/member")
def member() -> Response:
    """A ring group member answered: the first joins the conference, any other hangs up."""
    verify_twilio(dedupe=False)
    transfer_id = transfer_id_arg()
    params = _form("CallSid")
    params["attempt"] = _attempt()
    lead, index = request.args.get("lead_id", ""), request.args.get("m", "")
    if not lead or len(lead) > 100 or not (index.isdigit() and len(index) < 3):
        abort(400, "malformed member parameters")
    record, readable = _record(transfer_id)
    return _answer("member", transfer_id, callbacks.member_answered(
        _store(), deps().settings, {"transfer_id": transfer_id, "lead_id": lead,
                                    "member": index}, record, readable, params))


def _needs_worker(kind: CallbackKind, transfer_id: str, params: Mapping[str, str]) -> bool:
    """callbacks.needs_worker with this delivery's token: the repeat check and the triage
    in one round trip (verify_twilio(dedupe=False) leaves the check to it)."""
    store, token = deps().store, idempotency_token()
    if not callbacks.needs_worker(store, kind, transfer_id, params, token, NONCE_WINDOW,
                                  account=g.account):
        return False
    if token:
        g.release_on_failure = lambda: store.release_delivery(transfer_id, "twilio", token)
    return True


@bp.post("/agent-status")
def agent_status() -> Response:
    """Status of the human agent's call, which we place."""
    verify_twilio(dedupe=False)
    params = _form("CallSid", "CallStatus")
    params["attempt"] = _attempt()
    if (index := request.args.get("m", "")).isdigit() and len(index) < 3:
        params["member"] = index  # a ring group member's leg
    transfer_id = transfer_id_arg()
    if _needs_worker(CallbackKind.AGENT_STATUS, transfer_id, params):
        enqueue(TASK_PROVIDER_CALLBACK, provider="twilio", kind="agent-status",
                transfer_id=transfer_id, params=params)
    return _accepted()


@bp.post("/amd")
def amd() -> Response:
    """AmdStatusCallback of a human leg placed with detection: AnsweredBy (human, machine_*,
    fax, unknown). Twilio ignores the answer's body."""
    verify_twilio(dedupe=True)
    params = _form("CallSid", "AnsweredBy")
    params["attempt"] = _attempt()
    enqueue(TASK_PROVIDER_CALLBACK, provider="twilio", kind="amd",
            transfer_id=transfer_id_arg(), params=_only(params, "CallSid", "AnsweredBy",
                                                         "MachineDetectionDuration",
                                                         "attempt"))
    return _accepted()


def _only(params: Mapping[str, str], *names: str) -> dict[str, str]:
    return {k: params[k] for k in names if k in params}


@bp.post("/conference")
def conference() -> Response:
    """Conference events of `transfer-{lead_id}`."""
    verify_twilio(dedupe=False)
    params = _form("StatusCallbackEvent")
    transfer_id = transfer_id_arg()
    if _needs_worker(CallbackKind.CONFERENCE, transfer_id, params):
        enqueue(TASK_PROVIDER_CALLBACK, provider="twilio", kind="conference",
                transfer_id=transfer_id, params=params)
    return _accepted()
