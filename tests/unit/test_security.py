"""Our Plivo V3 check agrees with the SDK's (it reuses its base string and HMAC helpers)."""

from __future__ import annotations

from urllib.parse import urlencode

from hypothesis import given, settings
from hypothesis import strategies as st
from plivo.utils.signature_v3 import (
    construct_get_url,
    construct_post_url,
    get_signature_v3,
    validate_v3_signature,
)

from providers.plivo.signature import _plivo_v3_valid

ascii_text = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=20)
forms = st.dictionaries(ascii_text.filter(bool), ascii_text, max_size=5)


@settings(max_examples=200, deadline=None)
@given(method=st.sampled_from(["GET", "POST"]), query=forms, form=forms, nonce=ascii_text,
       forged=st.booleans(), extra=st.booleans())
def test_agrees_with_the_sdk(method: str, query: dict[str, str], form: dict[str, str],
                             nonce: str, forged: bool, extra: bool) -> None:
    url = "https://hooks.example.com/plivo/dial-up" + (f"?{urlencode(query)}" if query else "")
    params = form if method == "POST" else {}
    base = (construct_get_url(url, dict(params)) if method == "GET"
            else construct_post_url(url, dict(params))).decode()
    signature = get_signature_v3(b"right-token" if not forged else b"wrong-token", base,
                                 nonce.encode()).decode()
    if extra:  # Plivo may send several signatures, comma-separated
        signature = "bm90LWEtc2lnbmF0dXJl," + signature
    ours = _plivo_v3_valid(method, url, nonce, "right-token", signature, dict(params))
    sdk = validate_v3_signature(method, url, nonce, "right-token", signature, dict(params))
    assert ours == sdk == (not forged)
