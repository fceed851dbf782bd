"""The worker's Celery app: configuration from shared.celery_config, tasks from workers.tasks."""

from __future__ import annotations

import threading
import time
from typing import Any

from celery import Celery, Task
from celery.signals import after_setup_logger, worker_init, worker_ready, worker_shutdown

from shared.celery_config import TASK_EXPIRE, TRANSFERS_QUEUE, make_celery
from shared.config import get_settings
from shared.logs import configure_logging, get_logger
from shared.store import Store

log = get_logger(__name__)


class TransferTask(Task):  # type: ignore[misc]
    """Shared defaults. Every task checks the transfer's state first, so a redelivery is
    harmless; that is what makes late acks safe here."""

    acks_late = True
    reject_on_worker_lost = True
    ignore_result = True
    typing = True


app: Celery = make_celery(get_settings())
app.Task = TransferTask  # tasks declared on `app` get these defaults
app.conf.task_default_queue = TRANSFERS_QUEUE


@after_setup_logger.connect
def _json_logs(**_: Any) -> None:
    configure_logging(get_settings().log_level)


@worker_init.connect
def _warm_up(**_: Any) -> None:
    # In the main process, before the pool forks: every child starts warm.
    from workers.providers import warm_up

    warm_up()


class DeadlineSweeper(threading.Thread):
    """Finds transfers past their deadline (kept in Redis, so it survives restarts) and
    enqueues their expiry. Runs in every worker's main process; the claim is atomic."""

    def __init__(self, interval: float = 1.0) -> None:
        super().__init__(name="deadline-sweeper", daemon=True)
        self.interval = interval
        self.stopped = threading.Event()

    def run(self) -> None:
        store = Store.from_settings(get_settings())
        while not self.stopped.wait(self.interval):
            try:
                for transfer_id in store.claim_due(time.time()):
                    app.send_task(TASK_EXPIRE, kwargs={"transfer_id": transfer_id},
                                  queue=TRANSFERS_QUEUE)
            except Exception:
                log.exception("deadline sweep failed")


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
