"""Telnyx's Ed25519 webhook signature: `{timestamp}|{raw body}`, the account's public key,
a tolerance window."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from providers.telnyx.signature import TOLERANCE, SignatureError, verify

KEY = Ed25519PrivateKey.generate()
PUBLIC = base64.b64encode(KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
BODY = b'{"data":{"event_type":"call.answered"}}'
NOW = 1_800_000_000


def sign(timestamp: str, body: bytes = BODY, key: Ed25519PrivateKey = KEY) -> str:
    return base64.b64encode(key.sign(timestamp.encode() + b"|" + body)).decode()


def test_good_signature_passes() -> None:
    verify(PUBLIC, BODY, sign(str(NOW)), str(NOW), now=NOW + 5)


@pytest.mark.parametrize(("signature", "timestamp", "body", "why"), [
    (sign(str(NOW), key=Ed25519PrivateKey.generate()), str(NOW), BODY, "bad signature"),
    (sign(str(NOW)), str(NOW), BODY + b" ", "bad signature"),  # the body was changed
    (sign(str(NOW)), str(NOW + 1), BODY, "bad signature"),  # the timestamp was changed
    (sign(str(NOW - TOLERANCE - 1)), str(NOW - TOLERANCE - 1), BODY, "tolerance"),  # replay
    (sign(str(NOW + TOLERANCE + 1)), str(NOW + TOLERANCE + 1), BODY, "tolerance"),
    ("", str(NOW), BODY, "missing"),
    (sign(str(NOW)), "", BODY, "missing"),
    ("%%%", str(NOW), BODY, "base64"),
    (sign(str(NOW)), "12.5", BODY, "malformed"),
])
def test_bad_requests_are_refused(signature: str, timestamp: str, body: bytes,
                                  why: str) -> None:
    with pytest.raises(SignatureError, match=why):
        verify(PUBLIC, body, signature, timestamp, now=NOW)


def test_no_key_or_a_bad_key_refuses_everything() -> None:
    with pytest.raises(SignatureError, match="not set"):
        verify("", BODY, sign(str(NOW)), str(NOW), now=NOW)
    with pytest.raises(SignatureError, match="public key"):
        verify("bm90LWEta2V5", BODY, sign(str(NOW)), str(NOW), now=NOW)
