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
# National forms people say and LLMs write: "415-555-0123", "(415) 555-0123", "415.555.0123".
_NANP_IN_TEXT = re.compile(
    r"(?<![\w.+-])(?:\(\d{3}\)[ ]?|\d{3}[ .-])\d{3}[ .-]\d{4}(?!\w|[.-]?\d)")
# A trunk "0" and ten digits, grouped ("020 7946 0000", "098765-43210"); 11 digits checked.
_TRUNK_IN_TEXT = re.compile(
    r"(?<![\w.+-])0\d{2,5}[ -]?\d{2,4}[ -]?\d{3,4}(?!\w|[.-]?\d)")
# A card number: 13 to 19 digits, spaces or dashes between groups; masked when Luhn-valid.
_CARD_IN_TEXT = re.compile(r"(?<![\w.+-])\d(?:[ -]?\d){12,18}(?!\w|[.-]?\d)")

# Number types a transfer never goes to unless the allow-list names their range with a "+"
# prefix: the callee's operator charges the caller (premium rate, shared cost), or the number
# forwards anywhere at a price set by its owner (personal numbers, UAN), or it is not a
# person at all (pagers, voicemail access). VoIP numbers are allowed: agents' desks often are.
_RISKY_TYPES = frozenset({
    phonenumbers.PhoneNumberType.PREMIUM_RATE,
    phonenumbers.PhoneNumberType.SHARED_COST,
    phonenumbers.PhoneNumberType.UAN,
    phonenumbers.PhoneNumberType.PERSONAL_NUMBER,
    phonenumbers.PhoneNumberType.PAGER,
    phonenumbers.PhoneNumberType.VOICEMAIL,
    phonenumbers.PhoneNumberType.UNKNOWN,
})
# region_code_for_number's answer for non-geographic codes (+800, +808, +870, +882, ...).
_NON_GEOGRAPHIC = "001"


class InvalidNumber(ValueError):
    pass


# A SIP destination: sip:user@host[:port], nothing else (no URI parameters or headers: the
# headers we send are ours, see providers.base.sip_headers). Twilio takes "a valid SIP URI
# under 255 characters" (docs/voice/api/sip-making-calls).
_SIP_URI = re.compile(
    r"^sip:(?P<user>[A-Za-z0-9._~+-]{1,64})@"
    r"(?P<host>(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63})"
    r"(?::(?P<port>[0-9]{1,5}))?$")


def is_sip(address: str | None) -> bool:
    """Whether a destination is a SIP address (sip:...) rather than a phone number."""
    return isinstance(address, str) and address.strip().lower().startswith("sip:")


def normalize_sip(raw: str) -> str:
    """sip:user@host[:port] with the scheme and host in lower case, or InvalidNumber."""
    text = raw.strip()
    candidate = "sip:" + text[4:] if text.lower().startswith("sip:") else text
    match = _SIP_URI.match(candidate)
    if not match or (match["port"] and not 0 < int(match["port"]) < 65536):
        raise InvalidNumber("a SIP destination must be sip:user@host (a host name, an "
                            "optional :port, no parameters or headers)")
    port = f":{match['port']}" if match["port"] else ""
    return f"sip:{match['user']}@{match['host'].lower()}{port}"


def sip_host(uri: str) -> str:
    return uri.split("@", 1)[1].split(":", 1)[0]


def sip_allowed(uri: str, domains: str) -> bool:
    """The toll-fraud guard for SIP: only hosts the operator names
    (TRANSFER_ALLOWED_SIP_DOMAINS: "pbx.example.com,*.example.net"; "*." also allows every
    subdomain). None by default: a request cannot send a call to any SIP host."""
    host = sip_host(uri)
    for item in (d.strip().lower() for d in domains.split(",")):
        if item and (host == item or (item.startswith("*.") and host.endswith(item[1:]))):
            return True
    return False


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


def destination_allowed(number: str, home: str | None, policy: str) -> bool:
    """The toll-fraud guard. `home` is the home country (ISO code, or a number whose country
    it is), taken from the number directory or a setting, never from the request.

    `policy` is "" (the home country), "*" (any country), or a comma-separated list of ISO
    country codes ("US,CA") and "+" prefixes ("+4420"). Countries (and "*", and a "+" prefix
    that is only a country calling code, like "+1") allow ordinary numbers only: fixed,
    mobile, toll-free, VoIP. Premium-rate, shared-cost, UAN, personal, pager, voicemail and
    non-geographic (+800, +882, ...) numbers need a "+" prefix naming their range ("+1900",
    "+4487", "+800")."""
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return False
    region = phonenumbers.region_code_for_number(parsed) or None
    ordinary = (region not in (None, _NON_GEOGRAPHIC)
                and phonenumbers.number_type(parsed) not in _RISKY_TYPES)
    country_code = f"+{parsed.country_code}"
    policy = policy.strip()
    if not policy:
        home_region = region_of(home) if home and home.startswith("+") else home
        return ordinary and home_region is not None and region == home_region.upper()
    for item in (p.strip() for p in policy.split(",")):
        if not item:
            continue
        if item == "*" or (not item.startswith("+") and region == item.upper()):
            if ordinary:
                return True
        elif item.startswith("+") and number.startswith(item) and (
                ordinary or len(item) > len(country_code)
                or (region == _NON_GEOGRAPHIC and len(item) == len(country_code))):
            return True
    return False


def _luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def mask(number: str | None) -> str:
    """Mask a phone number for logs: keep the country prefix and the last two digits (a
    SIP address: its first character and the host)."""
    if not number:
        return ""
    if "," in number:  # a ring group's members
        return ",".join(mask(m) for m in number.split(","))
    if is_sip(number) and "@" in number:
        user, host = number.strip()[4:].split("@", 1)
        return f"sip:{user[:1]}***@{host}"
    digits = re.sub(r"\D", "", number)
    if len(digits) < 5:
        return "*" * len(digits)
    return ("+" if number.strip().startswith("+") else "") + digits[:2] + "*" * (
        len(digits) - 4
    ) + digits[-2:]


def mask_in_text(text: str) -> str:
    """Mask every phone-number-like run of digits, and every card number, in free text."""
    text = _CARD_IN_TEXT.sub(
        lambda m: mask(m.group(0)) if _luhn_valid(re.sub(r"\D", "", m.group(0)))
        else m.group(0), text)
    text = _NANP_IN_TEXT.sub(lambda m: mask(m.group(0)), text)
    text = _TRUNK_IN_TEXT.sub(
        lambda m: mask(m.group(0)) if len(re.sub(r"\D", "", m.group(0))) == 11
        else m.group(0), text)
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
