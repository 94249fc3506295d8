"""An iCalendar (RFC 5545) entry for a clinician's booking, written by hand (no calendar library is
installed): CRLF line ends, TEXT values escaped, lines folded at 75 octets, times in UTC.

Calendars are often synced to outside services, so the entry names no patient: it says where and
when, and the booking's reference, and the clinician opens the record in the console.
"""

from __future__ import annotations

import datetime as dt
from typing import Optional

from .models import Booking

PRODID = "-//Practitioner Helpline//Clinician bookings//EN"


def escape(text: str) -> str:
    """Escape a TEXT value (RFC 5545 3.3.11): backslash, semicolon, comma and newlines."""
    return (text.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,")
            .replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\n"))


def fold(line: str) -> str:
    """Fold a content line into pieces of at most 75 octets (RFC 5545 3.1), never splitting a UTF-8 character."""
    encoded = line.encode("utf-8")
    if len(encoded) <= 75:
        return line
    pieces, current, limit = [], b"", 75
    for char in line:
        octets = char.encode("utf-8")
        if len(current) + len(octets) > limit:
            pieces.append(current.decode("utf-8"))
            current, limit = b"", 74  # continuation lines start with one space
        current += octets
    pieces.append(current.decode("utf-8"))
    return "\r\n ".join(pieces)


def stamp(instant: dt.datetime) -> str:
    """A UTC DATE-TIME value: 20261203T103000Z."""
    return instant.astimezone(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def booking_ics(booking: Booking, host: str, now: dt.datetime, url: Optional[str] = None) -> str:
    """The booking as a one-event calendar; a cancelled booking is sent as a cancelled event."""
    location = ", ".join([*booking.site.address, booking.site.town]) if booking.site else "Video call"
    description = f"Booking reference B{booking.id}. The first-contact record is in the clinician console."
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        f"PRODID:{PRODID}",
        "CALSCALE:GREGORIAN",
        "METHOD:PUBLISH",
        "BEGIN:VEVENT",
        f"UID:booking-{booking.id}@{host}",
        f"DTSTAMP:{stamp(now)}",
        f"DTSTART:{stamp(booking.starts_at)}",
        f"DTEND:{stamp(booking.ends_at)}",
        f"SEQUENCE:{booking.revision}",
        f"STATUS:{'CANCELLED' if booking.status == 'cancelled' else 'CONFIRMED'}",
        f"SUMMARY:{escape(f'Appointment B{booking.id}' + (' (video)' if booking.modality == 'video' else ''))}",
        f"LOCATION:{escape(location)}",
        f"DESCRIPTION:{escape(description)}",
        "CLASS:CONFIDENTIAL",
        "TRANSP:OPAQUE",
    ]
    if url:
        lines.append(f"URL:{url}")
    lines += ["END:VEVENT", "END:VCALENDAR"]
    return "".join(fold(line) + "\r\n" for line in lines)
