"""Plivo callbacks. Verify, parse, call one provider function (`callbacks`, or the worker
through a task), answer; the XML comes from providers.plivo.markup
because Plivo acts on the answer (the customer's call runs it).

The routes whose answer steers the live call (dial-up, dial-action, whisper, hold) answer
even with Redis or the broker down, from the context their signed URL carries: a 503 there
would leave Plivo with no XML to run, and Plivo ends the call. Only the pure status
callbacks (dial-callback, status) answer 503, which Plivo retries.
"""

from __future__ import annotations

import time
from typing import Any

import redis
from flask import Blueprint, Response, abort, g, request

from providers.plivo import callbacks, markup
from providers.plivo.signature import plivo_nonce_ttl, refuse_replay, verify_plivo
from shared.celery_config import TASK_CALL_STATUS, TASK_PROVIDER_CALLBACK, TRANSFERS_QUEUE
from shared.logs import get_logger
from shared.store import Replay
from webhooks.deps import deps, enqueue, with_account
from webhooks.parsing import require, transfer_id_arg

bp = Blueprint("plivo", __name__, url_prefix="/plivo")
log = get_logger("webhooks.plivo")

_ENDED = frozenset({"completed", "busy", "failed", "timeout", "no-answer", "cancel", "hangup"})


def _params(*required: str) -> dict[str, str]:
    source = request.form if request.method == "POST" else request.args
    params = {k: v for k, v in source.items() if k not in ("transfer_id", "t")}
    require(params, *required)
    return params


def _attempt() -> str:
    attempt = request.args.get("attempt", "0")
    return attempt if attempt.isdigit() and len(attempt) < 4 else "0"


def _xml(body: str) -> Response:
    return Response(body, status=200, mimetype="application/xml")


def _context(path: str, transfer_id: str) -> dict[str, str] | None:
    """The signed context of this URL; 403 for one we did not sign (Plivo signs whatever URL
    it is given, so its signature alone does not make the URL's content ours)."""
    try:
        return markup.read_context(deps().settings, path, transfer_id, _attempt(),
                                     request.args.get("t", ""), request.args.get("account", ""))
    except markup.BadContext:
        log.warning("webhook refused", extra={"provider": "plivo", "path": request.path,
                                              "why": "bad URL context"})
        deps().metrics.inc("warm_transfer_signature_failures", provider="plivo")
        abort(403)


def _try_enqueue(task: str, **kwargs: Any) -> bool:
    """Publish, or log and go on: on a steering route the XML answer matters more than the
    task, whose outcome the deadline sweep settles if it never runs."""
    try:
        deps().celery.send_task(task, kwargs=with_account(kwargs), queue=TRANSFERS_QUEUE)
        return True
    except Exception:  # noqa: BLE001 - any broker failure; the answer must still go out
        log.warning("could not enqueue; the deadline sweep will settle the transfer",
                    extra={"task": task, "path": request.path})
        return False


@bp.route("/dial-up", methods=["GET", "POST"])
def dial_up() -> Response:
    """The XML for the customer's leg: dial the human, from the pending transfer's flag (or,
    with Redis down, from the signed URL)."""
    claim = verify_plivo(claim_nonce=False)
    transfer_id = transfer_id_arg()
    ctx = _context(markup.DIAL_UP_PATH, transfer_id)
    params = _params()
    d = deps()
    try:
        xml, missing = callbacks.serve_dial_up(d.store, d.settings, transfer_id, claim,
                                               plivo_nonce_ttl())
    except Replay:
        refuse_replay()
    except redis.RedisError:
        # The worker's recovery path (dial_up_served) does not apply while Redis is down.
        log.warning("redis unavailable; dial-up answered from its signed URL",
                    extra={"answered": bool(ctx and markup.destination(ctx))})
        return _xml(callbacks.degraded_dial_up(d.settings, ctx))
    if missing:
        _try_enqueue(TASK_PROVIDER_CALLBACK, provider="plivo", kind="dial-up-missing",
                     transfer_id=transfer_id, params=params)
    return _xml(xml)


@bp.post("/whisper")
def whisper() -> Response:
    """Plivo's confirmSound: fetched when the human answers; played to them alone."""
    verify_plivo(steering=True)
    transfer_id = transfer_id_arg()
    ctx = _context(markup.WHISPER_PATH, transfer_id)
    try:
        return _xml(callbacks.answer_whisper(deps().store, transfer_id, _attempt()))
    except redis.RedisError:
        log.warning("redis unavailable; generic briefing from the signed URL")
        return _xml(markup.whisper_xml(ctx))


@bp.post("/hold")
def hold() -> Response:
    """Plivo's dialMusic: what the customer hears while the human is being reached."""
    verify_plivo(steering=True)
    transfer_id = transfer_id_arg()
    ctx = _context(markup.HOLD_PATH, transfer_id)
    if ctx is not None:
        return _xml(markup.hold_xml(ctx))  # all it needs is in the URL
    try:
        transfer = deps().store.get_transfer(transfer_id)
    except redis.RedisError:
        transfer = None  # a ringing tone's worth of waiting, never an error
    return _xml(markup.hold_xml(transfer))


@bp.post("/dial-action")
def dial_action() -> Response:
    """The Dial is over; the answer decides what the customer's call does next."""
    verify_plivo(steering=True)
    transfer_id = transfer_id_arg()
    ctx = _context(markup.DIAL_ACTION_PATH, transfer_id)
    params = _params("DialStatus")
    params["attempt"] = _attempt()
    # When it came: whether a screened human's leg outlived the confirm window.
    params["received_at"] = repr(time.time())
    d = deps()
    try:
        answer, hand_over = callbacks.answer_dial_action(d.store, d.settings, transfer_id,
                                                        params, ctx)
    except redis.RedisError:
        # The outcome is recorded by the task below once Redis is back, or by the deadline
        # sweep.
        log.warning("redis unavailable; dial action answered from its signed URL")
        answer, hand_over = callbacks.degraded_dial_action(d.settings, params["DialStatus"],
                                                          ctx), True
    if hand_over:
        _try_enqueue(TASK_PROVIDER_CALLBACK, provider="plivo", kind="dial-action",
                     transfer_id=transfer_id, params=params)
    return _xml(answer)


@bp.post("/dial-callback")
def dial_callback() -> Response:
    """Dial events of the human's leg (answer, hangup): a pure status callback. Only the
    answer goes to the worker; the rest is recorded here (callbacks.needs_worker)."""
    verify_plivo()
    transfer_id = transfer_id_arg()
    params = _params()
    # The event's name: `Event` (DialAnswer, DialHangup) or `DialAction` (answer, hangup,
    # digits): Plivo's docs and integrations disagree, so either is taken.
    if not (params.get("Event") or params.get("DialAction")):
        abort(400, "missing one of Event, DialAction")
    params["attempt"] = _attempt()
    params["received_at"] = repr(time.time())
    if callbacks.needs_worker(deps().store, transfer_id, params, account=g.account):
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


# The agent-first handoff's routes, on this blueprint.
from providers.plivo import af_routes  # noqa: E402,F401
