"""The README's run command, the Procfile and compose.yaml, as an operator uses them."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from sandbox.redis_server import RedisServer, free_port
from tests.integration.processes import (
    ROOT,
    Output,
    alive,
    clean_env,
    descendants,
    read_events,
    stop,
)
from workers.localstack import running_stack

BIN = Path(sys.executable).parent


def _up(port: int, sandbox_port: int) -> tuple[subprocess.Popen[str], Output]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "up", "--port", str(port),
         "--sandbox-port", str(sandbox_port)],
        cwd=ROOT, env=clean_env(API_TOKEN="up-test-token", TRANSFER_HOME_COUNTRY="US"),
        text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = Output(proc)
    out.start()
    return proc, out


def _ready(out: Output) -> str:
    """Wait for `up`'s status block; the URL of the Redis it embedded."""
    out.wait_for("ready      Ctrl-C stops everything", 90)
    redis_line = out.wait_for("(embedded redis-server)", 1)
    return re.search(r"redis://\S+", redis_line).group(0)  # type: ignore[union-attr]


def _transfer_succeeds(port: int, sandbox_port: int, redis_url: str, lead: str,
                       timeout: float = 15.0) -> None:
    sandbox = f"http://127.0.0.1:{sandbox_port}"
    web = f"http://127.0.0.1:{port}"
    agent = "+14155550123"
    assert requests.put(f"{sandbox}/_sandbox/fates/{agent}", json={"fate": "answer"},
                        timeout=5).status_code == 200
    call_id = requests.post(f"{sandbox}/_sandbox/calls", timeout=5, json={
        "provider": "twilio", "status_callback": f"{web}/twilio/status?lead_id={lead}"},
    ).json()["call_id"]
    resp = requests.post(f"{web}/transfers", timeout=5,
                         headers={"Authorization": "Bearer up-test-token"}, json={
        "lead_id": lead, "provider": "twilio", "call_id": call_id,
        "template": {"configurations": {"transfer_number": agent}},
        "lead": {"outbound_number": "+14155550199"}})
    assert resp.status_code == 202, resp.text
    events = read_events(redis_url, timeout=timeout, until=lambda evs: any(
        e["type"] == "transfer.succeeded" for e in evs))
    assert [e["type"] for e in events] == ["transfer.succeeded"]
    assert events[0]["transfer_id"] == resp.json()["transfer_id"]


def test_up_runs_a_transfer_and_leaves_no_process_behind() -> None:
    port, sandbox_port = free_port(), free_port()
    proc, out = _up(port, sandbox_port)
    try:
        redis_url = _ready(out)
        # A short status block: the processes' own logs are in files, not on the terminal.
        assert len(out.lines) <= 8, out.lines
        assert not [line for line in out.lines if line.lstrip().startswith("{")], out.lines
        logs = out.wait_for("logs       ", 1)
        for name in ("web.log", "worker.log"):
            path = Path(re.search(rf"(/\S+/{name})", logs).group(1))  # type: ignore[union-attr]
            assert path.exists(), path
        web = f"http://127.0.0.1:{port}"
        assert requests.get(f"{web}/readyz", timeout=5).status_code == 200
        _transfer_succeeds(port, sandbox_port, redis_url, "up-lead")

        # Each process writes its metrics every half second; the scrape sees them after.
        wanted = ('warm_transfer_transfers_total{account="default",outcome="succeeded",'
                  'provider="twilio",reason=""} 1.0')
        deadline = time.monotonic() + 5
        while wanted not in requests.get(f"{web}/metrics", timeout=5).text:
            assert time.monotonic() < deadline, "the outcome was not counted"
            time.sleep(0.2)

        family = descendants(proc.pid)
        assert len(family) >= 4  # redis, gunicorn (+ its workers), celery (+ its pool)
    finally:
        code = stop(proc)
        out.close()
    assert code == 0, "\n".join(out.lines[-30:])
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in family) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in family if alive(pid)], "processes left behind"


def _child_running(parent: int, word: str) -> int:
    """The pid of `parent`'s direct child whose command line contains `word`."""
    for pid in descendants(parent):
        try:
            cmdline = (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ")
            ppid = int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1]
                       .split()[1])
        except OSError:
            continue
        if ppid == parent and word.encode() in cmdline:
            return pid
    raise AssertionError(f"no {word} process under {parent}")


def test_up_restarts_its_redis_and_worker_when_they_die() -> None:
    port, sandbox_port = free_port(), free_port()
    proc, out = _up(port, sandbox_port)
    try:
        redis_url = _ready(out)
        redis_pid = _child_running(proc.pid, "redis-server")
        worker_pid = _child_running(proc.pid, "celery")
        os.kill(redis_pid, signal.SIGKILL)
        os.killpg(worker_pid, signal.SIGKILL)  # the worker and its pool, no warm shutdown
        out.wait_for("redis      exited", 30)
        out.wait_for("worker     exited", 30)
        out.wait_for("redis      restarted", 60)
        out.wait_for("worker     restarted", 60)
        assert proc.poll() is None, "up stopped the stack"
        assert _child_running(proc.pid, "celery") != worker_pid
        # The stack recovered by itself: a transfer goes through.
        _transfer_succeeds(port, sandbox_port, redis_url, "up-restart-lead", timeout=60)
        print("\n" + "\n".join(line for line in out.lines if "exited" in line
                                or "restarted" in line))
    finally:
        code = stop(proc)
        out.close()
    assert code == 0, "\n".join(out.lines[-30:])


def test_procfile_starts_web_and_worker_under_honcho() -> None:
    port = free_port()
    with RedisServer() as redis_server:
        env = clean_env(REDIS_URL=redis_server.url, PORT=str(port),
                        PATH=f"{BIN}:{clean_env().get('PATH', '')}")
        proc = subprocess.Popen([sys.executable, "-m", "honcho", "start", "-f", "Procfile",
                                 "--no-prefix"], cwd=ROOT, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out = Output(proc)
        out.start()
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if requests.get(f"http://127.0.0.1:{port}/readyz", timeout=2
                                    ).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                assert time.monotonic() < deadline, "\n".join(out.lines[-30:])
                assert proc.poll() is None, "\n".join(out.lines[-30:])
                time.sleep(0.2)
            out.wait_for("ready.", 60)  # the Celery worker
            # The worker consumes a task from the queue: an invalid request comes back as
            # one transfer.failed event.
            from celery import Celery

            producer = Celery("p", broker=redis_server.url, set_as_current=False)
            producer.send_task("warm_transfer.request", queue="transfers", kwargs={
                "request": {"lead_id": "honcho-lead", "provider": "twilio", "call_id": "CA1"}})
            events = read_events(redis_server.url, until=lambda evs: bool(evs))
            assert [(e["type"], e["reason"]) for e in events] == [
                ("transfer.failed", "missing_transfer_number")]
            family = descendants(proc.pid)
        finally:
            stop(proc, timeout=40)
            out.close()
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in family) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in family if alive(pid)]


def _procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


def test_compose_file_is_valid_and_matches_the_procfile() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"redis", "web", "worker", "flower", "proxy"}
    images = {services[name]["image"] for name in ("web", "worker", "flower")}
    assert len(images) == 1, "one image for every process"
    for name, service in services.items():
        assert "healthcheck" in service and service["healthcheck"]["test"], name
        if name not in ("redis", "proxy"):
            assert service["environment"]["REDIS_URL"] == "redis://redis:6379/0"
            assert service["depends_on"]["redis"]["condition"] == "service_healthy"
    # One shared environment block (a YAML anchor), not three copies.
    assert services["web"]["environment"] is services["worker"]["environment"]
    procfile = _procfile()
    for name in ("web", "worker"):
        command = services[name]["command"]
        assert command[:2] == ["sh", "-c"]
        assert command[2].replace("$$", "$") in procfile[name].replace(
            "${LOG_LEVEL:-INFO}", "${LOG_LEVEL:-INFO}")
    assert "noeviction" in services["redis"]["command"]
    assert "--appendonly" in services["redis"]["command"]
    # Every variable the app reads is passed through: its own by name, the provider
    # packages' (TWILIO_*...) from .env as they are, and no provider is named here.
    from shared.config import Settings

    passed = set(services["web"]["environment"])
    for required in ("REDIS_URL", "PUBLIC_BASE_URL", "API_TOKEN", "CREDENTIALS_FILE"):
        assert required in passed and required.lower() in Settings.model_fields
    assert services["web"]["env_file"] == [{"path": ".env", "required": False}]
    import providers

    named = {n for spec in providers.specs() for n in spec.account.env_names()}
    assert not named & passed


def test_cli_user_errors_are_one_line_and_nonzero() -> None:
    env = clean_env(REDIS_URL="redis://127.0.0.1:1/0")
    bad_number = subprocess.run(
        [sys.executable, "-m", "workers.cli", "numbers", "set", "main", "12345"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert bad_number.returncode == 2
    assert bad_number.stderr.count("\n") == 1 and "E.164" in bad_number.stderr
    assert "Traceback" not in bad_number.stderr
    no_redis = subprocess.run([sys.executable, "-m", "workers.cli", "status", "lead-1"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert no_redis.returncode == 2
    assert no_redis.stderr.startswith("warm-transfer: cannot reach Redis")
    assert no_redis.stderr.count("\n") == 1
    for command in ("up", "demo", "request", "status", "numbers", "worker", "web", "sandbox"):
        helped = subprocess.run([sys.executable, "-m", "workers.cli", command, "--help"],
                                cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert helped.returncode == 0 and "usage: warm-transfer" in helped.stdout, command


def test_a_port_already_in_use_is_refused_before_anything_starts() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(RuntimeError, match=f"port {port} is already in use"), \
                running_stack(port=port, use_sandbox=True, log=lambda _: None):
            pass
