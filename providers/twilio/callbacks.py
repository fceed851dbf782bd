"""Twilio's part of the state machine. The worker's: the human leg's status, the conference
events, the detection verdict, the customer's hangup, the deadline (`TwilioProvider` in
`handoff` delegates here; it keeps the REST calls: dialing, the briefing, the bridge, hang-
ups). The web app's: the decisions behind the TwiML routes, which answer a live call at once.

The routes verify and parse; these functions decide and record. `store` is None while Redis
is down (the answers then come from what our signed URL carries).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import redis

from providers.base import current_destination, record_of, screening_key
from providers.twilio import markup
from providers.twilio.markup import agent_label
from shared.config import Settings
from shared.contracts import GROUP_SEPARATOR
from shared.logs import get_logger
from shared.model import TERMINAL_STATES, CallbackKind, Cause, State, Transfer
from shared.store import Store

if TYPE_CHECKING:
    from providers.twilio.handoff import TwilioProvider
    from workers.runtime import Runtime

log = get_logger("webhooks.twilio")

# Past the deadline, how long a joined leg's detection verdict is still awaited (Twilio's
# MachineDetectionTimeout defaults to 30 s; docs: voice/answering-machine-detection).
AMD_GRACE = 35.0

# The human's call status -> the failure reason when it ends before joining.
_AGENT_FAILURES = {"busy": "busy", "no-answer": "no_answer", "failed": "failed",
                   "canceled": "failed", "completed": "agent_hung_up"}
PRE_BRIDGE = (State.REQUESTED, State.DIALING, State.HUMAN_ANSWERED)
# A human leg that ended like this, before the bridge, moves on to the next destination.
_MOVE_ON = frozenset({"busy", "no_answer", "failed", "voicemail", "declined", "agent_hung_up"})
RINGING = {"", "queued", "initiated", "ringing"}
# Fields of a human leg, besides the store's, cleared when moving to the next destination.
LEG_FIELDS = ("conference_sid", "member", "answered_by")


# --- the worker's part: the human's leg, the conference, detection -----------------------

def _not_reached(p: TwilioProvider, rt: Runtime, transfer: Transfer, reason: str,
                 note: str, task_id: str, *, hang_up: bool = False,
                 cause: Cause | None = None) -> None:
    """The current destination will not take the call: the next one, or the end."""
    tid = transfer.transfer_id
    if reason in _MOVE_ON and transfer.state in PRE_BRIDGE:
        outcome, _, _ = rt.store.advance_destination(tid, transfer.attempt, reason,
                                                     leg_fields=LEG_FIELDS, cause=cause)
        if outcome in ("next", "stale"):
            if hang_up and outcome == "next":
                p.hang_up(rt, transfer, transfer.agent_call_sid, "completed")
            p.ensure_dialed(rt, tid, task_id)
            return
        if outcome == "final":
            return
    if rt.fail(transfer, reason, note, from_states=(*PRE_BRIDGE, State.BRIDGING)) \
            and hang_up:
        p.cleanup(rt, transfer.with_extra(agent_status="in-progress"))


def handle_callback(p: TwilioProvider, rt: Runtime, transfer: Transfer, kind: str,
                    params: Mapping[str, str], task_id: str) -> None:
    attempt = str(transfer.attempt)
    leg = (CallbackKind.AGENT_STATUS, CallbackKind.SCREEN, CallbackKind.AMD)
    if kind in leg and params.get("attempt", "0") != attempt:
        # About the leg of a destination already left behind; make sure the current
        # one was dialed (this may be the retry of the task that moved on).
        rt.store.note(transfer.transfer_id, f"{kind} callback of destination "
                      f"{int(params.get('attempt', '0')) + 1} ignored")
        p.ensure_dialed(rt, transfer.transfer_id, task_id)
        return
    if kind == CallbackKind.AGENT_STATUS and params.get("member", "") != "" and \
            params.get("CallSid") != transfer.agent_call_sid:
        _member_status(p, rt, transfer, params, task_id)
        return
    if kind in (CallbackKind.AGENT_STATUS, CallbackKind.AMD) and params.get("CallSid") \
            and not transfer.agent_call_sid:
        # The dial's own callback can come before the dialing worker recorded the sid.
        rt.store.set_fields(transfer.transfer_id, agent_call_sid=params["CallSid"])
        rt.store.index_call(p.name, params["CallSid"], transfer.transfer_id)
        transfer = replace(transfer, agent_call_sid=params["CallSid"])
    if kind == CallbackKind.AGENT_STATUS:
        _agent_status(p, rt, transfer, params, task_id)
    elif kind == CallbackKind.CONFERENCE:
        _conference(p, rt, transfer, params, task_id)
    elif kind == CallbackKind.AMD:
        _amd(p, rt, transfer, params, task_id)
    elif kind == CallbackKind.SCREEN and params.get("Digits", "") != screening_key(transfer):
        # Our answer to the key (goodbye) hangs their leg up.
        _not_reached(p, rt, transfer, "declined", "human agent did not accept the call "
                          "(screening)", task_id)


def _agent_status(p: TwilioProvider, rt: Runtime, transfer: Transfer,
                  params: Mapping[str, str], task_id: str) -> None:
    status = params.get("CallStatus", "")
    tid = transfer.transfer_id
    if status in ("queued", "initiated", "ringing"):
        rt.store.set_fields(tid, agent_status=status)
        rt.store.note(tid, f"human agent {status}")
    elif status == "in-progress":
        # Detection's verdict is not in this callback: it comes to /twilio/amd
        # (participants) or with the screening TwiML request (calls.create).
        rt.store.set_fields(tid, agent_status=status)
        rt.store.transition(tid, State.HUMAN_ANSWERED, "human agent answered",
                            from_states=(State.REQUESTED, State.DIALING))
    elif status in _AGENT_FAILURES:
        rt.store.set_fields(tid, agent_status=status)
        reason = _AGENT_FAILURES[status]
        if reason == "agent_hung_up":
            current = rt.store.get_record(tid) or transfer
            if current.declined:
                reason = "declined"  # the screening answer hung up on them
            elif is_machine(current.extra.get("answered_by", "")):
                reason = "voicemail"  # our TwiML hung up on a machine
        # Before the bridge the customer is still with the AI: the next destination,
        # or the AI just resumes.
        # "SipResponseCode: the SIP code that resulted in a failed call" (call-resource,
        # StatusCallback parameters), e.g. 486 busy, 487 rang out.
        _not_reached(p, rt, transfer, reason, f"human agent call {status}", task_id,
                     cause=Cause.of(params.get("SipResponseCode")))


# A ring group none of whose members took the call ends with the most telling of their
# outcomes: someone let it ring out, else someone was busy, and so on.
_GROUP_OUTCOMES = ("no_answer", "busy", "declined", "voicemail", "agent_hung_up", "failed")


def _member_status(p: TwilioProvider, rt: Runtime, transfer: Transfer,
                   params: Mapping[str, str], task_id: str) -> None:
    """The status of a ring group member's leg that has not taken the call (yet). Only once
    every member has ended with none taking the call is the destination not reached."""
    tid, attempt = transfer.transfer_id, transfer.attempt
    status, member = params.get("CallStatus", ""), params.get("member", "")
    if status not in _AGENT_FAILURES:
        rt.store.note(tid, f"group member {int(member) + 1}: {status}")
        return
    if transfer.agent_call_sid:
        rt.store.note(tid, f"group member {int(member) + 1}'s leg ended ({status}): "
                      "another member took the call")
        return
    current = rt.store.get_record(tid) or transfer
    reason = "voicemail" if current.extra.get(f"machine:{attempt}:{member}") else \
        _AGENT_FAILURES[status]
    rt.store.set_fields(tid, **{f"ended:{attempt}:{member}": reason})
    current = rt.store.get_record(tid) or current
    if current.attempt != attempt or current.final:
        # Another member's task moved the transfer on (or ended it) meanwhile: this
        # group is behind it, and the current destination is not this leg's to judge.
        rt.store.note(tid, f"group member {int(member) + 1} not reached ({reason}); "
                      "the transfer has moved on")
        return
    count = len(current_destination(current).split(GROUP_SEPARATOR))
    ended = [current.extra.get(f"ended:{attempt}:{k}", "") for k in range(count)]
    if current.agent_call_sid or not all(ended):
        rt.store.note(tid, f"group member {int(member) + 1} not reached ({reason})")
        return
    worst = next(r for r in _GROUP_OUTCOMES if r in ended or r == "failed")
    _not_reached(p, rt, current, worst, f"no member of the group took the call ({status})",
                 task_id, cause=Cause.of(params.get("SipResponseCode")))


def _conference(p: TwilioProvider, rt: Runtime, transfer: Transfer,
                params: Mapping[str, str], task_id: str) -> None:
    event = params.get("StatusCallbackEvent", "")
    call_sid = params.get("CallSid", "")
    tid = transfer.transfer_id
    agent_sid = transfer.agent_call_sid
    # By CallSid, or by the label of the current attempt's leg when its sid is not known
    # yet: an earlier destination's leg is neither.
    is_agent = (bool(call_sid) and call_sid == agent_sid) or (
        not agent_sid and params.get("ParticipantLabel") == agent_label(
            str(transfer.attempt)))
    is_customer = bool(call_sid) and call_sid == transfer.call_id
    if event == "participant-join" and is_agent:
        # A ring group's first member is in: the others' legs are ended at once.
        p.hang_up_group(rt, transfer, keep=agent_sid)
        # The conference's SID: the participant update (the briefing) needs it.
        fields = {"conference_sid": params.get("ConferenceSid", "")}
        if not agent_sid:
            # Known by its label before the dial's answer or status recorded its sid.
            fields["agent_call_sid"] = agent_sid = call_sid
            rt.store.index_call(p.name, call_sid, tid)
        rt.store.set_fields(tid, **fields)
        transfer = replace(transfer.with_extra(conference_sid=fields["conference_sid"]),
                           agent_call_sid=agent_sid)
        if _awaiting_detection(transfer):
            # Twilio may put the leg in the conference before detection has answered:
            # nobody is bridged to a machine, the verdict (/twilio/amd) decides.
            current = rt.store.get_record(tid)
            answered_by = current.extra.get("answered_by", "") if current else ""
            if not answered_by:
                rt.store.transition(tid, State.HUMAN_ANSWERED, "human agent leg joined; "
                                    "waiting for answering-machine detection",
                                    from_states=(State.REQUESTED, State.DIALING))
                return
            if is_machine(answered_by):
                return  # the verdict's own task hangs it up and moves on
        _joined(p, rt, transfer, agent_sid, task_id)
    elif event in ("announcement-end", "announcement-fail"):
        # The briefing is over (or could not play): now move the customer. Unless it
        # was the briefing of a human already left behind (a fallback moved on).
        briefed = transfer.extra.get("briefed_sid", "")
        if briefed and briefed == agent_sid and call_sid in ("", agent_sid):
            p.bridge(rt, transfer, task_id)
        else:
            rt.store.note(tid, f"conference {event} of an earlier destination ignored")
    elif event == "participant-join" and is_customer:
        rt.succeed(transfer, "customer joined the human agent", from_states=(State.BRIDGING,))
    elif (event == "participant-leave" and is_agent) or (
            event == "conference-end" and params.get("ConferenceSid")
            and params.get("ConferenceSid") == transfer.extra.get("conference_sid")):
        # Before the bridge the customer is still with the AI: the next destination, or
        # the AI resumes. (A conference an earlier destination's leg ended is not ours.)
        _not_reached(p, rt, transfer, "agent_hung_up", f"human agent left ({event})",
                          task_id)
    else:
        rt.store.note(tid, f"conference {event}")


def _awaiting_detection(transfer: Transfer) -> bool:
    """A conference join must wait for detection's verdict (a screened leg has had it
    before our TwiML ran: synchronous detection on calls.create)."""
    return transfer.voicemail_detection and not transfer.screening


def _joined(p: TwilioProvider, rt: Runtime, transfer: Transfer, agent_sid: str,
            task_id: str) -> None:
    """The current human is in the conference (and not a machine): brief, or bridge."""
    if (transfer.summary and not transfer.screening
            and p.brief(rt, transfer, agent_sid, task_id)):
        return  # the bridge follows the briefing's announcement-end
    p.bridge(rt, transfer, task_id)


def _amd(p: TwilioProvider, rt: Runtime, transfer: Transfer, params: Mapping[str, str],
         task_id: str) -> None:
    """Answering-machine detection's verdict on the current human leg (AmdStatusCallback
    of a participant, or AnsweredBy of the screening TwiML request)."""
    tid = transfer.transfer_id
    answered_by = params.get("AnsweredBy", "")
    call_sid = params.get("CallSid", "")
    if call_sid and call_sid != (transfer.agent_call_sid or call_sid):
        rt.store.note(tid, "detection result of another leg ignored")
        return
    rt.store.set_fields(tid, answered_by=answered_by)
    if is_machine(answered_by):
        _voicemail(p, rt, transfer, answered_by, task_id)
        return
    rt.store.note(tid, f"answering-machine detection: {answered_by or 'no verdict'}")
    if not _awaiting_detection(transfer):
        return
    # Written before read, as the join does: of the two, at least one sees both.
    current = rt.store.get_record(tid)
    if current is not None and current.extra.get("conference_sid") \
            and current.state in PRE_BRIDGE:
        _joined(p, rt, current, current.agent_call_sid or call_sid, task_id)


def _voicemail(p: TwilioProvider, rt: Runtime, transfer: Transfer, answered_by: str,
               task_id: str) -> None:
    _not_reached(p, rt, transfer, "voicemail", f"answering machine ({answered_by}) on "
                      "the human's leg", task_id, hang_up=True)


def customer_call_ended(p: TwilioProvider, rt: Runtime, transfer: Transfer,
                        params: Mapping[str, str]) -> bool:
    # The AI holds the customer until the bridge, so their hanging up ends the transfer.
    if rt.fail(transfer, "customer_hung_up", "customer hung up before the bridge",
               from_states=(*PRE_BRIDGE, State.BRIDGING)):
        p.cleanup(rt, transfer)
    return False


def reconcile(p: TwilioProvider, rt: Runtime, transfer: Transfer) -> bool:
    """Every outcome arrives by callback. One exception is given more time: a human
    who answered late and whose detection verdict is still to come (Twilio decides
    within MachineDetectionTimeout, 30 s by default), once."""
    attempt = str(transfer.attempt)
    if (_awaiting_detection(transfer) and transfer.extra.get("conference_sid")
            and not transfer.extra.get("answered_by")
            and transfer.extra.get("amd_grace") != attempt
            and transfer.state in PRE_BRIDGE):
        # Once per destination: the field names the attempt it was given to.
        rt.store.set_fields(transfer.transfer_id, amd_grace=attempt)
        rt.store.extend_deadline(transfer.transfer_id, time.time() + AMD_GRACE)
        rt.store.note(transfer.transfer_id, "deadline: waiting for the detection "
                      "verdict of a human leg that has joined")
        return True
    return False


# --- the web app's part: callbacks that cannot change the transfer -------------------------

# Conference events the worker acts on (by who joined or left); it only notes the others.
_DECIDING_EVENTS = frozenset({"participant-join", "participant-leave", "conference-end",
                           "announcement-end", "announcement-fail"})


def needs_worker(store: Store, kind: CallbackKind, transfer_id: str,
                 params: Mapping[str, str], token: str = "", token_ttl: int = 0,
                 account: str | None = None) -> bool:
    """Whether a status callback must go to the worker: not when it cannot change the
    transfer (the human's leg ringing, a conference starting, anything after the end) or
    when its change is one step the worker would only record (the current leg answered:
    human_answered), which is recorded here as the worker would, in the same round trip.
    With `token` (the delivery's idempotency token), a repeat is told apart in the same
    round trip and answered without the worker (a claim released if the enqueue fails:
    `store.release_delivery`). Redis down: the worker decides, unless there is a token
    to check (then the error stands: 503, and Twilio retries)."""
    live: str | None = None
    fields: dict[str, str] = {}
    attempt = call_sid = ""
    to: State | None = None
    status = params.get("CallStatus", "")
    if kind == CallbackKind.AGENT_STATUS and status in (RINGING | {"in-progress"}) - {""} \
            and params.get("CallSid"):
        # Only for the current leg whose sid is recorded (else the worker records it).
        live, fields = f"human agent {status}", {"agent_status": status}
        attempt, call_sid = params.get("attempt", "0"), params["CallSid"]
        if status == "in-progress":
            # What the worker's _agent_status does with it, in the same round trip.
            live, to = "human agent answered", State.HUMAN_ANSWERED
    elif kind == CallbackKind.CONFERENCE and \
            params.get("StatusCallbackEvent", "") not in _DECIDING_EVENTS:
        live = f"conference {params.get('StatusCallbackEvent', '')}"
    try:
        outcome = store.triage_callback(transfer_id, str(kind), live, attempt=attempt,
                                        call_sid=call_sid, fields=fields, to=to,
                                        from_states=(State.REQUESTED, State.DIALING),
                                        delivery=("twilio", token) if token else None,
                                        delivery_ttl=token_ttl, account=account)
    except redis.RedisError:
        if token:
            raise
        return True
    return outcome == "enqueue"


# --- the web app's part: the TwiML routes --------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """The TwiML to answer, and the callback to hand to the worker (once), if any."""

    twiml: str
    kind: CallbackKind | None = None
    params: Mapping[str, str] = field(default_factory=dict)


def is_machine(answered_by: str) -> bool:
    return answered_by.startswith("machine") or answered_by == "fax"


def pending(record: Mapping[str, str] | None, readable: bool, attempt: str) -> bool:
    """Whether the leg of `attempt` may still join; unknown (Redis down) counts as yes:
    a human kept out by our outage would be a transfer lost for nothing."""
    if not readable:
        return True
    return (record is not None and record["state"] not in TERMINAL_STATES
            and record.get("attempt", "0") == attempt)


def _best_effort(store: Store | None, transfer_id: str, **fields: str) -> None:
    if store is None:
        return
    try:
        store.set_fields(transfer_id, **fields)
    except redis.RedisError:
        log.warning("could not record on the transfer", extra={"fields": sorted(fields)})


def machine_answered(store: Store | None, transfer_id: str, attempt: str, call_sid: str,
                     answered_by: str) -> Answer:
    """/twilio/screen with a machine's verdict: hang up on it; the worker moves on (the
    leg's "completed" callback says voicemail from the field, the `amd` callback sooner)."""
    _best_effort(store, transfer_id, answered_by=answered_by)
    return Answer(markup.hangup_twiml(), CallbackKind.AMD,
                  {"CallSid": call_sid, "AnsweredBy": answered_by, "attempt": attempt})


def screen(settings: Settings, context: Mapping[str, str], record: Mapping[str, str] | None,
           readable: bool, attempt: str) -> Answer:
    """/twilio/screen: the briefing and the key prompt while the leg may still join."""
    if not context or not pending(record, readable, attempt):
        return Answer(markup.hangup_twiml())
    return Answer(markup.screen_twiml(settings, context, attempt,
                                      (record or {}).get("summary")))


def screen_result(store: Store | None, settings: Settings, context: Mapping[str, str],
                  record: Mapping[str, str] | None, readable: bool,
                  params: Mapping[str, str]) -> Answer:
    """/twilio/screen-result: the screening key joins the human to the conference;
    anything else (or nothing) declines, and their leg is hung up."""
    attempt = params.get("attempt", "0")
    may_join = bool(context) and pending(record, readable, attempt)
    if may_join and params.get("Digits") == context["key"]:
        return Answer(markup.agent_join_twiml(settings, record_of(context), attempt))
    if may_join:
        # Read by the leg's "completed" callback, which may come before the worker's task.
        _best_effort(store, context["transfer_id"], declined="1")
    return Answer(markup.goodbye_twiml(), CallbackKind.SCREEN, params)


def member_answered(store: Store | None, settings: Settings, context: Mapping[str, str],
                    record: Mapping[str, str] | None, readable: bool,
                    params: Mapping[str, str]) -> Answer:
    """/twilio/member: a ring group member answered. The first to ask (a claim in Redis)
    joins the conference; any other, a machine, a transfer no longer waiting for this
    destination, or an unreadable Redis, is hung up: never two humans with the customer."""
    attempt, member = params.get("attempt", "0"), context.get("member", "")
    call_sid, answered_by = params.get("CallSid", ""), params.get("AnsweredBy", "")
    tid = context["transfer_id"]
    if is_machine(answered_by):
        _best_effort(store, tid, **{f"machine:{attempt}:{member}": answered_by})
        return Answer(markup.hangup_twiml())
    if store is None or not readable or record is None or not call_sid \
            or not pending(record, readable, attempt):
        return Answer(markup.hangup_twiml())
    try:
        # The winner's own retried request claims again (same owner) and joins again.
        if not store.claim_for(f"member:{tid}:{attempt}", call_sid):
            return Answer(markup.hangup_twiml())
        # Detection ran before this request (synchronous): a person, or undecided.
        store.set_fields(tid, agent_call_sid=call_sid, member=member,
                         **({"answered_by": answered_by or "unknown"}
                            if record.get("voicemail_detection") else {}))
        store.index_call("twilio", call_sid, tid)
    except redis.RedisError:
        return Answer(markup.hangup_twiml())
    return Answer(markup.agent_join_twiml(settings, record_of(context), attempt,
                                          announce=True))
