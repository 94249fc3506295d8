"""The clinician's side: their patients, whether each came to their appointments, and discharge.

Only the clinician a record is booked with may see or change these (a live booking with them, as for
the record itself: see helpline/contacts.py). Every name shown and every change is audited.
"""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, jsonify
from flask_login import current_user

from .. import audit, contacts, episodes
from ..auth import roles_required
from ..db import db
from ..models import Booking, Contact, utcnow
from ..errors import error
from . import BadRequest, Routes, body
from .bookings import response
from .contacts import vault
from .openapi import documented

routes = Routes()


def own_booking_or_403(booking_id: int) -> Booking:
    """The booking, if it is with the clinician logged in; the same 403 whether or not it exists."""
    booking = db.session.get(Booking, booking_id)
    if booking is None or booking.clinician.user_id != current_user.id:
        raise BadRequest("forbidden", "you may not see or change this booking", 403)
    return booking


def own_patient_or_403(contact_id: int) -> Contact:
    """The record, if the clinician logged in has a live booking for it; the same 403 otherwise."""
    contact = db.session.get(Contact, contact_id)
    if contact is None or not contacts.may_read(db.session, contact, current_user.id, "clinician"):
        raise BadRequest("forbidden", "you may not see or change this record", 403)
    return contact


def problem(exc: episodes.EpisodeProblem) -> Response:
    """An episode's refusal as the API's error: 400 or 422 with the field, or 409 with the message."""
    db.session.rollback()
    if exc.status in (400, 422):
        return error(exc.status, exc.code, [{"field": exc.field, "problem": exc.message}])
    return error(exc.status, exc.code, exc.message)


@routes.put("/bookings/<int:booking_id>/attendance")
@documented(body=episodes.AttendanceUpdate, roles=("clinician",), responses={
    200: "The booking, with attendance (attended, did_not_attend or null)",
    409: "not_yet (the appointment has not begun) or cancelled"})
@roles_required("clinician")
def booking_attendance(booking_id: int) -> Response:
    """Record whether the caller came to an appointment with you (once it has begun)."""
    booking = own_booking_or_403(booking_id)
    update = body(episodes.AttendanceUpdate)
    try:
        episodes.record_attendance(booking, update.attendance)
    except episodes.EpisodeProblem as exc:
        return problem(exc)
    audit.record(db.session, current_user, "booking.attendance", "booking", booking.id)
    db.session.commit()
    return response(booking)[0]


@routes.put("/contacts/<int:contact_id>/discharge")
@documented(body=episodes.DischargeUpdate, roles=("clinician",), responses={
    200: "{contact_id, discharged_on, keep_until}: the record is kept until keep_until, then removed",
    422: "invalid [{field, problem}]: a date in the future or before the first contact"})
@roles_required("clinician")
def discharge_contact(contact_id: int) -> Response:
    """Record the end of an episode of care (its date), or reopen it with null."""
    contact = own_patient_or_403(contact_id)
    update = body(episodes.DischargeUpdate)
    try:
        episodes.discharge(contact, update.discharged_on, current_user.id)
    except episodes.EpisodeProblem as exc:
        return problem(exc)
    audit.record(db.session, current_user, "contact.discharge" if update.discharged_on else "contact.reopen",
                 "contact", contact.id)
    db.session.commit()
    until = episodes.keep_until(contact, current_app.config["HELPLINE"])
    return jsonify({"contact_id": contact.id, "discharged_on": update.discharged_on.isoformat() if update.discharged_on else None,
                    "keep_until": until.isoformat() if until else None})


@routes.get("/clinician/patients")
@documented(roles=("clinician",), responses={
    200: "{patients: [{contact_id, name, preferred_name, home_locality {code, name}, work_locality, first_contact, "
         "next_appointment, last_appointment, appointments, attended, did_not_attend, discharged_on, keep_until}]}"})
@roles_required("clinician")
def clinician_patients() -> Response:
    """The people booked with you: open episodes first, then those discharged. The names shown are audited."""
    settings = current_app.config["HELPLINE"]
    now = utcnow()
    found = episodes.clinicians_patients(db.session, current_user.id)
    fields = {contact.id: contacts.details(vault(), contact) for contact, _ in found}
    names = episodes.locality_names(db.session, {value for record in fields.values()
                                                 for value in (record.get("home_locality"), record.get("work_locality")) if value})
    patients: list[dict[str, Any]] = [episodes.patient_json(contact, bookings, fields[contact.id], names, settings, now)
                                      for contact, bookings in found]
    patients.sort(key=lambda patient: (patient["discharged_on"] is not None, patient["next_appointment"] is None,
                                       patient["next_appointment"] or "", (patient["preferred_name"] or patient["name"] or "").lower()))
    for contact, _ in sorted(found, key=lambda item: item[0].id):
        audit.record(db.session, current_user, "contact.name_read", "contact", contact.id)
    if found:
        db.session.commit()
    return jsonify({"patients": patients})
