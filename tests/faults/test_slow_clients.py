"""The slow-header attack (issue 20): many sockets that each send a request line and then one
header line every 2 s. Against the deployment compose runs (nginx with the repo's template in
front of gunicorn with the repo's config, the real app), /healthz and a signed provider
callback keep being answered all along."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from twilio.request_validator import RequestValidator

from sandbox.redis_server import free_port
from tests.integration.processes import Output
from tests.stack import ROOT, Services, settings_env

TEMPLATE = ROOT / "deploy" / "nginx" / "default.conf.template"
# Twice the threads the app server has by default (2 workers x 8): enough to starve it.
ATTACKERS = 32
HEADER_INTERVAL = 2.0
ATTACK_SECONDS = 14.0  # well past nginx's 5 s header timeout: attackers are cut and return


def _nginx() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)),
        None)


def _wait_for(url: str, proc: subprocess.Popen[str], out: Output, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=2).status_code == 200:
                return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{url} did not come up:\n" + "\n".join(out.lines[-30:]))
        time.sleep(0.2)


@contextlib.contextmanager
def _process(argv: list[str], env: dict[str, str] | None = None) -> Iterator[
        tuple[subprocess.Popen[str], Output]]:
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    out = Output(proc)
    out.start()
    try:
        yield proc, out
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        out.close()


@contextlib.contextmanager
def _gunicorn(services: Services) -> Iterator[str]:
    """The Procfile's web line, with the repo's gunicorn config, on the suite's Redis."""
    port = free_port()
    env = {**settings_env(services.settings), "PORT": str(port), "HOST": "127.0.0.1",
           "LOG_LEVEL": "WARNING"}
    argv = [str(Path(sys.executable).parent / "gunicorn"), "-c", "python:webhooks.gunicorn_conf",
            "webhooks.wsgi:app"]
    with _process(argv, env) as (proc, out):
        _wait_for(f"http://127.0.0.1:{port}/healthz", proc, out)
        yield f"127.0.0.1:{port}"


@contextlib.contextmanager
def _nginx_in_front(nginx: str, upstream: str, workdir: Path) -> Iterator[str]:
    """nginx running deploy/nginx/default.conf.template, filled in as the nginx image does,
    inside a minimal main configuration (the image brings its own)."""
    port = free_port()
    site = TEMPLATE.read_text().replace("${WEB_UPSTREAM}", upstream).replace(
        "${PROXY_LISTEN}", f"127.0.0.1:{port}")
    (workdir / "site.conf").write_text(site)
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers must reach workdir
    temp = "\n".join(f"    {kind}_temp_path {workdir / kind};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (workdir / "nginx.conf").write_text(
        f"{user}daemon off;\nworker_processes 1;\npid {workdir / 'nginx.pid'};\n"
        f"error_log {workdir / 'error.log'} warn;\n"
        "events { worker_connections 1024; }\n"
        f"http {{\n{temp}\n    include {workdir / 'site.conf'};\n}}\n")
    argv = [nginx, "-p", str(workdir), "-e", str(workdir / "error.log"), "-c",
            str(workdir / "nginx.conf")]
    with _process(argv) as (proc, out):
        _wait_for(f"http://127.0.0.1:{port}/healthz", proc, out)
        yield f"http://127.0.0.1:{port}"


class SlowHeaders(threading.Thread):
    """One attacking socket: the request line, then a header line every 2 s, reconnecting
    whenever the server hangs up (as the issue's attacker did)."""

    def __init__(self, host: str, port: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.address, self.stop = (host, port), stop
        self.connections = 0

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                with socket.create_connection(self.address, timeout=5) as sock:
                    self.connections += 1
                    sock.sendall(b"POST /plivo/dial-up HTTP/1.1\r\nHost: x\r\n")
                    n = 0
                    while not self.stop.wait(HEADER_INTERVAL):
                        n += 1
                        sock.sendall(f"X-Slow-{n}: {n}\r\n".encode())
            except OSError:
                self.stop.wait(0.1)


def _signed_callback(services: Services, base: str) -> requests.Response:
    """A Twilio status callback of a leg, signed as Twilio signs it (over PUBLIC_BASE_URL)."""
    path = "/twilio/agent-status?transfer_id=tr_slowclient"
    params = {"CallSid": "CA" + "5" * 32, "CallStatus": "ringing",
              "AccountSid": services.settings.twilio_account_sid}
    signature = RequestValidator(services.settings.twilio_auth_token).compute_signature(
        services.settings.public_base_url + path, params)
    return requests.post(base + path, data=params, timeout=5,
                         headers={"X-Twilio-Signature": signature})


def test_slow_header_sockets_do_not_starve_callbacks(services: Services,
                                                     tmp_path: Path) -> None:
    nginx = _nginx()
    if nginx is None:
        pytest.skip("no nginx binary on this machine (apt-get install nginx-light); the "
                    "slow-client test runs the deployment's nginx in front of gunicorn")
    with _gunicorn(services) as upstream, _nginx_in_front(nginx, upstream, tmp_path) as base:
        stop = threading.Event()
        port = int(base.rsplit(":", 1)[1])
        attackers = [SlowHeaders("127.0.0.1", port, stop) for _ in range(ATTACKERS)]
        for attacker in attackers:
            attacker.start()
        probes: list[tuple[str, int | str]] = []
        try:
            started = time.monotonic()
            while time.monotonic() - started < ATTACK_SECONDS:
                for name, probe in (("healthz", lambda: requests.get(f"{base}/healthz",
                                                                     timeout=5)),
                                    ("callback", lambda: _signed_callback(services, base))):
                    try:
                        probes.append((name, probe().status_code))
                    except requests.RequestException as exc:
                        probes.append((name, type(exc).__name__))
                time.sleep(0.5)
        finally:
            stop.set()
            for attacker in attackers:
                attacker.join(10)
        # The attack ran: every socket connected, and nginx cut them and they came back.
        assert all(a.connections >= 1 for a in attackers)
        assert sum(a.connections for a in attackers) > ATTACKERS
        failed = [p for p in probes if p[1] not in (200, 204)]
        assert failed == [], f"{len(failed)} of {len(probes)} probes failed: {failed[:5]}"
        assert len(probes) >= 10
