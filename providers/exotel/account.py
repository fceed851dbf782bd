"""Exotel's account credentials and settings (see providers/accounts.py).

The default account: EXOTEL_ACCOUNT_SID, EXOTEL_API_KEY, EXOTEL_API_TOKEN,
EXOTEL_API_BASE_URL, EXOTEL_WEBHOOK_TOKEN, EXOTEL_WEBHOOK_TOKEN_PREVIOUS; the provider's
settings: EXOTEL_DIAL_UP_FORMAT, EXOTEL_ALLOWED_IPS, EXOTEL_TRUSTED_PROXIES.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import BaseModel, SecretStr, field_validator

from providers.accounts import Account, AccountSpec


class ExotelAccount(Account):
    account_sid: str = ""
    api_key: SecretStr = SecretStr("")
    api_token: SecretStr = SecretStr("")
    api_base_url: str = "https://api.exotel.com"
    # The `token` every URL configured in Exotel carries (Exotel signs nothing), and the one
    # being rotated out: accepted too until every URL in Exotel carries the new one.
    webhook_token: SecretStr = SecretStr("")
    webhook_token_previous: SecretStr = SecretStr("")

    def webhook_secrets(self) -> tuple[str, ...]:
        return self.secrets_in("webhook_token", "webhook_token_previous")


class ExotelSettings(BaseModel):
    # How /exotel/dial-up answers: "auto" tells the Connect applet's two URLs apart by the
    # request (programmable connect sends an Exotel-Version header and gets JSON; the "Dial
    # whom" URL gets the number as text); "text" or "json" forces one (e.g. behind a proxy
    # that drops the header).
    dial_up_format: Literal["auto", "text", "json"] = "auto"
    # Optional allow-list of the addresses Exotel calls from (comma-separated CIDRs, as Exotel
    # support gives them); empty = off. X-Forwarded-For is believed only from these proxies.
    allowed_ips: str = ""
    trusted_proxies: str = ""

    @field_validator("allowed_ips", "trusted_proxies")
    @classmethod
    def _cidrs(cls, value: str) -> str:
        for item in filter(None, (part.strip() for part in value.split(","))):
            ipaddress.ip_network(item, strict=False)  # ValueError: a clear error
        return value


ACCOUNT = AccountSpec(
    model=ExotelAccount, env_prefix="EXOTEL_",
    env_fields=("account_sid", "api_key", "api_token", "api_base_url", "webhook_token",
                "webhook_token_previous"),
    required=("account_sid", "api_key", "api_token"), settings_model=ExotelSettings)
