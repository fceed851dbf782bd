"""The Plivo handoff through the task functions, Plivo's API mocked; and its XML."""

from __future__ import annotations

import json
import logging
import math
import time
import xml.etree.ElementTree as ET
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import responses

from providers.plivo import markup as plivo
from shared.config import Settings
from shared.store import Store
from tests.helpers import make_request, make_transfer
from tests.unit.providers.plivo import PLIVO_API, PLIVO_ID, RESUME_URL
from workers import tasks
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


def bare(url: str | None) -> str:
    """A steering URL without its signed context (checked on its own)."""
    parts = urlsplit(url or "")
    query = {k: v for k, v in parse_qs(parts.query).items() if k != "t"}
    return f"{parts.scheme}://{parts.netloc}{parts.path}?" + "&".join(
        f"{k}={v[0]}" for k, v in query.items())


def context_of(settings: Settings, url: str | None) -> dict[str, str] | None:
    parts = urlsplit(url or "")
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    return plivo.read_context(settings, parts.path, query["transfer_id"],
                              query.get("attempt", "0"), query.get("t", ""))


def test_transfer_request_and_disconnect(rt: Runtime, store: Store, events: Any,
                                         mocked: responses.RequestsMock) -> None:
    tid = start(mocked)
    [call] = mocked.calls
    assert call.request.method == "POST"
    assert call.request.url == TRANSFER_URL
    body = json.loads(call.request.body)
    aleg_url = body.pop("aleg_url")
    assert body == {"call_uuid": CUSTOMER, "legs": "aleg", "aleg_method": "POST"}
    assert bare(aleg_url) == f"https://hooks.example.com/plivo/dial-up?transfer_id={tid}"
    # Whom to dial travels in the URL, signed, for a dial-up answered with Redis down.
    ctx = context_of(rt.settings, aleg_url)
    assert ctx is not None
    assert json.loads(ctx["destinations"]) == ["+14155550101"]
    assert ctx["outbound_number"] == "+14155550199"
    assert store.get_transfer(tid)["state"] == "dialing"  # type: ignore[index]
    assert store.get_flag("L1") == "+14155550101"
    [event] = events()
    assert (event["type"], event["action"]) == ("transfer.disconnect_ai", "disconnect")


def test_dial_up_xml(settings: Settings) -> None:
    transfer = make_transfer(outbound_number="+14155550199")
    root = ET.fromstring(plivo.dial_up_xml(settings, transfer, "+14155550101"))
    assert root.tag == "Response"
    [dial] = list(root)
    assert dial.tag == "Dial"
    assert dial.get("callerId") == "+14155550199"
    assert dial.get("timeout") == "30"
    assert bare(dial.get("action")) == (
        "https://hooks.example.com/plivo/dial-action?transfer_id=tr_1")
    assert dial.get("callbackUrl") == (
        "https://hooks.example.com/plivo/dial-callback?transfer_id=tr_1")
    assert dial.get("method") == "POST" and dial.get("callbackMethod") == "POST"
    [number] = list(dial)
    assert (number.tag, number.text) == ("Number", "+14155550101")


def test_resume_xml_redirects_to_the_ai_or_apologises(settings: Settings) -> None:
    root = ET.fromstring(plivo.dial_action_xml(settings, bridged=False))
    [redirect] = list(root)
    assert (redirect.tag, redirect.text) == ("Redirect", RESUME_URL)
    bare = settings.model_copy(update={"plivo_resume_url": ""})
    tags = [e.tag for e in ET.fromstring(plivo.resume_xml(bare))]
    assert tags == ["Speak", "Hangup"]
    assert [e.tag for e in ET.fromstring(plivo.dial_action_xml(settings, bridged=True))] == [
        "Hangup"]


def test_dial_answer_is_success(rt: Runtime, store: Store, events: Any,
                                mocked: responses.RequestsMock) -> None:
    tid = start(mocked)
    callback("dial-callback", tid, Event="DialAnswer", DialBLegUUID="b")
    callback("dial-callback", tid, Event="DialAnswer", DialBLegUUID="b")
    callback("dial-action", tid, DialStatus="completed")
    types = [e["type"] for e in events()]
    assert types == ["transfer.disconnect_ai", "transfer.succeeded"]
    assert store.get_flag("L1") is None
    assert store.lead_status("L1")["status"] == "succeeded"  # type: ignore[index]


def test_an_unknown_callback_kind_is_logged_as_an_error(
        rt: Runtime, store: Store, events: Any, mocked: responses.RequestsMock,
        caplog: pytest.LogCaptureFixture) -> None:
    """No handler knows "dial-up" (the webhook serves it; it is no worker callback): it
    changes nothing, and says so as an error instead of being dropped silently."""
    tid = start(mocked)
    before = store.get_transfer(tid)
    with caplog.at_level(logging.ERROR):
        callback("dial-up", tid)
    assert [(r.levelno, r.getMessage()) for r in caplog.records
            if r.getMessage() == "unknown callback kind"] == [(logging.ERROR,
                                                               "unknown callback kind")]
    assert store.get_transfer(tid) == before
    assert [e["type"] for e in events()] == ["transfer.disconnect_ai"]


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
    transfer = make_transfer(outbound_number="+14155550199", summary="Wants a refund",
                             screening=True)
    dial = ET.fromstring(plivo.dial_up_xml(settings, transfer, "+14155550101"))[0]
    assert bare(dial.get("confirmSound")) == (
        "https://hooks.example.com/plivo/whisper?transfer_id=tr_1")
    assert dial.get("confirmKey") == "1"
    spoken = [e.text for e in ET.fromstring(plivo.whisper_xml(transfer))]
    assert spoken == ["Incoming transfer. Note from the AI assistant: Wants a refund",
                      "Press 1 to take the call."]
    plain = make_transfer(transfer_id="tr_2", outbound_number="+14155550199")
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


LONG_SUMMARY = ("Customer Maria wants to move her delivery of order 5521 from Tuesday to "
                "Friday afternoon, asks whether the courier can leave it with the neighbour "
                "at number 12, and is unhappy that the last two deliveries were late.")


def test_confirm_timeout_leaves_the_whole_screening_timeout_after_the_prompt(
        settings: Settings) -> None:
    transfer = make_transfer(outbound_number="+14155550199", summary=LONG_SUMMARY,
                             screening=True, screening_timeout=8)
    spoken = "".join(plivo.briefing_texts(transfer))
    assert len(spoken) == 47 + len(LONG_SUMMARY) + 25 == 287
    # 2 s to fetch and synthesise, 10 characters a second, 0.5 s per Speak, then the 8 s.
    expected = math.ceil(2 + len(spoken) / 10 + 2 * 0.5) + 8
    assert plivo.confirm_timeout(transfer) == expected == 40
    dial = ET.fromstring(plivo.dial_up_xml(settings, transfer, "+14155550101"))[0]
    assert dial.get("confirmTimeout") == "40"
    # The estimate is slower than speech (150 words a minute is 2.5 words a second): the
    # human has at least the screening timeout once the prompt has ended.
    words = sum(len(t.split()) for t in plivo.briefing_texts(transfer))
    assert plivo.confirm_timeout(transfer) - words / 2.5 - 2 >= 8
    # A very long summary is capped.
    huge = replace(transfer, summary="word " * 400, screening_timeout=60)
    assert plivo.confirm_timeout(huge) == plivo.MAX_CONFIRM_TIMEOUT


def screened(mocked: responses.RequestsMock) -> str:
    mocked.post(TRANSFER_URL, status=202, json={"message": "call transferred", "api_id": "x"})
    req = make_request(lead_id="L1", call_id=CUSTOMER, provider="plivo", transfer_id="tr_L1",
                       summary="Wants a refund")
    req["template"]["configurations"].update(screening=True, screening_timeout=5)
    run(tasks.transfer_request, request=req)
    return "tr_L1"


def test_screened_answer_callback_is_not_success_before_the_confirm_window(
        rt: Runtime, store: Store, events: Any, mocked: responses.RequestsMock) -> None:
    tid = screened(mocked)
    picked = time.time()
    callback("dial-callback", tid, DialAction="answer", received_at=repr(picked))
    record = store.get_record(tid)
    assert record is not None and record.state == "human_answered"
    assert [e["type"] for e in events()] == ["transfer.disconnect_ai"]  # and no success
    window = plivo.confirm_timeout(record)
    # The deadline waits for the window (the key may still not come).
    assert store.r.zscore(store.DEADLINES, tid) == pytest.approx(
        picked + window + plivo.CONFIRM_GRACE)
    # At the deadline, before the window is over (a sweep too early): still waiting.
    run(tasks.expire, transfer_id=tid)
    assert events() == []
    assert (store.get_transfer(tid) or {})["state"] == "human_answered"
    # Once it has passed with the Dial still up, the key was pressed: success.
    store.set_fields(tid, picked_up_at_0=repr(picked - window - 3))
    run(tasks.expire, transfer_id=tid)
    assert [e["type"] for e in events()] == ["transfer.succeeded"]


def test_screened_dial_completed_inside_the_window_is_declined(
        rt: Runtime, store: Store, events: Any, mocked: responses.RequestsMock) -> None:
    tid = screened(mocked)
    picked = time.time()
    callback("dial-callback", tid, Event="DialAnswer", received_at=repr(picked))
    # Plivo dropped the leg for want of the key; the docs do not say which DialStatus that
    # gets, so "completed" must not pass for a bridge.
    callback("dial-action", tid, DialStatus="completed", received_at=repr(picked + 4))
    failed = [e for e in events() if e["type"] == "transfer.failed"]
    assert [(e["reason"], e["action"]) for e in failed] == [("declined", "resume")]


def test_screened_dial_completed_after_the_window_is_success(
        rt: Runtime, store: Store, events: Any, mocked: responses.RequestsMock) -> None:
    tid = screened(mocked)
    picked = time.time() - 600
    callback("dial-callback", tid, DialAction="answer", received_at=repr(picked))
    callback("dial-action", tid, DialStatus="completed")
    assert [e["type"] for e in events()][-1] == "transfer.succeeded"


def test_a_ring_group_is_one_dial_and_the_member_who_answered_is_named(
        rt: Runtime, store: Store, settings: Settings, events: Any,
        mocked: responses.RequestsMock) -> None:
    mocked.post(TRANSFER_URL, status=202, json={"message": "call transferred", "api_id": "x"})
    req = make_request(lead_id="L1", call_id=CUSTOMER, provider="plivo", transfer_id="tr_L1",
                       transfer_number=None)
    req["template"]["configurations"] = {"transfer_numbers": [
        {"group": ["+14155550101", "+1 415 555 0102"], "ring_timeout": 20}, "+14155550103"]}
    run(tasks.transfer_request, request=req)
    record = store.get_record("tr_L1")
    assert record is not None
    assert store.get_flag("L1") == "+14155550101,+14155550102"
    dial = ET.fromstring(plivo.dial_up_xml(settings, record, plivo.destination(record)))
    dial_el = dial.find("Dial")
    assert dial_el is not None and dial_el.get("timeout") == "20"
    # Rung at once: "The first call to pick up is connected ... the rest are hung up".
    assert [n.text for n in dial_el.findall("Number")] == ["+14155550101", "+14155550102"]

    callback("dial-callback", "tr_L1", Event="DialAnswer", DialBLegTo="14155550102")
    callback("dial-callback", "tr_L1", Event="DialAnswer", DialBLegTo="14155550101")
    [_, event] = events()
    assert event["type"] == "transfer.succeeded"
    assert (event["destination_index"], event["destination_member"]) == (0, 1)
    assert event["attempts"] == [{
        "index": 0, "number": "+14*******01,+14*******02", "outcome": "answered",
        "sip_code": None, "provider_cause": None, "member": 1}]
