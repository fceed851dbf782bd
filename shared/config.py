"""Settings, read once from the environment into one typed object."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, field_validator, model_validator
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
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

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

    twilio_account_sid: str = ""
    twilio_auth_token: str = ""
    twilio_api_base_url: str = "https://api.twilio.com"
    # SharedKey secrets of Twilio webhook rules (comma-separated, two during a rotation).
    twilio_webhook_shared_keys: str = ""

    plivo_auth_id: str = ""
    plivo_auth_token: str = ""
    plivo_api_base_url: str = "https://api.plivo.com"
    plivo_resume_url: str = ""
    # Signs the context our Plivo URLs carry (whom to dial, hold audio...), so that the XML
    # routes can answer from the URL when Redis is down. Empty: derived from PLIVO_AUTH_TOKEN.
    webhook_hmac_key: str = ""

    telnyx_api_key: str = ""
    # The account's Ed25519 webhook public key (base64), from the Mission Control Portal.
    telnyx_public_key: str = ""
    # The Call Control application (connection) that places the human's call.
    telnyx_connection_id: str = ""
    telnyx_api_base_url: str = "https://api.telnyx.com"

    exotel_account_sid: str = ""
    exotel_api_key: str = ""
    exotel_api_token: str = ""
    exotel_api_base_url: str = "https://api.exotel.com"
    exotel_webhook_token: str = ""
    # The token being rotated out: accepted too until every URL in Exotel carries the new one.
    exotel_webhook_token_previous: str = ""
    # How /exotel/dial-up answers: "auto" tells the Connect applet's two URLs apart by the
    # request (programmable connect sends an Exotel-Version header and gets JSON; the "Dial
    # whom" URL gets the number as text); "text" or "json" forces one (e.g. behind a proxy
    # that drops the header).
    exotel_dial_up_format: Literal["auto", "text", "json"] = "auto"
    # Optional allow-list of the addresses Exotel calls from (comma-separated CIDRs, as Exotel
    # support gives them); empty = off. X-Forwarded-For is believed only from these proxies.
    exotel_allowed_ips: str = ""
    exotel_trusted_proxies: str = ""

    log_level: str = "INFO"

    @field_validator("exotel_allowed_ips", "exotel_trusted_proxies")
    @classmethod
    def _cidrs(cls, value: str) -> str:
        for item in filter(None, (part.strip() for part in value.split(","))):
            ipaddress.ip_network(item, strict=False)  # ValueError: a clear startup error
        return value

    @model_validator(mode="after")
    def _defaults(self) -> Settings:
        if not self.celery_broker_url:
            if self.redis_cluster:
                raise ValueError("REDIS_CLUSTER is set: Celery cannot use a Redis Cluster as "
                                 "its broker; set CELERY_BROKER_URL (RabbitMQ, or a single "
                                 "or Sentinel-managed Redis)")
            self.celery_broker_url = self.redis_url
        self.public_base_url = self.public_base_url.rstrip("/")
        return self

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
