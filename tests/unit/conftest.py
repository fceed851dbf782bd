from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import fakeredis
import pytest
import responses
from celery import Celery
from flask import Flask

import workers.tasks as tasks
from shared.celery_config import make_celery
from shared.client import TransferClient
from shared.config import Settings
from shared.store import Store
from tests.helpers import drain_queue
from webhooks import create_app
from webhooks.deps import Deps
from workers.runtime import Runtime

TWILIO_SID = "AC" + "a" * 32
TWILIO_API = "https://twilio.test"
PLIVO_ID = "MA" + "B" * 18
PLIVO_API = "https://plivo.test"
RESUME_URL = "https://platform.example.com/plivo/resume"
EXOTEL_API = "https://exotel.test"
EXOTEL_SID = "acme1"


@pytest.fixture
def settings() -> Settings:
    return Settings(
        redis_url="redis://unused:6379/0",
        celery_broker_url="memory://",
        public_base_url="https://hooks.example.com",
        twilio_account_sid=TWILIO_SID,
        twilio_auth_token="twilio-test-token",
        twilio_api_base_url=TWILIO_API,
        plivo_auth_id=PLIVO_ID,
        plivo_auth_token="plivo-test-token",
        plivo_api_base_url=PLIVO_API,
        plivo_resume_url=RESUME_URL,
        exotel_account_sid=EXOTEL_SID,
        exotel_api_key="exo-key",
        exotel_api_token="exo-token",
        exotel_api_base_url=EXOTEL_API,
        exotel_webhook_token="exo-webhook-secret",
        telnyx_api_key="telnyx-test-key",
        telnyx_connection_id="telnyx-test-app",
        telnyx_api_base_url="https://telnyx.test",
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
