"""The kombu Redis-transport workarounds (workers/broker_fix.py), path by path."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from kombu.transport import redis as kombu_redis

from tests.helpers import stderr_at_exit_with_closed_log_stream
from workers import broker_fix


class _ReleasedClient:
    """A redis-py client whose connection was released (close() sets it to None) while a
    BRPOP was in flight: reading the reply fails with a connection error."""

    connection = None

    def parse_response(self, *_args: Any, **_kwargs: Any) -> Any:
        raise redis.ConnectionError("Connection closed by server.")


def test_a_brpop_read_on_a_released_connection_is_a_connection_error() -> None:
    assert broker_fix.apply()
    channel = SimpleNamespace(client=_ReleasedClient(), connection_errors=(redis.ConnectionError,),
                              _in_poll=object(), _flush_brpop_reauth=lambda: None)
    # Unpatched: AttributeError ('NoneType' object has no attribute 'disconnect'), which
    # Celery's consumer treats as unrecoverable; patched: the connection error kombu meant.
    with pytest.raises(redis.ConnectionError):
        kombu_redis.Channel._brpop_read(channel)
    assert channel._in_poll is None  # kombu's own cleanup still ran


def test_other_attribute_errors_are_not_hidden() -> None:
    assert broker_fix.apply()

    class Broken:
        connection = object()

        def parse_response(self, *_args: Any, **_kwargs: Any) -> Any:
            raise AttributeError("something else")

    channel = SimpleNamespace(client=Broken(), connection_errors=(redis.ConnectionError,),
                              _in_poll=None, _flush_brpop_reauth=lambda: None)
    with pytest.raises(AttributeError, match="something else"):
        kombu_redis.Channel._brpop_read(channel)


# A worker's QoS objects whose connection went are restored by kombu's exit finalizer
# (multiprocessing.util.Finalize, exitpriority=1), after a test runner or a supervisor may
# have closed the stream the log handler writes to.
def test_nothing_is_logged_at_interpreter_exit() -> None:
    stderr = stderr_at_exit_with_closed_log_stream("""
from types import SimpleNamespace
from workers import broker_fix
assert broker_fix.apply()
from kombu.transport import redis as kombu_redis
qos = kombu_redis.QoS(SimpleNamespace(connection=None, do_restore=True))
qos._delivered["tag-1"] = object()  # delivered, never acknowledged
""")
    assert "Logging error" not in stderr
    assert "broker connection already closed" not in stderr


def _gone_qos() -> Any:
    return kombu_redis.QoS(SimpleNamespace(connection=None, do_restore=True))


def test_unacknowledged_messages_on_a_closed_connection_are_reported(
        caplog: pytest.LogCaptureFixture) -> None:
    assert broker_fix.apply()
    qos = _gone_qos()
    qos._delivered["tag-1"] = object()
    with caplog.at_level(logging.WARNING, logger="workers.broker_fix"):
        qos.restore_unacked_once()
        qos.restore_unacked_once()  # once only, as kombu's own
    assert [r.getMessage() for r in caplog.records] == [
        "broker connection already closed; 1 unacknowledged message(s) come back after "
        "the visibility timeout"]
    assert not qos._delivered and qos._delivered.restored


def test_a_closed_connection_with_nothing_unacknowledged_says_nothing(
        caplog: pytest.LogCaptureFixture) -> None:
    assert broker_fix.apply()
    qos = _gone_qos()
    qos._delivered["tag-1"] = object()
    qos._dirty.add("tag-1")  # acknowledged since
    with caplog.at_level(logging.DEBUG, logger="workers.broker_fix"):
        qos.restore_unacked_once()
    assert caplog.records == []
    assert qos._delivered.restored


def test_nothing_is_logged_once_multiprocessing_runs_its_exit_finalizers(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    # Whichever exit hook was registered first: multiprocessing's marks the process as
    # exiting before it runs kombu's finalizer (the order seen in CI).
    import multiprocessing.util

    assert broker_fix.apply()
    monkeypatch.setattr(broker_fix, "_exiting", False)
    monkeypatch.setattr(multiprocessing.util, "_exiting", True)
    qos = _gone_qos()
    qos._delivered["tag-1"] = object()
    with caplog.at_level(logging.DEBUG, logger="workers.broker_fix"):
        qos.restore_unacked_once()
    assert caplog.records == [] and qos._delivered.restored
