"""The Telnyx webhook: every Call Control event, JSON, at /telnyx/webhook. Verify, parse,
hand to the worker, answer.

Events of our human legs (our client_state) go to the worker as `call-event` callbacks
(unless they cannot change the transfer: recorded here, `callbacks.needs_worker`); the
customer's call ending (no client_state of ours) goes to `call_status`, as the other
providers' status callbacks do. Telnyx retries a delivery that did not get a 2xx ("The
server must return an HTTP 200, otherwise we will reattempt delivery at the failover webhook
URL", callbacks/call-hangup), so an event id accepted once is answered 200 again without
being enqueued twice.
"""

from __future__ import annotations

import json

from flask import Blueprint, Response, abort, g, request

from providers.telnyx import callbacks
from providers.telnyx.account import TelnyxAccount
from providers.telnyx.signature import (
    EVENT_ID_TTL,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignatureError,
    verify,
)
from shared.celery_config import TASK_CALL_STATUS, TASK_PROVIDER_CALLBACK
from shared.logs import get_logger
from webhooks.deps import deps, enqueue
from webhooks.parsing import json_depth_ok
from webhooks.security import refuse, webhook_account

bp = Blueprint("telnyx", __name__, url_prefix="/telnyx")
log = get_logger("webhooks.telnyx")


def _ok() -> Response:
    return Response(status=200)


@bp.post("/webhook")
def webhook() -> Response:
    body = request.get_data(cache=True)
    signature = request.headers.get(SIGNATURE_HEADER, "")
    timestamp = request.headers.get(TIMESTAMP_HEADER, "")
    # The key of the account our URL names, and the one being rotated out while configured.
    error: SignatureError | None = None
    for key in webhook_account("telnyx", TelnyxAccount).public_keys() or ("",):
        try:
            verify(key, body, signature, timestamp)
        except SignatureError as exc:
            error = exc
        else:
            error = None
            break
    if error is not None:
        refuse("telnyx", str(error))
    if not json_depth_ok(body):
        abort(400, "JSON nested too deeply")
    try:
        event = callbacks.parse_event(json.loads(body))
    except (ValueError, callbacks.MalformedEvent) as exc:
        abort(400, str(exc))
    hangup = event.event_type == "call.hangup"
    if event.ours is None and not hangup:
        return _ok()  # the customer's other events (the platform's business)
    if event.ours is not None and event.event_type not in callbacks.LEG_EVENTS:
        return _ok()
    # A signed delivery already accepted (a retry, or a replay inside the window).
    claim = f"idem:telnyx:{event.event_id}"
    if not deps().store.claim_once(claim, ttl=EVENT_ID_TTL):
        return _ok()
    g.release_on_failure = claim
    if event.ours is not None:
        if callbacks.needs_worker(deps().store, event.ours[0], event.params,
                                  account=g.account):
            enqueue(TASK_PROVIDER_CALLBACK, provider="telnyx", kind=str(
                callbacks.TelnyxKind.CALL_EVENT), transfer_id=event.ours[0],
                params=dict(event.params))
    else:
        # The customer's call (call_id is its call_control_id) ended.
        enqueue(TASK_CALL_STATUS, provider="telnyx", call_id=event.call_control_id,
                status="hangup", lead_id=request.args.get("lead_id") or None,
                params={k: v for k, v in event.params.items()
                        if k in ("hangup_cause", "sip_hangup_cause", "hangup_source")})
    return _ok()
