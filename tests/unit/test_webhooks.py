"""The webhook views: authentication first, then parsing, then one enqueue."""

from __future__ import annotations

from typing import Any

import pytest
from celery import Celery
from flask import Flask
from flask.testing import FlaskClient
from twilio.request_validator import RequestValidator

from shared.config import Settings
from shared.store import Store
from tests.helpers import drain_queue, make_request
from tests.unit.conftest import AppFactory
from tests.unit.providers.twilio import TWILIO_SID
from webhooks import create_app

BASE = "https://hooks.example.com"


@pytest.fixture
def app(make_app: AppFactory) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def sign(settings: Settings, path: str, params: dict[str, str]) -> str:
    return RequestValidator(settings.twilio_auth_token).compute_signature(BASE + path, params)


def post(client: FlaskClient, settings: Settings, path: str, params: dict[str, str],
         signature: str | None = "auto", **kw: Any) -> Any:
    headers = kw.pop("headers", {})
    if signature == "auto":
        signature = sign(settings, path, params)
    if signature is not None:
        headers["X-Twilio-Signature"] = signature
    # The request arrives at an internal host; the signature covers the public URL.
    return client.post(path, data=params, headers=headers, base_url="http://10.0.0.5:8000",
                       **kw)


AGENT_PARAMS = {"CallSid": "CA" + "a" * 32, "CallStatus": "busy", "AccountSid": TWILIO_SID}


def test_signed_callback_is_enqueued(client: FlaskClient, settings: Settings,
                                     celery_app: Celery) -> None:
    resp = post(client, settings, "/twilio/agent-status?transfer_id=tr_1", AGENT_PARAMS)
    assert resp.status_code == 204
    [msg] = drain_queue(celery_app, "transfers")
    assert msg["task"] == "warm_transfer.provider_callback"
    assert msg["kwargs"] == {"provider": "twilio", "kind": "agent-status",
                             "transfer_id": "tr_1", "params": {**AGENT_PARAMS, "attempt": "0"}}


@pytest.mark.parametrize("signature", [None, "", "bm90IGEgc2lnbmF0dXJl"])
def test_bad_or_missing_signature_is_refused(client: FlaskClient, settings: Settings,
                                             celery_app: Celery, signature: str | None) -> None:
    resp = post(client, settings, "/twilio/agent-status?transfer_id=tr_1", AGENT_PARAMS,
                signature=signature)
    assert resp.status_code == 403
    assert drain_queue(celery_app, "transfers") == []


def test_signature_over_other_params_is_refused(client: FlaskClient, settings: Settings,
                                                celery_app: Celery) -> None:
    sig = sign(settings, "/twilio/agent-status?transfer_id=tr_1", AGENT_PARAMS)
    tampered = {**AGENT_PARAMS, "CallStatus": "completed"}
    resp = post(client, settings, "/twilio/agent-status?transfer_id=tr_1", tampered,
                signature=sig)
    assert resp.status_code == 403
    sig = sign(settings, "/twilio/agent-status?transfer_id=tr_1", AGENT_PARAMS)
    resp = post(client, settings, "/twilio/agent-status?transfer_id=tr_2", AGENT_PARAMS,
                signature=sig)
    assert resp.status_code == 403
    assert drain_queue(celery_app, "transfers") == []


@pytest.mark.parametrize(("path", "params"), [
    ("/twilio/agent-status?transfer_id=tr_1", {"CallSid": "CA1"}),
    ("/twilio/agent-status", AGENT_PARAMS),
    ("/twilio/conference?transfer_id=tr_1", {"CallSid": "CA1"}),
    ("/twilio/status", {"CallStatus": "completed"}),
])
def test_malformed_body_is_400_and_nothing_enqueued(client: FlaskClient, settings: Settings,
                                                    celery_app: Celery, path: str,
                                                    params: dict[str, str]) -> None:
    assert post(client, settings, path, params).status_code == 400
    assert drain_queue(celery_app, "transfers") == []


def test_json_body_is_refused(client: FlaskClient, settings: Settings, celery_app: Celery
                              ) -> None:
    sig = sign(settings, "/twilio/status", {})
    resp = client.post("/twilio/status", json=AGENT_PARAMS,
                       headers={"X-Twilio-Signature": sig})
    assert resp.status_code == 400
    assert drain_queue(celery_app, "transfers") == []


def test_oversized_body_is_refused(client: FlaskClient, settings: Settings) -> None:
    params = {**AGENT_PARAMS, "Junk": "x" * 70_000}
    assert post(client, settings, "/twilio/status", params).status_code == 413


def test_customer_status_enqueues_only_call_endings(client: FlaskClient, settings: Settings,
                                                    celery_app: Celery) -> None:
    ringing = {"CallSid": "CA1", "CallStatus": "in-progress"}
    assert post(client, settings, "/twilio/status?lead_id=L1", ringing).status_code == 204
    ended = {"CallSid": "CA1", "CallStatus": "completed"}
    assert post(client, settings, "/twilio/status?lead_id=L1", ended).status_code == 204
    [msg] = drain_queue(celery_app, "transfers")
    assert msg["task"] == "warm_transfer.call_status"
    assert msg["kwargs"] == {"provider": "twilio", "call_id": "CA1", "status": "completed",
                             "lead_id": "L1"}


def test_broker_down_answers_503_so_twilio_retries(make_app: AppFactory, settings: Settings,
                                                   dead_celery: Celery) -> None:
    resp = post(make_app(celery=dead_celery).test_client(), settings,
                "/twilio/conference?transfer_id=tr_1",
                {"StatusCallbackEvent": "participant-join", "CallSid": "CA1"})
    assert resp.status_code == 503


def test_transfers_endpoint_requires_bearer(client: FlaskClient, celery_app: Celery) -> None:
    body = make_request(lead_id="L1")
    assert client.post("/transfers", json=body).status_code == 401
    assert client.post("/transfers", json=body,
                       headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert drain_queue(celery_app, "transfers") == []


def test_transfers_endpoint_enqueues_and_reports(client: FlaskClient, celery_app: Celery
                                                 ) -> None:
    auth = {"Authorization": "Bearer api-test-token"}
    resp = client.post("/transfers", json=make_request(lead_id="L1"), headers=auth)
    assert resp.status_code == 202 and resp.json["status"] == "transfer_requested"
    again = client.post("/transfers", json=make_request(lead_id="L1"), headers=auth)
    assert again.status_code == 409 and again.json["status"] == "transfer_in_progress"
    bad = client.post("/transfers", json=make_request(transfer_number=None), headers=auth)
    assert bad.status_code == 422 and bad.json["error"] == "missing_transfer_number"
    assert len(drain_queue(celery_app, "transfers")) == 1
    status = client.get("/transfers/leads/L1", headers=auth)
    assert status.status_code == 200 and status.json["status"] == "requested"
    assert status.json["timeline"][0]["state"] == "requested"
    assert status.json["event"] is None  # not ended yet
    assert client.get("/transfers/leads/nobody", headers=auth).status_code == 404


def test_transfers_endpoint_disabled_without_token(settings: Settings, store: Store,
                                                   make_app: AppFactory) -> None:
    resp = make_app(api_token="").test_client().post("/transfers", json=make_request(),
                                  headers={"Authorization": "Bearer "})
    assert resp.status_code == 401


def test_health(client: FlaskClient) -> None:
    assert client.get("/healthz").json == {"status": "ok"}


def test_readyz_503_when_redis_down(settings: Settings, celery_app: Celery) -> None:
    down = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0",
                                       "celery_broker_url": "redis://127.0.0.1:1/0"})
    resp = create_app(down).test_client().get("/readyz")
    assert resp.status_code == 503
    assert resp.json["redis"] is False


def _metric(text: str, line_start: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_webhooks_and_signature_failures(client: FlaskClient, settings: Settings
                                                       ) -> None:
    post(client, settings, "/twilio/agent-status?transfer_id=tr_1", AGENT_PARAMS)
    post(client, settings, "/twilio/agent-status?transfer_id=tr_1", AGENT_PARAMS,
         signature="bad")
    resp = client.get("/metrics")
    assert resp.status_code == 200 and resp.mimetype == "text/plain"
    text = resp.get_data(as_text=True)
    assert _metric(text, 'warm_transfer_webhook_requests_total{route="/twilio/agent-status",'
                         'status="204"}') == 1
    assert _metric(text, 'warm_transfer_webhook_requests_total{route="/twilio/agent-status",'
                         'status="403"}') == 1
    assert _metric(text, 'warm_transfer_signature_failures_total{provider="twilio"}') == 1


def screened(store: Store, lead: str = "L1") -> str:
    from shared.contracts import parse_request
    from shared.store import State

    raw = make_request(lead_id=lead, call_id="CA" + "c" * 32)
    raw["template"]["configurations"].update(screening=True, summary="Wants a refund")
    req = parse_request(raw, store.get_number)
    store.begin(req)
    store.transition(req.transfer_id, State.DIALING, "dialing")
    return req.transfer_id


def test_screen_answers_the_gather(client: FlaskClient, settings: Settings,
                                   store: Store) -> None:
    import xml.etree.ElementTree as ET

    tid = screened(store)
    resp = post(client, settings, f"/twilio/screen?transfer_id={tid}",
                {"CallSid": "CA" + "a" * 32, "CallStatus": "in-progress"})
    assert resp.status_code == 200 and resp.mimetype == "application/xml"
    gather = ET.fromstring(resp.data).find("Gather")
    assert gather is not None and "Wants a refund" in (gather.findtext("Say") or "")
    assert post(client, settings, f"/twilio/screen?transfer_id={tid}", {"CallSid": "x"},
                signature="bad").status_code == 403


def test_screen_key_joins_the_conference_other_answers_decline(
        client: FlaskClient, settings: Settings, store: Store, celery_app: Celery) -> None:
    import xml.etree.ElementTree as ET

    tid = screened(store)
    path = f"/twilio/screen-result?transfer_id={tid}"
    accepted = post(client, settings, path, {"CallSid": "CA" + "a" * 32, "Digits": "1"})
    conference = ET.fromstring(accepted.data).find("Dial/Conference")
    assert conference is not None and conference.text == "transfer-L1"
    assert conference.get("participantLabel") == "agent"
    assert drain_queue(celery_app, "transfers") == []
    assert not store.get_transfer(tid).get("declined")  # type: ignore[union-attr]

    refused = post(client, settings, path, {"CallSid": "CA" + "a" * 32, "Digits": ""})
    assert ET.fromstring(refused.data).find("Hangup") is not None
    assert store.get_transfer(tid)["declined"] == "1"  # type: ignore[index]
    [msg] = drain_queue(celery_app, "transfers")
    assert msg["kwargs"]["kind"] == "screen" and msg["kwargs"]["params"]["attempt"] == "0"
    # The key pressed for an attempt already left behind joins nobody.
    stale = post(client, settings, path + "&attempt=3", {"CallSid": "CA" + "a" * 32,
                                                         "Digits": "1"})
    assert ET.fromstring(stale.data).find("Dial") is None
