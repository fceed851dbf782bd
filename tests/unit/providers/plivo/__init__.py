"""Plivo's unit tests, and the test account the shared settings fixture gives them."""

from typing import Any

PLIVO_ID = "MA" + "B" * 18
PLIVO_API = "https://plivo.test"
RESUME_URL = "https://platform.example.com/plivo/resume"

# Merged into tests/unit/conftest.py's settings (every registered provider's SETTINGS).
SETTINGS: dict[str, Any] = {
    "plivo_auth_id": PLIVO_ID,
    "plivo_auth_token": "plivo-test-token",
    "plivo_api_base_url": PLIVO_API,
    "plivo_resume_url": RESUME_URL,
}
