"""Twilio's account credentials and settings (see providers/accounts.py).

The default account: TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, TWILIO_API_BASE_URL,
TWILIO_WEBHOOK_SHARED_KEYS, TWILIO_AUTH_TOKEN_PREVIOUS, TWILIO_SIP_AUTH_USERNAME,
TWILIO_SIP_AUTH_PASSWORD; a named account has the same fields in CREDENTIALS_FILE.
"""

from __future__ import annotations

from pydantic import SecretStr

from providers.accounts import Account, AccountSpec


class TwilioAccount(Account):
    account_sid: str = ""
    auth_token: SecretStr = SecretStr("")
    # The token being rotated out: webhooks signed with it are accepted while it is set.
    # Twilio signs with the primary token only (docs api/errors/57012: "a secondary token
    # that has not been promoted" does not verify), and promoting the secondary makes it
    # the primary (docs iam/api/authtoken): set the new token here and the old one as
    # previous before promoting, drop the previous once no callback signed with it can come.
    auth_token_previous: SecretStr = SecretStr("")
    api_base_url: str = "https://api.twilio.com"
    # SharedKey secrets of Twilio webhook rules (comma-separated, two during a rotation).
    webhook_shared_keys: SecretStr = SecretStr("")
    # Credentials of SIP destinations (never from the request).
    sip_auth_username: SecretStr = SecretStr("")
    sip_auth_password: SecretStr = SecretStr("")

    def webhook_secrets(self) -> tuple[str, ...]:
        return self.secrets_in("auth_token", "auth_token_previous")

    def shared_keys(self) -> tuple[str, ...]:
        return tuple(k.strip() for k in self.secret("webhook_shared_keys").split(",")
                     if k.strip())


ACCOUNT = AccountSpec(
    model=TwilioAccount, env_prefix="TWILIO_",
    env_fields=("account_sid", "auth_token", "auth_token_previous", "api_base_url",
                "webhook_shared_keys", "sip_auth_username", "sip_auth_password"),
    required=("account_sid", "auth_token"))
