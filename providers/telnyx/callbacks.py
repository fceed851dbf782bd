"""Telnyx's webhook events, read: which call an event is about (our client_state, or the
customer's call), the fields the worker needs, and what a hang-up cause means.

Every Call Control event of every call arrives at the one URL (/telnyx/webhook): an envelope
`{"data": {"record_type": "event", "event_type", "id", "occurred_at", "payload": {...}}}`
(developers.telnyx.com/api-reference/callbacks/call-hangup). The human's leg, which we dial,
carries our `client_state` (base64, "add state to every subsequent webhook": api/call-control/
bridge-call and dial); the customer's call carries the platform's, or none.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import redis

from shared.store import Store


class TelnyxKind(StrEnum):
    """What the Telnyx webhook hands to the worker (task `provider_callback`)."""

    # An event of one of our human legs (call.initiated, .answered, .hangup,
    # .machine.detection.ended, .speak.ended, .gather.ended, .bridged).
    CALL_EVENT = "call-event"
    # Ours, never a webhook's: the extension's digits have been played out on the human's
    # leg (send_dtmf has no webhook: "There are no webhooks associated with this command",
    # api-reference/call-commands/send-dtmf), scheduled by the worker that sent them.
    EXTENSION_SENT = "extension-sent"


# The events the worker acts on; others (call.dtmf.received, streaming.*) are answered 200
# and dropped.
LEG_EVENTS = frozenset({"call.initiated", "call.answered", "call.hangup", "call.bridged",
                        "call.machine.detection.ended", "call.speak.ended",
                        "call.gather.ended"})
# The payload fields passed on (strings): callbacks/call-hangup (hangup_cause,
# sip_hangup_cause, hangup_source), call-machine-detection-ended (result),
# call-gather-ended (digits, status), call-speak-ended (status).
_FIELDS = ("call_control_id", "call_leg_id", "call_session_id", "hangup_cause",
           "sip_hangup_cause", "hangup_source", "result", "digits", "status")
# Our client_state marker: a JSON object {"wt": transfer_id, "a": attempt}.
_MARK = "wt"


def encode_state(transfer_id: str, attempt: str) -> str:
    """The client_state we put on every command of a human leg ("It must be a valid Base-64
    encoded string", api/call-control/bridge-call)."""
    raw = json.dumps({_MARK: transfer_id, "a": attempt}, separators=(",", ":"))
    return base64.b64encode(raw.encode()).decode()


def decode_state(value: Any) -> tuple[str, str] | None:
    """(transfer_id, attempt) from our client_state; None for anyone else's (the platform's
    state on the customer's call) or none."""
    if not isinstance(value, str) or not value or len(value) > 2048:
        return None
    try:
        data = json.loads(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    tid, attempt = data.get(_MARK), data.get("a", "0")
    if not isinstance(tid, str) or not tid or len(tid) > 100:
        return None
    if not isinstance(attempt, str) or not attempt.isdigit() or len(attempt) > 2:
        return None
    return tid, attempt


class MalformedEvent(ValueError):
    pass


@dataclass(frozen=True)
class Event:
    event_type: str
    event_id: str
    call_control_id: str
    # Ours (transfer_id, attempt), or None: the customer's call or a stranger's.
    ours: tuple[str, str] | None
    params: Mapping[str, str] = field(default_factory=dict)


def parse_event(body: Any) -> Event:
    """The envelope's parts, or MalformedEvent (400)."""
    if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
        raise MalformedEvent("expected {\"data\": {...}}")
    data = body["data"]
    event_type, event_id = data.get("event_type"), data.get("id")
    payload = data.get("payload")
    if not isinstance(event_type, str) or not event_type or len(event_type) > 100:
        raise MalformedEvent("data.event_type missing")
    if not isinstance(event_id, str) or not event_id or len(event_id) > 100:
        raise MalformedEvent("data.id missing")
    if not isinstance(payload, dict):
        raise MalformedEvent("data.payload missing")
    ccid = payload.get("call_control_id")
    if event_type.startswith("call.") and (not isinstance(ccid, str) or not ccid
                                            or len(ccid) > 200):
        raise MalformedEvent("payload.call_control_id missing")
    params = {"event_type": event_type, "event_id": event_id}
    for name in _FIELDS:
        value = payload.get(name)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and \
                len(str(value)) <= 200:
            params[name] = str(value)
    ours = decode_state(payload.get("client_state"))
    if ours is not None:
        params["attempt"] = ours[1]
    return Event(event_type, event_id, str(ccid or ""), ours, params)


# call.hangup's hangup_cause (callbacks/call-hangup: call_rejected, normal_clearing,
# originator_cancel, timeout, time_limit, user_busy, not_found, unspecified) -> the failure
# reason of a human leg that ended before the bridge. normal_clearing depends on whether it
# was answered (see failure_reason).
_CAUSES = {"user_busy": "busy", "timeout": "no_answer", "call_rejected": "declined",
           "not_found": "failed", "originator_cancel": "failed", "time_limit": "failed"}
# sip_hangup_cause, where hangup_cause says only "unspecified" (RFC 3261 codes).
_SIP = {"486": "busy", "600": "busy", "408": "no_answer", "480": "no_answer",
        "487": "no_answer", "603": "declined", "404": "failed"}


def failure_reason(params: Mapping[str, str], *, answered: bool) -> str:
    """Why a human leg ended before the bridge."""
    cause = params.get("hangup_cause", "")
    if cause in _CAUSES:
        return _CAUSES[cause]
    if cause == "normal_clearing":
        # Hung up after answering; before answering, the far end refused the call.
        return "agent_hung_up" if answered else "declined"
    return _SIP.get(params.get("sip_hangup_cause", ""),
                    "agent_hung_up" if answered else "failed")


# call.machine.detection.ended's result: human, machine, not_sure (team-telnyx/telnyx-java
# docs/CallMachineDetectionEndedPayload.md, ResultEnum). not_sure is not treated as a
# machine: a person may be there.
def is_machine(result: str) -> bool:
    return result == "machine"


# send_dtmf: each digit sounds `duration_millis` (default 250, "Ranges from 100 to 500ms"),
# `w` pauses 0.5 s (api-reference/call-commands/send-dtmf). The gap between digits is not
# documented: taken as long as a digit, and a second on top before anyone speaks.
DTMF_MILLIS = 250


def dtmf_playout(digits: str) -> float:
    """Seconds until `digits` have been played out on a leg (an upper estimate)."""
    tones = sum(1 for c in digits if c != "w")
    return tones * 2 * DTMF_MILLIS / 1000 + digits.count("w") * 0.5 + 1.0


# --- the web app's part: events that cannot change the transfer ---------------------------

def needs_worker(store: Store, transfer_id: str, params: Mapping[str, str],
                 account: str | None = None) -> bool:
    """Whether an event of our leg must go to the worker: not its `call.initiated` when the
    leg's call_control_id is the one recorded (the worker only set agent_status and noted
    it), nor anything once the transfer has ended (noted late, as the task did): recorded
    here in one round trip. Redis down: the worker decides."""
    live: str | None = None
    fields: dict[str, str] = {}
    ccid = params.get("call_control_id", "")
    if params.get("event_type") == "call.initiated" and ccid:
        live, fields = "human agent leg initiated", {"agent_status": "initiated"}
    try:
        outcome = store.triage_callback(transfer_id, str(TelnyxKind.CALL_EVENT), live,
                                        call_sid=ccid if live else "", fields=fields,
                                        account=account)
    except redis.RedisError:
        return True
    return outcome == "enqueue"
