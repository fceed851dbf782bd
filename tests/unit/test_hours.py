"""Transfer hours: the schedule, its validation, and nothing dialed outside it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from celery import Celery

from shared.client import TransferClient
from shared.config import Settings
from shared.contracts import RequestError, parse_request
from shared.hours import DAYS, InvalidHours, parse_hours
from shared.store import Store
from tests.helpers import drain_queue, make_request

NY = {"timezone": "America/New_York",
      "weekly": {"mon": ["09:00-17:00"], "tue": ["09:00-12:00", "13:00-17:00"],
                 "fri": ["22:00-02:00"], "sun": ["00:00-24:00"]}}


def at(text: str) -> datetime:
    """A moment given in New York local time (UTC-5 in January)."""
    naive = datetime.fromisoformat(text)
    return naive.replace(tzinfo=parse_hours(NY).zone).astimezone(UTC)


@pytest.mark.parametrize(("when", "open_"), [
    ("2027-01-04T09:00", True),    # Monday, opening minute
    ("2027-01-04T16:59", True),
    ("2027-01-04T17:00", False),   # closing is exclusive
    ("2027-01-04T08:59", False),
    ("2027-01-05T12:30", False),   # Tuesday lunch gap
    ("2027-01-05T13:00", True),
    ("2027-01-06T10:00", False),   # Wednesday: closed
    ("2027-01-08T23:30", True),    # Friday night window...
    ("2027-01-09T01:59", True),    # ...runs past midnight into Saturday
    ("2027-01-09T02:00", False),
    ("2027-01-10T23:59", True),    # Sunday all day
])
def test_schedule(when: str, open_: bool) -> None:
    assert parse_hours(NY).is_open(at(when)) is open_


@pytest.mark.parametrize("raw", [
    "9-5", {"weekly": {"mon": ["09:00-17:00"]}},
    {"timezone": "Mars/Olympus", "weekly": {"mon": ["09:00-17:00"]}},
    {"timezone": "UTC", "weekly": {}},
    {"timezone": "UTC", "weekly": {"monday": ["09:00-17:00"]}},
    {"timezone": "UTC", "weekly": {"mon": "09:00-17:00"}},
    {"timezone": "UTC", "weekly": {"mon": ["9:00-17:00"]}},
    {"timezone": "UTC", "weekly": {"mon": ["09:00-09:00"]}},
    {"timezone": "UTC", "weekly": {"mon": ["09:00-24:30"]}},
])
def test_bad_schedules_are_refused(raw: Any) -> None:
    with pytest.raises(InvalidHours):
        parse_hours(raw)


def _request(hours: Any, **kw: Any) -> dict[str, Any]:
    req = make_request(**kw)
    req["template"]["configurations"]["hours"] = hours
    return req


def test_outside_hours_is_a_clear_refusal_that_says_when() -> None:
    with pytest.raises(RequestError) as info:
        parse_request(_request(NY), {"main-line": "+14155550199"}.get,
                      now=at("2027-01-06T10:00"))
    assert info.value.code.value == "outside_hours"
    assert "Mon 09:00-17:00" in str(info.value.detail)
    assert parse_request(_request(NY), {"main-line": "+14155550199"}.get,
                         now=at("2027-01-04T10:00"))


def test_invalid_hours_code() -> None:
    with pytest.raises(RequestError) as info:
        parse_request(_request({"timezone": "UTC"}), {"main-line": "+14155550199"}.get)
    assert info.value.code.value == "invalid_hours"


def test_client_outside_hours_dials_nothing(settings: Settings, store: Store,
                                           celery_app: Celery) -> None:
    other_day = DAYS[(datetime.now(UTC).weekday() + 2) % 7]  # never today
    closed = {"timezone": "UTC", "weekly": {other_day: ["09:00-17:00"]}}
    result = TransferClient(settings, store=store, celery=celery_app).connect_to_live_agent(
        _request(closed, lead_id="L1"))
    assert result["status"] == "error" and result["error"] == "outside_hours"
    assert "call back" in result["message"]
    assert f"{other_day.capitalize()} 09:00-17:00 (UTC)" in result["message"]
    assert drain_queue(celery_app, "transfers") == []
    assert store.lead_status("L1") is None
