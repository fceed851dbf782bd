"""Twilio's unit tests, and the test account the shared settings fixture gives them."""

from typing import Any

TWILIO_SID = "AC" + "a" * 32
TWILIO_API = "https://twilio.test"

# Merged into tests/unit/conftest.py's settings (every registered provider's SETTINGS).
SETTINGS: dict[str, Any] = {
    "twilio_account_sid": TWILIO_SID,
    "twilio_auth_token": "twilio-test-token",
    "twilio_api_base_url": TWILIO_API,
}
