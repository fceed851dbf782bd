"""/telnyx/webhook as Telnyx calls it: signed JSON events; our legs' events and the
customer's hang-up enqueued once; unsigned, stale, replayed and malformed ones refused."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
from celery import Celery
from flask.testing import FlaskClient

from providers.telnyx.callbacks import encode_state
from shared.contracts import parse_request
from shared.store import State, Store
from tests.helpers import drain_queue, make_request
from tests.unit.conftest import AppFactory
from tests.unit.providers.telnyx.test_signature import PUBLIC, sign


@pytest.fixture
def client(make_app: AppFactory) -> FlaskClient:
    return make_app(telnyx_public_key=PUBLIC).test_client()


def event(event_type: str, event_id: str = "evt-1", **payload: Any) -> bytes:
    return json.dumps({"data": {"record_type": "event", "event_type": event_type,
                                "id": event_id, "occurred_at": "2026-12-01T18:00:00Z",
                                "payload": {"call_control_id": "v3:human", **payload}}}
                      ).encode()


def post(client: FlaskClient, body: bytes, timestamp: int | None = None,
         path: str = "/telnyx/webhook") -> Any:
    ts = str(timestamp if timestamp is not None else int(time.time()))
    return client.post(path, data=body, content_type="application/json", headers={
        "telnyx-timestamp": ts, "telnyx-signature-ed25519": sign(ts, body)})


def test_an_event_of_our_leg_is_enqueued_once(client: FlaskClient, celery_app: Celery) -> None:
    body = event("call.hangup", client_state=encode_state("tr_1", "1"),
                 hangup_cause="user_busy", sip_hangup_cause="486")
    assert post(client, body).status_code == 200
    # Telnyx's retry of the same event (same id), even freshly signed: not enqueued again.
    assert post(client, body).status_code == 200
    [task] = drain_queue(celery_app, "transfers")
    assert task["task"] == "warm_transfer.provider_callback"
    kwargs = task["kwargs"]
    assert (kwargs["provider"], kwargs["kind"], kwargs["transfer_id"]) == (
        "telnyx", "call-event", "tr_1")
    assert kwargs["params"] == {"event_type": "call.hangup", "event_id": "evt-1",
                                "call_control_id": "v3:human", "hangup_cause": "user_busy",
                                "sip_hangup_cause": "486", "attempt": "1"}


def test_the_customers_hangup_goes_to_call_status(client: FlaskClient,
                                                 celery_app: Celery) -> None:
    body = event("call.hangup", "evt-c", call_control_id="v3:customer",
                 client_state=base64.b64encode(b"the platform's own").decode(),
                 hangup_cause="normal_clearing")
    assert post(client, body, path="/telnyx/webhook?lead_id=L9").status_code == 200
    [task] = drain_queue(celery_app, "transfers")
    assert task["task"] == "warm_transfer.call_status"
    assert task["kwargs"] == {"provider": "telnyx", "call_id": "v3:customer",
                              "status": "hangup", "lead_id": "L9",
                              "params": {"hangup_cause": "normal_clearing"}}


def test_the_customers_other_events_are_answered_and_dropped(client: FlaskClient,
                                                            celery_app: Celery) -> None:
    assert post(client, event("call.bridged", call_control_id="v3:c")).status_code == 200
    assert drain_queue(celery_app, "transfers") == []


@pytest.mark.parametrize("how", ["unsigned", "stale", "tampered", "other key"])
def test_refused_with_403_and_nothing_enqueued(client: FlaskClient, celery_app: Celery,
                                              how: str) -> None:
    body = event("call.answered", client_state=encode_state("tr_1", "0"))
    ts = str(int(time.time()))
    headers = {"telnyx-timestamp": ts, "telnyx-signature-ed25519": sign(ts, body)}
    if how == "unsigned":
        headers = {}
    elif how == "stale":  # a captured delivery replayed past the tolerance window
        old = str(int(time.time()) - 301)
        headers = {"telnyx-timestamp": old, "telnyx-signature-ed25519": sign(old, body)}
    elif how == "tampered":
        body = body.replace(b"call.answered", b"call.bridged")
    else:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        other = Ed25519PrivateKey.generate()
        headers["telnyx-signature-ed25519"] = base64.b64encode(
            other.sign(ts.encode() + b"|" + body)).decode()
    resp = client.post("/telnyx/webhook", data=body, content_type="application/json",
                       headers=headers)
    assert resp.status_code == 403
    assert drain_queue(celery_app, "transfers") == []


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"data": {"id": "e"}}',
                                  event("call.answered", call_control_id="")])
def test_malformed_signed_bodies_get_400(client: FlaskClient, celery_app: Celery,
                                         body: bytes) -> None:
    assert post(client, body).status_code == 400
    assert drain_queue(celery_app, "transfers") == []


def test_no_public_key_refuses_everything(make_app: AppFactory) -> None:
    client = make_app(telnyx_public_key="").test_client()
    assert post(client, event("call.answered")).status_code == 403


def test_broker_down_answers_503_and_the_retry_is_accepted(
        make_app: AppFactory, dead_celery: Celery, celery_app: Celery) -> None:
    body = event("call.answered", "evt-retry", client_state=encode_state("tr_1", "0"))
    down = make_app(celery=dead_celery, telnyx_public_key=PUBLIC).test_client()
    assert post(down, body).status_code == 503  # Telnyx retries what did not get a 200
    up = make_app(telnyx_public_key=PUBLIC).test_client()
    assert post(up, body).status_code == 200
    [task] = drain_queue(celery_app, "transfers")
    assert task["kwargs"]["params"]["event_id"] == "evt-retry"


def test_events_that_cannot_change_the_transfer_are_recorded_not_enqueued(
        client: FlaskClient, celery_app: Celery, store: Store) -> None:
    # What the worker did with them: the recorded leg's call.initiated sets agent_status
    # and is noted; anything after the end is noted late. The rest still goes to it.
    req = parse_request(make_request(lead_id="L1", provider="telnyx", call_id="v3:customer"),
                        store.get_number)
    store.begin(req)
    tid = req.transfer_id
    store.transition(tid, State.DIALING, "dialing", fields={"agent_call_sid": "v3:human"})
    state = encode_state(tid, "0")
    assert post(client, event("call.initiated", "e1", client_state=state)).status_code == 200
    assert drain_queue(celery_app, "transfers") == []
    assert store.get_transfer(tid)["agent_status"] == "initiated"  # type: ignore[index]
    assert store.timeline(tid)[-1]["note"] == "human agent leg initiated"
    # Another leg's (not the recorded one): the worker decides.
    post(client, event("call.initiated", "e2", call_control_id="v3:other", client_state=state))
    post(client, event("call.answered", "e3", client_state=state))
    assert [t["kwargs"]["params"]["event_id"]
            for t in drain_queue(celery_app, "transfers")] == ["e2", "e3"]
    store.transition(tid, State.SUCCEEDED, "customer bridged to the human agent")
    post(client, event("call.hangup", "e4", client_state=state, hangup_cause="normal_clearing"))
    assert drain_queue(celery_app, "transfers") == []
    assert store.timeline(tid)[-1]["note"] == "late call-event callback ignored"
