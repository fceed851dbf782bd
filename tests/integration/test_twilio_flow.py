"""The Twilio Conference handoff end to end: real Redis, real worker, webhooks over HTTP,
the sandbox standing in for Twilio's API and signing its callbacks like Twilio."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import requests

from tests.helpers import fictional_number, make_request, unique_lead
from tests.integration.conftest import DEADLINE_MARGIN, RING_TIMEOUT, Stack
from tests.stack import ROOT, settings_env

OUTBOUND = "+14155550199"


def _request(stack: Stack, fate: str, **kw: object) -> tuple[str, str, str, dict[str, object]]:
    return stack.request_transfer(fate, outbound=OUTBOUND, **kw)


def _participant_requests(stack: Stack, lead: str) -> list[object]:
    return stack.sandbox.api_requests(f"/Conferences/transfer-{lead}/Participants.json")


def test_success_moves_customer_and_reports_once(stack: Stack) -> None:
    lead, call_id, number, result = _request(stack, "answer")
    assert result["status"] == "transfer_requested"
    tid = str(result["transfer_id"])
    event = stack.terminal(tid)
    assert event["type"] == "transfer.succeeded"
    assert event["action"] == "end_conversation"
    assert event["call_id"] == call_id and event["provider"] == "twilio"

    [dial] = _participant_requests(stack, lead)
    assert dial.value("To") == number and dial.value("From") == OUTBOUND  # type: ignore[attr-defined]
    [move] = stack.sandbox.api_requests(f"/Calls/{call_id}.json")
    assert f">transfer-{lead}</Conference>" in (move.value("Twiml") or "")
    assert stack.store.get_flag(lead) is None
    assert stack.store.lead_status(lead)["status"] == "succeeded"  # type: ignore[index]
    states = [e.get("state") for e in stack.store.timeline(tid) if e.get("state")]
    # "answered" and "joined" are separate webhooks, handled by separate worker processes:
    # when the join is handled first, human_answered is skipped (the state moved past it).
    assert states in (["requested", "dialing", "human_answered", "bridging", "succeeded"],
                      ["requested", "dialing", "bridging", "succeeded"])

    # The customer and the human talk, then the customer hangs up.
    stack.sandbox.hangup(call_id)
    ended = stack.events.wait(lambda e: e["lead_id"] == lead and e["type"] == "call.ended")
    assert ended["transferred"] is True
    time.sleep(0.3)
    assert stack.terminal_count(tid) == 1


def test_only_the_callbacks_the_state_machine_uses_are_sent(stack: Stack) -> None:
    # The leg asks for answered and completed, the conference for join and announcement:
    # a bridged transfer is the leg's answered, both joins (and the leg's completed once
    # the call ends), nothing else from Twilio to us.
    lead, call_id, _, result = _request(stack, "answer")
    tid = str(result["transfer_id"])
    assert stack.terminal(tid)["type"] == "transfer.succeeded"
    stack.sandbox.hangup(call_id)
    stack.events.wait(lambda e: e["lead_id"] == lead and e["type"] == "call.ended")
    time.sleep(0.3)
    with stack.sandbox.lock:
        ours = [(d.url.split("?")[0].rsplit("/", 1)[-1],
                 d.params.get("CallStatus") or d.params.get("StatusCallbackEvent"))
                for d in stack.sandbox.deliveries if f"transfer_id={tid}" in d.url]
    assert sorted(ours) == [("agent-status", "completed"), ("agent-status", "in-progress"),
                            ("conference", "participant-join"),
                            ("conference", "participant-join")]
    # The human's leg ending after the bridge is on the timeline, answered at the webhook.
    assert any("late" in (e.get("note") or "") for e in stack.store.timeline(tid))


def test_no_answer_resumes_the_ai(stack: Stack) -> None:
    lead, call_id, _, result = _request(stack, "no-answer:0.3")
    event = stack.terminal(str(result["transfer_id"]))
    assert event["type"] == "transfer.failed"
    assert (event["reason"], event["action"]) == ("no_answer", "resume")
    assert stack.sandbox.api_requests(f"/Calls/{call_id}.json") == []
    assert stack.store.get_flag(lead) is None
    assert stack.store.lead_status(lead)["status"] == "failed"  # type: ignore[index]


def test_busy(stack: Stack) -> None:
    _, call_id, _, result = _request(stack, "busy")
    event = stack.terminal(str(result["transfer_id"]))
    assert (event["reason"], event["action"]) == ("busy", "resume")
    # Twilio's SipResponseCode beside our reason, on the event and its attempt.
    assert (event["sip_code"], event["provider_cause"]) == (486, None)
    assert [(a["outcome"], a["sip_code"]) for a in event["attempts"]] == [("busy", 486)]
    assert stack.sandbox.api_requests(f"/Calls/{call_id}.json") == []


def test_duplicate_tool_call_dials_once(stack: Stack) -> None:
    lead, call_id, number, first = _request(stack, "answer-after:1")
    second = stack.client.connect_to_live_agent(make_request(
        lead_id=lead, call_id=call_id, transfer_number=number, outbound_number=OUTBOUND))
    assert second["status"] == "transfer_in_progress"
    assert second["transfer_id"] == first["transfer_id"]
    assert stack.terminal(str(first["transfer_id"]))["type"] == "transfer.succeeded"
    assert len(_participant_requests(stack, lead)) == 1


def test_forged_callbacks_are_refused_and_change_nothing(stack: Stack) -> None:
    _, _, _, result = _request(stack, "answer-after:1.5")
    tid = str(result["transfer_id"])
    url = f"{stack.settings.public_base_url}/twilio/agent-status?transfer_id={tid}"
    forged = {"CallSid": "CA" + "f" * 32, "CallStatus": "busy"}
    assert requests.post(url, data=forged, timeout=5).status_code == 403
    assert requests.post(url, data=forged, timeout=5,
                         headers={"X-Twilio-Signature": "AAAA"}).status_code == 403
    # Signed with the wrong token.
    from twilio.request_validator import RequestValidator
    sig = RequestValidator("not-the-token").compute_signature(url, forged)
    assert requests.post(url, data=forged, timeout=5,
                         headers={"X-Twilio-Signature": sig}).status_code == 403
    # Correctly signed but malformed.
    good = RequestValidator(stack.settings.twilio_auth_token)
    partial = {"CallSid": "CA1"}
    assert requests.post(url, data=partial, timeout=5, headers={
        "X-Twilio-Signature": good.compute_signature(url, partial)}).status_code == 400
    event = stack.terminal(tid)
    assert event["type"] == "transfer.succeeded"  # the forged "busy" was never acted on


def test_missing_transfer_number_is_refused_synchronously(stack: Stack) -> None:
    lead = unique_lead()
    result = stack.client.connect_to_live_agent(make_request(lead_id=lead, transfer_number=None,
                                                             outbound_number=OUTBOUND))
    assert result["status"] == "error" and result["error"] == "missing_transfer_number"
    time.sleep(0.3)
    assert stack.sandbox.api_requests(lead) == []  # no provider request for this lead
    assert stack.store.get_flag(lead) is None and stack.events_for(lead) == []


def test_missing_outbound_number_id_is_refused_synchronously(stack: Stack) -> None:
    lead = unique_lead()
    result = stack.client.connect_to_live_agent(make_request(lead_id=lead,
                                                             outbound_number_id=None))
    assert result["error"] == "missing_outbound_number_id"
    time.sleep(0.3)
    assert stack.sandbox.api_requests(lead) == []
    assert stack.events_for(lead) == []
    assert stack.store.lead_status(lead) is None


def test_outbound_number_from_directory(stack: Stack) -> None:
    stack.store.set_number("integration-line", "+14155550177")
    lead = unique_lead()
    call_id = stack.customer_call(lead)
    number = fictional_number()
    stack.sandbox.set_fate(number, "answer")
    result = stack.client.connect_to_live_agent(make_request(
        lead_id=lead, call_id=call_id, transfer_number=number,
        outbound_number_id="integration-line"))
    assert stack.terminal(str(result["transfer_id"]))["type"] == "transfer.succeeded"
    [dial] = _participant_requests(stack, lead)
    assert dial.value("From") == "+14155550177"  # type: ignore[attr-defined]


def test_twilio_503_then_success(stack: Stack) -> None:
    lead = unique_lead()
    stack.sandbox.add_fault(f"/Conferences/transfer-{lead}/Participants.json", 503, count=1)
    call_id = stack.customer_call(lead)
    number = fictional_number()
    stack.sandbox.set_fate(number, "answer")
    result = stack.client.connect_to_live_agent(make_request(
        lead_id=lead, call_id=call_id, transfer_number=number, outbound_number=OUTBOUND))
    assert stack.terminal(str(result["transfer_id"]))["type"] == "transfer.succeeded"
    assert len(_participant_requests(stack, lead)) == 2


def test_twilio_503_throughout(stack: Stack) -> None:
    lead = unique_lead()
    stack.sandbox.add_fault(f"/Conferences/transfer-{lead}/Participants.json", 503, count=10)
    call_id = stack.customer_call(lead)
    result = stack.client.connect_to_live_agent(make_request(
        lead_id=lead, call_id=call_id, transfer_number=fictional_number(),
        outbound_number=OUTBOUND))
    event = stack.terminal(str(result["transfer_id"]))
    assert (event["reason"], event["action"]) == ("provider_error", "resume")
    assert len(_participant_requests(stack, lead)) == 1 + len(stack.settings.provider_retry_delays)
    assert stack.store.get_flag(lead) is None


def test_customer_hangs_up_while_human_rings(stack: Stack) -> None:
    lead, call_id, _, result = _request(stack, "answer-after:3")
    tid = str(result["transfer_id"])
    deadline = time.monotonic() + 5
    while stack.store.get_transfer(tid)["state"] != "dialing":  # type: ignore[index]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    stack.sandbox.hangup(call_id)
    event = stack.terminal(tid)
    assert (event["type"], event["reason"]) == ("transfer.failed", "customer_hung_up")
    ended = stack.events.wait(lambda e: e["lead_id"] == lead and e["type"] == "call.ended")
    assert ended["transferred"] is False
    cancels = [r for r in stack.sandbox.api_requests("/Calls/") if r.value("Status")]
    assert any(r.value("Status") == "canceled" for r in cancels)
    time.sleep(3.5)  # past the moment the human would have answered
    assert stack.terminal_count(tid) == 1
    assert stack.sandbox.api_requests(f"/Calls/{call_id}.json") == []


def test_callbacks_twice_and_out_of_order_still_one_outcome(stack: Stack) -> None:
    stack.sandbox.repeat_callbacks = 2
    _, call_id, _, result = _request(stack, "answer-after:0.3")
    tid = str(result["transfer_id"])
    assert stack.terminal(tid)["type"] == "transfer.succeeded"
    # Stale and repeated callbacks after the outcome, correctly signed.
    base = stack.settings.public_base_url
    agent_sid = stack.store.get_transfer(tid)["agent_call_sid"]  # type: ignore[index]
    for params, path in [
        ({"CallSid": agent_sid, "CallStatus": "ringing"}, "agent-status"),
        ({"CallSid": agent_sid, "CallStatus": "busy"}, "agent-status"),
        ({"StatusCallbackEvent": "participant-join", "CallSid": agent_sid}, "conference"),
        ({"StatusCallbackEvent": "participant-leave", "CallSid": agent_sid}, "conference"),
    ]:
        status = stack.sandbox.send_twilio_callback(f"{base}/twilio/{path}?transfer_id={tid}",
                                                    params)
        assert status == 204
    time.sleep(1.0)
    assert stack.terminal_count(tid) == 1
    assert len(stack.sandbox.api_requests(f"/Calls/{call_id}.json")) == 1


def test_no_callback_ever_fails_at_the_deadline(stack: Stack) -> None:
    lead, _, _, result = _request(stack, "ignore")
    tid = str(result["transfer_id"])
    event = stack.terminal(tid, timeout=RING_TIMEOUT + DEADLINE_MARGIN + 5)
    assert (event["reason"], event["action"]) == ("timeout", "resume")
    assert stack.store.get_flag(lead) is None


def test_http_producer_endpoint(stack: Stack) -> None:
    lead = unique_lead()
    call_id = stack.customer_call(lead)
    number = fictional_number()
    stack.sandbox.set_fate(number, "answer")
    url = f"{stack.settings.public_base_url}/transfers"
    body = make_request(lead_id=lead, call_id=call_id, transfer_number=number,
                        outbound_number=OUTBOUND)
    assert requests.post(url, json=body, timeout=5).status_code == 401
    resp = requests.post(url, json=body, timeout=5,
                         headers={"Authorization": "Bearer integration-token"})
    assert resp.status_code == 202
    assert stack.terminal(resp.json()["transfer_id"])["type"] == "transfer.succeeded"


def test_outside_hours_nothing_is_dialed(stack: Stack) -> None:
    from datetime import UTC, datetime

    from shared.hours import DAYS

    other_day = DAYS[(datetime.now(UTC).weekday() + 2) % 7]  # never today
    hours = {"timezone": "UTC", "weekly": {other_day: ["09:00-17:00"]}}
    lead = unique_lead()
    call_id = stack.customer_call(lead)
    request = make_request(lead_id=lead, call_id=call_id, transfer_number=fictional_number(),
                           outbound_number=OUTBOUND)
    request["template"]["configurations"]["hours"] = hours
    result = stack.client.connect_to_live_agent(request)
    assert (result["status"], result["error"]) == ("error", "outside_hours")
    # A producer that skips the client: the worker refuses it too, with one event.
    from celery import Celery

    producer = Celery("other-producer", broker=stack.settings.celery_broker_url,
                      set_as_current=False)
    producer.send_task("warm_transfer.request", kwargs={"request": request}, queue="transfers")
    event = stack.events.wait(lambda e: e["lead_id"] == lead)
    assert (event["type"], event["reason"], event["action"]) == (
        "transfer.failed", "outside_hours", "resume")
    time.sleep(0.3)
    assert stack.sandbox.api_requests(lead) == []


def _detecting(stack: Stack, fate: str) -> tuple[str, str, str]:
    lead = unique_lead()
    call_id = stack.customer_call(lead)
    number = fictional_number()
    stack.sandbox.set_fate(number, fate)
    request = make_request(lead_id=lead, call_id=call_id, transfer_number=number,
                           outbound_number=OUTBOUND)
    request["template"]["configurations"]["voicemail_detection"] = True
    result = stack.client.connect_to_live_agent(request)
    return lead, call_id, str(result["transfer_id"])


def test_voicemail_on_the_human_line_is_not_a_success(stack: Stack) -> None:
    lead, call_id, tid = _detecting(stack, "machine")
    event = stack.terminal(tid)
    assert (event["type"], event["reason"], event["action"]) == (
        "transfer.failed", "voicemail", "resume")
    time.sleep(0.3)
    assert stack.sandbox.api_requests(f"/Calls/{call_id}.json", method="POST") == []
    assert stack.terminal_count(tid) == 1
    [dial] = _participant_requests(stack, lead)
    assert dial.value("MachineDetection") == "Enable"  # type: ignore[attr-defined]


def test_human_answer_with_detection_succeeds(stack: Stack) -> None:
    _, _, tid = _detecting(stack, "answer")
    assert stack.terminal(tid)["type"] == "transfer.succeeded"


def test_briefing_is_spoken_to_the_human_alone_before_the_bridge(stack: Stack) -> None:
    lead = unique_lead()
    call_id = stack.customer_call(lead)
    number = fictional_number()
    stack.sandbox.set_fate(number, "answer")
    result = stack.client.connect_to_live_agent(make_request(
        lead_id=lead, call_id=call_id, transfer_number=number, outbound_number=OUTBOUND,
        summary="Customer wants to change a delivery address"))
    assert stack.terminal(str(result["transfer_id"]))["type"] == "transfer.succeeded"
    human = next(c for c in stack.sandbox.calls.values() if c.to == number)
    assert human.spoken == ["Incoming transfer. Note from the AI assistant: "
                            "Customer wants to change a delivery address"]
    assert stack.sandbox.calls[call_id].spoken == []  # the customer heard none of it
    order = [r.path for r in stack.sandbox.requests
             if r.path.endswith(f"/Participants/{human.sid}.json")
             or r.path.endswith(f"/Calls/{call_id}.json")]
    # Announced, then moved; the update addressed by the conference's SID (the sandbox
    # answers 404 / 20404 to one addressed by its friendly name, as Twilio does).
    assert order[0].endswith(f"/Participants/{human.sid}.json")
    assert "/Conferences/CF" in order[0] and f"transfer-{lead}" not in order[0]
    assert order[1:] == [p for p in order if p.endswith(f"/Calls/{call_id}.json")]
    # The announcement had ended before the customer was moved.
    ended = next(d.at for d in stack.sandbox.deliveries
                 if d.params.get("StatusCallbackEvent") == "announcement-end"
                 and d.params.get("CallSid") == human.sid)
    [move] = stack.sandbox.api_requests(f"/Calls/{call_id}.json", method="POST")
    assert ended <= move.at


def test_the_sandbox_refuses_a_participant_update_by_friendly_name(stack: Stack) -> None:
    lead, _, number, result = _request(stack, "answer-after:2")
    deadline = time.monotonic() + 5
    while not _participant_requests(stack, lead):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    human = next(c for c in stack.sandbox.calls.values() if c.to == number)
    url = (f"{stack.settings.twilio_api_base_url}/2010-04-01/Accounts/"
           f"{stack.settings.twilio_account_sid}/Conferences/transfer-{lead}/Participants/"
           f"{human.sid}.json")
    resp = requests.post(url, data={"AnnounceUrl": "https://example.com/x"}, timeout=5,
                         auth=(stack.settings.twilio_account_sid,
                               stack.settings.twilio_auth_token))
    assert resp.status_code == 404 and resp.json()["code"] == 20404
    assert stack.terminal(str(result["transfer_id"]))["type"] == "transfer.succeeded"


def _policies(stack: Stack, fates: list[str], **configurations: object
              ) -> tuple[str, str, list[str], str]:
    lead = unique_lead()
    call_id = stack.customer_call(lead)
    numbers = [fictional_number() for _ in fates]
    for number, fate in zip(numbers, fates, strict=True):
        stack.sandbox.set_fate(number, fate)
    request = make_request(lead_id=lead, call_id=call_id, transfer_number=None,
                           outbound_number=OUTBOUND, summary="Billing question")
    request["template"]["configurations"] = {"transfer_numbers": numbers, **configurations}
    result = stack.client.connect_to_live_agent(request)
    assert result["status"] == "transfer_requested", result
    return lead, call_id, numbers, str(result["transfer_id"])


def _legs_to(stack: Stack, numbers: list[str]) -> list[str]:
    with stack.sandbox.lock:
        return [c.to for c in stack.sandbox.calls.values() if c.to in numbers]


def test_first_destination_busy_then_second_answers(stack: Stack) -> None:
    lead, call_id, numbers, tid = _policies(stack, ["busy", "answer"])
    event = stack.terminal(tid)
    assert event["type"] == "transfer.succeeded" and event["destination_index"] == 1
    assert [a["outcome"] for a in event["attempts"]] == ["busy", "answered"]
    assert [a["sip_code"] for a in event["attempts"]] == [486, None]
    assert _legs_to(stack, numbers) == numbers  # one after the other
    # The customer stayed with the AI until the second human was in: moved once.
    assert len(stack.sandbox.api_requests(f"/Calls/{call_id}.json", method="POST")) == 1
    labels = [r.value("Label") for r in _participant_requests(stack, lead)]
    assert labels == ["agent", "agent-2"]
    assert stack.terminal_count(tid) == 1


def test_voicemail_then_fallback_answers(stack: Stack) -> None:
    lead, call_id, numbers, tid = _policies(stack, ["machine", "answer"],
                                            voicemail_detection=True)
    event = stack.terminal(tid)
    assert event["type"] == "transfer.succeeded"
    assert [a["outcome"] for a in event["attempts"]] == ["voicemail", "answered"]
    machine = next(c for c in stack.sandbox.calls.values() if c.to == numbers[0])
    human = next(c for c in stack.sandbox.calls.values() if c.to == numbers[1])
    assert machine.status == "completed"  # hung up, not left on the voicemail
    # Never bridged: the machine's leg joined the conference before its verdict came (the
    # sandbox's order), yet it was neither briefed nor joined by the customer.
    assert machine.spoken == []
    assert human.spoken == ["Incoming transfer. Note from the AI assistant: Billing question"]
    [move] = stack.sandbox.api_requests(f"/Calls/{call_id}.json", method="POST")
    with stack.sandbox.lock:
        deliveries = list(stack.sandbox.deliveries)
    verdicts = [(d.params["CallSid"], d.params["AnsweredBy"], d.at) for d in deliveries
                if "/twilio/amd?" in d.url and d.params["CallSid"] in (machine.sid, human.sid)]
    assert [(sid, answer) for sid, answer, _ in verdicts] == [
        (machine.sid, "machine_start"), (human.sid, "human")]
    machine_join = next(d.at for d in deliveries
                        if d.params.get("StatusCallbackEvent") == "participant-join"
                        and d.params.get("CallSid") == machine.sid)
    assert machine_join <= verdicts[0][2]  # the join came first
    assert verdicts[1][2] <= move.at  # the customer moved only after a human was known
    # AnsweredBy only where Twilio sends it: never on a leg's status callback.
    assert not any("AnsweredBy" in d.params for d in deliveries if "/agent-status" in d.url)
    dials = _participant_requests(stack, lead)
    assert [r.value("AmdStatusCallback") for r in dials] == [  # type: ignore[attr-defined]
        f"{stack.settings.public_base_url}/twilio/amd?transfer_id={tid}",
        f"{stack.settings.public_base_url}/twilio/amd?transfer_id={tid}&attempt=1"]


def test_screening_accepted_joins_after_the_key(stack: Stack) -> None:
    _, call_id, numbers, tid = _policies(stack, ["answer"], screening=True)
    assert stack.terminal(tid)["type"] == "transfer.succeeded"
    human = next(c for c in stack.sandbox.calls.values() if c.to == numbers[0])
    assert human.spoken == ["Incoming transfer. Note from the AI assistant: Billing question",
                            "Press 1 to take the call."]
    assert stack.sandbox.calls[call_id].spoken == []  # the customer heard none of it
    [dial] = stack.sandbox.api_requests("/Calls.json", method="POST")[-1:]
    lead = stack.store.get_transfer(tid)["lead_id"]  # type: ignore[index]
    assert (dial.value("Url") or "").endswith(
        f"/twilio/screen?transfer_id={tid}&lead_id={lead}&key=1&timeout=8")
    assert dial.value("MachineDetection") is None  # no detection asked


def test_screening_declined_then_fallback_answers(stack: Stack) -> None:
    _, _, numbers, tid = _policies(stack, ["decline", "answer"], screening=True)
    event = stack.terminal(tid)
    assert event["type"] == "transfer.succeeded"
    assert [a["outcome"] for a in event["attempts"]] == ["declined", "answered"]
    first = next(c for c in stack.sandbox.calls.values() if c.to == numbers[0])
    assert first.spoken[-1] == "Okay, the call will not be connected. Goodbye."


def test_screening_declined_by_everyone_resumes_the_ai(stack: Stack) -> None:
    _, call_id, _, tid = _policies(stack, ["decline"], screening=True)
    event = stack.terminal(tid)
    assert (event["reason"], event["action"]) == ("declined", "resume")
    assert stack.sandbox.api_requests(f"/Calls/{call_id}.json", method="POST") == []


def test_fallback_on_stops_at_a_declined_human(stack: Stack) -> None:
    """The template moves on for busy and no answer only: the first human's "no" ends the
    transfer; the second destination is never dialed and the customer never moved."""
    _, call_id, numbers, tid = _policies(stack, ["decline", "answer"], screening=True,
                                         fallback_on=["busy", "no_answer"])
    event = stack.terminal(tid)
    assert (event["type"], event["reason"], event["action"]) == (
        "transfer.failed", "declined", "resume")
    assert [a["outcome"] for a in event["attempts"]] == ["declined"]
    assert _legs_to(stack, numbers) == numbers[:1]
    assert stack.sandbox.api_requests(f"/Calls/{call_id}.json", method="POST") == []
    assert stack.terminal_count(tid) == 1


def test_customer_caller_id_is_shown_to_the_human(stack: Stack) -> None:
    lead = unique_lead()
    call_id = stack.customer_call(lead)
    number = fictional_number()
    customer = fictional_number()
    stack.sandbox.set_fate(number, "answer")
    request = make_request(lead_id=lead, call_id=call_id, transfer_number=number,
                           outbound_number=OUTBOUND)
    request["template"]["configurations"]["caller_id"] = "customer"
    request["lead"]["phone_number"] = customer
    result = stack.client.connect_to_live_agent(request)
    assert stack.terminal(str(result["transfer_id"]))["type"] == "transfer.succeeded"
    [dial] = _participant_requests(stack, lead)
    assert dial.value("From") == customer  # type: ignore[attr-defined]


def test_cli_request_with_fallback_numbers_and_policies(stack: Stack) -> None:
    lead = unique_lead()
    call_id = stack.customer_call(lead)
    first, second = fictional_number(), fictional_number()
    stack.sandbox.set_fate(first, "decline")
    stack.sandbox.set_fate(second, "answer")
    out = subprocess.run(
        [sys.executable, "-m", "workers.cli", "request", "--lead-id", lead, "--provider",
         "twilio", "--call-id", call_id, "--transfer-number", first, "--transfer-number",
         second, "--outbound-number", OUTBOUND, "--configurations", '{"screening": true}'],
        env=settings_env(stack.settings), cwd=ROOT, capture_output=True, text=True,
        timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    event = stack.terminal(result["transfer_id"])
    assert event["type"] == "transfer.succeeded" and event["destination_index"] == 1
    assert [a["outcome"] for a in event["attempts"]] == ["declined", "answered"]
    # `warm-transfer status` shows the same outcome, with the timeline.
    status = subprocess.run([sys.executable, "-m", "workers.cli", "status", lead],
                            env=settings_env(stack.settings), cwd=ROOT, capture_output=True,
                            text=True, timeout=60, check=True)
    report = json.loads(status.stdout)
    assert report["status"] == "succeeded" and report["event"]["event_id"] == event["event_id"]
    assert any(e["note"] == "destination 1 declined" for e in report["timeline"])


def test_screening_with_voicemail_detection_hangs_up_on_the_machine(stack: Stack) -> None:
    _, _, numbers, tid = _policies(stack, ["machine", "answer"], screening=True,
                                         voicemail_detection=True)
    event = stack.terminal(tid)
    assert event["type"] == "transfer.succeeded"
    assert [a["outcome"] for a in event["attempts"]] == ["voicemail", "answered"]
    machine = next(c for c in stack.sandbox.calls.values() if c.to == numbers[0])
    assert machine.spoken == []  # our TwiML hung up on it: no briefing left on a voicemail
    assert machine.status == "completed"


def test_screening_key_and_timeout_from_the_template(stack: Stack) -> None:
    lead = unique_lead()
    call_id = stack.customer_call(lead)
    wrong, right = fictional_number(), fictional_number()
    for number, key in ((wrong, "1"), (right, "#")):
        stack.sandbox.set_fate(number, "answer")
        stack.sandbox.set_key(number, key)
    request = make_request(lead_id=lead, call_id=call_id, transfer_number=None,
                           outbound_number=OUTBOUND)
    request["template"]["configurations"] = {"transfer_numbers": [wrong, right],
                                             "screening": True, "screening_key": "#",
                                             "screening_timeout": 5}
    result = stack.client.connect_to_live_agent(request)
    event = stack.terminal(str(result["transfer_id"]))
    assert [a["outcome"] for a in event["attempts"]] == ["declined", "answered"]
    human = next(c for c in stack.sandbox.calls.values() if c.to == right)
    assert human.spoken[-1] == "Press the pound key to take the call."


def test_a_repeated_twiml_request_gets_the_same_twiml(stack: Stack) -> None:
    """Twilio retries a TwiML request that timed out with the same idempotency token: the
    retry gets the same instructions (not an empty 204) and enqueues nothing twice."""
    from twilio.request_validator import RequestValidator

    _, _, numbers, tid = _policies(stack, ["answer-after:2"], screening=True)
    deadline = time.monotonic() + 5
    while not stack.sandbox.api_requests("/Calls.json", method="POST") or not any(
            (r.value("Url") or "").find(tid) > 0
            for r in stack.sandbox.api_requests("/Calls.json", method="POST")):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    dial = next(r for r in stack.sandbox.api_requests("/Calls.json", method="POST")
                if tid in (r.value("Url") or ""))
    screen_url = dial.value("Url") or ""
    human_sid = stack.store.get_transfer(tid)["agent_call_sid"]  # type: ignore[index]
    signer = RequestValidator(stack.settings.twilio_auth_token)

    def twice(url: str, params: dict[str, str]) -> list[requests.Response]:
        headers = {"X-Twilio-Signature": signer.compute_signature(url, params),
                   "I-Twilio-Idempotency-Token": "retry-" + url[-40:]}
        return [requests.post(url, data=params, headers=headers, timeout=5) for _ in (1, 2)]

    answered = {"CallSid": human_sid, "CallStatus": "in-progress", "To": numbers[0]}
    first, again = twice(screen_url, answered)
    assert first.status_code == again.status_code == 200
    assert first.text == again.text and "<Gather" in first.text
    action = first.text.split('action="')[1].split('"')[0].replace("&amp;", "&")
    first, again = twice(action, {"CallSid": human_sid, "Digits": "1"})
    assert first.status_code == again.status_code == 200
    assert first.text == again.text and ">transfer-" in first.text
    # The real leg goes on and succeeds; one outcome.
    assert stack.terminal(tid)["type"] == "transfer.succeeded"
    time.sleep(0.3)
    assert stack.terminal_count(tid) == 1


def test_an_extension_is_dialed_before_the_briefing(stack: Stack) -> None:
    lead = unique_lead()
    call_id = stack.customer_call(lead)
    numbers = [fictional_number(), fictional_number()]
    stack.sandbox.set_fate(numbers[0], "busy")
    stack.sandbox.set_fate(numbers[1], "answer")
    request = make_request(lead_id=lead, call_id=call_id, transfer_number=None,
                           outbound_number=OUTBOUND, summary="Billing question")
    request["template"]["configurations"] = {"transfer_numbers": [
        numbers[0], {"number": numbers[1], "extension": "ww204#"}]}
    result = stack.client.connect_to_live_agent(request)
    event = stack.terminal(str(result["transfer_id"]))
    assert event["type"] == "transfer.succeeded" and event["destination_index"] == 1
    assert [(a["outcome"], a["sip_code"]) for a in event["attempts"]] == [
        ("busy", 486), ("answered", None)]
    human = next(c for c in stack.sandbox.calls.values() if c.to == numbers[1])
    # The digits, then (in the conference) the briefing, then the customer moved in.
    assert human.spoken == ["[dtmf ww204#]", "Incoming transfer. Note from the AI "
                            "assistant: Billing question"]
    assert stack.sandbox.calls[call_id].spoken == []
    [placed] = [r for r in stack.sandbox.api_requests("/Calls.json", method="POST")
                if r.value("To") == numbers[1]]
    assert "<Play digits=\"ww204#\" />" in (placed.value("Twiml") or "")
    # The first destination (no extension) was a participant, as ever.
    assert [r.value("To") for r in _participant_requests(stack, lead)] == [numbers[0]]


def test_a_sip_destination_receives_the_summary_header(stack: Stack) -> None:
    lead = unique_lead()
    call_id = stack.customer_call(lead)
    uri = f"sip:{lead}@pbx.example.com"
    stack.sandbox.set_fate(uri, "answer")
    request = make_request(lead_id=lead, call_id=call_id, transfer_number=None,
                           outbound_number=OUTBOUND, summary="Billing question, order 42")
    request["template"]["configurations"] = {"transfer_numbers": [uri],
                                             "sip_headers": {"X-Queue": "billing"}}
    result = stack.client.connect_to_live_agent(request)
    tid = str(result["transfer_id"])
    event = stack.terminal(tid)
    assert event["type"] == "transfer.succeeded"
    assert event["attempts"][0]["number"] == f"sip:{lead[0]}***@pbx.example.com"
    with stack.sandbox.lock:
        human = next(c for c in stack.sandbox.calls.values() if c.to == uri)
    # The INVITE's headers, as the SIP endpoint receives them.
    assert human.flow["sip_headers"] == {
        "X-Transfer-Id": tid, "X-Lead-Id": lead,
        "X-Transfer-Summary": "Billing question, order 42", "X-Queue": "billing"}
    # Briefed by announcement as any participant, then the customer moved in.
    assert human.spoken == ["Incoming transfer. Note from the AI assistant: "
                            "Billing question, order 42"]


def test_a_sip_host_not_allowed_is_refused_before_anything_is_dialed(stack: Stack) -> None:
    lead = unique_lead()
    call_id = stack.customer_call(lead)
    request = make_request(lead_id=lead, call_id=call_id, transfer_number=None,
                           outbound_number=OUTBOUND)
    request["template"]["configurations"] = {"transfer_numbers": [
        "sip:anyone@elsewhere.example.net"]}
    result = stack.client.connect_to_live_agent(request)
    assert (result["status"], result["error"]) == ("error", "destination_not_allowed")
    assert not any("elsewhere" in (r.value("To") or "")
                   for r in stack.sandbox.api_requests("/Participants.json"))


def test_a_ring_group_the_second_member_answers_first_and_the_first_is_cancelled(
        stack: Stack) -> None:
    lead = unique_lead()
    call_id = stack.customer_call(lead)
    members = [fictional_number(), fictional_number()]
    stack.sandbox.set_fate(members[0], "answer-after:2")
    stack.sandbox.set_fate(members[1], "answer-after:0.3")
    request = make_request(lead_id=lead, call_id=call_id, transfer_number=None,
                           outbound_number=OUTBOUND, summary="Billing question")
    request["template"]["configurations"] = {"transfer_numbers": [{"group": members}]}
    result = stack.client.connect_to_live_agent(request)
    tid = str(result["transfer_id"])
    event = stack.terminal(tid)
    assert event["type"] == "transfer.succeeded", "\n".join([str(event)] + [
        f"{e.get('state', '')} {e['note']}" for e in stack.store.timeline(tid)])
    assert (event["destination_index"], event["destination_member"]) == (0, 1)
    with stack.sandbox.lock:
        legs = {c.to: c for c in stack.sandbox.calls.values() if c.to in members}
    # Both rang at once; the first member's leg was canceled while it still rang.
    assert legs[members[0]].status == "canceled"
    assert legs[members[1]].spoken == ["Incoming transfer. Note from the AI assistant: "
                                       "Billing question"]
    conference = stack.sandbox.conferences[f"transfer-{lead}"]
    assert legs[members[0]].sid not in conference.participants
    time.sleep(0.5)
    assert stack.terminal_count(tid) == 1


def test_a_ring_group_none_answers_then_the_next_destination(stack: Stack) -> None:
    lead = unique_lead()
    call_id = stack.customer_call(lead)
    numbers = [fictional_number() for _ in range(3)]
    for number, fate in zip(numbers, ["busy", "no-answer:0.3", "answer"], strict=True):
        stack.sandbox.set_fate(number, fate)
    request = make_request(lead_id=lead, call_id=call_id, transfer_number=None,
                           outbound_number=OUTBOUND)
    request["template"]["configurations"] = {"transfer_numbers": [
        {"group": numbers[:2]}, numbers[2]]}
    result = stack.client.connect_to_live_agent(request)
    event = stack.terminal(str(result["transfer_id"]))
    assert event["type"] == "transfer.succeeded"
    assert (event["destination_index"], event["destination_member"]) == (1, None)
    assert [a["outcome"] for a in event["attempts"]] == ["no_answer", "answered"]
