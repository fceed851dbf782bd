"""µs per Twilio signature check: the SDK's RequestValidator.validate (what the webhooks
used before) against providers.twilio.signature.twilio_signature_valid, on a typical call-progress
callback. Run: .venv/bin/python bench/twilio_signature.py"""

from __future__ import annotations

import timeit

from twilio.request_validator import HMAC_SHA256, RequestValidator

from providers.twilio.signature import twilio_signature_valid

PARAMS = {"AccountSid": "AC" + "a" * 32, "ApiVersion": "2010-04-01", "CallSid": "CA" + "b" * 32,
          "CallStatus": "in-progress", "Called": "+14155550101", "To": "+14155550101",
          "Caller": "+14155550199", "From": "+14155550199", "Direction": "outbound-api",
          "CallbackSource": "call-progress-events", "SequenceNumber": "2",
          "Timestamp": "Tue, 01 Dec 2026 17:00:00 GMT"}
URL = "https://hooks.example.com/twilio/agent-status?transfer_id=tr_123&attempt=1"


def per_call(fn: object, n: int = 20_000) -> float:
    return min(timeit.repeat(fn, number=n, repeat=5)) / n * 1e6  # type: ignore[arg-type]


def main() -> None:
    sha1 = RequestValidator("tok").compute_signature(URL, PARAMS)
    sha256 = RequestValidator("key2").compute_signature(URL, PARAMS, HMAC_SHA256)
    rows = [
        ("SDK RequestValidator(token).validate",
         lambda: RequestValidator("tok").validate(URL, PARAMS, sha1)),
        ("ours, auth token (HMAC-SHA1)", lambda: twilio_signature_valid(("tok",), URL, PARAMS,
                                                                         sha1)),
        ("ours, SharedKey, 2nd of 2 keys (HMAC-SHA256)",
         lambda: twilio_signature_valid(("key1", "key2"), URL, PARAMS, sha256, HMAC_SHA256)),
        ("ours, forged signature", lambda: twilio_signature_valid(("tok",), URL, PARAMS,
                                                                  "x" * 28)),
    ]
    for name, fn in rows:
        print(f"{name:48s} {per_call(fn):6.1f} µs")


if __name__ == "__main__":
    main()
