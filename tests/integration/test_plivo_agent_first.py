"""Plivo's agent-first handoff end to end: real Redis, real worker, webhooks over HTTP, the
sandbox standing in for Plivo (the Call API, the human's XML with GetDigits, Conference and
its callbacks, machine detection, V3-signed callbacks)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tests.helpers import fictional_number, make_request, unique_lead
from tests.integration.conftest import Stack

OUTBOUND = "+14155550199"
SUMMARY = "Wants to change the delivery address"


def _request(stack: Stack, fates: list[str], **config: Any) -> tuple[str, str, str,
                                                                     list[str]]:
    lead = unique_lead()
    call_id = stack.customer_call(lead, provider="plivo")
    numbers = [fictional_number() for _ in fates]
    for number, fate in zip(numbers, fates, strict=True):
        stack.sandbox.set_fate(number, fate)
    raw = make_request(lead_id=lead, call_id=call_id, transfer_number=numbers[0],
                       outbound_number=OUTBOUND, provider="plivo", summary=SUMMARY)
    raw["template"]["configurations"].update(handoff="agent_first", **config)
    if len(numbers) > 1:
        raw["template"]["configurations"]["transfer_numbers"] = numbers
    result = stack.client.connect_to_live_agent(raw)
    assert result["status"] == "transfer_requested", result
    return lead, call_id, str(result["transfer_id"]), numbers


def _until(pred: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Wait for something the stack does (a bound that only stops a hung test)."""
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _leg(stack: Stack, number: str) -> Any:
    [leg] = [c for c in stack.sandbox.calls.values() if c.to == number]
    return leg


def _customer_never_moved(stack: Stack, call_id: str) -> None:
    assert stack.sandbox.api_requests(f"/Call/{call_id}/") == []
    customer = stack.sandbox.calls[call_id]
    assert customer.status == "in-progress" and customer.redirects == []


def test_success_with_briefing_and_screening(stack: Stack) -> None:
    lead, call_id, tid, [number] = _request(stack, ["answer"], screening=True)
    event = stack.terminal(tid)
    assert event["type"] == "transfer.succeeded"
    kinds = [e["type"] for e in stack.events_for(lead)]
    assert kinds == ["transfer.succeeded"]  # no disconnect_ai: the AI kept the customer
    [create] = [r for r in stack.sandbox.api_requests("/Call/", method="POST")
                if (r.json or {}).get("to") == number]
    assert create.json["to"] == number and "/plivo/af-answer?" in create.json["answer_url"]
    leg = _leg(stack, number)
    assert leg.spoken[:2] == [f"Incoming transfer. Note from the AI assistant: {SUMMARY}",
                              "Press 1 to take the call."]
    [move] = stack.sandbox.api_requests(f"/Call/{call_id}/")
    assert "/plivo/af-join?" in move.json["aleg_url"]
    room = stack.sandbox.plivo.rooms[f"transfer-{tid}"]
    assert set(room["members"]) == {leg.sid, call_id}
    # A figure, not an assertion: from the key reaching us to the customer's enter callback
    # (the worker's bridge: conference enter of the human, calls.transfer, the join XML).
    with stack.sandbox.lock:
        mine = [d for d in stack.sandbox.deliveries if tid in d.url]
    accepted = min(d.at for d in mine if "/plivo/af-accept" in d.url
                   and d.params.get("Digits"))
    joined = min(d.at for d in mine if "/plivo/af-conference" in d.url
                 and d.params.get("CallUUID") == call_id
                 and d.params.get("ConferenceAction") == "enter")
    print(f"\nplivo agent first: key accepted -> customer joined "
          f"{1000 * (joined - accepted):.0f} ms")


def test_busy_then_the_next_answers(stack: Stack) -> None:
    _, _, tid, [first, second] = _request(stack, ["busy", "answer"])
    event = stack.terminal(tid)
    assert (event["type"], event["destination_index"]) == ("transfer.succeeded", 1)
    assert [a["outcome"] for a in event["attempts"]] == ["busy", "answered"]
    assert _leg(stack, first).status == "busy"
    assert _leg(stack, second).conference == f"plivo:transfer-{tid}"


def test_voicemail_is_not_bridged(stack: Stack) -> None:
    _, call_id, tid, _ = _request(stack, ["machine"], voicemail_detection=True)
    event = stack.terminal(tid)
    assert (event["type"], event["reason"]) == ("transfer.failed", "voicemail")
    _customer_never_moved(stack, call_id)
    assert stack.sandbox.plivo.rooms.get(f"transfer-{tid}") is None
    assert stack.terminal_count(tid) == 1


def test_decline(stack: Stack) -> None:
    _, call_id, tid, [number] = _request(stack, ["decline"], screening=True,
                                          screening_timeout=3)
    event = stack.terminal(tid)
    assert (event["type"], event["reason"]) == ("transfer.failed", "declined")
    _customer_never_moved(stack, call_id)
    assert _leg(stack, number).status == "completed"


def test_customer_hangs_up_while_the_human_rings(stack: Stack) -> None:
    _, call_id, tid, [number] = _request(stack, ["answer-after:30"])
    _until(lambda: (stack.store.get_transfer(tid) or {}).get("state") == "dialing",
           "the human's leg was not placed")
    stack.sandbox.hangup(call_id)
    event = stack.terminal(tid)
    assert (event["type"], event["reason"]) == ("transfer.failed", "customer_hung_up")
    _until(lambda: _leg(stack, number).status == "cancel", "the human's call rang on")
    assert stack.sandbox.api_requests("/Request/", method="DELETE") != []


def test_busy_and_no_more_destinations_leaves_the_customer_with_the_ai(stack: Stack) -> None:
    _, call_id, tid, [number] = _request(stack, ["busy"])
    event = stack.terminal(tid)
    assert (event["type"], event["reason"], event["action"]) == \
        ("transfer.failed", "busy", "resume")
    _customer_never_moved(stack, call_id)
    assert _leg(stack, number).status == "busy"


def test_fallback_with_every_callback_twice_and_shuffled(stack: Stack) -> None:
    stack.sandbox.repeat_callbacks = 2
    stack.sandbox.callback_jitter = 0.3
    try:
        _, _, tid, numbers = _request(stack, ["no-answer:0.2", "answer"],
                                            ring_timeout=5)
        event = stack.terminal(tid)
        assert (event["type"], event["destination_index"]) == ("transfer.succeeded", 1)
        # One leg per destination, whatever the duplicates.
        creates = stack.sandbox.api_requests("/Call/", method="POST")
        assert sorted(r.json["to"] for r in creates if (r.json or {}).get("to") in numbers) \
            == sorted(numbers)
        time.sleep(1.0)  # let the duplicates land: they change nothing
        assert stack.terminal_count(tid) == 1
    finally:
        stack.sandbox.callback_jitter = 0.0


def test_human_leaves_while_the_customer_is_moved(stack: Stack) -> None:
    """The bridging race: the human's leg ends just as Plivo accepts the customer's
    transfer, before the customer enters. The conference ended with the human
    (endConferenceOnExit); the customer, whose join XML started a new one alone, is
    taken back to the AI (the resume URL), never left alone nor hung up on."""
    _, call_id, tid, [number] = _request(stack, ["answer"])

    def human_leaves(call: Any) -> None:
        if call.sid == call_id:
            stack.sandbox._end_call(_leg(stack, number).sid, "completed")

    stack.sandbox.plivo.on_transfer = human_leaves
    event = stack.terminal(tid)
    assert (event["type"], event["reason"]) == ("transfer.failed", "agent_hung_up")
    customer = stack.sandbox.calls[call_id]
    resume = stack.settings.plivo_resume_url
    _until(lambda: resume in customer.redirects, "the customer was not sent back to the AI")
    assert customer.status == "in-progress"
    room = stack.sandbox.plivo.rooms.get(f"transfer-{tid}")
    assert room is None or call_id not in room["members"]
    time.sleep(0.5)  # a second move, or a second terminal event, would show by now
    assert stack.terminal_count(tid) == 1 and customer.status == "in-progress"
    print("\nbridging race:", [e["note"] for e in stack.store.timeline(tid)][-4:],
          customer.redirects[-2:])


def test_late_machine_verdict_on_a_bridged_call_changes_nothing(stack: Stack) -> None:
    """Plivo's machine_detection_url may be posted late: a verdict after the human was
    accepted and joined neither ends the bridged call nor makes a second terminal event."""
    _, call_id, tid, [number] = _request(stack, ["answer"], screening=True,
                                          voicemail_detection=True)
    event = stack.terminal(tid)
    assert event["type"] == "transfer.succeeded"
    [create] = [r for r in stack.sandbox.api_requests("/Call/", method="POST")
                if (r.json or {}).get("to") == number]
    assert create.json["machine_detection"] == "true"  # Plivo does not hang up by itself
    human = _leg(stack, number)
    status, _ = stack.sandbox.plivo.send(create.json["machine_detection_url"], {
        "CallUUID": human.sid, "Machine": "true", "IfMachine": "continue",
        "Event": "MachineDetection", "CallStatus": "in-progress", "Direction": "outbound"})
    assert status == 200
    _until(lambda: any("af-machine callback ignored" in e["note"]
                       for e in stack.store.timeline(tid)), "the verdict was not handled")
    assert stack.terminal_count(tid) == 1
    assert human.status == "in-progress" and stack.sandbox.calls[call_id].status == \
        "in-progress"
    assert set(stack.sandbox.plivo.rooms[f"transfer-{tid}"]["members"]) == {human.sid, call_id}
    assert stack.sandbox.api_requests(f"/Call/{human.sid}/", method="DELETE") == []
