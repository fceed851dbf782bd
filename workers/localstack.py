"""`warm-transfer up`: the whole system on one machine.

Redis (the one at REDIS_URL when it answers, else an embedded real redis-server), the
provider sandbox (when no provider credentials are configured), the webhook app under
gunicorn and a Celery worker. Ctrl-C stops every part.

`up` supervises what it starts, as a process manager would in production: a child that
exits (or an embedded Redis that dies) is started again after a backoff (1 s, doubling to
30 s; back to 1 s once it has run for a minute), with one line saying so. The processes'
own logs go to files; `up` prints a short status block with their paths.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import redis
import requests

import providers
from sandbox import Sandbox
from sandbox.redis_server import RedisServer, free_port
from sandbox.server import ThreadedServer
from shared.config import Settings

BACKOFF_FIRST, BACKOFF_MAX, STABLE_AFTER = 1.0, 30.0, 60.0


@dataclass
class Restarts:
    """When a supervised part that exited comes back: after a backoff that grows with the
    failures in a row (a part that ran STABLE_AFTER seconds starts the count again)."""

    started_at: float = field(default_factory=time.monotonic)
    failures: int = 0
    restart_at: float | None = None

    def exited(self, now: float) -> float:
        """Schedule the restart; the delay."""
        if now - self.started_at > STABLE_AFTER:
            self.failures = 0
        self.failures += 1
        delay = backoff(self.failures)
        self.restart_at = now + delay
        return delay

    def due(self, now: float) -> bool:
        return self.restart_at is not None and now >= self.restart_at

    def started(self) -> None:
        self.started_at = time.monotonic()
        self.restart_at = None


@dataclass
class Child:
    """A process `up` runs and restarts: its command, where its output goes, its restarts."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path | None  # None: output discarded
    proc: subprocess.Popen[bytes] | None = None
    restarts: Restarts = field(default_factory=Restarts)

    def start(self) -> None:
        out: IO[bytes] | int = subprocess.DEVNULL
        if self.log_path is not None:
            out = open(self.log_path, "ab")  # noqa: SIM115 - the child holds it open
        try:
            self.proc = subprocess.Popen(self.argv, env=self.env, start_new_session=True,
                                         stdout=out, stderr=subprocess.STDOUT)
        finally:
            if not isinstance(out, int):
                out.close()
        self.restarts.started()

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)


def backoff(failures: int) -> float:
    return float(min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** max(0, failures - 1)))


@dataclass
class Stack:
    redis_url: str
    web_url: str
    public_base_url: str
    sandbox_url: str | None
    env: dict[str, str]
    sandbox: Sandbox | None = None
    children: list[Child] = field(default_factory=list)
    redis_server: RedisServer | None = None
    log_dir: Path | None = None
    _redis_restarts: Restarts = field(default_factory=Restarts)

    def supervise(self, say: Callable[[str], None]) -> None:
        """One round of supervision: restart what has exited, once its backoff is over."""
        now = time.monotonic()
        server = self.redis_server
        if server is not None and server.proc is not None and server.proc.poll() is not None:
            restarts = self._redis_restarts
            if restarts.restart_at is None:
                delay = restarts.exited(now)
                say(f"redis      exited (status {server.proc.returncode}); restarting in "
                    f"{delay:.0f}s")
            elif restarts.due(now):
                try:
                    server.start()
                except RuntimeError as exc:
                    restarts.restart_at = None  # counted as another failure
                    say(f"redis      did not start again: {exc}")
                else:
                    restarts.started()
                    say(f"redis      restarted on {server.url} (its AOF kept every write)")
        for child in self.children:
            proc = child.proc
            if proc is None or proc.poll() is None:
                continue
            if child.restarts.restart_at is None:
                delay = child.restarts.exited(now)
                where = f"; log {child.log_path}" if child.log_path else ""
                say(f"{child.name:<10} exited (status {proc.returncode}); restarting in "
                    f"{delay:.0f}s{where}")
            elif child.restarts.due(now):
                child.start()
                say(f"{child.name:<10} restarted (pid {child.proc.pid})")  # type: ignore[union-attr]


def sandbox_env(sandbox: Sandbox, url: str) -> dict[str, str]:
    """Every registered provider pointed at the sandbox (each model gives its variables),
    with each one's second sandbox account in a credentials file (the sandbox's fake
    secrets, in a file only this user reads)."""
    fd, path = tempfile.mkstemp(prefix="warm-transfer-accounts-", suffix=".json")
    with os.fdopen(fd, "w") as out:
        json.dump(sandbox.accounts(url), out)
    atexit.register(lambda: Path(path).unlink(missing_ok=True))
    return {**sandbox.env(url), "CREDENTIALS_FILE": path,
            # The toll-fraud guard's home country, where nothing else names one: the
            # sandbox's own numbers are fictional US ones (`request --outbound-number` works).
            "TRANSFER_HOME_COUNTRY": os.environ.get("TRANSFER_HOME_COUNTRY") or "US",
            # The sandbox answers SIP destinations at this host (the demo's).
            "TRANSFER_ALLOWED_SIP_DOMAINS": os.environ.get("TRANSFER_ALLOWED_SIP_DOMAINS")
            or "pbx.example.com"}


def redis_reachable(url: str) -> bool:
    from shared.store import redis_client

    try:  # the store's own client: a redis+sentinel:// URL is asked through its sentinels
        client = redis_client(Settings(redis_url=url, celery_broker_url=url),
                              socket_connect_timeout=1)
        return bool(client.ping())
    except (redis.RedisError, ValueError):
        return False


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with status {proc.returncode}")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f}s")


def _wait_worker(broker_url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    from celery import Celery

    probe = Celery("probe", broker=broker_url, set_as_current=False)
    deadline = time.monotonic() + timeout
    while not probe.control.ping(timeout=0.5):
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited with status {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the worker did not answer within {timeout:.0f}s")


def _stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Stop a child and everything it started (its own process group)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def running_stack(*, port: int = 8000, sandbox_port: int = 0, use_sandbox: bool | None = None,
                  log: Callable[[str], None] | None = None, quiet_children: bool = False,
                  log_dir: Path | None = None) -> Iterator[Stack]:
    """Start every part; stop them all when the block ends. The children's output goes to
    files in `log_dir` (a directory per port under the system's temp dir by default), or
    nowhere with `quiet_children`."""
    if log is None:
        def log(line: str) -> None:
            print(line, flush=True)
    if _port_in_use(port):
        # Else the health check would find that server, and callbacks would go to it.
        raise RuntimeError(f"port {port} is already in use (another `warm-transfer up`?); "
                           "choose another with --port")
    base = Settings()
    env = dict(os.environ)
    if not quiet_children:
        log_dir = log_dir or Path(tempfile.gettempdir()) / f"warm-transfer-{port}"
        log_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        # Redis
        server: RedisServer | None = None
        if os.environ.get("REDIS_URL") and redis_reachable(base.redis_url):
            redis_url = base.redis_url
            log(f"redis      {redis_url} (from REDIS_URL)")
        else:
            if os.environ.get("REDIS_URL"):
                log(f"redis      {base.redis_url} does not answer; starting an embedded one")
            # With its AOF: when it dies and is restarted, nothing in flight is lost.
            server = stack.enter_context(RedisServer(persistent=True))
            redis_url = server.url
            log(f"redis      {redis_url} (embedded redis-server)")
            env["REDIS_URL"] = redis_url
            if not os.environ.get("CELERY_BROKER_URL"):
                env["CELERY_BROKER_URL"] = redis_url
        broker_url = env.get("CELERY_BROKER_URL") or redis_url

        web_url = f"http://127.0.0.1:{port}"
        public = env.setdefault("PUBLIC_BASE_URL", web_url)

        # Provider sandbox, when no real provider is configured
        sandbox: Sandbox | None = None
        sandbox_url: str | None = None
        if use_sandbox is None:
            use_sandbox = not any(spec.configured(base) for spec in providers.specs())
        if use_sandbox:
            sandbox = Sandbox()
            stack.callback(sandbox.stop)
            sb_server = ThreadedServer(sandbox.app, port=sandbox_port).start()
            stack.callback(sb_server.stop)
            sandbox_url = sb_server.url
            # Every provider goes to the sandbox: nothing may reach a real provider by halves.
            env.update(sandbox_env(sandbox, sandbox_url))
            log(f"sandbox    {sandbox_url} (fake provider APIs; control API under /_sandbox)")

        def logfile(name: str) -> Path | None:
            return None if quiet_children or log_dir is None else log_dir / f"{name}.log"

        web = Child("webhooks", [
            sys.executable, "-m", "gunicorn", "-c", "python:webhooks.gunicorn_conf",
            "--bind", f"127.0.0.1:{port}", "--graceful-timeout", "5", "webhooks.wsgi:app"],
            env, logfile("web"))
        web.start()
        stack.callback(web.stop)
        worker = Child("worker", [
            sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker",
            "-Q", "transfers", "--concurrency", "2", "--without-gossip", "--without-mingle",
            "--loglevel", env.get("LOG_LEVEL", "INFO")], env, logfile("worker"))
        worker.start()
        stack.callback(worker.stop)

        _wait_http(f"{web_url}/healthz", web.proc, 30)  # type: ignore[arg-type]
        log(f"webhooks   {web_url} (public URL {public})")
        _wait_worker(broker_url, worker.proc, 60)  # type: ignore[arg-type]
        log("worker     consuming the 'transfers' queue")
        if log_dir is not None and not quiet_children:
            redis_log = f", {server.directory / 'redis.log'}" if server is not None else ""
            log(f"logs       {log_dir}/web.log, {log_dir}/worker.log{redis_log}")
        yield Stack(redis_url, web_url, public, sandbox_url, env, sandbox, [web, worker],
                    server, log_dir)


def up(port: int = 8000, sandbox_port: int = 0, use_sandbox: bool | None = None) -> int:
    stopping = False

    def _on_signal(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        with running_stack(port=port, sandbox_port=sandbox_port or free_port(),
                           use_sandbox=use_sandbox) as stack:
            # `demo` and `request` find this stack through the state file.
            from workers.demo import remove_up_state, write_up_state

            write_up_state(stack, port)
            try:
                print("ready      Ctrl-C stops everything", flush=True)
                while not stopping:
                    stack.supervise(lambda line: print(line, flush=True))
                    time.sleep(0.2)
                print("stopping", flush=True)
            finally:
                remove_up_state(port)
    except RuntimeError as exc:
        print(f"warm-transfer up: {exc}", file=sys.stderr)
        return 1
    return 0
