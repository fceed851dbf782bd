"""Celery configuration shared by producers (the client, the webhooks) and the workers.

The routing table lives here, once: every task name and the queue it goes to. The
connection settings differ by role: a producer answers a live call and must fail fast
when the broker is down; a worker must outlive any outage and consume again after it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from celery import Celery
from celery.app.amqp import AMQP

import shared.redaction  # noqa: F401 - redacts every task's argsrepr/kwargsrepr
from shared.config import Settings, parse_sentinel_url
from shared.redaction import redacted_repr

Role = Literal["producer", "worker"]

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


def broker_url_and_options(url: str) -> tuple[str, dict[str, Any]]:
    """Celery's form of our broker URL: a `redis+sentinel://` URL (the store's form) becomes
    kombu's `sentinel://host:port;sentinel://...` with the master's name as a transport
    option (https://docs.celeryq.dev/en/stable/getting-started/backends-and-brokers/redis.html)."""
    target = parse_sentinel_url(url)
    if target is None:
        return url, {}
    auth = f":{target.password}@" if target.password else ""
    hosts = ";".join(f"sentinel://{auth}{host}:{port}/{target.db}"
                     for host, port in target.hosts)
    return hosts, {"master_name": target.master}


def celery_config(settings: Settings, role: Role = "producer") -> dict[str, Any]:
    broker_url, sentinel_options = broker_url_and_options(settings.celery_broker_url)
    conf: dict[str, Any] = {
        "broker_url": broker_url,
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "task_ignore_result": True,
        "result_backend": None,
        "task_routes": task_routes(settings),
        "task_default_queue": TRANSFERS_QUEUE,
        "task_create_missing_queues": True,
        "worker_prefetch_multiplier": 1,
        # On a lost broker connection a running late-ack task finishes (its ack is lost,
        # so it is delivered again after the visibility timeout and finds its work done).
        # Celery's alternative (True, its 6.0 default) kills the pool process mid-task:
        # possibly mid provider call, and the pool is no longer the one that ran before.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            "visibility_timeout": settings.broker_visibility_timeout,
            # kombu's Redis transport looks for unacked messages of dead workers only every
            # interval x throttle seconds (10 x 10 by default): a task lost with its worker
            # came back minutes late. Look every few seconds instead (one ZRANGE).
            "unacked_restore_interval": min(10, max(1, settings.broker_visibility_timeout // 3)),
            "unacked_restore_throttle": 1,
            **sentinel_options,
        },
        # Publishing must not hang a tool call or a webhook when the broker is down: one
        # short connection attempt and one quick retry, then the caller gets an error.
        "broker_connection_timeout": 3,
        "broker_connection_max_retries": 1,
        "task_publish_retry_policy": {"max_retries": 1, "interval_start": 0.2,
                                      "interval_step": 0.2, "interval_max": 0.2},
        "timezone": "UTC",
        "enable_utc": True,
        "worker_hijack_root_logger": False,
    }
    if role == "worker":
        # A worker outlives the broker: it reconnects for ever, with backoff (Celery's
        # consumer waits 2, 4, 6... up to 30 s between tries, see broker_connection_retry),
        # on startup too, and the same processes consume again once the broker is back.
        # (broker_connection_max_retries only governs the consumer's connection, so the
        # worker's own publishes keep the short policy above, plus a few more tries.)
        conf.update({
            "broker_connection_retry": True,
            "broker_connection_retry_on_startup": True,
            "broker_connection_max_retries": None,
            "task_publish_retry_policy": {"max_retries": 3, "interval_start": 0.2,
                                          "interval_step": 0.5, "interval_max": 1.0},
        })
    return conf


_CLIENT_REUSED = False


def reuse_redis_clients() -> None:
    """kombu's Redis channel builds a new `redis.Redis` for every publish and every ack
    (`Channel.conn_or_acquire`, kombu 5.7 transport/redis.py: `yield self._create_client()`
    when no client is given); the profile put that at 6 % of a webhook's CPU and 11 % of the
    worker's. The client is only a handle on the channel's connection pool, so each channel
    keeps one per pool: a pool the channel drops (`_disconnect_pools` on a lost connection)
    gets a new client with its replacement. Messages and their protocol are unchanged."""
    global _CLIENT_REUSED
    if _CLIENT_REUSED:
        return
    from kombu.transport import redis as kombu_redis

    @contextmanager
    def conn_or_acquire(self: Any, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        pool = self.pool
        cached = self.__dict__.get("_wt_sync_client")
        if cached is None or cached[0] is not pool:
            cached = (pool, self._create_client())
            self.__dict__["_wt_sync_client"] = cached
        yield cached[1]

    kombu_redis.Channel.conn_or_acquire = conn_or_acquire  # type: ignore[method-assign]

    # Celery asks kombu to declare the task's queue on every publish; kombu finds it in its
    # per-connection cache of declared entities, but only inside `Connection.ensure`'s retry
    # wrapper, built anew each time (6 % of a webhook's CPU). Look in the same cache first.
    from kombu import common as kombu_common

    declare_with_retry: Any = kombu_common._imaybe_declare

    def imaybe_declare(entity: Any, channel: Any, **retry_policy: Any) -> Any:
        client = getattr(getattr(channel, "connection", None), "client", None)
        declared = getattr(client, "declared_entities", None)
        if declared is not None and entity.can_cache_declaration and hash(entity) in declared:
            return False  # what kombu's _maybe_declare answers for a cached declaration
        return declare_with_retry(entity, channel, **retry_policy)

    kombu_common._imaybe_declare = imaybe_declare
    _CLIENT_REUSED = True


class RedactedReprAMQP(AMQP):  # type: ignore[misc]
    """Celery's message builder, given the redacted argsrepr/kwargsrepr up front: without
    them it computes `saferepr` of the real arguments (celery/app/amqp.py, as_task_v2),
    which `before_task_publish` then throws away for the redacted ones. The message is the
    same protocol-2 message with the same headers (the signal still writes them)."""

    def as_task_v2(self, task_id: str, name: str, args: Any = None, kwargs: Any = None,
                   *rest: Any, **options: Any) -> Any:
        if options.get("argsrepr") is None:
            options["argsrepr"] = redacted_repr(list(args or ()))
        if options.get("kwargsrepr") is None:
            options["kwargsrepr"] = redacted_repr(kwargs or {})
        return super().as_task_v2(task_id, name, args, kwargs, *rest, **options)


def make_celery(settings: Settings, name: str = "warm_transfer", role: Role = "producer"
                ) -> Celery:
    reuse_redis_clients()
    app = Celery(name, set_as_current=False, amqp=RedactedReprAMQP)
    app.conf.update(celery_config(settings, role))
    return app
