"""Phone numbers: parsed with `phonenumbers`, kept in E.164, masked wherever they might be seen."""

from __future__ import annotations

from dataclasses import dataclass

import phonenumbers

#: What Twilio sends in `From` when the caller withholds their number.
WITHHELD = frozenset({"", "anonymous", "restricted", "unknown", "private", "unavailable", "+266696687", "+7378742833", "+2562533", "+86282452253", "+8656696"})


@dataclass(frozen=True)
class ParsedNumber:
    """A caller number as the service records it: status valid, withheld or invalid, and E.164 if valid."""

    status: str
    e164: str | None = None


def parse_caller(raw: str | None, region: str = "GB") -> ParsedNumber:
    """Classify the `From` of a call; never raises, because a strange number must not lose a call."""
    text = (raw or "").strip()
    if text.lower() in WITHHELD:
        return ParsedNumber("withheld")
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return ParsedNumber("invalid")
    if not phonenumbers.is_valid_number(number):
        return ParsedNumber("invalid")
    return ParsedNumber("valid", phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def normalise(raw: str, region: str = "GB") -> str:
    """Parse a number typed by a person into E.164; raises ValueError with a message fit to show them."""
    try:
        number = phonenumbers.parse(raw.strip(), region)
    except phonenumbers.NumberParseException:
        raise ValueError("not a phone number: use a UK number or +country code and number") from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError("not a valid phone number for its country")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def display(e164: str) -> str:
    """A stored number as the caller would say it: UK numbers in the national form (07400 123456),
    others with their country code (+33 6 12 34 56 78). Anything unparseable is shown as stored."""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return e164
    style = (phonenumbers.PhoneNumberFormat.NATIONAL if number.country_code == 44
             else phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    return phonenumbers.format_number(number, style)


def mask(e164: str | None) -> str:
    """A number safe to show on a wall or write to a log: only the last three digits remain."""
    if not e164:
        return "withheld"
    return "•" * max(len(e164) - 3, 0) + e164[-3:]
