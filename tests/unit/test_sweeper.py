"""The deadline sweeper during a Redis outage: one warning when it starts, one line when it
ends, and the due transfers sent once Redis is back."""

from __future__ import annotations

import logging

import pytest
import redis

from workers.celery_app import DeadlineSweeper


class FlakyStore:
    """claim_due fails while `down` is set, as a Store does while Redis is unreachable."""

    def __init__(self) -> None:
        self.down = False
        self.due = ["tr_1"]

    def claim_due(self, now: float) -> list[str]:
        if self.down:
            raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379")
        due, self.due = self.due, []
        return due


def test_one_warning_per_outage_and_the_sweep_resumes(caplog: pytest.LogCaptureFixture
                                                       ) -> None:
    store, sent = FlakyStore(), []
    sweeper = DeadlineSweeper(store=store, send=sent.append)  # type: ignore[arg-type]
    caplog.set_level(logging.INFO, logger="workers.celery_app")
    for down in (True,) * 30 + (False,) + (True,) * 5 + (False,):
        store.down = down
        sweeper.sweep_once()
    messages = [r.getMessage() for r in caplog.records if r.name == "workers.celery_app"]
    assert messages == ["deadline sweep paused: Redis or the broker is unreachable",
                        "deadline sweep resumed"] * 2
    assert [r.levelname for r in caplog.records].count("ERROR") == 0
    assert sent == ["tr_1"]


def test_a_publish_failure_counts_as_the_outage(caplog: pytest.LogCaptureFixture) -> None:
    from kombu.exceptions import OperationalError

    store = FlakyStore()

    def send(_: str) -> None:
        raise OperationalError("broker down")

    sweeper = DeadlineSweeper(store=store, send=send)  # type: ignore[arg-type]
    caplog.set_level(logging.INFO, logger="workers.celery_app")
    sweeper.sweep_once()
    store.due = ["tr_2"]
    sweeper.sweep_once()
    assert [r.getMessage() for r in caplog.records] == [
        "deadline sweep paused: Redis or the broker is unreachable"]
