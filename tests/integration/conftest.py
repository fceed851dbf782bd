"""One real stack per test session: a Redis server, a Celery worker process consuming
`transfers`, the webhook app over HTTP, the provider sandbox, and a platform-side Celery
worker consuming `agent_events` (what the agent platform runs)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker

from sandbox import Sandbox
from sandbox.redis_server import RedisServer
from sandbox.server import ThreadedServer
from shared.client import TransferClient
from shared.config import Settings
from shared.store import Store
from webhooks import create_app

ROOT = Path(__file__).resolve().parents[2]
RING_TIMEOUT = 5
DEADLINE_MARGIN = 2



class EventLog:
    """Events the platform's consumer received."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.cv = threading.Condition()
        self.listeners: list[Callable[[dict[str, Any]], None]] = []

    def add(self, event: dict[str, Any]) -> None:
        with self.cv:
            self.events.append(event)
            self.cv.notify_all()
        for listener in list(self.listeners):
            listener(event)

    def matching(self, pred: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        with self.cv:
            return [e for e in self.events if pred(e)]

    def wait(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 10.0
             ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.cv:
            while True:
                found = [e for e in self.events if pred(e)]
                if found:
                    return found[0]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no matching event within {timeout}s; "
                                         f"have {self.events[-5:]}")
                self.cv.wait(remaining)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def sandbox() -> Iterator[tuple[Sandbox, ThreadedServer]]:
    sb = Sandbox()
    server = ThreadedServer(sb.app).start()
    yield sb, server
    server.stop()
    sb.stop()


class _Dispatch:
    """Lets the server bind its port before the app (which needs its public URL) exists."""

    app: Any = None

    def __call__(self, environ: Any, start_response: Any) -> Any:
        return self.app(environ, start_response)


@pytest.fixture(scope="session")
def web_server() -> Iterator[tuple[_Dispatch, ThreadedServer]]:
    dispatch = _Dispatch()
    server = ThreadedServer(dispatch).start()
    yield dispatch, server
    server.stop()


@pytest.fixture(scope="session")
def settings(redis_server: RedisServer, sandbox: tuple[Sandbox, ThreadedServer],
             web_server: tuple[_Dispatch, ThreadedServer]) -> Settings:
    sb, sb_server = sandbox
    return Settings(
        redis_url=redis_server.url,
        # The suite runs over another broker (e.g. RabbitMQ: amqp://...) when this is set.
        celery_broker_url=os.environ.get("TEST_CELERY_BROKER_URL", ""),
        public_base_url=web_server[1].url,
        twilio_account_sid=sb.twilio_account_sid,
        twilio_auth_token=sb.twilio_auth_token,
        twilio_api_base_url=sb_server.url,
        plivo_auth_id=sb.plivo_auth_id,
        plivo_auth_token=sb.plivo_auth_token,
        plivo_api_base_url=sb_server.url,
        plivo_resume_url=f"{sb_server.url}/_sandbox/plivo/resume",
        exotel_account_sid=sb.exotel_account_sid,
        exotel_api_key=sb.exotel_api_key,
        exotel_api_token=sb.exotel_api_token,
        exotel_api_base_url=sb_server.url,
        exotel_webhook_token="exotel-integration-secret",
        transfer_ring_timeout=RING_TIMEOUT,
        transfer_deadline_margin=DEADLINE_MARGIN,
        provider_retry_delays=[0.2, 0.4, 0.8],
        provider_http_timeout=3.0,
        api_token="integration-token",
    )


def settings_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k.upper() not in {n.upper() for n in Settings.model_fields}
           and k not in ("TWILIO_EDGE", "TWILIO_REGION")}
    for name, value in settings.model_dump().items():
        env[name.upper()] = (value if isinstance(value, str)
                             else __import__("json").dumps(value))
    env["PYTHONPATH"] = str(ROOT)
    return env


@pytest.fixture(scope="session")
def worker(settings: Settings, web_server: tuple[_Dispatch, ThreadedServer],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[subprocess.Popen[bytes]]:
    web_server[0].app = create_app(settings)
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker",
             "-Q", "transfers", "--pool", "prefork", "--concurrency", "2",
             "--without-gossip", "--without-mingle", "--loglevel", "INFO"],
            env=settings_env(settings), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    probe = Celery("probe", broker=settings.celery_broker_url, set_as_current=False)
    deadline = time.monotonic() + 60
    while not probe.control.ping(timeout=0.5):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("worker did not start:\n" + log.read_text()[-3000:])
    yield proc
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="session")
def event_log(settings: Settings, sandbox: tuple[Sandbox, ThreadedServer]
              ) -> Iterator[EventLog]:
    """The platform side: a Celery worker with the `agent.transfer_event` task. Like a real
    platform it closes the AI's stream when told to (`transfer.disconnect_ai`), which on
    Exotel lets the flow go on to its Connect applet."""
    log = EventLog()

    def platform_reacts(event: dict[str, Any]) -> None:
        if event["type"] == "transfer.disconnect_ai" and event["provider"] == "exotel":
            sandbox[0].exotel.ai_disconnected(event["call_id"])

    log.listeners.append(platform_reacts)
    platform = Celery("platform", broker=settings.celery_broker_url, set_as_current=False)
    platform.conf.update(task_serializer="json", accept_content=["json"],
                         task_ignore_result=True, worker_hijack_root_logger=False)

    @platform.task(name=settings.agent_event_task)  # type: ignore[untyped-decorator]
    def transfer_event(event: dict[str, Any]) -> None:
        log.add(event)

    with start_worker(platform, pool="solo", queues=[settings.agent_event_queue],
                      perform_ping_check=False, loglevel="WARNING", shutdown_timeout=10):
        yield log


class Stack:
    def __init__(self, settings: Settings, sandbox: Sandbox, events: EventLog) -> None:
        self.settings = settings
        self.sandbox = sandbox
        self.events = events
        self.store = Store.from_settings(settings)
        self.client = TransferClient(settings, store=self.store)

    def customer_call(self, lead_id: str, provider: str = "twilio", **flow: Any) -> str:
        base = self.settings.public_base_url
        if provider == "exotel":
            token = self.settings.exotel_webhook_token
            flow.setdefault("dial_whom_url", f"{base}/exotel/dial-up?token={token}")
            status = f"{base}/exotel/status?token={token}&lead_id={lead_id}"
        else:
            status = f"{base}/{provider}/status?lead_id={lead_id}"
        return self.sandbox.create_customer_call(
            to="+14155550150", from_="+14155550151", provider=provider,
            status_callback=status, **flow)

    def terminal(self, transfer_id: str, timeout: float = 10.0) -> dict[str, Any]:
        return self.events.wait(lambda e: e["transfer_id"] == transfer_id and e["type"] in (
            "transfer.succeeded", "transfer.failed"), timeout)

    def events_for(self, lead_id: str) -> list[dict[str, Any]]:
        return self.events.matching(lambda e: e["lead_id"] == lead_id)

    def terminal_count(self, transfer_id: str) -> int:
        return len(self.events.matching(lambda e: e["transfer_id"] == transfer_id and e["type"]
                                        in ("transfer.succeeded", "transfer.failed")))


@pytest.fixture
def stack(settings: Settings, sandbox: tuple[Sandbox, ThreadedServer],
          worker: subprocess.Popen[bytes], event_log: EventLog) -> Iterator[Stack]:
    sb = sandbox[0]
    sb.repeat_callbacks = 1
    yield Stack(settings, sb, event_log)
    assert worker.poll() is None, "the worker process died"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)
