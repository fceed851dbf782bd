"""The agent-first handoff's Plivo callbacks (see providers.plivo.agent_first), on the
Plivo blueprint. Verify, parse, call one function, answer.

af-answer, af-accept and af-join steer a live call (the human's, or the customer's): they
answer with Redis or the broker down, from the context their signed URL carries (`t`), and
refuse a URL we did not sign (403). af-hangup, af-machine and af-conference are pure status
callbacks: 503 when the task cannot be queued, which Plivo retries.
"""

from __future__ import annotations

import redis
from flask import Response, abort

from providers.plivo import agent_first, markup
from providers.plivo.routes import _attempt, _context, _params, _try_enqueue, _xml, bp
from providers.plivo.signature import verify_plivo
from shared.celery_config import TASK_PROVIDER_CALLBACK
from shared.model import CallbackKind
from webhooks.deps import deps, enqueue
from webhooks.parsing import transfer_id_arg


def _signed_context(path: str) -> dict[str, str]:
    transfer_id = transfer_id_arg()
    ctx = _context(path, transfer_id)
    if ctx is None:
        # Every agent-first URL is made with its context: one without is not ours.
        abort(403)
    return {**ctx, "attempt": _attempt()}


@bp.post("/af-answer")
def af_answer() -> Response:
    """The human's answer_url: the briefing and, with screening, the GetDigits."""
    verify_plivo(steering=True)
    ctx = _signed_context(markup.AF_ANSWER_PATH)
    d = deps()
    return _xml(agent_first.answer_human(d.store, d.settings, ctx, _params()))


@bp.post("/af-accept")
def af_accept() -> Response:
    """GetDigits' action (the key, as Digits) or the briefing's end: the conference or
    goodbye for the human; the worker hears the outcome."""
    verify_plivo(steering=True)
    ctx = _signed_context(markup.AF_ACCEPT_PATH)
    d = deps()
    xml, handed = agent_first.accept(d.store, d.settings, ctx, _params())
    if handed is not None:
        _try_enqueue(TASK_PROVIDER_CALLBACK, provider="plivo", kind=CallbackKind.AF_ACCEPT,
                     transfer_id=ctx["transfer_id"], params=handed)
    return _xml(xml)


@bp.post("/af-join")
def af_join() -> Response:
    """The customer's aleg_url at the bridge: into the transfer's conference."""
    verify_plivo(steering=True)
    ctx = _signed_context(markup.AF_JOIN_PATH)
    d = deps()
    return _xml(agent_first.join_customer(d.store, d.settings, ctx))


@bp.post("/af-left")
def af_left() -> Response:
    """The customer's Conference action (the conference ended) or the worker's move out
    of an empty one: over after a bridge, else back to the AI."""
    verify_plivo(steering=True)
    ctx = _signed_context(markup.AF_LEFT_PATH)
    d = deps()
    return _xml(agent_first.customer_left(d.store, d.settings, ctx))


def _status(kind: CallbackKind, *required: str) -> Response:
    verify_plivo()
    transfer_id = transfer_id_arg()
    params = _params(*required)
    params["attempt"] = _attempt()
    enqueue(TASK_PROVIDER_CALLBACK, provider="plivo", kind=kind, transfer_id=transfer_id,
            params=params)
    return Response(status=200)


@bp.post("/af-ring")
def af_ring() -> Response:
    """The human leg's ring_url: recorded at once (how a retried dial finds the leg)."""
    verify_plivo()
    transfer_id = transfer_id_arg()
    try:
        agent_first.ringing(deps().store, transfer_id, _attempt(), _params())
    except redis.RedisError:
        abort(503)
    return Response(status=200)


@bp.post("/af-hangup")
def af_hangup() -> Response:
    """The human leg's hangup_url (CallStatus, HangupCause, CallUUID)."""
    return _status(CallbackKind.AF_LEG, "CallStatus")


@bp.post("/af-machine")
def af_machine() -> Response:
    """The human leg's machine_detection_url (Machine: true when a machine answered)."""
    return _status(CallbackKind.AF_MACHINE, "Machine")


@bp.post("/af-conference")
def af_conference() -> Response:
    """The conference's callbackUrl (ConferenceAction: enter, exit, ...; CallUUID)."""
    return _status(CallbackKind.AF_CONFERENCE, "ConferenceAction")
