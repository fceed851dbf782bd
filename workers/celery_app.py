"""The worker's Celery app: configuration from shared.celery_config, tasks from workers.tasks."""

from __future__ import annotations

import threading
import time
from typing import Any, ClassVar

import redis
from celery import Celery, Task
from celery.signals import after_setup_logger, worker_init, worker_ready, worker_shutdown

from shared.celery_config import TASK_EXPIRE, TRANSFERS_QUEUE, make_celery
from shared.config import get_settings
from shared.logs import configure_logging, get_logger
from shared.store import Store
from workers import broker_fix

log = get_logger(__name__)

# Before any broker connection exists: see workers/broker_fix.py (kombu crash on reconnect).
broker_fix.apply()

# The store being unreachable (Redis restarting, a Sentinel failover) is retried, not
# failed: a callback that arrives during an outage is applied once Redis is back.
STORE_ERRORS = (redis.ConnectionError, redis.TimeoutError)


class TransferTask(Task):  # type: ignore[misc]
    """Shared defaults. Every task checks the transfer's state first, so a redelivery is
    harmless; that is what makes late acks safe here."""

    acks_late = True
    reject_on_worker_lost = True
    ignore_result = True
    typing = True
    autoretry_for = STORE_ERRORS
    # 1, 2, 4, 8, 10, 10... s with jitter: about 2 minutes in all, inside every flag TTL;
    # the deadline sweep settles anything still open after that.
    retry_backoff = 1
    retry_backoff_max = 10
    retry_jitter = True
    retry_kwargs: ClassVar[dict[str, Any]] = {"max_retries": 15}


app: Celery = make_celery(get_settings(), role="worker")
app.Task = TransferTask  # tasks declared on `app` get these defaults
app.conf.task_default_queue = TRANSFERS_QUEUE


@after_setup_logger.connect
def _json_logs(**_: Any) -> None:
    configure_logging(get_settings().log_level)


@worker_init.connect
def _warm_up(**_: Any) -> None:
    # In the main process, before the pool forks: every child starts warm.
    from providers import warm_up

    warm_up()


class DeadlineSweeper(threading.Thread):
    """Finds transfers past their deadline (kept in Redis, so it survives restarts) and
    enqueues their expiry. Runs in every worker's main process; the claim is atomic.

    When Redis or the broker is down it logs one warning for the outage and one line when
    it is back, not an error every interval."""

    def __init__(self, interval: float = 1.0, store: Store | None = None,
                 send: Any = None) -> None:
        super().__init__(name="deadline-sweeper", daemon=True)
        self.interval = interval
        self.stopped = threading.Event()
        self.store = store
        self.send = send or (lambda transfer_id: app.send_task(
            TASK_EXPIRE, kwargs={"transfer_id": transfer_id}, queue=TRANSFERS_QUEUE))
        self.down_since: float | None = None
        self._last_error_log = 0.0

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            self.sweep_once()

    def sweep_once(self) -> None:
        from kombu.exceptions import OperationalError

        try:
            if self.store is None:
                self.store = Store.from_settings(get_settings())
            for transfer_id in self.store.claim_due(time.time()):
                self.send(transfer_id)
        except (redis.ConnectionError, redis.TimeoutError, OperationalError, OSError) as exc:
            if self.down_since is None:
                self.down_since = time.monotonic()
                log.warning("deadline sweep paused: Redis or the broker is unreachable",
                            extra={"error": str(exc)})
            return
        except Exception:
            # Not an outage: a bug worth a traceback, but at most one a minute.
            if time.monotonic() - self._last_error_log > 60:
                self._last_error_log = time.monotonic()
                log.exception("deadline sweep failed")
            return
        if self.down_since is not None:
            log.warning("deadline sweep resumed", extra={
                "outage_seconds": round(time.monotonic() - self.down_since, 1)})
            self.down_since = None


_sweeper: DeadlineSweeper | None = None


@worker_ready.connect
def _start_sweeper(**_: Any) -> None:
    global _sweeper
    _sweeper = DeadlineSweeper()
    _sweeper.start()


@worker_shutdown.connect
def _stop_sweeper(**_: Any) -> None:
    if _sweeper is not None:
        _sweeper.stopped.set()


# Register the tasks on import of the app module (`celery -A workers.celery_app worker`).
import workers.tasks  # noqa: E402, F401
