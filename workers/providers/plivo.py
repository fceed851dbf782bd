"""Plivo: `calls.transfer` of the customer's leg to our dial-up XML; the AI leaves at once.

1. `calls.transfer(call_uuid, legs="aleg", aleg_url=/plivo/dial-up)`: Plivo replaces the
   call's XML, which ends the AI's stream; we emit `transfer.disconnect_ai`.
2. Plivo fetches /plivo/dial-up and runs `<Dial callerId=outbound><Number>human</Number>`.
3. The human answering (`Event=DialAnswer` on the Dial's callbackUrl) is success. The Dial
   ending unanswered (its action URL: DialStatus busy / no-answer / timeout / failed) is
   failure, and the action's answer sends the customer back to the AI (PLIVO_RESUME_URL).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlencode

import plivo
import plivo.rest.client as plivo_client
import requests
from plivo import plivoxml
from plivo.exceptions import PlivoRestError

from shared.config import Settings
from shared.store import State, ring_timeout
from workers.providers.base import (
    PermanentProviderError,
    ProviderNotConfigured,
    TransientProviderError,
    cached_client,
    key_prompt,
    screening_key,
)

if TYPE_CHECKING:
    from workers.runtime import Runtime

T = TypeVar("T")

DIAL_UP_PATH = "/plivo/dial-up"
DIAL_ACTION_PATH = "/plivo/dial-action"
DIAL_CALLBACK_PATH = "/plivo/dial-callback"
WHISPER_PATH = "/plivo/whisper"
HOLD_PATH = "/plivo/hold"

# Dial action DialStatus -> failure reason.
DIAL_FAILURES = {"busy": "busy", "no-answer": "no_answer", "timeout": "no_answer",
                 "failed": "failed", "cancel": "failed"}
# After an interrupted transfer call, how long to wait for Plivo to fetch the dial-up before
# concluding that the transfer never happened.
DIAL_UP_GRACE = 3.0
APOLOGY = "Sorry, we could not connect you to an agent right now. Please call again later."

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

    def __init__(self, settings: Settings) -> None:
        _point_sdk_at(settings.plivo_api_base_url)
        self.sdk: Any = plivo.RestClient(settings.plivo_auth_id, settings.plivo_auth_token,
                                         timeout=settings.provider_http_timeout)
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
            status = self.last_status
            cls = TransientProviderError if status >= 500 or status == 429 else \
                PermanentProviderError
            raise cls(f"plivo {status}: {exc}", status=status) from exc
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise TransientProviderError(
                f"plivo unreachable: {type(exc).__name__}",
                outcome_unknown=not isinstance(exc, requests.ConnectTimeout)) from exc


def make_client(settings: Settings, transfer: Mapping[str, str]) -> _Client:
    """A Plivo client for this transfer's account (today: the one from the environment)."""
    if not (settings.plivo_auth_id and settings.plivo_auth_token):
        raise ProviderNotConfigured("PLIVO_AUTH_ID and PLIVO_AUTH_TOKEN are not set")
    try:
        return cached_client(("plivo", settings.plivo_auth_id, settings.plivo_auth_token,
                              settings.plivo_api_base_url, str(settings.provider_http_timeout)),
                             lambda: _Client(settings))
    except plivo.exceptions.AuthenticationError as exc:
        raise ProviderNotConfigured(f"PLIVO_AUTH_ID is not a Plivo auth id: {exc}") from exc


def _url(settings: Settings, path: str, transfer: Mapping[str, str]) -> str:
    query = {"transfer_id": transfer["transfer_id"]}
    if transfer.get("attempt", "0") != "0":
        query["attempt"] = transfer["attempt"]  # which destination a callback is about
    return settings.public_url(path) + "?" + urlencode(query)


def dial_up_xml(settings: Settings, transfer: Mapping[str, str], number: str) -> str:
    """The XML Plivo runs on the customer's leg: dial the human."""
    response = plivoxml.ResponseElement()
    briefing: dict[str, str] = {}
    if transfer.get("summary") or transfer.get("screening"):
        # Played to the human alone when they answer, before the bridge (a whisper); with
        # screening, they must press the key to take the call.
        briefing["confirm_sound"] = _url(settings, WHISPER_PATH, transfer)
        if transfer.get("screening"):
            briefing["confirm_key"] = screening_key(transfer)
            # (Set through the constructor: the SDK's confirm_timeout setter recurses.)
            briefing["confirm_timeout"] = transfer.get("screening_timeout") or "8"
    # The customer waits on this Dial: a ringing tone ("real"), or the template's audio,
    # which Plivo takes only inside an XML document (ours, at HOLD_PATH). Never silence.
    hold = transfer.get("hold_audio", "")
    dial_music = _url(settings, HOLD_PATH, transfer) if hold.startswith("https://") else "real"
    dial = plivoxml.DialElement(
        action=_url(settings, DIAL_ACTION_PATH, transfer), method="POST",
        timeout=ring_timeout(settings, transfer, transfer.get("attempt", "0")),
        caller_id=transfer.get("caller_number") or transfer["outbound_number"],
        callback_url=_url(settings, DIAL_CALLBACK_PATH, transfer), callback_method="POST",
        dial_music=dial_music, **briefing)
    dial.add(plivoxml.NumberElement(number))
    response.add(dial)
    return str(response.to_string(False))


def whisper_xml(transfer: Mapping[str, str] | None) -> str:
    """What the human hears on answering: the briefing, and the screening prompt."""
    response = plivoxml.ResponseElement()
    if transfer is not None and transfer.get("summary"):
        response.add(plivoxml.SpeakElement(f"Incoming transfer. {transfer['summary']}"))
    if transfer is not None and transfer.get("screening"):
        response.add(plivoxml.SpeakElement(key_prompt(transfer)))
    return str(response.to_string(False))


def hold_xml(transfer: Mapping[str, str] | None) -> str:
    """The template's hold audio, looped until the Dial ends (Plivo's dialMusic)."""
    response = plivoxml.ResponseElement()
    hold = (transfer or {}).get("hold_audio", "")
    if hold.startswith("https://"):
        response.add(plivoxml.PlayElement(hold, loop=0))
    else:
        response.add(plivoxml.WaitElement(length=1))
    return str(response.to_string(False))


def failure_reason(transfer: Mapping[str, str], dial_status: str) -> str:
    """Why a Dial ended without the human: a screened human who picked up (heard the
    briefing) but did not press the key declined; else the DialStatus says."""
    if transfer.get("screening") and transfer.get("human_picked_up"):
        return "declined"
    return DIAL_FAILURES.get(dial_status, "failed")


def resume_xml(settings: Settings) -> str:
    """Back to the AI when the platform gave us a way; else an apology, never silence."""
    response = plivoxml.ResponseElement()
    if settings.plivo_resume_url:
        response.add(plivoxml.RedirectElement(settings.plivo_resume_url, method="POST"))
    else:
        response.add(plivoxml.SpeakElement(APOLOGY))
        response.add(plivoxml.HangupElement())
    return str(response.to_string(False))


def dial_action_xml(settings: Settings, dial_status: str) -> str:
    """What the customer's call does once the Dial is over."""
    if dial_status == "completed":  # the human answered and the bridge has ended
        response = plivoxml.ResponseElement()
        response.add(plivoxml.HangupElement())
        return str(response.to_string(False))
    return resume_xml(settings)


class PlivoProvider:
    name = "plivo"

    def start(self, rt: Runtime, transfer: Mapping[str, str]) -> None:
        settings = rt.settings
        client = make_client(settings, transfer)
        tid = transfer["transfer_id"]
        if transfer.get("dial_attempted"):
            # A worker died around the transfer call. If Plivo fetched the dial-up, the
            # transfer happened: transferring again would restart the human's ringing.
            # A rare recovery path: waiting here (a few seconds at most) is simplest.
            wait_until = float(transfer.get("dial_attempted") or 0) + DIAL_UP_GRACE
            while True:
                if (rt.store.get_transfer(tid) or {}).get("dial_up_served"):
                    self._dialing(rt, transfer, "an interrupted transfer call went through")
                    return
                if time.time() >= wait_until:
                    break
                time.sleep(0.2)
        rt.store.set_fields(tid, dial_attempted=repr(time.time()))
        aleg_url = _url(settings, DIAL_UP_PATH, transfer)
        try:
            client.call(lambda sdk: sdk.calls.transfer(
                call_uuid=transfer["call_id"], legs="aleg", aleg_url=aleg_url,
                aleg_method="POST"))
        except (TransientProviderError, PermanentProviderError) as exc:
            if not exc.outcome_unknown:  # Plivo answered: nothing was transferred
                rt.store.set_fields(tid, dial_attempted="")
            raise
        self._dialing(rt, transfer, "customer's call handed to the dial-up XML")

    @staticmethod
    def _dialing(rt: Runtime, transfer: Mapping[str, str], note: str) -> None:
        moved = rt.store.transition(transfer["transfer_id"], State.DIALING, note,
                                    from_states=(State.REQUESTED,))
        if moved.ok:
            # Plivo has replaced the call's XML: the stream closing is a transfer.
            rt.emit_disconnect(transfer)

    def handle_callback(self, rt: Runtime, transfer: Mapping[str, str], kind: str,
                        params: Mapping[str, str], task_id: str) -> None:
        tid = transfer["transfer_id"]
        pending = (State.REQUESTED, State.DIALING)
        if kind == "dial-up-missing":
            rt.fail(transfer, "timeout", "dial-up fetched with no transfer pending",
                    from_states=pending)
        elif kind == "dial-callback":
            event = params.get("Event", "")
            if event == "DialAnswer":
                rt.succeed(transfer, "human agent answered", from_states=pending)
            else:
                rt.store.note(tid, f"dial {event}")
        elif kind == "dial-action":
            status = params.get("DialStatus", "")
            current = rt.store.get_transfer(transfer["transfer_id"]) or {}
            if params.get("attempt", "0") != current.get("attempt", "0"):
                return  # about a destination already moved past
            if status == "completed":
                # The answer callback may have been lost; a completed Dial was answered.
                rt.succeed(transfer, "dial completed", from_states=pending)
            else:
                rt.fail(transfer, failure_reason(current, status),
                        f"dial ended {status}; customer sent back", from_states=pending)

    def customer_call_ended(self, rt: Runtime, transfer: Mapping[str, str],
                            params: Mapping[str, str]) -> bool:
        # Once the transfer was initiated the AI has left: the hangup is part of the transfer.
        left_ai = transfer["state"] != State.REQUESTED
        rt.fail(transfer, "customer_hung_up", "customer hung up before the human answered",
                from_states=(State.REQUESTED, State.DIALING))
        return left_ai

    def reconcile(self, rt: Runtime, transfer: Mapping[str, str]) -> bool:
        return False  # every outcome arrives by callback; none came in time

    def cleanup(self, rt: Runtime, transfer: Mapping[str, str]) -> None:
        # Nothing to release: the Dial's own timeout ends the human's leg, and its action URL
        # sends the customer back to the AI.
        return None
