"""Webhook fuzzing: random bodies, missing fields, wrong types, huge values, deep nesting,
control characters. A request that is not authenticated gets 403 (401 on the producer API);
an authenticated one that is malformed gets 400 (413 when too large). Never a 500, and
nothing is ever enqueued; a summary of any text still gives well-formed briefing XML."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
import redis
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from plivo.utils.signature_v3 import construct_get_url, construct_post_url, get_signature_v3
from twilio.request_validator import RequestValidator

from shared.config import Settings
from tests.stack import Services
from webhooks import create_app

BROKER_DB = 7  # a database no worker consumes: whatever lands there was enqueued

TWILIO_ROUTES = {"/twilio/status": ("CallSid", "CallStatus"),
                 "/twilio/agent-status": ("CallSid", "CallStatus"),
                 "/twilio/conference": ("StatusCallbackEvent",),
                 "/twilio/screen-result": ("CallSid",),
                 "/twilio/amd": ("CallSid", "AnsweredBy")}
PLIVO_ROUTES = {"/plivo/dial-action": ("DialStatus",),
                "/plivo/dial-callback": ("Event", "DialAction"),
                "/plivo/status": ("CallUUID",)}
# Routes that answer XML to an authenticated request whatever its fields.
XML_ROUTES = ("/twilio/screen", "/twilio/whisper", "/plivo/hold", "/plivo/whisper")

text = st.text(max_size=50)
# Hypothesis draws short strings; a huge value is a short one repeated past the 64 KiB cap.
huge = st.text(min_size=1, max_size=20).map(lambda s: (s * (70_000 // len(s) + 1)))
keys = st.text(min_size=1, max_size=20).filter(lambda k: k.strip() != "")
forms = st.dictionaries(keys, st.one_of(text, st.integers().map(str)), max_size=8)
# Header values (no line breaks); also what the Plivo SDK's signing can encode in a query
# (Plivo's URLs carry no unencoded non-ASCII; our own transfer ids are ASCII).
ascii_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=50)


@pytest.fixture(scope="module")
def fuzz(faulty: Services) -> Iterator[tuple[FlaskClient, Settings, redis.Redis]]:
    base = faulty.settings.redis_url.rsplit("/", 1)[0]
    cfg = faulty.settings.model_copy(update={"celery_broker_url": f"{base}/{BROKER_DB}"})
    app = create_app(cfg)
    broker = redis.Redis.from_url(cfg.celery_broker_url)
    broker.flushdb()
    yield app.test_client(), cfg, broker
    broker.close()


def enqueued(broker: redis.Redis) -> int:
    return int(broker.llen("transfers"))


def check(resp: Any, allowed: set[int], broker: redis.Redis) -> None:
    assert resp.status_code in allowed, (resp.status_code, resp.get_data(as_text=True)[:200])
    assert enqueued(broker) == 0


FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


@FUZZ
@given(route=st.sampled_from(sorted({*TWILIO_ROUTES, *PLIVO_ROUTES, *XML_ROUTES})),
       form=forms, query=forms, signature=st.one_of(st.none(), ascii_text))
def test_unauthenticated_provider_requests_are_403(fuzz: Any, route: str, form: dict[str, str],
                                                   query: dict[str, str],
                                                   signature: str | None) -> None:
    client, _, broker = fuzz
    headers = {}
    if signature is not None:
        headers = {"X-Twilio-Signature": signature, "X-Plivo-Signature-V3": signature,
                   "X-Plivo-Signature-V3-Nonce": signature or "n"}
    resp = client.post(f"{route}?{urlencode(query)}", data=form, headers=headers)
    check(resp, {403}, broker)


@FUZZ
@given(route=st.sampled_from(sorted(TWILIO_ROUTES)), form=forms, transfer_id=text)
def test_signed_twilio_requests_without_required_fields_are_400(
        fuzz: Any, route: str, form: dict[str, str], transfer_id: str) -> None:
    client, cfg, broker = fuzz
    form = {k: v for k, v in form.items() if k not in TWILIO_ROUTES[route]}
    path = f"{route}?{urlencode({'transfer_id': transfer_id})}"
    url = cfg.public_base_url + path
    sig = RequestValidator(cfg.twilio_auth_token).compute_signature(url, form)
    resp = client.post(path, data=form, headers={"X-Twilio-Signature": sig})
    check(resp, {400}, broker)


@FUZZ
@given(route=st.sampled_from(sorted(PLIVO_ROUTES)), form=forms, transfer_id=ascii_text)
def test_signed_plivo_requests_without_required_fields_are_400(
        fuzz: Any, route: str, form: dict[str, str], transfer_id: str) -> None:
    client, cfg, broker = fuzz
    form = {k: v for k, v in form.items() if k not in PLIVO_ROUTES[route]}
    path = f"{route}?{urlencode({'transfer_id': transfer_id})}"
    nonce = uuid.uuid4().hex
    base = construct_post_url(cfg.public_base_url + path, dict(form))
    sig = get_signature_v3(cfg.plivo_auth_token.encode(), base.decode(), nonce.encode())
    resp = client.post(path, data=form, headers={"X-Plivo-Signature-V3": sig.decode(),
                                                 "X-Plivo-Signature-V3-Nonce": nonce})
    check(resp, {400}, broker)


@FUZZ
@given(query=st.dictionaries(ascii_text.filter(bool), ascii_text, max_size=6))
def test_signed_plivo_dial_up_without_a_transfer_is_400(fuzz: Any, query: dict[str, str]
                                                        ) -> None:
    client, cfg, broker = fuzz
    query.pop("transfer_id", None)
    path = f"/plivo/dial-up?{urlencode(query)}" if query else "/plivo/dial-up"
    nonce = uuid.uuid4().hex
    base = construct_get_url(cfg.public_base_url + path, {})
    sig = get_signature_v3(cfg.plivo_auth_token.encode(), base.decode(), nonce.encode())
    resp = client.get(path, headers={"X-Plivo-Signature-V3": sig.decode(),
                                     "X-Plivo-Signature-V3-Nonce": nonce})
    check(resp, {400}, broker)


@FUZZ
@given(route=st.sampled_from(["/exotel/status", "/exotel/passthru", "/exotel/dial-up"]),
       form=forms, token=st.one_of(st.none(), text))
def test_exotel_without_token_is_403(fuzz: Any, route: str, form: dict[str, str],
                                     token: str | None) -> None:
    client, cfg, broker = fuzz
    if token == cfg.exotel_webhook_token:
        token = token + "x"
    query = f"?{urlencode({'token': token})}" if token is not None else ""
    method = client.get if route == "/exotel/dial-up" else client.post
    resp = method(f"{route}{query}", data=form) if method is client.post else method(
        f"{route}{query}&{urlencode(form)}" if query else f"{route}?{urlencode(form)}")
    check(resp, {403}, broker)



def _json_of(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    # A named function: hypothesis checks that `extend` uses its argument by reading its
    # source, which a multi-line lambda does not always give it.
    return st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4)

@FUZZ
@given(route=st.sampled_from(["/exotel/status", "/exotel/passthru"]),
       body=st.one_of(forms.map(lambda f: ("form", f)),
                      st.recursive(st.none() | st.booleans() | st.integers() | text,
                                   _json_of, max_leaves=10).map(lambda j: ("json", j))))
def test_exotel_with_token_but_no_call_sid_is_400(fuzz: Any, route: str,
                                                  body: tuple[str, Any]) -> None:
    client, cfg, broker = fuzz
    kind, value = body
    if isinstance(value, dict):
        value.pop("CallSid", None)
    path = f"{route}?token={cfg.exotel_webhook_token}"
    resp = (client.post(path, data=value) if kind == "form"
            else client.post(path, json=value))
    check(resp, {400}, broker)


def signed_post(client: FlaskClient, cfg: Settings, path: str, form: dict[str, str]) -> Any:
    """A POST signed as its provider signs it (Twilio or Plivo V3, by the path)."""
    if path.startswith("/twilio/"):
        sig = RequestValidator(cfg.twilio_auth_token).compute_signature(
            cfg.public_base_url + path, form)
        return client.post(path, data=form, headers={"X-Twilio-Signature": sig})
    nonce = uuid.uuid4().hex
    base = construct_post_url(cfg.public_base_url + path, dict(form))
    sig = get_signature_v3(cfg.plivo_auth_token.encode(), base.decode(), nonce.encode())
    return client.post(path, data=form, headers={"X-Plivo-Signature-V3": sig.decode(),
                                                 "X-Plivo-Signature-V3-Nonce": nonce})


@FUZZ
@given(route=st.sampled_from(sorted({**TWILIO_ROUTES, **PLIVO_ROUTES})), value=huge)
def test_huge_bodies_are_refused(fuzz: Any, route: str, value: str) -> None:
    # Signed: an unsigned request is refused (403) before its size matters.
    client, cfg, broker = fuzz
    resp = signed_post(client, cfg, f"{route}?transfer_id=tr_1", {"CallSid": value})
    check(resp, {413}, broker)


# Control characters (C0, DEL, C1, the XML non-characters) mixed with ordinary text.
CONTROL = [chr(c) for c in range(32)] + ["\x7f", "\x85", "\x9f", "\ufffe", "\uffff"]
summaries = st.one_of(text, st.lists(st.sampled_from([*CONTROL, "a", "é", " ", "<", "&", "]]>"]),
                                     max_size=30).map("".join))


@pytest.fixture(scope="module")
def briefing(faulty: Services) -> Iterator[tuple[FlaskClient, Settings, redis.Redis]]:
    """An app on databases no worker reads: the transfers it accepts stay pending (their
    deadlines unswept) and their tasks stay on the queue."""
    base = faulty.settings.redis_url.rsplit("/", 1)[0]
    cfg = faulty.settings.model_copy(update={"redis_url": f"{base}/8",
                                             "celery_broker_url": f"{base}/9"})
    broker = redis.Redis.from_url(cfg.celery_broker_url)
    yield create_app(cfg).test_client(), cfg, broker
    broker.flushdb()
    redis.Redis.from_url(cfg.redis_url).flushdb()
    broker.close()


@FUZZ
@given(summary=summaries, provider=st.sampled_from(["twilio", "plivo"]))
def test_any_summary_gives_well_formed_briefing_xml(briefing: Any, summary: str,
                                                    provider: str) -> None:
    client, cfg, _ = briefing
    resp = client.post("/transfers", headers={"Authorization": f"Bearer {cfg.api_token}"},
                       json={"lead_id": f"fuzz-{uuid.uuid4().hex[:12]}", "provider": provider,
                             "call_id": uuid.uuid4().hex,
                             "template": {"configurations": {"transfer_number": "+14155550101",
                                                             "screening": True}},
                             "lead": {"outbound_number": "+14155550199"},
                             "summary": summary})
    assert resp.status_code == 202, resp.get_data(as_text=True)
    tid = resp.json["transfer_id"]
    routes = ([f"/twilio/whisper?transfer_id={tid}", f"/twilio/screen?transfer_id={tid}&attempt=0"]
              if provider == "twilio" else [f"/plivo/whisper?transfer_id={tid}"])
    for path in routes:
        answer = signed_post(client, cfg, path, {"CallSid": "CA1", "CallUUID": "u1"})
        assert answer.status_code == 200, (path, answer.get_data(as_text=True)[:200])
        root = ET.fromstring(answer.data)  # well-formed, whatever the summary held
        spoken = " ".join(el.text or "" for el in root.iter())
        assert not any(c in spoken for c in CONTROL if c not in "\t\n\r")


@FUZZ
# Up to 12,000 levels: every body stays under the 64 KiB cap (over it is 413).
@given(depth=st.integers(min_value=33, max_value=12_000), opener=st.sampled_from(["[", "{\"a\":"]),
       route=st.sampled_from(["/transfers", "/exotel/status"]))
def test_deeply_nested_json_is_400(fuzz: Any, depth: int, opener: str, route: str) -> None:
    client, cfg, broker = fuzz
    headers = {"Authorization": f"Bearer {cfg.api_token}"} if route == "/transfers" else {}
    path = route if route == "/transfers" else f"{route}?token={cfg.exotel_webhook_token}"
    resp = client.post(path, data=opener * depth, content_type="application/json",
                       headers=headers)
    check(resp, {400}, broker)


@FUZZ
@given(body=st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | text,
                         _json_of, max_leaves=15),
       auth=st.sampled_from([None, "Bearer nope", "Basic x", "Bearer integration-token"]))
def test_producer_api_never_500s(fuzz: Any, body: Any, auth: str | None) -> None:
    client, _, broker = fuzz
    headers = {"Authorization": auth} if auth else {}
    resp = client.post("/transfers", json=body, headers=headers)
    allowed = {401} if auth != "Bearer integration-token" else {400, 422}
    check(resp, allowed, broker)
