"""The sandbox's state, its callback scheduler and the control API.

Each leg's fate is chosen by the number dialed (`Sandbox.set_fate`, or PUT
/_sandbox/fates/<number>); faults are injected per API path (`Sandbox.add_fault`).
"""

from __future__ import annotations

import contextlib
import heapq
import importlib
import itertools
import random
import socket
import threading
import time
import uuid
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any, Protocol

import requests
from flask import Flask, Response, abort, jsonify, request
from twilio.request_validator import RequestValidator

# The name of each provider's second sandbox account in the credentials file it gives.
SECOND_ACCOUNT = "second"
# The sandbox's second account of each provider (its own credentials, for the tests of a
# platform serving several businesses); a fake's secrets.
TWILIO_SECOND_SID = "AC" + "2" * 32
TWILIO_SECOND_TOKEN = "sandbox-twilio-token-2"
PLIVO_SECOND_ID = "MA" + "SECOND" + "0" * 12
PLIVO_SECOND_TOKEN = "sandbox-plivo-token-2"
EXOTEL_SECOND_SID = "sandbox-exotel-2"
EXOTEL_SECOND_KEY = "sandbox-exotel-key-2"
EXOTEL_SECOND_TOKEN = "sandbox-exotel-token-2"

@dataclass(frozen=True)
class Fate:
    """What happens to a leg the sandbox dials.

    outcome: answer | machine (an answering machine picks up) | decline (picks up, hears the
             briefing, does not press the screening key) | busy | no-answer | fail |
             ignore (never a callback: for deadline tests)
    ring: seconds of ringing before the outcome
    """

    outcome: str = "answer"
    ring: float = 0.05

    OUTCOMES = ("answer", "machine", "decline", "busy", "no-answer", "fail", "ignore")

    @classmethod
    def parse(cls, text: str) -> Fate:
        """"answer", "busy", "answer-after:3", "no-answer:0.5"."""
        outcome, _, ring = text.strip().lower().replace("-after", "").partition(":")
        if outcome not in cls.OUTCOMES:
            raise ValueError(f"unknown fate {text!r}; one of {', '.join(cls.OUTCOMES)}")
        return cls(outcome, float(ring) if ring else 0.05)


@dataclass
class Recorded:
    method: str
    path: str
    form: dict[str, list[str]]
    json: Any
    at: float

    def value(self, key: str) -> str | None:
        values = self.form.get(key)
        return values[0] if values else None


@dataclass
class Fault:
    path_contains: str
    status: int
    remaining: int
    delay: float = 0.0


@dataclass
class SimCall:
    sid: str
    to: str
    from_: str
    status: str  # queued, ringing, in-progress, completed, busy, no-answer, failed, canceled
    status_callback: str | None = None
    status_events: tuple[str, ...] = ()
    conference: str | None = None
    label: str | None = None
    sequence: itertools.count[int] = field(default_factory=itertools.count)
    provider: str = "twilio"
    # The provider account that owns the call (its id: Twilio's AccountSid, Plivo's auth
    # id...); "" for the sandbox's first account.
    account: str = ""
    # Plivo: the Dial the call is in (action/callback URLs and the human's leg).
    dial: dict[str, str] | None = None
    # Where the call's XML sent it (Redirect) and what it was told (Speak).
    redirects: list[str] = field(default_factory=list)
    spoken: list[str] = field(default_factory=list)
    # Plivo: what the caller heard while a Dial rang (dialMusic).
    held: list[str] = field(default_factory=list)
    # Exotel: the flow (Connect applet URL, passthru URL, callback format) and its legs.
    flow: dict[str, Any] = field(default_factory=dict)
    # Twilio answering-machine detection: asked for, its verdict, where a participant's
    # verdict goes (AmdStatusCallback).
    machine_detection: bool = False
    answered_by: str = ""
    amd_callback: str | None = None
    # Twilio calls.create with a Url: the TwiML run on answer, and the leg's fate (which
    # decides the key a <Gather> hears).
    url: str | None = None
    fate: str = ""
    # Twilio calls.create with Twiml instead: run on answer.
    twiml: str | None = None


@dataclass
class SimConference:
    name: str
    sid: str
    status_callback: str | None = None
    events: tuple[str, ...] = ()
    started: bool = False
    participants: set[str] = field(default_factory=set)
    sequence: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    account: str = ""


@dataclass
class Delivery:
    url: str
    params: dict[str, str]
    status: int
    at: float


class Scheduler(threading.Thread):
    """Runs simulation steps (mostly callbacks) at their due time.

    Like a provider, it works on many calls at once: steps run on LANES threads, and the
    steps of one call (its key) always run on the same lane, in due order. A step scheduled
    from inside another inherits its key."""

    LANES = 8

    def __init__(self) -> None:
        super().__init__(name="sandbox-callbacks", daemon=True)
        self._heap: list[tuple[float, int, str, Any]] = []
        self._cv = threading.Condition()
        self._seq = itertools.count()
        self._stopped = False
        self._local = threading.local()
        self._lanes = [ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sandbox-lane{i}")
                       for i in range(self.LANES)]

    @contextlib.contextmanager
    def keyed(self, key: str) -> Iterator[None]:
        """Steps scheduled inside this block belong to `key` (one call's timeline)."""
        previous = getattr(self._local, "key", None)
        self._local.key = key
        try:
            yield
        finally:
            self._local.key = previous

    def at(self, delay: float, fn: Any, key: str | None = None) -> None:
        key = key or getattr(self._local, "key", None) or uuid.uuid4().hex
        with self._cv:
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._seq), key, fn))
            self._cv.notify()

    def stop(self) -> None:
        with self._cv:
            self._stopped = True
            self._cv.notify()
        for lane in self._lanes:
            lane.shutdown(wait=False, cancel_futures=True)

    def _run_step(self, key: str, fn: Any) -> None:
        # A failed delivery is recorded by the callback itself; the scheduler goes on.
        with self.keyed(key), contextlib.suppress(Exception):
            fn()

    def run(self) -> None:
        while True:
            with self._cv:
                while not self._stopped and (
                        not self._heap or self._heap[0][0] > time.monotonic()):
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cv.wait(timeout)
                if self._stopped:
                    return
                _, _, key, fn = heapq.heappop(self._heap)
            lane = self._lanes[zlib.crc32(key.encode()) % self.LANES]
            with contextlib.suppress(RuntimeError):  # shut down while stopping
                lane.submit(self._run_step, key, fn)


@dataclass(frozen=True)
class DemoScript:
    """What `warm-transfer demo` plays on a provider (`DEMO` in its sandbox module)."""

    # (the fate of each destination in order, template policies, what happens)
    scenarios: tuple[tuple[tuple[str, ...], dict[str, Any], str], ...]
    # Environment variables the demo's calls need from the stack (e.g. a URL secret).
    settings: tuple[str, ...] = ()
    # The customer call's status callback query and sandbox flow fields, from the
    # settings above: (extra query, flow).
    call_flow: Callable[[str, Mapping[str, str]], tuple[str, dict[str, Any]]] | None = None
    # Where the outcome is known only when the call ends: the customer talks this long
    # after the AI's stream closed, then hangs up.
    talk_seconds: float | None = None
    # The route, under /<provider>/, the customer call's status callback goes to.
    status_path: str = "status"


class SandboxModel(Protocol):
    """One provider's model in the sandbox: `providers/<name>/sandbox.py` defines it as
    `Model`, and the sandbox finds it through the provider registry."""

    def register(self, app: Flask) -> None:
        """Add the provider's fake REST API (and its own control routes) to the app."""

    def ended(self, call: SimCall, status: str) -> bool:
        """A customer call of this provider ended: play what follows; True when handled,
        False to leave it to the shared call engine."""

    def forge(self, method: str, url: str, form: dict[str, str], body: bytes
              ) -> dict[str, str]:
        """Headers that sign this request as the provider does but with a key that is not
        the account's (the conformance suite's bad signature); {} if it signs nothing."""

    def reset(self) -> None:
        """Forget per-test settings (POST /_sandbox/reset)."""

    def new_sid(self) -> str:
        """A new customer call's id, shaped as the provider shapes it."""

    def env(self, url: str) -> dict[str, str]:
        """The service's environment for this provider pointed at the sandbox at `url`
        (credentials, API base URL...): read by the local stack and the test stack."""

    def second_account(self, url: str) -> dict[str, str]:
        """The sandbox's second account of the provider, as a CREDENTIALS_FILE entry (the
        fields of providers/<name>/account.py), its API at `url`."""

    def second_owner(self) -> str:
        """The provider's id of that account (the owner of its calls in the sandbox)."""


class Sandbox:
    """Fake provider APIs with a control API under /_sandbox."""

    def __getattr__(self, name: str) -> Any:
        # `sandbox.plivo`, `sandbox.exotel`: a provider's model by its name.
        models = self.__dict__.get("models") or {}
        if name in models:
            return models[name]
        raise AttributeError(name)

    def accounts(self, url: str) -> dict[str, dict[str, dict[str, str]]]:
        """A CREDENTIALS_FILE naming each provider's second account SECOND_ACCOUNT."""
        return {name: {SECOND_ACCOUNT: model.second_account(url)}
                for name, model in self.models.items()}

    def env(self, url: str) -> dict[str, str]:
        """Every registered provider's environment pointed at this sandbox at `url`."""
        env: dict[str, str] = {}
        for model in self.models.values():
            env.update(model.env(url))
        return env

    def __init__(self, *, twilio_account_sid: str = "AC" + "0" * 32,
                 twilio_auth_token: str = "sandbox-twilio-token",  # noqa: S107 - a fake's token
                 plivo_auth_id: str = "MA" + "SANDBOX" + "0" * 11,
                 plivo_auth_token: str = "sandbox-plivo-token",  # noqa: S107 - a fake's token
                 exotel_account_sid: str = "sandbox-exotel",
                 exotel_api_key: str = "sandbox-exotel-key",
                 exotel_api_token: str = "sandbox-exotel-token",  # noqa: S107 - a fake's token
                 ) -> None:
        import providers

        self.twilio_account_sid = twilio_account_sid
        self.twilio_auth_token = twilio_auth_token
        self.plivo_auth_id = plivo_auth_id
        self.plivo_auth_token = plivo_auth_token
        self.exotel_account_sid = exotel_account_sid
        self.exotel_api_key = exotel_api_key
        self.exotel_api_token = exotel_api_token
        # Twilio accounts hosted, AccountSid -> AuthToken: the first, and a second one with
        # credentials of its own (a platform serving two businesses).
        self.twilio_accounts = {twilio_account_sid: twilio_auth_token,
                                TWILIO_SECOND_SID: TWILIO_SECOND_TOKEN}
        # Each registered provider's model (`providers/<name>/sandbox.py`, class `Model`).
        self.models: dict[str, SandboxModel] = {
            spec.name: importlib.import_module(spec.sandbox).Model(self)
            for spec in providers.specs()}
        self.lock = threading.RLock()
        self.requests: list[Recorded] = []
        self.deliveries: list[Delivery] = []
        self.fates: dict[str, Fate] = {}
        self.keys: dict[str, str] = {}
        self.default_fate = Fate()
        self.faults: list[Fault] = []
        self.calls: dict[str, SimCall] = {}
        self.conferences: dict[str, SimConference] = {}
        # Every callback sent this many times (2 = each delivered twice).
        self.repeat_callbacks = 1
        # Each callback delayed by up to this many seconds more: delivery out of order.
        self.callback_jitter = 0.0
        # A callback answered 5xx or not at all is tried again, as the providers do.
        self.callback_attempts = 3
        self.callback_retry_delay = 1.0
        self.scheduler = Scheduler()
        self.scheduler.start()
        self.http = requests.Session()
        self.app = self._make_app()

    # control (Python API; the HTTP control API calls the same methods)
    def set_fate(self, number: str, fate: Fate | str) -> None:
        with self.lock:
            self.fates[number] = Fate.parse(fate) if isinstance(fate, str) else fate

    def set_key(self, number: str, key: str) -> None:
        """The key the human at `number` presses when a screening prompt asks (default 1);
        a fate of "answer" presses it, "decline" presses nothing."""
        with self.lock:
            self.keys[number] = key

    def add_fault(self, path_contains: str, status: int, count: int = 1, delay: float = 0.0
                  ) -> None:
        """The next `count` API requests whose path contains `path_contains` fail with
        `status` after `delay` seconds; status 0: only delayed; status -1: connection reset."""
        with self.lock:
            self.faults.append(Fault(path_contains, status, count, delay))

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.deliveries.clear()
            self.fates.clear()
            self.keys.clear()
            self.faults.clear()
            self.calls.clear()
            self.conferences.clear()
            self.repeat_callbacks = 1
            for model in self.models.values():
                model.reset()

    def create_customer_call(self, *, to: str, from_: str, status_callback: str | None,
                             provider: str = "twilio", **flow: Any) -> str:
        """A live customer call, as if the platform had placed or answered it.

        Exotel calls take the flow's URLs: dial_whom_url (the Connect applet's URL), and
        optionally connect_mode ("dial_whom", the default, or "programmable": the applet's
        dynamic URL), fallback_url (programmable connect's), passthru_url (a Passthru after
        Connect), custom_field (set when the API placed the call) and status_format ("form"
        or "json"). An Exotel status_callback means the call was placed through the API:
        calls that come in to a flow have none (Exotel documents StatusCallback for API calls
        only)."""
        account = str(flow.pop("account", None) or "")
        sid = self.models[provider].new_sid()
        with self.lock:
            self.calls[sid] = SimCall(sid, to, from_, "in-progress", status_callback,
                                      ("completed",), provider=provider, account=account,
                                      flow={k: v for k, v in flow.items() if v is not None})
        return sid

    def hangup(self, sid: str) -> None:
        """The caller hangs up."""
        with self.scheduler.keyed(self.call_key(sid)):
            self._end_call(sid, "completed")

    def call_key(self, sid: str) -> str:
        """Which timeline a call's events belong to: its conference's, else its own."""
        call = self.calls.get(sid)
        return (call.conference if call is not None and call.conference else None) or sid

    def api_requests(self, contains: str = "", method: str | None = None) -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if contains in r.path
                    and (method is None or r.method == method)]

    def stop(self) -> None:
        self.scheduler.stop()

    # callbacks
    def deliver(self, delay: float, send: Any) -> None:
        """Schedule `send()` (which returns the HTTP status, -1 for no answer), retrying it
        like a provider when it is not accepted."""
        def attempt(left: int) -> None:
            status = send()
            if (status < 0 or status >= 500) and left > 1:
                self.scheduler.at(self.callback_retry_delay, lambda: attempt(left - 1))

        jitter = random.uniform(0, self.callback_jitter) if self.callback_jitter else 0.0
        self.scheduler.at(delay + jitter, lambda: attempt(self.callback_attempts))

    def twilio_sid(self, owner: SimCall | SimConference | None) -> str:
        """The AccountSid of the account owning a call or conference."""
        return (owner.account if owner is not None else "") or self.twilio_account_sid

    def twilio_signature(self, url: str, params: dict[str, str]) -> str:
        """X-Twilio-Signature with the auth token of the account the request is about (its
        AccountSid): "Twilio uses your AuthToken" (docs usage/security#validating-requests)."""
        token = self.twilio_accounts.get(params.get("AccountSid", ""), self.twilio_auth_token)
        return str(RequestValidator(token).compute_signature(url, params))

    def send_twilio_callback(self, url: str, params: dict[str, str],
                             idempotency_token: str | None = None) -> int:
        """POST a callback signed as Twilio signs it (X-Twilio-Signature over URL + params)."""
        # https://www.twilio.com/docs/usage/security#validating-requests (HMAC-SHA1, token)
        signature = self.twilio_signature(url, params)
        status = 0
        try:
            # I-Twilio-Idempotency-Token, the same on Twilio's retries of one delivery
            # (retries: docs usage/webhooks/webhooks-connection-overrides; header: no
            # Twilio page found, see docs/providers.md).
            resp = self.http.post(url, data=params, timeout=10, headers={
                "X-Twilio-Signature": signature,
                "I-Twilio-Idempotency-Token": idempotency_token or uuid.uuid4().hex,
                "User-Agent": "TwilioProxy/1.1"})
            status = resp.status_code
        except requests.RequestException:
            status = -1
        with self.lock:
            self.deliveries.append(Delivery(url, dict(params), status, time.time()))
        return status

    def _schedule_callback(self, delay: float, url: str | None, params: dict[str, str]) -> None:
        if not url:
            return
        for _ in range(self.repeat_callbacks):
            # Twilio's own retries of one delivery carry the same idempotency token.
            token = uuid.uuid4().hex
            self.deliver(delay, lambda t=token: self.send_twilio_callback(url, params, t))

    def _call_params(self, call: SimCall, status: str) -> dict[str, str]:
        # https://www.twilio.com/docs/voice/api/call-resource#statuscallback: the call's
        # fields. No AnsweredBy: detection's verdict goes to AmdStatusCallback (participants)
        # or to the Url's request (calls.create); the docs list it on neither callback.
        params = {
            "AccountSid": self.twilio_sid(call), "ApiVersion": "2010-04-01",
            "CallSid": call.sid, "CallStatus": status, "Called": call.to, "To": call.to,
            "Caller": call.from_, "From": call.from_, "Direction": "outbound-api",
            "CallbackSource": "call-progress-events", "SequenceNumber": str(next(call.sequence)),
            "Timestamp": formatdate(usegmt=True),
        }
        if status in ("completed", "busy", "no-answer", "failed", "canceled"):
            params["CallDuration"] = "0"
        # call-resource#statuscallback: "SipResponseCode: the SIP code that resulted in a
        # failed call. For instance 404 for a number that was unreachable or 487 if the
        # Timeout value was reached before the call connected"; 486 is SIP's Busy Here.
        sip = {"busy": "486", "no-answer": "487", "failed": "404"}.get(status)
        if sip:
            params["SipResponseCode"] = sip
        return params

    def _call_event(self, call: SimCall, status: str, delay: float = 0.0) -> None:
        """Tell the call's status callback, if it asked for this event."""
        # StatusCallbackEvent initiated/ringing/answered/completed; busy, no-answer, failed
        # and canceled come as "completed" (docs: call-resource, StatusCallbackEvent).
        event = {"in-progress": "answered", "queued": "initiated"}.get(status, status)
        if status in ("busy", "no-answer", "failed", "canceled"):
            event = "completed"
        if event in call.status_events:
            self._schedule_callback(delay, call.status_callback, self._call_params(call, status))

    def _conference_event(self, conf: SimConference, event: str, call: SimCall | None,
                          delay: float = 0.0) -> None:
        # https://www.twilio.com/docs/voice/api/conference-resource#conference-status-callback
        # (events subscribed by short name: start end join leave announcement ...).
        short = event.removeprefix("participant-").removeprefix("conference-")
        if short.startswith("announcement-"):
            short = "announcement"
        if short not in conf.events:
            return
        params = {
            "AccountSid": self.twilio_sid(conf), "ConferenceSid": conf.sid,
            "FriendlyName": conf.name, "StatusCallbackEvent": event,
            "SequenceNumber": str(next(conf.sequence)), "Timestamp": formatdate(usegmt=True),
        }
        if call is not None:
            params.update({"CallSid": call.sid, "Coaching": "false", "Hold": "false",
                           "Muted": "false", "EndConferenceOnExit": "true",
                           "StartConferenceOnEnter": "true"})
            if call.label:
                params["ParticipantLabel"] = call.label
        self._schedule_callback(delay, conf.status_callback, params)

    def _join(self, conf: SimConference, call: SimCall, delay: float) -> None:
        # startConferenceOnEnter=true on every leg: the first join starts it (docs:
        # twiml/conference, conference-start then participant-join events).
        with self.lock:
            call.conference = conf.name
            conf.participants.add(call.sid)
            if not conf.started:
                conf.started = True
                self._conference_event(conf, "conference-start", None, delay)
            self._conference_event(conf, "participant-join", call, delay)

    def _end_call(self, sid: str, status: str, delay: float = 0.0) -> None:
        with self.lock:
            call = self.calls.get(sid)
            if call is None or call.status in ("completed", "busy", "no-answer", "failed",
                                               "canceled"):
                return
            call.status = status
            model = self.models.get(call.provider)
            if model is not None and model.ended(call, status):
                return
            self._call_event(call, status, delay)
            conf = self.conferences.get(call.conference or "")
            if conf is not None and sid in conf.participants:
                conf.participants.discard(sid)
                self._conference_event(conf, "participant-leave", call, delay)
                # Every leg here joins with endConferenceOnExit=true: its leaving ends the
                # conference and drops the others (docs: twiml/conference).
                for other in list(conf.participants):
                    self._end_call(other, "completed", delay)
                if conf.started:
                    conf.started = False
                    self._conference_event(conf, "conference-end", None, delay)
                    # An ended conference is completed; a later one of the same name is a new
                    # resource with its own CF SID (docs: voice/api/conference-resource).
                    conf.sid = _sid("CF")

    def _dial(self, call: SimCall, fate: Fate) -> None:
        """Play out an outbound leg's fate."""
        # Call progress: initiated, ringing, then answered or a final status (docs:
        # voice/api/call-resource#statuscallbackevent).
        self._call_event(call, "initiated")
        if fate.outcome == "ignore":
            return
        call.status = "ringing"
        self._call_event(call, "ringing", 0.01)

        call.fate = fate.outcome
        # With our TwiML on the leg (screening), a declining human picks up first.
        picks_up = ("answer", "machine", "decline") if call.url else ("answer", "machine")

        def outcome() -> None:
            with self.lock:
                if call.status != "ringing":
                    return  # canceled while ringing
                if fate.outcome in picks_up:
                    call.status = "in-progress"
                    if call.machine_detection:
                        call.answered_by = "machine_start" if fate.outcome == "machine" \
                            else "human"
                    self._call_event(call, "in-progress")
                    if call.twiml:
                        # calls.create with Twiml: "TwiML instructions for the call Twilio
                        # will use without fetching Twiml from url" (SDK call/__init__.py).
                        self.scheduler.at(0.01, lambda: self.run_twiml(
                            call, _parse_twiml(call.twiml or "")))
                        return
                    if call.url:
                        # calls.create without AsyncAmd: "blocks the execution of the call
                        # until Answering Machine Detection is completed" (SDK call/
                        # __init__.py, async_amd): the Url is fetched after the verdict.
                        self.scheduler.at(0.01, lambda: self._run_url(call))
                        return
                    conf = self.conferences.get(call.conference or "")
                    if conf is not None:
                        # The docs do not say whether a participant joins before its AMD
                        # verdict: the least convenient order, join first, verdict after.
                        self._join(conf, call, 0.0)
                    if call.machine_detection and call.amd_callback:
                        # AmdStatusCallback (SDK participant.py, amd_status_callback):
                        # AccountSid, CallSid, AnsweredBy, MachineDetectionDuration. Without
                        # it, nothing is sent (warning 21262).
                        self._schedule_callback(0.15, call.amd_callback, {
                            "AccountSid": self.twilio_sid(call), "CallSid": call.sid,
                            "AnsweredBy": call.answered_by,
                            "MachineDetectionDuration": "1500"})
                else:
                    status = {"fail": "failed", "decline": "no-answer"}.get(fate.outcome,
                                                                             fate.outcome)
                    self._end_call(call.sid, status)

        self.scheduler.at(max(fate.ring, 0.02), outcome)

    # TwiML on a leg we placed with a Url
    def _fetch_twiml(self, call: SimCall, url: str, extra: dict[str, str]) -> Any:
        """POST to the application's URL, signed as Twilio signs it; its TwiML, or None."""
        # https://www.twilio.com/docs/voice/twiml#request-parameters
        params = {"AccountSid": self.twilio_sid(call), "CallSid": call.sid,
                  "CallStatus": call.status, "From": call.from_, "To": call.to,
                  "Direction": "outbound-api", **extra}
        if call.machine_detection:
            # Synchronous AMD: "the result is sent to this URL just like any other
            # outbound-api call" (twilio.com/en-us/blog/async-answering-machine-detection-tutorial).
            params["AnsweredBy"] = call.answered_by
        status, text = -1, ""
        try:
            resp = self.http.post(url, data=params, timeout=10, headers={
                "X-Twilio-Signature": self.twilio_signature(url, params),
                "I-Twilio-Idempotency-Token": uuid.uuid4().hex})
            status, text = resp.status_code, resp.text
        except requests.RequestException:
            pass
        with self.lock:
            self.deliveries.append(Delivery(url, params, status, time.time()))
        if status != 200:
            return None
        try:
            return ET.fromstring(text)  # noqa: S314 - the service's TwiML, in tests
        except ET.ParseError:
            return None

    def _run_url(self, call: SimCall) -> None:
        if call.status != "in-progress" or not call.url:
            return
        root = self._fetch_twiml(call, call.url, {})
        self.run_twiml(call, root)

    def run_twiml(self, call: SimCall, root: Any) -> None:
        """Run a TwiML document on a live leg: Say, Gather (the fate presses the key or
        not), Dial/Conference, Hangup; a document that runs out hangs up, as Twilio does."""
        # https://www.twilio.com/docs/voice/twiml: verbs run in order; no more verbs ends
        # the call; <Gather action actionOnEmptyResult> (docs: twiml/gather).
        if root is None:
            self._end_call(call.sid, "completed")  # Twilio: "an application error occurred"
            return
        for verb in root:
            if call.status != "in-progress":
                return
            if verb.tag == "Say":
                call.spoken.append(verb.text or "")
            elif verb.tag == "Play" and verb.get("digits"):
                # "The digits attribute lets you play DTMF tones during a call"
                # (docs/voice/twiml/play); the next verb runs once they are played.
                call.spoken.append(f"[dtmf {verb.get('digits')}]")
            elif verb.tag == "Gather":
                call.spoken.extend(e.text or "" for e in verb if e.tag == "Say")
                digits = self.keys.get(call.to, "1") if call.fate == "answer" else ""
                if digits or verb.get("actionOnEmptyResult") == "true":
                    action = verb.get("action") or call.url or ""
                    self.run_twiml(call, self._fetch_twiml(call, action, {"Digits": digits}))
                    return
            elif verb.tag == "Dial" and verb.find("Conference") is not None:
                self.join_conference_node(call, verb.find("Conference"), 0.0)
                return
            elif verb.tag == "Hangup":
                break
        self._end_call(call.sid, "completed")

    def join_conference_node(self, call: SimCall, node: Any, delay: float) -> None:
        """<Dial><Conference>: the call joins the named conference (created if new)."""
        if node is None or not node.text:
            return
        name = node.text.strip()
        with self.lock:
            conf = self.conferences.get(name)
            if conf is None:
                conf = self.conferences[name] = SimConference(name, _sid("CF"))
            # The conference's statusCallback is the first participant's (docs:
            # twiml/conference#attributes-statuscallback).
            if node.get("statusCallback") and not conf.status_callback:
                conf.status_callback = node.get("statusCallback")
                conf.events = tuple((node.get("statusCallbackEvent") or "").split())
            call.label = node.get("participantLabel") or call.label
            self._join(conf, call, delay)

    # faults
    def _fault(self, path: str) -> Response | None:
        with self.lock:
            for fault in self.faults:
                if fault.remaining > 0 and fault.path_contains in path:
                    fault.remaining -= 1
                    delay, status = fault.delay, fault.status
                    break
            else:
                return None
        if delay:
            time.sleep(delay)
        if status == 0:
            return None  # only slow: the request then goes through
        if status < 0:
            # A connection reset: close the socket without an answer.
            sock = request.environ.get("werkzeug.socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            return Response(status=500)
        if path.startswith("/v1/"):
            resp = jsonify({"api_id": str(uuid.uuid4()), "error": "Sandbox injected fault"})
            resp.status_code = status
            return resp
        return _twilio_error(status, 20500 if status >= 500 else 20001,
                             "Sandbox injected fault")

    def _make_app(self) -> Flask:
        app = Flask("sandbox")

        @app.before_request
        def _record() -> Response | None:
            if request.path.startswith("/_sandbox"):
                return None
            rec = Recorded(request.method, request.path,
                           {k: request.form.getlist(k) for k in request.form},
                           request.get_json(silent=True), time.time())
            with self.lock:
                self.requests.append(rec)
            return self._fault(request.path)

        @app.get("/_sandbox/requests")
        def _requests() -> Response:
            with self.lock:
                return jsonify([{"method": r.method, "path": r.path, "form": r.form,
                                 "json": r.json, "at": r.at} for r in self.requests])

        @app.get("/_sandbox/deliveries")
        def _deliveries() -> Response:
            with self.lock:
                return jsonify([d.__dict__ for d in self.deliveries])

        @app.put("/_sandbox/fates/<path:number>")
        def _fate(number: str) -> Response:
            body = request.get_json(silent=True) or {}
            try:
                self.set_fate(number, str(body.get("fate", "")))
            except ValueError as exc:
                abort(400, str(exc))
            return jsonify({"number": number, "fate": body.get("fate")})

        @app.post("/_sandbox/faults")
        def _faults() -> Response:
            body = request.get_json(silent=True) or {}
            self.add_fault(str(body.get("path", "")), int(body.get("status", 503)),
                           int(body.get("count", 1)), float(body.get("delay", 0)))
            return jsonify({"ok": True})

        @app.post("/_sandbox/calls")
        def _calls() -> Response:
            body = request.get_json(silent=True) or {}
            sid = self.create_customer_call(
                to=str(body.get("to", "+14155550150")), from_=str(body.get("from", "")),
                status_callback=body.get("status_callback"),
                provider=str(body.get("provider", "twilio")),
                dial_whom_url=body.get("dial_whom_url"), passthru_url=body.get("passthru_url"),
                status_format=body.get("status_format"), connect_mode=body.get("connect_mode"),
                fallback_url=body.get("fallback_url"), custom_field=body.get("custom_field"),
                # "second": a call of the provider's second account.
                account=(self.models[str(body.get("provider", "twilio"))].second_owner()
                         if body.get("account") == SECOND_ACCOUNT else None))
            return jsonify({"call_id": sid})

        @app.post("/_sandbox/calls/<sid>/hangup")
        def _hangup(sid: str) -> Response:
            self.hangup(sid)
            return jsonify({"ok": True})

        @app.post("/_sandbox/reset")
        def _reset() -> Response:
            self.reset()
            return jsonify({"ok": True})

        for model in self.models.values():
            model.register(app)
        return app


def _parse_twiml(text: str) -> Any:
    try:
        return ET.fromstring(text)  # noqa: S314 - the service's TwiML, in tests
    except ET.ParseError:
        return None


def _sid(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


def _twilio_error(status: int, code: int, message: str) -> Response:
    resp = jsonify({"code": code, "message": message, "more_info":
                    f"https://www.twilio.com/docs/errors/{code}", "status": status})
    resp.status_code = status
    return resp
