"""Test helpers shared by unit and integration tests."""

from __future__ import annotations

import itertools
import random
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from celery import Celery

from shared.model import State, Transfer

_counter = itertools.count(random.randrange(0, 50))



def unique_lead() -> str:
    return f"lead-{uuid.uuid4().hex[:10]}"


# Area codes whose 555-0100..0199 numbers are valid and fictional: 1,500 distinct numbers.
_AREAS = (201, 202, 212, 213, 305, 312, 404, 415, 503, 512, 617, 702, 713, 818, 917)


def fictional_number() -> str:
    """A valid US number in a fictional 555-01XX range, different on each call (tests find
    a dialed leg by its number, so a session must not reuse one)."""
    n = next(_counter)
    return f"+1{_AREAS[(n // 100) % len(_AREAS)]}55501{n % 100:02d}"


def make_request(*, lead_id: str | None = None, call_id: str = "CA" + "1" * 32,
                 transfer_number: str | None = "+14155550101",
                 outbound_number_id: str | None = "main-line",
                 outbound_number: str | None = None, provider: str = "twilio",
                 **extra: Any) -> dict[str, Any]:
    configurations: dict[str, Any] = {}
    if transfer_number is not None:
        configurations["transfer_number"] = transfer_number
    lead: dict[str, Any] = {}
    if outbound_number_id is not None:
        lead["outbound_number_id"] = outbound_number_id
    if outbound_number is not None:
        lead["outbound_number"] = outbound_number
    return {"lead_id": lead_id or unique_lead(), "provider": provider, "call_id": call_id,
            "template": {"configurations": configurations}, "lead": lead, **extra}


def drain_queue(app: Celery, queue: str) -> list[dict[str, Any]]:
    """Every message on `queue` as {"task": name, "kwargs": {...}}, decoded from Celery's
    wire format (protocol 2: body = [args, kwargs, embed])."""
    out: list[dict[str, Any]] = []
    with app.connection_for_read() as conn:
        q = conn.SimpleQueue(queue, no_ack=True)
        try:
            while True:
                try:
                    msg = q.get(block=False)
                except q.Empty:
                    break
                _args, kwargs, _embed = msg.decode()
                out.append({"task": msg.headers["task"], "kwargs": kwargs,
                            "id": msg.headers["id"]})
        finally:
            q.close()
    return out


def stderr_at_exit_with_closed_log_stream(code: str) -> str:
    """Run `code` in a fresh interpreter whose root log handler's stream is closed before it
    exits (as a test runner's capture or a supervisor's pipe may be); its stderr. Whatever
    logs at exit then makes Python print '--- Logging error ---'."""
    script = ("import logging, os\n"
              "stream = open(os.devnull, 'w')\n"
              "logging.getLogger().addHandler(logging.StreamHandler(stream))\n"
              f"{code}\n"
              "stream.close()\n")
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           cwd=Path(__file__).resolve().parents[1], timeout=60, check=False)
    assert child.returncode == 0, child.stderr
    return child.stderr


def make_transfer(**fields: Any) -> Transfer:
    """A typed transfer record as the providers receive it (what the test leaves out: a
    pending transfer's defaults)."""
    base: dict[str, Any] = {"transfer_id": "tr_1", "lead_id": "L1", "provider": "plivo",
                            "call_id": "call-1", "state": State.DIALING}
    return Transfer(**{**base, **fields})
