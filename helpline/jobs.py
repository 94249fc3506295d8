"""Text messages to callers about their appointments, and the reminder job the scheduler runs.

A text goes only to a caller who agreed to texts, and only to a number that can take one, and only
within the hours the caller said are safe (`safe_from`/`safe_until`, Europe/London): outside them it
is held and sent by the scheduler when they open. The wording is discreet: a phone may be seen by
others, so it never names the service, a clinician's specialty or any reason for the appointment.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Optional

from apscheduler.jobstores.base import JobLookupError
from flask import current_app

from .booking import LONDON
from .contacts import details, is_textable
from .db import db
from .models import Booking, utcnow
from .scheduler import scheduler
from .twilio_rest import TwilioUnavailable, gateway

log = logging.getLogger(__name__)

#: The job the scheduler stores for each booking's reminder, by import path so it survives restarts.
REMINDER_JOB = "helpline.jobs:send_reminder"
HELD_TEXT_JOB = "helpline.jobs:send_held_text"
#: Reminders go out at this local time on the day before the appointment.
REMINDER_TIME = dt.time(10, 0)
OPT_OUT = "Reply STOP to opt out."


def when(booking: Booking) -> str:
    """"Tue 3 Dec at 10:30", in Europe/London time."""
    local = booking.starts_at.astimezone(LONDON)
    return f"{local:%a} {local.day} {local:%b} at {local:%H:%M}"


def where(booking: Booking) -> str:
    """The site's short address, or that the video link will follow."""
    return booking.site.short_address if booking.site else "by video (the link will follow)"


def wording(kind: str, booking: Booking) -> str:
    """The text for a confirmation, a move, a cancellation or a reminder."""
    if kind == "booked":
        return f"Your appointment is confirmed for {when(booking)}, {where(booking)}. {OPT_OUT}"
    if kind == "moved":
        return f"Your appointment has moved to {when(booking)}, {where(booking)}. {OPT_OUT}"
    if kind == "cancelled":
        return f"Your appointment on {when(booking)} has been cancelled. {OPT_OUT}"
    if kind == "reminder":
        return f"Reminder: your appointment is tomorrow, {when(booking)}, {where(booking)}. {OPT_OUT}"
    raise ValueError(f"no wording for {kind!r}")


def _minute(clock: Optional[str], default: int) -> int:
    if not clock:
        return default
    hours, minutes = clock.split(":")
    return int(hours) * 60 + int(minutes)


def safe_window(fields: dict) -> Optional[tuple[int, int]]:
    """The caller's safe hours as (first minute, end minute) of the Europe/London day; None if not given."""
    if not fields.get("safe_from") and not fields.get("safe_until"):
        return None
    return _minute(fields.get("safe_from"), 0), _minute(fields.get("safe_until"), 24 * 60)


def next_safe(fields: dict, at: dt.datetime) -> dt.datetime:
    """`at` if it falls in the caller's safe hours (or they gave none), else when those hours next open."""
    window = safe_window(fields)
    if window is None:
        return at
    local = at.astimezone(LONDON)
    minute = local.hour * 60 + local.minute
    if window[0] <= minute < window[1]:
        return at
    day = local.date() if minute < window[0] else local.date() + dt.timedelta(days=1)
    opens = dt.datetime.combine(day, dt.time(window[0] // 60, window[0] % 60), LONDON)
    return opens.astimezone(dt.timezone.utc)


def held_text_job_id(booking_id: int) -> str:
    """The scheduler's id for a booking's held text (the latest news replaces one not yet sent)."""
    return f"text-{booking_id}"


def text_caller(booking: Booking, kind: str, now: Optional[dt.datetime] = None) -> str:
    """Send the caller the text for `kind` if they agreed to texts; returns what happened.

    not_agreed, no_mobile, held (outside the caller's safe hours: the scheduler sends it when they
    open), sent or failed. A failure is logged, never raised: the booking stands.
    """
    fields = details(current_app.extensions["helpline.vault"], booking.contact)
    if fields.get("ok_to_text") is not True:
        return "not_agreed"
    number: Optional[str] = fields.get("phone") if is_textable(fields.get("phone")) else None
    number = number or (fields.get("phone_alt") if is_textable(fields.get("phone_alt")) else None)
    if number is None:
        return "no_mobile"
    now = now or utcnow()
    send_at = next_safe(fields, now)
    if send_at > now:
        scheduler().add_job(HELD_TEXT_JOB, "date", run_date=send_at, args=[booking.id, kind],
                            id=held_text_job_id(booking.id), replace_existing=True)
        return "held"
    try:
        gateway().send_sms(number, wording(kind, booking))
    except TwilioUnavailable as exc:
        log.warning("text for booking %s not sent: %s", booking.id, exc)
        return "failed"
    return "sent"


def reminder_time(booking: Booking) -> dt.datetime:
    """When the reminder is due: REMINDER_TIME, Europe/London, the day before the appointment, or the
    start of the caller's safe hours that day if REMINDER_TIME is outside them."""
    day_before = booking.starts_at.astimezone(LONDON).date() - dt.timedelta(days=1)
    usual = dt.datetime.combine(day_before, REMINDER_TIME, LONDON)
    window = safe_window(details(current_app.extensions["helpline.vault"], booking.contact))
    if window is not None and not window[0] <= REMINDER_TIME.hour * 60 + REMINDER_TIME.minute < window[1]:
        usual = dt.datetime.combine(day_before, dt.time(window[0] // 60, window[0] % 60), LONDON)
    return usual.astimezone(dt.timezone.utc)


def send_held_text(booking_id: int, kind: str) -> str:
    """The held-text job: send, now that the caller's safe hours have opened, news that still holds."""
    booking = db.session.get(Booking, booking_id)
    if booking is None or (kind == "cancelled") != (booking.status == "cancelled"):
        return "skipped"
    if kind != "cancelled" and booking.starts_at <= utcnow():
        return "skipped"
    outcome = text_caller(booking, kind)
    booking.confirmation = outcome
    db.session.commit()
    log.info("held text for booking %s: %s", booking_id, outcome)
    return outcome


def reminder_job_id(booking_id: int) -> str:
    """The scheduler's id for a booking's reminder (one per booking, replaced on a move)."""
    return f"reminder-{booking_id}"


def send_reminder(booking_id: int) -> str:
    """The reminder job: text the caller the day before, if the booking still stands."""
    booking = db.session.get(Booking, booking_id)
    if booking is None or booking.status != "booked" or booking.starts_at <= utcnow():
        return "skipped"
    outcome = text_caller(booking, "reminder")
    log.info("reminder for booking %s: %s", booking_id, outcome)
    return outcome


def schedule_reminder(booking: Booking, now: Optional[dt.datetime] = None) -> Optional[dt.datetime]:
    """Store (or move) the booking's reminder job; None when the day-before time has already passed."""
    at = reminder_time(booking)
    if at <= (now or utcnow()):
        cancel_reminder(booking.id)
        return None
    scheduler().add_job(REMINDER_JOB, "date", run_date=at, args=[booking.id], id=reminder_job_id(booking.id),
                        replace_existing=True)
    return at


def cancel_reminder(booking_id: int) -> None:
    """Remove the booking's reminder job, if there is one."""
    try:
        scheduler().remove_job(reminder_job_id(booking_id))
    except JobLookupError:
        pass
