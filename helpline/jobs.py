"""Text messages to callers about their appointments, and the reminder job the scheduler runs.

A text goes only to a caller who agreed to texts, and only to a number that can take one. The
wording is discreet: a phone may be seen by others, so it never names the service, a clinician's
specialty or any reason for the appointment.
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


def text_caller(booking: Booking, kind: str) -> str:
    """Send the caller the text for `kind` if they agreed to texts; returns what happened.

    not_agreed, no_mobile, sent or failed. A failure is logged, never raised: the booking stands.
    """
    fields = details(current_app.extensions["helpline.vault"], booking.contact)
    if fields.get("ok_to_text") is not True:
        return "not_agreed"
    number: Optional[str] = fields.get("phone") if is_textable(fields.get("phone")) else None
    number = number or (fields.get("phone_alt") if is_textable(fields.get("phone_alt")) else None)
    if number is None:
        return "no_mobile"
    try:
        gateway().send_sms(number, wording(kind, booking))
    except TwilioUnavailable as exc:
        log.warning("text for booking %s not sent: %s", booking.id, exc)
        return "failed"
    return "sent"


def reminder_time(booking: Booking) -> dt.datetime:
    """When the reminder is due: REMINDER_TIME, Europe/London, the day before the appointment."""
    day_before = booking.starts_at.astimezone(LONDON).date() - dt.timedelta(days=1)
    return dt.datetime.combine(day_before, REMINDER_TIME, LONDON).astimezone(dt.timezone.utc)


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
