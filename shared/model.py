"""The typed core: a transfer's states, the callback kinds every provider's webhooks hand
to the worker, the failure reasons, and the `Transfer` record.

String-valued enums, so that what goes on the wire (events, Celery messages) and into
Redis is the very string it was before. The record is converted to and from its Redis hash
in one place, `shared.store` (`Transfer.from_hash` / `Transfer.to_hash`); the tasks hand
the providers the typed record. Outside the store only `providers.base.record_of` reads the
string form: for the webhook routes that still read the hash themselves (Twilio's
screening routes) and for Plivo's signed URL contexts (the record's fields, as strings,
written from `to_hash` by `providers.plivo.markup.dial_context`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import NamedTuple

from shared.contracts import FailureReason

__all__ = ["TERMINAL_STATES", "Advance", "AdvanceOutcome", "CallbackKind", "Cause",
           "FailureReason", "State", "Transfer", "Transition"]


class State(StrEnum):
    REQUESTED = "requested"
    DIALING = "dialing"
    HUMAN_ANSWERED = "human_answered"
    BRIDGING = "bridging"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


TERMINAL_STATES = frozenset({State.SUCCEEDED, State.FAILED})


class CallbackKind(StrEnum):
    """What a webhook tells the worker (the `kind` of task `provider_callback`)."""

    # Twilio
    AGENT_STATUS = "agent-status"
    CONFERENCE = "conference"
    AMD = "amd"
    SCREEN = "screen"
    # Plivo
    DIAL_CALLBACK = "dial-callback"
    DIAL_ACTION = "dial-action"
    # Plivo's agent-first handoff: the human's leg (hangup_url), its machine detection, its
    # acceptance (the briefing's end, or the key at GetDigits' action), the conference.
    AF_LEG = "af-leg"
    AF_MACHINE = "af-machine"
    AF_ACCEPT = "af-accept"
    AF_CONFERENCE = "af-conference"
    # Exotel
    PASSTHRU = "passthru"
    # Plivo and Exotel: the provider fetched the dial-up with no transfer pending.
    DIAL_UP_MISSING = "dial-up-missing"


@dataclass(frozen=True)
class Transition:
    """A state change asked of the store: whether it happened, and the state it found
    ("" when the transfer is unknown)."""

    ok: bool
    previous: str

    @property
    def previous_state(self) -> State | None:
        return State(self.previous) if self.previous else None


class AdvanceOutcome(StrEnum):
    """What moving on from a destination that was not reached did."""

    NEXT = "next"  # the next destination is now the current one
    LAST = "last"  # none left (or no time to ring another): the transfer fails
    STALE = "stale"  # that destination was already moved past
    FINAL = "final"  # the transfer is over


class Cause(NamedTuple):
    """The provider's own cause of a destination's outcome (either part may be missing)."""

    sip_code: int | None = None
    provider_cause: str | None = None

    def to_json(self) -> str:
        return json.dumps([self.sip_code, self.provider_cause]) if any(self) else ""

    @classmethod
    def from_json(cls, raw: str | None) -> Cause | None:
        try:
            sip, cause = json.loads(raw or "")
        except (ValueError, TypeError):
            return None
        return cls(sip if isinstance(sip, int) else None,
                   cause if isinstance(cause, str) else None)

    @classmethod
    def of(cls, sip_code: str | None, provider_cause: str | None = None) -> Cause | None:
        """From a callback's strings: a SIP code is kept only as one (100-699)."""
        sip = int(sip_code) if sip_code and sip_code.isdigit() and \
            100 <= int(sip_code) <= 699 else None
        cause = (provider_cause or "").strip()[:100] or None
        return cls(sip, cause) if sip is not None or cause else None


class Advance(NamedTuple):
    """The store's answer to `advance_destination` (a tuple: unpacks as before)."""

    outcome: AdvanceOutcome
    attempt: int
    number: str


# The record's fields with a type of their own: the request's, and the leg bookkeeping
# several providers share. Every other field stays a string in `Transfer.extra`: one
# provider's own bookkeeping (Twilio's/Telnyx's ring group legs `group_legs`, Plivo's
# per-attempt pick-ups, `customer_moved`, `member`, `conference_sid`...), the store's
# (`created_at`, `updated_at`, `tried`, `cause:<n>`, `reason`, `event`, `event_sent`).
_FLAGS = ("voicemail_detection", "screening", "declined", "dial_up_served")
# Written only when not the default, as the record has always been (see Store.begin).
_DEFAULTS = {"account": "default", "handoff": "default"}
_TEXT = ("transfer_id", "lead_id", "provider", "call_id", "transfer_number",
         "outbound_number", "summary", "request_id", "screening_key", "caller_number",
         "hold_audio", "fallback_on", "agent_call_sid", "dial_attempted", "placed")

_LEG_BOOKKEEPING = frozenset({"agent_call_sid", "dial_attempted", "placed", "declined",
                              "dial_up_served"})


@dataclass(frozen=True)
class Transfer:
    """One transfer, as recorded (`wt:transfer:{id}`)."""

    transfer_id: str
    lead_id: str
    provider: str
    call_id: str
    state: State
    transfer_number: str = ""
    outbound_number: str = ""
    summary: str = ""
    request_id: str = ""
    started_at: float = 0.0
    voicemail_detection: bool = False
    screening: bool = False
    screening_key: str = "1"
    screening_timeout: int = 8
    destinations: tuple[str, ...] = ()
    attempt: int = 0
    # False while the provider has not said which destination it is trying (Exotel goes
    # down a list itself): the hash holds attempt "".
    attempt_known: bool = True
    ring_timeouts: tuple[int, ...] = ()
    caller_number: str = ""
    hold_audio: str = ""
    # The unreached outcomes that move on to the next destination, comma-separated ("":
    # every one, "none": none).
    fallback_on: str = ""
    agent_call_sid: str = ""
    # The look-before-dial marker: the attempt whose dial may have been placed.
    dial_attempted: str = ""
    placed: str = ""
    declined: bool = False
    dial_up_served: bool = False
    # The provider account ("default": the provider's default credentials).
    account: str = "default"
    # The handoff flavour ("default", or e.g. Plivo's "agent_first").
    handoff: str = "default"
    # Per destination, the digits sent once it answers ("" for none; () when no destination
    # has any).
    extensions: tuple[str, ...] = ()
    # The template's static SIP headers, (name, value) pairs.
    sip_headers: tuple[tuple[str, str], ...] = ()
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def final(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def destination(self) -> str:
        """The number of the current attempt ('' when there is none)."""
        ok = 0 <= self.attempt < len(self.destinations)
        return self.destinations[self.attempt] if ok else ""

    def extension(self, attempt: int | None = None) -> str:
        """The digits destination `attempt` (default: the current one) wants once it
        answers ("" for none)."""
        index = self.attempt if attempt is None else attempt
        return self.extensions[index] if 0 <= index < len(self.extensions) else ""

    def ring_timeout(self, attempt: int | None = None) -> int:
        """The template's ring time of destination `attempt` (default: the current one);
        0 when it set none."""
        index = self.attempt if attempt is None else attempt
        return self.ring_timeouts[index] if 0 <= index < len(self.ring_timeouts) else 0

    def with_extra(self, **fields: str) -> Transfer:
        """The record with provider bookkeeping fields set (as a callback just wrote them)."""
        return replace(self, extra={**self.extra, **fields})

    @classmethod
    def from_hash(cls, raw: Mapping[str, str]) -> Transfer:
        """The one conversion: `shared.store` (and `providers.base.record_of`, see above)."""
        known = {*_FLAGS, *_TEXT, *_DEFAULTS, "state", "started_at", "screening_timeout",
                 "destinations", "attempt", "ring_timeouts", "extensions", "sip_headers"}
        text: dict[str, str] = {name: raw.get(name, "") for name in _TEXT
                                if name != "screening_key"}
        flags: dict[str, bool] = {name: bool(raw.get(name)) for name in _FLAGS}
        return cls(
            state=State(raw.get("state") or State.REQUESTED),
            started_at=float(raw.get("started_at") or 0.0),
            screening_timeout=int(raw.get("screening_timeout") or 8),
            destinations=tuple(str(n) for n in json.loads(raw.get("destinations") or "[]")),
            attempt=int(raw.get("attempt") or 0),
            attempt_known=raw.get("attempt") != "",
            ring_timeouts=tuple(int(r) for r in json.loads(raw.get("ring_timeouts") or "[]")),
            **flags,  # type: ignore[arg-type]
            **text,  # type: ignore[arg-type]
            screening_key=raw.get("screening_key") or "1",
            account=raw.get("account") or _DEFAULTS["account"],
            handoff=raw.get("handoff") or _DEFAULTS["handoff"],
            extensions=tuple(str(e) for e in json.loads(raw.get("extensions") or "[]")),
            sip_headers=tuple((str(n), str(v))
                              for n, v in json.loads(raw.get("sip_headers") or "[]")),
            extra={k: v for k, v in raw.items() if k not in known},
        )

    def to_hash(self) -> dict[str, str]:
        """The Redis hash, with the strings the record has always held ("1"/"" flags)."""
        raw = {name: getattr(self, name) for name in _TEXT}
        raw.update({name: "1" if getattr(self, name) else "" for name in _FLAGS})
        raw.update(state=str(self.state), started_at=repr(self.started_at),
                   screening_timeout=str(self.screening_timeout),
                   destinations=json.dumps(list(self.destinations)),
                   attempt=str(self.attempt) if self.attempt_known else "",
                   ring_timeouts=json.dumps(list(self.ring_timeouts)))
        raw.update({name: getattr(self, name) for name, default in _DEFAULTS.items()
                    if getattr(self, name) != default})
        if self.extensions:
            raw["extensions"] = json.dumps(list(self.extensions))
        if self.sip_headers:
            raw["sip_headers"] = json.dumps([list(h) for h in self.sip_headers])
        raw.update(self.extra)
        # Leg bookkeeping is absent from the hash until set (and deleted when moving on).
        return {k: v for k, v in raw.items() if v or k not in _LEG_BOOKKEEPING}
