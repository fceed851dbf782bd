"""The Exotel applet bridge end to end: the platform closes the AI's stream when told, the
sandbox's flow asks /exotel/dial-up whom to dial, dials, and reports by status callback (or
not at all, and the call details API tells)."""

from __future__ import annotations

import time

import requests

from tests.helpers import make_request, unique_lead
from tests.integration.conftest import DEADLINE_MARGIN, RING_TIMEOUT, Stack

AGENT_BASE = 919999900100


def _agent(n: int) -> str:
    return f"+{AGENT_BASE + n}"


def _request(stack: Stack, fate: str, n: int, **flow: str | None) -> tuple[str, str, str]:
    lead = unique_lead()
    call_id = stack.customer_call(lead, provider="exotel", **flow)
    number = _agent(n)
    stack.sandbox.set_fate(number, fate)
    result = stack.client.connect_to_live_agent(make_request(
        lead_id=lead, call_id=call_id, transfer_number=number, outbound_number="+919999900001",
        provider="exotel"))
    assert result["status"] == "transfer_requested", result
    return lead, call_id, str(result["transfer_id"])


def _inbound_call(stack: Stack, **flow: str) -> str:
    """A customer who called in to the README's flow: no StatusCallback (Exotel documents it
    for API calls only), a Passthru after Connect."""
    base, token = stack.settings.public_base_url, stack.settings.exotel_webhook_token
    return stack.sandbox.create_customer_call(
        to="+919999900009", from_="+919999900008", provider="exotel", status_callback=None,
        dial_whom_url=f"{base}/exotel/dial-up?token={token}",
        passthru_url=f"{base}/exotel/passthru?token={token}", **flow)


def _wait(pred: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def test_success_reported_by_the_status_callback(stack: Stack) -> None:
    lead, call_id, tid = _request(stack, "answer", 1)
    call = stack.sandbox.calls[call_id]
    _wait(lambda: call.flow.get("leg2") == "in-progress")
    assert call.flow["dial_up"]["get"] == 200 and call.flow["dial_up"]["head"] == 200
    assert call.flow["dialed"] == _agent(1)
    kinds = [e["type"] for e in stack.events_for(lead)]
    assert kinds == ["transfer.disconnect_ai"]  # the AI was told to leave first
    stack.sandbox.hangup(call_id)  # the conversation with the human ends
    event = stack.terminal(tid)
    assert (event["type"], event["action"]) == ("transfer.succeeded", "end_conversation")
    ended = stack.events.wait(lambda e: e["lead_id"] == lead and e["type"] == "call.ended")
    assert ended["transferred"] is True
    assert stack.store.get_flag(lead) is None


def test_success_with_json_status_callback(stack: Stack) -> None:
    _, call_id, tid = _request(stack, "answer", 2, status_format="json")
    call = stack.sandbox.calls[call_id]
    _wait(lambda: call.flow.get("leg2") == "in-progress")
    stack.sandbox.hangup(call_id)
    assert stack.terminal(tid)["type"] == "transfer.succeeded"


def test_no_answer(stack: Stack) -> None:
    _, _, tid = _request(stack, "no-answer:0.3", 3)
    event = stack.terminal(tid)
    assert (event["reason"], event["action"]) == ("no_answer", "resume")


def test_busy_told_by_the_status_callback_of_an_api_call(stack: Stack) -> None:
    # A Passthru's CallType "incomplete" does not say why; the StatusCallback's leg 2 does.
    _, call_id, tid = _request(stack, "busy", 4, passthru_url=None)
    call = stack.sandbox.calls[call_id]
    _wait(lambda: call.flow.get("leg2") == "busy")
    assert call.status == "in-progress"  # back with the AI
    stack.sandbox.hangup(call_id)
    assert stack.terminal(tid)["reason"] == "busy"


def test_dial_up_with_wrong_or_missing_token(stack: Stack) -> None:
    _, call_id, tid = _request(stack, "ignore", 5)
    base = stack.settings.public_base_url
    for query in (f"CallSid={call_id}", f"token=guess&CallSid={call_id}"):
        assert requests.get(f"{base}/exotel/dial-up?{query}", timeout=5).status_code == 403
        assert requests.head(f"{base}/exotel/dial-up?{query}", timeout=5).status_code == 403
    assert requests.post(f"{base}/exotel/status?token=guess", timeout=5,
                         data={"CallSid": call_id, "Status": "busy"}).status_code == 403
    time.sleep(0.3)
    assert stack.terminal_count(tid) == 0  # nothing was acted on


def test_dial_up_after_the_flag_expired(stack: Stack) -> None:
    lead, call_id, tid = _request(stack, "ignore", 6)
    _wait(lambda: "dial_up" in stack.sandbox.calls[call_id].flow)
    stack.store.r.delete(f"transfer:{lead}")
    url = (f"{stack.settings.public_base_url}/exotel/dial-up?"
           f"token={stack.settings.exotel_webhook_token}&CallSid={call_id}")
    assert requests.get(url, timeout=5).status_code == 404
    event = stack.terminal(tid)
    assert (event["reason"], event["action"]) == ("timeout", "resume")


def test_lost_status_callback_recovered_through_call_details(stack: Stack) -> None:
    stack.sandbox.exotel.drop_status_callbacks = True
    try:
        _, call_id, tid = _request(stack, "answer", 7)
        call = stack.sandbox.calls[call_id]
        _wait(lambda: call.flow.get("leg2") == "in-progress")
        # No callback will come; the deadline asks the call details API.
        event = stack.terminal(tid, timeout=RING_TIMEOUT + DEADLINE_MARGIN + 5)
        assert event["type"] == "transfer.succeeded"
        details = stack.sandbox.api_requests(f"/Calls/{call_id}.json", method="GET")
        assert details, "the call details API was not asked"
        assert any("reconciled" in e["note"] for e in stack.store.timeline(tid))
    finally:
        stack.sandbox.exotel.drop_status_callbacks = False


def test_inbound_call_reports_through_the_passthru_and_returns_to_the_ai(stack: Stack
                                                                        ) -> None:
    # A customer who called in: no StatusCallback exists for such a call (Exotel documents it
    # for API calls only); the Passthru after Connect says how it went.
    lead = unique_lead()
    call_id = _inbound_call(stack)
    stack.sandbox.set_fate(_agent(50), "busy")
    result = stack.client.connect_to_live_agent(make_request(
        lead_id=lead, call_id=call_id, transfer_number=_agent(50),
        outbound_number="+919999900001", provider="exotel"))
    event = stack.terminal(str(result["transfer_id"]))
    assert (event["type"], event["reason"], event["action"]) == (
        "transfer.failed", "no_answer", "resume")  # CallType "incomplete" names no cause
    call = stack.sandbox.calls[call_id]
    assert call.flow["back_to_ai"] and call.status == "in-progress"  # not hung up
    assert call.flow["dial_up"]["type"].startswith("text/plain")


def test_programmable_connect_goes_down_the_list_and_names_the_destination(stack: Stack
                                                                           ) -> None:
    # The dynamic URL (Exotel-Version header) gets JSON with both destinations; the second
    # answers; the human hangs up first, so the Passthru names it, in national format.
    lead = unique_lead()
    call_id = _inbound_call(stack, connect_mode="programmable")
    numbers = [_agent(40), _agent(41)]
    stack.sandbox.set_fate(numbers[0], "busy")
    stack.sandbox.set_fate(numbers[1], "answer")
    request = make_request(lead_id=lead, call_id=call_id, transfer_number=None,
                           outbound_number="+919999900001", provider="exotel")
    request["template"]["configurations"] = {"transfer_numbers": numbers}
    result = stack.client.connect_to_live_agent(request)
    call = stack.sandbox.calls[call_id]
    _wait(lambda: call.flow.get("leg2") == "in-progress")
    assert call.flow["dial_up"]["type"] == "application/json"
    assert call.flow["tried"] == numbers  # Exotel's Connect went down the list in order
    stack.sandbox.exotel.human_hangs_up(call)
    event = stack.terminal(str(result["transfer_id"]))
    assert event["type"] == "transfer.succeeded"
    assert event["destination_index"] == 1
    assert [a["outcome"] for a in event["attempts"]] == ["not_answered", "answered"]
    passthru = [d for d in stack.sandbox.deliveries if "/exotel/passthru" in d.url]
    assert passthru[-1].params["DialWhomNumber"] == "0" + numbers[1][3:]


def test_dial_whom_url_dials_only_the_first_destination(stack: Stack) -> None:
    lead = unique_lead()
    call_id = stack.customer_call(lead, provider="exotel")
    numbers = [_agent(42), _agent(43)]
    stack.sandbox.set_fate(numbers[0], "no-answer:0.2")
    request = make_request(lead_id=lead, call_id=call_id, transfer_number=None,
                           outbound_number="+919999900001", provider="exotel")
    request["template"]["configurations"] = {"transfer_numbers": numbers}
    result = stack.client.connect_to_live_agent(request)
    event = stack.terminal(str(result["transfer_id"]))
    assert stack.sandbox.calls[call_id].flow["tried"] == numbers[:1]
    assert (event["reason"], [a["outcome"] for a in event["attempts"]]) == (
        "no_answer", ["no_answer"])
