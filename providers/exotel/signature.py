"""Exotel's webhook check: Exotel signs nothing, so a secret token in every URL and,
optionally, the caller's network."""

from __future__ import annotations

import hmac

from flask import request

from providers.accounts import provider_settings
from providers.exotel.account import ExotelAccount, ExotelSettings
from webhooks.deps import deps
from webhooks.security import address_in, client_address, refuse, webhook_account


def verify_exotel() -> None:
    """403 unless the `token` query parameter is the account's webhook_token or, while it is
    being rotated, its webhook_token_previous (Exotel does not sign its requests; every URL
    configured in Exotel carries the secret, and, for an account other than the default,
    `account=<name>`), and, where EXOTEL_ALLOWED_IPS is set, the request comes from one of
    those networks."""
    own = provider_settings(deps().settings, "exotel", ExotelSettings)
    if own.allowed_ips and not address_in(client_address(own.trusted_proxies),
                                          own.allowed_ips):
        refuse("exotel", "address not allowed")
    tokens = webhook_account("exotel", ExotelAccount).webhook_secrets()
    if not tokens:
        refuse("exotel", "the account has no webhook_token")
    given = request.args.get("token", "").encode()
    # Both compared every time, in constant time: no timing tells which one matched.
    matched = [hmac.compare_digest(given, token.encode()) for token in tokens]
    if not any(matched):
        refuse("exotel", "bad token")
