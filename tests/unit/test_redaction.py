"""Task arguments redacted where Celery shows them (its log lines, Flower), and structured
log fields masked at any depth."""

from __future__ import annotations

import json
import logging
from typing import Any

from celery import Celery

from shared.celery_config import TASK_REQUEST, TRANSFERS_QUEUE
from shared.logs import JsonFormatter
from shared.redaction import HIDDEN, redact
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
