"""The toll-fraud guard, as a table. Every number is the `phonenumbers` package's own example
number for its type (its metadata's fictional examples), so no real subscriber is named."""

from __future__ import annotations

import phonenumbers
import pytest
from phonenumbers import PhoneNumberType as T

from shared.contracts import RequestError, parse_request
from shared.phone import destination_allowed
from tests.helpers import make_request

# (number, type it is, region)
US_FIXED = ("+12015550123", T.FIXED_LINE_OR_MOBILE, "US")
US_TOLL_FREE = ("+18002345678", T.TOLL_FREE, "US")
US_PREMIUM = ("+19002345678", T.PREMIUM_RATE, "US")
US_PERSONAL = ("+15002345678", T.PERSONAL_NUMBER, "US")
GB_FIXED = ("+441212345678", T.FIXED_LINE, "GB")
GB_MOBILE = ("+447400123456", T.MOBILE, "GB")
GB_PREMIUM = ("+449012345678", T.PREMIUM_RATE, "GB")
GB_UAN = ("+445512345678", T.UAN, "GB")
GB_PERSONAL = ("+447012345678", T.PERSONAL_NUMBER, "GB")
GB_PAGER = ("+447640123456", T.PAGER, "GB")
GB_VOIP = ("+445612345678", T.VOIP, "GB")
FR_SHARED_COST = ("+33884012345", T.SHARED_COST, "FR")
DE_VOICEMAIL = ("+49177991234567", T.VOICEMAIL, "DE")
INTL_TOLL_FREE = ("+80012345678", T.TOLL_FREE, "001")
INTL_PREMIUM = ("+979123456789", T.PREMIUM_RATE, "001")
INTL_MOBILE = ("+881612345678", T.MOBILE, "001")

ALL = [US_FIXED, US_TOLL_FREE, US_PREMIUM, US_PERSONAL, GB_FIXED, GB_MOBILE, GB_PREMIUM,
       GB_UAN, GB_PERSONAL, GB_PAGER, GB_VOIP, FR_SHARED_COST, DE_VOICEMAIL, INTL_TOLL_FREE,
       INTL_PREMIUM, INTL_MOBILE]


@pytest.mark.parametrize(("number", "kind", "region"), ALL)
def test_the_table_uses_the_packages_example_numbers(number: str, kind: int, region: str
                                                     ) -> None:
    parsed = phonenumbers.parse(number, None)
    assert phonenumbers.number_type(parsed) == kind
    assert phonenumbers.region_code_for_number(parsed) == region
    example = (phonenumbers.example_number_for_non_geo_entity(parsed.country_code)
               if region == "001" else phonenumbers.example_number_for_type(region, kind))
    assert example is not None
    assert phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164) == number


@pytest.mark.parametrize(("case", "home", "policy", "allowed"), [
    # The home country: ordinary numbers only.
    (US_FIXED, "US", "", True),
    (US_TOLL_FREE, "US", "", True),
    (US_PREMIUM, "US", "", False),           # +1 900
    (US_PERSONAL, "US", "", False),          # +1 500
    (GB_FIXED, "GB", "", True),
    (GB_MOBILE, "GB", "", True),
    (GB_VOIP, "GB", "", True),               # VoIP allowed: agents' desks often are
    (GB_PREMIUM, "GB", "", False),           # UK 09
    (GB_UAN, "GB", "", False),
    (GB_PERSONAL, "GB", "", False),          # UK 070
    (GB_PAGER, "GB", "", False),
    (FR_SHARED_COST, "FR", "", False),
    (DE_VOICEMAIL, "DE", "", False),
    (GB_FIXED, "US", "", False),             # another country
    (US_FIXED, None, "", False),             # no home country known: nothing
    (US_FIXED, "+14155550199", "", True),    # a home given as the directory's number
    # "*" and country lists: any listed country, still ordinary numbers only.
    (GB_MOBILE, "US", "*", True),
    (GB_PREMIUM, "US", "*", False),
    (US_PREMIUM, "US", "US,GB", False),
    (GB_UAN, "US", "GB", False),
    (INTL_TOLL_FREE, "US", "*", False),      # non-geographic: not a country
    (INTL_MOBILE, "US", "*", False),
    # A "+" prefix that is only a calling code acts as the countries behind it ...
    (US_FIXED, None, "+1", True),
    (US_PREMIUM, "US", "+1", False),
    (GB_PREMIUM, "GB", "+44", False),
    # ... and a longer one names a range explicitly, whatever its type.
    (US_PREMIUM, "US", "+1900", True),
    (GB_PREMIUM, "GB", "+4490", True),
    (GB_PERSONAL, "GB", "US,+4470", True),
    (GB_PREMIUM, "GB", "+4470", False),
    (INTL_TOLL_FREE, "US", "+800", True),
    (INTL_PREMIUM, "US", "+800", False),
    (INTL_PREMIUM, "US", "+979", True),
    (INTL_TOLL_FREE, "US", "+8", False),      # shorter than the code: names no range
])
def test_destination_guard_table(case: tuple[str, int, str], home: str | None, policy: str,
                                 allowed: bool) -> None:
    assert destination_allowed(case[0], home, policy) is allowed


DIRECTORY = {"us-line": "+12015550123", "gb-line": "+441212345678"}


def _code(raw: dict[str, object], **kw: str) -> str | None:
    try:
        parse_request(raw, DIRECTORY.get, **kw)
    except RequestError as exc:
        return exc.code.value
    return None


def test_home_country_comes_from_the_directory_not_the_request() -> None:
    # The attack: a UK outbound number in the request made a UK destination "home".
    forged = make_request(transfer_number=GB_FIXED[0], outbound_number_id="us-line",
                          outbound_number="+441212345678")
    assert _code(forged) == "destination_not_allowed"
    assert _code(make_request(transfer_number=GB_FIXED[0], outbound_number_id="gb-line")) is None
    # No directory id: only an explicit setting names the home country.
    bare = make_request(transfer_number=US_FIXED[0], outbound_number_id=None,
                        outbound_number="+12015550123")
    assert _code(bare) == "destination_not_allowed"
    assert _code(bare, home_country="US") is None
    # The setting wins over the directory.
    assert _code(make_request(transfer_number=GB_FIXED[0], outbound_number_id="us-line"),
                 home_country="GB") is None


def test_premium_rate_refused_at_home_and_every_fallback_checked() -> None:
    assert _code(make_request(transfer_number=US_PREMIUM[0], outbound_number_id="us-line")
                 ) == "destination_not_allowed"
    raw = make_request(transfer_number=None, outbound_number_id="us-line")
    raw["template"]["configurations"]["transfer_numbers"] = [US_FIXED[0], US_PREMIUM[0]]
    assert _code(raw) == "destination_not_allowed"
    assert _code(raw, allowed_destinations="US,+1900") is None
