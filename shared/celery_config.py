"""Celery configuration shared by producers (the client, the webhooks) and the workers.

The routing table lives here, once: every task name and the queue it goes to.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

import shared.redaction  # noqa: F401 - redacts every task's argsrepr/kwargsrepr
from shared.config import Settings

TRANSFERS_QUEUE = "transfers"

# Stable task names: outsiders (other-language producers, the platform) rely on them.
TASK_REQUEST = "warm_transfer.request"
TASK_PROVIDER_CALLBACK = "warm_transfer.provider_callback"
TASK_CALL_STATUS = "warm_transfer.call_status"
TASK_EXPIRE = "warm_transfer.expire"

OUR_TASKS = (TASK_REQUEST, TASK_PROVIDER_CALLBACK, TASK_CALL_STATUS, TASK_EXPIRE)


def task_routes(settings: Settings) -> dict[str, dict[str, str]]:
    routes = {name: {"queue": TRANSFERS_QUEUE} for name in OUR_TASKS}
    routes[settings.agent_event_task] = {"queue": settings.agent_event_queue}
    return routes


def celery_config(settings: Settings) -> dict[str, Any]:
    return {
        "broker_url": settings.celery_broker_url,
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "task_ignore_result": True,
        "result_backend": None,
        "task_routes": task_routes(settings),
        "task_default_queue": TRANSFERS_QUEUE,
        "task_create_missing_queues": True,
        "worker_prefetch_multiplier": 1,
        # On a lost broker connection, running late-ack tasks are cancelled and delivered
        # again; ours check state first, so that is safe (and Celery 6's default).
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            "visibility_timeout": settings.broker_visibility_timeout,
            # kombu's Redis transport looks for unacked messages of dead workers only every
            # interval x throttle seconds (10 x 10 by default): a task lost with its worker
            # came back minutes late. Look every few seconds instead (one ZRANGE).
            "unacked_restore_interval": min(10, max(1, settings.broker_visibility_timeout // 3)),
            "unacked_restore_throttle": 1,
        },
        # Publishing must not hang a tool call or a webhook when the broker is down.
        "broker_connection_timeout": 3,
        "broker_connection_max_retries": 1,
        "timezone": "UTC",
        "enable_utc": True,
        "worker_hijack_root_logger": False,
    }


def make_celery(settings: Settings, name: str = "warm_transfer") -> Celery:
    app = Celery(name, set_as_current=False)
    app.conf.update(celery_config(settings))
    return app
