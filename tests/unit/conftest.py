from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Any

import fakeredis
import pytest
import responses
from celery import Celery
from flask import Flask

import providers
import workers.tasks as tasks
from shared.celery_config import make_celery
from shared.client import TransferClient
from shared.config import Settings
from shared.store import Store
from tests.helpers import drain_queue
from webhooks import create_app
from webhooks.deps import Deps
from workers.runtime import Runtime


def _provider_settings() -> dict[str, Any]:
    """Each registered provider's test account, from its own test package
    (tests/unit/providers/<name>/__init__.py, `SETTINGS`): a new provider adds nothing here."""
    out: dict[str, Any] = {}
    for spec in providers.specs():
        out.update(importlib.import_module(f"tests.unit.providers.{spec.name}").SETTINGS)
    return out


@pytest.fixture
def settings() -> Settings:
    return Settings(
        redis_url="redis://unused:6379/0",
        celery_broker_url="memory://",
        public_base_url="https://hooks.example.com",
        **_provider_settings(),
        provider_retry_delays=[0.01, 0.01, 0.01],
        api_token="api-test-token",
        # The directory's "main-line" is a US number; the Exotel tests dial India.
        transfer_allowed_destinations="US,IN",
        transfer_allowed_sip_domains="pbx.example.com",
    )


@pytest.fixture
def redis_client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(decode_responses=True)


@pytest.fixture
def store(redis_client: fakeredis.FakeRedis, settings: Settings) -> Store:
    s = Store(redis_client, settings)
    s.set_number("main-line", "+14155550199")
    return s


@pytest.fixture
def celery_app(settings: Settings) -> Iterator[Celery]:
    app = make_celery(settings, "unit")
    for queue in ("transfers", "agent_events"):
        drain_queue(app, queue)
    yield app
    for queue in ("transfers", "agent_events"):
        drain_queue(app, queue)


AppFactory = Callable[..., Flask]


@pytest.fixture
def make_app(settings: Settings, store: Store, celery_app: Celery) -> AppFactory:
    """The webhook app from its factory, on the unit tests' fakeredis store and in-memory
    broker: make_app(api_token="") overrides settings; celery= another producer."""
    def build(celery: Celery | None = None, **overrides: Any) -> Flask:
        cfg = settings.model_copy(update=overrides)
        producer = celery or celery_app
        app = create_app(cfg)
        app.extensions["warm_transfer"] = Deps(cfg, store, producer,
                                               TransferClient(cfg, store=store, celery=producer))
        return app
    return build


@pytest.fixture
def dead_celery() -> Celery:
    """A Celery app whose broker does not answer (fails fast)."""
    dead = Celery("dead", set_as_current=False)
    dead.conf.update(broker_url="redis://127.0.0.1:1/0", broker_connection_timeout=0.2,
                     broker_connection_max_retries=0, broker_connection_retry=False)
    return dead


@pytest.fixture
def rt(settings: Settings, store: Store, celery_app: Celery,
       monkeypatch: pytest.MonkeyPatch) -> Runtime:
    runtime = Runtime(settings=settings, store=store, celery=celery_app)
    monkeypatch.setattr(tasks, "_runtime", runtime)
    return runtime


@pytest.fixture
def events(celery_app: Celery) -> Any:
    """Call to get the events sent to the platform so far."""
    def read() -> list[dict[str, Any]]:
        msgs = drain_queue(celery_app, "agent_events")
        assert all(m["task"] == "agent.transfer_event" for m in msgs)
        return [m["kwargs"]["event"] for m in msgs]
    return read


@pytest.fixture
def mocked() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as r:
        yield r
