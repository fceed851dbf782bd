"""The metrics' last flush at interpreter exit logs nothing: by then a log handler's stream
may be closed and Python would print '--- Logging error ---'."""

from __future__ import annotations

from tests.helpers import stderr_at_exit_with_closed_log_stream


def test_the_flush_at_exit_logs_nothing_when_redis_is_gone() -> None:
    stderr = stderr_at_exit_with_closed_log_stream("""
import socket
import redis
from shared.metrics import Metrics
with socket.socket() as s:  # a port nothing listens on: the write fails at once
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
Metrics(redis.Redis(port=port)).inc("warm_transfer_requests", provider="twilio")
""")
    assert "Logging error" not in stderr
    assert "metrics not recorded" not in stderr
