"""Booking, cancelling and moving appointments; the clinician's bookings and calendar entries.

After every change the caller may get a discreet text (only if they agreed to texts) and the
day-before reminder is stored, moved or removed in the scheduler's job store. Both happen after the
booking has committed, and neither can undo it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal, Optional
from urllib.parse import urlsplit

from flask import Response, current_app, jsonify, url_for
from flask_login import current_user
from pydantic import BaseModel, ConfigDict, Field, StrictInt
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload

from .. import booking as booking_service
from .. import audit, contacts, jobs
from ..auth import roles_required
from ..calendar import booking_ics
from ..db import append, db
from ..models import Booking, CallEvent, Clinician, Contact, utcnow
from ..errors import error
from . import BadRequest, Routes, body
from .contacts import call_or_404, vault
from .localities import query_args
from .openapi import date, documented

routes = Routes()


class NewBooking(BaseModel):
    """POST /api/bookings."""

    model_config = ConfigDict(extra="forbid")

    call_id: StrictInt
    slot_id: str = Field(min_length=1, max_length=64)


class Move(BaseModel):
    """POST /api/bookings/<id>/reschedule and PATCH /api/bookings/<id>."""

    model_config = ConfigDict(extra="forbid")

    slot_id: str = Field(min_length=1, max_length=64)


class Range(BaseModel):
    """GET /api/clinician/bookings: Europe/London dates, inclusive; by default from today, for 62 days."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    start_date: Optional[dt.date] = Field(default=None, alias="from")
    end_date: Optional[dt.date] = Field(default=None, alias="to")


def slot_taken(slot_id: str, contact: Optional[Contact]) -> Response:
    """409 with the next free slots like the one that was lost."""
    db.session.rollback()
    fields = contacts.details(vault(), contact) if contact else {}
    next_slots = booking_service.alternatives(db.session, slot_id, fields)
    return error(409, "slot_taken", {"next_slots": booking_service.slots_json(next_slots)})


def follow_up(booking_id: int, kind: Literal["booked", "moved", "cancelled"]) -> Booking:
    """Text the caller and store, move or remove the reminder; record what happened on the booking."""
    # Site and contact are loaded now, so that composing the text needs no query.
    booking = db.session.scalars(select(Booking).where(Booking.id == booking_id)
                                 .options(joinedload(Booking.site), joinedload(Booking.contact))).one()
    # End the transaction first: on SQLite it holds the write lock, which the job store needs.
    db.session.commit()
    outcome = jobs.text_caller(booking, kind)
    if kind == "cancelled":
        jobs.cancel_reminder(booking.id)
        reminder_at = None
    else:
        reminder_at = jobs.schedule_reminder(booking)
    booking = db.session.get_one(Booking, booking_id)
    booking.confirmation = outcome
    booking.reminder_at = reminder_at
    db.session.commit()
    return booking


def record_on_timeline(booking: Booking, action: str) -> None:
    """A line on the call's timeline: which booking, what happened; nothing personal."""
    append(db.session, CallEvent, call_id=booking.call_id, kind="booking", detail={"action": action, "booking_id": booking.id})


def booking_or_403(booking_id: int) -> Booking:
    """The booking, if this user may act on it: its handler, or the clinician it is with."""
    booking = db.session.get(Booking, booking_id)
    if booking is not None:
        if current_user.role == "handler":
            call = call_or_404(booking.call_id)
            if contacts.may_write(db.session, call, booking.contact, current_user.id):
                return booking
        elif current_user.role == "clinician" and booking.clinician.user_id == current_user.id:
            return booking
    raise BadRequest("forbidden", "you may not see or change this booking", 403)


def response(booking: Booking, status: int = 200) -> tuple[Response, int]:
    """The booking as JSON."""
    return jsonify({**booking_service.booking_json(booking), "sms": booking.confirmation}), status


@routes.post("/bookings")
@documented(body=NewBooking, roles=("handler",), responses={
    201: "The booking: {id, call_id, contact_id, status, start, end, modality, site, clinician, sms, reminder_at}",
    404: "slot_not_found: the clinician does not offer that slot",
    409: "slot_taken {next_slots}, contact_incomplete {missing}, or avoided (a clinician or site the caller "
         "asked not to meet)"})
@roles_required("handler")
def create_booking() -> tuple[Response, int] | Response:
    """Book a slot for the caller on this call: 201, or 409 slot_taken with the next free slots."""
    request_body = body(NewBooking)
    call = call_or_404(request_body.call_id)
    contact = contacts.contact_for_call(db.session, call.id)
    if not contacts.may_write(db.session, call, contact, current_user.id):
        return error(403, "forbidden", "only the handler who took this call can book for it")
    if contact is None:
        return error(409, "contact_incomplete", {"missing": ["about_self", "consent_to_keep", "name", "contact_route"]})
    try:
        fields = contacts.with_caller_number(vault(), call, contact)
        booking = booking_service.book(db.session, contact, fields, request_body.slot_id, current_user.id)
        record_on_timeline(booking, "booked")
        db.session.commit()
    except booking_service.BookingRefused as exc:
        db.session.rollback()
        return error(409, "contact_incomplete", {"message": exc.message, "missing": exc.missing})
    except booking_service.SlotNotFound as exc:
        db.session.rollback()
        return error(404, "slot_not_found", str(exc))
    except booking_service.SlotAvoided as exc:
        db.session.rollback()
        return error(409, "avoided", str(exc))
    except (booking_service.SlotTaken, IntegrityError):
        return slot_taken(request_body.slot_id, contact)
    return response(follow_up(booking.id, "booked"), 201)


@routes.get("/bookings/<int:booking_id>")
@documented(responses={200: "The booking"}, roles=("handler", "clinician"))
@roles_required("handler", "clinician")
def get_booking(booking_id: int) -> tuple[Response, int]:
    """One booking, to its handler or its clinician."""
    return response(booking_or_403(booking_id))


@routes.delete("/bookings/<int:booking_id>")
@documented(responses={200: "The booking, cancelled"}, roles=("handler", "clinician"))
@roles_required("handler", "clinician")
def cancel_booking(booking_id: int) -> tuple[Response, int]:
    """Cancel: the slot is free again. Cancelling a cancelled booking changes nothing."""
    booking = booking_or_403(booking_id)
    if booking.status == "cancelled":
        return response(booking)
    booking_service.cancel(booking)
    record_on_timeline(booking, "cancelled")
    # Who cancelled someone's appointment, and when, belongs in the audit log like who made it.
    audit.record(db.session, current_user, "booking.cancel", "booking", booking.id)
    db.session.commit()
    return response(follow_up(booking.id, "cancelled"))


@routes.post("/bookings/<int:booking_id>/reschedule")
@routes.patch("/bookings/<int:booking_id>")
@documented(body=Move, roles=("handler", "clinician"), responses={
    200: "The booking, moved", 404: "slot_not_found",
    409: "slot_taken {next_slots} (the booking kept its slot), avoided (a declared conflict), or cancelled"})
@roles_required("handler", "clinician")
def reschedule_booking(booking_id: int) -> tuple[Response, int] | Response:
    """Move the booking to another slot, atomically: if that slot is taken, the booking keeps its old one."""
    move = body(Move)
    booking = booking_or_403(booking_id)
    if booking.status == "cancelled":
        return error(409, "cancelled", "this booking was cancelled: make a new one")
    contact = booking.contact
    try:
        booking_service.reschedule(db.session, booking, move.slot_id, fields=contacts.details(vault(), contact))
        record_on_timeline(booking, "moved")
        db.session.commit()
    except booking_service.SlotNotFound as exc:
        db.session.rollback()
        return error(404, "slot_not_found", str(exc))
    except booking_service.SlotAvoided as exc:
        db.session.rollback()
        return error(409, "avoided", str(exc))
    except (booking_service.SlotTaken, IntegrityError):
        return slot_taken(move.slot_id, contact)
    return response(follow_up(booking.id, "moved"))


@routes.get("/bookings/<int:booking_id>.ics")
@documented(responses={200: "text/calendar: the booking as an iCalendar (RFC 5545) event"}, roles=("clinician",))
@roles_required("clinician")
def booking_calendar(booking_id: int) -> Response:
    """The booking as an iCalendar entry, for the clinician it is with."""
    booking = booking_or_403(booking_id)
    public_url = current_app.config["HELPLINE"].public_url
    text = booking_ics(booking, urlsplit(public_url).hostname or "helpline", utcnow(),
                       url=public_url + url_for("console.clinician"))
    return Response(text, mimetype="text/calendar", headers={
        "Content-Disposition": f'attachment; filename="booking-{booking.id}.ics"', "Cache-Control": "no-store"})


@routes.get("/clinician/bookings")
@documented(responses={200: "{bookings: [booking + patient {name, preferred_name}, or null once cancelled], from, to}"},
            roles=("clinician",),
            query={"from": date("first date (default today)"), "to": date("last date, inclusive (default from + 61 days)")})
@roles_required("clinician")
def clinician_bookings() -> Response:
    """The logged-in clinician's bookings in a date range, with each patient's name and record id.

    A clinician sees the people they are treating: a cancelled booking keeps its slot in the diary
    but no longer names the patient. The names shown are audited like a read of the record.
    """
    params = query_args(Range)
    today = booking_service.local_date(utcnow())
    start = params.start_date or today
    end = params.end_date or start + dt.timedelta(days=booking_service.MAX_RANGE_DAYS - 1)
    if end < start or (end - start).days >= 366:
        raise BadRequest("invalid", [{"field": "to", "problem": "must be on or after `from`, and within a year of it"}], status=422)
    first, last = booking_service.wall_clock(start, 0), booking_service.wall_clock(end + dt.timedelta(days=1), 0)
    rows = db.session.scalars(
        select(Booking).join(Clinician, Clinician.id == Booking.clinician_id)
        .where(Clinician.user_id == current_user.id, Booking.starts_at >= first, Booking.starts_at < last)
        .order_by(Booking.starts_at)
    )
    result: list[dict[str, Any]] = []
    named: set[int] = set()
    for booking in rows:
        patient = None
        if booking.status == "booked":
            fields = contacts.details(vault(), booking.contact)
            patient = {"name": fields.get("name"), "preferred_name": fields.get("preferred_name")}
            named.add(booking.contact_id)
        result.append({**booking_service.booking_json(booking), "patient": patient})
    # One entry per record, so that searching the audit log for a record finds who saw the name.
    for contact_id in sorted(named):
        audit.record(db.session, current_user, "contact.name_read", "contact", contact_id)
    if named:
        db.session.commit()
    return jsonify({"bookings": result, "from": start.isoformat(), "to": end.isoformat()})
