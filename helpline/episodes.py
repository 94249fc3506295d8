"""A caller's episode of care as their clinician sees it: attendance at each appointment, the episode's
end (discharge), and how long the record is kept after it.

A first-contact record is one episode. The clinician treating the caller records whether they came
to each appointment (once it has begun) and, when treatment ends, the discharge date. From that date
the record is kept `retention.discharged_record_days` (20 years by default: the NHS Records
Management Code keeps mental-health records 20 years after treatment ends) and then removed by the
purge rule below: the record, its bookings, risk screens and questionnaires go, and its call is
anonymised (what statistics need stays, see retention.py). An episode never discharged is kept as
long from its last sign of care (the record's last change, appointment or questionnaire). A
person's request to see or erase what is held about them (subjects.py) takes in the same records,
whether discharged or not.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session

from .booking import local_date
from .config import Settings
from .crypto import Vault
from .keys import vaults
from .models import Booking, Clinician, Contact, Locality, Questionnaire, RiskScreen, Site, utcnow
from .retention import anonymise_calls, retention_rule
from .subjects import Subject, SubjectSource, register_subject_source, row_dict


class AttendanceUpdate(BaseModel):
    """PUT /api/bookings/<id>/attendance: whether the caller came (null: not recorded)."""

    model_config = ConfigDict(extra="forbid")

    attendance: Optional[Literal["attended", "did_not_attend"]] = Field(...)


class DischargeUpdate(BaseModel):
    """PUT /api/contacts/<id>/discharge: the date treatment ended (null: the episode is open again)."""

    model_config = ConfigDict(extra="forbid")

    discharged_on: Optional[dt.date] = Field(...)


class EpisodeProblem(Exception):
    """A change the episode's state refuses: an error code, the field, and a message for the clinician."""

    def __init__(self, status: int, code: str, field: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.field = field
        self.message = message


def record_attendance(booking: Booking, attendance: Optional[str], now: Optional[dt.datetime] = None) -> None:
    """Record whether the caller came; only for a booking that holds its slot and has begun."""
    now = now or utcnow()
    if booking.status != "booked":
        raise EpisodeProblem(409, "cancelled", "attendance", "this appointment was cancelled: there is no attendance to record")
    if booking.starts_at > now:
        raise EpisodeProblem(409, "not_yet", "attendance",
                             "attendance can be recorded once the appointment has begun")
    booking.attendance = attendance
    booking.attendance_at = now if attendance is not None else None


def discharge(contact: Contact, on: Optional[dt.date], user_id: int, now: Optional[dt.datetime] = None) -> None:
    """Record the episode's end on `on` (a Europe/London date), or reopen it with None."""
    now = now or utcnow()
    if on is not None:
        if on > local_date(now):
            raise EpisodeProblem(422, "invalid", "discharged_on", "the discharge date cannot be in the future")
        if on < local_date(contact.created_at):
            raise EpisodeProblem(422, "invalid", "discharged_on",
                                 f"the discharge date cannot be before the first contact, "
                                 f"{local_date(contact.created_at):%-d %B %Y}")
    contact.discharged_on = on
    contact.discharged_at = now if on is not None else None
    contact.discharged_by_id = user_id if on is not None else None


def keep_until(contact: Contact, settings: Settings) -> Optional[dt.date]:
    """The last day the record is kept, once discharged."""
    if contact.discharged_on is None:
        return None
    return contact.discharged_on + dt.timedelta(days=settings.retention.discharged_record_days)


def locality_names(session: Session, codes: set[str]) -> dict[str, str]:
    """Each known locality code's name (NHS West Yorkshire ICB for QWO)."""
    codes = {code for code in codes if code}
    if not codes:
        return {}
    return dict(session.execute(select(Locality.code, Locality.name).where(Locality.code.in_(sorted(codes)))).all())


def clinicians_patients(session: Session, user_id: int) -> list[tuple[Contact, list[Booking]]]:
    """The records with a live booking with this clinician, and all their bookings with them, oldest first."""
    rows = session.scalars(
        select(Booking).join(Clinician, Clinician.id == Booking.clinician_id)
        .where(Clinician.user_id == user_id)
        .order_by(Booking.starts_at)
    ).all()
    by_contact: dict[int, list[Booking]] = {}
    for booking in rows:
        by_contact.setdefault(booking.contact_id, []).append(booking)
    patients = []
    for bookings in by_contact.values():
        if any(booking.status == "booked" for booking in bookings):
            patients.append((bookings[0].contact, bookings))
    return patients


def patient_json(contact: Contact, bookings: list[Booking], fields: dict[str, Any], names: dict[str, str],
                 settings: Settings, now: dt.datetime) -> dict[str, Any]:
    """One of the clinician's patients: who, where they live and work (in words), their appointments."""
    live = [booking for booking in bookings if booking.status == "booked"]
    upcoming = [booking for booking in live if booking.ends_at > now]
    past = [booking for booking in live if booking.starts_at <= now]
    until = keep_until(contact, settings)

    def locality(name: str) -> Optional[dict[str, str]]:
        code = fields.get(name)
        return {"code": code, "name": names.get(code, code)} if code else None

    return {
        "contact_id": contact.id,
        "name": fields.get("name"),
        "preferred_name": fields.get("preferred_name"),
        "home_locality": locality("home_locality"),
        "work_locality": locality("work_locality"),
        "first_contact": local_date(contact.created_at).isoformat(),
        "next_appointment": upcoming[0].starts_at.isoformat() if upcoming else None,
        "last_appointment": past[-1].starts_at.isoformat() if past else None,
        "appointments": len(live),
        "attended": sum(1 for booking in live if booking.attendance == "attended"),
        "did_not_attend": sum(1 for booking in live if booking.attendance == "did_not_attend"),
        "discharged_on": contact.discharged_on.isoformat() if contact.discharged_on else None,
        "keep_until": until.isoformat() if until else None,
    }


@retention_rule("discharged_contacts")
def _purge_discharged(session: Session, now: dt.datetime, settings: Settings) -> int:
    """Records whose episode ended more than `discharged_record_days` ago: removed, their calls anonymised."""
    cutoff = local_date(now) - dt.timedelta(days=settings.retention.discharged_record_days)
    return _remove(session, session.execute(select(Contact.id, Contact.call_id).where(Contact.discharged_on < cutoff)).all())


@retention_rule("undischarged_contacts")
def _purge_undischarged(session: Session, now: dt.datetime, settings: Settings) -> int:
    """Records never discharged, untouched for `discharged_record_days`: removed as discharged ones are.

    A clinician may never record the end of an episode (the caller was signposted elsewhere, or
    stopped coming). Its last sign of care - the record's last change, its last appointment's end,
    its last questionnaire - stands for the discharge, so that no record is kept for ever.
    """
    cutoff = now - dt.timedelta(days=settings.retention.discharged_record_days)
    later_appointment = select(Booking.id).where(Booking.contact_id == Contact.id, Booking.ends_at >= cutoff).exists()
    later_questionnaire = select(Questionnaire.id).where(Questionnaire.contact_id == Contact.id, Questionnaire.at >= cutoff).exists()
    return _remove(session, session.execute(select(Contact.id, Contact.call_id).where(
        Contact.discharged_on.is_(None), Contact.updated_at < cutoff, ~later_appointment, ~later_questionnaire)).all())


def _remove(session: Session, rows: Any) -> int:
    """Remove the records (contact id, call id) with what hangs off them, and anonymise their calls."""
    if not rows:
        return 0
    contact_ids = [contact_id for contact_id, _ in rows]
    call_ids = [call_id for _, call_id in rows]
    delete_records(session, contact_ids, call_ids)
    anonymise_calls(session, call_ids)
    return len(contact_ids)


def delete_records(session: Session, contact_ids: list[int], call_ids: list[int]) -> int:
    """Delete the records and what hangs off them (`episode_rows`); returns the rows deleted."""
    deleted = 0
    for statement in (*episode_rows(contact_ids, call_ids), delete(Contact).where(Contact.id.in_(contact_ids))):
        deleted += session.execute(statement.execution_options(synchronize_session=False)).rowcount or 0
    return deleted


def episode_rows(contact_ids: list[int], call_ids: list[int]) -> list[Any]:
    """DELETE statements for what hangs off the records: their questionnaires, bookings and risk screens."""
    return [delete(Questionnaire).where(Questionnaire.contact_id.in_(contact_ids) | Questionnaire.call_id.in_(call_ids)),
            delete(Booking).where(Booking.contact_id.in_(contact_ids)), delete(RiskScreen).where(RiskScreen.call_id.in_(call_ids))]


# -- a person's rights: their records in an export or an erasure (subjects.py) -----------------------


def _subject_expand(session: Session, subject: Subject, keys: str) -> None:
    """The records of the person's calls, those under their number's keyed hash, and those named by
    id; and back from each record to its call.

    The numbers written in a record (a phone to reach them on) are not followed to other calls: a
    shared or work phone given to reach someone may be another person's own line.
    """
    hashes = {vault.keyed_hash(number) for number in subject.numbers for vault in vaults(keys)}
    links = [column.in_(sorted(values)) for column, values in
             ((Contact.id, subject.contact_ids), (Contact.call_id, subject.call_ids), (Contact.person_hash, hashes)) if values]
    if not links:
        return
    for contact_id, call_id in session.execute(select(Contact.id, Contact.call_id).where(or_(*links))):
        subject.contact_ids.add(contact_id)
        subject.call_ids.add(call_id)


def _subject_export(session: Session, subject: Subject, vault: Vault) -> dict[str, list[dict[str, Any]]]:
    """The person's first-contact records, appointments, risk screens and questionnaires, decrypted."""
    contact_ids, call_ids = sorted(subject.contact_ids), sorted(subject.call_ids)
    bookings = session.execute(
        select(Booking, Clinician.display_name, Site.name).join(Clinician, Booking.clinician_id == Clinician.id)
        .outerjoin(Site, Booking.site_id == Site.id).where(Booking.contact_id.in_(contact_ids)).order_by(Booking.starts_at))
    return {
        "first_contact_records": [row_dict(contact, vault) for contact in
                                  session.scalars(select(Contact).where(Contact.id.in_(contact_ids)).order_by(Contact.id))],
        "appointments": [{**row_dict(booking, vault), "clinician": clinician, "site": site}
                         for booking, clinician, site in bookings],
        "risk_screens": [row_dict(screen, vault) for screen in
                         session.scalars(select(RiskScreen).where(RiskScreen.call_id.in_(call_ids)).order_by(RiskScreen.at))],
        "questionnaires": [row_dict(questionnaire, vault) for questionnaire in session.scalars(
            select(Questionnaire).where(or_(Questionnaire.contact_id.in_(contact_ids), Questionnaire.call_id.in_(call_ids)))
            .order_by(Questionnaire.at))],
    }


def _subject_erase(session: Session, subject: Subject) -> int:
    """Remove the person's records with everything that hangs off them, as the purge removes an
    episode past its time (their calls are anonymised by the calls' own source, after this)."""
    return delete_records(session, sorted(subject.contact_ids), sorted(subject.call_ids))


def appointments_to_come(session: Session, contact_ids: set[int]) -> int:
    """How many of these records' appointments are booked and not yet over (an erasure removes them)."""
    return session.scalar(select(func.count(Booking.id)).where(
        Booking.contact_id.in_(sorted(contact_ids)), Booking.status == "booked", Booking.ends_at > utcnow())) or 0


register_subject_source(SubjectSource("contacts", _subject_expand, _subject_export, _subject_erase))
