"""Settings, read once from the environment into one typed object."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import Field, PrivateAttr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SENTINEL_SCHEME = "redis+sentinel"


@dataclass(frozen=True)
class SentinelTarget:
    """A Redis reached through Sentinel: `redis+sentinel://[:password@]host:port[,host:port...]
    /master_name[/db]` (the password is the master's; the sentinels are asked without one)."""

    hosts: tuple[tuple[str, int], ...]
    master: str
    db: int
    password: str | None


def parse_sentinel_url(url: str) -> SentinelTarget | None:
    """The Sentinel target of a `redis+sentinel://` URL; None for any other URL."""
    if not url.startswith(f"{SENTINEL_SCHEME}://"):
        return None
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    password = unquote(netloc[0].split(":", 1)[-1]) if len(netloc) == 2 else None
    hosts = []
    for item in netloc[-1].split(","):
        host, _, port = item.rpartition(":") if ":" in item else (item, "", "26379")
        hosts.append((host or "localhost", int(port or 26379)))
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise ValueError(f"{SENTINEL_SCHEME} URL needs the master's name: "
                         f"{SENTINEL_SCHEME}://host:26379/mymaster/0")
    return SentinelTarget(tuple(hosts), path[0], int(path[1]) if len(path) > 1 else 0,
                          password or None)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="allow")

    # redis://, rediss://, unix://, or redis+sentinel://host:26379[,host:26379]/master/db.
    redis_url: str = "redis://localhost:6379/0"
    # REDIS_URL names one node of a Redis Cluster (the store only: Celery cannot use a
    # Cluster as its broker, so CELERY_BROKER_URL must then name another broker).
    redis_cluster: bool = False
    # Empty means "same as REDIS_URL" (a redis+sentinel URL becomes Celery's sentinel://).
    celery_broker_url: str = ""
    public_base_url: str = "http://localhost:8000"

    transfer_ring_timeout: int = Field(default=30, ge=5, le=120)
    transfer_flag_ttl: int = Field(default=300, ge=30, le=3600)
    # How long transfer records, timelines and indexes are kept after the last write.
    transfer_record_ttl: int = Field(default=86_400, ge=300)
    # Extra time past the ring timeout before an unanswered transfer is failed as `timeout`.
    transfer_deadline_margin: int = Field(default=30, ge=1)

    # Where outcome events go: the platform's Celery task and queue.
    agent_event_task: str = "agent.transfer_event"
    agent_event_queue: str = "agent_events"

    # Toll-fraud guard: where transfers may go. "" = the outbound number's own country;
    # "*" = anywhere; or "US,CA,+4420" (ISO country codes and "+" prefixes).
    transfer_allowed_destinations: str = ""
    # The home country for the "" policy (ISO code, e.g. "US"); empty: the country of the
    # directory number named by the request's lead.outbound_number_id.
    transfer_home_country: str = ""
    # The SIP hosts a destination may name ("pbx.example.com,*.example.net"); empty: no SIP
    # destination is allowed.
    transfer_allowed_sip_domains: str = ""

    # Bearer token for POST /transfers; the endpoint refuses everything while it is empty.
    api_token: str = ""
    # Bearer token for /metrics and /readyz's per-check detail. Empty: both open, for an app
    # only a private network reaches (compose's proxy does not pass /metrics).
    metrics_token: str = ""

    # The operations console (/console): the operator's token; the console is off (404)
    # while it is empty. Sessions are signed with CONSOLE_SESSION_SECRET, or with a key
    # derived from the token when that is empty (changing the token then ends every session).
    console_token: str = ""
    console_session_secret: str = ""
    console_session_ttl: int = Field(default=8 * 3600, ge=60)

    # Redis broker: a message whose worker died is delivered again after this long. Every
    # task and retry delay here is far shorter, so nothing runs twice for waiting alone.
    broker_visibility_timeout: int = Field(default=60, ge=2)

    provider_http_timeout: float = Field(default=5.0, gt=0)
    # Retry delays (seconds) for transient provider API errors, one per retry.
    provider_retry_delays: list[float] = Field(default_factory=lambda: [0.5, 1.0, 2.0])

    # Signs the context our callback URLs carry (whom to dial, hold audio...), so that the
    # XML routes can answer from the URL when Redis is down. Empty: derived from the default
    # account's secret by the provider that signs (see its package).
    webhook_hmac_key: str = ""

    # Provider accounts (providers/accounts.py). Each provider package declares its own
    # settings and default account's variables (providers/<name>/account.py: TWILIO_*,
    # PLIVO_*...), read by `section` below. Named accounts come from CREDENTIALS_FILE (a
    # mounted JSON or YAML secret) or CREDENTIALS_RESOLVER (`module:function`, e.g. a secret
    # manager's client); resolved credentials are kept this many seconds.
    credentials_file: str = ""
    credentials_resolver: str = ""
    credentials_ttl: float = Field(default=30.0, ge=0)
    # Concurrent transfers per provider account (0: no cap); an account's `max_concurrent`
    # (in CREDENTIALS_FILE or from the resolver) wins.
    account_max_concurrent: int = Field(default=0, ge=0)

    log_level: str = "INFO"

    _environ: dict[str, str] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _defaults(self) -> Settings:
        if not self.celery_broker_url:
            if self.redis_cluster:
                raise ValueError("REDIS_CLUSTER is set: Celery cannot use a Redis Cluster as "
                                 "its broker; set CELERY_BROKER_URL (RabbitMQ, or a single "
                                 "or Sentinel-managed Redis)")
            self.celery_broker_url = self.redis_url
        self.public_base_url = self.public_base_url.rstrip("/")
        # The environment as read now: what `section` gives the provider packages.
        self._environ = {k.lower(): v for k, v in os.environ.items()}
        return self

    def __repr_args__(self) -> Any:
        # The undeclared values are the provider packages' (credentials among them).
        return [(k, v) for k, v in super().__repr_args__() if k in type(self).model_fields]

    def section(self, prefix: str) -> dict[str, str]:
        """The settings named `<prefix>*` that this class does not declare (a provider
        package's own), from the values given to it or else the environment as read at
        start; keys lower case, without the prefix. Values given to the constructor are
        strings (as in the environment) or plain values."""
        p = prefix.lower()
        out = {k[len(p):]: v for k, v in self._environ.items() if k.startswith(p)}
        for key, value in (self.model_extra or {}).items():
            if key.lower().startswith(p):
                out[key.lower()[len(p):]] = value
        return out

    @property
    def redis_sentinel(self) -> SentinelTarget | None:
        return parse_sentinel_url(self.redis_url)

    @property
    def deadline_seconds(self) -> int:
        """Seconds after which a transfer with no outcome fails; always inside the flag's TTL."""
        return self.deadline_for(self.transfer_ring_timeout)

    def deadline_for(self, ring_timeout: int) -> int:
        """The deadline of a destination that rings this long."""
        return min(ring_timeout + self.transfer_deadline_margin, self.transfer_flag_ttl - 5)

    def public_url(self, path: str) -> str:
        return f"{self.public_base_url}{path}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
