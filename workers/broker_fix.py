"""A targeted workaround for a kombu Redis-transport crash on reconnection, applied when the
worker starts (`workers.celery_app` calls `apply()`).

The crash: `Unrecoverable error: AttributeError: 'NoneType' object has no attribute
'hostname'` in `Channel._connparams`, reached from `QoS.restore_unacked_once` while a channel
closes. Root cause (kombu 5.7, kombu/transport/redis.py and transport/virtual/base.py): when
the broker connection is lost, Celery's consumer calls `Connection.collect()` and then
`close()`. The Redis transport has no `_collect`, so `collect()` closes the channels and then
`_do_close_transport()` sets `transport.client = None`; `close_connection` stops at the first
channel whose close raises (Redis is down), so other channels are closed later, by the next
`close()` or by their QoS finalizer. Closing a channel first drops its pool
(`_disconnect_pools`), then `restore_unacked_once` asks for a client, which builds a new pool
from `self.connection.client`: now None (or `channel.connection` itself is None after
`close_channel`). AttributeError is not one of the transport's connection errors, so the
consumer does not retry: the worker process exits.

Same family upstream: celery/kombu#970 and #582 (`conninfo.hostname` on a closed
connection), celery/celery#10205 and #10302 (a Redis worker that does not recover after a
connection reset; still reported against kombu 5.6). No released kombu fixes this path.

A second path ends the worker the same way: a BRPOP read that fails with a connection
error calls `self.client.connection.disconnect()` on a client whose connection redis-py has
already released (None): `'NoneType' object has no attribute 'disconnect'` (seen in the
fault suite's Redis restart).

The fix: a channel whose connection is gone does not try to restore its unacknowledged
messages. Nothing is lost: they are still in the broker's `unacked` hash, and the
visibility-timeout sweep (`restore_visible`, run by every worker) puts them back on their
queues (`broker_visibility_timeout`). A connection-level error is raised instead of the
AttributeError wherever a pool is built from a closed connection, so kombu's own
reconnection handles it.
"""

from __future__ import annotations

import atexit
import logging
from typing import Any

log = logging.getLogger(__name__)

_APPLIED = False
_exiting = False


def _set_exiting() -> None:
    global _exiting
    _exiting = True


def _multiprocessing_exiting() -> bool:
    # multiprocessing's exit hook sets this before it runs the finalizers (kombu's among
    # them): our own atexit flag is set first only when our hook was registered after its,
    # which depends on the import order (seen in CI: the log line still came at exit).
    import multiprocessing.util

    return bool(multiprocessing.util.is_exiting())


def _connection_gone(channel: Any) -> bool:
    transport = getattr(channel, "connection", None)
    return transport is None or getattr(transport, "client", None) is None


def apply() -> bool:
    """Patch kombu's Redis transport once; returns True when the patch is in place."""
    global _APPLIED
    if _APPLIED:
        return True
    try:
        from kombu.transport import redis as kombu_redis
    except ImportError:  # pragma: no cover - redis extra not installed: nothing to patch
        return False

    original_restore = kombu_redis.QoS.restore_unacked_once
    original_connparams = kombu_redis.Channel._connparams

    def restore_unacked_once(self: Any, stderr: Any = None) -> Any:
        if _connection_gone(self.channel):
            # Mark this QoS as done (as restore_unacked_once does) and leave the messages
            # to the visibility-timeout sweep.
            self._on_collect.cancel()
            self._flush()  # drops the acknowledged ones (in memory only)
            pending = 0 if getattr(self._delivered, "restored", False) else len(self._delivered)
            self._delivered.clear()
            self._delivered.restored = True
            # kombu's exit finalizer calls this after logging's streams may be closed (a
            # test runner's capture, a supervisor's pipe): say nothing then.
            if pending and not (_exiting or _multiprocessing_exiting()):
                log.warning("broker connection already closed; %d unacknowledged message(s) "
                            "come back after the visibility timeout", pending)
            return None
        return original_restore(self, stderr)  # type: ignore[no-untyped-call]

    def _connparams(self: Any, asynchronous: bool = False) -> Any:
        if _connection_gone(self):
            import redis

            raise redis.ConnectionError("kombu channel used after its connection closed")
        return original_connparams(self, asynchronous=asynchronous)  # type: ignore[no-untyped-call]

    original_brpop_read = kombu_redis.Channel._brpop_read

    def _brpop_read(self: Any, **options: Any) -> Any:
        # Second path, same cause: the BRPOP read fails with a connection error and kombu
        # calls `self.client.connection.disconnect()`, but the client's connection was
        # already released (redis-py's close() sets it to None), so an AttributeError
        # replaces the connection error and ends the worker. Give kombu back the
        # connection error it meant to raise.
        try:
            return original_brpop_read(self, **options)  # type: ignore[no-untyped-call]
        except AttributeError as exc:
            if getattr(self.client, "connection", None) is not None:
                raise
            import redis

            raise redis.ConnectionError("kombu BRPOP read on a released connection") from exc

    # Registered after kombu's import registered multiprocessing's exit hook, so it runs
    # first (atexit is last in, first out): the flag is set before QoS finalizers run.
    atexit.register(_set_exiting)
    kombu_redis.Channel._brpop_read = _brpop_read  # type: ignore[method-assign]
    kombu_redis.QoS.restore_unacked_once = restore_unacked_once  # type: ignore[method-assign]
    kombu_redis.Channel._connparams = _connparams  # type: ignore[method-assign]
    _APPLIED = True
    return True
