"""Plivo's agent-first handoff: the exact Call API body, the human's XML (briefing,
GetDigits, conference), the customer's transfer, and the worker's state machine; Plivo's
API mocked, the routes through Flask's test client."""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import redis
import responses
from celery import Celery
from flask.testing import FlaskClient

from providers.plivo import markup as plivo
from providers.plivo.handoff import PlivoProvider
from shared.config import Settings
from shared.contracts import parse_request
from shared.store import Store, Transfer
from tests.helpers import drain_queue, make_request, make_transfer
from tests.unit.conftest import AppFactory
from tests.unit.providers.plivo import PLIVO_API, PLIVO_ID
from tests.unit.providers.plivo.test_handoff import bare, context_of
from tests.unit.providers.plivo.test_routes import path_of, post
from workers import tasks
from workers.runtime import Runtime

CUSTOMER = "9b2e6a3c-1111-4c6f-9d7e-000000000001"
HUMAN = "9b2e6a3c-2222-4c6f-9d7e-000000000002"
CALLS_URL = f"{PLIVO_API}/v1/Account/{PLIVO_ID}/Call/"
TRANSFER_URL = f"{CALLS_URL}{CUSTOMER}/"
REQUEST_UUID = "req-0001"


def run(task: Any, **kwargs: Any) -> None:
    task.apply(kwargs=kwargs).get()


def start(mocked: responses.RequestsMock, lead: str = "L1", **config: Any) -> str:
    mocked.post(CALLS_URL, status=201, json={"message": "call fired", "api_id": "x",
                                             "request_uuid": REQUEST_UUID})
    req = make_request(lead_id=lead, call_id=CUSTOMER, provider="plivo",
                       transfer_id=f"tr_{lead}", summary="Wants a refund")
    req["template"]["configurations"].update(handoff="agent_first", **config)
    run(tasks.transfer_request, request=req)
    return f"tr_{lead}"


def callback(kind: str, tid: str, **params: str) -> None:
    run(tasks.provider_callback, provider="plivo", kind=kind, transfer_id=tid, params=params)


def create_bodies(mocked: responses.RequestsMock) -> list[dict[str, Any]]:
    return [json.loads(c.request.body) for c in mocked.calls
            if c.request.url == CALLS_URL and c.request.method == "POST"]


def test_places_the_human_leg_with_the_call_api(rt: Runtime, store: Store, events: Any,
                                                mocked: responses.RequestsMock) -> None:
    tid = start(mocked, voicemail_detection=True, screening=True)
    [body] = create_bodies(mocked)
    answer_url, hangup_url = body.pop("answer_url"), body.pop("hangup_url")
    assert body.pop("ring_url") == \
        f"https://hooks.example.com/plivo/af-ring?transfer_id={tid}"
    machine_url = body.pop("machine_detection_url")
    assert body == {"from": "+14155550199", "to": "+14155550101", "answer_method": "POST",
                    "hangup_method": "POST", "ring_timeout": rt.settings.transfer_ring_timeout,
                    "machine_detection": "true", "machine_detection_time": 5000,
                    "machine_detection_method": "POST",
                    # The SDK's own defaults, sent with every call.
                    "ring_method": "POST", "fallback_method": "POST",  # ring_method: ours too
                    "error_if_parent_not_found": False}
    assert bare(answer_url) == f"https://hooks.example.com/plivo/af-answer?transfer_id={tid}"
    ctx = context_of(rt.settings, answer_url)
    assert ctx is not None and ctx["screening"] == "1" and ctx["voicemail_detection"] == "1"
    assert hangup_url == f"https://hooks.example.com/plivo/af-hangup?transfer_id={tid}"
    assert machine_url == f"https://hooks.example.com/plivo/af-machine?transfer_id={tid}"
    record = store.get_transfer(tid)
    assert record is not None and record["state"] == "dialing"
    assert record["request_uuid"] == REQUEST_UUID and record["handoff"] == "agent_first"
    # The AI keeps the customer: nothing tells it to leave.
    assert events() == []


def test_no_machine_detection_without_voicemail_detection(
        rt: Runtime, mocked: responses.RequestsMock) -> None:
    start(mocked)
    [body] = create_bodies(mocked)
    # (The SDK sends its machine_detection_time/method defaults, inert without these.)
    assert "machine_detection" not in body and "machine_detection_url" not in body


def test_human_answer_xml_briefs_and_asks_for_the_key(settings: Settings) -> None:
    transfer = make_transfer(summary="Wants a refund", screening=True, screening_key="#",
                             screening_timeout=9, destinations=("+14155550101",),
                             outbound_number="+14155550199")
    root = ET.fromstring(plivo.human_answer_xml(settings, transfer))
    assert [e.tag for e in root] == ["Speak", "GetDigits", "Redirect"]
    assert root[0].text == "Incoming transfer. Note from the AI assistant: Wants a refund"
    digits = root[1]
    assert {k: v for k, v in digits.attrib.items() if k != "action"} == {
        "method": "POST", "timeout": "9", "numDigits": "1", "retries": "1",
        "redirect": "true"}
    assert [(e.tag, e.text) for e in digits] == [("Speak", "Press the pound key to take "
                                                  "the call.")]
    assert bare(digits.get("action")) == \
        "https://hooks.example.com/plivo/af-accept?transfer_id=tr_1"
    # No key at all reaches the same action, explicitly.
    assert root[2].text == digits.get("action")


def test_human_answer_xml_without_screening_waits_for_detection(settings: Settings) -> None:
    transfer = make_transfer(summary="Hi", voicemail_detection=True,
                             destinations=("+14155550101",), outbound_number="+14155550199")
    root = ET.fromstring(plivo.human_answer_xml(settings, transfer))
    assert [e.tag for e in root] == ["Wait", "Speak", "Redirect"]
    assert root[0].get("length") == str(plivo.DETECTION_HOLD)
    root = ET.fromstring(plivo.human_answer_xml(settings, replace(
        transfer, voicemail_detection=False)))
    assert [e.tag for e in root] == ["Speak", "Redirect"]


def test_conference_xml(settings: Settings) -> None:
    root = ET.fromstring(plivo.conference_xml(settings, make_transfer()))
    [conf] = root
    assert conf.tag == "Conference" and conf.text == "transfer-tr_1"
    assert conf.attrib == {
        "enterSound": "", "exitSound": "", "startConferenceOnEnter": "true",
        "endConferenceOnExit": "true", "stayAlone": "true",
        "callbackUrl": "https://hooks.example.com/plivo/af-conference?transfer_id=tr_1",
        "callbackMethod": "POST"}


def _answer(client: FlaskClient, settings: Settings, answer_url: str) -> ET.Element:
    resp = post(client, settings, path_of(answer_url), {"CallUUID": HUMAN, "To": "+1415"})
    assert resp.status_code == 200
    return ET.fromstring(resp.data)


def test_routes_key_press_joins_the_conference(
        rt: Runtime, make_app: AppFactory, settings: Settings, store: Store,
        celery_app: Celery, mocked: responses.RequestsMock) -> None:
    client = make_app().test_client()
    tid = start(mocked, screening=True)
    [body] = create_bodies(mocked)
    root = _answer(client, settings, body["answer_url"])
    assert root[0].text == "Incoming transfer. Note from the AI assistant: Wants a refund"
    assert store.get_transfer(tid)["agent_call_sid"] == HUMAN  # type: ignore[index]
    action = root.find("GetDigits").get("action")  # type: ignore[union-attr]
    resp = post(client, settings, path_of(action), {"CallUUID": HUMAN, "Digits": "1"})
    [conf] = ET.fromstring(resp.data)
    assert conf.tag == "Conference" and conf.text == f"transfer-{tid}"
    [msg] = drain_queue(celery_app, "transfers")
    assert msg["kwargs"]["kind"] == "af-accept"
    assert msg["kwargs"]["params"]["accepted"] == "1"


def test_routes_wrong_key_says_goodbye_and_declines(
        rt: Runtime, make_app: AppFactory, settings: Settings, store: Store,
        celery_app: Celery, mocked: responses.RequestsMock) -> None:
    client = make_app().test_client()
    tid = start(mocked, screening=True)
    [body] = create_bodies(mocked)
    action = _answer(client, settings, body["answer_url"]).find("GetDigits").get(
        "action")  # type: ignore[union-attr]
    resp = post(client, settings, path_of(action), {"CallUUID": HUMAN})  # no key
    assert [e.tag for e in ET.fromstring(resp.data)] == ["Speak", "Hangup"]
    assert store.get_transfer(tid)["declined"] == "1"  # type: ignore[index]
    [msg] = drain_queue(celery_app, "transfers")
    assert "accepted" not in msg["kwargs"]["params"]


def test_routes_answer_from_the_signed_context_with_redis_down(
        rt: Runtime, make_app: AppFactory, settings: Settings, store: Store,
        mocked: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch) -> None:
    client = make_app().test_client()
    start(mocked, screening=True)
    [body] = create_bodies(mocked)

    def down(*_: Any, **__: Any) -> Any:
        raise redis.ConnectionError("down")

    monkeypatch.setattr(Store, "get_transfer", down)
    monkeypatch.setattr(Store, "claim_once", down, raising=False)
    root = _answer(client, settings, body["answer_url"])
    assert root[0].text == "Incoming transfer from the AI assistant."
    action = root.find("GetDigits").get("action")  # type: ignore[union-attr]
    resp = post(client, settings, path_of(action), {"CallUUID": HUMAN, "Digits": "1"})
    assert ET.fromstring(resp.data)[0].tag == "Conference"


def test_routes_refuse_an_unsigned_url(make_app: AppFactory, settings: Settings) -> None:
    client = make_app().test_client()
    resp = post(client, settings, "/plivo/af-accept?transfer_id=tr_x", {"Digits": "1"})
    assert resp.status_code == 403


def test_bridge_on_human_enter_and_success_on_customer_enter(
        rt: Runtime, store: Store, events: Any, mocked: responses.RequestsMock) -> None:
    tid = start(mocked)
    mocked.post(TRANSFER_URL, status=202, json={"message": "call transferred", "api_id": "x"})
    callback("af-accept", tid, attempt="0", CallUUID=HUMAN, accepted="1")
    assert store.get_transfer(tid)["state"] == "human_answered"  # type: ignore[index]
    callback("af-conference", tid, ConferenceAction="enter", CallUUID=HUMAN,
             ConferenceUUID="conf-1")
    transfer_call = mocked.calls[-1].request
    assert transfer_call.url == TRANSFER_URL
    body = json.loads(transfer_call.body)
    aleg = body.pop("aleg_url")
    assert body == {"call_uuid": CUSTOMER, "legs": "aleg", "aleg_method": "POST"}
    assert bare(aleg) == f"https://hooks.example.com/plivo/af-join?transfer_id={tid}"
    assert store.get_transfer(tid)["state"] == "bridging"  # type: ignore[index]
    assert events() == []  # nothing before the bridge
    callback("af-conference", tid, ConferenceAction="enter", CallUUID=CUSTOMER)
    [event] = events()
    assert event["type"] == "transfer.succeeded" and event["destination_index"] == 0


def test_busy_then_next_destination(rt: Runtime, store: Store, events: Any,
                                    mocked: responses.RequestsMock) -> None:
    tid = start(mocked, transfer_numbers=["+14155550101", "+14155550102"])
    callback("af-leg", tid, attempt="0", CallStatus="busy", CallUUID=HUMAN)
    bodies = create_bodies(mocked)
    assert [b["to"] for b in bodies] == ["+14155550101", "+14155550102"]
    assert "attempt=1" in bodies[1]["hangup_url"]
    record = store.get_transfer(tid)
    assert record is not None and record["attempt"] == "1" and record["state"] == "dialing"
    # A late callback of the first leg changes nothing.
    callback("af-leg", tid, attempt="0", CallStatus="completed", CallUUID=HUMAN)
    assert len(create_bodies(mocked)) == 2 and events() == []
    callback("af-leg", tid, attempt="1", CallStatus="no-answer")
    [event] = events()
    assert (event["type"], event["reason"]) == ("transfer.failed", "no_answer")
    assert [a["outcome"] for a in event["attempts"]] == ["busy", "no_answer"]


def test_machine_hangs_up_and_fails_as_voicemail(rt: Runtime, store: Store, events: Any,
                                                mocked: responses.RequestsMock) -> None:
    tid = start(mocked, voicemail_detection=True)
    mocked.delete(f"{CALLS_URL}{HUMAN}/", status=204)
    callback("af-machine", tid, attempt="0", Machine="true", CallUUID=HUMAN)
    [event] = events()
    assert (event["type"], event["reason"]) == ("transfer.failed", "voicemail")
    assert mocked.calls[-1].request.method == "DELETE"
    assert not any(c.request.url == TRANSFER_URL for c in mocked.calls)


def test_customer_hangup_while_ringing_cancels_the_human(
        rt: Runtime, store: Store, events: Any, mocked: responses.RequestsMock) -> None:
    tid = start(mocked)
    cancel = mocked.delete(f"{PLIVO_API}/v1/Account/{PLIVO_ID}/Request/{REQUEST_UUID}/",
                           status=204)
    run(tasks.call_status, provider="plivo", call_id=CUSTOMER, status="completed",
        lead_id="L1")
    assert cancel.call_count == 1
    failed = [e for e in events() if e["type"] == "transfer.failed"]
    assert [e["reason"] for e in failed] == ["customer_hung_up"]
    assert store.get_transfer(tid)["state"] == "failed"  # type: ignore[index]


def test_declined_is_the_reason(rt: Runtime, store: Store, events: Any,
                                mocked: responses.RequestsMock) -> None:
    tid = start(mocked, screening=True)
    callback("af-accept", tid, attempt="0", CallUUID=HUMAN, Digits="7")
    [event] = events()
    assert (event["type"], event["reason"]) == ("transfer.failed", "declined")
    parsed = parse_qs(urlsplit(create_bodies(mocked)[0]["answer_url"]).query)
    assert parsed["transfer_id"] == [tid]


def test_human_gone_while_bridging_sends_the_customer_back(
        rt: Runtime, store: Store, events: Any, mocked: responses.RequestsMock) -> None:
    tid = start(mocked)
    mocked.post(TRANSFER_URL, status=202, json={"message": "call transferred", "api_id": "x"})
    callback("af-conference", tid, ConferenceAction="enter", CallUUID=HUMAN,
             ConferenceUUID="conf-1")
    assert store.get_transfer(tid)["state"] == "bridging"  # type: ignore[index]
    callback("af-leg", tid, attempt="0", CallStatus="completed", CallUUID=HUMAN)
    [event] = events()
    assert (event["type"], event["reason"]) == ("transfer.failed", "agent_hung_up")
    moves = [json.loads(c.request.body) for c in mocked.calls if c.request.url == TRANSFER_URL]
    assert "/plivo/af-left?" in moves[-1]["aleg_url"] and len(moves) == 2


@pytest.mark.parametrize("human_left_first", [True, False])
def test_customer_alone_in_a_new_conference_is_moved_out(
        rt: Runtime, store: Store, events: Any, mocked: responses.RequestsMock,
        human_left_first: bool) -> None:
    tid = start(mocked)
    mocked.post(TRANSFER_URL, status=202, json={"message": "call transferred", "api_id": "x"})
    callback("af-conference", tid, ConferenceAction="enter", CallUUID=HUMAN,
             ConferenceUUID="conf-1")
    if human_left_first:
        callback("af-conference", tid, ConferenceAction="exit", CallUUID=HUMAN,
                 ConferenceUUID="conf-1")
    # The human's leaving ended conf-1: the customer starts conf-2, alone.
    callback("af-conference", tid, ConferenceAction="enter", CallUUID=CUSTOMER,
             ConferenceUUID="conf-2")
    [event] = events()
    assert (event["type"], event["reason"]) == ("transfer.failed", "agent_hung_up")
    moves = [json.loads(c.request.body) for c in mocked.calls if c.request.url == TRANSFER_URL]
    assert [bare(m["aleg_url"]) for m in moves] == [
        f"https://hooks.example.com/plivo/af-join?transfer_id={tid}",
        f"https://hooks.example.com/plivo/af-left?transfer_id={tid}"]


def test_late_machine_verdict_after_acceptance_changes_nothing(
        rt: Runtime, store: Store, events: Any, mocked: responses.RequestsMock) -> None:
    tid = start(mocked, voicemail_detection=True)
    mocked.post(TRANSFER_URL, status=202, json={"message": "call transferred", "api_id": "x"})
    callback("af-accept", tid, attempt="0", CallUUID=HUMAN, accepted="1")
    callback("af-machine", tid, attempt="0", Machine="true", CallUUID=HUMAN)
    assert store.get_transfer(tid)["state"] == "human_answered"  # type: ignore[index]
    callback("af-conference", tid, ConferenceAction="enter", CallUUID=HUMAN,
             ConferenceUUID="conf-1")
    callback("af-machine", tid, attempt="0", Machine="true", CallUUID=HUMAN)
    callback("af-conference", tid, ConferenceAction="enter", CallUUID=CUSTOMER,
             ConferenceUUID="conf-1")
    callback("af-machine", tid, attempt="0", Machine="true", CallUUID=HUMAN)
    [event] = events()
    assert event["type"] == "transfer.succeeded"
    assert not any(c.request.method == "DELETE" for c in mocked.calls)  # nobody hung up


def test_verdict_after_the_key_reached_us_changes_nothing(
        rt: Runtime, make_app: AppFactory, settings: Settings, store: Store,
        events: Any, mocked: responses.RequestsMock) -> None:
    client = make_app().test_client()
    tid = start(mocked, screening=True, voicemail_detection=True)
    [body] = create_bodies(mocked)
    action = _answer(client, settings, body["answer_url"]).find("GetDigits").get(
        "action")  # type: ignore[union-attr]
    post(client, settings, path_of(action), {"CallUUID": HUMAN, "Digits": "1"})
    # The worker has not yet heard of the key; the verdict comes first.
    callback("af-machine", tid, attempt="0", Machine="true", CallUUID=HUMAN)
    assert events() == [] and store.get_transfer(tid)["state"] == "dialing"  # type: ignore[index]
    assert not any(c.request.method == "DELETE" for c in mocked.calls)


@pytest.mark.parametrize(("state", "tags"), [
    ("bridging", ["Conference"]), ("failed", ["Redirect"]), ("succeeded", ["Hangup"])])
def test_join_route_by_state(rt: Runtime, make_app: AppFactory, settings: Settings,
                             store: Store, mocked: responses.RequestsMock, state: str,
                             tags: list[str]) -> None:
    client = make_app().test_client()
    tid = start(mocked)
    store.set_fields(tid, state=state)
    url = plivo.af_url(settings, plivo.AF_JOIN_PATH, store.get_record(tid) or make_transfer())
    root = ET.fromstring(post(client, settings, path_of(url), {"CallUUID": CUSTOMER}).data)
    assert [e.tag for e in root] == tags
    if state == "bridging":
        conf = root[0]
        assert conf.get("stayAlone") == "false" and conf.get("endConferenceOnExit") == "true"
        assert "/plivo/af-left?" in conf.get("action", "")
    if state == "failed":
        assert root[0].text == settings.plivo_resume_url


@pytest.mark.parametrize(("state", "resume", "tags"), [
    ("succeeded", "https://ai.example.com/resume", ["Hangup"]),
    ("bridging", "https://ai.example.com/resume", ["Redirect"]),
    ("failed", "", ["Speak", "Hangup"])])
def test_left_route(rt: Runtime, make_app: AppFactory, settings: Settings, store: Store,
                    mocked: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch,
                    state: str, resume: str, tags: list[str]) -> None:
    monkeypatch.setattr(settings, "plivo_resume_url", resume)
    client = make_app().test_client()
    tid = start(mocked)
    store.set_fields(tid, state=state)
    url = plivo.af_url(settings, plivo.AF_LEFT_PATH, store.get_record(tid) or make_transfer())
    root = ET.fromstring(post(client, settings, path_of(url), {"CallUUID": CUSTOMER}).data)
    assert [e.tag for e in root] == tags


def _interrupted(store: Store, **fields: str) -> Transfer:
    raw = make_request(lead_id="L9", call_id=CUSTOMER, provider="plivo")
    raw["template"]["configurations"]["handoff"] = "agent_first"
    req = parse_request(raw, store.get_number)
    store.begin(req)
    store.set_fields(req.transfer_id, dial_attempted="0", **fields)
    return store.get_record(req.transfer_id) or make_transfer()


def test_an_interrupted_dial_found_by_its_ring_is_not_placed_again(
        rt: Runtime, store: Store, mocked: responses.RequestsMock) -> None:
    transfer = _interrupted(store, dial_attempted_at=repr(time.time()),
                            request_uuid="req-seen-ringing")
    PlivoProvider().start(rt, transfer)
    assert create_bodies(mocked) == []
    assert store.get_transfer(transfer.transfer_id)["state"] == "dialing"  # type: ignore[index]


def test_an_interrupted_dial_never_heard_of_is_placed(
        rt: Runtime, store: Store, mocked: responses.RequestsMock) -> None:
    mocked.post(CALLS_URL, status=201, json={"message": "call fired", "api_id": "x",
                                             "request_uuid": REQUEST_UUID})
    transfer = _interrupted(store, dial_attempted_at=repr(time.time() - 60))
    PlivoProvider().start(rt, transfer)
    assert len(create_bodies(mocked)) == 1


@pytest.mark.parametrize("field", ["RequestUUID", "ALegRequestUUID"])
def test_ring_route_records_the_leg(rt: Runtime, make_app: AppFactory, settings: Settings,
                                    store: Store, mocked: responses.RequestsMock,
                                    field: str) -> None:
    tid = start(mocked)
    store.set_fields(tid, request_uuid="")
    client = make_app().test_client()
    resp = post(client, settings, f"/plivo/af-ring?transfer_id={tid}",
                {"CallUUID": HUMAN, field: REQUEST_UUID, "CallStatus": "ringing"})
    assert resp.status_code == 200
    record = store.get_transfer(tid) or {}
    assert record["request_uuid"] == REQUEST_UUID and "agent_call_sid" not in record
