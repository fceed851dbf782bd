"""What the views share, built once per app: settings, store, a Celery producer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from celery import Celery
from flask import abort, current_app, g

from shared.celery_config import TRANSFERS_QUEUE, make_celery
from shared.client import TransferClient
from shared.config import Settings
from shared.logs import get_logger
from shared.metrics import Metrics
from shared.store import Store

log = get_logger("webhooks")


@dataclass
class Deps:
    settings: Settings
    store: Store
    celery: Celery
    client: TransferClient
    metrics: Metrics = field(init=False)

    def __post_init__(self) -> None:
        self.metrics = Metrics(self.store.r)

    @classmethod
    def build(cls, settings: Settings) -> Deps:
        store = Store.from_settings(settings)
        celery = make_celery(settings, "warm_transfer_webhooks")
        return cls(settings, store, celery, TransferClient(settings, store=store, celery=celery))


def deps() -> Deps:
    d: Deps = current_app.extensions["warm_transfer"]
    return d


def with_account(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The provider account the webhook was verified as (webhooks.security.webhook_account),
    for the worker to check against the transfer's; the default goes unsaid."""
    account = g.get("account")
    return {**kwargs, "account": account} if account and account != "default" else kwargs


def enqueue(task: str, **kwargs: Any) -> None:
    """Publish a task, or answer 503 so the provider retries: an accepted callback is never
    dropped on the floor."""
    kwargs = with_account(kwargs)
    try:
        deps().celery.send_task(task, kwargs=kwargs, queue=TRANSFERS_QUEUE)
    except Exception:
        log.exception("could not enqueue", extra={"task": task})
        release_claim()
        abort(503)


def try_enqueue(task: str, **kwargs: Any) -> bool:
    """Publish a task where the answer must not depend on it (a TwiML route steering a live
    call): False, logged, when the broker is down."""
    kwargs = with_account(kwargs)
    try:
        deps().celery.send_task(task, kwargs=kwargs, queue=TRANSFERS_QUEUE)
    except Exception:
        log.exception("could not enqueue; answering anyway", extra={"task": task})
        return False
    return True


def release_claim() -> None:
    """Forget this request's replay claim: it was not accepted, so its retry must be."""
    claim = g.pop("release_on_failure", None)
    if claim:
        try:
            # A claim's name (claim_once), or how to release a claim kept elsewhere.
            claim() if callable(claim) else deps().store.release_once(claim)
        except Exception:  # noqa: BLE001 - Redis may be what failed; the claim then expires
            log.warning("could not release a replay claim")
