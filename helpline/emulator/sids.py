"""Twilio-shaped identifiers and timestamps."""

from __future__ import annotations

import secrets
from datetime import datetime, timezone
from email.utils import format_datetime


def new_sid(prefix: str) -> str:
    """Return a fresh SID: a two-letter prefix and 32 lowercase hex digits, like Twilio's."""
    return prefix + secrets.token_hex(16)


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(timezone.utc)


def rfc2822(moment: datetime | None) -> str | None:
    """Format a datetime the way Twilio's 2010 API does ("Tue, 13 Feb 2024 10:00:00 +0000")."""
    if moment is None:
        return None
    return format_datetime(moment.astimezone(timezone.utc)).replace("-0000", "+0000")


def iso(moment: datetime | None) -> str | None:
    """Format a datetime as ISO 8601 with its offset, for the emulator's own JSON."""
    return None if moment is None else moment.isoformat()
