"""The Twilio handoff, driven through the task functions, with Twilio's API mocked."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import pytest
import responses

from shared.store import Store
from tests.helpers import make_request
from tests.unit.providers.twilio import TWILIO_API, TWILIO_SID
from workers import tasks
from workers.runtime import Runtime

ACCOUNT = f"{TWILIO_API}/2010-04-01/Accounts/{TWILIO_SID}"
CUSTOMER = "CA" + "c" * 32
AGENT = "CA" + "a" * 32


def participants_url(lead: str) -> str:
    return f"{ACCOUNT}/Conferences/transfer-{lead}/Participants.json"


def call_url(sid: str) -> str:
    return f"{ACCOUNT}/Calls/{sid}.json"


def form(call: Any) -> dict[str, list[str]]:
    return parse_qs(call.request.body)


def run(task: Any, **kwargs: Any) -> None:
    task.apply(kwargs=kwargs).get()


def start(rt: Runtime, mocked: responses.RequestsMock, lead: str = "L1",
          status: int = 201) -> str:
    mocked.post(participants_url(lead), status=status,
                json={"call_sid": AGENT, "status": "queued", "account_sid": TWILIO_SID,
                      "conference_sid": "CF1", "label": "agent"})
    req = make_request(lead_id=lead, call_id=CUSTOMER, transfer_id=f"tr_{lead}")
    run(tasks.transfer_request, request=req)
    return f"tr_{lead}"


def callback(kind: str, transfer_id: str, **params: str) -> None:
    run(tasks.provider_callback, provider="twilio", kind=kind, transfer_id=transfer_id,
        params=params)


def test_request_dials_the_human_into_the_conference(rt: Runtime, store: Store,
                                                      mocked: responses.RequestsMock) -> None:
    tid = start(rt, mocked)
    [call] = mocked.calls
    assert call.request.method == "POST"
    assert call.request.url == participants_url("L1")
    f = form(call)
    assert f["To"] == ["+14155550101"]
    assert f["From"] == ["+14155550199"]
    assert f["Label"] == ["agent"]
    assert f["Timeout"] == ["30"]
    assert f["StartConferenceOnEnter"] == ["true"]
    assert f["EndConferenceOnExit"] == ["true"]
    assert f["StatusCallback"] == [f"https://hooks.example.com/twilio/agent-status?transfer_id={tid}"]
    # Only the events the state machine acts on (fewer requests to us).
    assert f["StatusCallbackEvent"] == ["answered", "completed"]
    assert f["ConferenceStatusCallback"] == [
        f"https://hooks.example.com/twilio/conference?transfer_id={tid}"]
    assert f["ConferenceStatusCallbackEvent"] == ["join", "announcement"]
    rec = store.get_transfer(tid)
    assert rec is not None and rec["state"] == "dialing" and rec["agent_call_sid"] == AGENT
    assert store.get_flag("L1") == "+14155550101"
    assert store.transfer_for_call("twilio", AGENT) == tid


def test_human_joined_moves_customer_then_success(rt: Runtime, store: Store, events: Any,
                                                  mocked: responses.RequestsMock) -> None:
    tid = start(rt, mocked)
    mocked.post(call_url(CUSTOMER), json={"sid": CUSTOMER, "status": "in-progress"})
    callback("agent-status", tid, CallSid=AGENT, CallStatus="in-progress")
    callback("conference", tid, StatusCallbackEvent="participant-join", CallSid=AGENT)
    update = mocked.calls[-1]
    assert update.request.url == call_url(CUSTOMER)
    twiml = form(update)["Twiml"][0]
    assert "<Dial><Conference" in twiml and ">transfer-L1</Conference>" in twiml
    assert 'endConferenceOnExit="true"' in twiml
    assert 'statusCallbackEvent="join"' in twiml
    assert f"/twilio/conference?transfer_id={tid}" in twiml
    assert store.get_transfer(tid)["state"] == "bridging"  # type: ignore[index]
    assert events() == []

    callback("conference", tid, StatusCallbackEvent="participant-join", CallSid=CUSTOMER)
    [event] = events()
    assert event["type"] == "transfer.succeeded"
    assert event["action"] == "end_conversation"
    assert event["transfer_id"] == tid and event["lead_id"] == "L1"
    assert store.get_flag("L1") is None
    assert store.lead_status("L1")["status"] == "succeeded"  # type: ignore[index]


def test_duplicate_join_moves_the_customer_once(rt: Runtime, events: Any,
                                                mocked: responses.RequestsMock) -> None:
    tid = start(rt, mocked)
    mocked.post(call_url(CUSTOMER), json={"sid": CUSTOMER, "status": "in-progress"})
    for _ in range(3):
        callback("conference", tid, StatusCallbackEvent="participant-join", CallSid=AGENT)
    for _ in range(2):
        callback("conference", tid, StatusCallbackEvent="participant-join", CallSid=CUSTOMER)
    callback("agent-status", tid, CallSid=AGENT, CallStatus="ringing")  # stale, late
    callback("agent-status", tid, CallSid=AGENT, CallStatus="completed")
    updates = [c for c in mocked.calls if c.request.url == call_url(CUSTOMER)]
    assert len(updates) == 1
    assert [e["type"] for e in events()] == ["transfer.succeeded"]


@pytest.mark.parametrize(("status", "reason"), [
    ("busy", "busy"), ("no-answer", "no_answer"), ("failed", "failed")])
def test_human_not_reached_fails_and_leaves_customer_alone(
        rt: Runtime, store: Store, events: Any, mocked: responses.RequestsMock,
        status: str, reason: str) -> None:
    tid = start(rt, mocked)
    callback("agent-status", tid, CallSid=AGENT, CallStatus="ringing")
    callback("agent-status", tid, CallSid=AGENT, CallStatus=status)
    callback("agent-status", tid, CallSid=AGENT, CallStatus=status)
    [event] = events()
    assert event["type"] == "transfer.failed"
    assert event["reason"] == reason and event["action"] == "resume"
    assert event["message"]
    assert len(mocked.calls) == 1  # nothing done to the customer's call
    assert store.get_flag("L1") is None


def test_transient_error_is_retried_then_succeeds(rt: Runtime, store: Store, events: Any,
                                                  mocked: responses.RequestsMock) -> None:
    mocked.post(participants_url("L1"), status=503, json={"code": 20500, "status": 503,
                                                         "message": "unavailable"})
    tid = start(rt, mocked)
    assert len(mocked.calls) == 2
    assert store.get_transfer(tid)["state"] == "dialing"  # type: ignore[index]
    assert events() == []


def test_transient_errors_throughout_fail_with_provider_error(
        rt: Runtime, store: Store, events: Any, mocked: responses.RequestsMock) -> None:
    mocked.post(participants_url("L1"), status=503, json={"code": 20500, "status": 503,
                                                         "message": "unavailable"})
    req = make_request(lead_id="L1", call_id=CUSTOMER, transfer_id="tr_L1")
    run(tasks.transfer_request, request=req)
    assert len(mocked.calls) == 1 + len(rt.settings.provider_retry_delays)
    [event] = events()
    assert event["reason"] == "provider_error" and event["action"] == "resume"
    assert store.get_flag("L1") is None


def test_client_error_fails_at_once(rt: Runtime, events: Any,
                                    mocked: responses.RequestsMock) -> None:
    start(rt, mocked, status=400)
    assert len(mocked.calls) == 1
    [event] = events()
    assert event["reason"] == "provider_error"
    assert event["attempts"] is None  # no destination was reached to try


def test_connection_reset_looks_before_dialing_again(rt: Runtime, events: Any,
                                                     mocked: responses.RequestsMock) -> None:
    import requests
    mocked.post(participants_url("L1"), body=requests.ConnectionError("reset"))
    mocked.get(f"{ACCOUNT}/Calls.json", json={"calls": [], "next_page_uri": None})
    tid = start(rt, mocked)
    # The reset request may have placed a call: the retry lists calls first, finds none,
    # and dials.
    assert [c.request.method for c in mocked.calls] == ["POST", "GET", "POST"]
    listing = mocked.calls[1].request
    assert "To=%2B14155550101" in listing.url and "From=%2B14155550199" in listing.url
    assert rt.store.get_transfer(tid)["state"] == "dialing"  # type: ignore[index]


def test_interrupted_dial_that_placed_a_call_is_not_repeated(
        rt: Runtime, events: Any, mocked: responses.RequestsMock) -> None:
    import requests
    mocked.post(participants_url("L1"), body=requests.ReadTimeout("no answer"))
    mocked.get(f"{ACCOUNT}/Calls.json", json={"calls": [
        {"sid": "CAold", "status": "completed", "to": "+14155550101"},
        {"sid": AGENT, "status": "ringing", "to": "+14155550101"}], "next_page_uri": None})
    tid = start(rt, mocked)
    assert [c.request.method for c in mocked.calls] == ["POST", "GET"]
    rec = rt.store.get_transfer(tid)
    assert rec is not None and rec["state"] == "dialing" and rec["agent_call_sid"] == AGENT


def test_customer_hangs_up_while_human_rings(rt: Runtime, store: Store, events: Any,
                                             mocked: responses.RequestsMock) -> None:
    tid = start(rt, mocked)
    callback("agent-status", tid, CallSid=AGENT, CallStatus="ringing")
    mocked.post(call_url(AGENT), json={"sid": AGENT, "status": "canceled"})
    run(tasks.call_status, provider="twilio", call_id=CUSTOMER, status="completed")
    run(tasks.call_status, provider="twilio", call_id=CUSTOMER, status="completed")
    cancel = mocked.calls[-1]
    assert cancel.request.url == call_url(AGENT)
    assert form(cancel)["Status"] == ["canceled"]
    got = events()
    assert [e["type"] for e in got] == ["transfer.failed", "call.ended"]
    assert got[0]["reason"] == "customer_hung_up"
    assert got[1]["transferred"] is False and got[1]["transfer_id"] == tid


def test_customer_hangup_after_success_is_reported_as_transferred(
        rt: Runtime, events: Any, mocked: responses.RequestsMock) -> None:
    tid = start(rt, mocked)
    mocked.post(call_url(CUSTOMER), json={"sid": CUSTOMER, "status": "in-progress"})
    callback("conference", tid, StatusCallbackEvent="participant-join", CallSid=AGENT)
    callback("conference", tid, StatusCallbackEvent="participant-join", CallSid=CUSTOMER)
    run(tasks.call_status, provider="twilio", call_id=CUSTOMER, status="completed")
    got = events()
    assert [e["type"] for e in got] == ["transfer.succeeded", "call.ended"]
    assert got[1]["transferred"] is True


def test_call_ended_without_transfer_uses_flag(rt: Runtime, store: Store, events: Any) -> None:
    run(tasks.call_status, provider="twilio", call_id="CA9", status="completed", lead_id="L7")
    store.set_flag("L8", "+14155550101")
    run(tasks.call_status, provider="twilio", call_id="CA8", status="completed", lead_id="L8")
    run(tasks.call_status, provider="twilio", call_id="CA6", status="in-progress", lead_id="L6")
    got = events()
    assert [(e["lead_id"], e["transferred"]) for e in got] == [("L7", False), ("L8", True)]


def test_customer_gone_when_moving_fails_and_hangs_up_human(
        rt: Runtime, store: Store, events: Any, mocked: responses.RequestsMock) -> None:
    tid = start(rt, mocked)
    callback("agent-status", tid, CallSid=AGENT, CallStatus="in-progress")
    mocked.post(call_url(CUSTOMER), status=400, json={
        "code": 21220, "status": 400, "message": "Call is not in-progress. Cannot redirect."})
    mocked.post(call_url(AGENT), json={"sid": AGENT, "status": "completed"})
    callback("conference", tid, StatusCallbackEvent="participant-join", CallSid=AGENT)
    [event] = events()
    assert event["reason"] == "customer_hung_up"
    hangup = mocked.calls[-1]
    assert hangup.request.url == call_url(AGENT) and form(hangup)["Status"] == ["completed"]


def test_invalid_request_on_the_queue_becomes_one_failed_event(rt: Runtime, events: Any,
                                                               mocked: responses.RequestsMock
                                                               ) -> None:
    bad = make_request(lead_id="L1", transfer_number=None, transfer_id="tr_bad")
    run(tasks.transfer_request, request=bad)
    run(tasks.transfer_request, request=bad)  # redelivered
    run(tasks.transfer_request, request=["not", "a", "dict"])
    got = events()
    assert [(e["type"], e["reason"]) for e in got] == [
        ("transfer.failed", "missing_transfer_number"), ("transfer.failed", "invalid_request")]
    assert got[0]["lead_id"] == "L1" and got[0]["action"] == "resume"
    assert len(mocked.calls) == 0


def test_redelivered_request_does_not_dial_twice(rt: Runtime, mocked: responses.RequestsMock
                                                 ) -> None:
    start(rt, mocked)
    req = make_request(lead_id="L1", call_id=CUSTOMER, transfer_id="tr_L1")
    run(tasks.transfer_request, request=req)
    assert len(mocked.calls) == 1


def test_expiry_fails_with_timeout_and_hangs_up_the_ringing_human(
        rt: Runtime, store: Store, events: Any, mocked: responses.RequestsMock) -> None:
    tid = start(rt, mocked)
    callback("agent-status", tid, CallSid=AGENT, CallStatus="ringing")
    mocked.post(call_url(AGENT), json={"sid": AGENT, "status": "canceled"})
    run(tasks.expire, transfer_id=tid)
    run(tasks.expire, transfer_id=tid)
    assert [e["reason"] for e in events()] == ["timeout"]
    assert form(mocked.calls[-1])["Status"] == ["canceled"]
    assert store.get_flag("L1") is None


def test_not_configured_fails_cleanly(rt: Runtime, events: Any,
                                      mocked: responses.RequestsMock) -> None:
    rt.settings = rt.settings.model_copy(update={"twilio_auth_token": ""})
    run(tasks.transfer_request, request=make_request(lead_id="L1", transfer_id="tr_x"))
    assert [e["reason"] for e in events()] == ["provider_error"]


def test_terminal_event_lost_to_a_broker_outage_is_sent_by_the_sweep(
        rt: Runtime, store: Store, events: Any, mocked: responses.RequestsMock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    tid = start(rt, mocked)
    real_emit = rt.emit

    def broken(event: Any) -> None:
        raise ConnectionError("broker down")

    monkeypatch.setattr(rt, "emit", broken)
    with pytest.raises(ConnectionError):
        callback("agent-status", tid, CallSid=AGENT, CallStatus="busy")
    assert store.get_transfer(tid)["state"] == "failed"  # type: ignore[index]
    monkeypatch.setattr(rt, "emit", real_emit)
    # The transfer is still in the sweep; once the send lease has run out it is resent.
    store.release_once(f"send:{tid}")
    assert store.claim_due(now=10**10) == [tid]
    run(tasks.expire, transfer_id=tid)
    run(tasks.expire, transfer_id=tid)
    got = events()
    assert [(e["type"], e["reason"]) for e in got] == [("transfer.failed", "busy")]
    assert store.r.zscore(Store.DEADLINES, tid) is None


def test_sent_event_leaves_the_sweep(rt: Runtime, store: Store, events: Any,
                                     mocked: responses.RequestsMock) -> None:
    tid = start(rt, mocked)
    callback("agent-status", tid, CallSid=AGENT, CallStatus="busy")
    assert store.r.zscore(Store.DEADLINES, tid) is None
    run(tasks.expire, transfer_id=tid)
    assert len(events()) == 1


def test_outcomes_and_latencies_are_measured(rt: Runtime, mocked: responses.RequestsMock
                                             ) -> None:
    tid = start(rt, mocked)
    mocked.post(call_url(CUSTOMER), json={"sid": CUSTOMER, "status": "in-progress"})
    callback("conference", tid, StatusCallbackEvent="participant-join", CallSid=AGENT)
    callback("conference", tid, StatusCallbackEvent="participant-join", CallSid=CUSTOMER)
    text = rt.metrics.render().decode()
    assert 'warm_transfer_requests_total{account="default",provider="twilio"} 1.0' in text
    assert ('warm_transfer_transfers_total{account="default",outcome="succeeded",'
            'provider="twilio",reason=""} 1.0' in text)
    assert 'warm_transfer_provider_call_seconds_count{provider="twilio"} 1.0' in text
    assert 'warm_transfer_bridge_seconds_count{provider="twilio"} 1.0' in text


def start_detecting(mocked: responses.RequestsMock, lead: str = "L1") -> str:
    mocked.post(participants_url(lead), status=201,
                json={"call_sid": AGENT, "status": "queued", "account_sid": TWILIO_SID})
    req = make_request(lead_id=lead, call_id=CUSTOMER, transfer_id=f"tr_{lead}")
    req["template"]["configurations"]["voicemail_detection"] = True
    run(tasks.transfer_request, request=req)
    return f"tr_{lead}"


def test_voicemail_detection_asks_twilio_to_detect(rt: Runtime,
                                                   mocked: responses.RequestsMock) -> None:
    tid = start_detecting(mocked)
    f = form(mocked.calls[0])
    assert f["MachineDetection"] == ["Enable"]
    # The verdict of a participant's detection goes only to AmdStatusCallback (Twilio
    # warns 21262 without one): ours, signed by Twilio like every callback, with the attempt.
    assert f["AmdStatusCallback"] == [
        f"https://hooks.example.com/twilio/amd?transfer_id={tid}"]
    assert f["AmdStatusCallbackMethod"] == ["POST"]
    assert "AsyncAmd" not in f  # a /Calls parameter; on /Participants a warning (21263)


CONF = "CF" + "1" * 32


def test_machine_answer_is_voicemail_not_success(rt: Runtime, store: Store, events: Any,
                                                 mocked: responses.RequestsMock) -> None:
    tid = start_detecting(mocked)
    mocked.post(call_url(AGENT), json={"sid": AGENT, "status": "completed"})
    callback("agent-status", tid, CallSid=AGENT, CallStatus="in-progress")
    # Twilio may put the leg in the conference before detection has answered.
    callback("conference", tid, StatusCallbackEvent="participant-join", CallSid=AGENT,
             ConferenceSid=CONF)
    assert len(mocked.calls) == 1 and events() == []  # nobody moved while undecided
    callback("amd", tid, CallSid=AGENT, AnsweredBy="machine_start", attempt="0")
    [event] = events()
    assert (event["reason"], event["action"]) == ("voicemail", "resume")
    hangup = mocked.calls[-1]
    assert hangup.request.url == call_url(AGENT) and form(hangup)["Status"] == ["completed"]
    assert all(c.request.url != call_url(CUSTOMER) for c in mocked.calls)  # never moved


@pytest.mark.parametrize("verdict_first", [False, True])
@pytest.mark.parametrize(("answered_by", "moved"), [("human", True), ("unknown", True),
                                                    ("fax", False),
                                                    ("machine_end_beep", False)])
def test_the_bridge_waits_for_both_the_join_and_the_verdict(
        rt: Runtime, events: Any, mocked: responses.RequestsMock, answered_by: str,
        moved: bool, verdict_first: bool) -> None:
    tid = start_detecting(mocked)
    mocked.post(call_url(CUSTOMER), json={"sid": CUSTOMER, "status": "in-progress"})
    mocked.post(call_url(AGENT), json={"sid": AGENT, "status": "completed"})
    join = {"StatusCallbackEvent": "participant-join", "CallSid": AGENT,
            "ConferenceSid": CONF}
    verdict = {"CallSid": AGENT, "AnsweredBy": answered_by, "attempt": "0"}
    steps = [("amd", verdict), ("conference", join)]
    for kind, params in (steps if verdict_first else steps[::-1]):
        callback(kind, tid, **params)
    assert any(c.request.url == call_url(CUSTOMER) for c in mocked.calls) is moved
    # Twilio is never asked who answered: the Call has AnsweredBy only once it has ended.
    assert all(c.request.method == "POST" for c in mocked.calls)
    assert [e["reason"] for e in events()] == ([] if moved else ["voicemail"])


def test_a_verdict_about_an_earlier_destination_changes_nothing(
        rt: Runtime, store: Store, events: Any, mocked: responses.RequestsMock) -> None:
    tid = start_detecting(mocked)
    callback("amd", tid, CallSid="CA" + "9" * 32, AnsweredBy="machine_start", attempt="0")
    callback("amd", tid, CallSid=AGENT, AnsweredBy="machine_start", attempt="3")
    assert events() == [] and len(mocked.calls) == 1
    assert not store.get_transfer(tid).get("answered_by")  # type: ignore[union-attr]


def test_without_detection_nothing_is_asked(rt: Runtime, mocked: responses.RequestsMock
                                            ) -> None:
    tid = start(rt, mocked)
    assert "MachineDetection" not in form(mocked.calls[0])
    assert "AmdStatusCallback" not in form(mocked.calls[0])
    mocked.post(call_url(CUSTOMER), json={"sid": CUSTOMER, "status": "in-progress"})
    callback("conference", tid, StatusCallbackEvent="participant-join", CallSid=AGENT)
    assert mocked.calls[-1].request.url == call_url(CUSTOMER)  # no verdict awaited


def test_briefing_is_announced_to_the_human_before_the_customer_moves(
        rt: Runtime, events: Any, mocked: responses.RequestsMock) -> None:
    mocked.post(participants_url("L1"), status=201,
                json={"call_sid": AGENT, "status": "queued", "account_sid": TWILIO_SID})
    run(tasks.transfer_request, request=make_request(
        lead_id="L1", call_id=CUSTOMER, transfer_id="tr_L1", summary="Wants a refund"))
    # The participant UPDATE is addressed by the conference SID from the join callback
    # (SDK participant.py: "conference_sid: The SID of the conference with the participant
    # to update"); the friendly name there is a 404.
    announce = f"{ACCOUNT}/Conferences/{CONF}/Participants/{AGENT}.json"
    mocked.post(announce, json={"call_sid": AGENT, "status": "connected"})
    mocked.post(call_url(CUSTOMER), json={"sid": CUSTOMER, "status": "in-progress"})
    for _ in range(2):
        callback("conference", "tr_L1", StatusCallbackEvent="participant-join",
                 CallSid=AGENT, ConferenceSid=CONF, FriendlyName="transfer-L1")
    urls = [c.request.url for c in mocked.calls]
    assert urls.count(announce) == 1 and call_url(CUSTOMER) not in urls
    assert not any("transfer-L1/Participants/" in u for u in urls)
    assert form(mocked.calls[-1])["AnnounceUrl"] == [
        "https://hooks.example.com/twilio/whisper?transfer_id=tr_L1"]
    callback("conference", "tr_L1", StatusCallbackEvent="announcement-end", CallSid=AGENT)
    assert mocked.calls[-1].request.url == call_url(CUSTOMER)
    callback("conference", "tr_L1", StatusCallbackEvent="participant-join", CallSid=CUSTOMER)
    assert [e["type"] for e in events()] == ["transfer.succeeded"]


def test_without_a_conference_sid_the_human_is_not_briefed_by_name(
        rt: Runtime, events: Any, mocked: responses.RequestsMock) -> None:
    mocked.post(participants_url("L1"), status=201,
                json={"call_sid": AGENT, "status": "queued", "account_sid": TWILIO_SID})
    run(tasks.transfer_request, request=make_request(
        lead_id="L1", call_id=CUSTOMER, transfer_id="tr_L1", summary="Wants a refund"))
    mocked.post(call_url(CUSTOMER), json={"sid": CUSTOMER, "status": "in-progress"})
    callback("conference", "tr_L1", StatusCallbackEvent="participant-join", CallSid=AGENT)
    assert [c.request.url for c in mocked.calls][1:] == [call_url(CUSTOMER)]


def test_whisper_twiml() -> None:
    from providers.twilio.markup import whisper_twiml

    assert whisper_twiml("Wants a refund") == (
        "<Response><Say>Incoming transfer. Note from the AI assistant: Wants a refund</Say>"
        "</Response>")
    assert whisper_twiml(None) == "<Response><Say>Incoming transfer.</Say></Response>"


def test_at_the_deadline_a_joined_leg_awaiting_its_verdict_gets_one_grace(
        rt: Runtime, store: Store, events: Any, mocked: responses.RequestsMock) -> None:
    tid = start_detecting(mocked)
    callback("conference", tid, StatusCallbackEvent="participant-join", CallSid=AGENT,
             ConferenceSid=CONF)
    mocked.post(call_url(AGENT), json={"sid": AGENT, "status": "completed"})
    run(tasks.expire, transfer_id=tid)
    assert events() == []  # still waiting for the verdict
    assert store.r.zscore(Store.DEADLINES, tid) is not None
    run(tasks.expire, transfer_id=tid)  # the grace is over: timeout, the leg hung up
    [event] = events()
    assert event["reason"] == "timeout"
    assert form(mocked.calls[-1])["Status"] == ["completed"]
