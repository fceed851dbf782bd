"""The contracts outsiders rely on: request, tool result, events, tool declaration."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.hours import InvalidHours, parse_hours
from shared.phone import (
    InvalidNumber,
    destination_allowed,
    mask,
    mask_in_text,
    normalize_e164,
    region_of,
)

MAX_DESTINATIONS = 5
# Ids travel in callback URLs and Redis keys; every callback refuses longer ones.
MAX_ID_LENGTH = 100
# Our transfer ids: "tr_" and a uuid (hex, or a Celery task id), URL- and key-safe; what a
# worker accepts from the request dict its producer (our client) wrote.
TRANSFER_ID_FORMAT = re.compile(r"^tr_[A-Za-z0-9_.-]{1,97}$")
# Characters no XML document may hold (C0 controls but tab/newline/CR, lone surrogates,
# U+FFFE/U+FFFF), and the C1 controls: the summary goes into TwiML and Plivo XML.
_NOT_SPEAKABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
HOLD_RINGBACK = "ringback"

PROVIDERS: tuple[str, ...] = ("twilio", "plivo", "exotel", "telnyx")

TOOL_NAME = "connect_to_live_agent"

# The `global_builtin_functions` entry for a template: what the LLM sees and may call.
TOOL_DECLARATION: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": TOOL_NAME,
        "description": (
            "Transfer the live call to a human agent. Use it when the customer asks for a "
            "person, or when you cannot resolve the request yourself. Before calling it, tell "
            "the customer you are connecting them. If the result is an error, tell the customer "
            "you could not connect them and keep helping them."
        ),
        "parameters": {
            "type": "object",
            "properties": {
                "summary": {
                    "type": "string",
                    "description": (
                        "One or two sentences for the human agent: who the customer is and "
                        "what they need. The customer does not hear it."
                    ),
                },
            },
            "required": [],
        },
    },
}


class ErrorCode(StrEnum):
    INVALID_REQUEST = "invalid_request"
    MISSING_LEAD_ID = "missing_lead_id"
    INVALID_LEAD_ID = "invalid_lead_id"
    MISSING_CALL_ID = "missing_call_id"
    INVALID_CALL_ID = "invalid_call_id"
    UNSUPPORTED_PROVIDER = "unsupported_provider"
    MISSING_TRANSFER_NUMBER = "missing_transfer_number"
    INVALID_TRANSFER_NUMBER = "invalid_transfer_number"
    MISSING_OUTBOUND_NUMBER_ID = "missing_outbound_number_id"
    UNKNOWN_OUTBOUND_NUMBER_ID = "unknown_outbound_number_id"
    INVALID_OUTBOUND_NUMBER = "invalid_outbound_number"
    DESTINATION_NOT_ALLOWED = "destination_not_allowed"
    INVALID_HOURS = "invalid_hours"
    OUTSIDE_HOURS = "outside_hours"
    INVALID_POLICY = "invalid_policy"
    UNSUPPORTED_POLICY = "unsupported_policy"
    SERVICE_UNAVAILABLE = "service_unavailable"


# What the AI is told for each refusal: enough to say something sensible and carry on.
_CANT_CONNECT = (
    "Tell the customer you cannot connect them to a person right now, offer to keep helping "
    "or to arrange a call back, and continue the conversation."
)
ERROR_MESSAGES: dict[ErrorCode, str] = {
    ErrorCode.INVALID_REQUEST: "The transfer request was malformed. " + _CANT_CONNECT,
    ErrorCode.MISSING_LEAD_ID: "The transfer request has no lead. " + _CANT_CONNECT,
    ErrorCode.INVALID_LEAD_ID: "The transfer request's lead id is not valid. " + _CANT_CONNECT,
    ErrorCode.MISSING_CALL_ID: "The transfer request does not name the live call. " + _CANT_CONNECT,
    ErrorCode.INVALID_CALL_ID: "The transfer request's call id is not valid. " + _CANT_CONNECT,
    ErrorCode.UNSUPPORTED_PROVIDER: "This call's phone provider cannot transfer calls. "
    + _CANT_CONNECT,
    ErrorCode.MISSING_TRANSFER_NUMBER: "No human agent number is configured for transfers. "
    + _CANT_CONNECT,
    ErrorCode.INVALID_TRANSFER_NUMBER: "The configured human agent number is not valid. "
    + _CANT_CONNECT,
    ErrorCode.MISSING_OUTBOUND_NUMBER_ID: "No caller number is set up for transfers. "
    + _CANT_CONNECT,
    ErrorCode.UNKNOWN_OUTBOUND_NUMBER_ID: "The caller number for transfers is not registered. "
    + _CANT_CONNECT,
    ErrorCode.INVALID_OUTBOUND_NUMBER: "The caller number for transfers is not valid. "
    + _CANT_CONNECT,
    ErrorCode.DESTINATION_NOT_ALLOWED: "Transfers to the configured agent number are not "
    "allowed. " + _CANT_CONNECT,
    ErrorCode.INVALID_HOURS: "The transfer hours are not configured correctly. "
    + _CANT_CONNECT,
    ErrorCode.OUTSIDE_HOURS: "No human agents are available right now. Tell the customer "
    "when they can reach a person, offer to arrange a call back then, and keep helping them.",
    ErrorCode.INVALID_POLICY: "A transfer setting is not valid. " + _CANT_CONNECT,
    ErrorCode.UNSUPPORTED_POLICY: "A transfer setting is not available on this phone "
    "provider. " + _CANT_CONNECT,
    ErrorCode.SERVICE_UNAVAILABLE: "The transfer service is unavailable. " + _CANT_CONNECT,
}


class FailureReason(StrEnum):
    INVALID_REQUEST = "invalid_request"
    TRANSFER_IN_PROGRESS = "transfer_in_progress"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    FAILED = "failed"
    AGENT_HUNG_UP = "agent_hung_up"
    CUSTOMER_HUNG_UP = "customer_hung_up"
    PROVIDER_ERROR = "provider_error"
    TIMEOUT = "timeout"
    VOICEMAIL = "voicemail"
    DECLINED = "declined"


_TRY_AGAIN = "Apologise, keep helping the customer, and offer to try again or arrange a call back."
FAILURE_MESSAGES: dict[str, str] = {
    FailureReason.INVALID_REQUEST: "The transfer could not be started. " + _TRY_AGAIN,
    FailureReason.TRANSFER_IN_PROGRESS: "A transfer for this call is already under way; "
    "tell the customer they are being connected.",
    FailureReason.BUSY: "The human agent's line was busy. " + _TRY_AGAIN,
    FailureReason.NO_ANSWER: "No human agent answered. " + _TRY_AGAIN,
    FailureReason.FAILED: "The call to the human agent could not be placed. " + _TRY_AGAIN,
    FailureReason.AGENT_HUNG_UP: "The human agent hung up before the customer was connected. "
    + _TRY_AGAIN,
    FailureReason.CUSTOMER_HUNG_UP: "The customer hung up before the agent was connected.",
    FailureReason.PROVIDER_ERROR: "The phone provider had a problem placing the transfer. "
    + _TRY_AGAIN,
    FailureReason.TIMEOUT: "The transfer took too long and was abandoned. " + _TRY_AGAIN,
    FailureReason.VOICEMAIL: "The human agent's line went to voicemail. " + _TRY_AGAIN,
    FailureReason.DECLINED: "The human agent could not take the call. " + _TRY_AGAIN,
}


class ToolResult(BaseModel):
    """What `connect_to_live_agent` returns to the LLM."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["transfer_requested", "transfer_in_progress", "error"]
    transfer_id: str | None = None
    error: str | None = None
    message: str

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    @classmethod
    def refused(cls, code: ErrorCode, detail: str | None = None) -> ToolResult:
        message = ERROR_MESSAGES[code]
        if detail:
            message = f"{message} ({detail})"
        return cls(status="error", error=code.value, message=message)


class TransferRequest(BaseModel):
    """A request after validation: every field the workers need, normalised."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lead_id: str
    provider: Literal["twilio", "plivo", "exotel", "telnyx"]
    call_id: str
    transfer_number: str
    outbound_number: str
    outbound_number_id: str | None = None
    summary: str | None = None
    request_id: str | None = None
    transfer_id: str
    # Policies (template configurations beyond the number).
    voicemail_detection: bool = False
    screening: bool = False
    # With screening: the key the human presses to take the call, and how long they have.
    screening_key: str = "1"
    screening_timeout: int = 8
    # Every destination in order (the first is transfer_number), and how long each rings
    # (0: TRANSFER_RING_TIMEOUT).
    destinations: tuple[str, ...] = ()
    ring_timeouts: tuple[int, ...] = ()
    # The caller ID the human sees: the lead's outbound number, or the customer's own.
    caller_id: Literal["outbound", "customer"] = "outbound"
    customer_number: str | None = None
    # What the customer hears while the human is reached, where the provider puts them on
    # hold: "ringback" (a ringing tone) or the https URL of an audio file.
    hold_audio: str = HOLD_RINGBACK


class RequestError(Exception):
    def __init__(self, code: ErrorCode, detail: str | None = None) -> None:
        super().__init__(f"{code.value}: {detail}" if detail else code.value)
        self.code = code
        self.detail = detail


def _text(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def parse_request(
    raw: Any,
    resolve_outbound_number: Callable[[str], str | None],
    *,
    transfer_id: str | None = None,
    allowed_destinations: str = "",
    home_country: str = "",
    now: datetime | None = None,
) -> TransferRequest:
    """Validate a raw request dict (the wire contract) into a TransferRequest.

    `resolve_outbound_number` maps `lead.outbound_number_id` to an E.164 number (the number
    directory); `allowed_destinations` is the toll-fraud policy (see
    shared.phone.destination_allowed), whose home country is `home_country` (a setting) or
    else the directory number's country: never a number the request carries. `transfer_id`
    is ours to give (a new one when None); a request's own "transfer_id" is ignored. Raises
    RequestError with a stable code.
    """
    if transfer_id is not None and not TRANSFER_ID_FORMAT.match(transfer_id):
        raise RequestError(ErrorCode.INVALID_REQUEST, "transfer_id is not one of ours")
    if not isinstance(raw, Mapping):
        raise RequestError(ErrorCode.INVALID_REQUEST, "the request must be an object")
    lead_id = _text(raw.get("lead_id"))
    if lead_id is None:
        raise RequestError(ErrorCode.MISSING_LEAD_ID)
    if not _id_ok(lead_id):
        raise RequestError(ErrorCode.INVALID_LEAD_ID, f"at most {MAX_ID_LENGTH} printable "
                                                      "characters")
    provider = raw.get("provider")
    if not isinstance(provider, str) or provider.strip().lower() not in PROVIDERS:
        raise RequestError(ErrorCode.UNSUPPORTED_PROVIDER, f"provider {provider!r}")
    provider = provider.strip().lower()
    call_id = _text(raw.get("call_id"))
    if call_id is None:
        raise RequestError(ErrorCode.MISSING_CALL_ID)
    if not _id_ok(call_id):
        raise RequestError(ErrorCode.INVALID_CALL_ID, f"at most {MAX_ID_LENGTH} printable "
                                                      "characters")

    template = raw.get("template")
    configurations = template.get("configurations") if isinstance(template, Mapping) else None
    raw_number = (
        configurations.get("transfer_number") if isinstance(configurations, Mapping) else None
    )
    raw_list = configurations.get("transfer_numbers") if isinstance(
        configurations, Mapping) else None
    if raw_list is not None:
        # Fallback destinations, tried one after another.
        if not isinstance(raw_list, list) or not raw_list:
            raise RequestError(ErrorCode.INVALID_TRANSFER_NUMBER,
                               f"transfer_numbers must list 1 to {MAX_DESTINATIONS} numbers")
        if raw_number is not None and raw_number != _item_number(raw_list[0]):
            raw_list = [raw_number, *raw_list]
        if len(raw_list) > MAX_DESTINATIONS:
            raise RequestError(ErrorCode.INVALID_TRANSFER_NUMBER,
                               f"at most {MAX_DESTINATIONS} transfer numbers")
        raw_number = _item_number(raw_list[0])
    if raw_number is None or (isinstance(raw_number, str) and not raw_number.strip()):
        raise RequestError(ErrorCode.MISSING_TRANSFER_NUMBER)
    config_ring = _ring_seconds(configurations.get("ring_timeout") if isinstance(
        configurations, Mapping) else None, "ring_timeout")
    try:
        transfer_number = normalize_e164(raw_number)
        destinations = tuple(normalize_e164(_item_number(n)) for n in (raw_list or [raw_number]))
    except InvalidNumber as exc:
        raise RequestError(ErrorCode.INVALID_TRANSFER_NUMBER, str(exc)) from None
    per_destination = tuple(
        _ring_seconds(n.get("ring_timeout"), "transfer_numbers[].ring_timeout")
        if isinstance(n, Mapping) else None for n in (raw_list or [raw_number]))
    if any(r is not None for r in per_destination) and provider == "exotel":
        # Exotel's Connect takes one ringing duration for the whole list.
        raise RequestError(ErrorCode.UNSUPPORTED_POLICY, "a ring_timeout per destination is "
                                                         "not available on exotel")
    ring_timeouts = tuple(r or config_ring or 0 for r in per_destination)

    lead = raw.get("lead")
    lead = lead if isinstance(lead, Mapping) else {}
    outbound_number_id = _text(lead.get("outbound_number_id"))
    raw_outbound = lead.get("outbound_number")
    if raw_outbound is not None and not (isinstance(raw_outbound, str) and raw_outbound.strip()):
        raw_outbound = None
    if raw_outbound is None:
        if outbound_number_id is None:
            raise RequestError(ErrorCode.MISSING_OUTBOUND_NUMBER_ID)
        raw_outbound = resolve_outbound_number(outbound_number_id)
        if raw_outbound is None:
            raise RequestError(
                ErrorCode.UNKNOWN_OUTBOUND_NUMBER_ID, f"outbound_number_id {outbound_number_id!r}"
            )
    try:
        outbound_number = normalize_e164(raw_outbound)
    except InvalidNumber as exc:
        raise RequestError(ErrorCode.INVALID_OUTBOUND_NUMBER, str(exc)) from None

    raw_hours = configurations.get("hours") if isinstance(configurations, Mapping) else None
    if raw_hours is not None:
        try:
            hours = parse_hours(raw_hours)
        except InvalidHours as exc:
            raise RequestError(ErrorCode.INVALID_HOURS, str(exc)) from None
        if not hours.is_open(now or datetime.now(UTC)):
            raise RequestError(ErrorCode.OUTSIDE_HOURS, f"open {hours.text}")

    config: Mapping[str, Any] = configurations if isinstance(configurations, Mapping) else {}
    policies = _parse_policies(config, provider, lead)
    default_summary = config.get("summary")

    # The home country: a setting, or the directory's number for the lead's outbound id.
    home: str | None = home_country.strip().upper() or None
    if home is None and outbound_number_id is not None:
        home = region_of(resolve_outbound_number(outbound_number_id) or "")
    for number in destinations:
        if not destination_allowed(number, home, allowed_destinations):
            raise RequestError(ErrorCode.DESTINATION_NOT_ALLOWED,
                               f"{mask(number)} is outside the allowed destinations")

    summary = raw.get("summary") or default_summary
    if summary is not None and not isinstance(summary, str):
        raise RequestError(ErrorCode.INVALID_REQUEST, "summary must be a string")
    request_id = raw.get("request_id")
    if request_id is not None and _text(request_id) is None:
        raise RequestError(ErrorCode.INVALID_REQUEST, "request_id must be a non-empty string")
    return TransferRequest(
        lead_id=lead_id,
        provider=provider,  # type: ignore[arg-type]
        call_id=call_id,
        transfer_number=transfer_number,
        outbound_number=outbound_number,
        outbound_number_id=outbound_number_id,
        summary=_speakable(summary or "")[:1000] or None,
        request_id=_text(request_id),
        transfer_id=transfer_id or new_transfer_id(),
        destinations=destinations,
        ring_timeouts=ring_timeouts,
        **policies,
    )


# Which policy each provider's flow can carry out (see the README's policy table).
_POLICY_PROVIDERS: dict[str, tuple[str, ...]] = {
    "voicemail_detection": ("twilio", "telnyx"),
    "screening": ("twilio", "plivo", "telnyx"),
    "caller_id_customer": ("twilio", "plivo", "telnyx"),
    "hold_audio_url": ("twilio", "plivo", "telnyx"),
}


# What to use instead, where a provider has another way to the same end.
_POLICY_HINTS: dict[tuple[str, str], str] = {
    ("voicemail_detection", "plivo"): "its Dial has no machine detection; turn on screening "
                                      "instead: a voicemail cannot press the key",
}


def _policy_available(policy: str, provider: str, label: str) -> None:
    if provider not in _POLICY_PROVIDERS[policy]:
        hint = _POLICY_HINTS.get((policy, provider))
        raise RequestError(ErrorCode.UNSUPPORTED_POLICY, f"{label} is not available on "
                                                         f"{provider}" + (f" ({hint})" if hint
                                                                          else ""))


def _flag(config: Mapping[str, Any], name: str, provider: str) -> bool:
    value = config.get(name, False)
    if not isinstance(value, bool):
        raise RequestError(ErrorCode.INVALID_POLICY, f"{name} must be true or false")
    if value:
        _policy_available(name, provider, name)
    return value


def _parse_policies(config: Mapping[str, Any], provider: str, lead: Mapping[str, Any]
                    ) -> dict[str, Any]:
    """The template's transfer policies, validated for the provider."""
    policies: dict[str, Any] = {
        "voicemail_detection": _flag(config, "voicemail_detection", provider),
        "screening": _flag(config, "screening", provider),
    }
    key = config.get("screening_key", "1")
    if not isinstance(key, str) or len(key) != 1 or key not in "0123456789*#":
        raise RequestError(ErrorCode.INVALID_POLICY, "screening_key must be one of 0-9, * or #")
    policies["screening_key"] = key
    policies["screening_timeout"] = _seconds(config.get("screening_timeout"),
                                             "screening_timeout", 3, 60) or 8
    caller_id = config.get("caller_id", "outbound")
    if caller_id not in ("outbound", "customer"):
        raise RequestError(ErrorCode.INVALID_POLICY,
                           "caller_id must be 'outbound' or 'customer'")
    if caller_id == "customer":
        _policy_available("caller_id_customer", provider, "caller_id 'customer'")
        raw_customer = lead.get("phone_number")
        if not isinstance(raw_customer, str) or not raw_customer.strip():
            raise RequestError(ErrorCode.INVALID_POLICY, "caller_id 'customer' needs the "
                                                         "customer's lead.phone_number")
        try:
            policies["customer_number"] = normalize_e164(raw_customer)
        except InvalidNumber as exc:
            raise RequestError(ErrorCode.INVALID_POLICY,
                               f"lead.phone_number: {exc}") from None
    policies["caller_id"] = caller_id
    hold = config.get("hold_audio", HOLD_RINGBACK)
    if not isinstance(hold, str) or not (
            hold == HOLD_RINGBACK or (hold.startswith("https://") and len(hold) <= 500)):
        raise RequestError(ErrorCode.INVALID_POLICY,
                           "hold_audio must be 'ringback' or an https:// URL of an audio file")
    if hold != HOLD_RINGBACK:
        _policy_available("hold_audio_url", provider, "a hold_audio URL")
    policies["hold_audio"] = hold
    return policies


def _id_ok(value: str) -> bool:
    return len(value) <= MAX_ID_LENGTH and value.isprintable()


def _speakable(text: str) -> str:
    """The summary without control characters (each becomes a space), trimmed."""
    return " ".join(_NOT_SPEAKABLE.sub(" ", text).split())


def _item_number(item: Any) -> Any:
    """A transfer_numbers item: the number, or {"number": ..., "ring_timeout": ...}."""
    return item.get("number") if isinstance(item, Mapping) else item


def _ring_seconds(value: Any, name: str) -> int | None:
    return _seconds(value, name, 5, 120)


def _seconds(value: Any, name: str, low: int, high: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RequestError(ErrorCode.INVALID_POLICY, f"{name} must be {low} to {high} seconds")
    return value


def new_transfer_id() -> str:
    return "tr_" + uuid.uuid4().hex


class EventType(StrEnum):
    SUCCEEDED = "transfer.succeeded"
    FAILED = "transfer.failed"
    DISCONNECT_AI = "transfer.disconnect_ai"
    CALL_ENDED = "call.ended"


class Action(StrEnum):
    END_CONVERSATION = "end_conversation"
    RESUME = "resume"
    DISCONNECT = "disconnect"


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Attempt(BaseModel):
    """One destination tried by a transfer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    index: int
    number: str
    outcome: str


class TransferEvent(BaseModel):
    """One event to the agent platform (keyword argument `event` of `agent.transfer_event`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: str = Field(default_factory=lambda: "ev_" + uuid.uuid4().hex)
    type: EventType
    lead_id: str
    transfer_id: str | None
    provider: str
    call_id: str | None
    reason: str | None = None
    message: str | None = None
    action: Action | None = None
    transferred: bool | None = None
    # Terminal events: which destination took the call (its index in the template's
    # transfer numbers) and every destination tried, in order, with how each ended
    # (numbers masked).
    destination_index: int | None = None
    attempts: list[Attempt] | None = None
    occurred_at: str = Field(default_factory=_now_iso)

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def succeeded(cls, *, lead_id: str, transfer_id: str, provider: str, call_id: str,
                  destination_index: int | None = None,
                  attempts: list[Attempt] | None = None) -> TransferEvent:
        return cls(type=EventType.SUCCEEDED, lead_id=lead_id, transfer_id=transfer_id,
                   provider=provider, call_id=call_id, action=Action.END_CONVERSATION,
                   destination_index=destination_index, attempts=attempts)

    @classmethod
    def failed(cls, *, lead_id: str, transfer_id: str | None, provider: str,
               call_id: str | None, reason: str, message: str | None = None,
               attempts: list[Attempt] | None = None) -> TransferEvent:
        return cls(type=EventType.FAILED, lead_id=lead_id, transfer_id=transfer_id,
                   provider=provider, call_id=call_id, reason=reason,
                   message=mask_in_text(message or FAILURE_MESSAGES.get(
                       reason, FAILURE_MESSAGES["failed"])),
                   action=Action.RESUME, attempts=attempts)
