"""E.164 validation and masking of phone numbers."""

from __future__ import annotations

import re

import phonenumbers

_E164_SHAPE = re.compile(r"^\+[1-9]\d{6,14}$")
# A phone number inside free text: "+" and 7 to 15 digits with the usual separators, or a
# bare run of 10 to 15 digits. Ids ("CA12...", "tr_9f3...") and dates do not match.
_NUMBER_IN_TEXT = re.compile(
    r"(?<![\w+])\+\d[\d\s().-]{5,18}\d(?!\w)|(?<![\w.-])\d{10,15}(?!\w|[.-]\d)"
)


class InvalidNumber(ValueError):
    pass


def normalize_e164(raw: str) -> str:
    """Return the number in E.164, or raise InvalidNumber.

    Only numbers written in international form are accepted: a transfer number without
    its country code is ambiguous, and dialing the wrong country is worse than refusing.
    """
    text = raw.strip() if isinstance(raw, str) else ""
    if not text.startswith("+"):
        raise InvalidNumber("the number must be in international E.164 form, starting with +")
    try:
        parsed = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException as exc:
        raise InvalidNumber(f"not a phone number: {exc}") from None
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidNumber("not a valid phone number for its country")
    formatted = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    assert _E164_SHAPE.match(formatted)
    return str(formatted)


def region_of(e164: str) -> str | None:
    """ISO country code of an E.164 number (e.g. "US"), or None."""
    try:
        return phonenumbers.region_code_for_number(phonenumbers.parse(e164, None)) or None
    except phonenumbers.NumberParseException:
        return None


def destination_allowed(number: str, outbound_number: str, policy: str) -> bool:
    """The toll-fraud guard. `policy` is "" (the outbound number's own country), "*" (any),
    or a comma-separated list of ISO country codes ("US,CA") and "+" prefixes ("+4420")."""
    policy = policy.strip()
    if policy == "*":
        return True
    if not policy:
        home = region_of(outbound_number)
        return home is not None and region_of(number) == home
    region = region_of(number)
    for item in (p.strip() for p in policy.split(",")):
        if item.startswith("+") and number.startswith(item):
            return True
        if item and not item.startswith("+") and region == item.upper():
            return True
    return False


def mask(number: str | None) -> str:
    """Mask a phone number for logs: keep the country prefix and the last two digits."""
    if not number:
        return ""
    digits = re.sub(r"\D", "", number)
    if len(digits) < 5:
        return "*" * len(digits)
    return ("+" if number.strip().startswith("+") else "") + digits[:2] + "*" * (
        len(digits) - 4
    ) + digits[-2:]


def mask_in_text(text: str) -> str:
    """Mask every phone-number-like run of digits in free text."""
    return _NUMBER_IN_TEXT.sub(lambda m: mask(m.group(0)), text)


_PROVIDER_NUMBER = re.compile(r"^\+?[\d\s().-]{4,20}$")


def from_provider(number: str | None, default_region: str | None = "IN") -> str:
    """A number as a provider reports it, in E.164 when it reads as one, for comparing with
    ours. Exotel reports Indian numbers in national format ("0" + ten digits, as in CallFrom,
    CallTo and DialWhomNumber; its call details show "To": "0XXXXX38847"), sometimes without
    the "0"; others send digits with the country code. Returns "" for nothing, and the
    stripped text unchanged when it is no phone number, so that it simply never matches."""
    text = number.strip() if isinstance(number, str) else ""
    if not text:
        return ""
    if not _PROVIDER_NUMBER.match(text):
        return text  # letters would be read as a vanity number ("0XXXXX38847" is masked)
    if text.startswith("00"):
        text = "+" + text[2:]
    candidates = [(text, None)] if text.startswith("+") else [(text, default_region),
                                                              ("+" + text, None)]
    for raw, region in candidates:
        try:
            parsed = phonenumbers.parse(raw, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(parsed):
            return str(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))
    return text
