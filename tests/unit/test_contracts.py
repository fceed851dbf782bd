from typing import Any

import pytest

from shared.contracts import (
    TOOL_DECLARATION,
    ErrorCode,
    RequestError,
    ToolResult,
    TransferEvent,
    parse_request,
)
from tests.helpers import make_request

DIRECTORY = {"main-line": "+14155550199", "bad": "12345"}


def parse(raw: Any) -> Any:
    return parse_request(raw, DIRECTORY.get)


def code_of(raw: Any) -> str:
    with pytest.raises(RequestError) as info:
        parse(raw)
    return info.value.code.value


def test_valid_request_is_normalised() -> None:
    req = parse(make_request(lead_id="L1", transfer_number="+1 415 555 0101", summary=" hi "))
    assert req.lead_id == "L1"
    assert req.transfer_number == "+14155550101"
    assert req.outbound_number == "+14155550199"
    assert req.summary == "hi"
    assert req.transfer_id.startswith("tr_")


def test_explicit_outbound_number_wins_over_directory() -> None:
    req = parse(make_request(outbound_number="+14155550142", outbound_number_id=None))
    assert req.outbound_number == "+14155550142"


@pytest.mark.parametrize(("raw", "code"), [
    (make_request(transfer_number=None), "missing_transfer_number"),
    (make_request(transfer_number="  "), "missing_transfer_number"),
    ({**make_request(), "template": {}}, "missing_transfer_number"),
    ({**make_request(), "template": "x"}, "missing_transfer_number"),
    (make_request(transfer_number="4155550101"), "invalid_transfer_number"),
    (make_request(outbound_number_id=None), "missing_outbound_number_id"),
    ({**make_request(), "lead": None}, "missing_outbound_number_id"),
    (make_request(outbound_number_id="nope"), "unknown_outbound_number_id"),
    (make_request(outbound_number_id="bad"), "invalid_outbound_number"),
    (make_request(provider="skype"), "unsupported_provider"),
    ({**make_request(), "lead_id": ""}, "missing_lead_id"),
    ({**make_request(), "call_id": None}, "missing_call_id"),
    (make_request(summary=42), "invalid_request"),
    ([], "invalid_request"),
    ("{}", "invalid_request"),
])
def test_invalid_requests_get_stable_codes(raw: Any, code: str) -> None:
    assert code_of(raw) == code


@pytest.mark.parametrize(("number", "policy", "allowed"), [
    ("+14155550101", "", True),          # same country as the outbound number (US)
    ("+919999900000", "", False),
    ("+919999900000", "*", True),
    ("+919999900000", "US,IN", True),
    ("+919999900000", "us, +4420", False),
    ("+919999900000", "+9199", True),
])
def test_destination_guard(number: str, policy: str, allowed: bool) -> None:
    raw = make_request(transfer_number=number)
    if allowed:
        assert parse_request(raw, DIRECTORY.get, allowed_destinations=policy)
    else:
        with pytest.raises(RequestError) as info:
            parse_request(raw, DIRECTORY.get, allowed_destinations=policy)
        assert info.value.code.value == "destination_not_allowed"
        assert number not in str(info.value)  # masked


def test_tool_result_refusal_has_code_and_speakable_message() -> None:
    result = ToolResult.refused(ErrorCode.MISSING_TRANSFER_NUMBER).as_dict()
    assert result["status"] == "error"
    assert result["error"] == "missing_transfer_number"
    assert "continue the conversation" in result["message"]
    assert "transfer_id" not in result


def test_failed_event_shape() -> None:
    event = TransferEvent.failed(lead_id="L", transfer_id="tr_1", provider="twilio",
                                 call_id="CA1", reason="busy").as_dict()
    assert set(event) == {"event_id", "type", "lead_id", "transfer_id", "provider", "call_id",
                          "reason", "message", "action", "transferred", "occurred_at"}
    assert event["type"] == "transfer.failed"
    assert event["action"] == "resume"
    assert "busy" in event["message"]
    assert event["occurred_at"].endswith("Z")


def test_succeeded_event_ends_the_conversation() -> None:
    event = TransferEvent.succeeded(lead_id="L", transfer_id="t", provider="twilio",
                                    call_id="c").as_dict()
    assert event["action"] == "end_conversation"
    assert event["reason"] is None


def test_tool_declaration_names_the_tool() -> None:
    assert TOOL_DECLARATION["function"]["name"] == "connect_to_live_agent"
    assert TOOL_DECLARATION["function"]["parameters"]["type"] == "object"


def test_voicemail_detection_is_validated_and_twilio_only() -> None:
    raw = make_request()
    raw["template"]["configurations"]["voicemail_detection"] = "yes"
    assert code_of(raw) == "invalid_policy"
    raw = make_request(provider="plivo")
    raw["template"]["configurations"]["voicemail_detection"] = True
    assert code_of(raw) == "unsupported_policy"
    raw = make_request()
    raw["template"]["configurations"]["voicemail_detection"] = True
    assert parse(raw).voicemail_detection is True


def test_fallback_destinations() -> None:
    raw = make_request(provider="plivo", transfer_number=None)
    raw["template"]["configurations"]["transfer_numbers"] = ["+14155550101", "+1 415 555 0102"]
    req = parse(raw)
    assert req.transfer_number == "+14155550101"
    assert req.destinations == ("+14155550101", "+14155550102")
    raw["template"]["configurations"]["transfer_numbers"] = []
    assert code_of(raw) == "invalid_transfer_number"
    raw["template"]["configurations"]["transfer_numbers"] = ["+14155550101", "12"]
    assert code_of(raw) == "invalid_transfer_number"
    raw["template"]["configurations"]["transfer_numbers"] = ["+14155550101", "+919999900000"]
    assert code_of(raw) == "destination_not_allowed"
    twilio = make_request(transfer_number=None)
    twilio["template"]["configurations"]["transfer_numbers"] = ["+14155550101", "+14155550102"]
    assert code_of(twilio) == "unsupported_policy"
