"""Twilio's webhook signature (X-Twilio-Signature) and idempotency-token dedupe."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any
from urllib.parse import urlparse

from flask import Response, abort, g, request
from twilio.request_validator import (
    HMAC_SHA1,
    HMAC_SHA256,
    SIGNATURE_SETTINGS_HEADER,
    RequestValidator,
    add_port,
    get_signature_algorithm,
    remove_port,
)

from providers.twilio.account import TwilioAccount
from webhooks.deps import deps
from webhooks.security import public_url, refuse, webhook_account


def verify_twilio(*, dedupe: bool) -> None:
    """403 unless the request is signed as Twilio signs it; checked before the body is
    interpreted. With dedupe (routes that enqueue), a delivery whose idempotency token was
    already accepted is answered 204 without being enqueued again; TwiML routes pass False:
    Twilio's retry of a TwiML request must get the TwiML again (Redis not needed there)."""
    signature = request.headers.get("X-Twilio-Signature", "")
    if not signature:
        refuse("twilio", "missing signature")
    account = webhook_account("twilio", TwilioAccount)
    sig_settings = request.headers.get(SIGNATURE_SETTINGS_HEADER, "")
    if sig_settings:
        # A webhook rule signs with one of its SharedKeys (the header names the algorithm).
        secrets = account.shared_keys()
        if not secrets:
            refuse("twilio", "SharedKey signature but the account has no webhook_shared_keys")
    else:
        # The token, and the one being rotated out while it is configured.
        secrets = account.webhook_secrets()
        if not secrets:
            refuse("twilio", "the account has no auth_token")
    if not twilio_signature_valid(secrets, public_url(), request.form, signature,
                                  get_signature_algorithm(sig_settings)):
        refuse("twilio", "bad signature")
    # Twilio's callbacks name the account they are about: another account's is refused even
    # when signed (a token shared between accounts, or a misrouted URL).
    sid = request.form.get("AccountSid")
    if sid is not None and account.account_sid and sid != account.account_sid:
        refuse("twilio", "AccountSid is not the account's")
    if not dedupe:
        return
    # Twilio signs no nonce or timestamp, so a replay cannot be told from a retry; both are
    # made harmless by the state machine. A delivery whose idempotency token was already
    # accepted is answered without being enqueued again.
    idem = idempotency_token()
    if idem:
        claim = f"idem:twilio:{idem}"
        if not deps().store.claim_once(claim, ttl=NONCE_WINDOW):
            abort(Response(status=204))
        g.release_on_failure = claim


def idempotency_token() -> str:
    """The delivery's I-Twilio-Idempotency-Token ("" when absent or oversized): the same on
    Twilio's retries of one delivery."""
    token = request.headers.get("I-Twilio-Idempotency-Token", "")
    return token if len(token) <= 200 else ""


_HASHES = {HMAC_SHA1: hashlib.sha1, HMAC_SHA256: hashlib.sha256}


def twilio_signature_valid(secrets: tuple[str, ...], url: str, params: Any, signature: str,
                           algorithm: str = HMAC_SHA1) -> bool:
    """Exactly the SDK's RequestValidator.validate (twilio/request_validator.py: the URL
    without and with its port, each param name then its values, sorted and deduplicated,
    HMAC-SHA1 or the SharedKey's HMAC-SHA256, base64), for several secrets: the parameter
    string is built once, the first match wins, the compare is constant-time."""
    digest = _HASHES.get(algorithm.upper())
    if digest is None:
        return False  # the SDK refuses an algorithm it does not know, too
    parsed = urlparse(url)
    urls = dict.fromkeys((remove_port(parsed), add_port(parsed)))
    values = RequestValidator.get_values
    suffix = "".join(name + value for name in sorted(set(params))
                     for value in sorted(set(values(None, params, name))))
    given = signature.encode()
    for secret in secrets:
        key = secret.encode("utf-8")
        for candidate in urls:
            mac = hmac.new(key, (candidate + suffix).encode("utf-8"), digest)
            if hmac.compare_digest(base64.b64encode(mac.digest()), given):
                return True
    return False


# How long a Twilio idempotency token is remembered.
NONCE_WINDOW = 15 * 60
