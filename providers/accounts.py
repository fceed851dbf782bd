"""Provider accounts: whose credentials a transfer uses, resolved in one place.

A transfer names its provider account (the request's `provider_account`, beside `provider`;
"default" when absent). Each provider package declares its account model in
`providers/<name>/account.py` (`AccountSpec`): the credential fields, which of them are
secrets, the environment variables of its default account and its provider-wide settings.

The credentials of (provider, account) come from, first match wins:
1. CREDENTIALS_RESOLVER, `module:function`, called as `function(provider, account)` and
   returning a mapping of the account's fields, or None for an account it does not know;
2. CREDENTIALS_FILE, a JSON or YAML file (a mounted secret): `{provider: {account: {field:
   value}}}`;
3. the environment (e.g. TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN): the "default" account only.
What is resolved is kept CREDENTIALS_TTL seconds (an unknown account too), so that a rotated
secret takes effect without a restart. Secret fields are `SecretStr`: their repr, and so any
log line or error holding the model, shows `**********`.

A broken source (the file unreadable, not JSON/YAML or of the wrong shape, an invalid entry,
a resolver that raises or answers something else than a mapping or None) is the operator's
fault, not the request's: `CredentialsUnavailable` (service_unavailable for a request, 503
for a webhook), with one ERROR log line naming the source and the problem, never a value.
What was resolved before stays in use while the source is broken (the last good copy, kept
another TTL at each failed refresh, each logged): an outage of the file should not become an
outage of the calls. Only what was never resolved is refused.
"""

from __future__ import annotations

import importlib
import json
import re
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from shared.contracts import ErrorCode, RequestError
from shared.logs import get_logger

if TYPE_CHECKING:
    from shared.config import Settings

log = get_logger(__name__)

DEFAULT = "default"
# Account names: what a request may carry, a callback URL repeats and a metrics label shows.
NAME_FORMAT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

S = TypeVar("S", bound=BaseModel)


class UnknownAccount(LookupError):
    """No credentials for this (provider, account)."""


class CredentialsUnavailable(RequestError, OSError):
    """The credential source is broken (an operator's fault): the request is refused as
    service_unavailable (a RequestError: the client's and the worker's validation answer it
    so), a webhook 503 (an OSError: what the signature check answers 503); retry later."""

    def __init__(self, problem: str) -> None:
        # No detail: the caller (an LLM's tool result) is told nothing of our files.
        super().__init__(ErrorCode.SERVICE_UNAVAILABLE)
        self.problem = problem

    def __str__(self) -> str:
        return self.problem


class Account(BaseModel):
    """What every provider's account model has (subclassed in providers/<name>/account.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    name: str = DEFAULT
    # At most this many transfers of the account at once (0: ACCOUNT_MAX_CONCURRENT).
    max_concurrent: int = Field(default=0, ge=0)

    def secret(self, name: str) -> str:
        """The plain value of secret field `name` ("" when unset)."""
        value = getattr(self, name)
        return value.get_secret_value() if isinstance(value, SecretStr) else str(value or "")

    def secrets_in(self, current: str, *previous: str) -> tuple[str, ...]:
        """The set values of these secret fields, in order (a rotation's current, previous),
        or none at all when the current one is unset: a previous secret alone opens nothing."""
        if not self.secret(current):
            return ()
        return tuple(v for v in (self.secret(n) for n in (current, *previous)) if v)


@dataclass(frozen=True)
class AccountSpec:
    """A provider package's declaration of its accounts and settings."""

    # The credential model (an Account); its SecretStr fields are the secrets.
    model: type[Account]
    # The default account's environment variables: prefix + field name in upper case
    # (TWILIO_ + auth_token -> TWILIO_AUTH_TOKEN), for the fields below.
    env_prefix: str
    env_fields: tuple[str, ...]
    # The fields without which the account cannot place a call.
    required: tuple[str, ...]
    # The provider's non-secret, account-independent settings (same prefix), or None.
    settings_model: type[BaseModel] | None = None

    def env_names(self) -> tuple[str, ...]:
        return tuple(f"{self.env_prefix}{f.upper()}" for f in self.env_fields)


def _spec(provider: str) -> AccountSpec:
    import providers  # here: the registry imports the store, which imports shared.config

    spec = providers.get(provider)
    if spec is None or spec.account is None:
        raise UnknownAccount(f"{provider!r} is not a provider")
    return spec.account


@dataclass
class _Cache:
    lock: threading.Lock = field(default_factory=threading.Lock)
    accounts: dict[tuple[str, str], tuple[float, Account | None]] = field(default_factory=dict)
    settings: dict[str, BaseModel] = field(default_factory=dict)
    file: tuple[float, dict[str, Any]] | None = None


# One cache per Settings object (the tests build many; each process has one).
_caches: dict[int, _Cache] = {}
_caches_lock = threading.Lock()


def _cache(settings: Settings) -> _Cache:
    key = id(settings)
    cache = _caches.get(key)
    if cache is None:
        with _caches_lock:
            cache = _caches.get(key)
            if cache is None:
                cache = _caches[key] = _Cache()
                weakref.finalize(settings, _caches.pop, key, None)
    return cache


def provider_settings(settings: Settings, provider: str, model: type[S]) -> S:
    """Provider `provider`'s own settings (e.g. PLIVO_RESUME_URL), read once per Settings."""
    cache = _cache(settings)
    found = cache.settings.get(provider)
    if not isinstance(found, model):
        spec = _spec(provider)
        section = settings.section(spec.env_prefix)
        found = model.model_validate({k: v for k, v in section.items()
                                      if k in model.model_fields})
        cache.settings[provider] = found
    return found


def _from_env(settings: Settings, spec: AccountSpec) -> dict[str, Any] | None:
    section = settings.section(spec.env_prefix)
    values: dict[str, Any] = {}
    for name in spec.env_fields:
        value = section.get(name)
        if value not in (None, ""):
            values[name] = value
    return values if all(values.get(f) for f in spec.required) else None


def _parse_file(path: Path) -> dict[str, Any]:
    """The file's {provider: {account: {...}}}, or CredentialsUnavailable saying what is wrong
    (never the content: a parser's message may quote it)."""
    where = f"CREDENTIALS_FILE {str(path)!r}"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CredentialsUnavailable(f"{where}: unreadable ({exc.strerror or type(exc).__name__})"
                                     ) from None
    except UnicodeDecodeError:
        raise CredentialsUnavailable(f"{where}: not UTF-8 text") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise CredentialsUnavailable(f"{where}: invalid YAML{at}") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CredentialsUnavailable(
                f"{where}: invalid JSON at line {exc.lineno}, column {exc.colno}") from None
    if not isinstance(data, dict):
        raise CredentialsUnavailable(
            f"{where}: must hold an object {{provider: {{account: {{field: value}}}}}}")
    for provider, section in data.items():
        if not isinstance(section, dict):
            raise CredentialsUnavailable(f"{where}: {provider!r} must map accounts to fields")
        for name, entry in section.items():
            if not isinstance(entry, dict):
                raise CredentialsUnavailable(
                    f"{where}: {provider} account {name!r} must map fields to values")
    return data


def _read_file(settings: Settings, cache: _Cache, now: float) -> dict[str, Any]:
    if cache.file is not None and cache.file[0] > now:
        return cache.file[1]
    try:
        data = _parse_file(Path(settings.credentials_file))
    except CredentialsUnavailable as exc:
        if cache.file is None:
            raise
        # The last good copy, another TTL: each failed refresh logs once.
        log.error("credentials source broken; keeping the last good copy",
                  extra={"problem": exc.problem})
        cache.file = (now + settings.credentials_ttl, cache.file[1])
        return cache.file[1]
    cache.file = (now + settings.credentials_ttl, data)
    return data


def _from_resolver(settings: Settings, provider: str, account: str
                   ) -> Mapping[str, Any] | None:
    where = f"CREDENTIALS_RESOLVER {settings.credentials_resolver!r}"
    module, _, name = settings.credentials_resolver.partition(":")
    try:
        fn: Callable[[str, str], Mapping[str, Any] | None] = getattr(
            importlib.import_module(module), name)
        values = fn(provider, account)
    except Exception as exc:  # noqa: BLE001 - whatever a resolver raises, the source is down
        # The type only: a resolver's message may hold a URL with a token, or a value.
        raise CredentialsUnavailable(f"{where} failed for {provider} account {account!r}: "
                                     f"{type(exc).__name__}") from None
    if values is not None and not isinstance(values, Mapping):
        raise CredentialsUnavailable(f"{where} answered {type(values).__name__} for {provider} "
                                     f"account {account!r}, not a mapping or None")
    return values


def _lookup(settings: Settings, provider: str, account: str, cache: _Cache, now: float
            ) -> Account | None:
    spec = _spec(provider)
    values: Mapping[str, Any] | None = None
    source = ""
    if settings.credentials_resolver:
        values, source = _from_resolver(settings, provider, account), "CREDENTIALS_RESOLVER"
    if values is None and settings.credentials_file:
        entry = (_read_file(settings, cache, now).get(provider) or {}).get(account)
        values, source = entry, "CREDENTIALS_FILE"
    if values is None and account == DEFAULT:
        values, source = _from_env(settings, spec), "the environment"
    if values is None:
        return None
    try:
        return spec.model.model_validate({**values, "name": account})
    except ValidationError as exc:
        # The message names the fields, never their values (hide_input_in_errors).
        raise CredentialsUnavailable(f"{provider} account {account!r} from {source}: "
                         f"{exc.error_count()} invalid field(s): "
                         f"{', '.join(str(e['loc'][0]) for e in exc.errors())}") from None


def find(settings: Settings, provider: str, account: str | None = None) -> Account | None:
    """The credentials of `account` (default: "default") of `provider`, None if unknown;
    CredentialsUnavailable when the source is broken and the account was never resolved."""
    name = account or DEFAULT
    if not NAME_FORMAT.match(name):
        return None
    cache = _cache(settings)
    now = time.monotonic()
    hit = cache.accounts.get((provider, name))
    if hit is not None and hit[0] > now:
        return hit[1]
    with cache.lock:
        try:
            found = _lookup(settings, provider, name, cache, now)
        except CredentialsUnavailable as exc:
            if hit is None:
                log.error("credentials unavailable; refused",
                          extra={"problem": exc.problem, "provider": provider, "account": name})
                raise
            log.error("credentials source broken; keeping the last good copy",
                      extra={"problem": exc.problem, "provider": provider, "account": name})
            found = hit[1]  # an account known unknown stays so
        cache.accounts[(provider, name)] = (now + settings.credentials_ttl, found)
    return found


def resolve(settings: Settings, provider: str, account: str | None = None) -> Account:
    """Like `find`, but UnknownAccount when there are no credentials."""
    found = find(settings, provider, account)
    if found is None:
        raise UnknownAccount(f"no credentials for {provider} account {account or DEFAULT!r}")
    return found


def known(settings: Settings, provider: str, account: str | None) -> bool:
    """Whether a request may name this account (its credentials resolve);
    CredentialsUnavailable (a RequestError: service_unavailable) when the source is broken."""
    return find(settings, provider, account) is not None


def max_concurrent(settings: Settings, provider: str, account: str | None) -> int:
    """The cap on concurrent transfers of the account (0: none)."""
    found = find(settings, provider, account)
    own = found.max_concurrent if found is not None else 0
    return own or settings.account_max_concurrent


def setting_names() -> frozenset[str]:
    """Every environment variable the provider packages read (their default accounts' and
    their settings'), upper case."""
    import providers

    names: set[str] = set()
    for spec in providers.specs():
        names.update(spec.account.env_names())
        if spec.account.settings_model is not None:
            names.update(f"{spec.account.env_prefix}{f.upper()}"
                         for f in spec.account.settings_model.model_fields)
    return frozenset(names)


def forget(settings: Settings) -> None:
    """Drop what was resolved (tests; an operator's reload)."""
    with _caches_lock:
        _caches.pop(id(settings), None)
