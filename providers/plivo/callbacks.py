"""Plivo's part of the state machine. The worker's: Dial callbacks, the customer's hangup,
the deadline (`PlivoProvider` in `handoff` delegates here; it keeps the REST calls). The web
app's: the decisions behind the routes whose XML answer steers the live call (dial-up,
confirmSound, Dial action).

The routes verify and parse; these functions decide, record and return the XML.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

import redis

from providers.plivo.markup import (
    CONFIRM_GRACE,
    confirm_timeout,
    context_record,
    destination,
    dial_action_xml,
    dial_up_xml,
    resume_xml,
    whisper_xml,
)
from shared.config import Settings
from shared.contracts import GROUP_SEPARATOR
from shared.model import CallbackKind, Cause, State, Transfer
from shared.phone import from_provider
from shared.store import Store

if TYPE_CHECKING:
    from providers.plivo.handoff import PlivoProvider
    from workers.runtime import Runtime

# Dial action DialStatus -> failure reason.
DIAL_FAILURES = {"busy": "busy", "no-answer": "no_answer", "timeout": "no_answer",
                 "failed": "failed", "cancel": "failed"}


def picked_up_field(attempt: str | int) -> str:
    """The record field holding when the human of destination `attempt` picked up (per
    destination, so that a pick-up on one never counts for the next)."""
    return f"picked_up_at_{int(attempt or 0)}"


def screened_out(transfer: Transfer, attempt: str, at: float) -> bool:
    """For a Dial that ended `completed` at `at`: was the human's leg dropped for not
    pressing the key, rather than bridged?

    Plivo's docs do not say whether the Dial's answer callback comes when the human picks
    up or once they have pressed the confirm key, nor what DialStatus a leg dropped for no
    key gets. What they do say: confirmTimeout starts at the answer and the human must
    press within it, else the leg is not bridged. So a leg still up when confirmTimeout has
    passed was bridged; a Dial that ended earlier is taken as not accepted (a human who
    took the call and hung up within that window counts as declined: the customer goes
    back to the AI, never hung up on)."""
    if not transfer.screening or transfer.state is State.SUCCEEDED:
        return False
    picked = transfer.extra.get(picked_up_field(attempt))
    if not picked:
        return True  # never picked up: nothing was bridged
    # The grace: the Dial action of a dropped leg may travel slower than the confirmSound
    # fetch that set `picked`.
    return at < float(picked) + confirm_timeout(transfer) + CONFIRM_GRACE



def failure_reason(transfer: Transfer, dial_status: str) -> str:
    """Why a Dial ended without the human: a screened human who picked up (heard the
    briefing) but did not press the key declined; else the DialStatus says."""
    if transfer.screening and (transfer.extra.get("human_picked_up") or
                               dial_status == "completed"):
        return "declined"
    return DIAL_FAILURES.get(dial_status, "failed")



def answer_dial_action(store: Store, settings: Settings, transfer_id: str,
                       params: Mapping[str, str], ctx: Mapping[str, str] | None
                       ) -> tuple[str, bool]:
    """The XML that answers a Dial action, and whether the action is still to be handed to
    the worker (False when the answer dials the next destination: the store has recorded
    that step). Raises redis.RedisError; the caller then answers dial_action_xml from the
    signed context alone (see degraded_dial_action)."""
    status, attempt = params["DialStatus"], params["attempt"]
    # A completed Dial without screening was a bridge: nothing to read.
    transfer = store.get_record(transfer_id) \
        if status != "completed" or ctx is None or ctx.get("screening") else None
    if transfer is None:
        bridged = status == "completed" and not (ctx or {}).get("screening")
    elif transfer.final:
        bridged = transfer.state is State.SUCCEEDED and status == "completed"
    else:
        bridged = status == "completed" and not screened_out(
            transfer, attempt, float(params["received_at"]))
        if not bridged:
            # Not reached: the next fallback destination, if the template has one (one
            # atomic step in the store, answered at once: Plivo runs this answer).
            outcome, current, number = store.advance_destination(
                transfer_id, int(attempt), failure_reason(transfer, status),
                # "DialHangupCause: the standard telephony hangup cause" (dial-status-reporting).
                cause=Cause.of(None, params.get("DialHangupCause")))
            if outcome in ("next", "stale") and number:
                if outcome == "next" and transfer.state is State.HUMAN_ANSWERED:
                    # A screened human who did not take it: ringing the next one.
                    store.transition(transfer_id, State.DIALING,
                                     "dialing the next destination",
                                     from_states=(State.HUMAN_ANSWERED,))
                return dial_up_xml(settings, replace(transfer, attempt=current),
                                   number), False
    return dial_action_xml(settings, bridged), True


def degraded_dial_action(settings: Settings, status: str, ctx: Mapping[str, str] | None
                         ) -> str:
    """The Dial action's answer with Redis down: back to the AI, or the end of the call
    after a bridge we can vouch for (no screening). No next destination: the store could
    not record the step, and a Dial it does not know of would have its outcome dropped."""
    bridged = status == "completed" and ctx is not None and not ctx.get("screening")
    return dial_action_xml(settings, bridged)




# --- the worker's part: Dial callbacks, the customer's hangup, the deadline ---------------

def handle_callback(p: PlivoProvider, rt: Runtime, transfer: Transfer, kind: str,
                    params: Mapping[str, str], task_id: str) -> None:
    tid = transfer.transfer_id
    pending = (State.REQUESTED, State.DIALING, State.HUMAN_ANSWERED)
    if kind == CallbackKind.DIAL_UP_MISSING:
        rt.fail(transfer, "timeout", "dial-up fetched with no transfer pending",
                from_states=pending)
    elif kind == CallbackKind.DIAL_CALLBACK:
        event = params.get("Event") or params.get("DialAction", "")
        if event in _ANSWER_EVENTS:
            _member_answered(rt, transfer, params)
        if event not in _ANSWER_EVENTS:
            rt.store.note(tid, f"dial {event}")
        elif transfer.screening:
            _picked_up(rt, transfer, params)
        else:
            rt.succeed(transfer, "human agent answered", from_states=pending)
    elif kind == CallbackKind.DIAL_ACTION:
        status = params.get("DialStatus", "")
        attempt = params.get("attempt", "0")
        current = rt.store.get_record(tid)
        if current is None or attempt != str(current.attempt):
            return  # about a destination already moved past
        at = float(params.get("received_at") or time.time())
        if status == "completed" and not screened_out(current, attempt, at):
            # The answer callback may have been lost; a completed Dial was bridged.
            rt.succeed(transfer, "dial completed", from_states=pending)
        else:
            rt.fail(transfer, failure_reason(current, status),
                    f"dial ended {status}; customer sent back", from_states=pending)


def _member_answered(rt: Runtime, transfer: Transfer, params: Mapping[str, str]
                     ) -> None:
    """A ring group's member that picked up: by the B leg's number (DialBLegTo, sent by
    Plivo-compatible servers and integrations; the dial callback table is not readable in
    Plivo's docs). Without it the event names no member. The first pick-up recorded is
    the one (Plivo connects the first and hangs up the rest, xml/dial/number)."""
    members = destination(transfer).split(GROUP_SEPARATOR)
    if len(members) < 2 or params.get("attempt", "0") != str(transfer.attempt):
        return
    to = from_provider(params.get("DialBLegTo", ""), None)
    if to in members and not transfer.extra.get("member"):
        rt.store.set_fields(transfer.transfer_id, member=str(members.index(to)))


def _picked_up(rt: Runtime, transfer: Transfer, params: Mapping[str, str]
               ) -> None:
    """A screened human picked up. Plivo's docs leave open whether this callback comes
    before or after the key press, so it proves nothing about the key: the transfer
    waits for the confirm window to pass with the Dial still up (see screened_out),
    checked by the deadline (reconcile)."""
    tid = transfer.transfer_id
    attempt = params.get("attempt", "0")
    field = picked_up_field(attempt)
    current = rt.store.get_record(tid)
    if current is None or str(current.attempt) != attempt:
        return
    picked = current.extra.get(field)
    if not picked:
        picked = params.get("received_at") or repr(time.time())
        rt.store.set_fields(tid, **{field: picked, "human_picked_up": "1"})
    moved = rt.store.transition(tid, State.HUMAN_ANSWERED,
                                "human agent picked up; waiting for the screening key",
                                from_states=(State.REQUESTED, State.DIALING))
    if moved.ok or moved.previous == State.HUMAN_ANSWERED:
        rt.store.extend_deadline(tid, float(picked) + confirm_timeout(current)
                                 + CONFIRM_GRACE)


def customer_call_ended(p: PlivoProvider, rt: Runtime, transfer: Transfer,
                        params: Mapping[str, str]) -> bool:
    # Once the transfer was initiated the AI has left: the hangup is part of the transfer.
    left_ai = transfer.state is not State.REQUESTED
    rt.fail(transfer, "customer_hung_up", "customer hung up before the human answered",
            from_states=(State.REQUESTED, State.DIALING, State.HUMAN_ANSWERED))
    return left_ai


def reconcile(p: PlivoProvider, rt: Runtime, transfer: Transfer) -> bool:
    """At the deadline. A screened human who picked up and whose leg is still up once
    the confirm window has passed pressed the key: Plivo would have dropped the leg
    (and posted the Dial action) otherwise."""
    picked = transfer.extra.get(picked_up_field(transfer.attempt))
    if not transfer.screening or not picked or transfer.final:
        return False  # every other outcome arrives by callback; none came in time
    bridged_at = float(picked) + confirm_timeout(transfer) + CONFIRM_GRACE
    if time.time() < bridged_at:
        rt.store.extend_deadline(transfer.transfer_id, bridged_at)
        return True
    return rt.succeed(transfer, "still on the line after the confirm window: key pressed",
                      from_states=(State.REQUESTED, State.DIALING, State.HUMAN_ANSWERED))


# --- the web app's part: dial callbacks that cannot change the transfer ----------------------

_ANSWER_EVENTS = ("DialAnswer", "answer")


def needs_worker(store: Store, transfer_id: str, params: Mapping[str, str],
                 account: str | None = None) -> bool:
    """Whether a Dial callback must go to the worker: not an event it only notes (anything
    but the answer: DialHangup, digits...) nor anything after the transfer has ended, which
    are recorded here as handle_callback and the task record them, in one round trip.
    Redis down (after the nonce check passed): the worker decides."""
    event = params.get("Event") or params.get("DialAction", "")
    live = None if event in _ANSWER_EVENTS else f"dial {event}"
    try:
        outcome = store.triage_callback(transfer_id, str(CallbackKind.DIAL_CALLBACK), live,
                                        account=account)
    except redis.RedisError:
        return True
    return outcome == "enqueue"


# --- the web app's part: the routes that answer the live call ------------------------------

def serve_dial_up(store: Store, settings: Settings, transfer_id: str, claim: str,
                  claim_ttl: int) -> tuple[str, bool]:
    """The dial-up XML from the pending transfer and its flag, in one Redis round trip that
    also claims the nonce and marks the dial-up served; and whether the worker is to hear
    that the dial-up came with nothing pending (`dial-up-missing`). Raises Replay and
    redis.RedisError (the route then answers from the signed URL: `degraded_dial_up`)."""
    transfer, number = store.serve_dial_up(
        transfer_id, "dial-up XML served; dialing the human agent", claim=claim,
        claim_ttl=claim_ttl)
    if transfer is None or transfer.final or not number:
        # Never strand the customer: back to the AI, or an apology.
        return resume_xml(settings), transfer is not None
    return dial_up_xml(settings, transfer, number), False


def degraded_dial_up(settings: Settings, ctx: Mapping[str, str] | None) -> str:
    """The dial-up with Redis down: from the signed URL alone (no replay check: a replay
    gets the XML the original got)."""
    record = context_record(ctx) if ctx else None
    number = record.destination if record else ""
    if record is None or not number:
        return resume_xml(settings)
    return dial_up_xml(settings, record, number)


def answer_whisper(store: Store, transfer_id: str, attempt: str) -> str:
    """The confirmSound, fetched when the human answers: record when (the confirm window
    starts; see screened_out) and that they picked up (a screened human who picked up but
    did not press the key declined, rather than did not answer). Raises redis.RedisError
    (the route then answers the generic briefing from its signed URL)."""
    transfer = store.get_record(transfer_id)
    if transfer is not None and not transfer.final \
            and not transfer.extra.get(picked_up_field(attempt)):
        store.set_fields(transfer_id, **{picked_up_field(attempt): repr(time.time()),
                                         "human_picked_up": "1"})
        store.note(transfer_id, "human agent picked up; briefing played")
    return whisper_xml(transfer)
