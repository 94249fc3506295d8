"""Masking personal data in free text: anything that looks like a phone number or an email address.

Used wherever text the service did not write goes somewhere it is kept: every log record
(security.py) and every audit entry's reason and details (audit.py).
"""

from __future__ import annotations

import re

from .phone import mask

#: 9 to 15 digits, optionally after + (or its URL encoding), with up to two separators between digits:
#: +44 7911 123456, 07911-123-456, (020) 7946 0958, %2B447911123456. Not inside a longer word, so call
#: SIDs and other hex identifiers are left alone.
_PHONE = re.compile(r"(?<![\w+%])(?:\+|%2[Bb])?\(?\d(?:[\s().-]{0,2}\d){8,14}(?!\w)")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
#: Digit runs that are not phone numbers and are worth keeping legible in logs.
_NOT_A_NUMBER = re.compile(r"\d{4}-\d{2}-\d{2}(?:[ T]\d{2})?|\d{1,3}(?:\.\d{1,3}){3}")


def _mask_phone(match: re.Match[str]) -> str:
    text = match.group(0)
    if _NOT_A_NUMBER.fullmatch(text):
        return text
    return mask("+" + re.sub(r"\D", "", text))


def mask_personal(text: str) -> str:
    """`text` with anything that looks like a phone number or email address masked.

    Errs towards masking: a date-time or a long id masked in a log line costs nothing, a caller's
    number left in one is a breach.
    """
    if not text:
        return text
    return _PHONE.sub(_mask_phone, _EMAIL.sub("•••@•••", text))
