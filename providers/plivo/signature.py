"""Plivo's webhook signature (X-Plivo-Signature-V3) and nonce replay check."""

from __future__ import annotations

import hmac
from typing import NoReturn
from urllib.parse import parse_qs, urlparse, urlunparse

import redis
from flask import g, request
from plivo.utils.signature_v3 import get_signature_v3

from providers.plivo.account import PlivoAccount
from shared.logs import get_logger
from webhooks.deps import deps
from webhooks.security import public_url, refuse, webhook_account

log = get_logger("webhooks.security")


def plivo_nonce_ttl() -> int:
    """How long a Plivo nonce is remembered: as long as the transfer records. V3 signs no
    timestamp, so a captured request verifies for ever; a nonce forgotten before the
    records (and the one-time claims, such as `ended:...`, kept as long) would let a replay
    through once they are gone from the nonce set but not from the state it acts on."""
    return deps().settings.transfer_record_ttl


def verify_plivo(*, claim_nonce: bool = True, steering: bool = False) -> str:
    """403 unless X-Plivo-Signature-V3 matches (over the URL, the nonce and, for POST, the
    sorted params) and the nonce is new. The nonce is released again if the request is not
    accepted (a 503), so that Plivo's retry of it is not taken for a replay. With
    claim_nonce=False the caller claims the returned claim name itself (in its own Redis
    round trip) and must refuse the request as a replay when that fails.

    steering=True is for the routes whose XML answer steers the live call: with Redis
    down the nonce is not checked (and the route answers from its signed URL), because a
    replay there gets the very XML the original got, while a 503 would end the call."""
    signature = request.headers.get("X-Plivo-Signature-V3", "")
    nonce = request.headers.get("X-Plivo-Signature-V3-Nonce", "")
    if not signature or not nonce:
        refuse("plivo", "missing signature")
    # The account's token, and the one being rotated out while it is configured.
    tokens = webhook_account("plivo", PlivoAccount).webhook_secrets()
    if not tokens:
        refuse("plivo", "the account has no auth_token")
    method = request.method.upper()
    params = request.form.to_dict() if method == "POST" else {}
    url = public_url()
    if not any(_plivo_v3_valid(method, url, nonce, token, signature, params)
               for token in tokens):
        refuse("plivo", "bad signature")
    claim = f"nonce:plivo:{nonce}"
    if claim_nonce:
        try:
            fresh = deps().store.claim_once(claim, ttl=plivo_nonce_ttl())
        except redis.RedisError:
            if not steering:
                raise  # a status callback: 503, Plivo retries it
            log.warning("redis unavailable; nonce not checked", extra={"path": request.path})
            return claim
        if not fresh:
            refuse_replay()
    g.release_on_failure = claim
    return claim


def _plivo_v3_valid(method: str, url: str, nonce: str, token: str, signatures: str,
                    params: dict[str, str]) -> bool:
    """Plivo's V3 check (the SDK's HMAC helper over the SDK's base string, built by
    plivo_v3_base), without the SDK's argument validators and compared in constant time."""
    try:
        base = plivo_v3_base(method, url, params)
        expected = get_signature_v3(token.encode(), base, nonce)
    except (ValueError, TypeError, UnicodeError):
        return False
    return any(hmac.compare_digest(expected, candidate.strip().encode())
               for candidate in signatures.split(","))


def plivo_v3_base(method: str, url: str, params: dict[str, str]) -> str:
    """The string Plivo's V3 signature covers, exactly as plivo 4.63's construct_get_url /
    construct_post_url build it (utils/signature_v3.py; equality is unit-tested), but
    without their character-by-character conversion of the query, whose cost grew with our
    signed URL contexts: the URL without its query, `?` and the query's parameters sorted
    (each value of a repeated key, sorted; bytes read as Latin-1, as the SDK does), for a
    POST with a body a `.`, then the body's parameters sorted, as `keyvalue`."""
    parsed = urlparse(url.encode("utf-8"))
    base = urlunparse((parsed.scheme.decode("utf-8"), parsed.netloc.decode("utf-8"),
                       parsed.path.decode("utf-8"), "", "", ""))
    query = {k.decode("latin-1"): sorted(v.decode("latin-1") for v in values)
             for k, values in parse_qs(parsed.query, keep_blank_values=True).items()}
    query_string = "&".join(f"{key}={value}" for key in sorted(query) for value in query[key])
    body = method == "POST" and bool(params)
    if query_string or body:
        base += "?" + query_string
    if query_string and body:
        base += "."
    if body:
        base += "".join(f"{key}{params[key]}" for key in sorted(params))
    return base


def refuse_replay() -> NoReturn:
    refuse("plivo", "replayed nonce")
