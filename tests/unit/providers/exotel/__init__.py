"""Exotel's unit tests, and the test account the shared settings fixture gives them."""

from typing import Any

EXOTEL_API = "https://exotel.test"
EXOTEL_SID = "acme1"

# Merged into tests/unit/conftest.py's settings (every registered provider's SETTINGS).
SETTINGS: dict[str, Any] = {
    "exotel_account_sid": EXOTEL_SID,
    "exotel_api_key": "exo-key",
    "exotel_api_token": "exo-token",
    "exotel_api_base_url": EXOTEL_API,
    "exotel_webhook_token": "exo-webhook-secret",
}
