"""The Telnyx Call Control handoff end to end: real Redis, real worker, webhooks over HTTP,
the sandbox standing in for Telnyx's API and signing its webhooks with Ed25519."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import requests

from tests.helpers import fictional_number, make_request, unique_lead
from tests.integration.conftest import Stack

OUTBOUND = "+14155550199"


def _customer_call(stack: Stack, lead: str) -> str:
    # The Call Control application's webhook URL (set in the portal) is ours.
    url = f"{stack.settings.public_base_url}/telnyx/webhook?lead_id={lead}"
    return stack.sandbox.create_customer_call(to="+14155550150", from_="+14155550151",
                                              provider="telnyx", status_callback=url)


def _transfer(stack: Stack, fates: list[str], **configurations: object
              ) -> tuple[str, str, list[str], str]:
    lead = unique_lead()
    call_id = _customer_call(stack, lead)
    numbers = [fictional_number() for _ in fates]
    for number, fate in zip(numbers, fates, strict=True):
        stack.sandbox.set_fate(number, fate)
    request = make_request(lead_id=lead, call_id=call_id, transfer_number=None,
                           outbound_number=OUTBOUND, provider="telnyx",
                           summary="Billing question")
    request["template"]["configurations"] = {"transfer_numbers": numbers, **configurations}
    result = stack.client.connect_to_live_agent(request)
    assert result["status"] == "transfer_requested", result
    return lead, call_id, numbers, str(result["transfer_id"])


def _leg(stack: Stack, number: str) -> Any:
    with stack.sandbox.lock:
        return next(c for c in stack.sandbox.calls.values() if c.to == number)


def _dials(stack: Stack) -> list[dict[str, Any]]:
    return [r.json for r in stack.sandbox.api_requests("/v2/calls", method="POST")
            if r.path == "/v2/calls"]


def _bridges(stack: Stack, call_id: str) -> list[Any]:
    return stack.sandbox.api_requests(f"/v2/calls/{call_id}/actions/bridge")


def test_success_briefs_the_human_then_bridges(stack: Stack) -> None:
    lead, call_id, [number], tid = _transfer(stack, ["answer"])
    event = stack.terminal(tid)
    assert event["type"] == "transfer.succeeded"
    assert (event["action"], event["provider"], event["call_id"]) == (
        "end_conversation", "telnyx", call_id)
    [dial] = [d for d in _dials(stack) if d["to"] == number]
    assert dial["from"] == OUTBOUND and dial["timeout_secs"] == stack.settings.transfer_ring_timeout
    assert "answering_machine_detection" not in dial
    state = json.loads(base64.b64decode(dial["client_state"]))
    assert state == {"wt": tid, "a": "0"}
    human = _leg(stack, number)
    # Briefed before the customer was bridged to them.
    assert human.spoken == ["Billing question"]
    [bridge] = _bridges(stack, call_id)
    assert bridge.json["call_control_id"] == human.sid
    speak = stack.sandbox.api_requests(f"/v2/calls/{human.sid}/actions/speak")[0]
    assert speak.at < bridge.at
    # The AI's media stream on the customer's call is stopped once bridged.
    [stop] = stack.sandbox.api_requests(f"/v2/calls/{call_id}/actions/streaming_stop")
    assert stop.at >= bridge.at
    assert stack.store.get_flag(lead) is None

    stack.sandbox.hangup(call_id)  # they talk, then the customer hangs up
    ended = stack.events.wait(lambda e: e["lead_id"] == lead and e["type"] == "call.ended")
    assert ended["transferred"] is True
    time.sleep(0.3)
    assert stack.terminal_count(tid) == 1


def test_busy_then_the_next_destination_answers(stack: Stack) -> None:
    _, call_id, numbers, tid = _transfer(stack, ["busy", "answer"])
    event = stack.terminal(tid)
    assert event["type"] == "transfer.succeeded" and event["destination_index"] == 1
    assert [a["outcome"] for a in event["attempts"]] == ["busy", "answered"]
    # call.hangup's causes beside our outcome.
    assert [(a["sip_code"], a["provider_cause"]) for a in event["attempts"]] == [
        (486, "user_busy"), (None, None)]
    assert [d["to"] for d in _dials(stack) if d["to"] in numbers] == numbers
    assert json.loads(base64.b64decode(_dials(stack)[-1]["client_state"]))["a"] == "1"
    [bridge] = _bridges(stack, call_id)
    assert bridge.json["call_control_id"] == _leg(stack, numbers[1]).sid


def test_voicemail_is_hung_up_and_never_bridged(stack: Stack) -> None:
    _, call_id, [number], tid = _transfer(stack, ["machine"], voicemail_detection=True)
    event = stack.terminal(tid)
    assert (event["type"], event["reason"], event["action"]) == (
        "transfer.failed", "voicemail", "resume")
    machine = _leg(stack, number)
    [dial] = [d for d in _dials(stack) if d["to"] == number]
    assert dial["answering_machine_detection"] == "detect"
    assert _bridges(stack, call_id) == []
    # call.answered came before the verdict (the sandbox's order): nothing was said to it.
    assert machine.spoken == []
    assert stack.sandbox.api_requests(f"/v2/calls/{machine.sid}/actions/hangup")
    assert _wait(lambda: machine.status == "completed")
    # The customer stays with the AI: their call is untouched.
    assert stack.sandbox.calls[call_id].status == "in-progress"


def test_screening_declined_resumes_the_ai(stack: Stack) -> None:
    _, call_id, [number], tid = _transfer(stack, ["decline"], screening=True,
                                          screening_timeout=3)
    event = stack.terminal(tid, timeout=20)
    assert (event["reason"], event["action"]) == ("declined", "resume")
    human = _leg(stack, number)
    gather = stack.sandbox.api_requests(f"/v2/calls/{human.sid}/actions/gather_using_speak")
    assert gather[0].json["timeout_millis"] == 3000
    assert human.spoken == ["Billing question Press 1 to take the call."]
    assert _bridges(stack, call_id) == []
    assert stack.sandbox.api_requests(f"/v2/calls/{human.sid}/actions/hangup")


def test_screening_accepted_bridges(stack: Stack) -> None:
    _, call_id, _, tid = _transfer(stack, ["answer"], screening=True)
    assert stack.terminal(tid, timeout=20)["type"] == "transfer.succeeded"
    assert len(_bridges(stack, call_id)) == 1


def test_customer_hangs_up_while_the_human_rings(stack: Stack) -> None:
    lead, call_id, [number], tid = _transfer(stack, ["answer-after:30"])
    _wait_dialing(stack, tid)
    stack.sandbox.hangup(call_id)
    event = stack.terminal(tid)
    assert event["reason"] == "customer_hung_up"
    ended = stack.events.wait(lambda e: e["lead_id"] == lead and e["type"] == "call.ended")
    assert ended["transferred"] is False
    human = _leg(stack, number)
    assert stack.sandbox.api_requests(f"/v2/calls/{human.sid}/actions/hangup")
    assert _wait(lambda: human.status == "canceled")


def _wait(predicate: Any, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _wait_dialing(stack: Stack, tid: str) -> None:
    assert _wait(lambda: (stack.store.get_transfer(tid) or {}).get("state") == "dialing")


def test_unsigned_and_replayed_webhooks_are_refused(stack: Stack) -> None:
    url = f"{stack.settings.public_base_url}/telnyx/webhook"
    body = json.dumps({"data": {"record_type": "event", "event_type": "call.hangup",
                                "id": "evt-1", "payload": {"call_control_id": "v3:x"}}})
    assert requests.post(url, data=body, timeout=5).status_code == 403
    old = str(int(time.time()) - 600)
    signed = stack.sandbox.telnyx.sign(old, body.encode())
    resp = requests.post(url, data=body, timeout=5, headers={
        "telnyx-timestamp": old, "telnyx-signature-ed25519": signed})
    assert resp.status_code == 403  # outside the tolerance window


def test_every_webhook_delivered_twice_still_one_bridge_and_one_outcome(stack: Stack) -> None:
    stack.sandbox.repeat_callbacks = 2  # the same event id each time
    _, call_id, _, tid = _transfer(stack, ["busy", "answer"], voicemail_detection=True)
    event = stack.terminal(tid)
    assert event["type"] == "transfer.succeeded"
    assert [a["outcome"] for a in event["attempts"]] == ["busy", "answered"]
    assert len(_bridges(stack, call_id)) == 1
    assert len([d for d in _dials(stack) if d["client_state"]
                and json.loads(base64.b64decode(d["client_state"]))["wt"] == tid]) == 2
    time.sleep(0.5)
    assert stack.terminal_count(tid) == 1


def test_shuffled_webhooks_still_one_outcome(stack: Stack) -> None:
    # Telnyx "does not enforce the order in which webhooks are delivered" (receiving-webhooks).
    stack.sandbox.callback_jitter = 0.4
    try:
        _, call_id, _, tid = _transfer(stack, ["busy", "answer"], voicemail_detection=True)
        event = stack.terminal(tid, timeout=20)
    finally:
        stack.sandbox.callback_jitter = 0.0
    assert event["type"] == "transfer.succeeded", event
    assert len(_bridges(stack, call_id)) == 1
    time.sleep(0.5)
    assert stack.terminal_count(tid) == 1


def test_an_extension_is_sent_before_the_briefing(stack: Stack) -> None:
    lead = unique_lead()
    call_id = _customer_call(stack, lead)
    number = fictional_number()
    stack.sandbox.set_fate(number, "answer")
    request = make_request(lead_id=lead, call_id=call_id, transfer_number=None,
                           outbound_number=OUTBOUND, provider="telnyx",
                           summary="Billing question")
    request["template"]["configurations"] = {"transfer_numbers": [
        {"number": number, "extension": "w1234#"}]}
    result = stack.client.connect_to_live_agent(request)
    event = stack.terminal(str(result["transfer_id"]))
    assert event["type"] == "transfer.succeeded"
    human = _leg(stack, number)
    # The sandbox marks speech that starts while the tones still play: none here.
    assert human.spoken == ["[dtmf w1234#]", "Billing question"]
    [dtmf] = stack.sandbox.api_requests(f"/v2/calls/{human.sid}/actions/send_dtmf")
    [speak] = stack.sandbox.api_requests(f"/v2/calls/{human.sid}/actions/speak")
    [bridge] = _bridges(stack, call_id)
    assert dtmf.json["digits"] == "w1234#" and dtmf.at < speak.at < bridge.at


def test_a_sip_destination_receives_the_context_headers(stack: Stack) -> None:
    lead = unique_lead()
    call_id = _customer_call(stack, lead)
    uri = f"sip:{lead}@pbx.example.com"
    stack.sandbox.set_fate(uri, "answer")
    request = make_request(lead_id=lead, call_id=call_id, transfer_number=None,
                           outbound_number=OUTBOUND, provider="telnyx",
                           summary="Billing question")
    request["template"]["configurations"] = {"transfer_numbers": [uri]}
    result = stack.client.connect_to_live_agent(request)
    tid = str(result["transfer_id"])
    assert stack.terminal(tid)["type"] == "transfer.succeeded"
    human = _leg(stack, uri)
    assert human.flow["sip_headers"] == {"X-Transfer-Id": tid, "X-Lead-Id": lead,
                                         "X-Transfer-Summary": "Billing question"}


def test_a_ring_group_the_second_member_answers_first_and_the_first_is_hung_up(
        stack: Stack) -> None:
    lead = unique_lead()
    call_id = _customer_call(stack, lead)
    members = [fictional_number(), fictional_number()]
    stack.sandbox.set_fate(members[0], "answer-after:2")
    stack.sandbox.set_fate(members[1], "answer-after:0.3")
    request = make_request(lead_id=lead, call_id=call_id, transfer_number=None,
                           outbound_number=OUTBOUND, provider="telnyx",
                           summary="Billing question")
    request["template"]["configurations"] = {"transfer_numbers": [{"group": members}]}
    result = stack.client.connect_to_live_agent(request)
    tid = str(result["transfer_id"])
    event = stack.terminal(tid)
    assert event["type"] == "transfer.succeeded"
    assert (event["destination_index"], event["destination_member"]) == (0, 1)
    first, second = _leg(stack, members[0]), _leg(stack, members[1])
    [bridge] = _bridges(stack, call_id)
    assert bridge.json["call_control_id"] == second.sid
    assert second.spoken == ["Billing question"] and first.spoken == []
    # The first member's leg was hung up while it still rang.
    [hangup] = stack.sandbox.api_requests(f"/v2/calls/{first.sid}/actions/hangup")
    assert hangup.at < bridge.at and first.status == "canceled"
    time.sleep(0.5)
    assert stack.terminal_count(tid) == 1
