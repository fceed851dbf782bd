"""Plivo webhooks: V3 signatures and nonces first, then the XML answers and one enqueue."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import urlencode

import pytest
from celery import Celery
from flask.testing import FlaskClient
from plivo.utils.signature_v3 import construct_get_url, construct_post_url, get_signature_v3

from shared.config import Settings
from shared.contracts import parse_request
from shared.store import State, Store
from tests.helpers import drain_queue, make_request
from tests.unit.conftest import RESUME_URL, AppFactory

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
    assert msg["kwargs"] == {"provider": "plivo", "kind": "dial-action", "transfer_id": "tr_1",
                             "params": {"DialStatus": "no-answer", "DialALegUUID": "uuid-1",
                                        "attempt": "0"}}


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
    assert dial.get("action", "").endswith(f"transfer_id={tid}&attempt=1")
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
    assert dial.get("dialMusic") == f"{BASE}/plivo/hold?transfer_id={tid}"
    hold = post(client, settings, f"/plivo/hold?transfer_id={tid}", {"CallUUID": "uuid-1"})
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
    assert (dial.get("confirmKey"), dial.get("confirmTimeout")) == ("*", "12")
    whisper = post(client, settings, f"/plivo/whisper?transfer_id={tid}", {"CallUUID": "b"})
    assert [e.text for e in ET.fromstring(whisper.data)][-1] == \
        "Press the star key to take the call."
