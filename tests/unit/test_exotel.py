"""Exotel: the dial-up answers, status parsing in both encodings, the REST client, and the
handoff through the task functions."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
import responses
from celery import Celery
from flask.testing import FlaskClient

from shared.config import Settings
from shared.store import Store
from tests.helpers import drain_queue, make_request
from tests.unit.conftest import EXOTEL_API, EXOTEL_SID, AppFactory
from workers import tasks
from workers.providers import exotel
from workers.runtime import Runtime

CALL = "c0ffee00c0ffee00c0ffee00c0ffee00"
DETAILS_URL = f"{EXOTEL_API}/v1/Accounts/{EXOTEL_SID}/Calls/{CALL}.json"
TOKEN = "exo-webhook-secret"


def run(task: Any, **kwargs: Any) -> None:
    task.apply(kwargs=kwargs).get()


def start(lead: str = "L1") -> str:
    req = make_request(lead_id=lead, call_id=CALL, provider="exotel", transfer_id=f"tr_{lead}",
                       transfer_number="+919999900000", outbound_number="+919999900001")
    run(tasks.transfer_request, request=req)
    return f"tr_{lead}"


@pytest.fixture
def client(make_app: AppFactory) -> FlaskClient:
    return make_app().test_client()


# the handoff

def test_start_sets_flag_index_and_tells_the_ai_to_leave(rt: Runtime, store: Store,
                                                         events: Any) -> None:
    tid = start()
    assert store.get_flag("L1") == "+919999900000"
    assert store.transfer_for_call("exotel", CALL) == tid
    assert store.get_transfer(tid)["state"] == "dialing"  # type: ignore[index]
    [event] = events()
    assert (event["type"], event["action"]) == ("transfer.disconnect_ai", "disconnect")


def test_status_callback_with_human_answered_is_success(rt: Runtime, store: Store,
                                                        events: Any) -> None:
    start()
    params = exotel.normalise_status({"CallSid": CALL, "Status": "completed", "Legs": [
        {"Status": "completed", "OnCallDuration": 40}, {"Status": "completed",
                                                        "OnCallDuration": 31}]})
    run(tasks.call_status, provider="exotel", call_id=CALL, status="completed", params=params)
    got = events()
    assert [e["type"] for e in got] == ["transfer.disconnect_ai", "transfer.succeeded",
                                        "call.ended"]
    assert got[2]["transferred"] is True
    assert store.get_flag("L1") is None


@pytest.mark.parametrize(("leg2", "reason"), [("busy", "busy"), ("no-answer", "no_answer"),
                                              ("failed", "failed")])
def test_status_callback_with_human_not_reached(rt: Runtime, events: Any, leg2: str,
                                                reason: str) -> None:
    start()
    params = exotel.normalise_status({"CallSid": CALL, "Status": "completed",
                                      "Legs[0][Status]": "completed",
                                      "Legs[1][Status]": leg2, "Legs[1][OnCallDuration]": "0"})
    run(tasks.call_status, provider="exotel", call_id=CALL, status="completed", params=params)
    failed = [e for e in events() if e["type"] == "transfer.failed"]
    assert [(e["reason"], e["action"]) for e in failed] == [(reason, "resume")]


def test_passthru_settles_by_call_id(rt: Runtime, events: Any) -> None:
    start()
    run(tasks.provider_callback, provider="exotel", kind="passthru", transfer_id="",
        call_id=CALL, params={"CallSid": CALL, "DialCallStatus": "no-answer"})
    run(tasks.provider_callback, provider="exotel", kind="passthru", transfer_id="",
        call_id=CALL, params={"CallSid": CALL, "DialCallStatus": "completed"})
    assert [e["reason"] for e in events() if e["type"].startswith("transfer.f")] == [
        "no_answer"]


def test_deadline_reconciles_through_call_details(rt: Runtime, events: Any,
                                                  mocked: responses.RequestsMock) -> None:
    tid = start()
    mocked.get(DETAILS_URL, json={"Call": {"Sid": CALL, "Status": "in-progress", "Details": {
        "ConversationDuration": 12, "Leg1Status": "in-progress", "Leg2Status": "in-progress",
        "Legs": [{"Leg": {"Id": 1, "OnCallDuration": 20}},
                 {"Leg": {"Id": 2, "OnCallDuration": 12}}]}}})
    run(tasks.expire, transfer_id=tid)
    [request] = mocked.calls
    assert request.request.url == DETAILS_URL + "?details=true"
    auth = base64.b64encode(b"exo-key:exo-token").decode()
    assert request.request.headers["Authorization"] == f"Basic {auth}"
    assert [e["type"] for e in events()][-1] == "transfer.succeeded"


def test_deadline_waits_while_the_call_cannot_tell_then_times_out(
        rt: Runtime, store: Store, events: Any, mocked: responses.RequestsMock) -> None:
    tid = start()
    store.set_fields(tid, dial_up_served="1")  # as /exotel/dial-up records it
    mocked.get(DETAILS_URL, json={"Call": {"Sid": CALL, "Status": "in-progress", "Details": {
        "ConversationDuration": 0, "Leg1Status": "in-progress", "Leg2Status": None,
        "Legs": [{"Leg": {"Id": 1, "OnCallDuration": 20}}]}}})
    run(tasks.expire, transfer_id=tid)
    assert [e["type"] for e in events()] == ["transfer.disconnect_ai"]
    due = store.r.zscore(Store.DEADLINES, tid)
    assert due is not None and due > time.time()
    store.set_fields(tid, started_at=repr(time.time() - rt.settings.transfer_flag_ttl))
    run(tasks.expire, transfer_id=tid)
    assert [e["reason"] for e in events()] == ["timeout"]


def test_deadline_without_a_dial_up_fails_at_once(rt: Runtime, events: Any,
                                                  mocked: responses.RequestsMock) -> None:
    # Exotel never asked whom to dial: the AI most likely never left; it resumes now.
    tid = start()
    mocked.get(DETAILS_URL, json={"Call": {"Sid": CALL, "Status": "in-progress", "Details": {
        "ConversationDuration": 0, "Leg1Status": "in-progress", "Leg2Status": None,
        "Legs": [{"Leg": {"Id": 1, "OnCallDuration": 20}}]}}})
    run(tasks.expire, transfer_id=tid)
    assert [e["reason"] for e in events() if e["type"] == "transfer.failed"] == ["timeout"]


def test_call_details_client_retries_transient_errors(settings: Settings,
                                                      mocked: responses.RequestsMock) -> None:
    mocked.get(DETAILS_URL, status=503)
    with pytest.raises(exotel.TransientProviderError):
        exotel.ExotelClient(settings).call_details(CALL)
    assert len(mocked.calls) == 3  # one try and two retries
    mocked.replace(responses.GET, DETAILS_URL, status=401, json={})
    with pytest.raises(exotel.PermanentProviderError):
        exotel.ExotelClient(settings).call_details(CALL)


def test_normalise_status_both_encodings() -> None:
    as_json = exotel.normalise_status({"CallSid": "c", "Status": "completed", "Legs": [
        {"Status": "completed", "OnCallDuration": 9}, {"Status": "busy",
                                                       "OnCallDuration": 0}]})
    as_form = exotel.normalise_status({"CallSid": "c", "Status": "completed",
                                       "Legs[0][Status]": "completed",
                                       "Legs[0][OnCallDuration]": "9",
                                       "Legs[1][Status]": "busy",
                                       "Legs[1][OnCallDuration]": "0"})
    assert as_json == as_form == {"CallSid": "c", "Status": "completed", "Leg2Status": "busy",
                                  "Leg2Duration": "0"}


# the webhooks

def pending(store: Store) -> str:
    from shared.contracts import parse_request
    from shared.store import State

    req = parse_request(make_request(lead_id="L1", call_id=CALL, provider="exotel",
                                     transfer_number="+919999900000",
                                     outbound_number="+919999900001"), store.get_number,
                        allowed_destinations="IN")
    store.begin(req)
    store.set_flag("L1", req.transfer_number)
    store.transition(req.transfer_id, State.DIALING, "ai told to leave")
    return req.transfer_id


def test_dial_up_answers_the_number_as_text(client: FlaskClient, store: Store,
                                            celery_app: Celery) -> None:
    pending(store)
    resp = client.get(f"/exotel/dial-up?token={TOKEN}&CallSid={CALL}&CallFrom=x&CallTo=y")
    assert resp.status_code == 200
    assert resp.mimetype == "text/plain"
    assert resp.get_data(as_text=True) == "+919999900000"
    # Served straight from the store: marked on the record, nothing to enqueue.
    tid = store.transfer_for_call("exotel", CALL)
    assert store.get_transfer(tid)["dial_up_served"] == "1"  # type: ignore[arg-type,index]
    assert "dial-up served" in store.timeline(tid)[-1]["note"]  # type: ignore[arg-type]
    assert drain_queue(celery_app, "transfers") == []


def test_dial_up_head_has_the_same_headers_and_enqueues_nothing(
        client: FlaskClient, store: Store, celery_app: Celery) -> None:
    tid = pending(store)
    head = client.head(f"/exotel/dial-up?token={TOKEN}&CallSid={CALL}")
    assert head.status_code == 200 and head.data == b""
    assert "dial_up_served" not in store.get_transfer(tid)  # type: ignore[operator]
    get = client.get(f"/exotel/dial-up?token={TOKEN}&CallSid={CALL}")
    assert head.headers["Content-Type"] == get.headers["Content-Type"]
    assert head.headers["Content-Length"] == get.headers["Content-Length"]
    assert drain_queue(celery_app, "transfers") == []


def test_dial_up_programmable_connect_json(make_app: AppFactory, store: Store) -> None:
    app = make_app(exotel_dial_up_format="json")
    pending(store)
    resp = app.test_client().get(f"/exotel/dial-up?token={TOKEN}&CallSid={CALL}")
    assert resp.mimetype == "application/json"
    assert json.loads(resp.data) == {"destination": {"numbers": ["+919999900000"]},
                                     "outgoing_phone_number": "+919999900001",
                                     "max_ringing_duration": 30, "record": False}


def test_dial_up_finds_the_transfer_by_custom_field(client: FlaskClient, store: Store) -> None:
    pending(store)
    resp = client.get(f"/exotel/dial-up?token={TOKEN}&CallSid=other&CustomField=L1")
    assert resp.get_data(as_text=True) == "+919999900000"


def test_dial_up_with_nothing_pending_is_404_and_recorded(client: FlaskClient, store: Store,
                                                          celery_app: Celery) -> None:
    tid = pending(store)
    store.r.delete("transfer:L1")
    resp = client.get(f"/exotel/dial-up?token={TOKEN}&CallSid={CALL}")
    assert resp.status_code == 404
    [msg] = drain_queue(celery_app, "transfers")
    assert (msg["kwargs"]["kind"], msg["kwargs"]["transfer_id"]) == ("dial-up-missing", tid)
    assert client.get(f"/exotel/dial-up?token={TOKEN}&CallSid=unknown").status_code == 404


@pytest.mark.parametrize("query", ["", "token=wrong&", "token=&"])
def test_requests_without_the_token_are_refused(client: FlaskClient, store: Store,
                                                celery_app: Celery, query: str) -> None:
    pending(store)
    assert client.get(f"/exotel/dial-up?{query}CallSid={CALL}").status_code == 403
    assert client.post(f"/exotel/status?{query}", data={"CallSid": CALL,
                                                        "Status": "completed"}
                       ).status_code == 403
    assert client.get(f"/exotel/passthru?{query}CallSid={CALL}").status_code == 403
    assert drain_queue(celery_app, "transfers") == []


def test_status_callback_form_and_json(client: FlaskClient, celery_app: Celery) -> None:
    form = {"CallSid": CALL, "Status": "completed", "Legs[1][Status]": "busy",
            "Legs[0][Status]": "completed"}
    assert client.post(f"/exotel/status?token={TOKEN}&lead_id=L1", data=form
                       ).status_code == 200
    body = {"CallSid": CALL, "Status": "completed",
            "Legs": [{"Status": "completed"}, {"Status": "busy"}]}
    assert client.post(f"/exotel/status?token={TOKEN}&lead_id=L1", json=body
                       ).status_code == 200
    a, b = drain_queue(celery_app, "transfers")
    assert a["kwargs"] == b["kwargs"]
    assert a["kwargs"]["params"]["Leg2Status"] == "busy"
    assert a["kwargs"]["lead_id"] == "L1"


@pytest.mark.parametrize("body", [{"Status": "completed"}, {"CallSid": ""}])
def test_status_callback_without_call_sid_is_400(client: FlaskClient, celery_app: Celery,
                                                 body: dict[str, str]) -> None:
    assert client.post(f"/exotel/status?token={TOKEN}", json=body).status_code == 400
    assert client.post(f"/exotel/status?token={TOKEN}", data=b"[1,2",
                       content_type="application/json").status_code == 400
    assert drain_queue(celery_app, "transfers") == []


def test_dial_up_lists_fallback_destinations_in_order(make_app: AppFactory, store: Store
                                                      ) -> None:
    from shared.contracts import parse_request
    from shared.store import State

    raw = make_request(lead_id="L1", call_id=CALL, provider="exotel", transfer_number=None,
                       outbound_number="+919999900001")
    raw["template"]["configurations"] = {"transfer_numbers": ["+919999900000",
                                                              "+919999900002"]}
    req = parse_request(raw, store.get_number, allowed_destinations="IN")
    store.begin(req)
    store.set_flag("L1", req.transfer_number)
    store.transition(req.transfer_id, State.DIALING, "ai told to leave")
    text = make_app().test_client().get(f"/exotel/dial-up?token={TOKEN}&CallSid={CALL}")
    assert text.get_data(as_text=True) == "+919999900000,+919999900002"
    as_json = make_app(exotel_dial_up_format="json").test_client().get(
        f"/exotel/dial-up?token={TOKEN}&CallSid={CALL}")
    assert json.loads(as_json.data)["destination"]["numbers"] == ["+919999900000",
                                                                  "+919999900002"]


def test_passthru_names_the_destination_that_answered(rt: Runtime, events: Any) -> None:
    raw = make_request(lead_id="L1", call_id=CALL, provider="exotel", transfer_id="tr_L1",
                       transfer_number=None, outbound_number="+919999900001")
    raw["template"]["configurations"] = {"transfer_numbers": ["+919999900000",
                                                              "+919999900002"]}
    run(tasks.transfer_request, request=raw)
    run(tasks.provider_callback, provider="exotel", kind="passthru", transfer_id="",
        call_id=CALL, params={"CallSid": CALL, "DialCallStatus": "completed",
                              "DialWhomNumber": "+919999900002"})
    [event] = [e for e in events() if e["type"] == "transfer.succeeded"]
    assert event["destination_index"] == 1
    assert [a["outcome"] for a in event["attempts"]] == ["not_answered", "answered"]
