"""Plivo: `calls.transfer` of the customer's leg to our dial-up XML; the AI leaves at once.

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

import base64
import hashlib
import hmac
import json
import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urlencode
from xml.sax.saxutils import escape, quoteattr

import plivo
import plivo.rest.client as plivo_client
import requests
from plivo import plivoxml
from plivo.exceptions import PlivoRestError

from providers.base import (
    PermanentProviderError,
    ProviderNotConfigured,
    TransientProviderError,
    cached_client,
    key_prompt,
    screening_key,
)
from shared.config import Settings
from shared.model import CallbackKind
from shared.store import TERMINAL_STATES, State, ring_timeout

if TYPE_CHECKING:
    from shared.store import Store
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
# The callbacks our routes hand to the worker.
CALLBACK_KINDS = frozenset({CallbackKind.DIAL_CALLBACK, CallbackKind.DIAL_ACTION,
                            CallbackKind.DIAL_UP_MISSING})
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


# What a steering URL carries (record field names, so the XML builders take either the
# record or the context): all the dial-up, the dial action, the confirmSound and the
# dialMusic need to answer without Redis. Never the summary (the human gets a generic
# briefing while Redis is down) and never anything secret.
CONTEXT_FIELDS = ("destinations", "attempt", "outbound_number", "caller_number",
                  "ring_timeouts", "screening", "screening_key", "screening_timeout",
                  "hold_audio", "confirm_timeout", "briefing")


@lru_cache(maxsize=8)
def _context_key(secret: str) -> bytes:
    # A key of its own, derived, so that the MAC never doubles as a Plivo signature.
    return hmac.new(secret.encode(), b"warm-transfer plivo url context v1",
                    hashlib.sha256).digest()


def _mac(settings: Settings, path: str, transfer_id: str, attempt: str, payload: str) -> str:
    key = _context_key(settings.webhook_hmac_key or settings.plivo_auth_token)
    message = f"{path}\n{transfer_id}\n{attempt}\n{payload}".encode()
    digest = hmac.new(key, message, hashlib.sha256).digest()[:16]  # 128 bits
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def dial_context(transfer: Mapping[str, str]) -> dict[str, str]:
    """The context of a transfer record (or of another context), for a signed URL."""
    ctx = {k: str(transfer[k]) for k in CONTEXT_FIELDS if transfer.get(k)}
    if ctx.get("attempt") == "0":
        del ctx["attempt"]  # the defaults, left out to keep the URLs short
    if ctx.get("ring_timeouts") in ("[]", "[0]"):
        del ctx["ring_timeouts"]
    if not ctx.get("screening"):
        ctx.pop("screening_key", None)
        ctx.pop("screening_timeout", None)
    if transfer.get("summary"):
        ctx["briefing"] = "1"
    if ctx.get("screening") or ctx.get("briefing"):
        ctx["confirm_timeout"] = str(confirm_timeout(transfer))
    return ctx


def _payload(transfer: Mapping[str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(
        dial_context(transfer), separators=(",", ":"), sort_keys=True).encode()
    ).rstrip(b"=").decode()


def signed_query(settings: Settings, path: str, transfer: Mapping[str, str],
                 payload: str | None = None) -> str:
    """`transfer_id`, `attempt` and the signed context `t`, for one of our steering URLs
    (`payload`: the transfer's context already encoded, when several URLs share it)."""
    attempt = str(transfer.get("attempt") or "0")
    payload = payload or _payload(transfer)
    tid = transfer["transfer_id"]
    query = f"transfer_id={quote(tid, safe='')}"
    if attempt != "0":
        query += f"&attempt={attempt}"
    return f"{query}&t={payload}.{_mac(settings, path, tid, attempt, payload)}"


class BadContext(ValueError):
    """A signed context that does not verify: not a URL we made."""


def read_context(settings: Settings, path: str, transfer_id: str, attempt: str,
                 token: str) -> dict[str, str] | None:
    """The context a steering URL carries (None when it carries none: a URL made before
    contexts existed); BadContext when its MAC does not match."""
    if not token:
        return None
    payload, _, mac = token.partition(".")
    if not hmac.compare_digest(mac.encode(), _mac(settings, path, transfer_id, attempt or "0",
                                                  payload).encode()):
        raise BadContext("context MAC mismatch")
    try:
        raw = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except ValueError as exc:
        raise BadContext("context not decodable") from exc
    if not isinstance(raw, dict):
        raise BadContext("context not an object")
    return {**{str(k): str(v) for k, v in raw.items()}, "transfer_id": transfer_id}


def _url(settings: Settings, path: str, transfer: Mapping[str, str]) -> str:
    """A status callback URL: the transfer and destination it is about, nothing to sign."""
    query = {"transfer_id": transfer["transfer_id"]}
    if str(transfer.get("attempt") or "0") != "0":
        query["attempt"] = str(transfer["attempt"])  # which destination a callback is about
    return settings.public_url(path) + "?" + urlencode(query)


def steering_url(settings: Settings, path: str, transfer: Mapping[str, str],
                 payload: str | None = None) -> str:
    return settings.public_url(path) + "?" + signed_query(settings, path, transfer, payload)


def destination(transfer: Mapping[str, str]) -> str:
    """The number of the transfer's current attempt ('' when there is none)."""
    numbers = json.loads(transfer.get("destinations") or "[]")
    index = int(transfer.get("attempt") or 0)
    return str(numbers[index]) if 0 <= index < len(numbers) else ""


# How long the confirmSound takes to speak, estimated on the slow side. Plivo starts
# confirmTimeout when the human answers ("Timeout starts after the call is answered",
# plivo.com/docs/voice/xml/dial), so the briefing and the prompt are spoken inside it; the
# human must still have the whole screening_timeout once the prompt has ended.
# - 10 characters a second is about 105 words a minute (5.7 characters a word, spaces
#   included): slower than the ~150 words a minute of conversational English and of the
#   Amazon Polly voices behind <Speak> (plivo.com/docs/voice/concepts/ssml), so a slow
#   voice or a slow reading of numbers still fits.
# - Half a second per <Speak> for the pause around each one.
# - 2 s before the first word: Plivo fetches the confirmSound from us after the answer and
#   synthesises it.
SPEECH_CHARS_PER_SECOND = 10.0
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
PAUSE_PER_SPEAK = 0.5
CONFIRM_SOUND_LATENCY = 2.0
# Plivo's own default confirmTimeout is 120 s; a 1000-character summary at the rate above
# with a 60 s screening timeout needs 165. Past 180 s nobody is listening any more.
MAX_CONFIRM_TIMEOUT = 180
# After confirmTimeout, how long before a still-standing Dial is taken as bridged: Plivo
# ending the human's leg and posting the Dial action takes a moment.
CONFIRM_GRACE = 2.0


def briefing_texts(transfer: Mapping[str, str] | None) -> list[str]:
    """The <Speak>s of the confirmSound: the briefing (the summary is the AI's note, not
    ours to vouch for), then the screening prompt."""
    texts: list[str] = []
    if transfer is None:
        return texts
    if transfer.get("summary"):
        # Control characters are not XML (the SDK's lxml raises on them): a whisper that
        # answered 500 would leave the human's leg without its confirmSound.
        summary = _CONTROL.sub(" ", transfer["summary"])
        texts.append(f"Incoming transfer. Note from the AI assistant: {summary}")
    elif transfer.get("briefing"):
        # From a signed URL, Redis down: the summary could not be read.
        texts.append("Incoming transfer from the AI assistant.")
    if transfer.get("screening"):
        texts.append(key_prompt(transfer))
    return texts


def confirm_timeout(transfer: Mapping[str, str]) -> int:
    """Plivo's confirmTimeout for this transfer: the time to speak the confirmSound,
    estimated slowly (see SPEECH_CHARS_PER_SECOND), plus the whole screening timeout."""
    if transfer.get("confirm_timeout"):
        return int(transfer["confirm_timeout"])  # computed when the summary was known
    texts = briefing_texts(transfer)
    speech = (CONFIRM_SOUND_LATENCY + sum(len(t) for t in texts) / SPEECH_CHARS_PER_SECOND
              + PAUSE_PER_SPEAK * len(texts))
    window = math.ceil(speech) + int(transfer.get("screening_timeout") or 8)
    return min(window, MAX_CONFIRM_TIMEOUT)


def picked_up_field(attempt: str | int) -> str:
    """The record field holding when the human of destination `attempt` picked up (per
    destination, so that a pick-up on one never counts for the next)."""
    return f"picked_up_at_{int(attempt or 0)}"


def screened_out(transfer: Mapping[str, str], attempt: str, at: float) -> bool:
    """For a Dial that ended `completed` at `at`: was the human's leg dropped for not
    pressing the key, rather than bridged?

    Plivo's docs do not say whether the Dial's answer callback comes when the human picks
    up or once they have pressed the confirm key, nor what DialStatus a leg dropped for no
    key gets. What they do say: confirmTimeout starts at the answer and the human must
    press within it, else the leg is not bridged. So a leg still up when confirmTimeout has
    passed was bridged; a Dial that ended earlier is taken as not accepted (a human who
    took the call and hung up within that window counts as declined: the customer goes
    back to the AI, never hung up on)."""
    if not transfer.get("screening") or transfer.get("state") == State.SUCCEEDED:
        return False
    picked = transfer.get(picked_up_field(attempt))
    if not picked:
        return True  # never picked up: nothing was bridged
    # The grace: the Dial action of a dropped leg may travel slower than the confirmSound
    # fetch that set `picked`.
    return at < float(picked) + confirm_timeout(transfer) + CONFIRM_GRACE


def dial_up_xml(settings: Settings, transfer: Mapping[str, str], number: str) -> str:
    """The XML Plivo runs on the customer's leg: dial the human. `transfer` is the record
    or a signed context. (Written out rather than through plivoxml: this is the hot path
    of the dial-up, and the SDK's element validation cost more than the rest of it.)"""
    payload = _payload(transfer)
    attrs = [("action", steering_url(settings, DIAL_ACTION_PATH, transfer, payload)),
             ("method", "POST"),
             ("timeout", str(ring_timeout(settings, transfer, transfer.get("attempt", "0")))),
             ("callerId", transfer.get("caller_number") or transfer["outbound_number"])]
    if transfer.get("summary") or transfer.get("briefing") or transfer.get("screening"):
        # Played to the human alone when they answer, before the bridge (a whisper); with
        # screening, they must press the key to take the call.
        attrs.append(("confirmSound", steering_url(settings, WHISPER_PATH, transfer, payload)))
        if transfer.get("screening"):
            attrs += [("confirmKey", screening_key(transfer)),
                      ("confirmTimeout", str(confirm_timeout(transfer)))]
    # The customer waits on this Dial: a ringing tone ("real"), or the template's audio,
    # which Plivo takes only inside an XML document (ours, at HOLD_PATH). Never silence.
    hold = transfer.get("hold_audio", "")
    attrs += [("dialMusic", steering_url(settings, HOLD_PATH, transfer, payload)
               if hold.startswith("https://") else "real"),
              ("callbackUrl", _url(settings, DIAL_CALLBACK_PATH, transfer)),
              ("callbackMethod", "POST")]
    dial = " ".join(f"{name}={quoteattr(value)}" for name, value in attrs)
    return f"<Response><Dial {dial}><Number>{escape(number)}</Number></Dial></Response>"


def whisper_xml(transfer: Mapping[str, str] | None) -> str:
    """What the human hears on answering: the briefing, and the screening prompt."""
    response = plivoxml.ResponseElement()
    for text in briefing_texts(transfer):
        response.add(plivoxml.SpeakElement(text))
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
    if transfer.get("screening") and (transfer.get("human_picked_up") or
                                      dial_status == "completed"):
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


def dial_action_xml(settings: Settings, bridged: bool) -> str:
    """What the customer's call does once the Dial is over: after a bridge, the call is
    over; otherwise (or when we cannot tell) back to the AI."""
    if bridged:
        response = plivoxml.ResponseElement()
        response.add(plivoxml.HangupElement())
        return str(response.to_string(False))
    return resume_xml(settings)


def answer_dial_action(store: Store, settings: Settings, transfer_id: str,
                       params: Mapping[str, str], ctx: Mapping[str, str] | None
                       ) -> tuple[str, bool]:
    """The XML that answers a Dial action, and whether the action is still to be handed to
    the worker (False when the answer dials the next destination: the store has recorded
    that step). Raises redis.RedisError; the caller then answers dial_action_xml from the
    signed context alone (see degraded_dial_action)."""
    status, attempt = params["DialStatus"], params["attempt"]
    # A completed Dial without screening was a bridge: nothing to read.
    transfer = store.get_transfer(transfer_id) \
        if status != "completed" or ctx is None or ctx.get("screening") else None
    if transfer is None:
        bridged = status == "completed" and not (ctx or {}).get("screening")
    elif transfer["state"] in TERMINAL_STATES:
        bridged = transfer["state"] == State.SUCCEEDED and status == "completed"
    else:
        bridged = status == "completed" and not screened_out(
            transfer, attempt, float(params["received_at"]))
        if not bridged:
            # Not reached: the next fallback destination, if the template has one (one
            # atomic step in the store, answered at once: Plivo runs this answer).
            outcome, current, number = store.advance_destination(
                transfer_id, int(attempt), failure_reason(transfer, status))
            if outcome in ("next", "stale") and number:
                if outcome == "next" and transfer["state"] == State.HUMAN_ANSWERED:
                    # A screened human who did not take it: ringing the next one.
                    store.transition(transfer_id, State.DIALING,
                                     "dialing the next destination",
                                     from_states=(State.HUMAN_ANSWERED,))
                return dial_up_xml(settings, {**transfer, "attempt": str(current)},
                                   number), False
    return dial_action_xml(settings, bridged), True


def degraded_dial_action(settings: Settings, status: str, ctx: Mapping[str, str] | None
                         ) -> str:
    """The Dial action's answer with Redis down: back to the AI, or the end of the call
    after a bridge we can vouch for (no screening). No next destination: the store could
    not record the step, and a Dial it does not know of would have its outcome dropped."""
    bridged = status == "completed" and ctx is not None and not ctx.get("screening")
    return dial_action_xml(settings, bridged)


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
        aleg_url = steering_url(settings, DIAL_UP_PATH, transfer)
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
        pending = (State.REQUESTED, State.DIALING, State.HUMAN_ANSWERED)
        if kind == "dial-up-missing":
            rt.fail(transfer, "timeout", "dial-up fetched with no transfer pending",
                    from_states=pending)
        elif kind == "dial-callback":
            event = params.get("Event") or params.get("DialAction", "")
            if event not in ("DialAnswer", "answer"):
                rt.store.note(tid, f"dial {event}")
            elif transfer.get("screening"):
                self._picked_up(rt, transfer, params)
            else:
                rt.succeed(transfer, "human agent answered", from_states=pending)
        elif kind == "dial-action":
            status = params.get("DialStatus", "")
            attempt = params.get("attempt", "0")
            current = rt.store.get_transfer(tid) or {}
            if attempt != current.get("attempt", "0"):
                return  # about a destination already moved past
            at = float(params.get("received_at") or time.time())
            if status == "completed" and not screened_out(current, attempt, at):
                # The answer callback may have been lost; a completed Dial was bridged.
                rt.succeed(transfer, "dial completed", from_states=pending)
            else:
                rt.fail(transfer, failure_reason(current, status),
                        f"dial ended {status}; customer sent back", from_states=pending)

    @staticmethod
    def _picked_up(rt: Runtime, transfer: Mapping[str, str], params: Mapping[str, str]
                   ) -> None:
        """A screened human picked up. Plivo's docs leave open whether this callback comes
        before or after the key press, so it proves nothing about the key: the transfer
        waits for the confirm window to pass with the Dial still up (see screened_out),
        checked by the deadline (reconcile)."""
        tid = transfer["transfer_id"]
        attempt = params.get("attempt", "0")
        field = picked_up_field(attempt)
        current = rt.store.get_transfer(tid) or {}
        if current.get("attempt", "0") != attempt:
            return
        picked = current.get(field)
        if not picked:
            picked = params.get("received_at") or repr(time.time())
            rt.store.set_fields(tid, **{field: picked, "human_picked_up": "1"})
        moved = rt.store.transition(tid, State.HUMAN_ANSWERED,
                                    "human agent picked up; waiting for the screening key",
                                    from_states=(State.REQUESTED, State.DIALING))
        if moved.ok or moved.previous == State.HUMAN_ANSWERED:
            rt.store.extend_deadline(tid, float(picked) + confirm_timeout(current)
                                     + CONFIRM_GRACE)

    def customer_call_ended(self, rt: Runtime, transfer: Mapping[str, str],
                            params: Mapping[str, str]) -> bool:
        # Once the transfer was initiated the AI has left: the hangup is part of the transfer.
        left_ai = transfer["state"] != State.REQUESTED
        rt.fail(transfer, "customer_hung_up", "customer hung up before the human answered",
                from_states=(State.REQUESTED, State.DIALING, State.HUMAN_ANSWERED))
        return left_ai

    def reconcile(self, rt: Runtime, transfer: Mapping[str, str]) -> bool:
        """At the deadline. A screened human who picked up and whose leg is still up once
        the confirm window has passed pressed the key: Plivo would have dropped the leg
        (and posted the Dial action) otherwise."""
        attempt = transfer.get("attempt", "0")
        picked = transfer.get(picked_up_field(attempt))
        if not transfer.get("screening") or not picked or transfer["state"] in TERMINAL_STATES:
            return False  # every other outcome arrives by callback; none came in time
        bridged_at = float(picked) + confirm_timeout(transfer) + CONFIRM_GRACE
        if time.time() < bridged_at:
            rt.store.extend_deadline(transfer["transfer_id"], bridged_at)
            return True
        return rt.succeed(transfer, "still on the line after the confirm window: key pressed",
                          from_states=(State.REQUESTED, State.DIALING, State.HUMAN_ANSWERED))

    def cleanup(self, rt: Runtime, transfer: Mapping[str, str]) -> None:
        # Nothing to release: the Dial's own timeout ends the human's leg, and its action URL
        # sends the customer back to the AI.
        return None
