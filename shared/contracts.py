"""The contracts outsiders rely on: request, tool result, events, tool declaration."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from shared.hours import InvalidHours, parse_hours
from shared.phone import (
    InvalidNumber,
    destination_allowed,
    is_sip,
    mask,
    mask_in_text,
    normalize_e164,
    normalize_sip,
    region_of,
    sip_allowed,
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
# A destination's extension: DTMF digits, w for a half-second pause (Plivo's sendDigits and
# Twilio's send_digits both take these).
EXTENSION_FORMAT = re.compile(r"^[0-9*#w]{1,32}$")

# The outcomes of a destination not reached that may move a transfer on to the next one
# (`fallback_on`; all of them by default).
FALLBACK_REASONS: tuple[str, ...] = ("busy", "no_answer", "failed", "declined", "voicemail",
                                     "agent_hung_up")

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
    UNKNOWN_PROVIDER_ACCOUNT = "unknown_provider_account"
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
    ACCOUNT_LIMIT = "account_limit"


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
    ErrorCode.UNKNOWN_PROVIDER_ACCOUNT: "This call's phone provider account is not set up for "
    "transfers. " + _CANT_CONNECT,
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
    ErrorCode.ACCOUNT_LIMIT: "All lines for transfers are busy right now. " + _CANT_CONNECT,
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
    ACCOUNT_LIMIT = "account_limit"


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
    FailureReason.ACCOUNT_LIMIT: "All lines for transfers are busy right now. " + _TRY_AGAIN,
}


class ToolResult(BaseModel):
    """What `connect_to_live_agent` returns to the LLM (and `POST /transfers` answers)."""

    # As a dict it leaves out the fields that are None: the schema says so.
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "if": {"properties": {"status": {"const": "error"}}},
        "then": {"required": ["error"]}, "else": {"required": ["transfer_id"]}})

    status: Literal["transfer_requested", "transfer_in_progress", "error"]
    transfer_id: Annotated[str | None, WithJsonSchema({"type": "string"})] = None
    error: Annotated[str | None, WithJsonSchema({
        "type": "string", "enum": [c.value for c in ErrorCode],
        "description": "a stable code, with status error"})] = None
    message: str = Field(description="for the LLM: what to tell the customer and do next")

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
    provider: str
    # The provider account whose credentials place the transfer (providers/accounts.py).
    account: str = "default"
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
    # The outcomes of a destination not reached that move on to the next one.
    fallback_on: tuple[str, ...] = FALLBACK_REASONS
    # Per destination: the digits sent once it answers ("" for none).
    extensions: tuple[str, ...] = ()
    # The template's static headers for SIP destinations (name, value).
    sip_headers: tuple[tuple[str, str], ...] = ()
    # How the human is reached: the provider's default handoff, or "agent_first" (the
    # human is reached, briefed and screened while the AI keeps the customer; Plivo).
    handoff: Literal["default", "agent_first"] = "default"


class RequestError(Exception):
    def __init__(self, code: ErrorCode, detail: str | None = None) -> None:
        super().__init__(f"{code.value}: {detail}" if detail else code.value)
        self.code = code
        self.detail = detail


# ---- Provider capabilities: the one place contracts learn what a provider can do ----------


# The policies a provider declares it carries out or not (providers/<name>/capabilities.py).
POLICIES: tuple[str, ...] = ("voicemail_detection", "screening", "caller_id_customer",
                             "hold_audio_url", "ring_timeout_per_destination", "fallback_on",
                             "extension", "handoff_agent_first", "sip_destination",
                             "ring_group", "ring_group_screening")
# The policies a provider's agent-first handoff carries out by itself (on Plivo: the Call
# API's machine_detection and our <GetDigits>): accepted whenever the provider accepted
# `handoff: "agent_first"`, whatever its default handoff declares.
AGENT_FIRST_POLICIES: tuple[str, ...] = ("voicemail_detection", "screening")

# How a refusal names the policy to the AI.
_POLICY_LABELS: dict[str, str] = {
    "caller_id_customer": "caller_id 'customer'",
    "hold_audio_url": "a hold_audio URL",
    "ring_timeout_per_destination": "a ring_timeout per destination",
    "fallback_on": "a fallback_on narrower than every unreached outcome",
    "extension": "a destination's extension",
    "handoff_agent_first": "handoff 'agent_first'",
    "sip_destination": "a SIP destination",
    "ring_group": "a ring group",
    "ring_group_screening": "screening with a ring group",
}


def known_providers() -> tuple[str, ...]:
    """The provider names a request may carry: the registry's (providers/__init__.py)."""
    import providers  # here: the registry imports the store, which imports this module

    return providers.names()


class _ProviderNames:
    """The JSON schema of `provider`: the registry's names, read when the schema is made."""

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict[str, Any]:
        return {"type": "string", "enum": list(known_providers()),
                "description": "in lower case (the parser forgives case and spaces)"}


def policy_refusal(provider: str, policy: str) -> str | None:
    """None when `provider` can carry out `policy`, else why not (for the AI, with the
    provider's hint). Each provider's package declares what it can do."""
    import providers  # here: the registry imports the store, which imports this module

    why = providers.refusal(provider, policy)
    if why is None:
        return None
    return (f"{_POLICY_LABELS.get(policy, policy)} is not available on {provider}"
            + (f" ({why})" if why else ""))


# ---- The request on the wire ----------------------------------------------------------------
# Pydantic models of the request dict. Their validators raise our stable codes; each check
# carries a rank, its place in the order the codes have always been decided in, so a request
# with several faults is refused for the first of them. Checks that need the number directory,
# the clock or the provider's capabilities take them from the validation context.
# Ranks: 10 lead_id, 20 provider, 30 call_id, 40-46.5 the transfer numbers, their ring
# timeouts and extensions, 50-52 the outbound number, 60-61 hours, 69-79.8 the policies
# (69: the handoff); once all of these pass, `_accept` checks the destinations' countries,
# the summary and the request id.

@dataclass(frozen=True)
class _Context:
    resolve: Callable[[str], str | None]
    now: datetime
    home_country: str
    allowed_destinations: str
    # The SIP hosts a destination may name (TRANSFER_ALLOWED_SIP_DOMAINS; none by default).
    allowed_sip_domains: str
    # The request's provider (None when it names none we know: refused for that first) and
    # the customer's number: the policies in the template are checked against them.
    provider: str | None
    customer_phone: Any
    # Whether (provider, account) has credentials; None: only the default account exists.
    account_known: Callable[[str, str], bool] | None = None


def _refusal(rank: float, code: ErrorCode, detail: str | None = None) -> PydanticCustomError:
    return PydanticCustomError(code.value, "{detail}", {"detail": detail or "", "rank": rank})


def _context(info: ValidationInfo) -> _Context | None:
    ctx = info.context.get("request") if isinstance(info.context, dict) else None
    return ctx if isinstance(ctx, _Context) else None


def _text(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _id_ok(value: str) -> bool:
    return len(value) <= MAX_ID_LENGTH and value.isprintable()


def _id_field(missing: ErrorCode, invalid: ErrorCode, rank: int) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        text = _text(value)
        if text is None:
            raise _refusal(rank, missing)
        if not _id_ok(text):
            raise _refusal(rank + 1, invalid, f"at most {MAX_ID_LENGTH} printable characters")
        return text
    return check


def _object(value: Any) -> Any:
    """Where the request has no object, it has an empty one (and its own checks say what
    is missing)."""
    return dict(value) if isinstance(value, Mapping) else {}


def _seconds(rank: int, name: str, low: int, high: int) -> Callable[[Any], int | None]:
    def check(value: Any) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise _refusal(rank, ErrorCode.INVALID_POLICY,
                           f"{name} must be {low} to {high} seconds")
        return value
    return check


def _capable(rank: float, policy: str, info: ValidationInfo) -> None:
    ctx = _context(info)
    if policy in AGENT_FIRST_POLICIES and info.data.get("handoff") == "agent_first":
        return  # the handoff (accepted just before, at rank 69) carries it out
    refusal = policy_refusal(ctx.provider, policy) if ctx and ctx.provider else None
    if refusal is not None:
        raise _refusal(rank, ErrorCode.UNSUPPORTED_POLICY, refusal)


def _capable_in_handoff(rank: float, policy: str, info: ValidationInfo) -> None:
    """A destination policy under a handoff other than the default: refused where the
    provider declares that handoff does not carry it out (`policy@handoff`)."""
    ctx = _context(info)
    handoff = info.data.get("handoff", "default")
    if ctx is None or not ctx.provider or handoff == "default":
        return
    import providers  # here: the registry imports the store, which imports this module

    why = providers.handoff_refusal(ctx.provider, handoff, policy)
    if why is not None:
        raise _refusal(rank, ErrorCode.UNSUPPORTED_POLICY,
                       f"{_POLICY_LABELS.get(policy, policy)} is not available on "
                       f"{ctx.provider} with handoff '{handoff}'" + (f" ({why})" if why else ""))


def _flag(rank: int, name: str) -> Callable[[Any, ValidationInfo], bool]:
    def check(value: Any, info: ValidationInfo) -> bool:
        if not isinstance(value, bool):
            raise _refusal(rank, ErrorCode.INVALID_POLICY, f"{name} must be true or false")
        if value:
            _capable(rank + 1, name, info)
            dests = info.data.get("transfer_numbers")
            if name == "screening" and isinstance(dests, _Destinations) and any(
                    GROUP_SEPARATOR in n for n in dests.numbers):
                _capable(rank + 1.5, "ring_group_screening", info)
        return value
    return check


def _detection(value: Any, info: ValidationInfo) -> bool:
    on = _flag(70, "voicemail_detection")(value, info)
    dests = info.data.get("transfer_numbers")
    if on and isinstance(dests, _Destinations) and any(dests.extensions):
        # Whoever answers first (the switchboard, before its extension is dialed) is what
        # detection would judge; and Twilio ignores MachineDetection with SendDigits.
        raise _refusal(71.5, ErrorCode.UNSUPPORTED_POLICY, "voicemail_detection is not "
                       "available with a destination's extension (detection would judge the "
                       "switchboard that answers before the extension is dialed)")
    return on


def _handoff(value: Any, info: ValidationInfo) -> str:
    if value not in ("default", "agent_first"):
        raise _refusal(69, ErrorCode.INVALID_POLICY,
                       "handoff must be 'default' or 'agent_first'")
    if value == "agent_first":
        _capable(69.5, "handoff_agent_first", info)
    return str(value)


def _screening_key(value: Any) -> str:
    if not isinstance(value, str) or len(value) != 1 or value not in "0123456789*#":
        raise _refusal(74, ErrorCode.INVALID_POLICY, "screening_key must be one of 0-9, * or #")
    return value


def _caller_id(value: Any, info: ValidationInfo) -> str:
    if value not in ("outbound", "customer"):
        raise _refusal(76, ErrorCode.INVALID_POLICY, "caller_id must be 'outbound' or 'customer'")
    if value == "customer":
        _capable(77, "caller_id_customer", info)
        ctx = _context(info)
        if ctx is not None:
            try:
                _customer_number(ctx.customer_phone)
            except RequestError as exc:
                raise _refusal(78, exc.code, exc.detail) from None
    return str(value)


def _customer_number(raw: Any) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise RequestError(ErrorCode.INVALID_POLICY, "caller_id 'customer' needs the "
                                                     "customer's lead.phone_number")
    try:
        return normalize_e164(raw)
    except InvalidNumber as exc:
        raise RequestError(ErrorCode.INVALID_POLICY, f"lead.phone_number: {exc}") from None


def _hold_audio(value: Any, info: ValidationInfo) -> str:
    if not isinstance(value, str) or not (
            value == HOLD_RINGBACK or (value.startswith("https://") and len(value) <= 500)):
        raise _refusal(79, ErrorCode.INVALID_POLICY,
                       "hold_audio must be 'ringback' or an https:// URL of an audio file")
    if value != HOLD_RINGBACK:
        _capable(79.5, "hold_audio_url", info)
    return value


def _fallback_on(value: Any, info: ValidationInfo) -> tuple[str, ...]:
    if value is None:
        return FALLBACK_REASONS
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value) \
            or not set(value) <= set(FALLBACK_REASONS):
        raise _refusal(79.7, ErrorCode.INVALID_POLICY,
                       "fallback_on must list outcomes among " + ", ".join(FALLBACK_REASONS))
    reasons = tuple(r for r in FALLBACK_REASONS if r in value)
    if reasons != FALLBACK_REASONS:
        _capable(79.8, "fallback_on", info)
    return reasons


def _extension(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or not EXTENSION_FORMAT.match(value) \
            or not any(c.isdigit() or c in "*#" for c in value):
        raise _refusal(46, ErrorCode.INVALID_POLICY, "transfer_numbers[].extension must be "
                       "1 to 32 of 0-9, *, # and w (a half-second wait)")
    return value


def _address(raw: Any) -> str:
    """A destination: an E.164 number, or a SIP address (sip:user@host)."""
    return normalize_sip(raw) if is_sip(raw) else normalize_e164(raw)


# Headers we send to a SIP destination ourselves (providers.base.sip_headers); a template
# adds static ones, named X- and letters, digits or hyphens ("Header names should generally
# contain letters, numbers, and hyphens", twilio.com/docs/api/errors/13252; a subset of
# RFC 3261's token, so safe in a URI), never X-Twilio (dropped: docs/api/errors/32113).
SIP_CONTEXT_HEADERS = ("X-Transfer-Id", "X-Lead-Id", "X-Transfer-Summary")
_SIP_HEADER_NAME = re.compile(r"^X-[A-Za-z0-9-]{1,40}$")
MAX_SIP_HEADERS = 5
MAX_SIP_HEADER_VALUE = 100


def _sip_headers(value: Any) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    bad = _refusal(79.9, ErrorCode.INVALID_POLICY, (
        f"sip_headers must map up to {MAX_SIP_HEADERS} header names (X- and letters, "
        f"digits or -, not X-Twilio, not one of ours) to text of up to "
        f"{MAX_SIP_HEADER_VALUE} printable characters"))
    if not isinstance(value, Mapping) or len(value) > MAX_SIP_HEADERS:
        raise bad
    ours = {h.lower() for h in SIP_CONTEXT_HEADERS}
    out: list[tuple[str, str]] = []
    for name, text in value.items():
        if not (isinstance(name, str) and _SIP_HEADER_NAME.match(name)
                and not name.lower().startswith("x-twilio") and name.lower() not in ours
                and isinstance(text, str) and 0 < len(text) <= MAX_SIP_HEADER_VALUE
                and text.isprintable()):
            raise bad
        out.append((name, text))
    return tuple(out)


def _item_number(item: Any) -> Any:
    """A transfer_numbers item: the number, {"number": ..., "ring_timeout": ...}, or a ring
    group's members {"group": [...]}."""
    if isinstance(item, Mapping):
        return item.get("group") if "group" in item and "number" not in item \
            else item.get("number")
    return item


# A ring group: its members rung at once, the first to answer (and accept) takes the call.
# Twilio's <Dial> rings "up to ten <Number> nouns" at once (docs/voice/twiml/number).
MAX_GROUP = 10
GROUP_SEPARATOR = ","


def _group_address(raw: Any) -> str:
    """A ring group's members, normalised, as one destination ("+1...,+1...")."""
    if not isinstance(raw, list) or not 2 <= len(raw) <= MAX_GROUP:
        raise InvalidNumber(f"a group lists 2 to {MAX_GROUP} numbers")
    members = [_address(m) for m in raw]
    if len(set(members)) != len(members):
        raise InvalidNumber("a group lists each number once")
    return GROUP_SEPARATOR.join(members)


def _destination(item: Any) -> str:
    if isinstance(item, Mapping) and "group" in item and "number" not in item:
        return _group_address(item["group"])
    return _address(_item_number(item))


_NUMBER = {"type": "string", "description": (
    "E.164, with its + (spaces and dashes allowed), or a SIP address sip:user@host[:port] "
    "(where the provider dials SIP and the host is in TRANSFER_ALLOWED_SIP_DOMAINS)")}
_RING = Annotated[int | None, BeforeValidator(_seconds(42, "ring_timeout", 5, 120)),
                  WithJsonSchema({"type": "integer", "minimum": 5, "maximum": 120})]


class Destination(BaseModel):
    """A transfer number with its own ringing time."""

    model_config = ConfigDict(extra="allow")

    number: Annotated[Any, WithJsonSchema(_NUMBER)]
    ring_timeout: Annotated[int | None, WithJsonSchema(
        {"type": "integer", "minimum": 5, "maximum": 120})] = None
    extension: Annotated[Any, WithJsonSchema({
        "type": "string", "pattern": EXTENSION_FORMAT.pattern,
        "description": "DTMF sent once the destination answers; w waits half a second"})] = None


class Group(BaseModel):
    """A ring group: numbers rung at once; the first to answer takes the call."""

    model_config = ConfigDict(extra="allow")

    group: Annotated[Any, WithJsonSchema({"type": "array", "items": _NUMBER, "minItems": 2,
                                          "maxItems": MAX_GROUP, "uniqueItems": True})]
    ring_timeout: Annotated[int | None, WithJsonSchema(
        {"type": "integer", "minimum": 5, "maximum": 120})] = None


class _Destinations(BaseModel):
    """The destinations a template names, normalised (not part of the wire form)."""

    numbers: tuple[str, ...]
    ring_timeouts: tuple[int | None, ...]
    extensions: tuple[str, ...] = ()


class Configurations(BaseModel):
    """`template.configurations`: where and how to transfer."""

    model_config = ConfigDict(extra="allow")

    transfer_number: Annotated[Any, WithJsonSchema(_NUMBER)] = None
    ring_timeout: _RING = None
    # Before the policies it carries out and the destinations (fields validate in order:
    # they read it; its own checks rank 69, after theirs).
    handoff: Annotated[Literal["default", "agent_first"], BeforeValidator(_handoff)] = \
        "default"
    # Checked with transfer_number (fields validate in order; it sees the two above).
    # Fallback destinations, tried in order (transfer_number first); the validator below
    # replaces the type's own (which only describes the items).
    transfer_numbers: Annotated[list[Annotated[str, WithJsonSchema(_NUMBER)] | Destination
                                     | Group]
                                | None, Field(min_length=1, max_length=MAX_DESTINATIONS)] = \
        Field(None, validate_default=True)
    hours: Annotated[Any, WithJsonSchema({"type": "object", "properties": {
        "timezone": {"type": "string"}, "weekly": {"type": "object", "additionalProperties": {
            "type": "array", "items": {"type": "string", "pattern": r"^\d\d:\d\d-\d\d:\d\d$"}}}},
        "required": ["timezone", "weekly"]})] = None
    voicemail_detection: Annotated[bool, BeforeValidator(_detection)] = False
    screening: Annotated[bool, BeforeValidator(_flag(72, "screening"))] = False
    screening_key: Annotated[str, BeforeValidator(_screening_key), WithJsonSchema(
        {"type": "string", "pattern": r"^[0-9*#]$"})] = "1"
    screening_timeout: Annotated[int | None, BeforeValidator(
        _seconds(75, "screening_timeout", 3, 60)),
        WithJsonSchema({"type": "integer", "minimum": 3, "maximum": 60})] = None
    caller_id: Annotated[Literal["outbound", "customer"], BeforeValidator(_caller_id)] = \
        "outbound"
    hold_audio: Annotated[str, BeforeValidator(_hold_audio), WithJsonSchema({
        "anyOf": [{"const": HOLD_RINGBACK}, {"type": "string", "pattern": "^https://",
                                             "maxLength": 500}]})] = HOLD_RINGBACK
    # The outcomes that move on to the next destination (default: every one); any other
    # ends the transfer with that reason.
    fallback_on: Annotated[tuple[str, ...], BeforeValidator(_fallback_on), WithJsonSchema({
        "type": "array", "items": {"enum": list(FALLBACK_REASONS)}, "uniqueItems": True})] = \
        Field(None, validate_default=True)
    summary: Annotated[Any, WithJsonSchema({"type": "string"})] = None
    # Static headers sent to SIP destinations, beside ours (SIP_CONTEXT_HEADERS).
    sip_headers: Annotated[tuple[tuple[str, str], ...], BeforeValidator(_sip_headers),
                           WithJsonSchema({"type": "object", "maxProperties": MAX_SIP_HEADERS,
                                           "propertyNames": {
                                               "pattern": _SIP_HEADER_NAME.pattern},
                                           "additionalProperties": {
                                               "type": "string",
                                               "maxLength": MAX_SIP_HEADER_VALUE}})] = ()

    @field_validator("transfer_numbers", mode="wrap")
    @classmethod
    def _destinations(cls, raw_list: Any, _handler: ValidatorFunctionWrapHandler,
                      info: ValidationInfo) -> _Destinations | None:
        if "transfer_number" not in info.data:
            return None
        raw_number = info.data["transfer_number"]
        if raw_list is not None:
            # Fallback destinations, tried one after another.
            if not isinstance(raw_list, list) or not raw_list:
                raise _refusal(40, ErrorCode.INVALID_TRANSFER_NUMBER,
                               f"transfer_numbers must list 1 to {MAX_DESTINATIONS} numbers")
            if raw_number is not None and raw_number != _item_number(raw_list[0]):
                raw_list = [raw_number, *raw_list]
            if len(raw_list) > MAX_DESTINATIONS:
                raise _refusal(40, ErrorCode.INVALID_TRANSFER_NUMBER,
                               f"at most {MAX_DESTINATIONS} transfer numbers")
            raw_number = _item_number(raw_list[0])
        if raw_number is None or (isinstance(raw_number, str) and not raw_number.strip()):
            raise _refusal(41, ErrorCode.MISSING_TRANSFER_NUMBER)
        if "ring_timeout" not in info.data:
            return None  # refused for its ring_timeout, the earlier check
        items = raw_list or [raw_number]
        try:
            numbers = tuple(_destination(n) for n in items)
        except InvalidNumber as exc:
            raise _refusal(43, ErrorCode.INVALID_TRANSFER_NUMBER, str(exc)) from None
        groups = [GROUP_SEPARATOR in n for n in numbers]
        if any(groups):
            _capable(46.2, "ring_group", info)
            _capable_in_handoff(46.3, "ring_group", info)
        if any(is_sip(m) for n in numbers for m in n.split(GROUP_SEPARATOR)):
            _capable(46.7, "sip_destination", info)
            _capable_in_handoff(46.8, "sip_destination", info)
        ring = _seconds(44, "transfer_numbers[].ring_timeout", 5, 120)
        rings = tuple(ring(n.get("ring_timeout")) if isinstance(n, Mapping) else None
                      for n in items)
        if any(r is not None for r in rings):
            _capable(45, "ring_timeout_per_destination", info)
        extensions = tuple(_extension(n.get("extension")) if isinstance(n, Mapping) else ""
                           for n in items)
        if any(e and group for e, group in zip(extensions, groups, strict=True)):
            raise _refusal(46, ErrorCode.INVALID_POLICY, "a group takes no extension")
        if any(extensions):
            _capable(46.5, "extension", info)
            _capable_in_handoff(46.6, "extension", info)
        return _Destinations(numbers=numbers, ring_timeouts=rings,
                             extensions=extensions if any(extensions) else ())

    @field_validator("hours", mode="before")
    @classmethod
    def _open(cls, raw: Any, info: ValidationInfo) -> Any:
        if raw is None:
            return None
        try:
            hours = parse_hours(raw)
        except InvalidHours as exc:
            raise _refusal(60, ErrorCode.INVALID_HOURS, str(exc)) from None
        ctx = _context(info)
        if ctx is not None and not hours.is_open(ctx.now):
            raise _refusal(61, ErrorCode.OUTSIDE_HOURS, f"open {hours.text}")
        return raw


class Template(BaseModel):
    """The agent's template; only its configurations matter here."""

    model_config = ConfigDict(extra="allow")

    configurations: Annotated[Configurations, BeforeValidator(_object)] = \
        Field(None, validate_default=True)


class Lead(BaseModel):
    """The lead: which of the account's numbers calls the human, and the customer's number."""

    model_config = ConfigDict(extra="allow")

    outbound_number_id: Annotated[str | None, BeforeValidator(_text),
                                  WithJsonSchema({"type": ["string", "integer"]})] = None
    outbound_number: Annotated[Any, WithJsonSchema(_NUMBER)] = None
    # The customer's number: needed for caller_id "customer".
    phone_number: Annotated[Any, WithJsonSchema(_NUMBER)] = None
    _outbound: str = PrivateAttr("")

    @model_validator(mode="after")
    def _resolve(self, info: ValidationInfo) -> Lead:
        raw = self.outbound_number
        if not (isinstance(raw, str) and raw.strip()):
            if self.outbound_number_id is None:
                raise _refusal(50, ErrorCode.MISSING_OUTBOUND_NUMBER_ID)
            ctx = _context(info)
            raw = ctx.resolve(self.outbound_number_id) if ctx is not None else None
            if raw is None:
                raise _refusal(51, ErrorCode.UNKNOWN_OUTBOUND_NUMBER_ID,
                               f"outbound_number_id {self.outbound_number_id!r}")
        try:
            self._outbound = normalize_e164(raw)
        except InvalidNumber as exc:
            raise _refusal(52, ErrorCode.INVALID_OUTBOUND_NUMBER, str(exc)) from None
        return self


def _provider(value: Any) -> str:
    if not isinstance(value, str) or value.strip().lower() not in known_providers():
        raise _refusal(20, ErrorCode.UNSUPPORTED_PROVIDER, f"provider {value!r}")
    return value.strip().lower()


def _account(value: Any, info: ValidationInfo) -> str:
    # The default is always accepted, as before accounts (unconfigured: a provider_error).
    name = DEFAULT_ACCOUNT if value is None else value
    if not isinstance(name, str) or not ACCOUNT_NAME.match(name):
        raise _refusal(21, ErrorCode.UNKNOWN_PROVIDER_ACCOUNT, f"provider_account {value!r}")
    ctx = _context(info)
    if ctx is not None and ctx.provider is not None and name != DEFAULT_ACCOUNT and (
            ctx.account_known is None or not ctx.account_known(ctx.provider, name)):
        raise _refusal(21, ErrorCode.UNKNOWN_PROVIDER_ACCOUNT, f"provider_account {name!r}")
    return name


# The account a request without `provider_account` uses, and the names one may carry (the
# same as providers.accounts').
DEFAULT_ACCOUNT = "default"
ACCOUNT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

_ID = {"type": ["string", "integer"], "maxLength": MAX_ID_LENGTH}


class TransferRequestBody(BaseModel):
    """The request dict (DESIGN's wire contract), as a producer sends it."""

    model_config = ConfigDict(extra="allow", title="TransferRequest")

    lead_id: Annotated[str, BeforeValidator(_id_field(ErrorCode.MISSING_LEAD_ID,
                                                      ErrorCode.INVALID_LEAD_ID, 10)),
                       WithJsonSchema(_ID)]
    provider: Annotated[str, BeforeValidator(_provider), _ProviderNames]
    provider_account: Annotated[str, BeforeValidator(_account), WithJsonSchema({
        "type": "string", "pattern": ACCOUNT_NAME.pattern, "description": (
            "the provider account whose credentials place the transfer (CREDENTIALS_FILE "
            "or CREDENTIALS_RESOLVER); absent: the default account (the environment's)")})] = \
        Field(DEFAULT_ACCOUNT, validate_default=True)
    call_id: Annotated[str, BeforeValidator(_id_field(ErrorCode.MISSING_CALL_ID,
                                                      ErrorCode.INVALID_CALL_ID, 30)),
                       WithJsonSchema(_ID | {"description": "the customer's live call"})]
    template: Annotated[Template, BeforeValidator(_object)] = Field(None, validate_default=True)
    lead: Annotated[Lead, BeforeValidator(_object)] = Field(None, validate_default=True)
    summary: Annotated[Any, WithJsonSchema({"type": "string", "description": (
        "What the human hears before the bridge (at most 1000 characters are kept).")})] = None
    request_id: Annotated[Any, WithJsonSchema(_ID | {"description": "idempotency key"})] = None
    transfer_id: Annotated[Any, WithJsonSchema({
        "type": "string", "pattern": TRANSFER_ID_FORMAT.pattern, "description": (
            "Celery producers only: the transfer's id (else the task's id makes one); "
            "connect_to_live_agent and POST /transfers give their own")})] = None


# Required fields missing from the dict: the same codes as empty ones.
_MISSING_FIELD = {"lead_id": (10, ErrorCode.MISSING_LEAD_ID),
                  "provider": (20, ErrorCode.UNSUPPORTED_PROVIDER),
                  "call_id": (30, ErrorCode.MISSING_CALL_ID)}


def _first_refusal(exc: ValidationError) -> RequestError:
    ranked: list[tuple[int, RequestError]] = []
    for error in exc.errors(include_url=False):
        ctx = error.get("ctx") or {}
        if "rank" in ctx:
            ranked.append((ctx["rank"], RequestError(ErrorCode(error["type"]),
                                                     ctx["detail"] or None)))
        elif error["type"] == "missing" and error["loc"][0] in _MISSING_FIELD:
            rank, code = _MISSING_FIELD[str(error["loc"][0])]
            detail = "provider None" if code is ErrorCode.UNSUPPORTED_PROVIDER else None
            ranked.append((rank, RequestError(code, detail)))
        elif not error["loc"]:
            ranked.append((0, RequestError(ErrorCode.INVALID_REQUEST,
                                           "the request must be an object")))
        else:  # no model here should produce one; refuse rather than guess
            ranked.append((99, RequestError(ErrorCode.INVALID_REQUEST, error["msg"])))
    return min(ranked, key=lambda r: r[0])[1]


def parse_request(
    raw: Any,
    resolve_outbound_number: Callable[[str], str | None],
    *,
    transfer_id: str | None = None,
    allowed_destinations: str = "",
    home_country: str = "",
    now: datetime | None = None,
    allowed_sip_domains: str = "",
    account_known: Callable[[str, str], bool] | None = None,
) -> TransferRequest:
    """Validate a raw request dict (the wire contract) into a TransferRequest.

    `resolve_outbound_number` maps `lead.outbound_number_id` to an E.164 number (the number
    directory); `allowed_destinations` is the toll-fraud policy (see
    shared.phone.destination_allowed), whose home country is `home_country` (a setting) or
    else the directory number's country: never a number the request carries;
    `allowed_sip_domains` the SIP hosts a destination may name.
    `account_known(provider, account)` tells whether the request's provider account has
    credentials (providers.accounts.known); without it only the default account is known.
    `transfer_id` is ours to give (a new one when None); a request's own "transfer_id" is
    ignored. Raises RequestError with a stable code.
    """
    if transfer_id is not None and not TRANSFER_ID_FORMAT.match(transfer_id):
        raise RequestError(ErrorCode.INVALID_REQUEST, "transfer_id is not one of ours")
    if not isinstance(raw, Mapping):
        raise RequestError(ErrorCode.INVALID_REQUEST, "the request must be an object")
    try:
        provider: str | None = _provider(raw.get("provider"))
    except PydanticCustomError:
        provider = None
    lead = raw.get("lead")
    ctx = _Context(resolve_outbound_number, now or datetime.now(UTC), home_country,
                   allowed_destinations, allowed_sip_domains, provider,
                   lead.get("phone_number") if isinstance(lead, Mapping) else None,
                   account_known)
    try:
        body = TransferRequestBody.model_validate(dict(raw), context={"request": ctx})
    except ValidationError as exc:
        raise _first_refusal(exc) from None
    return _accept(body, ctx, transfer_id or new_transfer_id())


def _accept(body: TransferRequestBody, ctx: _Context, transfer_id: str) -> TransferRequest:
    """The last checks, which come after every other (in the order the codes have always
    been decided in), and the validated request."""
    config = body.template.configurations
    dests = config.transfer_numbers
    assert isinstance(dests, _Destinations)

    # The home country: a setting, or the directory's number for the lead's outbound id.
    home: str | None = ctx.home_country.strip().upper() or None
    if home is None and body.lead.outbound_number_id is not None:
        home = region_of(ctx.resolve(body.lead.outbound_number_id) or "")
    for number in (m for n in dests.numbers for m in n.split(GROUP_SEPARATOR)):
        if is_sip(number):
            if not sip_allowed(number, ctx.allowed_sip_domains):
                raise RequestError(ErrorCode.DESTINATION_NOT_ALLOWED,
                                   f"{mask(number)}: SIP host not in the allowed SIP domains")
        elif not destination_allowed(number, home, ctx.allowed_destinations):
            raise RequestError(ErrorCode.DESTINATION_NOT_ALLOWED,
                               f"{mask(number)} is outside the allowed destinations")

    summary = body.summary or config.summary
    if summary is not None and not isinstance(summary, str):
        raise RequestError(ErrorCode.INVALID_REQUEST, "summary must be a string")
    if body.request_id is not None and _text(body.request_id) is None:
        raise RequestError(ErrorCode.INVALID_REQUEST, "request_id must be a non-empty string")
    return TransferRequest(
        lead_id=body.lead_id,
        provider=body.provider,
        account=body.provider_account,
        call_id=body.call_id,
        transfer_number=dests.numbers[0],
        outbound_number=body.lead._outbound,
        outbound_number_id=body.lead.outbound_number_id,
        summary=_speakable(summary or "")[:1000] or None,
        request_id=_text(body.request_id),
        transfer_id=transfer_id,
        destinations=dests.numbers,
        ring_timeouts=tuple(r or config.ring_timeout or 0 for r in dests.ring_timeouts),
        voicemail_detection=config.voicemail_detection,
        screening=config.screening,
        screening_key=config.screening_key,
        screening_timeout=config.screening_timeout or 8,
        caller_id=config.caller_id,
        customer_number=(_customer_number(body.lead.phone_number)
                         if config.caller_id == "customer" else None),
        hold_audio=config.hold_audio,
        fallback_on=config.fallback_on,
        extensions=dests.extensions,
        sip_headers=config.sip_headers if any(
            is_sip(m) for n in dests.numbers for m in n.split(GROUP_SEPARATOR)) else (),
        handoff=config.handoff,
    )


# The models a request field's value is itself a part of.
_PARTS: dict[type[BaseModel], dict[str, type[BaseModel]]] = {
    TransferRequestBody: {"template": Template, "lead": Lead},
    Template: {"configurations": Configurations},
}


def wire_request(raw: Mapping[str, Any], model: type[BaseModel] = TransferRequestBody
                 ) -> dict[str, Any]:
    """The fields of the contract a request carries, with the values as the producer sent
    them: what goes into the Celery message, so the worker parses what the client parsed.
    Keys the contract does not name (the rest of the agent's template) stay behind."""
    parts = _PARTS.get(model, {})
    out: dict[str, Any] = {}
    for name in model.model_fields:
        if name in raw:
            value = raw[name]
            part = parts.get(name)
            out[name] = wire_request(value, part) if part and isinstance(value, Mapping) \
                else value
    return out


def _speakable(text: str) -> str:
    """The summary without control characters (each becomes a space), trimmed."""
    return " ".join(_NOT_SPEAKABLE.sub(" ", text).split())


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
    # The provider's own cause, where it gives one: the SIP response code and its cause
    # name or code (e.g. 486 / "user_busy"); see the README's table of causes.
    sip_code: int | None = None
    provider_cause: str | None = None
    # A ring group that took the call: which member answered (its index in the group).
    member: int | None = None


class TransferEvent(BaseModel):
    """One event to the agent platform (keyword argument `event` of `agent.transfer_event`)."""

    # Every field is in the event (None as null): required in the schemas.
    model_config = ConfigDict(extra="forbid", frozen=True,
                              json_schema_serialization_defaults_required=True)

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
    # transfer.succeeded to a ring group: which of its members answered (index in the
    # group; null where the provider did not say).
    destination_member: int | None = None
    attempts: list[Attempt] | None = None
    # transfer.failed: the provider's cause of the outcome that ended it, where it gives one.
    sip_code: int | None = None
    provider_cause: str | None = None
    occurred_at: str = Field(default_factory=_now_iso)

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def succeeded(cls, *, lead_id: str, transfer_id: str, provider: str, call_id: str,
                  destination_index: int | None = None,
                  attempts: list[Attempt] | None = None,
                  destination_member: int | None = None) -> TransferEvent:
        return cls(type=EventType.SUCCEEDED, lead_id=lead_id, transfer_id=transfer_id,
                   provider=provider, call_id=call_id, action=Action.END_CONVERSATION,
                   destination_index=destination_index, attempts=attempts,
                   destination_member=destination_member)

    @classmethod
    def failed(cls, *, lead_id: str, transfer_id: str | None, provider: str,
               call_id: str | None, reason: str, message: str | None = None,
               attempts: list[Attempt] | None = None, sip_code: int | None = None,
               provider_cause: str | None = None) -> TransferEvent:
        return cls(type=EventType.FAILED, lead_id=lead_id, transfer_id=transfer_id,
                   provider=provider, call_id=call_id, reason=reason,
                   message=mask_in_text(message or FAILURE_MESSAGES.get(
                       reason, FAILURE_MESSAGES["failed"])),
                   action=Action.RESUME, attempts=attempts, sip_code=sip_code,
                   provider_cause=provider_cause)


# One model per event type, narrowing the fields that type always has: the JSON Schemas of
# the events (schemas/events/) and the check that an event sent is one of them.
class SucceededEvent(TransferEvent):
    """`transfer.succeeded`: the customer is with the human; the AI ends its conversation."""

    type: Literal[EventType.SUCCEEDED]
    transfer_id: str
    call_id: str
    action: Literal[Action.END_CONVERSATION]


class FailedEvent(TransferEvent):
    """`transfer.failed`: the customer stays with the AI, which resumes and says `message`."""

    type: Literal[EventType.FAILED]
    reason: str = Field(description="a failure reason, or the error code of a request the "
                                    "worker refused")
    message: str
    action: Literal[Action.RESUME]


class DisconnectAiEvent(TransferEvent):
    """`transfer.disconnect_ai`: the AI must leave the call now (the bridge needs it off)."""

    type: Literal[EventType.DISCONNECT_AI]
    transfer_id: str
    action: Literal[Action.DISCONNECT]


class CallEndedEvent(TransferEvent):
    """`call.ended`: the customer's call is over, by a transfer or not."""

    type: Literal[EventType.CALL_ENDED]
    transferred: bool


EVENT_MODELS: dict[EventType, type[TransferEvent]] = {
    EventType.SUCCEEDED: SucceededEvent,
    EventType.FAILED: FailedEvent,
    EventType.DISCONNECT_AI: DisconnectAiEvent,
    EventType.CALL_ENDED: CallEndedEvent,
}


class TimelineEntry(BaseModel):
    """One step of a transfer, as operators see it."""

    model_config = ConfigDict(extra="allow")

    at: str
    note: str
    state: str | None = None


class LeadReport(BaseModel):
    """`GET /transfers/leads/{lead_id}`: the lead's transfer status, its latest transfer's
    timeline, and the terminal event once it has ended."""

    model_config = ConfigDict(extra="allow")

    lead_id: str
    status: str
    transfer_id: str | None = None
    call_id: str | None = None
    provider: str | None = None
    # The provider account of the latest transfer ("default" when the request named none).
    account: str | None = None
    updated_at: str | None = None
    timeline: list[TimelineEntry]
    event: TransferEvent | None
