"""Plivo: `calls.transfer` of the customer's leg to our dial-up XML; the AI leaves at once.
(The default handoff; `handoff: "agent_first"` selects `agent_first` instead.)

1. `calls.transfer(call_uuid, legs="aleg", aleg_url=/plivo/dial-up)`: Plivo replaces the
   call's XML, which ends the AI's stream; we emit `transfer.disconnect_ai`.
2. Plivo fetches /plivo/dial-up and runs `<Dial callerId=outbound><Number>human</Number>`.
3. The human answering (the Dial's callbackUrl: `Event=DialAnswer`, or `DialAction=answer`)
   is success; with screening, see `screened_out`. The Dial ending unanswered (its action
   URL: DialStatus busy / no-answer / timeout / failed) is failure, and the action's answer
   sends the customer back to the AI (PLIVO_RESUME_URL).

Every URL whose answer steers the call (dial-up, dial action, confirmSound, dialMusic)
carries what its answer needs under an HMAC of ours (`signed_query`), so the webhooks can
answer it with Redis down; Redis then only serves replay checks and bookkeeping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import plivo
import plivo.rest.client as plivo_client
import requests
from plivo.exceptions import PlivoRestError

from providers.base import (
    NETWORK_ERRORS,
    PermanentProviderError,
    ProviderNotConfigured,
    TransientProviderError,
    account_for,
    cached_client,
    sort_http_failure,
    unreachable,
)
from providers.plivo import agent_first, callbacks
from providers.plivo.account import PlivoAccount
from providers.plivo.markup import DIAL_UP_PATH, steering_url
from shared.config import Settings
from shared.model import CallbackKind, Transfer
from shared.store import State

if TYPE_CHECKING:
    from workers.runtime import Runtime

T = TypeVar("T")

# After an interrupted transfer call, how long to wait for Plivo to fetch the dial-up before
# concluding that the transfer never happened.
DIAL_UP_GRACE = 3.0
# The callbacks our routes hand to the worker.
CALLBACK_KINDS = frozenset({CallbackKind.DIAL_CALLBACK, CallbackKind.DIAL_ACTION,
                            CallbackKind.DIAL_UP_MISSING, CallbackKind.AF_LEG,
                            CallbackKind.AF_MACHINE, CallbackKind.AF_ACCEPT,
                            CallbackKind.AF_CONFERENCE})
_AF_KINDS = frozenset({CallbackKind.AF_LEG, CallbackKind.AF_MACHINE, CallbackKind.AF_ACCEPT,
                       CallbackKind.AF_CONFERENCE})

_sdk_lock = threading.Lock()


def _point_sdk_at(base_url: str) -> None:
    """The SDK reads its API URLs from module constants on every request (and falls back to
    two more on a 5xx), so pointing it at another host means setting all of them, here only."""
    base = base_url.rstrip("/") + "/v1/Account"
    with _sdk_lock:
        if base != plivo_client.API_VOICE_BASE_URI:
            plivo_client.PLIVO_API_BASE_URI = base
            plivo_client.API_VOICE_BASE_URI = base
            plivo_client.API_VOICE_BASE_URI_FALLBACK_1 = base
            plivo_client.API_VOICE_BASE_URI_FALLBACK_2 = base


class _Client:
    """A Plivo REST client that remembers the HTTP status of its last response, since the
    SDK's exceptions do not carry it."""

    def __init__(self, account: PlivoAccount, timeout: float) -> None:
        _point_sdk_at(account.api_base_url)
        self.sdk: Any = plivo.RestClient(account.auth_id, account.secret("auth_token"),
                                         timeout=timeout)
        self.last_status = 0

        def remember(response: requests.Response, *_: Any, **__: Any) -> None:
            self.last_status = response.status_code

        self.sdk.session.hooks["response"].append(remember)

    def call(self, fn: Callable[[Any], T]) -> T:
        # The SDK keeps its fallback-URL retry count on the client and resets it only after
        # a success; a reused client must start each call afresh.
        self.sdk.voice_retry_count = 0
        self.last_status = 0
        try:
            return fn(self.sdk)
        except PlivoRestError as exc:
            raise sort_http_failure("plivo", self.last_status, str(exc)) from exc
        except NETWORK_ERRORS as exc:
            raise unreachable("plivo", exc) from exc


def make_client(settings: Settings, transfer: Transfer) -> _Client:
    """A Plivo client authenticated as the transfer's account."""
    account = account_for(settings, "plivo", transfer, PlivoAccount,
                          "PLIVO_AUTH_ID and PLIVO_AUTH_TOKEN")
    timeout = settings.provider_http_timeout
    try:
        return cached_client(("plivo", account.auth_id, account.secret("auth_token"),
                              account.api_base_url, str(timeout)),
                             lambda: _Client(account, timeout))
    except plivo.exceptions.AuthenticationError:
        # Not the SDK's message: it may quote what it was given.
        raise ProviderNotConfigured(
            f"plivo account {account.name!r}: auth_id is not a Plivo auth id") from None



class PlivoProvider:
    name = "plivo"

    def start(self, rt: Runtime, transfer: Transfer) -> None:
        if agent_first.selected(transfer):
            agent_first.place(self, rt, transfer, "0", transfer.transfer_number)
            return
        settings = rt.settings
        client = make_client(settings, transfer)
        tid = transfer.transfer_id
        if transfer.dial_attempted:
            # A worker died around the transfer call. If Plivo fetched the dial-up, the
            # transfer happened: transferring again would restart the human's ringing.
            # A rare recovery path: waiting here (a few seconds at most) is simplest.
            wait_until = float(transfer.dial_attempted) + DIAL_UP_GRACE
            while True:
                current = rt.store.get_record(tid)
                if current is not None and current.dial_up_served:
                    self._dialing(rt, transfer, "an interrupted transfer call went through")
                    return
                if time.time() >= wait_until:
                    break
                time.sleep(0.2)
        rt.store.set_fields(tid, dial_attempted=repr(time.time()))
        aleg_url = steering_url(settings, DIAL_UP_PATH, transfer)
        try:
            client.call(lambda sdk: sdk.calls.transfer(
                call_uuid=transfer.call_id, legs="aleg", aleg_url=aleg_url,
                aleg_method="POST"))
        except (TransientProviderError, PermanentProviderError) as exc:
            if not exc.outcome_unknown:  # Plivo answered: nothing was transferred
                rt.store.set_fields(tid, dial_attempted="")
            raise
        self._dialing(rt, transfer, "customer's call handed to the dial-up XML")

    @staticmethod
    def _dialing(rt: Runtime, transfer: Transfer, note: str) -> None:
        moved = rt.store.transition(transfer.transfer_id, State.DIALING, note,
                                    from_states=(State.REQUESTED,))
        if moved.ok:
            # Plivo has replaced the call's XML: the stream closing is a transfer.
            rt.emit_disconnect(transfer)

    def cleanup(self, rt: Runtime, transfer: Transfer) -> None:
        if agent_first.selected(transfer):
            agent_first.cleanup(self, rt, transfer)
            return
        # Nothing to release: the Dial's own timeout ends the human's leg, and its action URL
        # sends the customer back to the AI.
        return None

    def handle_callback(self, rt: Runtime, transfer: Transfer, kind: str,
                        params: Mapping[str, str], task_id: str) -> None:
        if kind in _AF_KINDS:
            agent_first.handle_callback(self, rt, transfer, kind, params, task_id)
            return
        callbacks.handle_callback(self, rt, transfer, kind, params, task_id)

    def customer_call_ended(self, rt: Runtime, transfer: Transfer,
                            params: Mapping[str, str]) -> bool:
        if agent_first.selected(transfer):
            return agent_first.customer_call_ended(self, rt, transfer, params)
        return callbacks.customer_call_ended(self, rt, transfer, params)

    def reconcile(self, rt: Runtime, transfer: Transfer) -> bool:
        if agent_first.selected(transfer):
            return False  # every outcome arrives by callback; none came in time
        return callbacks.reconcile(self, rt, transfer)
