from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
    req = parse_request(make_request(outbound_number="+14155550142", outbound_number_id=None),
                        DIRECTORY.get, home_country="US")
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
                          "reason", "message", "action", "transferred", "destination_index",
                          "destination_member", "attempts", "sip_code", "provider_cause",
                          "occurred_at"}
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
    with pytest.raises(RequestError, match="use handoff 'agent_first'"):
        parse(raw)
    raw = make_request()
    raw["template"]["configurations"]["voicemail_detection"] = True
    assert parse(raw).voicemail_detection is True


def test_handoff_agent_first_is_validated_and_carries_its_policies() -> None:
    raw = make_request(provider="plivo")
    config = raw["template"]["configurations"]
    config["handoff"] = "agent-first"
    assert code_of(raw) == "invalid_policy"
    # On Plivo the agent-first handoff carries out voicemail detection and screening.
    config.update(handoff="agent_first", voicemail_detection=True, screening=True)
    req = parse(raw)
    assert (req.handoff, req.voicemail_detection, req.screening) == ("agent_first", True, True)
    assert parse(make_request(provider="plivo")).handoff == "default"
    # Exotel has one handoff: refused, and refused before the policies it would carry.
    raw = make_request(provider="exotel")
    raw["template"]["configurations"].update(handoff="agent_first", voicemail_detection=True)
    with pytest.raises(RequestError, match="handoff 'agent_first' is not available on exotel"):
        parse(raw)
    # Twilio and Telnyx reach the human first anyway: accepted, a no-op.
    raw = make_request()
    raw["template"]["configurations"]["handoff"] = "agent_first"
    assert parse(raw).handoff == "agent_first"


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
    for provider in ("twilio", "exotel"):
        other = make_request(provider=provider, transfer_number=None)
        other["template"]["configurations"]["transfer_numbers"] = ["+14155550101",
                                                                   "+14155550102"]
        assert parse(other).destinations == ("+14155550101", "+14155550102")


def test_screening_is_available_where_the_flow_can_wait_for_a_key() -> None:
    for provider, code in (("twilio", None), ("plivo", None), ("exotel", "unsupported_policy")):
        raw = make_request(provider=provider)
        raw["template"]["configurations"]["screening"] = True
        if code:
            assert code_of(raw) == code
        else:
            assert parse(raw).screening is True
    raw = make_request()
    raw["template"]["configurations"]["screening"] = 1
    assert code_of(raw) == "invalid_policy"


def test_caller_id_customer_needs_the_customers_number() -> None:
    raw = make_request()
    assert parse(raw).caller_id == "outbound"
    raw["template"]["configurations"]["caller_id"] = "customer"
    assert code_of(raw) == "invalid_policy"  # no lead.phone_number
    raw["lead"]["phone_number"] = "not a number"
    assert code_of(raw) == "invalid_policy"
    raw["lead"]["phone_number"] = "+1 (415) 555-0177"
    req = parse(raw)
    assert (req.caller_id, req.customer_number) == ("customer", "+14155550177")
    raw["template"]["configurations"]["caller_id"] = "agent"
    assert code_of(raw) == "invalid_policy"
    exotel = make_request(provider="exotel")
    exotel["template"]["configurations"]["caller_id"] = "customer"
    exotel["lead"]["phone_number"] = "+14155550177"
    assert code_of(exotel) == "unsupported_policy"  # Exotel dials from an ExoPhone only


def test_hold_audio_is_ringback_by_default_never_silence() -> None:
    assert parse(make_request(provider="plivo")).hold_audio == "ringback"
    raw = make_request(provider="plivo")
    for bad in ("", "silence", "http://example.com/a.mp3", 3):
        raw["template"]["configurations"]["hold_audio"] = bad
        assert code_of(raw) == "invalid_policy"
    raw["template"]["configurations"]["hold_audio"] = "https://cdn.example.com/hold.mp3"
    assert parse(raw).hold_audio == "https://cdn.example.com/hold.mp3"
    exotel = make_request(provider="exotel")
    exotel["template"]["configurations"]["hold_audio"] = "https://cdn.example.com/hold.mp3"
    assert code_of(exotel) == "unsupported_policy"  # set in the Connect applet


def test_terminal_events_say_which_destinations_were_tried() -> None:
    from shared.contracts import Attempt

    event = TransferEvent.succeeded(
        lead_id="L", transfer_id="t", provider="plivo", call_id="c", destination_index=1,
        attempts=[Attempt(index=0, number="+14*******01", outcome="busy"),
                  Attempt(index=1, number="+14*******02", outcome="answered")]).as_dict()
    assert event["destination_index"] == 1
    assert [a["outcome"] for a in event["attempts"]] == ["busy", "answered"]


def test_ring_timeout_per_template_and_per_destination() -> None:
    raw = make_request(transfer_number=None)
    raw["template"]["configurations"] = {
        "ring_timeout": 20,
        "transfer_numbers": [{"number": "+14155550101", "ring_timeout": 10}, "+14155550102"]}
    req = parse(raw)
    assert req.destinations == ("+14155550101", "+14155550102")
    assert req.ring_timeouts == (10, 20)
    assert parse(make_request()).ring_timeouts == (0,)  # TRANSFER_RING_TIMEOUT
    for bad in (4, 121, "20", True):
        raw["template"]["configurations"]["ring_timeout"] = bad
        assert code_of(raw) == "invalid_policy"
    raw["template"]["configurations"]["ring_timeout"] = 20
    raw["template"]["configurations"]["transfer_numbers"][0]["ring_timeout"] = 500
    assert code_of(raw) == "invalid_policy"
    exotel = make_request(provider="exotel", transfer_number=None)
    exotel["template"]["configurations"] = {
        "transfer_numbers": [{"number": "+14155550101", "ring_timeout": 10}]}
    assert code_of(exotel) == "unsupported_policy"


def test_fallback_on_names_the_outcomes_that_move_on() -> None:
    assert parse(make_request()).fallback_on == (
        "busy", "no_answer", "failed", "declined", "voicemail", "agent_hung_up")
    raw = make_request(transfer_number=None)
    raw["template"]["configurations"] = {"transfer_numbers": ["+14155550101", "+14155550102"],
                                         "fallback_on": ["no_answer", "busy"]}
    assert parse(raw).fallback_on == ("busy", "no_answer")  # in our order, whatever theirs
    raw["template"]["configurations"]["fallback_on"] = []
    assert parse(raw).fallback_on == ()  # never move on
    for bad in ("busy", ["busy", "answered"], [1], {"busy": True}):
        raw["template"]["configurations"]["fallback_on"] = bad
        with pytest.raises(RequestError) as err:
            parse(raw)
        assert err.value.code == "invalid_policy"
        assert "fallback_on must list outcomes among busy, no_answer" in str(err.value.detail)
    exotel = make_request(provider="exotel")
    exotel["template"]["configurations"]["fallback_on"] = ["busy"]
    assert code_of(exotel) == "unsupported_policy"  # its Connect walks the list itself
    # Every outcome named is today's behaviour: fine everywhere.
    exotel["template"]["configurations"]["fallback_on"] = list(reversed(
        parse(make_request()).fallback_on))
    assert len(parse(exotel).fallback_on) == 6


def test_a_destination_may_carry_an_extension() -> None:
    raw = make_request(provider="plivo", transfer_number=None)
    raw["template"]["configurations"] = {"transfer_numbers": [
        {"number": "+14155550101", "extension": "ww123#"}, "+14155550102"]}
    req = parse(raw)
    assert req.destinations == ("+14155550101", "+14155550102")
    assert req.extensions == ("ww123#", "")
    assert parse(make_request(provider="plivo")).extensions == ()
    for bad in ("", "12a", "w", "1" * 33, 123):
        raw["template"]["configurations"]["transfer_numbers"][0]["extension"] = bad
        with pytest.raises(RequestError) as err:
            parse(raw)
        assert err.value.code == "invalid_policy" and "extension" in str(err.value.detail)
    for provider in ("twilio", "telnyx"):
        other = make_request(provider=provider, transfer_number=None)
        other["template"]["configurations"] = {"transfer_numbers": [
            {"number": "+14155550101", "extension": "123"}]}
        assert parse(other).extensions == ("123",)
        # Detection would judge the switchboard, not the person behind the extension.
        other["template"]["configurations"]["voicemail_detection"] = True
        with pytest.raises(RequestError) as err:
            parse(other)
        assert err.value.code == "unsupported_policy" and "switchboard" in str(err.value.detail)
    # Not built there: refused, not dropped.
    exotel = make_request(provider="exotel", transfer_number=None)
    exotel["template"]["configurations"] = {"transfer_numbers": [
        {"number": "+14155550101", "extension": "123"}]}
    assert code_of(exotel) == "unsupported_policy"
    # Plivo's agent-first handoff does not send it (its default handoff does).
    raw["template"]["configurations"]["transfer_numbers"][0]["extension"] = "123"
    raw["template"]["configurations"]["handoff"] = "agent_first"
    with pytest.raises(RequestError) as err:
        parse(raw)
    assert err.value.code == "unsupported_policy" and "agent_first" in str(err.value.detail)


def test_fallback_on_travels_in_the_celery_message() -> None:
    from shared.client import request_payload

    raw = make_request()
    raw["template"]["configurations"]["fallback_on"] = ["busy"]
    req = parse(raw)
    payload = request_payload(raw, req)
    assert payload["template"]["configurations"]["fallback_on"] == ["busy"]
    assert parse(payload).fallback_on == ("busy",)


def test_at_most_five_destinations_counting_transfer_number() -> None:
    raw = make_request(transfer_number="+14155550100")
    raw["template"]["configurations"]["transfer_numbers"] = [
        f"+1415555010{i}" for i in range(1, 6)]
    assert code_of(raw) == "invalid_transfer_number"
    raw["template"]["configurations"]["transfer_numbers"].pop()
    assert len(parse(raw).destinations) == 5


def _nested(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    # A named function: hypothesis checks that `extend` uses its argument by reading its
    # source, which a multi-line lambda does not always give it.
    return st.lists(children, max_size=6) | st.dictionaries(
        st.sampled_from(["number", "ring_timeout", "timezone", "weekly"]), children, max_size=3)


_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20)
                       | st.sampled_from(["+14155550101", "customer", "ringback",
                                          "https://cdn.example.com/a.mp3"]),
                       _nested, max_leaves=12)
_policy_keys = st.sampled_from(["transfer_number", "transfer_numbers", "screening",
                                "voicemail_detection", "caller_id", "hold_audio",
                                "ring_timeout", "hours", "summary"])


@settings(max_examples=300, deadline=None)
@given(provider=st.sampled_from(["twilio", "plivo", "exotel"]),
       configurations=st.dictionaries(_policy_keys, _values, max_size=6),
       phone=st.one_of(st.none(), _values))
def test_any_configuration_is_accepted_or_refused_with_a_code(
        provider: str, configurations: dict[str, Any], phone: Any) -> None:
    raw = make_request(provider=provider)
    raw["template"]["configurations"].update(configurations)
    if phone is not None:
        raw["lead"]["phone_number"] = phone
    # Nothing but a RequestError may escape, and its code has a message for the AI.
    refused: RequestError | None = None
    try:
        req = parse(raw)
    except RequestError as exc:
        refused = exc
    if refused is not None:
        assert ToolResult.refused(refused.code).message
        return
    assert 1 <= len(req.destinations) <= 5
    assert len(req.ring_timeouts) == len(req.destinations)


def test_screening_key_and_timeout_are_validated() -> None:
    raw = make_request(provider="plivo")
    raw["template"]["configurations"].update(screening=True)
    req = parse(raw)
    assert (req.screening_key, req.screening_timeout) == ("1", 8)
    raw["template"]["configurations"].update(screening_key="#", screening_timeout=20)
    req = parse(raw)
    assert (req.screening_key, req.screening_timeout) == ("#", 20)
    for key in ("", "12", "a", 1):
        raw["template"]["configurations"]["screening_key"] = key
        assert code_of(raw) == "invalid_policy"
    raw["template"]["configurations"]["screening_key"] = "2"
    for timeout in (2, 61, "8", True):
        raw["template"]["configurations"]["screening_timeout"] = timeout
        assert code_of(raw) == "invalid_policy"


@pytest.mark.parametrize(("raw", "spoken"), [
    ("hi\u000b there", "hi there"),
    ("a\x00b\x1fc\x7fd\x85e", "a b c d e"),
    ("line one\r\nline two\tend", "line one line two end"),
    ("lone \ud800 surrogate \ufffe", "lone surrogate"),
    ("\u000b\u000c", None),
])
def test_control_characters_are_stripped_from_the_summary(raw: str, spoken: str | None
                                                          ) -> None:
    assert parse(make_request(summary=raw)).summary == spoken


def test_the_callers_transfer_id_is_never_taken() -> None:
    req = parse(make_request(transfer_id="tr_someone_elses"))
    assert req.transfer_id != "tr_someone_elses" and req.transfer_id.startswith("tr_")
    # A worker passes the id its producer gave; anything not of our form is refused.
    assert parse_request(make_request(), DIRECTORY.get,
                         transfer_id="tr_0123abcd").transfer_id == "tr_0123abcd"
    for bad in ("x" * 5000, "tr_" + "a" * 98, "tr_a/b", "tr_a?b=c", "other"):
        with pytest.raises(RequestError) as info:
            parse_request(make_request(), DIRECTORY.get, transfer_id=bad)
        assert info.value.code.value == "invalid_request"


@pytest.mark.parametrize(("field", "value", "code"), [
    ("lead_id", "L" * 101, "invalid_lead_id"),
    ("lead_id", "L\u000b1", "invalid_lead_id"),
    ("call_id", "C" * 101, "invalid_call_id"),
    ("call_id", "CA\n1", "invalid_call_id"),
])
def test_ids_are_length_capped(field: str, value: str, code: str) -> None:
    assert code_of({**make_request(), field: value}) == code
    assert parse({**make_request(), field: value[:1] * 100})  # 100 is fine


def _sip_request(provider: str = "twilio", **configurations: Any) -> dict[str, Any]:
    raw = make_request(provider=provider, transfer_number=None)
    raw["template"]["configurations"] = {"transfer_numbers": [
        "SIP:Alice@PBX.Example.com", "+14155550102"], **configurations}
    return raw


def test_a_sip_destination_goes_only_to_an_allowed_host() -> None:
    raw = _sip_request(sip_headers={"X-Queue": "billing"})
    with pytest.raises(RequestError) as err:
        parse(raw)  # no SIP host allowed by default
    assert err.value.code == "destination_not_allowed"
    assert "sip:A***@pbx.example.com" in str(err.value.detail)
    req = parse_request(raw, lambda _id: "+14155550199",
                        allowed_sip_domains="pbx.example.com")
    assert req.destinations == ("sip:Alice@pbx.example.com", "+14155550102")
    assert req.sip_headers == (("X-Queue", "billing"),)
    assert parse_request(raw, lambda _id: "+14155550199",
                         allowed_sip_domains="*.example.com").destinations[0].startswith("sip:")
    for other in ("example.com", "pbx.example.com.evil.test", "*.pbx.example.com"):
        with pytest.raises(RequestError) as err:
            parse_request(raw, lambda _id: "+14155550199", allowed_sip_domains=other)
        assert err.value.code == "destination_not_allowed"


def test_a_sip_destination_is_a_bare_uri_and_its_headers_are_safe() -> None:
    def code(raw: dict[str, Any]) -> str:
        with pytest.raises(RequestError) as err:
            parse_request(raw, lambda _id: "+14155550199", allowed_sip_domains="*")
        return err.value.code.value

    for bad in ("sip:alice@pbx.example.com;transport=tcp", "sip:alice@pbx.example.com?X-A=1",
                "sip:@pbx.example.com", "sip:alice@10.0.0.1", "sips:alice@pbx.example.com",
                "sip:ali ce@pbx.example.com"):
        raw = _sip_request()
        raw["template"]["configurations"]["transfer_numbers"][0] = bad
        assert code(raw) == "invalid_transfer_number", bad
    for headers in ({"Queue": "x"}, {"X-Twilio-Foo": "x"}, {"X-Lead-Id": "x"},
                    {"X-A": "line\r\nInjected: 1"}, {"X-A": "x" * 101}, {"X-A b": "x"},
                    {f"X-H{i}": "x" for i in range(6)}, ["X-A"]):
        assert code(_sip_request(sip_headers=headers)) == "invalid_policy", headers
    # Refused where the provider (or its handoff) does not dial SIP.
    assert code(_sip_request("exotel")) == "unsupported_policy"
    assert code(_sip_request("plivo", handoff="agent_first")) == "unsupported_policy"
    # Without a SIP destination the static headers are not kept.
    plain = make_request(provider="twilio")
    plain["template"]["configurations"]["sip_headers"] = {"X-Queue": "billing"}
    assert parse(plain).sip_headers == ()


def test_a_ring_group_is_one_destination_of_several_numbers() -> None:
    raw = make_request(provider="plivo", transfer_number=None)
    raw["template"]["configurations"] = {"transfer_numbers": [
        {"group": ["+14155550101", "+1 (415) 555-0102"], "ring_timeout": 20}, "+14155550103"]}
    req = parse(raw)
    assert req.destinations == ("+14155550101,+14155550102", "+14155550103")
    assert req.transfer_number == "+14155550101,+14155550102"
    assert req.ring_timeouts == (20, 0)

    def code(group: Any, provider: str = "plivo", **more: Any) -> str:
        bad = make_request(provider=provider, transfer_number=None)
        bad["template"]["configurations"] = {"transfer_numbers": [
            {"group": group, **more}], **more.pop("config", {})}
        return code_of(bad)

    assert code(["+14155550101"]) == "invalid_transfer_number"  # a group of one
    assert code([f"+141555501{i:02}" for i in range(11)]) == "invalid_transfer_number"
    assert code(["+14155550101", "+14155550101"]) == "invalid_transfer_number"
    assert code(["+14155550101", "not a number"]) == "invalid_transfer_number"
    assert code(["+14155550101", "+442079460000"]) == "destination_not_allowed"
    assert code(["+14155550101", "+14155550102"], extension="12") == "invalid_policy"
    assert code(["+14155550101", "+14155550102"], "exotel") == "unsupported_policy"
    screened = make_request(provider="twilio", transfer_number=None)
    screened["template"]["configurations"] = {
        "screening": True, "transfer_numbers": [{"group": ["+14155550101", "+14155550102"]}]}
    assert code_of(screened) == "unsupported_policy"  # Twilio's gate is not the prompt
    screened["provider"] = "plivo"
    assert parse(screened).screening  # Plivo's confirmKey: the one who presses is bridged
    agent_first = make_request(provider="plivo", transfer_number=None)
    agent_first["template"]["configurations"] = {
        "handoff": "agent_first",
        "transfer_numbers": [{"group": ["+14155550101", "+14155550102"]}]}
    assert code_of(agent_first) == "unsupported_policy"
