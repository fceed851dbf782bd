"""Plivo's account credentials and settings (see providers/accounts.py).

The default account: PLIVO_AUTH_ID, PLIVO_AUTH_TOKEN, PLIVO_AUTH_TOKEN_PREVIOUS,
PLIVO_API_BASE_URL; the provider's settings: PLIVO_RESUME_URL.
"""

from __future__ import annotations

from pydantic import BaseModel, SecretStr

from providers.accounts import Account, AccountSpec


class PlivoAccount(Account):
    auth_id: str = ""
    auth_token: SecretStr = SecretStr("")
    # The token being rotated out: V3 signatures made with it are accepted while it is set.
    auth_token_previous: SecretStr = SecretStr("")
    api_base_url: str = "https://api.plivo.com"

    def webhook_secrets(self) -> tuple[str, ...]:
        return self.secrets_in("auth_token", "auth_token_previous")


class PlivoSettings(BaseModel):
    # Where the customer's call goes back to when the AI takes it back (the platform's XML).
    resume_url: str = ""


ACCOUNT = AccountSpec(
    model=PlivoAccount, env_prefix="PLIVO_",
    env_fields=("auth_id", "auth_token", "auth_token_previous", "api_base_url"),
    required=("auth_id", "auth_token"), settings_model=PlivoSettings)
