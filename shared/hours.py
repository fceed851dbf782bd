"""Business hours for transfers: a weekly schedule in a time zone (template
`configurations.hours`). Outside it, nobody is dialed and the AI offers a call back.

    {"timezone": "America/New_York",
     "weekly": {"mon": ["09:00-17:00"], "tue": ["09:00-12:00", "13:00-17:00"],
                "sat": ["22:00-02:00"]}}

A window that ends before it starts runs past midnight into the next day. Days left out
are closed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WINDOW = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")


class InvalidHours(ValueError):
    pass


@dataclass(frozen=True)
class Hours:
    zone: ZoneInfo
    weekly: dict[int, tuple[tuple[time, time | None], ...]]  # weekday -> windows; None = 24:00
    text: str  # what the AI can tell the customer

    def is_open(self, when: datetime) -> bool:
        local = when.astimezone(self.zone)
        day, now = local.weekday(), local.time()
        for start, end in self.weekly.get(day, ()):
            if end is None or start < end:
                if start <= now and (end is None or now < end):
                    return True
            elif now >= start:  # overnight window, evening part
                return True
        for start, end in self.weekly.get((day - 1) % 7, ()):
            if end is not None and end <= start and now < end:  # overnight, morning part
                return True
        return False


def parse_hours(raw: Any) -> Hours:
    if not isinstance(raw, dict):
        raise InvalidHours("hours must be an object with timezone and weekly")
    tz = raw.get("timezone")
    try:
        zone = ZoneInfo(str(tz)) if isinstance(tz, str) and tz else None
    except (ZoneInfoNotFoundError, ValueError):
        zone = None
    if zone is None:
        raise InvalidHours(f"unknown time zone {tz!r}")
    weekly_raw = raw.get("weekly")
    if not isinstance(weekly_raw, dict) or not weekly_raw:
        raise InvalidHours("hours.weekly must map days (mon..sun) to windows")
    weekly: dict[int, tuple[tuple[time, time | None], ...]] = {}
    parts = []
    for day, windows in weekly_raw.items():
        if day not in DAYS:
            raise InvalidHours(f"unknown day {day!r}; use {', '.join(DAYS)}")
        if not isinstance(windows, list):
            raise InvalidHours(f"hours.weekly.{day} must be a list like ['09:00-17:00']")
        parsed = []
        for window in windows:
            match = _WINDOW.match(window) if isinstance(window, str) else None
            if not match:
                raise InvalidHours(f"bad window {window!r} on {day}; use 'HH:MM-HH:MM'")
            h1, m1, h2, m2 = (int(g) for g in match.groups())
            if h2 == 24 and m2:
                raise InvalidHours(f"bad window {window!r} on {day}")
            start = time(h1, m1)
            end = None if h2 == 24 else time(h2, m2)
            if end == start:
                raise InvalidHours(f"empty window {window!r} on {day}")
            parsed.append((start, end))
        weekly[DAYS.index(day)] = tuple(parsed)
        if windows:
            parts.append(f"{day.capitalize()} {', '.join(windows)}")
    return Hours(zone, weekly, f"{'; '.join(parts)} ({zone.key})")
