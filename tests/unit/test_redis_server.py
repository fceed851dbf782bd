"""The start sequence shared by RedisServer and SentinelServer: a server that never answers
PING is stopped, not left running, and the error says which one."""

from __future__ import annotations

import subprocess
import sys

import pytest
import redis

import sandbox.redis_server as rs


def test_a_silent_server_is_stopped_and_named(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[subprocess.Popen[bytes]] = []
    real_popen = subprocess.Popen

    def recording_popen(*args: object, **kwargs: object) -> subprocess.Popen[bytes]:
        proc: subprocess.Popen[bytes] = real_popen(*args, **kwargs)  # type: ignore[call-overload]
        started.append(proc)
        return proc

    monkeypatch.setattr(subprocess, "Popen", recording_popen)
    # A process that lives but listens nowhere: nothing answers on the port.
    silent = [sys.executable, "-c", "import time; time.sleep(60)"]
    with pytest.raises(RuntimeError, match="redis sentinel did not start on port"):
        rs.spawn_until_ping(silent, rs.free_port(), "redis sentinel", timeout=0.3)
    assert len(started) == 1
    assert started[0].poll() is not None


def test_a_server_that_exits_raises() -> None:
    with pytest.raises(RuntimeError, match="redis-server did not start"):
        rs.spawn_until_ping([sys.executable, "-c", "pass"], rs.free_port(), "redis-server",
                            timeout=10)


def test_a_real_server_answers_and_stops() -> None:
    with rs.RedisServer() as server:
        assert server.proc is not None and server.proc.poll() is None
        assert redis.Redis.from_url(server.url).ping()
    assert server.proc.poll() is not None
