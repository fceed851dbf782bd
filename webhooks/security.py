"""Request authentication for provider callbacks and the producer API."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qs, urlparse, urlunparse

import redis
from flask import Response, abort, g, request
from plivo.utils.signature_v3 import get_signature_v3
from twilio.request_validator import (
    HMAC_SHA1,
    HMAC_SHA256,
    SIGNATURE_SETTINGS_HEADER,
    RequestValidator,
    add_port,
    get_signature_algorithm,
    remove_port,
)

from shared.logs import get_logger
from webhooks.deps import deps

log = get_logger("webhooks.security")


def public_url() -> str:
    """The URL the provider called, rebuilt from PUBLIC_BASE_URL: behind a proxy or a tunnel
    the Host header is not what the provider signed."""
    query = request.query_string.decode("latin-1")
    return deps().settings.public_base_url + request.path + (f"?{query}" if query else "")


def verify_twilio(*, dedupe: bool) -> None:
    """403 unless the request is signed as Twilio signs it; checked before the body is
    interpreted. With dedupe (routes that enqueue), a delivery whose idempotency token was
    already accepted is answered 204 without being enqueued again; TwiML routes pass False:
    Twilio's retry of a TwiML request must get the TwiML again (Redis not needed there)."""
    signature = request.headers.get("X-Twilio-Signature", "")
    settings = deps().settings
    if not signature:
        _refuse("twilio", "missing signature")
    sig_settings = request.headers.get(SIGNATURE_SETTINGS_HEADER, "")
    if sig_settings:
        # A webhook rule signs with one of its SharedKeys (the header names the algorithm).
        secrets = _shared_keys(settings.twilio_webhook_shared_keys)
        if not secrets:
            _refuse("twilio", "SharedKey signature but TWILIO_WEBHOOK_SHARED_KEYS not set")
    else:
        secrets = (settings.twilio_auth_token,) if settings.twilio_auth_token else ()
        if not secrets:
            _refuse("twilio", "TWILIO_AUTH_TOKEN not set")
    if not twilio_signature_valid(secrets, public_url(), request.form, signature,
                                  get_signature_algorithm(sig_settings)):
        _refuse("twilio", "bad signature")
    if not dedupe:
        return
    # Twilio signs no nonce or timestamp, so a replay cannot be told from a retry; both are
    # made harmless by the state machine. A delivery whose idempotency token was already
    # accepted is answered without being enqueued again.
    idem = request.headers.get("I-Twilio-Idempotency-Token", "")
    if idem and len(idem) <= 200:
        claim = f"idem:twilio:{idem}"
        if not deps().store.claim_once(claim, ttl=NONCE_WINDOW):
            abort(Response(status=204))
        g.release_on_failure = claim


@lru_cache(maxsize=8)
def _shared_keys(setting: str) -> tuple[str, ...]:
    return tuple(k.strip() for k in setting.split(",") if k.strip())


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
    token = deps().settings.plivo_auth_token
    if not signature or not nonce or not token:
        _refuse("plivo", "missing signature" if token else "PLIVO_AUTH_TOKEN not set")
    method = request.method.upper()
    params = request.form.to_dict() if method == "POST" else {}
    if not _plivo_v3_valid(method, public_url(), nonce, token, signature, params):
        _refuse("plivo", "bad signature")
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


def refuse_replay() -> None:
    _refuse("plivo", "replayed nonce")


def verify_exotel() -> None:
    """403 unless the `token` query parameter is EXOTEL_WEBHOOK_TOKEN or, while it is being
    rotated, EXOTEL_WEBHOOK_TOKEN_PREVIOUS (Exotel does not sign its requests; every URL
    configured in Exotel carries the secret), and, where EXOTEL_ALLOWED_IPS is set, the
    request comes from one of those networks."""
    settings = deps().settings
    if settings.exotel_allowed_ips and not _address_in(
            client_address(settings.exotel_trusted_proxies), settings.exotel_allowed_ips):
        _refuse("exotel", "address not allowed")
    if not settings.exotel_webhook_token:
        _refuse("exotel", "EXOTEL_WEBHOOK_TOKEN not set")
    tokens = [t for t in (settings.exotel_webhook_token,
                          settings.exotel_webhook_token_previous) if t]
    given = request.args.get("token", "").encode()
    # Both compared every time, in constant time: no timing tells which one matched.
    matched = [hmac.compare_digest(given, token.encode()) for token in tokens]
    if not any(matched):
        _refuse("exotel", "bad token")


@lru_cache(maxsize=8)
def _networks(cidrs: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(item.strip(), strict=False)
                 for item in cidrs.split(",") if item.strip())


def _address_in(address: str, cidrs: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in _networks(cidrs))


def client_address(trusted_proxies: str) -> str:
    """The caller's address: the socket's peer, or, when that peer is one of our trusted
    proxies, the nearest X-Forwarded-For hop that is not (anyone can write the header, so it
    is never read by default)."""
    peer = request.remote_addr or ""
    if not trusted_proxies or not _address_in(peer, trusted_proxies):
        return peer
    hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",")]
    for hop in reversed([h for h in hops if h]):
        if not _address_in(hop, trusted_proxies):
            return hop
    return peer


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
