"""Exotel: the applet bridge. The AI leaves first.

1. The worker sets the flag and the call-id index and emits `transfer.disconnect_ai`
   (action `disconnect`). The platform closes its Voicebot/Stream applet's websocket.
2. Exotel moves on to the flow's Connect applet, which GETs /exotel/dial-up: from its "Dial
   whom" URL (we answer the number as text) or from its dynamic URL (programmable connect,
   with an Exotel-Version header: we answer JSON, every fallback destination in order).
   The customer hears a brief hold meanwhile.
3. How it ended: a Passthru applet after Connect (CallType, DialWhomNumber) where the Connect
   ends with the caller still on; the customer call's StatusCallback (its legs; the human is
   leg 2), which Exotel sends only for calls placed through its API. Exotel says callbacks
   can be late or lost, and a caller who hangs up ends the flow before any Passthru, so at
   the deadline the worker asks the call details API instead.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from providers.base import (
    NETWORK_ERRORS,
    PermanentProviderError,
    TransientProviderError,
    account_for,
    cached_client,
    sort_http_failure,
    unreachable,
)
from providers.exotel import callbacks
from providers.exotel.account import ExotelAccount
from providers.exotel.callbacks import human_outcome
from shared.config import Settings
from shared.http import settle_environment
from shared.model import CallbackKind, Transfer
from shared.store import State

if TYPE_CHECKING:
    from workers.runtime import Runtime

# The callbacks our routes hand to the worker.
CALLBACK_KINDS = frozenset({CallbackKind.PASSTHRU, CallbackKind.DIAL_UP_MISSING})
# While the call details API cannot tell yet, look again this often, until the flag's TTL.
RECHECK_SECONDS = 10.0


class ExotelClient:
    """The REST calls we make to Exotel (there is no official SDK), with timeouts and retries
    of transient failures on idempotent requests."""

    def __init__(self, account: ExotelAccount, timeout: float) -> None:
        self.base = (f"{account.api_base_url.rstrip('/')}/v1/Accounts/"
                     f"{account.account_sid}")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.auth = (account.secret("api_key"), account.secret("api_token"))
        settle_environment(self.session, self.base)
        retry = Retry(total=2, backoff_factor=0.3, status_forcelist=(429, 500, 502, 503, 504),
                      allowed_methods=frozenset({"GET"}), raise_on_status=False)
        self.session.mount("https://", HTTPAdapter(max_retries=retry))
        self.session.mount("http://", HTTPAdapter(max_retries=retry))

    def call_details(self, call_sid: str) -> dict[str, Any]:
        """GET /v1/Accounts/{sid}/Calls/{CallSid}.json?details=true -> the "Call" object."""
        try:
            resp = self.session.get(f"{self.base}/Calls/{call_sid}.json",
                                    params={"details": "true"}, timeout=self.timeout)
        except NETWORK_ERRORS as exc:
            raise unreachable("exotel", exc, read_only=True) from exc
        if resp.status_code != 200:
            raise sort_http_failure("exotel", resp.status_code, resp.text[:200])
        try:
            call = resp.json()["Call"]
        except (ValueError, KeyError, TypeError) as exc:
            raise PermanentProviderError("exotel call details: unexpected body") from exc
        return dict(call)


def make_client(settings: Settings, transfer: Transfer) -> ExotelClient:
    """An Exotel client authenticated as the transfer's account."""
    account = account_for(settings, "exotel", transfer, ExotelAccount,
                          "EXOTEL_ACCOUNT_SID, EXOTEL_API_KEY and EXOTEL_API_TOKEN")
    timeout = settings.provider_http_timeout
    return cached_client(("exotel", account.account_sid, account.secret("api_key"),
                          account.secret("api_token"), account.api_base_url, str(timeout)),
                         lambda: ExotelClient(account, timeout))


def normalise_status(raw: Mapping[str, Any]) -> dict[str, str]:
    """A status callback or passthru, form or JSON, as flat strings:
    CallSid, Status, EventType, DialCallStatus, Leg2Status, Leg2Duration."""
    out = {k: str(v) for k, v in raw.items()
           if k in ("CallSid", "Status", "EventType", "DialCallStatus", "DialCallSid",
                    "DialWhomNumber", "CustomField", "DateUpdated", "CallType")
           and v is not None}
    legs: list[Mapping[str, Any]] = []
    if isinstance(raw.get("Legs"), list):
        legs = [leg.get("Leg", leg) for leg in raw["Legs"] if isinstance(leg, Mapping)]
    else:  # form encoding: Legs[0][Status]=completed&Legs[1][OnCallDuration]=12
        indexed: dict[int, dict[str, Any]] = {}
        for key, value in raw.items():
            if key.startswith("Legs[") and "][" in key:
                index, _, field = key[5:].partition("][")
                if index.isdigit():
                    indexed.setdefault(int(index), {})[field.rstrip("]")] = value
        legs = [indexed[i] for i in sorted(indexed)]
    if len(legs) > 1:
        out["Leg2Status"] = str(legs[1].get("Status", ""))
        out["Leg2Duration"] = str(legs[1].get("OnCallDuration", "0"))
    return out


class ExotelProvider:
    name = "exotel"

    def start(self, rt: Runtime, transfer: Transfer) -> None:
        # Told before the state moves: a worker dying in between makes a redelivery tell
        # again (harmless) rather than never (the AI would hold the call to the deadline).
        rt.emit_disconnect(transfer)
        # With several destinations Exotel goes down the list itself: which one answered
        # is unknown until its passthru names it (DialWhomNumber).
        unknown = {"attempt": ""} if len(transfer.destinations) > 1 else {}
        rt.store.transition(transfer.transfer_id, State.DIALING,
                            "AI told to disconnect; waiting for the Connect applet",
                            from_states=(State.REQUESTED,), fields=unknown)

    def reconcile(self, rt: Runtime, transfer: Transfer) -> bool:
        tid = transfer.transfer_id
        give_up_at = transfer.started_at + rt.settings.transfer_flag_ttl
        pending = (State.REQUESTED, State.DIALING)
        try:
            call = make_client(rt.settings, transfer).call_details(transfer.call_id)
        except (TransientProviderError, PermanentProviderError) as exc:
            rt.logger(transfer).warning("call details unavailable", extra={"error": str(exc)})
            call = None
        if call is not None:
            details = call.get("Details") or {}
            legs = details.get("Legs") or []
            status = {"Status": str(call.get("Status", "")),
                      "Leg2Status": str(details.get("Leg2Status") or ""),
                      "Leg2Duration": str(details.get("ConversationDuration") or "0")}
            if len(legs) > 1 and not status["Leg2Status"]:
                leg = legs[1].get("Leg", legs[1])
                status["Leg2Duration"] = str(leg.get("OnCallDuration", "0"))
            answered, reason = human_outcome(status)
            rt.store.note(tid, f"reconciled with call details: call {status['Status']}, "
                               f"human leg {status['Leg2Status'] or 'unknown'}")
            if answered:
                rt.succeed(transfer, "human agent answered (call details)",
                           from_states=pending)
                return True
            if answered is False or status["Status"] in ("completed", "failed", "busy",
                                                          "no-answer"):
                rt.fail(transfer, reason or "no_answer", "call details: human not reached",
                        from_states=pending)
                return True
        now = time.time()
        current = rt.store.get_record(tid)
        if current is None or not current.dial_up_served:
            # Exotel never asked whom to dial: the AI most likely never left the call (or
            # the flow has no Connect applet). Failing now lets it carry on.
            return False
        if now + RECHECK_SECONDS < give_up_at:
            rt.store.extend_deadline(tid, now + RECHECK_SECONDS)
            return True
        return False

    def cleanup(self, rt: Runtime, transfer: Transfer) -> None:
        # The flow owns the call from here on; there is nothing of ours to release.
        return None

    def handle_callback(self, rt: Runtime, transfer: Transfer, kind: str,
                        params: Mapping[str, str], task_id: str) -> None:
        callbacks.handle_callback(self, rt, transfer, kind, params, task_id)

    def customer_call_ended(self, rt: Runtime, transfer: Transfer,
                            params: Mapping[str, str]) -> bool:
        return callbacks.customer_call_ended(self, rt, transfer, params)
