"""What request authentication shares: the producer API's bearer check and the helpers
of the providers' webhook checks (each provider's own is `providers/<name>/signature.py`)."""

from __future__ import annotations

import hmac
import ipaddress
from functools import lru_cache
from typing import NoReturn, TypeVar

from flask import abort, g, request

from providers import accounts
from shared.logs import get_logger
from webhooks.deps import deps

log = get_logger("webhooks.security")

A = TypeVar("A", bound=accounts.Account)


def public_url() -> str:
    """The URL the provider called, rebuilt from PUBLIC_BASE_URL: behind a proxy or a tunnel
    the Host header is not what the provider signed."""
    query = request.query_string.decode("latin-1")
    return deps().settings.public_base_url + request.path + (f"?{query}" if query else "")


@lru_cache(maxsize=8)
def _networks(cidrs: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(item.strip(), strict=False)
                 for item in cidrs.split(",") if item.strip())


def address_in(address: str, cidrs: str) -> bool:
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
    if not trusted_proxies or not address_in(peer, trusted_proxies):
        return peer
    hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",")]
    for hop in reversed([h for h in hops if h]):
        if not address_in(hop, trusted_proxies):
            return hop
    return peer


def verify_bearer(expected: str) -> None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not expected or scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), expected.encode()):
        abort(401)


def webhook_account(provider: str, model: type[A]) -> A:
    """The provider account a webhook is about: our URL's `account` parameter (the default
    account when absent), read before the body, so that it picks the secret the signature is
    checked with. 403 for an account we have no credentials for; `g.account` names it for
    the worker, which checks it against the transfer's."""
    name = request.args.get("account") or accounts.DEFAULT
    try:
        account = accounts.find(deps().settings, provider, name)
    except (OSError, ValueError, ImportError, AttributeError) as exc:
        log.error("credentials unavailable", extra={"provider": provider,
                                                    "error": type(exc).__name__})
        abort(503)
    if not isinstance(account, model):
        refuse(provider, "unknown account")
    g.account = name
    return account


def refuse(provider: str, why: str) -> NoReturn:
    log.warning("webhook refused", extra={"provider": provider, "path": request.path,
                                          "why": why})
    deps().metrics.inc("warm_transfer_signature_failures", provider=provider)
    abort(403)
