import pytest

from shared.phone import InvalidNumber, mask, mask_in_text, normalize_e164, region_of


@pytest.mark.parametrize(("raw", "expected"), [
    ("+14155550123", "+14155550123"),
    (" +1 (415) 555-0123 ", "+14155550123"),
    ("+91 99999 00000", "+919999900000"),
])
def test_normalize_accepts_international_numbers(raw: str, expected: str) -> None:
    assert normalize_e164(raw) == expected


@pytest.mark.parametrize(
    "raw", ["4155550123", "+1415", "+999123456789", "hello", "", "+1 415 555 01234567"])
def test_normalize_refuses_ambiguous_or_invalid(raw: str) -> None:
    with pytest.raises(InvalidNumber):
        normalize_e164(raw)


def test_region() -> None:
    assert region_of("+14155550123") == "US"
    assert region_of("+919999900000") == "IN"


def test_mask_keeps_prefix_and_last_digits() -> None:
    assert mask("+14155550123") == "+14*******23"
    assert mask("") == ""
    assert "5550" not in mask("+14155550123")


def test_mask_in_text_masks_numbers_not_ids_or_dates() -> None:
    text = "dialing +1 415 555 0123 from 4155550199 for CA0123456789abcdef on 2026-11-25"
    out = mask_in_text(text)
    assert "555 0123" not in out and "4155550199" not in out
    assert "CA0123456789abcdef" in out and "2026-11-25" in out


@pytest.mark.parametrize(("text", "hidden"), [
    ("call me on 415-555-0123 please", "555-0123"),
    ("call me on (415) 555-0123 please", "555-0123"),
    ("call me on 415.555.0123 please", "555.0123"),
    ("UK landline 02079460000", "2079460000"),
    ("UK landline 020 7946 0000", "7946 0000"),
    ("card 4111111111111111 exp 12/29", "1111111111111111"),
    ("card 4111 1111 1111 1111", "1111 1111 1111"),
    ("card 4111-1111-1111-1111", "1111-1111-1111"),
    ("amex 3782 822463 10005", "822463"),
])
def test_mask_in_text_masks_national_numbers_and_cards(text: str, hidden: str) -> None:
    out = mask_in_text(text)
    assert hidden not in out
    assert out.split()[0] == text.split()[0]  # the words around are kept


@pytest.mark.parametrize("text", [
    "order 4111111111111112 (not a card: Luhn fails)",
    "at 2026-12-01 16:54:24 UTC",
    "transfer tr_9f3a41c2 call CA0123456789abcdef0123456789abcdef",
    "version 1.2.3, port 8000, 3 attempts",
])
def test_mask_in_text_leaves_other_digits_alone(text: str) -> None:
    assert mask_in_text(text) == text
