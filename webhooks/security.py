"""Request authentication for provider callbacks and the producer API."""

from __future__ import annotations

import hmac

from flask import abort, request
from twilio.request_validator import RequestValidator

from shared.logs import get_logger
from webhooks.deps import deps

log = get_logger("webhooks.security")


def public_url() -> str:
    """The URL the provider called, rebuilt from PUBLIC_BASE_URL: behind a proxy or a tunnel
    the Host header is not what the provider signed."""
    query = request.query_string.decode("latin-1")
    return deps().settings.public_base_url + request.path + (f"?{query}" if query else "")


def verify_twilio() -> None:
    """403 unless X-Twilio-Signature matches; checked before the body is interpreted."""
    signature = request.headers.get("X-Twilio-Signature", "")
    token = deps().settings.twilio_auth_token
    if not signature or not token:
        _refuse("twilio", "missing signature" if token else "TWILIO_AUTH_TOKEN not set")
    if not RequestValidator(token).validate(public_url(), request.form, signature):
        _refuse("twilio", "bad signature")


def verify_bearer(expected: str) -> None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not expected or scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), expected.encode()):
        abort(401)


def _refuse(provider: str, why: str) -> None:
    log.warning("webhook refused", extra={"provider": provider, "path": request.path,
                                          "why": why})
    abort(403)
