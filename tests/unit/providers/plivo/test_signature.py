"""Our Plivo V3 base string is the SDK's, for every shape of URL and body."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from plivo.utils.signature_v3 import construct_get_url, construct_post_url

from providers.plivo.signature import plivo_v3_base

URLS = [
    "https://hooks.example.com/plivo/dial-up",
    "https://hooks.example.com/plivo/dial-up?transfer_id=tr_1",
    "https://hooks.example.com/plivo/dial-up?transfer_id=tr_1&attempt=2&t=eyJhIjoiMSJ9.x-_y",
    "https://hooks.example.com:8443/plivo/status?lead_id=L%201&b=&a=2&a=1",
    "https://hooks.example.com/plivo/status?lead_id=caf%C3%A9+x&z=%2B1415",
    "https://hooks.example.com/plivo/status?lead_id=x+y&z=%2B1415&q=%7E%25",
    "https://hooks.example.com/plivo/status?lead_id=café",
    "http://10.0.0.9:8000/p;params?x=1#frag",
    "https://hooks.example.com/plivo/hold?=novalue&k",
]
BODIES: list[dict[str, str]] = [
    {},
    {"CallUUID": "u-1", "From": "+14155550150", "DialStatus": "busy"},
    {"Event": "DialAnswer", "Note": "é & = ?", "empty": ""},
]


def same(ours: Callable[[], str], sdks: Callable[[], bytes]) -> None:
    """Equal strings, or the same refusal (a percent-encoded non-ASCII query makes the
    SDK's parse raise; the request is then refused)."""
    try:
        expected = sdks().decode()
    except UnicodeError:
        with pytest.raises(UnicodeError):
            ours()
        return
    assert ours() == expected


@pytest.mark.parametrize("url", URLS)
@pytest.mark.parametrize("body", BODIES)
def test_post_base_string_is_the_sdks(url: str, body: dict[str, str]) -> None:
    same(lambda: plivo_v3_base("POST", url, body), lambda: construct_post_url(url, dict(body)))


@pytest.mark.parametrize("url", URLS)
def test_get_base_string_is_the_sdks(url: str) -> None:
    same(lambda: plivo_v3_base("GET", url, {}), lambda: construct_get_url(url, {}))
