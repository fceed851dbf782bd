"""Hostile inputs at the webhook app: control characters that would break XML, JSON nested
to exhaust the parser, and the operator-only endpoints."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from flask.testing import FlaskClient
from plivo.utils.signature_v3 import construct_post_url, get_signature_v3
from twilio.request_validator import RequestValidator

from shared.config import Settings
from shared.contracts import parse_request
from shared.store import State, Store
from tests.helpers import make_request
from tests.unit.conftest import AppFactory
from webhooks.parsing import MAX_JSON_DEPTH, json_depth_ok

BASE = "https://hooks.example.com"
SUMMARY = "hi\u000b there"


def _pending(store: Store, provider: str, **config: Any) -> str:
    raw = make_request(lead_id=f"L-{uuid.uuid4().hex[:6]}", provider=provider,
                       call_id="uuid-1" if provider == "plivo" else "CA" + "1" * 32,
                       summary=SUMMARY)
    raw["template"]["configurations"].update(config)
    req = parse_request(raw, store.get_number)
    store.begin(req)
    store.set_flag(req.lead_id, req.transfer_number)
    store.transition(req.transfer_id, State.DIALING, "dialing")
    return req.transfer_id


def _twilio(client: FlaskClient, settings: Settings, path: str, params: dict[str, str]) -> Any:
    sig = RequestValidator(settings.twilio_auth_token).compute_signature(BASE + path, params)
    return client.post(path, data=params, headers={"X-Twilio-Signature": sig},
                       base_url="http://10.0.0.5:8000")


def _plivo(client: FlaskClient, settings: Settings, path: str, params: dict[str, str]) -> Any:
    nonce = uuid.uuid4().hex
    base = construct_post_url(BASE + path, dict(params)).decode()
    sig = get_signature_v3(settings.plivo_auth_token.encode(), base, nonce.encode()).decode()
    return client.post(path, data=params, base_url="http://10.0.0.9:8000",
                       headers={"X-Plivo-Signature-V3": sig, "X-Plivo-Signature-V3-Nonce": nonce})


def _spoken(xml: bytes) -> list[str]:
    root = ET.fromstring(xml)  # raises on XML that is not well-formed
    return [el.text or "" for el in root.iter() if el.tag in ("Say", "Speak")]


def test_twilio_whisper_of_a_summary_with_control_characters(
        make_app: AppFactory, settings: Settings, store: Store) -> None:
    tid = _pending(store, "twilio")
    resp = _twilio(make_app().test_client(), settings, f"/twilio/whisper?transfer_id={tid}",
                   {"CallSid": "CA" + "b" * 32})
    assert resp.status_code == 200
    assert any("hi there" in text for text in _spoken(resp.data))


def test_twilio_screen_of_a_summary_with_control_characters(
        make_app: AppFactory, settings: Settings, store: Store) -> None:
    tid = _pending(store, "twilio", screening=True)
    resp = _twilio(make_app().test_client(), settings,
                   f"/twilio/screen?transfer_id={tid}&attempt=0", {"CallSid": "CA" + "b" * 32})
    assert resp.status_code == 200
    assert any("hi there" in text for text in _spoken(resp.data))


def test_plivo_whisper_of_a_summary_with_control_characters(
        make_app: AppFactory, settings: Settings, store: Store) -> None:
    tid = _pending(store, "plivo")
    resp = _plivo(make_app().test_client(), settings, f"/plivo/whisper?transfer_id={tid}",
                  {"CallUUID": "b"})
    assert resp.status_code == 200  # was 500: lxml refuses the character
    assert any("hi there" in text for text in _spoken(resp.data))


DEEP = "[" * 30000


def test_deep_json_to_transfers_is_400(make_app: AppFactory, settings: Settings) -> None:
    resp = make_app().test_client().post(
        "/transfers", data=DEEP, content_type="application/json",
        headers={"Authorization": f"Bearer {settings.api_token}"})
    assert resp.status_code == 400


def test_deep_json_to_exotel_status_is_400(make_app: AppFactory, settings: Settings) -> None:
    resp = make_app().test_client().post(
        f"/exotel/status?token={settings.exotel_webhook_token}", data=DEEP,
        content_type="application/json")
    assert resp.status_code == 400


@pytest.mark.parametrize(("body", "ok"), [
    ("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH, True),
    ("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1), False),
    ('{"a": "' + "[" * 1000 + '"}', True),        # brackets inside a string do not count
    ('{"a": "\\"' + "[" * 1000 + '"}', True),     # nor after an escaped quote
    ("{" * 40, False),
])
def test_json_depth_bound(body: str, ok: bool) -> None:
    assert json_depth_ok(body) is ok


def test_metrics_and_readyz_detail_behind_the_metrics_token(make_app: AppFactory) -> None:
    client = make_app(metrics_token="scrape-secret").test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    scraped = client.get("/metrics", headers={"Authorization": "Bearer scrape-secret"})
    assert scraped.status_code == 200
    public = client.get("/readyz")
    assert set(public.json or {}) == {"status"}
    detailed = client.get("/readyz", headers={"Authorization": "Bearer scrape-secret"})
    assert {"status", "redis", "broker"} <= set(detailed.json or {})


def test_without_a_metrics_token_both_stay_open(make_app: AppFactory) -> None:
    client = make_app().test_client()
    assert client.get("/metrics").status_code == 200
    assert "redis" in (client.get("/readyz").json or {})
