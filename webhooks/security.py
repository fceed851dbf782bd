"""Request authentication for provider callbacks and the producer API."""

from __future__ import annotations

import hmac

from flask import Response, abort, g, request
from plivo.utils.signature_v3 import validate_v3_signature
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
    # Twilio signs no nonce or timestamp, so a replay cannot be told from a retry; both are
    # made harmless by the state machine. A delivery whose idempotency token was already
    # accepted is answered without being enqueued again.
    idem = request.headers.get("I-Twilio-Idempotency-Token", "")
    if idem and len(idem) <= 200:
        claim = f"idem:twilio:{idem}"
        if not deps().store.claim_once(claim, ttl=NONCE_WINDOW):
            abort(Response(status=204))
        g.release_on_failure = claim


# How long a Plivo nonce is remembered: a replay inside this window is refused.
NONCE_WINDOW = 15 * 60


def verify_plivo(*, claim_nonce: bool = True) -> str:
    """403 unless X-Plivo-Signature-V3 matches (over the URL, the nonce and, for POST, the
    sorted params) and the nonce is new. The nonce is released again if the request is not
    accepted (a 503), so that Plivo's retry of it is not taken for a replay. With
    claim_nonce=False the caller claims the returned claim name itself (in its own Redis
    round trip) and must refuse the request as a replay when that fails."""
    signature = request.headers.get("X-Plivo-Signature-V3", "")
    nonce = request.headers.get("X-Plivo-Signature-V3-Nonce", "")
    token = deps().settings.plivo_auth_token
    if not signature or not nonce or not token:
        _refuse("plivo", "missing signature" if token else "PLIVO_AUTH_TOKEN not set")
    method = request.method.upper()
    params = request.form.to_dict() if method == "POST" else {}
    try:
        valid = validate_v3_signature(method, public_url(), nonce, token, signature, params)
    except Exception:  # noqa: BLE001 - the SDK's argument validators raise on odd input
        valid = False
    if not valid:
        _refuse("plivo", "bad signature")
    claim = f"nonce:plivo:{nonce}"
    if claim_nonce and not deps().store.claim_once(claim, ttl=NONCE_WINDOW):
        refuse_replay()
    g.release_on_failure = claim
    return claim


def refuse_replay() -> None:
    _refuse("plivo", "replayed nonce")


def verify_exotel() -> None:
    """403 unless the `token` query parameter is EXOTEL_WEBHOOK_TOKEN (Exotel does not sign
    its requests; every URL configured in Exotel carries the secret)."""
    expected = deps().settings.exotel_webhook_token
    given = request.args.get("token", "")
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        _refuse("exotel", "bad token" if expected else "EXOTEL_WEBHOOK_TOKEN not set")


def verify_bearer(expected: str) -> None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not expected or scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), expected.encode()):
        abort(401)


def _refuse(provider: str, why: str) -> None:
    log.warning("webhook refused", extra={"provider": provider, "path": request.path,
                                          "why": why})
    deps().metrics.inc("warm_transfer_signature_failures", provider=provider)
    abort(403)
