"""Every log line of a run through the three providers, Celery's own included, searched for
the numbers, the summary and the secrets the run used: none may appear."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator

import pytest

from shared.logs import JsonFormatter
from tests.helpers import fictional_number, make_request, unique_lead
from tests.integration.conftest import Stack

OUTBOUND = {"twilio": "+14155550199", "plivo": "+14155550199", "exotel": "+919999900001"}
# What a customer might say and the LLM put in the summary: a name, a card, a number.
SUMMARY = ("Priya Raman wants her card 4111 1111 1111 1111 refunded; call back on "
           "415-555-0123 or (415) 555-0124")
# The card as said and as digits ("4111" alone also matches a task's runtime, 0.0019341110…).
SUMMARY_WORDS = ("Priya", "Raman", "refunded", "4111 1111", "4111111111111111", "555-0123",
                 "555-0124")
# The sandbox's customer calls (tests.stack.Services.customer_call).
CUSTOMER_NUMBERS = ("+14155550150", "+14155550151")


class Captured(logging.Handler):
    """Every record of this process (the webhooks, the client), formatted as in production."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        # The sandbox plays the providers; its own logs are not the service's.
        if not record.name.startswith("sandbox"):
            self.lines.append(self.format(record))


@pytest.fixture
def captured() -> Iterator[Captured]:
    handler = Captured()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def _transfer(stack: Stack, provider: str, number: str) -> tuple[str, str]:
    lead = unique_lead()
    call_id = stack.customer_call(lead, provider=provider)
    stack.sandbox.set_fate(number, "answer")
    result = stack.client.connect_to_live_agent(make_request(
        lead_id=lead, call_id=call_id, transfer_number=number,
        outbound_number=OUTBOUND[provider], provider=provider, summary=SUMMARY))
    assert result["status"] == "transfer_requested", result
    return call_id, str(result["transfer_id"])


def test_no_number_summary_or_secret_in_any_log_line(stack: Stack, captured: Captured) -> None:
    worker_log_start = len(stack.worker_log().encode())
    numbers = {"twilio": fictional_number(), "plivo": fictional_number(),
               "exotel": "+919999900177"}
    for provider, number in numbers.items():
        call_id, tid = _transfer(stack, provider, number)
        if provider == "exotel":  # the bridge ends when the conversation does
            call = stack.sandbox.calls[call_id]
            deadline = time.monotonic() + 10
            while call.flow.get("leg2") != "in-progress":
                assert time.monotonic() < deadline, "the human was not connected"
                time.sleep(0.05)
        event = stack.terminal(tid) if provider != "exotel" else None
        stack.sandbox.hangup(call_id)
        event = event or stack.terminal(tid)
        assert event["type"] == "transfer.succeeded"
        stack.events.wait(lambda e, c=call_id: e["call_id"] == c and e["type"] == "call.ended")
    # A refused request and a failed one log too.
    refused = stack.client.connect_to_live_agent(make_request(
        transfer_number="+19002345678", outbound_number=OUTBOUND["twilio"], summary=SUMMARY))
    assert refused["error"] == "destination_not_allowed"
    time.sleep(1.0)  # the worker's last lines reach its log file

    worker_lines = stack.worker_log().encode()[worker_log_start:].decode(errors="replace")
    lines = captured.lines + worker_lines.splitlines()
    assert any("received" in line for line in worker_lines.splitlines()), "no Celery lines"
    assert any("transfer requested" in line for line in captured.lines), "no lines of ours"

    s = stack.settings
    secrets = [s.twilio_auth_token, s.plivo_auth_token, s.exotel_api_token,
               s.exotel_webhook_token, s.api_token]
    forbidden = [*SUMMARY_WORDS, *secrets]
    for number in [*numbers.values(), *set(OUTBOUND.values()), *CUSTOMER_NUMBERS,
                   "+19002345678"]:
        forbidden += [number, number[-10:]]  # E.164 and the national digits
    leaks = [(word, line[:300]) for line in lines for word in forbidden if word in line]
    assert leaks == []
    # Nor any other E.164 number.
    assert [line for line in lines if re.search(r"\+\d{8,15}", line)] == []
