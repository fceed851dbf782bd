"""The request survives the trip client -> Celery message (kombu's json) -> worker intact."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import fakeredis
import pytest
from celery import Celery
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.client import TransferClient
from shared.config import Settings
from shared.contracts import RequestError, TransferRequest, parse_request
from shared.store import Store
from tests.helpers import drain_queue
from workers.runtime import Runtime
from workers.tasks import parse_message

US = ["+14155550101", "+14155550102", "+1 415 555 0103", "+14155550104", "+14155550105"]
ALWAYS_OPEN = {"timezone": "UTC", "weekly": {d: ["00:00-24:00"] for d in
                                             ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}}
ids = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e), min_size=1, max_size=20)
rings = st.integers(min_value=5, max_value=120)


@st.composite
def accepted_requests(draw: st.DrawFn) -> dict[str, Any]:
    """Requests the client accepts, drawing every field the contract has."""
    provider = draw(st.sampled_from(["twilio", "plivo", "exotel"]))
    capable = provider != "exotel"
    config: dict[str, Any] = {}
    numbers = draw(st.lists(st.sampled_from(US), min_size=1, max_size=5, unique=True))
    if draw(st.booleans()):
        config["transfer_number"] = numbers[0]
    if len(numbers) > 1 or "transfer_number" not in config:
        items: list[Any] = []
        for n in numbers:
            per = draw(st.none() | rings) if capable else None
            items.append({"number": n, "ring_timeout": per} if per else n)
        config["transfer_numbers"] = items
    optional: dict[str, st.SearchStrategy[Any]] = {
        "ring_timeout": rings,
        "screening_key": st.sampled_from(list("0123456789*#")),
        "screening_timeout": st.integers(min_value=3, max_value=60),
        "summary": st.text(max_size=30),
        "hours": st.just(ALWAYS_OPEN),
    }
    if provider == "twilio":
        optional["voicemail_detection"] = st.booleans()
    if capable:
        optional["screening"] = st.booleans()
        optional["caller_id"] = st.sampled_from(["outbound", "customer"])
        optional["hold_audio"] = st.sampled_from(["ringback", "https://cdn.example.com/a.mp3"])
    config.update(draw(st.fixed_dictionaries({}, optional=optional)))
    lead: dict[str, Any] = draw(st.sampled_from([
        {"outbound_number_id": "main-line"},
        {"outbound_number": "+14155550142"},
        {"outbound_number_id": "main-line", "outbound_number": "+1 415 555 0143"},
    ]))
    lead["phone_number"] = "+14155550177"
    raw: dict[str, Any] = {"lead_id": draw(ids), "provider": draw(st.sampled_from(
        [provider, provider.upper(), f" {provider} "])), "call_id": draw(ids),
        "template": {"configurations": config, "prompt": "not ours to carry"}, "lead": lead}
    raw.update(draw(st.fixed_dictionaries({}, optional={
        "summary": st.text(max_size=30), "request_id": ids})))
    return raw


def _world(unit_settings: Settings) -> tuple[Store, Celery, Runtime]:
    store = Store(fakeredis.FakeRedis(decode_responses=True), unit_settings)
    store.set_number("main-line", "+14155550199")
    from shared.celery_config import make_celery
    app = make_celery(unit_settings, "unit-message")
    drain_queue(app, "transfers")
    return store, app, Runtime(settings=unit_settings, store=store, celery=app)


def _client_view(raw: dict[str, Any], store: Store, s: Settings, transfer_id: str
                 ) -> TransferRequest:
    return parse_request(raw, store.get_number, transfer_id=transfer_id,
                         allowed_destinations=s.transfer_allowed_destinations,
                         home_country=s.transfer_home_country)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(raw=accepted_requests())
def test_every_accepted_field_reaches_the_worker(settings: Settings, raw: dict[str, Any]
                                                 ) -> None:
    store, app, rt = _world(settings)
    result = TransferClient(settings, store=store, celery=app).connect_to_live_agent(raw)
    assert result["status"] == "transfer_requested", result
    [message] = drain_queue(app, "transfers")  # the real message, through kombu's json
    sent = message["kwargs"]["request"]
    assert "prompt" not in sent["template"]  # the rest of the template stays behind
    in_worker = parse_message(rt, sent, sent["transfer_id"])
    assert in_worker == _client_view(raw, store, settings, result["transfer_id"])


def test_the_worker_judges_hours_at_acceptance(settings: Settings, store: Store,
                                               rt: Runtime) -> None:
    # Open for one minute, twelve hours ago: closed now, whatever the day.
    accepted = datetime.now(UTC) - timedelta(hours=12)
    minute = accepted.strftime("%H:%M")
    end = (accepted + timedelta(minutes=1)).strftime("%H:%M")
    if end == "00:00":
        end = "24:00"
    hours = {"timezone": "UTC", "weekly": {accepted.strftime("%a").lower(): [f"{minute}-{end}"]}}
    raw = {"lead_id": "L1", "provider": "twilio", "call_id": "CA1", "lead": {
        "outbound_number_id": "main-line"}, "template": {"configurations": {
            "transfer_number": "+14155550101", "hours": hours}}}
    req = parse_request(raw, store.get_number, now=accepted)
    store.begin(req, now=accepted.timestamp())
    sent = {**raw, "transfer_id": req.transfer_id}
    assert parse_message(rt, sent, req.transfer_id) == req
    # A producer without our record is judged now: closed.
    with pytest.raises(RequestError) as info:
        parse_message(rt, sent, "tr_other")
    assert info.value.code.value == "outside_hours"
