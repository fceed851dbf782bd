"""The Plivo handoff through the task functions, Plivo's API mocked; and its XML."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Any

import pytest
import responses

from shared.config import Settings
from shared.store import Store
from tests.helpers import make_request
from tests.unit.conftest import PLIVO_API, PLIVO_ID, RESUME_URL
from workers import tasks
from workers.providers import plivo
from workers.runtime import Runtime

CUSTOMER = "9b2e6a3c-1111-4c6f-9d7e-000000000001"
TRANSFER_URL = f"{PLIVO_API}/v1/Account/{PLIVO_ID}/Call/{CUSTOMER}/"


def run(task: Any, **kwargs: Any) -> None:
    task.apply(kwargs=kwargs).get()


def start(mocked: responses.RequestsMock, lead: str = "L1", status: int = 202) -> str:
    mocked.post(TRANSFER_URL, status=status,
                json={"message": "call transferred", "api_id": "x"} if status < 300
                else {"api_id": "x", "error": "nope"})
    req = make_request(lead_id=lead, call_id=CUSTOMER, provider="plivo",
                       transfer_id=f"tr_{lead}")
    run(tasks.transfer_request, request=req)
    return f"tr_{lead}"


def callback(kind: str, tid: str, **params: str) -> None:
    run(tasks.provider_callback, provider="plivo", kind=kind, transfer_id=tid, params=params)


def test_transfer_request_and_disconnect(rt: Runtime, store: Store, events: Any,
                                         mocked: responses.RequestsMock) -> None:
    tid = start(mocked)
    [call] = mocked.calls
    assert call.request.method == "POST"
    assert call.request.url == TRANSFER_URL
    body = json.loads(call.request.body)
    assert body == {"call_uuid": CUSTOMER, "legs": "aleg",
                    "aleg_url": f"https://hooks.example.com/plivo/dial-up?transfer_id={tid}",
                    "aleg_method": "POST"}
    assert store.get_transfer(tid)["state"] == "dialing"  # type: ignore[index]
    assert store.get_flag("L1") == "+14155550101"
    [event] = events()
    assert (event["type"], event["action"]) == ("transfer.disconnect_ai", "disconnect")


def test_dial_up_xml(settings: Settings) -> None:
    transfer = {"transfer_id": "tr_1", "outbound_number": "+14155550199"}
    root = ET.fromstring(plivo.dial_up_xml(settings, transfer, "+14155550101"))
    assert root.tag == "Response"
    [dial] = list(root)
    assert dial.tag == "Dial"
    assert dial.get("callerId") == "+14155550199"
    assert dial.get("timeout") == "30"
    assert dial.get("action") == "https://hooks.example.com/plivo/dial-action?transfer_id=tr_1"
    assert dial.get("callbackUrl") == (
        "https://hooks.example.com/plivo/dial-callback?transfer_id=tr_1")
    assert dial.get("method") == "POST" and dial.get("callbackMethod") == "POST"
    [number] = list(dial)
    assert (number.tag, number.text) == ("Number", "+14155550101")


def test_resume_xml_redirects_to_the_ai_or_apologises(settings: Settings) -> None:
    root = ET.fromstring(plivo.dial_action_xml(settings, "busy"))
    [redirect] = list(root)
    assert (redirect.tag, redirect.text) == ("Redirect", RESUME_URL)
    bare = settings.model_copy(update={"plivo_resume_url": ""})
    tags = [e.tag for e in ET.fromstring(plivo.resume_xml(bare))]
    assert tags == ["Speak", "Hangup"]
    assert [e.tag for e in ET.fromstring(plivo.dial_action_xml(settings, "completed"))] == [
        "Hangup"]


def test_dial_answer_is_success(rt: Runtime, store: Store, events: Any,
                                mocked: responses.RequestsMock) -> None:
    tid = start(mocked)
    callback("dial-up", tid)
    callback("dial-callback", tid, Event="DialAnswer", DialBLegUUID="b")
    callback("dial-callback", tid, Event="DialAnswer", DialBLegUUID="b")
    callback("dial-action", tid, DialStatus="completed")
    types = [e["type"] for e in events()]
    assert types == ["transfer.disconnect_ai", "transfer.succeeded"]
    assert store.get_flag("L1") is None
    assert store.lead_status("L1")["status"] == "succeeded"  # type: ignore[index]


def test_completed_dial_counts_as_answered_when_answer_callback_was_lost(
        rt: Runtime, events: Any, mocked: responses.RequestsMock) -> None:
    tid = start(mocked)
    callback("dial-action", tid, DialStatus="completed")
    assert [e["type"] for e in events()][-1] == "transfer.succeeded"


@pytest.mark.parametrize(("status", "reason"), [
    ("busy", "busy"), ("no-answer", "no_answer"), ("timeout", "no_answer"),
    ("failed", "failed")])
def test_dial_not_answered_fails(rt: Runtime, events: Any, mocked: responses.RequestsMock,
                                 status: str, reason: str) -> None:
    tid = start(mocked)
    callback("dial-action", tid, DialStatus=status)
    callback("dial-action", tid, DialStatus=status)
    failed = [e for e in events() if e["type"] == "transfer.failed"]
    assert [(e["reason"], e["action"]) for e in failed] == [(reason, "resume")]


def test_dial_up_with_nothing_pending_fails_the_transfer(rt: Runtime, events: Any,
                                                         mocked: responses.RequestsMock) -> None:
    tid = start(mocked)
    callback("dial-up-missing", tid)
    assert [e["reason"] for e in events() if e["type"] == "transfer.failed"] == ["timeout"]


def test_transient_errors_then_provider_error(rt: Runtime, events: Any,
                                              mocked: responses.RequestsMock) -> None:
    start(mocked, status=503)
    # The SDK itself tries three URLs per call; we retry the call three more times.
    assert len(mocked.calls) == 3 * (1 + len(rt.settings.provider_retry_delays))
    [event] = events()
    assert (event["type"], event["reason"]) == ("transfer.failed", "provider_error")


def test_call_not_found_fails_at_once(rt: Runtime, events: Any,
                                      mocked: responses.RequestsMock) -> None:
    start(mocked, status=404)
    assert len(mocked.calls) == 1
    assert [e["reason"] for e in events()] == ["provider_error"]


def test_customer_hangup_while_dialing_is_a_transfer_hangup(
        rt: Runtime, events: Any, mocked: responses.RequestsMock) -> None:
    start(mocked)
    run(tasks.call_status, provider="plivo", call_id=CUSTOMER, status="completed")
    got = events()
    assert [e["type"] for e in got] == ["transfer.disconnect_ai", "transfer.failed",
                                        "call.ended"]
    assert got[1]["reason"] == "customer_hung_up"
    assert got[2]["transferred"] is True


def test_bad_auth_id_is_not_configured(rt: Runtime, events: Any) -> None:
    rt.settings = rt.settings.model_copy(update={"plivo_auth_id": "not-an-id"})
    run(tasks.transfer_request, request=make_request(lead_id="L1", provider="plivo",
                                                     transfer_id="tr_x"))
    assert [e["reason"] for e in events()] == ["provider_error"]


def test_briefing_and_screening_in_the_dial(settings: Settings) -> None:
    transfer = {"transfer_id": "tr_1", "outbound_number": "+14155550199",
                "summary": "Wants a refund", "screening": "1"}
    dial = ET.fromstring(plivo.dial_up_xml(settings, transfer, "+14155550101"))[0]
    assert dial.get("confirmSound") == "https://hooks.example.com/plivo/whisper?transfer_id=tr_1"
    assert dial.get("confirmKey") == "1"
    spoken = [e.text for e in ET.fromstring(plivo.whisper_xml(transfer))]
    assert spoken == ["Incoming transfer. Wants a refund", "Press 1 to take the call."]
    plain = {"transfer_id": "tr_2", "outbound_number": "+14155550199"}
    dial = ET.fromstring(plivo.dial_up_xml(settings, plain, "+14155550101"))[0]
    assert dial.get("confirmSound") is None and dial.get("confirmKey") is None


def test_screened_human_who_did_not_press_declined(rt: Runtime, store: Store, events: Any,
                                                   mocked: responses.RequestsMock) -> None:
    mocked.post(TRANSFER_URL, status=202, json={"message": "call transferred", "api_id": "x"})
    req = make_request(lead_id="L1", call_id=CUSTOMER, provider="plivo", transfer_id="tr_L1")
    req["template"]["configurations"]["screening"] = True
    run(tasks.transfer_request, request=req)
    store.set_fields("tr_L1", human_picked_up="1")  # as /plivo/whisper records it
    callback("dial-action", "tr_L1", DialStatus="no-answer")
    assert [e["reason"] for e in events() if e["type"] == "transfer.failed"] == ["declined"]
