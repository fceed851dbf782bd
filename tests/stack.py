"""A whole running system for tests: a real Redis server, the webhook app over HTTP, the
provider sandbox, Celery worker processes consuming `transfers`, and a platform-side Celery
worker consuming `agent_events` (what the agent platform runs). Used by the integration and
the fault-injection suites."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from celery.contrib.testing.worker import start_worker

from providers import accounts
from sandbox import Sandbox
from sandbox.redis_server import RedisServer
from sandbox.server import ThreadedServer
from shared.client import TransferClient
from shared.config import Settings
from shared.store import Store
from tests.helpers import fictional_number, make_request, unique_lead
from webhooks import create_app
from workers import broker_fix

# The platform's consumer below runs in this process: it rides out broker restarts too.
broker_fix.apply()

ROOT = Path(__file__).resolve().parents[1]
# The name of each provider's second sandbox account in the stack's CREDENTIALS_FILE.
SECOND = "second"
TERMINAL = ("transfer.succeeded", "transfer.failed")


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


class _Dispatch:
    """Lets the server bind its port before the app (which needs its public URL) exists."""

    app: Any = None

    def __call__(self, environ: Any, start_response: Any) -> Any:
        return self.app(environ, start_response)


def settings_env(settings: Settings) -> dict[str, str]:
    names = ({n.upper() for n in Settings.model_fields} | accounts.setting_names()
             | {"TWILIO_EDGE", "TWILIO_REGION"})
    env = {k: v for k, v in os.environ.items() if k.upper() not in names}
    for name, value in settings.model_dump().items():
        env[name.upper()] = value if isinstance(value, str) else json.dumps(value)
    env["PYTHONPATH"] = str(ROOT)
    return env


def require_broker() -> None:
    """With TEST_CELERY_BROKER_URL (e.g. RabbitMQ) the suite runs over that broker, or is
    skipped, saying why, when it does not answer."""
    url = os.environ.get("TEST_CELERY_BROKER_URL")
    if not url:
        return
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1, timeout=3)
    except Exception as exc:  # any failure means "not reachable"
        pytest.skip(f"TEST_CELERY_BROKER_URL={url} is not reachable ({exc}); "
                    "the broker suite needs a running broker")


class Services:
    """Start with `with Services.running(...) as services:`."""

    def __init__(self, redis_server: RedisServer, sandbox: Sandbox, sandbox_server: ThreadedServer,
                 web_server: ThreadedServer, settings: Settings, events: EventLog,
                 log_dir: Path) -> None:
        self.redis_server = redis_server
        self.sandbox = sandbox
        self.sandbox_server = sandbox_server
        self.web_server = web_server
        self.settings = settings
        self.events = events
        self.log_dir = log_dir
        self.workers: list[subprocess.Popen[bytes]] = []
        self.store = Store.from_settings(settings)
        self.client = TransferClient(settings, store=self.store)

    @classmethod
    @contextmanager
    def running(cls, log_dir: Path, *, persistent_redis: bool = False,
                **overrides: Any) -> Iterator[Services]:
        with ExitStack() as stack:
            redis_server = stack.enter_context(RedisServer(persistent=persistent_redis))
            sb = Sandbox()
            stack.callback(sb.stop)
            sb_server = ThreadedServer(sb.app).start()
            stack.callback(sb_server.stop)
            dispatch = _Dispatch()
            web = ThreadedServer(dispatch).start()
            stack.callback(web.stop)
            # The sandbox's second account of each provider, named "second" (a mounted
            # secret, as CREDENTIALS_FILE is in production); the default one from the env.
            accounts_file = log_dir / "accounts.json"
            accounts_file.write_text(json.dumps(
                {name: {SECOND: model.second_account(sb_server.url)}
                 for name, model in sb.models.items()}))
            values: dict[str, Any] = {
                "credentials_file": str(accounts_file),
                "redis_url": redis_server.url,
                # Another broker (e.g. RabbitMQ: amqp://...) when this is set.
                "celery_broker_url": os.environ.get("TEST_CELERY_BROKER_URL", ""),
                "public_base_url": web.url,
                # Every registered provider pointed at the sandbox (its model says how).
                **{k.lower(): v for k, v in sb.env(sb_server.url).items()},
                "exotel_webhook_token": "exotel-test-secret",
                "transfer_ring_timeout": 5,
                "transfer_deadline_margin": 2,
                "provider_retry_delays": [0.2, 0.4, 0.8],
                "provider_http_timeout": 3.0,
                "api_token": "integration-token",
            }
            values.update(overrides)
            settings = Settings.model_validate(values)
            dispatch.app = create_app(settings)
            events = EventLog()
            services = cls(redis_server, sb, sb_server, web, settings, events, log_dir)
            events.listeners.append(services._platform_reacts)
            stack.enter_context(services._platform_worker())
            stack.callback(services.stop_workers)
            services.start_worker()
            yield services

    def _platform_reacts(self, event: dict[str, Any]) -> None:
        # Like a real platform: close the AI's stream when told to, which on Exotel lets the
        # flow go on to its Connect applet.
        if event["type"] == "transfer.disconnect_ai" and event["provider"] == "exotel":
            self.sandbox.exotel.ai_disconnected(event["call_id"])

    @contextmanager
    def _platform_worker(self) -> Iterator[None]:
        platform = Celery("platform", broker=self.settings.celery_broker_url,
                          set_as_current=False)
        platform.conf.update(task_serializer="json", accept_content=["json"],
                             task_ignore_result=True, worker_hijack_root_logger=False,
                             broker_connection_retry=True,
                             worker_cancel_long_running_tasks_on_connection_loss=True,
                             broker_connection_max_retries=None,
                             # No remote control: its broadcast consumer is a Redis pub/sub
                             # socket, once seen blocked in recv() at shutdown after the
                             # suites' Redis restarts (the session's end then timed out).
                             worker_enable_remote_control=False,
                             worker_send_task_events=False,
                             # And no read waits for ever (kombu's BRPOP polls every 1 s).
                             broker_transport_options={"socket_timeout": 10})
        log = self.events

        # shared=False: not attached to every other app (another suite has its own).
        @platform.task(name=self.settings.agent_event_task,  # type: ignore[untyped-decorator]
                       shared=False)
        def transfer_event(event: dict[str, Any]) -> None:
            log.add(event)

        # A worker that lost its broker (the fault suite restarts Redis) may be sleeping in
        # its reconnect backoff (up to 30 s) when the session ends: give it longer than that.
        with start_worker(platform, pool="solo", queues=[self.settings.agent_event_queue],
                          perform_ping_check=False, loglevel="WARNING", shutdown_timeout=60):
            yield

    def start_worker(self, concurrency: int = 2, timeout: float = 60) -> subprocess.Popen[bytes]:
        """A worker process as the Procfile starts it, in its own process group."""
        n = len(self.workers)
        out = open(self.log_dir / f"worker-{n}.log", "wb")  # noqa: SIM115 - child owns it
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker",
             "-Q", "transfers", "--pool", "prefork", "--concurrency", str(concurrency),
             "--without-gossip", "--without-mingle", "--loglevel", "INFO",
             "--hostname", f"test-{n}@%h"],
            env=settings_env(self.settings), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
        out.close()
        self.workers.append(proc)
        deadline = time.monotonic() + timeout
        while not self._answers(f"test-{n}@"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("worker did not start:\n" + self.worker_log(n)[-3000:])
        return proc

    def _answers(self, prefix: str) -> bool:
        probe = Celery("probe", broker=self.settings.celery_broker_url, set_as_current=False)
        try:
            replies = probe.control.ping(timeout=0.5)
        except (OSError, ConnectionError, redis.RedisError):
            return False  # e.g. a pooled connection from before a Redis restart
        finally:
            probe.close()
        return any(prefix in name for reply in replies for name in reply)

    def worker_log(self, n: int = -1) -> str:
        index = n if n >= 0 else len(self.workers) - 1
        return (self.log_dir / f"worker-{index}.log").read_text(errors="replace")

    def kill_worker(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL the worker and its pool: no shutdown, no acknowledgements."""
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop_worker(self, proc: subprocess.Popen[bytes]) -> None:
        """A warm shutdown (SIGTERM), as a deployment stops a worker."""
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def stop_workers(self) -> None:
        for proc in self.workers:
            self.stop_worker(proc)

    # driving transfers
    def customer_call(self, lead_id: str, provider: str = "twilio", account: str | None = None,
                      **flow: Any) -> str:
        """A customer's call on the platform; `account` ("second"): on the provider's second
        sandbox account, its status callbacks (and Exotel's flow URLs) naming it."""
        base = self.settings.public_base_url
        tag = f"&account={account}" if account else ""
        if provider == "exotel":
            token = (self.sandbox.exotel.second_account("")["webhook_token"] if account
                     else self.settings.exotel_webhook_token)
            flow.setdefault("dial_whom_url", f"{base}/exotel/dial-up?token={token}{tag}")
            # The README's flow: a Passthru after Connect reports how it went.
            flow.setdefault("passthru_url", f"{base}/exotel/passthru?token={token}{tag}")
            status = f"{base}/exotel/status?token={token}&lead_id={lead_id}{tag}"
        elif provider == "telnyx":
            # The Call Control application's webhook URL (set in the portal) is ours.
            status = f"{base}/telnyx/webhook?lead_id={lead_id}{tag}"
        else:
            status = f"{base}/{provider}/status?lead_id={lead_id}{tag}"
        if account:
            # The call belongs to that account in the sandbox (its id: SID, auth id, key).
            flow["account"] = self.sandbox.models[provider].second_owner()
        return self.sandbox.create_customer_call(
            to="+14155550150", from_="+14155550151", provider=provider,
            status_callback=status, **flow)

    def request_transfer(self, fate: str, number: str | None = None, *,
                         provider: str = "twilio", outbound: str = "+14155550199",
                         flow: dict[str, Any] | None = None,
                         configurations: dict[str, Any] | None = None, **request: Any
                         ) -> tuple[str, str, str, dict[str, Any]]:
        """A customer call on `provider` and the AI's request to transfer it to `number` (a
        fresh fictional one by default), whose fate in the sandbox is `fate`:
        (lead, call id, number, the tool result)."""
        lead = unique_lead()
        call_id = self.customer_call(lead, provider=provider, **(flow or {}))
        number = number or fictional_number()
        self.sandbox.set_fate(number, fate)
        body = make_request(
            lead_id=lead, call_id=call_id, transfer_number=number, provider=provider,
            outbound_number=outbound, outbound_number_id=None, **request)
        body["template"]["configurations"].update(configurations or {})
        return lead, call_id, number, self.client.connect_to_live_agent(body)

    def terminal(self, transfer_id: str, timeout: float = 10.0) -> dict[str, Any]:
        return self.events.wait(lambda e: e["transfer_id"] == transfer_id
                                and e["type"] in TERMINAL, timeout)

    def events_for(self, lead_id: str) -> list[dict[str, Any]]:
        return self.events.matching(lambda e: e["lead_id"] == lead_id)

    def terminal_count(self, transfer_id: str) -> int:
        return len(self.events.matching(lambda e: e["transfer_id"] == transfer_id
                                        and e["type"] in TERMINAL))
