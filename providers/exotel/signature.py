"""Exotel's webhook check: Exotel signs nothing, so a secret token in every URL and,
optionally, the caller's network."""

from __future__ import annotations

import hmac

from flask import request

from webhooks.deps import deps
from webhooks.security import address_in, client_address, refuse


def verify_exotel() -> None:
    """403 unless the `token` query parameter is EXOTEL_WEBHOOK_TOKEN or, while it is being
    rotated, EXOTEL_WEBHOOK_TOKEN_PREVIOUS (Exotel does not sign its requests; every URL
    configured in Exotel carries the secret), and, where EXOTEL_ALLOWED_IPS is set, the
    request comes from one of those networks."""
    settings = deps().settings
    if settings.exotel_allowed_ips and not address_in(
            client_address(settings.exotel_trusted_proxies), settings.exotel_allowed_ips):
        refuse("exotel", "address not allowed")
    if not settings.exotel_webhook_token:
        refuse("exotel", "EXOTEL_WEBHOOK_TOKEN not set")
    tokens = [t for t in (settings.exotel_webhook_token,
                          settings.exotel_webhook_token_previous) if t]
    given = request.args.get("token", "").encode()
    # Both compared every time, in constant time: no timing tells which one matched.
    matched = [hmac.compare_digest(given, token.encode()) for token in tokens]
    if not any(matched):
        refuse("exotel", "bad token")
