"""The kombu Redis-transport workarounds (workers/broker_fix.py), path by path."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import redis
from kombu.transport import redis as kombu_redis

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
