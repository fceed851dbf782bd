"""The committed JSON Schemas and OpenAPI document: generated from the models, and true of
what the code really sends and answers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from jsonschema import Draft202012Validator
from pydantic import TypeAdapter

import workers.tasks as tasks
from shared.contracts import EVENT_MODELS, Attempt, FailureReason, TransferEvent, parse_request
from shared.schemas import SCHEMAS_DIR, drift, render, write
from shared.store import State, Store
from tests.helpers import make_request
from tests.unit.conftest import AppFactory
from tests.unit.test_request_message import accepted_requests
from workers.runtime import Runtime


def _validator(path: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS_DIR / path).read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def test_committed_schemas_match_the_models() -> None:
    assert drift() == [], "run: python3 -m shared.schemas --write"


def test_drift_is_seen(tmp_path: Path) -> None:
    write(tmp_path)
    assert drift(tmp_path) == []
    request = tmp_path / "transfer-request.json"
    request.write_text(request.read_text().replace('"screening_key"', '"screen_key"'))
    (tmp_path / "events" / "transfer.retired.json").write_text("{}\n")
    assert drift(tmp_path) == ["transfer-request.json", "events/transfer.retired.json"]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=accepted_requests())
def test_accepted_requests_satisfy_the_request_schema(raw: dict[str, Any]) -> None:
    # The schema names the providers in lower case; the parser forgives case and spaces.
    _validator("transfer-request.json").validate(
        {**raw, "provider": raw["provider"].strip().lower()})


def test_the_request_schema_refuses_what_the_parser_refuses() -> None:
    validator = _validator("transfer-request.json")
    assert validator.is_valid(make_request())
    bad_key = make_request()
    bad_key["template"]["configurations"]["screening_key"] = "x"
    too_many = make_request(transfer_number=None)
    too_many["template"]["configurations"]["transfer_numbers"] = ["+14155550101"] * 6
    for raw in (make_request(provider="skype"), {**make_request(), "lead_id": None},
                bad_key, too_many):
        assert not validator.is_valid(raw), raw


def _check_event(event: dict[str, Any]) -> None:
    _validator(f"events/{event['type']}.json").validate(event)
    TypeAdapter(EVENT_MODELS[event["type"]]).validate_python(event)


def test_events_the_code_sends_satisfy_their_schemas(rt: Runtime, store: Store,
                                                     events: Any) -> None:
    # Real events, from the runtime's own emitters, read back from the broker's message.
    ok = parse_request(make_request(lead_id="L1", transfer_numbers=[
        "+14155550101", "+14155550102"]), store.get_number)
    store.begin(ok)
    transfer = store.get_record(ok.transfer_id)
    assert transfer is not None
    rt.emit_disconnect(transfer)
    assert rt.succeed(transfer, "the customer joined", from_states=(State.REQUESTED,))
    rt.emit_call_ended(lead_id="L1", provider="twilio", call_id=ok.call_id,
                       transfer_id=ok.transfer_id, transferred=True)
    bad = parse_request(make_request(lead_id="L2", call_id="CA2"), store.get_number)
    store.begin(bad)
    failing = store.get_record(bad.transfer_id)
    assert failing is not None
    assert rt.fail(failing, FailureReason.BUSY, "busy")
    rt.emit_call_ended(lead_id="L3", provider="plivo", call_id="x", transfer_id=None,
                       transferred=False)
    # A request the worker refuses: transfer.failed with the error code as the reason.
    tasks.transfer_request.apply(kwargs={"request": {"lead_id": "L4", "provider": "twilio"}})
    sent = events()
    assert {e["type"] for e in sent} == {"transfer.disconnect_ai", "transfer.succeeded",
                                         "transfer.failed", "call.ended"}
    assert "missing_call_id" in {e["reason"] for e in sent}
    for event in sent:
        _check_event(event)


@pytest.mark.parametrize("event", [
    TransferEvent.succeeded(lead_id="L", transfer_id="t", provider="p", call_id="c"),
    TransferEvent.failed(lead_id="L", transfer_id=None, provider="p", call_id=None,
                         reason="timeout", attempts=[Attempt(index=0, number="+1***",
                                                             outcome="no_answer")]),
])
def test_factory_events_satisfy_their_schemas(event: TransferEvent) -> None:
    _check_event(json.loads(render(event.as_dict())))


def test_an_event_missing_its_action_is_refused() -> None:
    event = TransferEvent.succeeded(lead_id="L", transfer_id="t", provider="p",
                                    call_id="c").as_dict()
    assert not _validator("events/transfer.succeeded.json").is_valid({**event, "action": None})
    assert not _validator("events/transfer.failed.json").is_valid(event)


def test_transfers_api_answers_as_its_openapi_document_says(make_app: AppFactory,
                                                            settings: Any) -> None:
    api = json.loads((SCHEMAS_DIR / "openapi.json").read_text())
    assert api["openapi"] == "3.1.0"
    post = api["paths"]["/transfers"]["post"]["responses"]
    get = api["paths"]["/transfers/leads/{lead_id}"]["get"]["responses"]
    tool_result = _validator("tool-result.json")
    report = Draft202012Validator(_with_defs(api, "LeadReport"))
    client = make_app().test_client()
    auth = {"Authorization": f"Bearer {settings.api_token}"}
    seen = []
    for body in (make_request(lead_id="L1"), make_request(lead_id="L1"),
                 make_request(lead_id="L2", transfer_number=None)):
        resp = client.post("/transfers", json=body, headers=auth)
        seen.append(resp.status_code)
        assert str(resp.status_code) in post
        tool_result.validate(resp.get_json())
    assert seen == [202, 409, 422]
    assert str(client.post("/transfers", json=[], headers=auth).status_code) in post
    assert str(client.post("/transfers", json={}).status_code) in post
    lead = client.get("/transfers/leads/L1", headers=auth)
    assert lead.status_code == 200 and "200" in get
    report.validate(lead.get_json())
    assert str(client.get("/transfers/leads/nobody", headers=auth).status_code) in get


def _with_defs(api: dict[str, Any], name: str) -> dict[str, Any]:
    """A component as a standalone schema: its refs point into the components."""
    text = json.dumps(api["components"]["schemas"][name]).replace(
        "#/components/schemas/", "#/$defs/")
    defs = json.loads(json.dumps(api["components"]["schemas"]).replace(
        "#/components/schemas/", "#/$defs/"))
    return {**json.loads(text), "$defs": defs}


def test_every_reference_in_the_openapi_document_resolves() -> None:
    api = json.loads((SCHEMAS_DIR / "openapi.json").read_text())
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            refs.extend(v for k, v in node.items() if k == "$ref")
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(api)
    assert refs
    names = set(api["components"]["schemas"])
    assert {r.removeprefix("#/components/schemas/") for r in refs} <= names
