"""What every provider package implements, and the mechanics they share.

A provider is a package `providers/<name>/` with the same parts: `handoff` (REST calls),
`callbacks` (its part of the state machine), `markup` (what it serves the provider),
`routes` (its Flask blueprint), `signature` (its webhook check), `sandbox` (its model in the
development sandbox) and `capabilities` (which policies it carries out). Its `__init__`
exports `PROVIDER`, a `ProviderSpec`; `providers/__init__.py` lists them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast
from urllib.parse import urlencode

import requests

from providers.accounts import (
    DEFAULT,
    Account,
    AccountSpec,
    CredentialsUnavailable,
    UnknownAccount,
    known,
    resolve,
)
from shared.model import State, Transfer

if TYPE_CHECKING:
    from shared.config import Settings
    from workers.runtime import Runtime

T = TypeVar("T")
A = TypeVar("A", bound=Account)


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


def sort_http_failure(provider: str, status: int, message: str, *,
                      code: int | None = None) -> ProviderError:
    """The error for a provider's HTTP refusal: 5xx and 429 are worth retrying, the rest
    (4xx: bad request, bad credentials, a call that no longer exists) are not."""
    cls = TransientProviderError if status >= 500 or status == 429 else PermanentProviderError
    return cls(f"{provider} {status}{f' {code}' if code is not None else ''}: {message}",
               status=status, code=code)


def unreachable(provider: str, exc: requests.RequestException, *, read_only: bool = False
                ) -> TransientProviderError:
    """No answer came back: transient. Unless the connection was never made (a connect
    timeout) or the request only read, the provider may have acted on it."""
    return TransientProviderError(
        f"{provider} unreachable: {type(exc).__name__}",
        outcome_unknown=not read_only and not isinstance(exc, requests.ConnectTimeout))


# The connection failures every provider's REST call sorts as transient.
NETWORK_ERRORS = (requests.ConnectionError, requests.Timeout)


def callback_url(settings: Settings, path: str, transfer_id: str, attempt: str | int | None = None,
                 extra: Mapping[str, str] | None = None, account: str | None = None) -> str:
    """One of our callback URLs: the transfer it is about, past the first destination which
    destination's leg (so that callbacks of a leg left behind can be told apart), and the
    transfer's provider account unless it is the default (its name, never its secret: it
    picks the secret the callback's signature is checked with)."""
    query = {"transfer_id": transfer_id}
    if attempt is not None and str(attempt) not in ("", "0"):
        query["attempt"] = str(attempt)
    if account and account != DEFAULT:
        query["account"] = account
    query.update(extra or {})
    return settings.public_url(path) + "?" + urlencode(query)


def record_of(raw: Transfer | Mapping[str, str]) -> Transfer:
    """A record from what a webhook route holds: the raw hash it read itself (Twilio's
    routes) or a signed context of the record's fields (Plivo's URLs), both in the record's
    string form. The worker's side gets its records from the store, typed."""
    return raw if isinstance(raw, Transfer) else Transfer.from_hash(raw)


def dial_attempted(transfer: Transfer, attempt: str | int) -> bool:
    """The look-before-dial marker: a dial of `attempt` may already have been placed (by a
    worker that died before recording it), so look for the leg before dialing again."""
    return transfer.dial_attempted == str(attempt)


def group_legs(transfer: Transfer, attempt: str) -> list[str]:
    """The leg ids of the ring group of `attempt` placed so far (see `place_group`)."""
    raw = json.loads(transfer.extra.get("group_legs") or "{}")
    return [str(c) for c in raw.get("legs", [])] if raw.get("attempt") == attempt else []


def place_group(rt: Runtime, transfer: Transfer, attempt: str, members: list[str], *,
                provider: str, pre_bridge: tuple[State, ...],
                place: Callable[[int, str], str]) -> None:
    """A ring group: one leg per member, all at once (`place(j, member)` gives the leg's
    id). Each id is recorded and indexed as it comes, so a retry places only the members
    not placed yet; then the move to dialing."""
    tid = transfer.transfer_id
    placed = group_legs(transfer, attempt)
    for j, member in enumerate(members[len(placed):], start=len(placed)):
        placed.append(place(j, member))
        rt.store.index_call(provider, placed[-1], tid)
        rt.store.set_fields(tid, group_legs=json.dumps({"attempt": attempt, "legs": placed}))
    what = "dialing the human agents" if attempt == "0" else \
        f"dialing destination {int(attempt) + 1}"
    rt.store.transition(tid, State.DIALING, f"{what} (a group of {len(members)}, rung "
                        "at once)", from_states=(State.REQUESTED,) if attempt == "0"
                        else pre_bridge, fields={"placed": attempt})


def place_leg(rt: Runtime, transfer: Transfer, attempt: str, *, provider: str,
              pre_bridge: tuple[State, ...], note: str,
              dial: Callable[[], Mapping[str, str]],
              find: Callable[[], str | None] | None = None,
              mark: Mapping[str, str] | None = None) -> None:
    """The mechanics every provider's dial of one human leg shares. Look before dialing
    again: where the marker says a dial of `attempt` may be out (a worker died before
    recording it), `find` gives its leg id ("" when known to be out but without an id;
    None when not found) and nothing is dialed. Else mark, `dial` (the record fields it
    learnt, e.g. the leg's `agent_call_sid`), record the leg and the move to dialing. A
    refusal the provider answered clears the marker (nothing was placed); an unknown
    outcome keeps it, for the retry to look."""
    tid = transfer.transfer_id
    from_states = (State.REQUESTED,) if attempt == "0" else pre_bridge
    if find is not None and dial_attempted(transfer, attempt):
        existing = find()
        if existing is not None:
            leg = {"agent_call_sid": existing} if existing else {}
            _record_leg(rt, provider, tid, leg)
            rt.store.transition(tid, State.DIALING, f"{note} (found the leg of an interrupted "
                                "attempt)", from_states=from_states,
                                fields={**leg, "placed": attempt})
            return
    rt.store.set_fields(tid, dial_attempted=attempt, **(mark or {}))
    try:
        fields = dial()
    except (TransientProviderError, PermanentProviderError) as exc:
        if not exc.outcome_unknown:  # the provider answered: nothing was placed
            rt.store.set_fields(tid, dial_attempted="")
        raise
    _record_leg(rt, provider, tid, fields)
    rt.store.transition(tid, State.DIALING, note, from_states=from_states,
                        fields={**fields, "placed": attempt})


def next_to_place(rt: Runtime, transfer_id: str, task_id: str,
                  pre_bridge: tuple[State, ...]) -> tuple[Transfer, str, str] | None:
    """After a move to the next destination: the record, attempt and number whose leg this
    task is to place, or None when it is placed already, the transfer is past dialing, or
    another task (a duplicate callback's, running at the same time) has claimed it."""
    current = rt.store.get_record(transfer_id)
    if current is None or current.state not in pre_bridge or not current.destination:
        return None
    attempt = str(current.attempt)
    if current.placed == attempt or not rt.store.claim_for(
            f"place:{transfer_id}:{attempt}", task_id):
        return None
    return current, attempt, current.destination


def claim_bridge(rt: Runtime, transfer_id: str, note: str, task_id: str,
                 pre_bridge: tuple[State, ...]) -> bool:
    """Move the transfer to bridging for this task, or find it moved by this very task (a
    retry, before the customer was moved): only the task that started the bridge may
    finish it."""
    moved = rt.store.transition(transfer_id, State.BRIDGING, note, from_states=pre_bridge,
                                fields={"bridge_task": task_id})
    if moved.ok:
        return True
    current = rt.store.get_record(transfer_id)
    return (current is not None and current.state is State.BRIDGING
            and current.extra.get("bridge_task") == task_id
            and not current.extra.get("customer_moved"))


def account_for(settings: Settings, provider: str, transfer: Transfer, kind: type[A],
                hint: str) -> A:
    """The credentials of the transfer's account (of `provider`, as `kind`);
    ProviderNotConfigured when it has none (`hint`: the default account's variables); a
    broken credential source is transient (the operator's fix, then a retry, places it)."""
    try:
        account = resolve(settings, provider, transfer.account)
    except UnknownAccount as exc:
        raise ProviderNotConfigured(f"{exc} ({hint} for the default)") from None
    except CredentialsUnavailable as exc:
        raise TransientProviderError(f"{provider} credentials unavailable: {exc}") from None
    assert isinstance(account, kind)
    return account


def _record_leg(rt: Runtime, provider: str, transfer_id: str, fields: Mapping[str, str]
                ) -> None:
    """A leg whose id is known is indexed: its own callbacks find the transfer by it."""
    if fields.get("agent_call_sid"):
        rt.store.index_call(provider, fields["agent_call_sid"], transfer_id)


_clients = threading.local()


def cached_client(key: tuple[str, ...], build: Callable[[], T]) -> T:
    """One API client per credentials and host, per thread: its HTTP connection is kept
    alive from one transfer to the next instead of being opened for each."""
    cache: dict[tuple[str, ...], Any] = getattr(_clients, "cache", None) or {}
    _clients.cache = cache
    if key not in cache:
        cache[key] = build()
    return cast(T, cache[key])


def screening_key(transfer: Transfer) -> str:
    """The key a screened human presses to take the call (the template's, default 1)."""
    return transfer.screening_key or "1"


def current_destination(transfer: Transfer) -> str:
    """The destination of the record's current attempt: a number, a SIP address, or a ring
    group's members joined by "," ("" when there is none)."""
    return transfer.destination


def extension(transfer: Transfer, attempt: str | int | None = None) -> str:
    """The digits destination `attempt` (default: the record's current one) wants once it
    answers ("" for none)."""
    return transfer.extension(None if attempt is None else int(attempt or 0))


# The summary in X-Transfer-Summary, at most (a provider may cut it further to fit).
MAX_SUMMARY_HEADER = 200


def sip_headers(transfer: Transfer) -> list[tuple[str, str]]:
    """The headers a SIP destination gets: the transfer's context (X-Transfer-Id, X-Lead-Id,
    X-Transfer-Summary: what Vapi, Retell and Synthflow send) and the template's static
    ones. Values are printable text without CR/LF (the summary's control characters were
    replaced when the request was read; a lead id holds none)."""
    headers = [("X-Transfer-Id", transfer.transfer_id)]
    if transfer.lead_id:
        headers.append(("X-Lead-Id", transfer.lead_id))
    summary = " ".join(transfer.summary.split())
    if summary:
        headers.append(("X-Transfer-Summary", summary[:MAX_SUMMARY_HEADER]))
    headers.extend(transfer.sip_headers)
    return [(n, v) for n, v in headers if v.isprintable()]


def key_prompt(transfer: Transfer) -> str:
    key = screening_key(transfer)
    name = {"*": "the star key", "#": "the pound key"}.get(key, key)
    return f"Press {name} to take the call."


class Provider(Protocol):
    """One provider's handoff.

    Methods receive the typed transfer record (`shared.model.Transfer`, as the task read
    it from the store) and raise
    TransientProviderError for what a retry may fix; the tasks own retries and outcomes.
    """

    name: str

    def start(self, rt: Runtime, transfer: Transfer) -> None:
        """Place the handoff with the provider's REST API."""

    def handle_callback(self, rt: Runtime, transfer: Transfer, kind: str,
                        params: Mapping[str, str], task_id: str) -> None:
        """Advance the transfer from one of our own leg/conference callbacks."""

    def customer_call_ended(self, rt: Runtime, transfer: Transfer,
                            params: Mapping[str, str]) -> bool:
        """The customer's call ended while the transfer was not final: settle the transfer
        and tell whether the call ended as a transfer (`call.ended.transferred`). `params`
        is what the provider's status callback said (normalised strings)."""

    def reconcile(self, rt: Runtime, transfer: Transfer) -> bool:
        """The deadline has come with no outcome. Ask the provider what happened; settle the
        transfer or push its deadline back and return True, or return False to have it fail
        with `timeout`."""

    def cleanup(self, rt: Runtime, transfer: Transfer) -> None:
        """Best effort: release provider resources of a transfer that failed or expired
        (e.g. hang up a human leg still ringing)."""


@dataclass(frozen=True)
class Supported:
    """The provider carries the policy out; `how` says how, in a few words."""

    how: str = ""


@dataclass(frozen=True)
class Refused:
    """The provider cannot carry the policy out; `why` is the error's explanation."""

    why: str


Capability = Supported | Refused


@dataclass(frozen=True)
class ProviderSpec:
    """Everything the rest of the service needs to know of one provider.

    Module paths are strings, imported only by who needs them: the web app imports
    `routes`, the development sandbox imports `sandbox`; the workers import neither."""

    name: str
    handoff: Provider
    # Module holding `bp`, the provider's Flask blueprint (mounted at /<name>).
    routes: str
    # Module holding the sandbox model (`MODEL`, see sandbox.core).
    sandbox: str
    # Policy name (the request field, e.g. "screening") -> Supported or Refused.
    capabilities: Mapping[str, Capability]
    # Its accounts: credential model, default account's variables, settings (account.py).
    account: AccountSpec
    # The callback kinds its routes hand to the worker (`shared.model.CallbackKind`, or a
    # str enum of the provider's own); any other is logged as an error.
    callback_kinds: frozenset[str] = frozenset()
    # Record fields of a destination's leg, cleared when the transfer moves on to the next.
    leg_fields: tuple[str, ...] = ()
    # Called once at worker start (SDKs' lazy first-use costs).
    warm_up: Callable[[], None] | None = None
    # Conformance cases (tests/conformance) this provider's flow cannot show, case -> why.
    conformance_excludes: Mapping[str, str] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def configured(self, settings: Settings) -> bool:
        """Whether the default account has credentials."""
        return known(settings, self.name, DEFAULT)

    def refusal(self, policy: str) -> str | None:
        """Why this provider cannot carry `policy` out ("" when it has no more to say), or
        None when it can. A policy it does not declare is refused: a new policy is
        unavailable until each provider says how it carries it out."""
        capability = self.capabilities.get(policy)
        if capability is None:
            return ""
        return capability.why if isinstance(capability, Refused) else None
