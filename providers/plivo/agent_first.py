"""Plivo's agent-first handoff (`handoff: "agent_first"`): the human is reached, briefed and
screened while the AI keeps the customer; the customer moves only once there is someone.

1. `calls.create` places the human's leg (from the lead's outbound number, or the
   customer's with caller_id "customer"), with our answer_url and hangup_url, and with
   voicemail detection `machine_detection` to our machine_detection_url.
2. Our answer XML briefs the human (<Speak>) and, with screening, asks for the key in a
   <GetDigits> whose action is ours (/plivo/af-accept): the key arrives explicitly. Without
   screening, the briefing ends in a <Redirect> to the same URL.
3. Accepted, the human is answered a <Conference> named after the transfer; their entering
   it (the conference callbackUrl, ConferenceAction=enter) moves the customer:
   `calls.transfer(customer, aleg_url=/plivo/af-join)`, XML joining the same conference.
   Success when the customer has entered.
4. Busy, no answer, voicemail, declined, a human who hangs up before the bridge: the next
   destination, or transfer.failed; the customer never left the AI (nothing to resume).
   The customer hanging up first cancels the human's call.

The steering routes (af-answer, af-accept, af-join) answer from their signed URL context
when Redis is down; the status routes (af-hangup, af-machine, af-conference) answer 503,
which Plivo retries.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import redis

from providers.base import (
    PermanentProviderError,
    TransientProviderError,
    claim_bridge,
    next_to_place,
    place_leg,
    screening_key,
)
from providers.plivo.markup import (
    AF_ANSWER_PATH,
    AF_HANGUP_PATH,
    AF_JOIN_PATH,
    AF_LEFT_PATH,
    AF_MACHINE_PATH,
    AF_RING_PATH,
    CONFIRM_GRACE,
    DETECTION_HOLD,
    MACHINE_DETECTION_MS,
    af_status_url,
    af_url,
    conference_xml,
    confirm_timeout,
    context_record,
    customer_join_xml,
    customer_left_xml,
    goodbye_xml,
    hangup_xml,
    human_answer_xml,
)
from shared.config import Settings
from shared.model import CallbackKind, State, Transfer
from shared.store import Store, ring_timeout

if TYPE_CHECKING:
    from providers.plivo.handoff import PlivoProvider
    from workers.runtime import Runtime

AGENT_FIRST = "agent_first"
PRE_BRIDGE = (State.REQUESTED, State.DIALING, State.HUMAN_ANSWERED)
# The hangup_url's CallStatus of a leg that never answered -> the failure reason
# (api/call: "CallStatus ... completed, busy, failed, timeout, no-answer, cancel").
LEG_FAILURES = {"busy": "busy", "no-answer": "no_answer", "timeout": "no_answer",
                "failed": "failed", "cancel": "failed"}
# A leg that ended so moves on to the next destination.
MOVE_ON = frozenset({"busy", "no_answer", "failed", "voicemail", "declined", "agent_hung_up"})
# Fields of a human leg, besides the store's LEG_FIELDS, cleared when moving on.
LEG_FIELDS = ("request_uuid", "conference_uuid")
# How long after an interrupted calls.create its leg's ring callback may still come (s).
RING_GRACE = 5.0
# Once accepted: the human's conference join, the customer's transfer and join (s).
BRIDGE_TIME = 15.0


def selected(transfer: Transfer) -> bool:
    return transfer.handoff == AGENT_FIRST


def _reason_of(transfer: Transfer, status: str) -> str:
    """Why the current human's leg ended before the bridge."""
    if status in LEG_FAILURES:
        return LEG_FAILURES[status]
    if transfer.declined:
        return "declined"
    if transfer.extra.get("answered_by") == "machine":
        return "voicemail"
    return "agent_hung_up"


# --- the worker's part ----------------------------------------------------------------------

def place(p: PlivoProvider, rt: Runtime, transfer: Transfer, attempt: str,
          number: str) -> None:
    """Place the human's leg of `attempt` (once: a retry after an unknown outcome finds the
    leg by its recorded request, else dials again only if Plivo said nothing was placed)."""
    from providers.plivo.handoff import make_client

    note = "dialing the human agent (agent first)" if attempt == "0" else \
        f"dialing destination {int(attempt) + 1} (agent first)"
    client = make_client(rt.settings, transfer)
    leg = replace(transfer, attempt=int(attempt))
    settings = rt.settings
    kwargs: dict[str, Any] = {
        "from_": transfer.caller_number or transfer.outbound_number,
        "to_": number,
        "answer_url": af_url(settings, AF_ANSWER_PATH, leg), "answer_method": "POST",
        "hangup_url": af_status_url(settings, AF_HANGUP_PATH, leg), "hangup_method": "POST",
        # "ring_url: notified when the call starts ringing": how a retry finds the leg.
        "ring_url": af_status_url(settings, AF_RING_PATH, leg), "ring_method": "POST",
        "ring_timeout": ring_timeout(settings, transfer, attempt),
    }
    if transfer.voicemail_detection:
        # api/call/make-a-call: machine_detection "true" or "hangup"; with
        # machine_detection_url the verdict is posted there (Machine=true, IfMachine
        # continue|hangup). "true": Plivo never hangs up by itself, so a late verdict on a
        # human already accepted cannot cut a bridged call; we hang up before acceptance.
        kwargs.update(machine_detection="true", machine_detection_time=MACHINE_DETECTION_MS,
                      machine_detection_url=af_status_url(settings, AF_MACHINE_PATH, leg),
                      machine_detection_method="POST")

    def dial() -> dict[str, str]:
        response: Any = client.call(lambda sdk: sdk.calls.create(**kwargs))
        # "call fired" with a request_uuid; the CallUUID comes with the leg's own requests.
        return {"request_uuid": str(getattr(response, "request_uuid", "") or "")}

    place_leg(rt, transfer, attempt, provider=p.name, pre_bridge=PRE_BRIDGE, note=note,
              find=lambda: "" if _placed_before(rt, transfer, attempt) else None,
              dial=dial, mark={"dial_attempted_at": repr(time.time())})


def _placed_before(rt: Runtime, transfer: Transfer, attempt: str) -> bool:
    """Look before dialing again: a worker died around calls.create. Its leg, if placed,
    is known by the request_uuid it recorded, or by the leg's ring_url callback (which
    records it too); the ring comes within RING_GRACE of the attempt, or never."""
    wait_until = float(transfer.extra.get("dial_attempted_at") or 0) + RING_GRACE
    while True:
        current = rt.store.get_record(transfer.transfer_id)
        if current is None or str(current.attempt) != attempt:
            return True  # moved on meanwhile: nothing to place here
        if current.extra.get("request_uuid") or current.agent_call_sid:
            return True
        if time.time() >= wait_until:
            return False
        time.sleep(0.2)


def ensure_dialed(p: PlivoProvider, rt: Runtime, transfer_id: str, task_id: str) -> None:
    """After a move to the next destination: its leg, unless already placed."""
    found = next_to_place(rt, transfer_id, task_id, PRE_BRIDGE)
    if found is not None:
        place(p, rt, *found)


def _not_reached(p: PlivoProvider, rt: Runtime, transfer: Transfer, reason: str,
                 note: str, task_id: str, *, hang_up: bool = False) -> None:
    """The current destination will not take the call: the next one, or transfer.failed
    (the customer is still with the AI)."""
    tid = transfer.transfer_id
    if reason in MOVE_ON and transfer.state in PRE_BRIDGE:
        outcome, _, _ = rt.store.advance_destination(
            tid, transfer.attempt, reason, leg_fields=LEG_FIELDS)
        if outcome in ("next", "stale"):
            if hang_up and outcome == "next":
                hang_up_leg(rt, transfer)
            ensure_dialed(p, rt, tid, task_id)
            return
        if outcome == "final":
            return
    if rt.fail(transfer, reason, note, from_states=(*PRE_BRIDGE, State.BRIDGING)) and hang_up:
        hang_up_leg(rt, transfer)


def hang_up_leg(rt: Runtime, transfer: Transfer) -> None:
    """Best effort: end the current human leg. Answered (its CallUUID known): hang it up;
    still ringing: cancel its request (api/call: "cancel a queued call ... request_uuid")."""
    from providers.plivo.handoff import make_client

    call_uuid = transfer.agent_call_sid
    request_uuid = transfer.extra.get("request_uuid", "")
    if not (call_uuid or request_uuid):
        return
    try:
        client = make_client(rt.settings, transfer)
        if call_uuid:
            client.call(lambda sdk: sdk.calls.delete(call_uuid))
        else:
            client.call(lambda sdk: sdk.calls.cancel(request_uuid))
    except (PermanentProviderError, TransientProviderError) as exc:
        rt.logger(transfer).warning("could not end the human leg", extra={"error": str(exc)})
        return
    rt.store.note(transfer.transfer_id, "human agent leg ended")


def handle_callback(p: PlivoProvider, rt: Runtime, transfer: Transfer, kind: str,
                    params: Mapping[str, str], task_id: str) -> None:
    tid = transfer.transfer_id
    if params.get("attempt", "0") != str(transfer.attempt):
        rt.store.note(tid, f"{kind} callback of destination "
                      f"{int(params.get('attempt', '0')) + 1} ignored")
        ensure_dialed(p, rt, tid, task_id)
        return
    call_uuid = params.get("CallUUID", "")
    if kind in (CallbackKind.AF_LEG, CallbackKind.AF_MACHINE, CallbackKind.AF_ACCEPT) \
            and call_uuid and not transfer.agent_call_sid:
        rt.store.set_fields(tid, agent_call_sid=call_uuid)
        transfer = replace(transfer, agent_call_sid=call_uuid)
    if kind == CallbackKind.AF_LEG:
        if transfer.state is State.BRIDGING:
            _lost_while_bridging(rt, transfer, "human agent hung up while the customer was "
                                 "being moved")
        elif transfer.state in PRE_BRIDGE:
            current = rt.store.get_record(tid) or transfer
            status = params.get("CallStatus", "")
            _not_reached(p, rt, current, _reason_of(current, status),
                         f"human agent call {status}", task_id)
        else:
            rt.store.note(tid, f"human agent call {params.get('CallStatus', '')}")
    elif kind == CallbackKind.AF_MACHINE:
        current = rt.store.get_record(tid) or transfer
        if current.extra.get("accepted") == params.get("attempt", "0") or \
                current.state not in (State.REQUESTED, State.DIALING):
            # Plivo may post the verdict late: once the human accepted (a key pressed, or
            # the briefing held past the detection time) a person has the call.
            rt.store.note(tid, "machine detection verdict after the human accepted: ignored")
        elif params.get("Machine", "").lower() == "true":
            rt.store.set_fields(tid, answered_by="machine")
            _not_reached(p, rt, transfer.with_extra(answered_by="machine"), "voicemail",
                         "answering machine on the human's leg", task_id, hang_up=True)
        else:
            rt.store.note(tid, "machine detection: a person")
    elif kind == CallbackKind.AF_ACCEPT:
        if params.get("accepted"):
            rt.store.transition(tid, State.HUMAN_ANSWERED, "human agent accepted; joining "
                                "the conference", from_states=(State.REQUESTED, State.DIALING))
        else:
            _not_reached(p, rt, transfer, "declined", "human agent did not accept the call "
                         "(screening)", task_id)
    elif kind == CallbackKind.AF_CONFERENCE:
        _conference(p, rt, transfer, params, task_id)


def _conference(p: PlivoProvider, rt: Runtime, transfer: Transfer,
                params: Mapping[str, str], task_id: str) -> None:
    """xml/conference callbackUrl: ConferenceAction (enter, exit, ...), CallUUID,
    ConferenceUUID, ConferenceName, ConferenceMemberID."""
    tid = transfer.transfer_id
    action = params.get("ConferenceAction", "")
    call_uuid = params.get("CallUUID", "")
    is_customer = bool(call_uuid) and call_uuid == transfer.call_id
    if action == "enter" and is_customer:
        current = rt.store.get_record(tid) or transfer
        human_room = current.extra.get("conference_uuid", "")
        room = params.get("ConferenceUUID", "")
        if not (human_room and room) or room == human_room:
            rt.succeed(current, "customer joined the human agent",
                       from_states=(State.BRIDGING,))
        else:
            # The human's leaving ended their conference (endConferenceOnExit) while the
            # customer was on the way: the customer is alone in a new one.
            _lost_while_bridging(rt, current, "human agent left before the customer joined")
    elif action == "enter" and transfer.state in PRE_BRIDGE:
        # Only an accepted human is answered the conference: their entering moves the
        # customer.
        fields = {"conference_uuid": params.get("ConferenceUUID", "")}
        if call_uuid and not transfer.agent_call_sid:
            fields["agent_call_sid"] = call_uuid
        rt.store.set_fields(tid, **fields)
        joined = transfer.with_extra(conference_uuid=fields["conference_uuid"])
        bridge(p, rt, replace(joined, agent_call_sid=transfer.agent_call_sid or call_uuid),
               task_id)
    elif action == "exit" and not is_customer and transfer.state in (*PRE_BRIDGE,
                                                                    State.BRIDGING):
        if transfer.state is State.BRIDGING:
            _lost_while_bridging(rt, transfer, "human agent left before the customer joined")
        else:
            _not_reached(p, rt, transfer, "agent_hung_up", "human agent left the conference",
                         task_id)
    else:
        rt.store.note(tid, f"conference {action}")


def _lost_while_bridging(rt: Runtime, transfer: Transfer, note: str) -> None:
    """The human left while the customer was being moved: transfer.failed. The customer
    is never left alone: still with the AI (not moved yet), they stay; once moved (on the
    way, in the ended conference, or alone in a new one), they are moved again to
    /plivo/af-left: back to the AI. bridge() checks the other way round after recording
    the move, so that one of the two sees the other."""
    if not rt.fail(transfer, "agent_hung_up", note, from_states=(State.BRIDGING,)):
        return
    current = rt.store.get_record(transfer.transfer_id)
    if current is not None and current.extra.get("customer_moved"):
        _customer_out(rt, transfer)


def _customer_out(rt: Runtime, transfer: Transfer) -> None:
    """Move the customer out of a conference they are alone in: to /plivo/af-left (back
    to the AI, or the apology without a resume URL)."""
    from providers.plivo.handoff import make_client

    url = af_url(rt.settings, AF_LEFT_PATH, transfer)
    try:
        client = make_client(rt.settings, transfer)
        client.call(lambda sdk: sdk.calls.transfer(
            call_uuid=transfer.call_id, legs="aleg", aleg_url=url, aleg_method="POST"))
    except (PermanentProviderError, TransientProviderError) as exc:
        rt.logger(transfer).warning("could not move the customer out of the conference",
                                    extra={"error": str(exc)})
        return
    rt.store.note(transfer.transfer_id, "customer moved back out of the conference")


def bridge(p: PlivoProvider, rt: Runtime, transfer: Transfer, task_id: str) -> None:
    """Move the customer into the conference: `calls.transfer` of their leg to our join XML
    (api/call/transfer-a-call; this ends the AI's stream)."""
    from providers.plivo.handoff import make_client

    tid = transfer.transfer_id
    if not claim_bridge(rt, tid, "human agent in the conference; moving the customer",
                        task_id, PRE_BRIDGE):
        return
    current = rt.store.get_record(tid)
    if current is None or current.state is not State.BRIDGING:
        return  # the human left meanwhile: the customer stays with the AI
    client = make_client(rt.settings, transfer)
    aleg_url = af_url(rt.settings, AF_JOIN_PATH, transfer)
    try:
        client.call(lambda sdk: sdk.calls.transfer(
            call_uuid=transfer.call_id, legs="aleg", aleg_url=aleg_url, aleg_method="POST"))
    except PermanentProviderError as exc:
        # Plivo refuses to transfer a call that has ended.
        if rt.fail(transfer, "customer_hung_up", f"customer call not movable: {exc}",
                   from_states=(State.BRIDGING,)):
            hang_up_leg(rt, transfer)
        return
    rt.store.set_fields(tid, customer_moved="1")
    rt.store.note(tid, "customer moved into the conference")
    current = rt.store.get_record(tid)
    if current is not None and current.state is State.FAILED \
            and current.extra.get("reason") == "agent_hung_up":
        _customer_out(rt, transfer)  # the human left while the move was under way


def customer_call_ended(p: PlivoProvider, rt: Runtime, transfer: Transfer,
                        params: Mapping[str, str]) -> bool:
    # The AI holds the customer until the bridge: their hanging up ends the transfer, and
    # the human's call (ringing or being briefed) is cancelled.
    moved = bool(transfer.extra.get("customer_moved"))
    if rt.fail(transfer, "customer_hung_up", "customer hung up before the bridge",
               from_states=(*PRE_BRIDGE, State.BRIDGING)):
        hang_up_leg(rt, rt.store.get_record(transfer.transfer_id) or transfer)
    return moved


def cleanup(p: PlivoProvider, rt: Runtime, transfer: Transfer) -> None:
    """A transfer that failed (deadline, provider error): end the human leg if one is up."""
    current = rt.store.get_record(transfer.transfer_id) or transfer
    if current.state is not State.SUCCEEDED:
        hang_up_leg(rt, current)


# --- the web app's part: the routes whose XML steers a call --------------------------------

def _pending(record: Transfer | None, attempt: str) -> bool:
    return (record is not None and record.state in PRE_BRIDGE
            and str(record.attempt) == attempt)


def _give_time(store: Store, transfer_id: str, transfer: Transfer) -> None:
    """The deadline was a ring's; a human who picked up now has the briefing, the key and
    the bridge to go through: never less than that (estimated slowly, as confirmTimeout)."""
    window = confirm_timeout(transfer) + CONFIRM_GRACE + BRIDGE_TIME
    if transfer.voicemail_detection and not transfer.screening:
        window += DETECTION_HOLD
    current = store.r.zscore(store.DEADLINES, transfer_id) or 0.0
    store.extend_deadline(transfer_id, max(float(current), time.time() + window))


def ringing(store: Store, transfer_id: str, attempt: str, params: Mapping[str, str]) -> None:
    """/plivo/af-ring: the leg rings; record its request (look-before-dial).
    Raises redis.RedisError (the route answers 503; Plivo retries)."""
    record = store.get_record(transfer_id)
    # Only the request: a leg still ringing is ended by cancelling it (its CallUUID, for
    # hanging up, is recorded once it answers).
    # RequestUUID as the sandbox and integrations have it; ALegRequestUUID is the documented
    # one (xml/request: "A unique request identifier returned by Plivo for an outbound call
    # initiated via API").
    request_uuid = params.get("RequestUUID") or params.get("ALegRequestUUID")
    if _pending(record, attempt) and request_uuid:
        store.set_fields(transfer_id, request_uuid=request_uuid)


def answer_human(store: Store, settings: Settings, ctx: Mapping[str, str],
                 params: Mapping[str, str]) -> str:
    """/plivo/af-answer: the human picked up. Record their CallUUID (the leg can then be
    hung up) and answer the briefing; Redis down: the generic briefing from the context."""
    tid, attempt = ctx["transfer_id"], ctx.get("attempt", "0")
    try:
        record = store.get_record(tid)
        if not _pending(record, attempt):
            return hangup_xml()  # a leg left behind, or a transfer already over
        assert record is not None
        if params.get("CallUUID"):
            store.set_fields(tid, agent_call_sid=params["CallUUID"])
        store.note(tid, "human agent picked up; briefing them")
        # The context's confirm_timeout, computed when the URL was made, still counts.
        known = record.with_extra(**{k: ctx[k] for k in ("confirm_timeout", "briefing")
                                     if k in ctx})
        _give_time(store, tid, known)
        return human_answer_xml(settings, replace(known, attempt=int(attempt or 0)))
    except redis.RedisError:
        return human_answer_xml(settings, context_record(ctx))


def accept(store: Store, settings: Settings, ctx: Mapping[str, str],
           params: Mapping[str, str]) -> tuple[str, dict[str, str] | None]:
    """/plivo/af-accept (GetDigits' action, or the briefing's end): the human's way into the
    conference, or goodbye; and the params to hand to the worker (None: nothing to tell).
    Redis down, a pending transfer is assumed: a human kept out by our outage would be a
    transfer lost for nothing."""
    tid, attempt = ctx["transfer_id"], ctx.get("attempt", "0")
    record: Transfer | None
    try:
        record = store.get_record(tid)
        readable = True
    except redis.RedisError:
        record, readable = None, False
    if readable and not _pending(record, attempt):
        return hangup_xml(), None
    if readable and record is not None and record.extra.get("answered_by") == "machine":
        return hangup_xml(), None
    out = {"attempt": attempt, "CallUUID": params.get("CallUUID", ""),
           "Digits": params.get("Digits", "")}
    if ctx.get("screening") and params.get("Digits", "") != screening_key(
            context_record(ctx)):
        if readable:
            # Read by the leg's hangup callback; the worker's task says declined all the same.
            with contextlib.suppress(redis.RedisError):
                store.set_fields(tid, declined="1")
        return goodbye_xml(), out
    if readable:
        # Read by the worker before a machine verdict (it may come later than this).
        with contextlib.suppress(redis.RedisError):
            store.set_fields(tid, accepted=attempt)
    return conference_xml(settings, context_record({**ctx, "attempt": attempt})), \
        {**out, "accepted": "1"}


def join_customer(store: Store, settings: Settings, ctx: Mapping[str, str]) -> str:
    """/plivo/af-join: the customer's leg into the conference; a transfer already over (the
    human left while the customer was on the way): /plivo/af-left's answer instead. Redis
    down: the conference (all it needs is in the URL)."""
    try:
        record = store.get_record(ctx["transfer_id"])
    except redis.RedisError:
        record = None
    if record is not None and record.state is not State.BRIDGING:
        return customer_left_xml(settings, record.state is State.SUCCEEDED)
    return customer_join_xml(settings, context_record(ctx))


def customer_left(store: Store, settings: Settings, ctx: Mapping[str, str]) -> str:
    """/plivo/af-left (the customer's Conference action, or the worker's move out of an
    empty one): the call is over after a bridge, else back to the AI. Redis down: back to
    the AI (a customer not served is never hung up on)."""
    try:
        record = store.get_record(ctx["transfer_id"])
    except redis.RedisError:
        record = None
    return customer_left_xml(settings, record is not None and record.state is State.SUCCEEDED)
