"""Telnyx's unit tests, and the test account the shared settings fixture gives them."""

from typing import Any

# Merged into tests/unit/conftest.py's settings (every registered provider's SETTINGS).
SETTINGS: dict[str, Any] = {
    "telnyx_api_key": "telnyx-test-key",
    "telnyx_connection_id": "telnyx-test-app",
    "telnyx_api_base_url": "https://telnyx.test",
}
