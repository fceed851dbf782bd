"""Plivo webhooks: V3 signatures and nonces first, then the XML answers and one enqueue."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from dataclasses import replace
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
import redis
from celery import Celery
from flask.testing import FlaskClient
from plivo.utils.signature_v3 import construct_get_url, construct_post_url, get_signature_v3

from providers.plivo import markup as plivo
from shared.client import TransferClient
from shared.config import Settings
from shared.contracts import parse_request
from shared.model import Cause, Transfer
from shared.store import State, Store
from tests.helpers import drain_queue, make_request
from tests.unit.conftest import AppFactory
from tests.unit.providers.plivo import RESUME_URL
from tests.unit.providers.plivo.test_handoff import bare
from webhooks import create_app
from webhooks.deps import Deps

BASE = "https://hooks.example.com"


@pytest.fixture
def client(make_app: AppFactory) -> FlaskClient:
    return make_app().test_client()


def signed(settings: Settings, method: str, path: str, params: dict[str, str],
           nonce: str | None = None, token: str | None = None) -> dict[str, str]:
    nonce = nonce or uuid.uuid4().hex
    url = BASE + path
    base = construct_post_url(url, dict(params)) if method == "POST" else construct_get_url(url,
                                                                                             {})
    sig = get_signature_v3((token or settings.plivo_auth_token).encode(), base.decode(),
                           nonce.encode()).decode()
    return {"X-Plivo-Signature-V3": sig, "X-Plivo-Signature-V3-Nonce": nonce}


def path_of(url: str | None) -> str:
    parts = urlsplit(url or "")
    return f"{parts.path}?{parts.query}"


def post(client: FlaskClient, settings: Settings, path: str, params: dict[str, str],
         **kw: Any) -> Any:
    headers = kw.pop("headers", None) or signed(settings, "POST", path, params)
    return client.post(path, data=params, headers=headers, base_url="http://10.0.0.9:8000")


def pending(store: Store, lead: str = "L1", raw: dict[str, Any] | None = None) -> str:
    """A Plivo transfer the worker has handed to the dial-up (`raw`: the request)."""
    req = parse_request(raw or make_request(lead_id=lead, provider="plivo", call_id="uuid-1"),
                        store.get_number)
    store.begin(req)
    store.set_flag(req.lead_id, req.transfer_number)
    store.transition(req.transfer_id, State.DIALING, "transferred")
    return req.transfer_id


def test_dial_up_answers_the_dial_xml_from_the_flag(client: FlaskClient, settings: Settings,
                                                    store: Store, celery_app: Celery) -> None:
    tid = pending(store)
    resp = post(client, settings, f"/plivo/dial-up?transfer_id={tid}",
                {"CallUUID": "uuid-1", "From": "+14155550150", "To": "+14155550151"})
    assert resp.status_code == 200 and resp.mimetype == "application/xml"
    dial = ET.fromstring(resp.data).find("Dial")
    assert dial is not None and dial.get("callerId") == "+14155550199"
    assert dial.findtext("Number") == "+14155550101"
    assert store.get_transfer(tid)["dial_up_served"] == "1"  # type: ignore[index]
    assert drain_queue(celery_app, "transfers") == []


def test_dial_up_by_get_is_verified_over_the_query(client: FlaskClient, settings: Settings,
                                                   store: Store) -> None:
    tid = pending(store)
    path = f"/plivo/dial-up?{urlencode({'transfer_id': tid, 'CallUUID': 'uuid-1'})}"
    resp = client.get(path, headers=signed(settings, "GET", path, {}))
    assert resp.status_code == 200
    assert ET.fromstring(resp.data).find("Dial") is not None


def test_dial_up_after_the_flag_expired_sends_customer_back(
        client: FlaskClient, settings: Settings, store: Store, celery_app: Celery) -> None:
    tid = pending(store)
    store.r.delete("transfer:L1")
    resp = post(client, settings, f"/plivo/dial-up?transfer_id={tid}", {"CallUUID": "uuid-1"})
    assert resp.status_code == 200
    redirect = ET.fromstring(resp.data).find("Redirect")
    assert redirect is not None and redirect.text == RESUME_URL
    [msg] = drain_queue(celery_app, "transfers")
    assert msg["kwargs"]["kind"] == "dial-up-missing"


def test_dial_up_for_unknown_transfer_apologises_when_no_resume_url(
        settings: Settings, make_app: AppFactory, celery_app: Celery) -> None:
    app = make_app(plivo_resume_url="")
    resp = post(app.test_client(), settings, "/plivo/dial-up?transfer_id=tr_nope",
                {"CallUUID": "x"})
    assert [e.tag for e in ET.fromstring(resp.data)] == ["Speak", "Hangup"]
    assert drain_queue(celery_app, "transfers") == []


@pytest.mark.parametrize("headers", [
    {},
    {"X-Plivo-Signature-V3": "abc"},
    {"X-Plivo-Signature-V3": "abc", "X-Plivo-Signature-V3-Nonce": "n"},
])
def test_bad_signature_is_refused(client: FlaskClient, settings: Settings, store: Store,
                                  celery_app: Celery, headers: dict[str, str]) -> None:
    tid = pending(store)
    resp = post(client, settings, f"/plivo/dial-action?transfer_id={tid}",
                {"DialStatus": "busy"}, headers=headers or {"X-Other": "1"})
    assert resp.status_code == 403
    assert drain_queue(celery_app, "transfers") == []


def test_signature_with_wrong_token_is_refused(client: FlaskClient, settings: Settings,
                                               celery_app: Celery) -> None:
    path = "/plivo/dial-action?transfer_id=tr_1"
    params = {"DialStatus": "busy"}
    headers = signed(settings, "POST", path, params, token="someone-else")
    assert post(client, settings, path, params, headers=headers).status_code == 403
    assert drain_queue(celery_app, "transfers") == []


def test_replayed_nonce_is_refused(client: FlaskClient, settings: Settings,
                                   celery_app: Celery) -> None:
    path = "/plivo/dial-action?transfer_id=tr_1"
    params = {"DialStatus": "busy"}
    headers = signed(settings, "POST", path, params, nonce="nonce-1")
    assert post(client, settings, path, params, headers=headers).status_code == 200
    assert post(client, settings, path, params, headers=headers).status_code == 403
    assert len(drain_queue(celery_app, "transfers")) == 1


def test_dial_action_answers_resume_and_enqueues(client: FlaskClient, settings: Settings,
                                                 celery_app: Celery) -> None:
    resp = post(client, settings, "/plivo/dial-action?transfer_id=tr_1",
                {"DialStatus": "no-answer", "DialALegUUID": "uuid-1"})
    assert ET.fromstring(resp.data).findtext("Redirect") == RESUME_URL
    [msg] = drain_queue(celery_app, "transfers")
    received_at = float(msg["kwargs"]["params"].pop("received_at"))
    assert msg["kwargs"] == {"provider": "plivo", "kind": "dial-action", "transfer_id": "tr_1",
                             "params": {"DialStatus": "no-answer", "DialALegUUID": "uuid-1",
                                        "attempt": "0"}}
    assert received_at > 0


@pytest.mark.parametrize(("path", "params"), [
    ("/plivo/dial-action?transfer_id=tr_1", {"DialALegUUID": "x"}),
    ("/plivo/dial-action", {"DialStatus": "busy"}),
    ("/plivo/dial-callback?transfer_id=tr_1", {"DialBLegUUID": "x"}),
    ("/plivo/status", {"CallStatus": "completed"}),
])
def test_malformed_is_400(client: FlaskClient, settings: Settings, celery_app: Celery,
                          path: str, params: dict[str, str]) -> None:
    assert post(client, settings, path, params).status_code == 400
    assert drain_queue(celery_app, "transfers") == []


def test_hangup_url_enqueues_call_status(client: FlaskClient, settings: Settings,
                                         celery_app: Celery) -> None:
    resp = post(client, settings, "/plivo/status?lead_id=L1",
                {"CallUUID": "uuid-1", "CallStatus": "completed", "HangupCause": "X"})
    assert resp.status_code == 200
    [msg] = drain_queue(celery_app, "transfers")
    assert msg["kwargs"] == {"provider": "plivo", "call_id": "uuid-1", "status": "completed",
                             "lead_id": "L1"}


def test_nonce_released_when_not_accepted(settings: Settings, store: Store,
                                          dead_celery: Celery, make_app: AppFactory) -> None:
    app = make_app(celery=dead_celery)
    path, params = "/plivo/dial-callback?transfer_id=tr_1", {"Event": "DialAnswer"}
    headers = signed(settings, "POST", path, params, nonce="retry-me")
    assert post(app.test_client(), settings, path, params, headers=headers).status_code == 503
    assert store.claim_once("nonce:plivo:retry-me")  # free again for Plivo's retry


def fallback_pending(store: Store, numbers: list[str]) -> str:
    raw = make_request(lead_id="L1", provider="plivo", call_id="uuid-1")
    raw["template"]["configurations"] = {"transfer_numbers": numbers}
    return pending(store, raw=raw)


def test_unreached_destination_dials_the_next(client: FlaskClient, settings: Settings,
                                              store: Store, celery_app: Celery) -> None:
    tid = fallback_pending(store, ["+14155550101", "+14155550102", "+14155550103"])
    resp = post(client, settings, f"/plivo/dial-action?transfer_id={tid}",
                {"DialStatus": "busy"})
    dial = ET.fromstring(resp.data).find("Dial")
    assert dial is not None and dial.findtext("Number") == "+14155550102"
    assert bare(dial.get("action")).endswith(f"transfer_id={tid}&attempt=1")
    assert store.get_flag("L1") == "+14155550102"
    assert store.r.ttl("transfer:L1") > 0
    assert drain_queue(celery_app, "transfers") == []
    # Plivo delivers the first action again: the answer is the current dial, not a 3rd.
    again = post(client, settings, f"/plivo/dial-action?transfer_id={tid}",
                 {"DialStatus": "busy"})
    assert ET.fromstring(again.data).findtext("Dial/Number") == "+14155550102"
    # The second is not reached either; the third is dialed; then none is left.
    third = post(client, settings, f"/plivo/dial-action?transfer_id={tid}&attempt=1",
                 {"DialStatus": "no-answer"})
    assert ET.fromstring(third.data).findtext("Dial/Number") == "+14155550103"
    last = post(client, settings, f"/plivo/dial-action?transfer_id={tid}&attempt=2",
                {"DialStatus": "no-answer"})
    assert ET.fromstring(last.data).findtext("Redirect") == RESUME_URL
    [msg] = drain_queue(celery_app, "transfers")
    assert msg["kwargs"]["params"]["attempt"] == "2"
    notes = [e["note"] for e in store.timeline(tid)]
    assert "destination 1 busy" in notes and "destination 2 no answer" in notes


def test_each_destination_s_extension_goes_in_its_number_s_send_digits(
        client: FlaskClient, settings: Settings, store: Store) -> None:
    raw = make_request(lead_id="L1", provider="plivo", call_id="uuid-1", transfer_number=None)
    raw["template"]["configurations"] = {"transfer_numbers": [
        "+14155550101", {"number": "+14155550102", "extension": "ww42#"}]}
    tid = pending(store, raw=raw)
    first = post(client, settings, f"/plivo/dial-up?transfer_id={tid}", {"CallUUID": "uuid-1"})
    number = ET.fromstring(first.data).find("Dial/Number")
    assert number is not None and number.get("sendDigits") is None
    second = post(client, settings, f"/plivo/dial-action?transfer_id={tid}",
                  {"DialStatus": "busy"})
    number = ET.fromstring(second.data).find("Dial/Number")
    assert number is not None and number.text == "+14155550102"
    assert number.get("sendDigits") == "ww42#"


def test_the_dial_actions_hangup_cause_is_kept_with_each_attempt(
        client: FlaskClient, settings: Settings, store: Store) -> None:
    tid = fallback_pending(store, ["+14155550101", "+14155550102"])
    post(client, settings, f"/plivo/dial-action?transfer_id={tid}",
         {"DialStatus": "busy", "DialHangupCause": "USER_BUSY"})
    post(client, settings, f"/plivo/dial-action?transfer_id={tid}&attempt=1",
         {"DialStatus": "failed", "DialHangupCause": "UNALLOCATED_NUMBER"})
    # Plivo gives a cause name, no SIP code.
    assert store.causes(tid, 3) == [Cause(None, "USER_BUSY"), Cause(None, "UNALLOCATED_NUMBER"),
                                    None]


def test_fallback_on_ends_the_list_at_an_outcome_it_does_not_name(
        client: FlaskClient, settings: Settings, store: Store, celery_app: Celery) -> None:
    raw = make_request(lead_id="L1", provider="plivo", call_id="uuid-1")
    raw["template"]["configurations"] = {"transfer_numbers": ["+14155550101", "+14155550102"],
                                         "fallback_on": ["busy"]}
    tid = pending(store, raw=raw)
    resp = post(client, settings, f"/plivo/dial-action?transfer_id={tid}",
                {"DialStatus": "no-answer"})
    # No next <Dial>: back to the AI, and the worker fails the transfer with no_answer.
    assert ET.fromstring(resp.data).find("Dial") is None
    assert ET.fromstring(resp.data).findtext("Redirect") == RESUME_URL
    assert store.get_flag("L1") == "+14155550101"
    [msg] = drain_queue(celery_app, "transfers")
    assert msg["kwargs"]["params"]["DialStatus"] == "no-answer"
    assert "destination 1 no answer (not a fallback_on outcome)" in [
        e["note"] for e in store.timeline(tid)]


def test_dial_xml_carries_caller_id_and_hold_audio(client: FlaskClient, settings: Settings,
                                                   store: Store) -> None:
    raw = make_request(lead_id="L1", provider="plivo", call_id="uuid-1")
    raw["template"]["configurations"].update(caller_id="customer",
                                             hold_audio="https://cdn.example.com/hold.mp3")
    raw["lead"]["phone_number"] = "+14155550177"
    tid = pending(store, raw=raw)
    resp = post(client, settings, f"/plivo/dial-up?transfer_id={tid}", {"CallUUID": "uuid-1"})
    dial = ET.fromstring(resp.data).find("Dial")
    assert dial is not None and dial.get("callerId") == "+14155550177"
    assert bare(dial.get("dialMusic")) == f"{BASE}/plivo/hold?transfer_id={tid}"
    for path in (f"/plivo/hold?transfer_id={tid}", path_of(dial.get("dialMusic"))):
        hold = post(client, settings, path, {"CallUUID": "uuid-1"})
        play = ET.fromstring(hold.data).find("Play")
        assert play is not None and play.text == "https://cdn.example.com/hold.mp3"
        assert play.get("loop") == "0"


def test_default_hold_is_a_ringing_tone(client: FlaskClient, settings: Settings,
                                        store: Store) -> None:
    tid = pending(store)
    resp = post(client, settings, f"/plivo/dial-up?transfer_id={tid}", {"CallUUID": "uuid-1"})
    dial = ET.fromstring(resp.data).find("Dial")
    assert dial is not None and dial.get("dialMusic") == "real"
    assert dial.get("callerId") == "+14155550199"


def test_screening_dial_carries_the_templates_key_and_timeout(
        client: FlaskClient, settings: Settings, store: Store) -> None:
    raw = make_request(lead_id="L1", provider="plivo", call_id="uuid-1")
    raw["template"]["configurations"].update(screening=True, screening_key="*",
                                             screening_timeout=12)
    tid = pending(store, raw=raw)
    resp = post(client, settings, f"/plivo/dial-up?transfer_id={tid}", {"CallUUID": "uuid-1"})
    dial = ET.fromstring(resp.data).find("Dial")
    assert dial is not None
    # confirmTimeout counts from the answer: the prompt's time comes on top of the 12 s.
    prompt = "Press the star key to take the call."
    assert (dial.get("confirmKey"), dial.get("confirmTimeout")) == (
        "*", str(12 + round(2 + len(prompt) / 10 + 0.5 + 0.5)))
    whisper = post(client, settings, f"/plivo/whisper?transfer_id={tid}", {"CallUUID": "b"})
    assert [e.text for e in ET.fromstring(whisper.data)][-1] == \
        "Press the star key to take the call."


# Redis down: every route whose answer steers the call still answers it.

@pytest.fixture
def down(settings: Settings, dead_celery: Celery) -> FlaskClient:
    """The app with Redis (a client at a closed port) and the broker both unreachable."""
    dead_redis = redis.Redis(host="127.0.0.1", port=1, decode_responses=True,
                             socket_connect_timeout=0.2, socket_timeout=0.2, retry=None)
    app = create_app(settings)
    dead_store = Store(dead_redis, settings)
    app.extensions["warm_transfer"] = Deps(settings, dead_store, dead_celery,
                                           TransferClient(settings, store=dead_store,
                                                          celery=dead_celery))
    return app.test_client()


def record(store: Store, **config: Any) -> Transfer:
    """A pending transfer's record, read while Redis was up (the worker built its URL)."""
    raw = make_request(lead_id="L1", provider="plivo", call_id="uuid-1")
    raw["template"]["configurations"].update(config)
    raw["lead"]["phone_number"] = "+14155550177"
    rec = store.get_record(pending(store, raw=raw))
    assert rec is not None
    return rec


def signed_path(settings: Settings, path: str, transfer: Transfer) -> str:
    return f"{path}?{plivo.signed_query(settings, path, transfer)}"


def test_redis_down_dial_up_answers_from_the_signed_url(
        down: FlaskClient, settings: Settings, store: Store) -> None:
    rec = record(store, transfer_numbers=["+14155550101", "+14155550102"],
                 caller_id="customer", hold_audio="https://cdn.example.com/hold.mp3")
    path = signed_path(settings, "/plivo/dial-up", rec)
    resp = post(down, settings, path, {"CallUUID": "uuid-1"})
    assert resp.status_code == 200
    dial = ET.fromstring(resp.data).find("Dial")
    assert dial is not None and dial.findtext("Number") == "+14155550101"
    assert dial.get("callerId") == "+14155550177"
    assert bare(dial.get("dialMusic")) == f"{BASE}/plivo/hold?transfer_id={rec.transfer_id}"
    # The same request again (a replay, or Plivo's retry): the same XML, not a 403 or 503.
    again = post(down, settings, path, {"CallUUID": "uuid-1"},
                 headers=signed(settings, "POST", path, {"CallUUID": "uuid-1"}, nonce="n-1"))
    assert again.status_code == 200
    assert post(down, settings, path, {"CallUUID": "uuid-1"},
                headers=signed(settings, "POST", path, {"CallUUID": "uuid-1"}, nonce="n-1")
                ).data == again.data


def test_redis_down_dial_up_without_a_context_sends_the_customer_back(
        down: FlaskClient, settings: Settings) -> None:
    resp = post(down, settings, "/plivo/dial-up?transfer_id=tr_old", {"CallUUID": "uuid-1"})
    assert resp.status_code == 200
    assert ET.fromstring(resp.data).findtext("Redirect") == RESUME_URL


@pytest.mark.parametrize("route", ["/plivo/dial-up", "/plivo/dial-action", "/plivo/whisper",
                                   "/plivo/hold"])
def test_a_context_we_did_not_sign_is_refused(client: FlaskClient, settings: Settings,
                                              store: Store, celery_app: Celery,
                                              route: str) -> None:
    rec = record(store)
    path = signed_path(settings, route, rec)
    forged = replace(rec, destinations=("+19005550000",))
    payload = plivo.signed_query(settings, route, forged).split("t=")[1].split(".")[0]
    tampered = path.replace(path.split("t=")[1].split(".")[0], payload)
    params = {"CallUUID": "uuid-1", "DialStatus": "busy"}
    # Plivo's own signature over the tampered URL is valid: only our MAC catches it.
    assert post(client, settings, tampered, params).status_code == 403
    # Moved to another route, a genuine context does not verify either.
    other = "/plivo/hold" if route != "/plivo/hold" else "/plivo/whisper"
    assert post(client, settings, path.replace(route, other), params).status_code == 403
    assert drain_queue(celery_app, "transfers") == []


@pytest.mark.parametrize("key", ["5", "0"])
def test_redis_down_whisper_gives_a_generic_briefing(down: FlaskClient, settings: Settings,
                                                     store: Store, key: str) -> None:
    rec = record(store, screening=True, screening_key=key)
    rec = replace(rec, summary="Wants a refund")
    resp = post(down, settings, signed_path(settings, "/plivo/whisper", rec), {"CallUUID": "b"})
    assert resp.status_code == 200
    assert [e.text for e in ET.fromstring(resp.data)] == [
        "Incoming transfer from the AI assistant.", f"Press {key} to take the call."]


def test_redis_down_hold_plays_the_templates_audio(down: FlaskClient, settings: Settings,
                                                   store: Store) -> None:
    rec = record(store, hold_audio="https://cdn.example.com/hold.mp3")
    resp = post(down, settings, signed_path(settings, "/plivo/hold", rec), {"CallUUID": "a"})
    assert resp.status_code == 200
    assert ET.fromstring(resp.data).findtext("Play") == "https://cdn.example.com/hold.mp3"
    bare_hold = post(down, settings, "/plivo/hold?transfer_id=x", {"CallUUID": "a"})
    assert [e.tag for e in ET.fromstring(bare_hold.data)] == ["Wait"]


@pytest.mark.parametrize(("status", "screening", "answer"), [
    ("busy", False, "Redirect"),
    ("no-answer", False, "Redirect"),
    ("completed", False, "Hangup"),  # a bridge that has ended
    ("completed", True, "Redirect"),  # bridged or dropped for want of the key: cannot tell
])
def test_redis_down_dial_action_never_hangs_up_an_unserved_customer(
        down: FlaskClient, settings: Settings, store: Store, status: str, screening: bool,
        answer: str) -> None:
    rec = record(store, transfer_numbers=["+14155550101", "+14155550102"],
                 screening=screening)
    resp = post(down, settings, signed_path(settings, "/plivo/dial-action", rec),
                {"DialStatus": status})
    assert resp.status_code == 200
    # No next destination while Redis is down: the store could not record the step.
    assert [e.tag for e in ET.fromstring(resp.data)] == [answer]
    if answer == "Redirect":
        assert ET.fromstring(resp.data).findtext("Redirect") == RESUME_URL


@pytest.mark.parametrize(("path", "params"), [
    ("/plivo/dial-callback?transfer_id=tr_1", {"DialAction": "answer"}),
    ("/plivo/status?lead_id=L1", {"CallUUID": "uuid-1", "CallStatus": "completed"}),
])
def test_redis_down_status_callbacks_answer_503(down: FlaskClient, settings: Settings,
                                                path: str, params: dict[str, str]) -> None:
    assert post(down, settings, path, params).status_code == 503  # Plivo retries these


def test_answer_callback_by_dial_action_or_event(client: FlaskClient, settings: Settings,
                                                 celery_app: Celery) -> None:
    for params in ({"DialAction": "answer"}, {"Event": "DialAnswer"}):
        path = "/plivo/dial-callback?transfer_id=tr_1&attempt=2"
        assert post(client, settings, path, params).status_code == 200
        [msg] = drain_queue(celery_app, "transfers")
        assert msg["kwargs"]["params"]["attempt"] == "2"


def test_screened_dial_completed_before_the_confirm_window_dials_the_next(
        client: FlaskClient, settings: Settings, store: Store, celery_app: Celery) -> None:
    rec = record(store, transfer_numbers=["+14155550101", "+14155550102"], screening=True)
    tid = rec.transfer_id
    whisper = post(client, settings, signed_path(settings, "/plivo/whisper", rec),
                   {"CallUUID": "b"})
    assert whisper.status_code == 200 and store.get_transfer(tid)["picked_up_at_0"]  # type: ignore[index]
    store.transition(tid, State.HUMAN_ANSWERED, "picked up")  # the worker, on the answer
    # The leg ended "completed" well inside confirmTimeout: dropped for want of the key.
    resp = post(client, settings, signed_path(settings, "/plivo/dial-action", rec),
                {"DialStatus": "completed"})
    assert ET.fromstring(resp.data).findtext("Dial/Number") == "+14155550102"
    assert store.get_transfer(tid)["state"] == "dialing"  # type: ignore[index]
    assert "destination 1 declined" in [e["note"] for e in store.timeline(tid)]
    assert drain_queue(celery_app, "transfers") == []


# Replays (issue 20): V3 signs no timestamp, so nonces are kept as long as the records.

def test_replayed_request_refused_after_the_old_15_minute_window(
        client: FlaskClient, settings: Settings, store: Store, celery_app: Celery) -> None:
    path = "/plivo/status?lead_id=L1"
    params = {"CallUUID": "uuid-1", "CallStatus": "completed"}
    headers = signed(settings, "POST", path, params, nonce="captured")
    assert post(client, settings, path, params, headers=headers).status_code == 200
    key = "wt:once:nonce:plivo:captured"
    assert store.r.ttl(key) > settings.transfer_record_ttl - 60
    # Sixteen minutes later (what Redis then shows of the nonce's life):
    store.r.expire(key, store.r.ttl(key) - 16 * 60)
    assert post(client, settings, path, params, headers=headers).status_code == 403
    assert len(drain_queue(celery_app, "transfers")) == 1  # one call.ended, never two
    # The dial-up's own nonce (claimed in its Lua round trip) lives as long.
    tid = pending(store)
    dial_up = f"/plivo/dial-up?transfer_id={tid}"
    headers = signed(settings, "POST", dial_up, {"CallUUID": "uuid-1"}, nonce="dial-up-1")
    assert post(client, settings, dial_up, {"CallUUID": "uuid-1"}, headers=headers
                ).status_code == 200
    assert store.r.ttl("wt:once:nonce:plivo:dial-up-1") > settings.transfer_record_ttl - 60


def test_whisper_with_control_characters_in_the_summary_is_xml(
        client: FlaskClient, settings: Settings, store: Store) -> None:
    rec = record(store, screening=True)
    store.set_fields(rec.transfer_id, summary="hi\u000b there\x00")
    resp = post(client, settings, signed_path(settings, "/plivo/whisper", rec),
                {"CallUUID": "b"})
    assert resp.status_code == 200
    assert ET.fromstring(resp.data).findtext("Speak") == (
        "Incoming transfer. Note from the AI assistant: hi  there ")


def test_a_sip_destination_is_a_user_with_our_sip_headers(
        client: FlaskClient, settings: Settings, store: Store) -> None:
    raw = make_request(lead_id="L1", provider="plivo", call_id="uuid-1", transfer_number=None,
                       summary="Wants a refund, today")
    raw["template"]["configurations"] = {
        "transfer_numbers": [{"number": "sip:desk-7@pbx.example.com", "extension": "12"}],
        "sip_headers": {"X-Queue-Name": "billing"}}
    req = parse_request(raw, store.get_number, allowed_sip_domains="pbx.example.com")
    store.begin(req)
    store.set_flag(req.lead_id, req.transfer_number)
    store.transition(req.transfer_id, State.DIALING, "transferred")
    resp = post(client, settings, f"/plivo/dial-up?transfer_id={req.transfer_id}",
                {"CallUUID": "uuid-1"})
    dial = ET.fromstring(resp.data).find("Dial")
    assert dial is not None and dial.find("Number") is None
    user = dial.find("User")
    assert user is not None and user.text == "sip:desk-7@pbx.example.com"
    assert user.get("sendDigits") == "12"
    # Names: letters and digits (Plivo prefixes X-PH-); values: letters, digits, %-escapes.
    assert user.get("sipHeaders") == (
        f"TransferId=tr%5F{req.transfer_id[3:]},LeadId=L1,"
        "TransferSummary=Wants%20a%20refund%2C%20today,QueueName=billing")


def test_dial_events_the_worker_only_notes_are_recorded_not_enqueued(
        client: FlaskClient, settings: Settings, store: Store, celery_app: Celery) -> None:
    # What the worker's handle_callback did with them (a note), in the triage round trip;
    # the answer still goes to the worker, and everything after the end is noted late.
    tid = pending(store)
    path = f"/plivo/dial-callback?transfer_id={tid}"
    assert post(client, settings, path, {"Event": "DialHangup"}).status_code == 200
    assert drain_queue(celery_app, "transfers") == []
    assert store.timeline(tid)[-1]["note"] == "dial DialHangup"
    post(client, settings, path, {"Event": "DialAnswer"})
    [msg] = drain_queue(celery_app, "transfers")
    assert msg["kwargs"]["kind"] == "dial-callback"
    store.transition(tid, State.SUCCEEDED, "human agent answered")  # the worker, on it
    for params in ({"DialAction": "hangup"}, {"Event": "DialAnswer"}):
        assert post(client, settings, path, params).status_code == 200
    assert drain_queue(celery_app, "transfers") == []
    assert [e["note"] for e in store.timeline(tid)][-2:] == [
        "late dial-callback callback ignored"] * 2
