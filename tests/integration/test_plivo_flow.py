"""The Plivo handoff end to end: real Redis, real worker, webhooks over HTTP, the sandbox
standing in for Plivo (transfer API, XML fetches, V3-signed callbacks)."""

from __future__ import annotations

import time
import uuid

import pytest
import requests

from tests.helpers import fictional_number, make_request, unique_lead
from tests.integration.conftest import Stack

OUTBOUND = "+14155550199"


def _request(stack: Stack, fate: str) -> tuple[str, str, str]:
    lead = unique_lead()
    call_id = stack.customer_call(lead, provider="plivo")
    number = fictional_number()
    stack.sandbox.set_fate(number, fate)
    result = stack.client.connect_to_live_agent(make_request(
        lead_id=lead, call_id=call_id, transfer_number=number, outbound_number=OUTBOUND,
        provider="plivo"))
    assert result["status"] == "transfer_requested"
    return lead, call_id, str(result["transfer_id"])


def _resume_url(stack: Stack) -> str:
    return stack.settings.plivo_resume_url


def test_success(stack: Stack) -> None:
    lead, call_id, tid = _request(stack, "answer")
    event = stack.terminal(tid)
    assert (event["type"], event["action"]) == ("transfer.succeeded", "end_conversation")
    kinds = [e["type"] for e in stack.events_for(lead)]
    # Both, once each (their order is the order two worker processes publish them in).
    assert sorted(kinds) == sorted(["transfer.disconnect_ai", "transfer.succeeded"])
    [api] = stack.sandbox.api_requests(f"/Call/{call_id}/")
    assert api.json["legs"] == "aleg" and "/plivo/dial-up?" in api.json["aleg_url"]
    call = stack.sandbox.calls[call_id]
    assert call.redirects == []  # never sent back
    assert stack.store.get_flag(lead) is None
    stack.sandbox.hangup(call_id)
    ended = stack.events.wait(lambda e: e["lead_id"] == lead and e["type"] == "call.ended")
    assert ended["transferred"] is True


def test_no_answer_sends_customer_back_to_the_ai(stack: Stack) -> None:
    lead, call_id, tid = _request(stack, "no-answer:0.3")
    event = stack.terminal(tid)
    assert (event["reason"], event["action"]) == ("no_answer", "resume")
    deadline = time.monotonic() + 5
    while _resume_url(stack) not in stack.sandbox.calls[call_id].redirects:
        assert time.monotonic() < deadline, "customer was not redirected to the AI"
        time.sleep(0.05)
    assert stack.sandbox.calls[call_id].status == "in-progress"  # not hung up
    time.sleep(0.3)
    assert stack.terminal_count(tid) == 1
    assert stack.store.get_flag(lead) is None


def test_busy(stack: Stack) -> None:
    _, _, tid = _request(stack, "busy")
    event = stack.terminal(tid)
    assert event["reason"] == "busy"
    # The Dial action's DialHangupCause beside our reason (Plivo gives no SIP code).
    assert (event["sip_code"], event["provider_cause"]) == (None, "USER_BUSY")


def test_dial_up_after_the_flag_expired(stack: Stack) -> None:
    lead, call_id, tid = _request(stack, "ignore")
    deadline = time.monotonic() + 5
    while stack.store.get_transfer(tid)["state"] != "dialing":  # type: ignore[index]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    stack.store.r.delete(f"transfer:{lead}")  # the flag expires
    call = stack.sandbox.calls[call_id]
    stack.sandbox.plivo.fetch(call, f"{stack.settings.public_base_url}/plivo/dial-up"
                                    f"?transfer_id={tid}")
    assert call.redirects == [_resume_url(stack)]
    event = stack.terminal(tid)
    assert (event["reason"], event["action"]) == ("timeout", "resume")


def test_bad_and_replayed_signatures(stack: Stack) -> None:
    _, _, tid = _request(stack, "answer-after:1.5")
    url = f"{stack.settings.public_base_url}/plivo/dial-action?transfer_id={tid}"
    params = {"DialStatus": "busy", "DialALegUUID": "x"}
    assert requests.post(url, data=params, timeout=5).status_code == 403
    wrong = {"X-Plivo-Signature-V3": "bm9wZQ==", "X-Plivo-Signature-V3-Nonce": "n1"}
    assert requests.post(url, data=params, headers=wrong, timeout=5).status_code == 403
    # A callback captured on its way (here: a status-only Event) replayed with its nonce.
    cb = f"{stack.settings.public_base_url}/plivo/dial-callback?transfer_id={tid}"
    note = {"Event": "DialHangup", "DialBLegUUID": "x"}
    nonce = uuid.uuid4().hex
    headers = {"X-Plivo-Signature-V3": stack.sandbox.plivo.sign("POST", cb, note, nonce),
               "X-Plivo-Signature-V3-Nonce": nonce}
    assert requests.post(cb, data=note, headers=headers, timeout=5).status_code == 200
    assert requests.post(cb, data=note, headers=headers, timeout=5).status_code == 403
    assert stack.terminal(tid)["type"] == "transfer.succeeded"  # the forged busy did nothing


def test_duplicate_callbacks_one_outcome(stack: Stack) -> None:
    stack.sandbox.repeat_callbacks = 2
    lead, call_id, tid = _request(stack, "answer-after:0.2")
    assert stack.terminal(tid)["type"] == "transfer.succeeded"
    stack.sandbox.plivo.human_hangs_up(stack.sandbox.calls[call_id])
    stack.events.wait(lambda e: e["lead_id"] == lead and e["type"] == "call.ended")
    time.sleep(0.5)
    assert stack.terminal_count(tid) == 1
    assert len([e for e in stack.events_for(lead) if e["type"] == "call.ended"]) == 1
    assert len([e for e in stack.events_for(lead)
                if e["type"] == "transfer.disconnect_ai"]) == 1


# With screening, a transfer succeeds once the human's leg has outlived confirmTimeout
# (which includes the briefing's speech): these tests take that long. The shortest
# screening timeout keeps them short.
SCREENING_TIMEOUT = 3
SCREENED_WAIT = 60.0


def _screened(stack: Stack, fate: str, summary: str = "Customer wants to change a delivery "
              "address") -> tuple[str, str, str]:
    lead = unique_lead()
    call_id = stack.customer_call(lead, provider="plivo")
    number = fictional_number()
    stack.sandbox.set_fate(number, fate)
    request = make_request(lead_id=lead, call_id=call_id, transfer_number=number,
                           outbound_number=OUTBOUND, provider="plivo", summary=summary)
    request["template"]["configurations"].update(screening=True,
                                                 screening_timeout=SCREENING_TIMEOUT)
    result = stack.client.connect_to_live_agent(request)
    return lead, number, str(result["transfer_id"])


def _human_leg(stack: Stack, number: str) -> object:
    return next(c for c in stack.sandbox.calls.values() if c.to == number)


def test_briefing_then_screening_accepted(stack: Stack) -> None:
    _, number, tid = _screened(stack, "answer")
    assert stack.terminal(tid, timeout=SCREENED_WAIT)["type"] == "transfer.succeeded"
    human = _human_leg(stack, number)
    assert human.spoken == [  # type: ignore[attr-defined]
        "Incoming transfer. Note from the AI assistant: Customer wants to change a delivery "
        "address", "Press 1 to take the call."]


def test_long_briefing_then_key_within_the_screening_timeout_is_success(stack: Stack) -> None:
    # Plivo's confirmTimeout starts at the answer: a long briefing eats into it. The human
    # presses 2 s after the prompt (inside the 3 s screening timeout), once the sandbox has
    # spoken all of it at 150 words a minute (about 16 s here).
    summary = ("Customer wants to move the delivery of order 5521 from Tuesday to Friday "
               "afternoon and asks whether the courier can leave it with the neighbour.")
    number = fictional_number()
    stack.sandbox.plivo.set_press_delay(number, 2.0)
    lead = unique_lead()
    call_id = stack.customer_call(lead, provider="plivo")
    stack.sandbox.set_fate(number, "answer")
    request = make_request(lead_id=lead, call_id=call_id, transfer_number=number,
                           outbound_number=OUTBOUND, provider="plivo", summary=summary)
    request["template"]["configurations"].update(screening=True,
                                                 screening_timeout=SCREENING_TIMEOUT)
    tid = str(stack.client.connect_to_live_agent(request)["transfer_id"])
    event = stack.terminal(tid, timeout=SCREENED_WAIT)
    assert event["type"] == "transfer.succeeded", event
    human = _human_leg(stack, number)
    assert human.spoken[0].endswith(summary)  # type: ignore[attr-defined]
    assert stack.sandbox.calls[call_id].redirects == []  # never sent back to the AI
    assert stack.sandbox.calls[call_id].dial["bridged"] == "1"  # type: ignore[index]


def test_screening_declined_sends_customer_back(stack: Stack) -> None:
    _, number, tid = _screened(stack, "decline")
    event = stack.terminal(tid, timeout=SCREENED_WAIT)
    assert (event["reason"], event["action"]) == ("declined", "resume")
    assert _human_leg(stack, number).spoken  # type: ignore[attr-defined]


def _fallback(stack: Stack, fates: list[str], screening: bool = False) -> tuple[str, list[str],
                                                                                str, str]:
    lead = unique_lead()
    call_id = stack.customer_call(lead, provider="plivo")
    numbers = [fictional_number() for _ in fates]
    for number, fate in zip(numbers, fates, strict=True):
        stack.sandbox.set_fate(number, fate)
    request = make_request(lead_id=lead, call_id=call_id, transfer_number=None,
                           outbound_number=OUTBOUND, provider="plivo", summary="Billing")
    request["template"]["configurations"] = {"transfer_numbers": numbers,
                                             "screening": screening,
                                             "screening_timeout": SCREENING_TIMEOUT}
    result = stack.client.connect_to_live_agent(request)
    assert result["status"] == "transfer_requested", result
    return lead, numbers, call_id, str(result["transfer_id"])


def test_first_destination_busy_then_second_answers(stack: Stack) -> None:
    _, numbers, call_id, tid = _fallback(stack, ["busy", "answer"])
    event = stack.terminal(tid)
    assert event["type"] == "transfer.succeeded"
    dialed = [c.to for c in stack.sandbox.calls.values() if c.to in numbers]
    assert dialed == numbers  # one after the other
    assert stack.sandbox.calls[call_id].redirects == []  # never sent back in between
    notes = [e["note"] for e in stack.store.timeline(tid)]
    assert "destination 1 busy" in notes
    assert stack.terminal_count(tid) == 1


def test_screening_declined_then_fallback_answers(stack: Stack) -> None:
    _, numbers, _, tid = _fallback(stack, ["decline", "answer"], screening=True)
    assert stack.terminal(tid, timeout=SCREENED_WAIT)["type"] == "transfer.succeeded"
    first = next(c for c in stack.sandbox.calls.values() if c.to == numbers[0])
    assert first.spoken == ["Incoming transfer. Note from the AI assistant: Billing",
                            "Press 1 to take the call."]


def test_every_destination_unreached_resumes_the_ai(stack: Stack) -> None:
    _, _, call_id, tid = _fallback(stack, ["busy", "no-answer:0.2"])
    event = stack.terminal(tid)
    assert (event["reason"], event["action"]) == ("no_answer", "resume")
    deadline = time.monotonic() + 5
    while not stack.sandbox.calls[call_id].redirects:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_fallback_success_event_names_the_destination(stack: Stack) -> None:
    _, _, _, tid = _fallback(stack, ["no-answer:0.1", "busy", "answer"])
    event = stack.terminal(tid)
    assert event["destination_index"] == 2
    assert [a["outcome"] for a in event["attempts"]] == ["no_answer", "busy", "answered"]
    assert [a["provider_cause"] for a in event["attempts"]] == ["NO_ANSWER", "USER_BUSY", None]


def test_customer_caller_id_and_hold_audio(stack: Stack) -> None:
    lead = unique_lead()
    call_id = stack.customer_call(lead, provider="plivo")
    number, customer = fictional_number(), fictional_number()
    stack.sandbox.set_fate(number, "answer-after:0.3")
    request = make_request(lead_id=lead, call_id=call_id, transfer_number=number,
                           outbound_number=OUTBOUND, provider="plivo")
    request["template"]["configurations"].update(
        caller_id="customer", hold_audio="https://cdn.example.com/hold.mp3")
    request["lead"]["phone_number"] = customer
    result = stack.client.connect_to_live_agent(request)
    assert stack.terminal(str(result["transfer_id"]))["type"] == "transfer.succeeded"
    human = next(c for c in stack.sandbox.calls.values() if c.to == number)
    assert human.from_ == customer  # the human saw the customer's number
    # While it rang, the customer heard the template's audio (fetched from /plivo/hold).
    assert stack.sandbox.calls[call_id].held == ["play https://cdn.example.com/hold.mp3"]


def test_default_hold_is_ringing_never_silence(stack: Stack) -> None:
    _, _, call_id, tid = _fallback(stack, ["busy", "answer"])
    assert stack.terminal(tid)["type"] == "transfer.succeeded"
    assert stack.sandbox.calls[call_id].held == ["real", "real"]  # each Dial rang


@pytest.mark.parametrize("provider", ["plivo", "exotel"])
def test_outside_hours_nothing_is_dialed(stack: Stack, provider: str) -> None:
    from datetime import UTC, datetime

    from shared.hours import DAYS

    other_day = DAYS[(datetime.now(UTC).weekday() + 3) % 7]  # never today
    lead = unique_lead()
    call_id = stack.customer_call(lead, provider=provider)
    request = make_request(lead_id=lead, call_id=call_id, transfer_number=fictional_number(),
                           outbound_number=OUTBOUND, provider=provider)
    request["template"]["configurations"]["hours"] = {
        "timezone": "Asia/Kolkata", "weekly": {other_day: ["09:00-17:00"]}}
    result = stack.client.connect_to_live_agent(request)
    assert (result["status"], result["error"]) == ("error", "outside_hours")
    assert "call back" in result["message"]
    time.sleep(0.3)
    assert stack.sandbox.api_requests(call_id) == []
    assert stack.events_for(lead) == []


def test_screening_keeps_a_voicemail_from_taking_the_call(stack: Stack) -> None:
    *_, tid = _fallback(stack, ["machine", "answer"], screening=True)
    event = stack.terminal(tid, timeout=SCREENED_WAIT)
    assert event["type"] == "transfer.succeeded" and event["destination_index"] == 1
    assert [a["outcome"] for a in event["attempts"]] == ["declined", "answered"]


def test_without_screening_a_voicemail_takes_the_call(stack: Stack) -> None:
    # Why the refusal of voicemail_detection on Plivo points at screening.
    _, _, _, tid = _fallback(stack, ["machine", "answer"])
    event = stack.terminal(tid)
    assert event["type"] == "transfer.succeeded" and event["destination_index"] == 0


def test_screening_key_from_the_template(stack: Stack) -> None:
    lead = unique_lead()
    call_id = stack.customer_call(lead, provider="plivo")
    wrong, right = fictional_number(), fictional_number()
    for number, key in ((wrong, "1"), (right, "5")):
        stack.sandbox.set_fate(number, "answer")
        stack.sandbox.set_key(number, key)
    request = make_request(lead_id=lead, call_id=call_id, transfer_number=None,
                           outbound_number=OUTBOUND, provider="plivo")
    request["template"]["configurations"] = {"transfer_numbers": [wrong, right],
                                             "screening": True, "screening_key": "5",
                                             "screening_timeout": SCREENING_TIMEOUT}
    result = stack.client.connect_to_live_agent(request)
    event = stack.terminal(str(result["transfer_id"]), timeout=SCREENED_WAIT)
    assert [a["outcome"] for a in event["attempts"]] == ["declined", "answered"]
    human = next(c for c in stack.sandbox.calls.values() if c.to == right)
    assert human.spoken[-1] == "Press 5 to take the call."


def test_key_pressed_after_the_confirm_timeout_is_declined(stack: Stack) -> None:
    # The other side of the sandbox's clock: a human who presses long after the prompt is
    # dropped by Plivo at confirmTimeout, and the customer goes back to the AI.
    number = fictional_number()
    stack.sandbox.plivo.set_press_delay(number, 120.0)
    lead = unique_lead()
    call_id = stack.customer_call(lead, provider="plivo")
    stack.sandbox.set_fate(number, "answer")
    request = make_request(lead_id=lead, call_id=call_id, transfer_number=number,
                           outbound_number=OUTBOUND, provider="plivo", summary="Billing")
    request["template"]["configurations"].update(screening=True,
                                                 screening_timeout=SCREENING_TIMEOUT)
    tid = str(stack.client.connect_to_live_agent(request)["transfer_id"])
    event = stack.terminal(tid, timeout=SCREENED_WAIT)
    assert (event["type"], event["reason"], event["action"]) == (
        "transfer.failed", "declined", "resume")
    deadline = time.monotonic() + 5
    while _resume_url(stack) not in stack.sandbox.calls[call_id].redirects:
        assert time.monotonic() < deadline, "customer was not sent back to the AI"
        time.sleep(0.05)
    assert _human_leg(stack, number).spoken[-1] == "Press 1 to take the call."  # type: ignore[attr-defined]


def test_a_sip_destination_is_dialed_as_a_user_with_the_summary_header(stack: Stack) -> None:
    lead = unique_lead()
    uri = f"sip:{lead}@pbx.example.com"
    stack.sandbox.set_fate(uri, "answer")
    call_id = stack.customer_call(lead, provider="plivo")
    request = make_request(lead_id=lead, provider="plivo", call_id=call_id,
                           transfer_number=None, outbound_number="+14155550199",
                           summary="Billing question, order 42")
    request["template"]["configurations"] = {"transfer_numbers": [uri]}
    result = stack.client.connect_to_live_agent(request)
    tid = str(result["transfer_id"])
    assert stack.terminal(tid)["type"] == "transfer.succeeded"
    with stack.sandbox.lock:
        human = next(c for c in stack.sandbox.calls.values() if c.to == uri)
    assert human.flow["sip_headers"] == {
        "X-PH-TransferId": tid, "X-PH-LeadId": lead,
        "X-PH-TransferSummary": "Billing question, order 42"}


def test_a_ring_group_the_second_member_answers_first_and_the_first_is_cancelled(
        stack: Stack) -> None:
    lead = unique_lead()
    members = [fictional_number(), fictional_number()]
    stack.sandbox.set_fate(members[0], "answer-after:1.5")
    stack.sandbox.set_fate(members[1], "answer-after:0.2")
    call_id = stack.customer_call(lead, provider="plivo")
    request = make_request(lead_id=lead, provider="plivo", call_id=call_id,
                           transfer_number=None, outbound_number=OUTBOUND)
    request["template"]["configurations"] = {"transfer_numbers": [{"group": members}]}
    result = stack.client.connect_to_live_agent(request)
    tid = str(result["transfer_id"])
    event = stack.terminal(tid)
    assert event["type"] == "transfer.succeeded"
    assert (event["destination_index"], event["destination_member"]) == (0, 1)
    assert event["attempts"][0]["member"] == 1
    with stack.sandbox.lock:
        legs = {c.to: c for c in stack.sandbox.calls.values() if c.to in members}
    # Rung at once; the second picked up first, the first's leg was hung up unanswered.
    assert (legs[members[1]].status, legs[members[0]].status) == ("in-progress", "canceled")
    time.sleep(0.3)
    assert stack.terminal_count(tid) == 1
