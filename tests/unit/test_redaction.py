"""Task arguments redacted where Celery shows them (its log lines, Flower), and structured
log fields masked at any depth."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from celery import Celery
from celery.app import amqp as celery_amqp

from shared.celery_config import TASK_REQUEST, TRANSFERS_QUEUE, celery_config
from shared.config import Settings
from shared.logs import JsonFormatter
from shared.redaction import HIDDEN, MAX_REPR, redact, redacted_repr
from tests.helpers import make_request

AGENT = "+14155550101"
SUMMARY = "Jane wants a refund for order 4111 1111 1111 1111, call back on 415-555-0123"


def _published(app: Celery) -> list[Any]:
    with app.connection_for_read() as conn:
        q = conn.SimpleQueue(TRANSFERS_QUEUE, no_ack=True)
        try:
            out = []
            while True:
                try:
                    out.append(q.get(block=False))
                except q.Empty:
                    return out
        finally:
            q.close()


def test_every_published_task_carries_redacted_reprs(celery_app: Celery) -> None:
    request = make_request(lead_id="L1", transfer_number=AGENT, summary=SUMMARY,
                           outbound_number="+14155550199")
    celery_app.send_task(TASK_REQUEST, kwargs={"request": request}, queue=TRANSFERS_QUEUE)
    celery_app.send_task("warm_transfer.provider_callback", queue=TRANSFERS_QUEUE, kwargs={
        "provider": "twilio", "kind": "agent-status", "transfer_id": "tr_1",
        "params": {"CallSid": "CA1", "CallStatus": "busy", "Called": AGENT,
                   "From": "+14155550199"}})
    [first, second] = _published(celery_app)
    for msg in (first, second):
        shown = msg.headers["argsrepr"] + msg.headers["kwargsrepr"]
        assert "555" not in shown and "refund" not in shown and "Jane" not in shown
    assert "'lead_id': 'L1'" in first.headers["kwargsrepr"]
    assert "'CallStatus': 'busy'" in second.headers["kwargsrepr"]
    # The task itself still gets every argument.
    assert first.decode()[1]["request"]["summary"] == SUMMARY
    assert second.decode()[1]["params"]["Called"] == AGENT


def test_redact_keeps_ids_and_shapes() -> None:
    event = {"event_id": "ev_1", "type": "transfer.failed", "message": "Call +14155550101",
             "attempts": [{"index": 0, "number": "+14*******01", "outcome": "busy"}],
             "transferred": None, "destination_index": 2}
    assert redact(event) == {
        "event_id": "ev_1", "type": "transfer.failed", "message": HIDDEN,
        "attempts": [{"index": 0, "number": HIDDEN, "outcome": "busy"}],
        "transferred": None, "destination_index": 2}
    assert redact({"call_id": "CA1 +14155550101"}) == {"call_id": "CA1 +14*******01"}


def test_structured_fields_are_masked_at_any_depth() -> None:
    record = logging.LogRecord("celery.worker.strategy", logging.INFO, __file__, 1,
                               "Task %(name)s received", None, None)
    record.data = {"name": "x", "kwargs": {"request": {"to": [AGENT, "(415) 555-0123"]}},
                   "summary": SUMMARY, "nested": {"auth_token": "s3cr3t-value"}}
    line = JsonFormatter().format(record)
    out = json.loads(line)
    assert "555" not in line and "refund" not in line and "s3cr3t-value" not in line
    assert out["data"]["kwargs"]["request"]["to"][0] == "+14*******01"
    assert out["data"]["summary"] == "***"


def test_our_message_builder_writes_the_message_stock_celery_writes(
        celery_app: Celery, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    # make_celery's builder hands Celery the redacted reprs up front (no saferepr of the
    # real arguments); a stock Celery app with the same configuration, whose saferepr'd
    # headers the signal then rewrites, must publish the very same message.
    stock = Celery("unit", set_as_current=False)
    stock.conf.update(celery_config(settings))
    kwargs = {"provider": "twilio", "kind": "agent-status", "transfer_id": "tr_1",
              "params": {"CallSid": "CA1", "CallStatus": "busy", "Called": AGENT,
                         "nested": {"deeper": [{"deepest": {"x": SUMMARY}}]}}}
    sent = []
    for app in (stock, celery_app):
        app.send_task("warm_transfer.provider_callback", kwargs=kwargs, queue=TRANSFERS_QUEUE,
                      task_id="fixed-id", reply_to="fixed-reply")
        [msg] = _published(app)
        sent.append(msg)
    theirs, ours = sent
    assert ours.headers == theirs.headers
    assert ours.decode() == theirs.decode()
    assert (ours.content_type, ours.content_encoding) == ("application/json", "utf-8")
    assert (theirs.content_type, theirs.content_encoding) == ("application/json", "utf-8")
    assert ours.properties["correlation_id"] == theirs.properties["correlation_id"]
    assert ours.headers["task"] == "warm_transfer.provider_callback"
    assert "555" not in ours.headers["kwargsrepr"] and "refund" not in ours.headers["kwargsrepr"]

    # And our builder never calls saferepr: it is what the change saves.
    def forbidden(*_: Any, **__: Any) -> str:
        raise AssertionError("saferepr called")

    monkeypatch.setattr(celery_amqp, "saferepr", forbidden)
    celery_app.send_task(TASK_REQUEST, kwargs={"request": {"lead_id": "L2"}},
                         queue=TRANSFERS_QUEUE)
    [msg] = _published(celery_app)
    assert msg.headers["kwargsrepr"] == "{'request': {'lead_id': 'L2'}}"
    assert msg.headers["argsrepr"] == "[]"


def test_a_long_repr_is_capped_like_celerys() -> None:
    text = redacted_repr({"lead_id": "L" * 90, "items": [{"lead_id": "x" * 90}] * 30})
    assert len(text) == MAX_REPR and text.endswith("...")
