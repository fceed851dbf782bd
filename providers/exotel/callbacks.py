"""Exotel's part of the state machine that the web app runs: whom the Connect applet dials
(the dial-up), and which lead a customer's status callback may speak for. The worker's part
(passthru, the customer's hangup, the deadline) is `ExotelProvider` in `handoff`.

The routes verify and parse; these functions decide, record and return the answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from providers.exotel.markup import dial_up_body, programmable_connect
from shared.config import Settings
from shared.logs import get_logger
from shared.model import TERMINAL_STATES
from shared.store import Store

log = get_logger("webhooks.exotel")
MAX_ID = 100


@dataclass(frozen=True)
class DialUp:
    """The dial-up's answer: a body (None: nothing pending, 404) and, when the Connect
    applet came for a transfer that has nothing left to dial, that transfer's id, so that
    the worker fails it at once rather than at its deadline."""

    body: str | None = None
    mimetype: str = "text/plain"
    missing: str = ""


def _ours(transfer: Mapping[str, str] | None, call_sid: str) -> bool:
    return (transfer is not None and transfer.get("provider") == "exotel"
            and transfer.get("call_id") == call_sid)


def _find(store: Store, call_sid: str, custom_field: str, *, serve: bool
          ) -> tuple[dict[str, str] | None, str | None]:
    """The Exotel transfer of this call, and the number to dial if it is pending.

    Found by the CallSid Exotel sends (the request's call_id). CustomField (the lead id, where
    the platform set it) is a fallback only for an Exotel transfer on this very call: a token
    that leaked must not reach another provider's transfer or another call's."""
    transfer_id = store.transfer_for_call("exotel", call_sid)
    if transfer_id is None and custom_field and len(custom_field) <= MAX_ID:
        transfer_id = store.active_transfer(custom_field)
        found = store.get_transfer(transfer_id) if transfer_id else None
        if not _ours(found, call_sid):
            return None, None
    if transfer_id is None:
        return None, None
    if serve:
        transfer, number = store.serve_dial_up(
            transfer_id, "dial-up served; Exotel is dialing the human agent")
    else:  # a HEAD only looks
        transfer = store.get_transfer(transfer_id)
        number = store.get_flag(transfer["lead_id"]) if transfer else None
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
    if transfer["state"] in TERMINAL_STATES or not number:
        return DialUp(missing="" if head else transfer["transfer_id"])
    if not programmable and transfer.get("attempt") == "":
        # Text dials one number: the destination reached is the first, not unknown.
        try:
            store.set_fields(transfer["transfer_id"], attempt="0")
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
        transfer = store.get_transfer(transfer_id)
        return (lead_id if transfer and transfer.get("lead_id") == lead_id else None), True
    if store.active_transfer(lead_id) or store.get_flag(lead_id) is not None:
        return None, False
    return lead_id, True
