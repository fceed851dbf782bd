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

from providers.exotel import handoff as exotel
from shared.config import Settings
from shared.store import Store
from tests.helpers import drain_queue, make_request, make_transfer
from tests.unit.conftest import AppFactory
from tests.unit.providers.exotel import EXOTEL_API, EXOTEL_SID
from webhooks import create_app
from workers import tasks
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
                                              ("failed", "failed"),
                                              # the caller hung up while the human rang
                                              ("canceled", "customer_hung_up")])
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
    tid = start()
    rt.store.set_fields(tid, dial_up_served="1")
    run(tasks.provider_callback, provider="exotel", kind="passthru", transfer_id="",
        call_id=CALL, params={"CallSid": CALL, "DialCallStatus": "no-answer"})
    run(tasks.provider_callback, provider="exotel", kind="passthru", transfer_id="",
        call_id=CALL, params={"CallSid": CALL, "DialCallStatus": "completed"})
    assert [e["reason"] for e in events() if e["type"].startswith("transfer.f")] == [
        "no_answer"]


def call_details(status: str, leg2: str | None, talked: int | None = None) -> dict[str, Any]:
    """A call details answer (details=true); `talked` None: no leg 2 yet
    (developer.exotel.com/docs/voice-v1/api-reference/call-details)."""
    legs = [{"Leg": {"Id": 1, "OnCallDuration": 20}}]
    if talked is not None:
        legs.append({"Leg": {"Id": 2, "OnCallDuration": talked}})
    return {"Call": {"Sid": CALL, "Status": status, "Details": {
        "ConversationDuration": talked or 0, "Leg1Status": "completed"
        if status == "completed" else "in-progress", "Leg2Status": leg2, "Legs": legs}}}


def test_deadline_reconciles_through_call_details(rt: Runtime, events: Any,
                                                  mocked: responses.RequestsMock) -> None:
    tid = start()
    mocked.get(DETAILS_URL, json=call_details("in-progress", "in-progress", talked=12))
    run(tasks.expire, transfer_id=tid)
    [request] = mocked.calls
    assert request.request.url == DETAILS_URL + "?details=true"
    auth = base64.b64encode(b"exo-key:exo-token").decode()
    assert request.request.headers["Authorization"] == f"Basic {auth}"
    assert [e["type"] for e in events()][-1] == "transfer.succeeded"


def test_deadline_reads_a_canceled_leg2_as_the_customer_hanging_up(
        rt: Runtime, events: Any, mocked: responses.RequestsMock) -> None:
    tid = start()
    mocked.get(DETAILS_URL, json=call_details("completed", "canceled", talked=0))
    run(tasks.expire, transfer_id=tid)
    assert [e["reason"] for e in events() if e["type"] == "transfer.failed"] == [
        "customer_hung_up"]


def test_deadline_waits_while_the_call_cannot_tell_then_times_out(
        rt: Runtime, store: Store, events: Any, mocked: responses.RequestsMock) -> None:
    tid = start()
    store.set_fields(tid, dial_up_served="1")  # as /exotel/dial-up records it
    mocked.get(DETAILS_URL, json=call_details("in-progress", None))
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
    mocked.get(DETAILS_URL, json=call_details("in-progress", None))
    run(tasks.expire, transfer_id=tid)
    assert [e["reason"] for e in events() if e["type"] == "transfer.failed"] == ["timeout"]


def test_call_details_client_retries_transient_errors(settings: Settings,
                                                      mocked: responses.RequestsMock) -> None:
    mocked.get(DETAILS_URL, status=503)
    with pytest.raises(exotel.TransientProviderError):
        exotel.make_client(settings, make_transfer()).call_details(CALL)
    assert len(mocked.calls) == 3  # one try and two retries
    mocked.replace(responses.GET, DETAILS_URL, status=401, json={})
    with pytest.raises(exotel.PermanentProviderError):
        exotel.make_client(settings, make_transfer()).call_details(CALL)


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


def test_dial_up_answers_each_connect_url_in_its_own_format(client: FlaskClient,
                                                            store: Store) -> None:
    # Same app, same setting (auto): the "Dial whom" URL gets the number as text, the dynamic
    # URL (its request carries Exotel-Version) gets programmable-connect JSON.
    pending(store)
    url = f"/exotel/dial-up?token={TOKEN}&CallSid={CALL}"
    text = client.get(url)
    assert (text.mimetype, text.get_data(as_text=True)) == ("text/plain", "+919999900000")
    as_json = client.get(url, headers={"Exotel-Version": "1.0"})
    assert as_json.mimetype == "application/json"
    assert json.loads(as_json.data) == {"destination": {"numbers": ["+919999900000"]},
                                        "outgoing_phone_number": "+919999900001",
                                        "max_ringing_duration": 30, "record": False}
    head = client.head(url, headers={"Exotel-Version": "1.0"})
    assert head.headers["Content-Type"] == as_json.headers["Content-Type"]


@pytest.mark.parametrize(("forced", "header", "mimetype"), [
    ("json", {}, "application/json"), ("text", {"Exotel-Version": "1.0"}, "text/plain")])
def test_dial_up_format_setting_overrides_the_detection(make_app: AppFactory, store: Store,
                                                        forced: str, header: dict[str, str],
                                                        mimetype: str) -> None:
    pending(store)
    resp = make_app(exotel_dial_up_format=forced).test_client().get(
        f"/exotel/dial-up?token={TOKEN}&CallSid={CALL}", headers=header)
    assert resp.mimetype == mimetype


def test_dial_up_custom_field_only_for_the_exotel_transfer_of_this_call(
        client: FlaskClient, store: Store) -> None:
    tid = pending(store)
    store.r.delete(Store.call_key("exotel", CALL))  # no index: CustomField is the fallback
    other = client.get(f"/exotel/dial-up?token={TOKEN}&CallSid=other&CustomField=L1")
    assert (other.status_code, other.get_data(as_text=True)) == (404, "no transfer pending\n")
    assert "dial_up_served" not in store.get_transfer(tid)  # type: ignore[operator]
    same = client.get(f"/exotel/dial-up?token={TOKEN}&CallSid={CALL}&CustomField=L1")
    assert same.get_data(as_text=True) == "+919999900000"


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


def test_dial_up_with_fallback_destinations(make_app: AppFactory, store: Store) -> None:
    from shared.contracts import parse_request
    from shared.store import State

    raw = make_request(lead_id="L1", call_id=CALL, provider="exotel", transfer_number=None,
                       outbound_number="+919999900001")
    raw["template"]["configurations"] = {"transfer_numbers": ["+919999900000",
                                                              "+919999900002"]}
    req = parse_request(raw, store.get_number, allowed_destinations="IN")
    store.begin(req)
    store.set_flag("L1", req.transfer_number)
    store.transition(req.transfer_id, State.DIALING, "ai told to leave", fields={"attempt": ""})
    client = make_app().test_client()
    url = f"/exotel/dial-up?token={TOKEN}&CallSid={CALL}"
    # Programmable connect takes the list and dials it in order.
    as_json = client.get(url, headers={"Exotel-Version": "1.0"})
    assert json.loads(as_json.data)["destination"]["numbers"] == ["+919999900000",
                                                                  "+919999900002"]
    assert store.get_transfer(req.transfer_id)["attempt"] == ""  # type: ignore[index]
    # The Dial whom URL is documented for "a number": only the first, and that is recorded.
    text = client.get(url)
    assert text.get_data(as_text=True) == "+919999900000"
    assert store.get_transfer(req.transfer_id)["attempt"] == "0"  # type: ignore[index]


def _two_destinations(lead: str = "L1") -> dict[str, Any]:
    raw = make_request(lead_id=lead, call_id=CALL, provider="exotel", transfer_id=f"tr_{lead}",
                       transfer_number=None, outbound_number="+919999900001")
    raw["template"]["configurations"] = {"transfer_numbers": ["+919999900000",
                                                              "+919999900002"]}
    return raw


@pytest.mark.parametrize("dialed", ["09999900002", "9999900002", "+919999900002"])
def test_passthru_names_the_destination_that_answered(rt: Runtime, events: Any,
                                                      dialed: str) -> None:
    # Exotel writes Indian numbers in national format ("0" + ten digits).
    run(tasks.transfer_request, request=_two_destinations())
    params = exotel.normalise_status({"CallSid": CALL, "CallType": "completed",
                                      "DialWhomNumber": dialed, "CallFrom": "09999900005"})
    run(tasks.provider_callback, provider="exotel", kind="passthru", transfer_id="",
        call_id=CALL, params=params)
    [event] = [e for e in events() if e["type"] == "transfer.succeeded"]
    assert event["destination_index"] == 1
    assert [a["outcome"] for a in event["attempts"]] == ["not_answered", "answered"]


@pytest.mark.parametrize(("call_type", "reason"), [("incomplete", "no_answer"),
                                                    ("client-hangup", "customer_hung_up")])
def test_passthru_call_type_says_the_connect_failed(rt: Runtime, events: Any, call_type: str,
                                                    reason: str) -> None:
    run(tasks.transfer_request, request=_two_destinations())
    rt.store.set_fields("tr_L1", dial_up_served="1")  # as /exotel/dial-up records it
    run(tasks.provider_callback, provider="exotel", kind="passthru", transfer_id="",
        call_id=CALL, params=exotel.normalise_status({
            "CallSid": CALL, "CallType": call_type, "DialWhomNumber": "09999900002"}))
    [event] = [e for e in events() if e["type"] == "transfer.failed"]
    assert event["reason"] == reason
    assert [a["outcome"] for a in event["attempts"]] == ["not_answered", reason]


def test_passthru_after_a_connect_that_got_no_number_is_a_timeout(rt: Runtime,
                                                                  events: Any) -> None:
    # /exotel/dial-up answered "nothing pending" (Redis down): Connect rang no one.
    start()
    run(tasks.provider_callback, provider="exotel", kind="passthru", transfer_id="",
        call_id=CALL, params={"CallSid": CALL, "CallType": "incomplete", "DialWhomNumber": ""})
    assert [e["reason"] for e in events() if e["type"] == "transfer.failed"] == ["timeout"]


def test_from_provider_reads_national_numbers_in_the_default_region() -> None:
    from shared.phone import from_provider

    assert from_provider("09999900000", "IN") == "+919999900000"
    assert from_provider("9999900000", "IN") == "+919999900000"
    assert from_provider(" +91 99999 00000 ", "IN") == "+919999900000"
    assert from_provider("14155550123", "IN") == "+14155550123"  # country code, no "+"
    assert from_provider("0XXXXX38847", "IN") == "0XXXXX38847"  # masked: never a match
    assert from_provider("", "IN") == from_provider(None, "IN") == ""
    assert from_provider("sip:agent@pbx", "IN") == "sip:agent@pbx"


# issue 20: a leaked token

def twilio_pending(store: Store, lead: str = "TW1") -> str:
    from shared.contracts import parse_request

    req = parse_request(make_request(lead_id=lead, provider="twilio"), store.get_number)
    store.begin(req)
    store.set_flag(lead, req.transfer_number)
    return req.transfer_id


def test_forged_dial_up_for_another_providers_lead_is_answered_like_an_unknown_one(
        client: FlaskClient, store: Store, celery_app: Celery) -> None:
    tid = twilio_pending(store)
    before = store.timeline(tid)
    forged = client.get(f"/exotel/dial-up?token={TOKEN}&CallSid=x&CustomField=TW1")
    unknown = client.get(f"/exotel/dial-up?token={TOKEN}&CallSid=x&CustomField=nobody")
    assert (forged.status_code, forged.data, forged.headers["Content-Type"]) == (
        unknown.status_code, unknown.data, unknown.headers["Content-Type"])
    assert forged.status_code == 404 and b"+1415" not in forged.data
    assert store.timeline(tid) == before
    assert "dial_up_served" not in store.get_transfer(tid)  # type: ignore[operator]
    assert drain_queue(celery_app, "transfers") == []


def test_forged_hangup_for_a_lead_in_flight_is_dropped(client: FlaskClient, store: Store,
                                                       celery_app: Celery) -> None:
    pending(store)  # L1: Exotel transfer on CALL
    twilio_pending(store)
    for lead in ("L1", "TW1"):
        resp = client.post(f"/exotel/status?token={TOKEN}&lead_id={lead}",
                           data={"CallSid": "invented", "Status": "completed"})
        assert (resp.status_code, resp.data) == (200, b"")
    assert drain_queue(celery_app, "transfers") == []
    # A lead with nothing in flight: the same answer, and its hangup goes on.
    resp = client.post(f"/exotel/status?token={TOKEN}&lead_id=quiet",
                       data={"CallSid": "other", "Status": "completed"})
    assert (resp.status_code, resp.data) == (200, b"")
    [msg] = drain_queue(celery_app, "transfers")
    assert msg["kwargs"]["lead_id"] == "quiet"


def test_status_of_a_transfer_call_speaks_only_for_its_own_lead(
        client: FlaskClient, store: Store, celery_app: Celery) -> None:
    pending(store)
    client.post(f"/exotel/status?token={TOKEN}&lead_id=TW1",
                data={"CallSid": CALL, "Status": "completed"})
    client.post(f"/exotel/status?token={TOKEN}&lead_id=L1",
                data={"CallSid": CALL, "Status": "completed"})
    wrong, right = drain_queue(celery_app, "transfers")
    assert wrong["kwargs"]["lead_id"] is None  # the worker takes the transfer's own lead
    assert right["kwargs"]["lead_id"] == "L1"


def test_forged_hangup_through_the_worker_emits_nothing(rt: Runtime, client: FlaskClient,
                                                        store: Store, events: Any,
                                                        celery_app: Celery) -> None:
    start()  # L1, flag set
    events()
    client.post(f"/exotel/status?token={TOKEN}&lead_id=L1",
                data={"CallSid": "invented", "Status": "completed"})
    for msg in drain_queue(celery_app, "transfers"):
        run(tasks.call_status, **msg["kwargs"])
    assert events() == []
    assert store.claim_once("ended:exotel:invented")  # never claimed


def test_webhook_token_rotation(make_app: AppFactory, store: Store) -> None:
    pending(store)
    app = make_app(exotel_webhook_token="new-secret", exotel_webhook_token_previous=TOKEN)
    client = app.test_client()
    for token in ("new-secret", TOKEN):
        assert client.get(f"/exotel/dial-up?token={token}&CallSid={CALL}").status_code == 200
    assert client.get(f"/exotel/dial-up?token=guess&CallSid={CALL}").status_code == 403
    # The previous token alone opens nothing: an empty current token refuses everything.
    alone = make_app(exotel_webhook_token="", exotel_webhook_token_previous=TOKEN)
    assert alone.test_client().get(
        f"/exotel/dial-up?token={TOKEN}&CallSid={CALL}").status_code == 403


def test_ip_allow_list_and_trusted_proxies(make_app: AppFactory, store: Store) -> None:
    pending(store)
    url = f"/exotel/dial-up?token={TOKEN}&CallSid={CALL}"
    exotel_ip, other_ip = {"REMOTE_ADDR": "203.0.113.7"}, {"REMOTE_ADDR": "198.51.100.9"}
    assert make_app().test_client().get(url, environ_base=other_ip).status_code == 200  # off
    listed = make_app(exotel_allowed_ips="203.0.113.0/24").test_client()
    assert listed.get(url, environ_base=exotel_ip).status_code == 200
    assert listed.get(url, environ_base=other_ip).status_code == 403
    # X-Forwarded-For is anyone's to write: not believed by default...
    spoofed = {"X-Forwarded-For": "203.0.113.7"}
    assert listed.get(url, environ_base=other_ip, headers=spoofed).status_code == 403
    # ...only from a trusted proxy, and then its nearest untrusted hop is the caller.
    proxied = make_app(exotel_allowed_ips="203.0.113.0/24",
                       exotel_trusted_proxies="198.51.100.0/24").test_client()
    assert proxied.get(url, environ_base=other_ip, headers=spoofed).status_code == 200
    assert proxied.get(url, environ_base=other_ip, headers={
        "X-Forwarded-For": "203.0.113.7, 192.0.2.1"}).status_code == 403


def test_allow_list_settings_are_checked_at_startup(settings: Settings) -> None:
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 network"):
        create_app(settings.model_copy(update={"exotel_allowed_ips": "exotel"}))


def test_deeply_nested_json_status_is_400(client: FlaskClient, celery_app: Celery) -> None:
    resp = client.post(f"/exotel/status?token={TOKEN}", data="[" * 30000,
                       content_type="application/json")
    assert resp.status_code == 400
    assert drain_queue(celery_app, "transfers") == []


# issue 13: Redis down

@pytest.fixture
def redis_down_app(settings: Settings, dead_celery: Celery) -> Any:
    from shared.client import TransferClient
    from webhooks import create_app
    from webhooks.deps import Deps

    # The service's own client (its retries included) on a port where nothing listens:
    # every command is refused, as with Redis stopped.
    dead = Store.from_settings(settings.model_copy(update={"redis_url":
                                                           "redis://127.0.0.1:1/0"}))
    app = create_app(settings)
    app.extensions["warm_transfer"] = Deps(settings, dead, dead_celery,
                                           TransferClient(settings, store=dead,
                                                          celery=dead_celery))
    return app


def test_dial_up_with_redis_down_lets_the_flow_go_on(redis_down_app: Any) -> None:
    client = redis_down_app.test_client()
    url = f"/exotel/dial-up?token={TOKEN}&CallSid={CALL}&CustomField=L1"
    for headers in ({}, {"Exotel-Version": "1.0"}):
        resp = client.get(url, headers=headers)
        # The answer of "nothing pending", not a 5xx: Exotel takes the Connect applet's next
        # applet (back to the AI) instead of waiting on or failing the live call.
        assert (resp.status_code, resp.get_data(as_text=True)) == (404, "no transfer pending\n")
        assert client.head(url, headers=headers).status_code == 404


def test_status_callback_with_redis_down_is_503_for_a_retry(redis_down_app: Any) -> None:
    resp = redis_down_app.test_client().post(f"/exotel/status?token={TOKEN}&lead_id=L1",
                                             data={"CallSid": CALL, "Status": "completed"})
    assert resp.status_code == 503


# the sandbox, as an instrument

@pytest.mark.parametrize(("mode", "body", "content_type", "dialed"), [
    ("dial_whom", "+919999900000", "text/plain", "+919999900000"),
    ("dial_whom", '{"destination": {"numbers": ["+919999900000"]}}', "application/json", None),
    ("dial_whom", "+919999900000,+919999900002", "text/plain", None),  # "a number"
    ("programmable", '{"destination": {"numbers": ["+919999900000"]}}', "application/json",
     "+919999900000"),
    ("programmable", "+919999900000", "text/plain", None),
])
def test_sandbox_takes_each_answer_only_where_exotel_would(
        mocked: responses.RequestsMock, mode: str, body: str, content_type: str,
        dialed: str | None) -> None:
    from sandbox.core import Sandbox

    url = "https://hooks.example.com/exotel/dial-up"
    mocked.head(url, content_type=content_type)
    mocked.get(url, body=body, content_type=content_type)
    sb = Sandbox()
    try:
        sid = sb.create_customer_call(to="+919999900009", from_="+919999900008",
                                      status_callback=None, provider="exotel",
                                      dial_whom_url=url, connect_mode=mode)
        sb.exotel._connect(sb.calls[sid])
        call = sb.calls[sid]
        assert call.flow.get("dialed") == dialed
        assert bool(call.flow.get("back_to_ai")) is (dialed is None)
        get = next(c for c in mocked.calls if c.request.method == "GET")
        assert get.request.headers.get("Exotel-Version") == (
            "1.0" if mode == "programmable" else None)
        assert "CallFrom=09999900008" in str(get.request.url)  # national format
    finally:
        sb.stop()


def test_dial_up_with_the_broker_down_still_answers(make_app: AppFactory, store: Store,
                                                    dead_celery: Celery) -> None:
    # Served straight from Redis: the broker is needed only to fail an ended transfer early
    # (the deadline sweep does it otherwise).
    pending(store)
    client = make_app(celery=dead_celery).test_client()
    url = f"/exotel/dial-up?token={TOKEN}&CallSid={CALL}"
    assert client.get(url).get_data(as_text=True) == "+919999900000"
    store.r.delete("transfer:L1")
    assert client.get(url).status_code == 404
