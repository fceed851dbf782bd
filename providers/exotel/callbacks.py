"""Exotel's part of the state machine. The worker's: the Passthru and the customer's hangup
(`ExotelProvider` in `handoff` delegates here; it keeps the REST calls). The web app's: whom
the Connect applet dials (the dial-up), and which lead a customer's status callback may
speak for.

The routes verify and parse; these functions decide, record and return the answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from providers.exotel.markup import dial_up_body, programmable_connect
from shared.config import Settings
from shared.logs import get_logger
from shared.model import CallbackKind, State, Transfer
from shared.phone import from_provider, region_of
from shared.store import Store

if TYPE_CHECKING:
    from providers.exotel.handoff import ExotelProvider
    from workers.runtime import Runtime

log = get_logger("webhooks.exotel")
MAX_ID = 100
# Leg 2 (the human) status -> failure reason. "canceled: The caller disconnected the call
# during a dial attempt or ringing the destination number" (support.exotel.com/support/
# solutions/articles/27323, Leg2Status / DialCallStatus).
LEG_FAILURES = {"busy": "busy", "no-answer": "no_answer", "failed": "failed",
                "canceled": "customer_hung_up"}
ANSWERED = frozenset({"completed", "in-progress", "answered"})

# A Passthru after Connect says how the Connect went in CallType ("Call conversation
# happened" / "Connect applet, no agent picked up" / "Client hung up during connect applet");
# it carries no DialCallStatus. Source: support.exotel.com/support/solutions/articles/48283.
PASSTHRU_CALL_TYPES = {"completed": (True, ""), "incomplete": (False, "no_answer"),
                       "client-hangup": (False, "customer_hung_up")}


def human_outcome(status: Mapping[str, str]) -> tuple[bool | None, str]:
    """(answered?, reason if not). None when the data cannot tell."""
    if status.get("CallType") in PASSTHRU_CALL_TYPES:
        return PASSTHRU_CALL_TYPES[status["CallType"]]
    dial = status.get("DialCallStatus", "")
    leg2 = status.get("Leg2Status", "") or dial
    try:
        talked = float(status.get("Leg2Duration", "0") or 0) > 0
    except ValueError:
        talked = False
    if talked or leg2 in ANSWERED:
        return True, ""
    if leg2 in LEG_FAILURES:
        return False, LEG_FAILURES[leg2]
    return None, ""


# --- the worker's part: the Passthru and the customer's hangup --------------------------

def handle_callback(p: ExotelProvider, rt: Runtime, transfer: Transfer, kind: str,
                    params: Mapping[str, str], task_id: str) -> None:
    pending = (State.REQUESTED, State.DIALING)
    if kind == CallbackKind.DIAL_UP_MISSING:
        rt.fail(transfer, "timeout", "dial-up fetched with no transfer pending",
                from_states=pending)
    elif kind == CallbackKind.PASSTHRU:
        answered, reason = human_outcome(params)
        if answered is not None:
            _record_destination(rt, transfer, params.get("DialWhomNumber", ""))
        how = params.get("CallType") or params.get("DialCallStatus") or "unknown"
        if answered is False and not transfer.dial_up_served:
            # Connect never got a number from us (e.g. Redis was down): nobody was rung.
            reason, how = "timeout", f"{how}, with no dial-up served"
        if answered:
            rt.succeed(transfer, "human agent answered (passthru)", from_states=pending)
        elif answered is False:
            rt.fail(transfer, reason, f"connect ended: {how}", from_states=pending)


def _record_destination(rt: Runtime, transfer: Transfer, number: str) -> None:
    """Exotel names the number it dialed last (DialWhomNumber): the one that answered, or
    the last one tried. It reports Indian numbers in national format ("0" + ten digits),
    so the number is read in the ExoPhone's country before it is compared with ours."""
    listed = [from_provider(n, None) for n in transfer.destinations]
    dialed = from_provider(number, region_of(transfer.outbound_number) or "IN")
    if dialed and dialed in listed:
        rt.store.set_fields(transfer.transfer_id, attempt=str(listed.index(dialed)))


def customer_call_ended(p: ExotelProvider, rt: Runtime, transfer: Transfer,
                        params: Mapping[str, str]) -> bool:
    answered, reason = human_outcome(params)
    pending = (State.REQUESTED, State.DIALING)
    if answered:
        rt.succeed(transfer, "human agent answered (status callback)", from_states=pending)
    else:
        rt.fail(transfer, reason or "customer_hung_up",
                f"call ended {params.get('Status', '')}; human leg "
                f"{params.get('Leg2Status') or 'not reached'}", from_states=pending)
    # The AI left the call for the transfer; its end is part of the transfer.
    return transfer.state is not State.REQUESTED


# --- the web app's part: the dial-up ------------------------------------------------------


@dataclass(frozen=True)
class DialUp:
    """The dial-up's answer: a body (None: nothing pending, 404) and, when the Connect
    applet came for a transfer that has nothing left to dial, that transfer's id, so that
    the worker fails it at once rather than at its deadline."""

    body: str | None = None
    mimetype: str = "text/plain"
    missing: str = ""


def _ours(transfer: Transfer | None, call_sid: str) -> bool:
    return (transfer is not None and transfer.provider == "exotel"
            and transfer.call_id == call_sid)


def _find(store: Store, call_sid: str, custom_field: str, *, serve: bool
          ) -> tuple[Transfer | None, str | None]:
    """The Exotel transfer of this call, and the number to dial if it is pending.

    Found by the CallSid Exotel sends (the request's call_id). CustomField (the lead id, where
    the platform set it) is a fallback only for an Exotel transfer on this very call: a token
    that leaked must not reach another provider's transfer or another call's."""
    transfer_id = store.transfer_for_call("exotel", call_sid)
    if transfer_id is None and custom_field and len(custom_field) <= MAX_ID:
        transfer_id = store.active_transfer(custom_field)
        found = store.get_record(transfer_id) if transfer_id else None
        if not _ours(found, call_sid):
            return None, None
    if transfer_id is None:
        return None, None
    if serve:
        transfer, number = store.serve_dial_up(
            transfer_id, "dial-up served; Exotel is dialing the human agent")
    else:  # a HEAD only looks
        transfer = store.get_record(transfer_id)
        number = store.get_flag(transfer.lead_id) if transfer else None
    if not _ours(transfer, call_sid):
        return None, None
    return transfer, number


def dial_up(store: Store, settings: Settings, call_sid: str, custom_field: str, *,
            head: bool, exotel_version: str | None) -> DialUp:
    """Whom the Connect applet dials. Raises redis.RedisError (the number lives only in
    Redis: the route then answers nothing pending, and the deadline settles the transfer)."""
    programmable = programmable_connect(settings, exotel_version)
    transfer, number = _find(store, call_sid, custom_field, serve=not head)
    if transfer is None:
        return DialUp()
    if transfer.final or not number:
        return DialUp(missing="" if head else transfer.transfer_id)
    if not programmable and not transfer.attempt_known:
        # Text dials one number: the destination reached is the first, not unknown.
        try:
            store.set_fields(transfer.transfer_id, attempt="0")
        except Exception:
            log.warning("exotel dial-up bookkeeping failed", exc_info=True)
    body, mimetype = dial_up_body(settings, transfer, number, programmable)
    return DialUp(body, mimetype)


def checked_lead(store: Store, call_sid: str, lead_id: str) -> tuple[str | None, bool]:
    """(lead id to pass on, accept?). A call with a transfer speaks for its own lead only; a
    call without one may not speak for a lead that has a transfer in flight (a forged hangup
    would end it as transferred)."""
    if len(lead_id) > MAX_ID:
        return None, False
    transfer_id = store.transfer_for_call("exotel", call_sid)
    if transfer_id is not None:
        transfer = store.get_record(transfer_id)
        return (lead_id if transfer and transfer.lead_id == lead_id else None), True
    if store.active_transfer(lead_id) or store.get_flag(lead_id) is not None:
        return None, False
    return lead_id, True
