"""The small interface every provider module implements."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

if TYPE_CHECKING:
    from workers.runtime import Runtime

T = TypeVar("T")


class ProviderError(Exception):
    """A provider API call failed."""

    def __init__(self, message: str, *, status: int | None = None, code: int | None = None,
                 outcome_unknown: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        # No answer came back (timeout, reset): the provider may have acted on the request.
        self.outcome_unknown = outcome_unknown


class TransientProviderError(ProviderError):
    """Worth retrying: 5xx, 429, timeouts, connection errors."""


class PermanentProviderError(ProviderError):
    """Retrying cannot help: 4xx, bad credentials, a call that no longer exists."""


class ProviderNotConfigured(PermanentProviderError):
    pass


_clients = threading.local()


def cached_client(key: tuple[str, ...], build: Callable[[], T]) -> T:
    """One API client per credentials and host, per thread: its HTTP connection is kept
    alive from one transfer to the next instead of being opened for each."""
    cache: dict[tuple[str, ...], Any] = getattr(_clients, "cache", None) or {}
    _clients.cache = cache
    if key not in cache:
        cache[key] = build()
    return cast(T, cache[key])


def screening_key(transfer: Mapping[str, str]) -> str:
    """The key a screened human presses to take the call (the template's, default 1)."""
    return transfer.get("screening_key") or "1"


def key_prompt(transfer: Mapping[str, str]) -> str:
    key = screening_key(transfer)
    name = {"*": "the star key", "#": "the pound key"}.get(key, key)
    return f"Press {name} to take the call."


class Provider(Protocol):
    """One provider's handoff.

    Methods receive the transfer record (a dict of strings, see shared.store) and raise
    TransientProviderError for what a retry may fix; the tasks own retries and outcomes.
    """

    name: str

    def start(self, rt: Runtime, transfer: Mapping[str, str]) -> None:
        """Place the handoff with the provider's REST API."""

    def handle_callback(self, rt: Runtime, transfer: Mapping[str, str], kind: str,
                        params: Mapping[str, str], task_id: str) -> None:
        """Advance the transfer from one of our own leg/conference callbacks."""

    def customer_call_ended(self, rt: Runtime, transfer: Mapping[str, str],
                            params: Mapping[str, str]) -> bool:
        """The customer's call ended while the transfer was not final: settle the transfer
        and tell whether the call ended as a transfer (`call.ended.transferred`). `params`
        is what the provider's status callback said (normalised strings)."""

    def reconcile(self, rt: Runtime, transfer: Mapping[str, str]) -> bool:
        """The deadline has come with no outcome. Ask the provider what happened; settle the
        transfer or push its deadline back and return True, or return False to have it fail
        with `timeout`."""

    def cleanup(self, rt: Runtime, transfer: Mapping[str, str]) -> None:
        """Best effort: release provider resources of a transfer that failed or expired
        (e.g. hang up a human leg still ringing)."""
