"""`up`'s restart backoff (workers/localstack.Restarts), shared by its Redis and children."""

from __future__ import annotations

from workers.localstack import BACKOFF_MAX, STABLE_AFTER, Restarts


def test_failures_in_a_row_back_off_longer_up_to_the_cap() -> None:
    r = Restarts(started_at=0.0)
    delays = [r.exited(1.0) for _ in range(7)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, BACKOFF_MAX, BACKOFF_MAX]
    assert r.due(1.0 + BACKOFF_MAX) and not r.due(BACKOFF_MAX)


def test_a_part_that_ran_long_enough_starts_the_count_again() -> None:
    r = Restarts(started_at=0.0)
    r.exited(1.0)
    r.exited(1.0)
    r.started_at = 100.0  # as started() records it
    assert r.exited(100.0 + STABLE_AFTER + 1) == 1.0


def test_started_clears_the_pending_restart() -> None:
    r = Restarts(started_at=0.0)
    r.exited(1.0)
    r.started()
    assert r.restart_at is None and not r.due(10**9)
