"""Telnyx's webhook signature: Ed25519 over `{telnyx-timestamp}|{raw body}`, checked with the
account's public key (TELNYX_PUBLIC_KEY, base64), within a tolerance window; and a claim on
the event id, so that a delivery seen once is not enqueued again.

Source: developers.telnyx.com/api-reference/callbacks/call-hangup (headers:
"telnyx-signature-ed25519 ... Base64 encoded Ed25519 signature ... of timestamp|payload";
"telnyx-timestamp ... Unix timestamp (seconds since epoch) ... for replay attack
prevention"); the SDKs' verification (team-telnyx/telnyx-python PR 242: signed payload
"{timestamp}|{payload}").
"""

from __future__ import annotations

import base64
import binascii
import time
from functools import lru_cache

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

SIGNATURE_HEADER = "telnyx-signature-ed25519"
TIMESTAMP_HEADER = "telnyx-timestamp"
# How far a signed timestamp may be from our clock (the SDKs' default: 300 s).
TOLERANCE = 300
# How long an event id is remembered: past the window, its replay is refused by timestamp.
EVENT_ID_TTL = 2 * TOLERANCE


class SignatureError(ValueError):
    """Why a request is not Telnyx's (a short reason, for the log)."""


@lru_cache(maxsize=4)
def public_key(b64: str) -> Ed25519PublicKey:
    try:
        raw = base64.b64decode(b64.strip(), validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError("TELNYX_PUBLIC_KEY is not a base64 Ed25519 public key") from exc


def verify(public_key_b64: str, body: bytes, signature: str, timestamp: str,
           now: float | None = None, tolerance: int = TOLERANCE) -> None:
    """Raise SignatureError unless `signature` signs `timestamp|body` with the account's key
    and the timestamp is within `tolerance` seconds of now."""
    if not public_key_b64:
        raise SignatureError("TELNYX_PUBLIC_KEY not set")
    if not signature or not timestamp:
        raise SignatureError("missing signature or timestamp")
    if not timestamp.isdigit() or len(timestamp) > 12:
        raise SignatureError("malformed timestamp")
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > tolerance:
        raise SignatureError("timestamp outside the tolerance window")
    try:
        sig = base64.b64decode(signature, validate=True)
    except binascii.Error as exc:
        raise SignatureError("signature is not base64") from exc
    try:
        public_key(public_key_b64).verify(sig, timestamp.encode() + b"|" + body)
    except InvalidSignature as exc:
        raise SignatureError("bad signature") from exc
