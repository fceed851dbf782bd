"""Telnyx's account credentials and settings (see providers/accounts.py).

The default account: TELNYX_API_KEY, TELNYX_PUBLIC_KEY, TELNYX_PUBLIC_KEY_PREVIOUS,
TELNYX_CONNECTION_ID, TELNYX_API_BASE_URL, TELNYX_SIP_AUTH_USERNAME, TELNYX_SIP_AUTH_PASSWORD.
"""

from __future__ import annotations

from pydantic import SecretStr

from providers.accounts import Account, AccountSpec


class TelnyxAccount(Account):
    api_key: SecretStr = SecretStr("")
    # The account's Ed25519 webhook public key (base64), from the Mission Control Portal
    # (public, but the account's own: it tells the account's webhooks apart), and the one
    # being rotated out.
    public_key: str = ""
    public_key_previous: str = ""
    # The Call Control application (connection) that places the human's call.
    connection_id: str = ""
    api_base_url: str = "https://api.telnyx.com"
    # Credentials of SIP destinations (never from the request).
    sip_auth_username: SecretStr = SecretStr("")
    sip_auth_password: SecretStr = SecretStr("")

    def public_keys(self) -> tuple[str, ...]:
        return tuple(k for k in (self.public_key, self.public_key_previous) if k)


ACCOUNT = AccountSpec(
    model=TelnyxAccount, env_prefix="TELNYX_",
    env_fields=("api_key", "public_key", "public_key_previous", "connection_id",
                "api_base_url", "sip_auth_username", "sip_auth_password"),
    required=("api_key", "connection_id"))
