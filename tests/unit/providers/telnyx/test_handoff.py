"""The Telnyx handoff, driven through the task functions, with Telnyx's API mocked: the
exact REST requests and the state machine's answers to each webhook."""

from __future__ import annotations

import base64
import json
from typing import Any

import responses

from providers.telnyx.callbacks import failure_reason
from shared.store import Store
from tests.helpers import make_request, make_transfer
from workers import tasks
from workers.runtime import Runtime

API = "https://telnyx.test/v2"
CUSTOMER = "v3:customer"
AGENT = "v3:human-1"
AGENT2 = "v3:human-2"


def run(task: Any, **kwargs: Any) -> None:
    task.apply(kwargs=kwargs).get()


def body(call: Any) -> dict[str, Any]:
    return dict(json.loads(call.request.body))


def dialed(mocked: responses.RequestsMock, ccid: str = AGENT, status: int = 200) -> None:
    mocked.post(f"{API}/calls", status=status, json={"data": {
        "call_control_id": ccid, "call_leg_id": "leg", "call_session_id": "session",
        "is_alive": False, "record_type": "call"}} if status == 200 else
        {"errors": [{"code": "10015", "title": "Invalid from"}]})


def action(mocked: responses.RequestsMock, ccid: str, name: str, status: int = 200) -> None:
    mocked.post(f"{API}/calls/{ccid}/actions/{name}", status=status,
                json={"data": {"result": "ok"}} if status == 200 else
                {"errors": [{"code": "90018", "title": "Call has already ended"}]})


def start(mocked: responses.RequestsMock, lead: str = "L1", **configurations: Any) -> str:
    dialed(mocked)
    req = make_request(lead_id=lead, call_id=CUSTOMER, transfer_id=f"tr_{lead}",
                       provider="telnyx", **configurations.pop("extra", {}))
    req["template"]["configurations"].update(configurations)
    run(tasks.transfer_request, request=req)
    return f"tr_{lead}"


def webhook(tid: str, event_type: str, ccid: str = AGENT, attempt: str = "0",
            **payload: str) -> None:
    run(tasks.provider_callback, provider="telnyx", kind="call-event", transfer_id=tid,
        params={"event_type": event_type, "event_id": event_type, "call_control_id": ccid,
                "attempt": attempt, **payload})


def test_the_human_is_dialed_with_our_client_state(rt: Runtime, store: Store,
                                                   mocked: responses.RequestsMock) -> None:
    tid = start(mocked)
    [call] = mocked.calls
    assert call.request.method == "POST" and call.request.url == f"{API}/calls"
    assert call.request.headers["Authorization"] == "Bearer telnyx-test-key"
    sent = body(call)
    assert sent == {
        "connection_id": "telnyx-test-app", "to": "+14155550101", "from": "+14155550199",
        "timeout_secs": 30, "client_state": sent["client_state"],
        "webhook_url": "https://hooks.example.com/telnyx/webhook",
        "command_id": f"{tid}:0:dial"}
    assert json.loads(base64.b64decode(sent["client_state"])) == {"wt": tid, "a": "0"}
    rec = store.get_transfer(tid)
    assert rec is not None and rec["state"] == "dialing" and rec["agent_call_sid"] == AGENT
    assert store.transfer_for_call("telnyx", AGENT) == tid


def test_detection_asked_when_voicemail_detection_is_on(rt: Runtime,
                                                        mocked: responses.RequestsMock) -> None:
    start(mocked, voicemail_detection=True)
    assert body(mocked.calls[0])["answering_machine_detection"] == "detect"


def test_briefing_then_bridge_then_stream_stopped_then_success(
        rt: Runtime, store: Store, events: Any, mocked: responses.RequestsMock) -> None:
    tid = start(mocked, extra={"summary": "Wants a refund"})
    action(mocked, AGENT, "speak")
    webhook(tid, "call.initiated")
    webhook(tid, "call.answered")
    speak = body(mocked.calls[-1])
    assert mocked.calls[-1].request.url == f"{API}/calls/{AGENT}/actions/speak"
    assert speak == {"payload": "Wants a refund", "voice": "female", "language": "en-US",
                     "service_level": "basic", "client_state": speak["client_state"],
                     "command_id": f"{tid}:0:speak"}
    assert store.get_transfer(tid)["state"] == "human_answered"  # type: ignore[index]

    action(mocked, CUSTOMER, "bridge")
    action(mocked, CUSTOMER, "streaming_stop")
    webhook(tid, "call.speak.ended", status="completed")
    bridge, stop = mocked.calls[-2], mocked.calls[-1]
    assert bridge.request.url == f"{API}/calls/{CUSTOMER}/actions/bridge"
    # No client_state: the customer's call keeps the platform's.
    assert body(bridge) == {"call_control_id": AGENT, "command_id": f"{tid}:0:bridge"}
    assert stop.request.url == f"{API}/calls/{CUSTOMER}/actions/streaming_stop"
    assert events() == []  # not yet: success is the bridge's webhook

    webhook(tid, "call.bridged", state="bridged")
    webhook(tid, "call.bridged", state="bridged")  # a duplicate changes nothing
    [event] = events()
    assert (event["type"], event["action"], event["call_id"]) == (
        "transfer.succeeded", "end_conversation", CUSTOMER)


def test_answer_before_the_detection_verdict_waits_for_it(
        rt: Runtime, store: Store, mocked: responses.RequestsMock) -> None:
    tid = start(mocked, voicemail_detection=True)
    webhook(tid, "call.answered")
    assert len(mocked.calls) == 1  # nothing bridged before the verdict
    action(mocked, CUSTOMER, "bridge")
    action(mocked, CUSTOMER, "streaming_stop")
    webhook(tid, "call.machine.detection.ended", result="human")
    assert mocked.calls[1].request.url == f"{API}/calls/{CUSTOMER}/actions/bridge"


def test_a_machine_is_hung_up_and_the_next_destination_dialed(
        rt: Runtime, store: Store, events: Any, mocked: responses.RequestsMock) -> None:
    tid = start(mocked, voicemail_detection=True, extra={"template": {"configurations": {
        "transfer_numbers": ["+14155550101", "+14155550102"],
        "voicemail_detection": True}}})
    action(mocked, AGENT, "hangup")
    dialed(mocked, AGENT2)
    webhook(tid, "call.answered")
    webhook(tid, "call.machine.detection.ended", result="machine")
    hangup, redial = mocked.calls[1], mocked.calls[2]
    assert hangup.request.url == f"{API}/calls/{AGENT}/actions/hangup"
    assert body(redial)["to"] == "+14155550102"
    assert json.loads(base64.b64decode(body(redial)["client_state"]))["a"] == "1"
    # The machine's call.hangup (attempt 0) comes after the move: ignored.
    webhook(tid, "call.hangup", hangup_cause="normal_clearing")
    assert store.get_transfer(tid)["agent_call_sid"] == AGENT2  # type: ignore[index]
    assert events() == []


def test_fallback_on_keeps_the_next_destination_for_the_outcomes_it_names(
        rt: Runtime, events: Any, mocked: responses.RequestsMock) -> None:
    tid = start(mocked, extra={"template": {"configurations": {
        "transfer_numbers": ["+14155550101", "+14155550102"],
        "fallback_on": ["no_answer"]}}})
    webhook(tid, "call.hangup", hangup_cause="user_busy", sip_hangup_cause="486")
    [event] = events()
    assert (event["type"], event["reason"]) == ("transfer.failed", "busy")
    assert [a["outcome"] for a in event["attempts"]] == ["busy"]
    assert len(mocked.calls) == 1  # the second number was never dialed


def test_busy_on_the_last_destination_resumes_the_ai(
        rt: Runtime, events: Any, mocked: responses.RequestsMock) -> None:
    tid = start(mocked)
    webhook(tid, "call.hangup", hangup_cause="user_busy", sip_hangup_cause="486")
    [event] = events()
    assert (event["type"], event["reason"], event["action"]) == (
        "transfer.failed", "busy", "resume")
    assert len(mocked.calls) == 1  # nothing touched the customer's call
    # Telnyx's own cause beside ours (callbacks/call-hangup).
    assert (event["sip_code"], event["provider_cause"]) == (486, "user_busy")
    assert [(a["sip_code"], a["provider_cause"]) for a in event["attempts"]] == [
        (486, "user_busy")]


def test_screening_wrong_key_declines_and_hangs_up(
        rt: Runtime, events: Any, mocked: responses.RequestsMock) -> None:
    tid = start(mocked, screening=True, screening_key="#", screening_timeout=5)
    action(mocked, AGENT, "gather_using_speak")
    webhook(tid, "call.answered")
    gather = body(mocked.calls[-1])
    assert gather["payload"].endswith("Press the pound key to take the call.")
    assert (gather["maximum_digits"], gather["timeout_millis"]) == (1, 5000)
    action(mocked, AGENT, "hangup")
    webhook(tid, "call.gather.ended", digits="1", status="valid")
    assert mocked.calls[-1].request.url == f"{API}/calls/{AGENT}/actions/hangup"
    [event] = events()
    assert event["reason"] == "declined"


def test_customer_hangs_up_while_the_human_rings(
        rt: Runtime, events: Any, mocked: responses.RequestsMock) -> None:
    tid = start(mocked)
    action(mocked, AGENT, "hangup")
    run(tasks.call_status, provider="telnyx", call_id=CUSTOMER, status="hangup")
    assert mocked.calls[-1].request.url == f"{API}/calls/{AGENT}/actions/hangup"
    types = [(e["type"], e.get("reason")) for e in events()]
    assert types == [("transfer.failed", "customer_hung_up"), ("call.ended", None)]
    assert tid


def test_a_refused_customer_caller_id_is_replaced_by_ours(
        rt: Runtime, mocked: responses.RequestsMock) -> None:
    dialed(mocked, status=422)
    dialed(mocked)
    req = make_request(lead_id="L1", call_id=CUSTOMER, transfer_id="tr_L1", provider="telnyx")
    req["lead"]["phone_number"] = "+14155550150"
    req["template"]["configurations"]["caller_id"] = "customer"
    run(tasks.transfer_request, request=req)
    assert [body(c)["from"] for c in mocked.calls] == ["+14155550150", "+14155550199"]


def test_deadline_gives_an_answered_live_leg_more_time_once(
        rt: Runtime, store: Store, mocked: responses.RequestsMock) -> None:
    tid = start(mocked, voicemail_detection=True)
    webhook(tid, "call.answered")
    mocked.get(f"{API}/calls/{AGENT}", json={"data": {"call_control_id": AGENT,
                                                      "is_alive": True, "record_type": "call"}})
    provider = tasks.get_provider("telnyx")
    assert provider is not None
    assert provider.reconcile(rt, store.get_record(tid) or make_transfer()) is True
    assert provider.reconcile(rt, store.get_record(tid) or make_transfer()) is False


def test_hangup_causes() -> None:
    assert failure_reason({"hangup_cause": "user_busy"}, answered=False) == "busy"
    assert failure_reason({"hangup_cause": "timeout"}, answered=False) == "no_answer"
    assert failure_reason({"hangup_cause": "call_rejected"}, answered=False) == "declined"
    assert failure_reason({"hangup_cause": "normal_clearing"}, answered=True) == "agent_hung_up"
    assert failure_reason({"hangup_cause": "unspecified", "sip_hangup_cause": "486"},
                          answered=False) == "busy"
    assert failure_reason({"hangup_cause": "unspecified"}, answered=False) == "failed"


def test_an_extension_is_sent_on_the_answered_leg_and_the_briefing_waits_for_it(
        rt: Runtime, store: Store, celery_app: Any, mocked: responses.RequestsMock) -> None:
    from providers.telnyx.callbacks import dtmf_playout
    from tests.helpers import drain_queue

    tid = start(mocked, transfer_number=None, extra={"summary": "Wants a refund"},
                transfer_numbers=[{"number": "+14155550101", "extension": "ww12#"}])
    action(mocked, AGENT, "send_dtmf")
    action(mocked, AGENT, "speak")
    webhook(tid, "call.answered")
    webhook(tid, "call.answered")  # a duplicate sends the digits once
    [dtmf] = [c for c in mocked.calls if c.request.url.endswith("/send_dtmf")]
    assert dtmf.request.url == f"{API}/calls/{AGENT}/actions/send_dtmf"
    sent = body(dtmf)
    assert sent == {"digits": "ww12#", "duration_millis": 250,
                    "client_state": sent["client_state"], "command_id": f"{tid}:0:send_dtmf"}
    assert not any(c.request.url.endswith("/speak") for c in mocked.calls)
    # send_dtmf reports nothing: our own callback, once the digits have played out.
    [later] = [m for m in drain_queue(celery_app, "transfers")
               if m["kwargs"].get("kind") == "extension-sent"]
    assert later["kwargs"] == {"provider": "telnyx", "kind": "extension-sent",
                               "transfer_id": tid,
                               "params": {"call_control_id": AGENT, "attempt": "0"}}
    assert dtmf_playout("ww12#") == 3 * 0.5 + 2 * 0.5 + 1.0

    run(tasks.provider_callback, **later["kwargs"])
    [speak] = [c for c in mocked.calls if c.request.url.endswith("/speak")]
    assert body(speak)["payload"] == "Wants a refund"
    # A repeated delivery of our callback briefs nobody twice.
    run(tasks.provider_callback, **later["kwargs"])
    assert len([c for c in mocked.calls if c.request.url.endswith("/speak")]) == 1


def test_an_extension_without_briefing_bridges_after_the_playout(
        rt: Runtime, store: Store, celery_app: Any, mocked: responses.RequestsMock) -> None:
    tid = start(mocked, transfer_number=None,
                transfer_numbers=[{"number": "+14155550101", "extension": "9"}])
    action(mocked, AGENT, "send_dtmf")
    webhook(tid, "call.answered")
    assert not any(c.request.url.endswith("/bridge") for c in mocked.calls)
    action(mocked, CUSTOMER, "bridge")
    action(mocked, CUSTOMER, "streaming_stop")
    run(tasks.provider_callback, provider="telnyx", kind="extension-sent", transfer_id=tid,
        params={"call_control_id": AGENT, "attempt": "0"})
    assert mocked.calls[-2].request.url == f"{API}/calls/{CUSTOMER}/actions/bridge"


def test_a_sip_destination_is_dialed_with_custom_headers_and_credentials(
        rt: Runtime, mocked: responses.RequestsMock, monkeypatch: Any) -> None:
    # The default account's SIP credentials (TELNYX_SIP_AUTH_USERNAME / _PASSWORD).
    monkeypatch.setattr(rt, "settings", rt.settings.model_copy(update={
        "telnyx_sip_auth_username": "agent-desk", "telnyx_sip_auth_password": "desk-secret"}))
    tid = start(mocked, transfer_number=None, extra={"summary": "Wants a refund"},
                transfer_numbers=["sip:desk-7@pbx.example.com"],
                sip_headers={"X-Queue": "billing"})
    sent = body(mocked.calls[0])
    assert sent["to"] == "sip:desk-7@pbx.example.com"
    assert sent["custom_headers"] == [
        {"name": "X-Transfer-Id", "value": tid}, {"name": "X-Lead-Id", "value": "L1"},
        {"name": "X-Transfer-Summary", "value": "Wants a refund"},
        {"name": "X-Queue", "value": "billing"}]
    assert (sent["sip_auth_username"], sent["sip_auth_password"]) == ("agent-desk",
                                                                      "desk-secret")


def test_a_ring_group_dials_every_member_and_bridges_the_first_to_answer(
        rt: Runtime, store: Store, events: Any, mocked: responses.RequestsMock) -> None:
    ids = iter([AGENT, AGENT2])
    mocked.add_callback(responses.POST, f"{API}/calls", callback=lambda _req: (
        200, {}, json.dumps({"data": {"call_control_id": next(ids), "call_leg_id": "leg",
                                      "call_session_id": "s", "is_alive": False,
                                      "record_type": "call"}})))
    req = make_request(lead_id="L1", call_id=CUSTOMER, transfer_id="tr_L1", provider="telnyx",
                       transfer_number=None)
    req["template"]["configurations"] = {"transfer_numbers": [
        {"group": ["+14155550101", "+14155550102"]}, "+14155550103"]}
    run(tasks.transfer_request, request=req)
    dials = [body(c) for c in mocked.calls]
    assert [d["to"] for d in dials] == ["+14155550101", "+14155550102"]
    assert [d["command_id"] for d in dials] == ["tr_L1:0:dial:0", "tr_L1:0:dial:1"]
    rec = store.get_transfer("tr_L1")
    assert rec is not None and rec["state"] == "dialing" and not rec.get("agent_call_sid")

    # The second answers first: claimed, the first member's leg hung up, then bridged.
    action(mocked, AGENT, "hangup")
    action(mocked, CUSTOMER, "bridge")
    action(mocked, CUSTOMER, "streaming_stop")
    webhook("tr_L1", "call.answered", ccid=AGENT2)
    webhook("tr_L1", "call.answered", ccid=AGENT)  # too late: hung up
    hangups = [c for c in mocked.calls if c.request.url.endswith(f"{AGENT}/actions/hangup")]
    assert len(hangups) >= 1
    [bridge] = [c for c in mocked.calls if c.request.url.endswith("/bridge")]
    assert body(bridge)["call_control_id"] == AGENT2
    webhook("tr_L1", "call.hangup", ccid=AGENT, hangup_cause="normal_clearing")
    webhook("tr_L1", "call.bridged", ccid=AGENT2)
    [event] = events()
    assert (event["type"], event["destination_index"], event["destination_member"]) == (
        "transfer.succeeded", 0, 1)


def test_a_ring_group_none_answers_then_the_next_destination(
        rt: Runtime, store: Store, mocked: responses.RequestsMock) -> None:
    ids = iter([AGENT, AGENT2, "v3:human-3"])
    mocked.add_callback(responses.POST, f"{API}/calls", callback=lambda _req: (
        200, {}, json.dumps({"data": {"call_control_id": next(ids), "call_leg_id": "leg",
                                      "call_session_id": "s", "is_alive": False,
                                      "record_type": "call"}})))
    req = make_request(lead_id="L1", call_id=CUSTOMER, transfer_id="tr_L1", provider="telnyx",
                       transfer_number=None)
    req["template"]["configurations"] = {"transfer_numbers": [
        {"group": ["+14155550101", "+14155550102"]}, "+14155550103"]}
    run(tasks.transfer_request, request=req)
    webhook("tr_L1", "call.hangup", ccid=AGENT, hangup_cause="user_busy")
    assert store.get_transfer("tr_L1")["attempt"] == "0"  # type: ignore[index]
    webhook("tr_L1", "call.hangup", ccid=AGENT2, hangup_cause="timeout")
    rec = store.get_transfer("tr_L1")
    assert rec is not None and rec["attempt"] == "1" and rec["tried"] == "no_answer"
    assert body(mocked.calls[-1])["to"] == "+14155550103"


def test_a_ring_group_member_on_voicemail_never_takes_the_call(
        rt: Runtime, store: Store, mocked: responses.RequestsMock) -> None:
    ids = iter([AGENT, AGENT2])
    mocked.add_callback(responses.POST, f"{API}/calls", callback=lambda _req: (
        200, {}, json.dumps({"data": {"call_control_id": next(ids), "call_leg_id": "leg",
                                      "call_session_id": "s", "is_alive": False,
                                      "record_type": "call"}})))
    req = make_request(lead_id="L1", call_id=CUSTOMER, transfer_id="tr_L1", provider="telnyx",
                       transfer_number=None)
    req["template"]["configurations"] = {"voicemail_detection": True, "transfer_numbers": [
        {"group": ["+14155550101", "+14155550102"]}]}
    run(tasks.transfer_request, request=req)
    action(mocked, AGENT, "hangup")
    action(mocked, CUSTOMER, "bridge")
    action(mocked, CUSTOMER, "streaming_stop")
    webhook("tr_L1", "call.answered", ccid=AGENT)  # a machine answers first...
    assert not store.get_transfer("tr_L1").get("agent_call_sid")  # type: ignore[union-attr]
    webhook("tr_L1", "call.machine.detection.ended", ccid=AGENT, result="machine")
    assert mocked.calls[-1].request.url == f"{API}/calls/{AGENT}/actions/hangup"
    webhook("tr_L1", "call.answered", ccid=AGENT2)  # ...a person second
    webhook("tr_L1", "call.machine.detection.ended", ccid=AGENT2, result="human")
    rec = store.get_transfer("tr_L1")
    assert rec is not None and (rec["agent_call_sid"], rec["member"]) == (AGENT2, "1")
    [bridge] = [c for c in mocked.calls if c.request.url.endswith("/bridge")]
    assert body(bridge)["call_control_id"] == AGENT2
