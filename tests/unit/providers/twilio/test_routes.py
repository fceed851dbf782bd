"""Twilio webhooks as Twilio calls them: SharedKey signatures, retried TwiML requests, the
detection verdict route, and the TwiML routes answering with Redis and the broker down."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import urlencode

import pytest
from celery import Celery
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from twilio.request_validator import HMAC_SHA256, RequestValidator
from werkzeug.datastructures import MultiDict

from providers.twilio.signature import twilio_signature_valid
from shared.client import TransferClient
from shared.config import Settings
from shared.contracts import parse_request
from shared.store import State, Store
from tests.helpers import drain_queue, make_request
from tests.unit.conftest import AppFactory
from tests.unit.providers.twilio import TWILIO_SID
from webhooks.deps import Deps

BASE = "https://hooks.example.com"
AGENT = "CA" + "a" * 32
SHARED_KEY = "shared-key-secret"
SETTINGS_HEADER = "key=webhooks_sharedkey_01,algorithm=HMAC_SHA256"


def post(client: FlaskClient, path: str, params: dict[str, str], *, secret: str,
         algorithm: str | None = None, headers: dict[str, str] | None = None) -> Any:
    sig = RequestValidator(secret).compute_signature(BASE + path, params, algorithm)
    return client.post(path, data=params, base_url="http://10.0.0.5:8000",
                       headers={"X-Twilio-Signature": sig, **(headers or {})})


def signed(client: FlaskClient, settings: Settings, path: str, params: dict[str, str],
           token: str | None = None) -> Any:
    headers = {"I-Twilio-Idempotency-Token": token} if token else {}
    return post(client, path, params, secret=settings.twilio_auth_token, headers=headers)


@pytest.fixture
def client(make_app: AppFactory) -> FlaskClient:
    return make_app(twilio_webhook_shared_keys=f"old-key,{SHARED_KEY}").test_client()


def screened(store: Store, lead: str = "L1", **configurations: Any) -> str:
    raw = make_request(lead_id=lead, call_id="CA" + "c" * 32)
    raw["template"]["configurations"].update(screening=True, summary="Wants a refund",
                                             **configurations)
    req = parse_request(raw, store.get_number)
    store.begin(req)
    store.transition(req.transfer_id, State.DIALING, "dialing")
    return req.transfer_id


def screen_path(tid: str, lead: str = "L1", key: str = "1", timeout: str = "8",
                route: str = "screen") -> str:
    return f"/twilio/{route}?" + urlencode({"transfer_id": tid, "lead_id": lead, "key": key,
                                            "timeout": timeout})


# -- signatures ---------------------------------------------------------------------------

AGENT_PARAMS = {"CallSid": AGENT, "CallStatus": "busy", "AccountSid": TWILIO_SID}


def test_a_shared_key_signed_request_is_accepted(client: FlaskClient, celery_app: Celery
                                                 ) -> None:
    # A webhook rule signs with its SharedKey and says so in a header (SDK
    # twilio/request_validator.py: SIGNATURE_SETTINGS_HEADER, HMAC_SHA256).
    resp = post(client, "/twilio/agent-status?transfer_id=tr_1", AGENT_PARAMS,
                secret=SHARED_KEY, algorithm=HMAC_SHA256,
                headers={"X-Twilio-Webhooks-Signature-Settings": SETTINGS_HEADER})
    assert resp.status_code == 204
    [msg] = drain_queue(celery_app, "transfers")
    assert msg["kwargs"]["params"]["CallStatus"] == "busy"


@pytest.mark.parametrize(("secret", "algorithm", "header"), [
    # The header names SHA-256 but the request was signed with the auth token (SHA-1).
    ("twilio-test-token", None, SETTINGS_HEADER),
    # Signed with the shared key, but no header says so: checked against the auth token.
    (SHARED_KEY, HMAC_SHA256, ""),
    # A key we do not hold.
    ("someone-elses-key", HMAC_SHA256, SETTINGS_HEADER),
    # An algorithm the SDK does not know.
    (SHARED_KEY, HMAC_SHA256, "key=k,algorithm=HMAC_MD5"),
])
def test_shared_key_variants_that_do_not_match_are_refused(
        client: FlaskClient, celery_app: Celery, secret: str, algorithm: str | None,
        header: str) -> None:
    headers = {"X-Twilio-Webhooks-Signature-Settings": header} if header else {}
    resp = post(client, "/twilio/agent-status?transfer_id=tr_1", AGENT_PARAMS,
                secret=secret, algorithm=algorithm, headers=headers)
    assert resp.status_code == 403
    assert drain_queue(celery_app, "transfers") == []


def test_shared_key_signature_without_configured_keys_is_refused(make_app: AppFactory) -> None:
    resp = post(make_app().test_client(), "/twilio/agent-status?transfer_id=tr_1",
                AGENT_PARAMS, secret=SHARED_KEY, algorithm=HMAC_SHA256,
                headers={"X-Twilio-Webhooks-Signature-Settings": SETTINGS_HEADER})
    assert resp.status_code == 403


_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF), max_size=12)


@hsettings(max_examples=200, deadline=None)
@given(pairs=st.lists(st.tuples(_text.filter(bool), _text), max_size=6), port=st.booleans(),
       sha256=st.booleans(), forged=st.booleans(), query=_text)
def test_our_check_agrees_with_the_sdk(pairs: list[tuple[str, str]], port: bool,
                                       sha256: bool, forged: bool, query: str) -> None:
    # A form as Flask parses it: repeated names keep every value.
    params = MultiDict(pairs)
    algorithm = HMAC_SHA256 if sha256 else None
    signed_url = f"https://hooks.example.com{':443' if port else ''}/twilio/x?" + urlencode(
        {"q": query})
    url = signed_url.replace(":443", "") if port else signed_url
    sig = RequestValidator("wrong" if forged else "right").compute_signature(
        signed_url, params, algorithm)
    sdk = RequestValidator("right").validate(url, params, sig, algorithm)
    ours = twilio_signature_valid(("other", "right"), url, params, sig,
                                  algorithm or "HMAC_SHA1")
    assert ours == sdk == (not forged)


# -- retried TwiML requests ---------------------------------------------------------------

def test_a_repeated_twiml_request_gets_the_same_twiml(client: FlaskClient, settings: Settings,
                                                      store: Store, celery_app: Celery
                                                      ) -> None:
    tid = screened(store)
    answered = {"CallSid": AGENT, "CallStatus": "in-progress"}
    for path, params in [
            (screen_path(tid), answered),
            (screen_path(tid, route="screen-result"), {"CallSid": AGENT, "Digits": "1"}),
            (f"/twilio/whisper?transfer_id={tid}", {"CallSid": AGENT})]:
        first = signed(client, settings, path, params, token="tok-" + path)
        again = signed(client, settings, path, params, token="tok-" + path)
        assert first.status_code == again.status_code == 200, path
        assert first.mimetype == again.mimetype == "application/xml"
        assert first.data == again.data and first.data.startswith(b"<Response><")


def test_a_repeated_decline_is_answered_twice_but_enqueued_once(
        client: FlaskClient, settings: Settings, store: Store, celery_app: Celery) -> None:
    tid = screened(store)
    path = screen_path(tid, route="screen-result")
    answers = [signed(client, settings, path, {"CallSid": AGENT, "Digits": ""}, token="t1")
               for _ in range(2)]
    assert answers[0].data == answers[1].data
    assert ET.fromstring(answers[0].data).find("Hangup") is not None
    [msg] = drain_queue(celery_app, "transfers")
    assert msg["kwargs"]["kind"] == "screen"


def test_a_repeated_status_callback_is_enqueued_once(client: FlaskClient, settings: Settings,
                                                     celery_app: Celery) -> None:
    path = "/twilio/agent-status?transfer_id=tr_1"
    assert [signed(client, settings, path, AGENT_PARAMS, token="t2").status_code
            for _ in range(2)] == [204, 204]
    assert len(drain_queue(celery_app, "transfers")) == 1


def test_a_repeat_of_a_known_transfer_is_told_in_the_triage_round_trip(
        client: FlaskClient, settings: Settings, store: Store, celery_app: Celery) -> None:
    # The token's claim lives in the lead's slot (one script checks it and triages).
    tid = screened(store)
    path = f"/twilio/conference?transfer_id={tid}"
    join = {"StatusCallbackEvent": "participant-join", "CallSid": AGENT}
    assert [signed(client, settings, path, join, token="t3").status_code
            for _ in range(3)] == [204, 204, 204]
    assert len(drain_queue(celery_app, "transfers")) == 1
    assert store.r.exists(store.delivery_key("L1", "twilio", "t3"))
    assert not store.r.exists("wt:once:idem:twilio:t3")
    # A repeat of a callback recorded here (not enqueued) is not noted twice either.
    start = {"StatusCallbackEvent": "conference-start"}
    for _ in range(2):
        signed(client, settings, path, start, token="t4")
    notes = [e["note"] for e in store.timeline(tid)]
    assert notes.count("conference conference-start") == 1


def test_a_delivery_not_enqueued_is_accepted_on_its_retry(
        make_app: AppFactory, settings: Settings, store: Store, celery_app: Celery,
        dead_celery: Celery) -> None:
    tid = screened(store)
    path = f"/twilio/conference?transfer_id={tid}"
    join = {"StatusCallbackEvent": "participant-join", "CallSid": AGENT}
    down = make_app(celery=dead_celery).test_client()
    assert signed(down, settings, path, join, token="t5").status_code == 503
    assert not store.r.exists(store.delivery_key("L1", "twilio", "t5"))  # released
    up = make_app().test_client()
    assert signed(up, settings, path, join, token="t5").status_code == 204
    assert len(drain_queue(celery_app, "transfers")) == 1


# -- detection ----------------------------------------------------------------------------

def test_the_amd_verdict_is_enqueued_with_its_attempt(client: FlaskClient, settings: Settings,
                                                      celery_app: Celery) -> None:
    params = {"CallSid": AGENT, "AnsweredBy": "machine_start", "AccountSid": TWILIO_SID,
              "MachineDetectionDuration": "1830"}
    assert signed(client, settings, "/twilio/amd?transfer_id=tr_1&attempt=2",
                  params).status_code == 204
    [msg] = drain_queue(celery_app, "transfers")
    assert msg["kwargs"] == {"provider": "twilio", "kind": "amd", "transfer_id": "tr_1",
                             "params": {"CallSid": AGENT, "AnsweredBy": "machine_start",
                                        "MachineDetectionDuration": "1830",
                                        "attempt": "2"}}
    assert signed(client, settings, "/twilio/amd?transfer_id=tr_1",
                  {"CallSid": AGENT}).status_code == 400


def test_a_machine_answering_the_screened_leg_is_hung_up(
        client: FlaskClient, settings: Settings, store: Store, celery_app: Celery) -> None:
    tid = screened(store, voicemail_detection=True)
    # Synchronous detection on calls.create: the Url's request carries AnsweredBy.
    resp = signed(client, settings, screen_path(tid), {
        "CallSid": AGENT, "CallStatus": "in-progress", "AnsweredBy": "machine_end_beep"})
    root = ET.fromstring(resp.data)
    assert root.find("Hangup") is not None and root.find("Gather") is None
    assert store.get_transfer(tid)["answered_by"] == "machine_end_beep"  # type: ignore[index]
    [msg] = drain_queue(celery_app, "transfers")
    assert (msg["kwargs"]["kind"], msg["kwargs"]["params"]["AnsweredBy"]) == (
        "amd", "machine_end_beep")


# -- Redis and the broker down ------------------------------------------------------------

@pytest.fixture
def outage(settings: Settings, make_app: AppFactory, dead_celery: Celery) -> FlaskClient:
    """The webhook app with Redis refusing connections (a closed port) and the broker too."""
    app: Flask = make_app()
    # The production client (short timeouts, two retries), pointed at a closed port.
    down = Store.from_settings(settings.model_copy(update={"redis_url":
                                                           "redis://127.0.0.1:1/0"}))
    app.extensions["warm_transfer"] = Deps(settings, down, dead_celery,
                                           TransferClient(settings, store=down,
                                                          celery=dead_celery))
    return app.test_client()


def test_screen_answers_without_redis_with_the_generic_briefing(
        outage: FlaskClient, settings: Settings) -> None:
    resp = signed(outage, settings, screen_path("tr_1", key="#", timeout="12"),
                  {"CallSid": AGENT, "CallStatus": "in-progress"}, token="t3")
    assert resp.status_code == 200
    gather = ET.fromstring(resp.data).find("Gather")
    assert gather is not None and gather.get("timeout") == "12"
    assert [s.text for s in gather.findall("Say")] == [
        "Incoming transfer.", "Press the pound key to take the call."]
    # The key's answer is asked of a URL that carries what it needs, too.
    assert gather.get("action") == BASE + screen_path("tr_1", key="#", timeout="12",
                                                      route="screen-result")


def test_screen_result_answers_without_redis_or_broker(outage: FlaskClient,
                                                       settings: Settings) -> None:
    path = screen_path("tr_1", lead="L9", key="#", route="screen-result")
    joined = signed(outage, settings, path, {"CallSid": AGENT, "Digits": "#"}, token="t4")
    assert joined.status_code == 200
    conference = ET.fromstring(joined.data).find("Dial/Conference")
    assert conference is not None and conference.text == "transfer-L9"
    assert "/twilio/conference?transfer_id=tr_1" in (conference.get("statusCallback") or "")
    declined = signed(outage, settings, path, {"CallSid": AGENT, "Digits": "1"}, token="t5")
    assert declined.status_code == 200
    assert ET.fromstring(declined.data).find("Hangup") is not None


def test_whisper_answers_without_redis(outage: FlaskClient, settings: Settings) -> None:
    resp = signed(outage, settings, "/twilio/whisper?transfer_id=tr_1", {"CallSid": AGENT})
    assert resp.status_code == 200
    assert resp.data == b"<Response><Say>Incoming transfer.</Say></Response>"


def test_a_machine_on_the_screened_leg_is_hung_up_without_redis(
        outage: FlaskClient, settings: Settings) -> None:
    resp = signed(outage, settings, screen_path("tr_1"), {
        "CallSid": AGENT, "CallStatus": "in-progress", "AnsweredBy": "fax"})
    assert resp.status_code == 200 and ET.fromstring(resp.data).find("Hangup") is not None


@pytest.mark.parametrize(("path", "params"), [
    ("/twilio/agent-status?transfer_id=tr_1", AGENT_PARAMS),
    ("/twilio/conference?transfer_id=tr_1", {"StatusCallbackEvent": "participant-join"}),
    ("/twilio/amd?transfer_id=tr_1", {"CallSid": AGENT, "AnsweredBy": "human"}),
    ("/twilio/status", {"CallSid": AGENT, "CallStatus": "completed"}),
])
def test_status_callbacks_answer_503_so_twilio_retries(outage: FlaskClient,
                                                       settings: Settings, path: str,
                                                       params: dict[str, str]) -> None:
    assert signed(outage, settings, path, params, token="t6" + path).status_code == 503


def test_malformed_screening_parameters_are_refused(client: FlaskClient,
                                                    settings: Settings) -> None:
    for bad in (screen_path("tr_1", key="x"), screen_path("tr_1", timeout="600"),
                screen_path("tr_1", lead="L" * 101)):
        resp = signed(client, settings, bad, {"CallSid": AGENT, "CallStatus": "in-progress"})
        assert resp.status_code == 400, bad
