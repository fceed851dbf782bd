"""Settings, read once from the environment into one typed object."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    redis_url: str = "redis://localhost:6379/0"
    # Empty means "same as REDIS_URL".
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

    # Bearer token for POST /transfers; the endpoint refuses everything while it is empty.
    api_token: str = ""

    # Redis broker: a message whose worker died is delivered again after this long. Every
    # task and retry delay here is far shorter, so nothing runs twice for waiting alone.
    broker_visibility_timeout: int = Field(default=60, ge=2)

    provider_http_timeout: float = Field(default=5.0, gt=0)
    # Retry delays (seconds) for transient provider API errors, one per retry.
    provider_retry_delays: list[float] = Field(default_factory=lambda: [0.5, 1.0, 2.0])

    twilio_account_sid: str = ""
    twilio_auth_token: str = ""
    twilio_api_base_url: str = "https://api.twilio.com"

    plivo_auth_id: str = ""
    plivo_auth_token: str = ""
    plivo_api_base_url: str = "https://api.plivo.com"
    plivo_resume_url: str = ""
    # Signs the context our Plivo URLs carry (whom to dial, hold audio...), so that the XML
    # routes can answer from the URL when Redis is down. Empty: derived from PLIVO_AUTH_TOKEN.
    webhook_hmac_key: str = ""

    exotel_account_sid: str = ""
    exotel_api_key: str = ""
    exotel_api_token: str = ""
    exotel_api_base_url: str = "https://api.exotel.com"
    exotel_webhook_token: str = ""
    # How /exotel/dial-up answers: the number as text (Connect applet "dial whom" URL), or the
    # JSON of Exotel's programmable connect (newer accounts).
    exotel_dial_up_format: Literal["text", "json"] = "text"

    log_level: str = "INFO"

    @model_validator(mode="after")
    def _defaults(self) -> Settings:
        if not self.celery_broker_url:
            self.celery_broker_url = self.redis_url
        self.public_base_url = self.public_base_url.rstrip("/")
        return self

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
