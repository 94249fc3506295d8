"""First-contact records: what the handler may write, how it is kept, and who may read it.

The handler's form saves as they type: each save sends only the fields that changed, and each field
is last-write-wins. Every personal field is kept in one encrypted JSON object on the record. If the
caller is calling about someone else, nothing about anyone is kept: whatever was typed is deleted,
with the call's number.

Who sees what:
- the handler who took the call (or who recorded the contact): the whole record;
- a clinician with a live booking for that record: the whole record (they are treating the caller);
- any handler, for a returning caller: only that there were earlier contacts, their dates,
  dispositions and booking status (`earlier_contacts`), never names, numbers or notes;
- everyone else, supervisors included: nothing (403).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Annotated, Any, Literal, Optional

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StringConstraints, field_validator
from pydantic_core import PydanticCustomError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from . import lifecycle
from .crypto import Vault
from .models import Booking, Call, Clinician, Contact, Handler, Locality, QueueEntry, RiskScreen, Site, utcnow
from .phone import display, normalise

#: Queue states in which the assigned handler has not yet accepted the call.
NOT_YET_ACCEPTED = ("waiting", "offered")

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]{2,}$")
_LOCALITY = re.compile(r"^[A-Z0-9]{3,8}$")

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


#: Safe times are whole minutes of Europe/London wall-clock time, "HH:MM".
_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
#: At most this many people or places a caller may ask not to meet.
MAX_AVOID = 20


class FieldProblems(Exception):
    """A save that would leave the record contradicting itself: problems by field (400, nothing changed)."""

    def __init__(self, problems: list[dict[str, str]]):
        super().__init__("; ".join(problem["problem"] for problem in problems))
        self.problems = problems


class Avoid(BaseModel):
    """A declared conflict: a clinician or a site the caller must not meet or be seen at."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["clinician", "site"]
    id: Annotated[int, Field(strict=True, ge=1, le=2**31 - 1)]


class ContactError(Exception):
    """A save the record's state forbids (409), with a message for the handler."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _registration_number(value: Optional[str], pattern: str, code: str, message: str) -> Optional[str]:
    """A GMC or GDC number with its spaces taken out, or a validation error naming the field."""
    if value is None:
        return None
    digits = re.sub(r"\s", "", value)
    if not re.fullmatch(pattern, digits):
        raise PydanticCustomError(code, message)
    return digits


class ContactUpdate(BaseModel):
    """A partial save of the first-contact form: only the fields sent change; null clears a field."""

    model_config = ConfigDict(extra="forbid")

    about_self: Optional[StrictBool] = None
    name: Optional[Annotated[Text, Field(max_length=120)]] = None
    preferred_name: Optional[Annotated[Text, Field(max_length=80)]] = None
    profession: Optional[Literal["doctor", "dentist"]] = None
    trainee: Optional[StrictBool] = None
    grade: Optional[Annotated[Text, Field(max_length=80)]] = None
    gmc_number: Optional[str] = None
    gdc_number: Optional[str] = None
    practice: Optional[Literal["working_in_england", "returning_to_practice"]] = None
    phone: Optional[str] = None
    phone_alt: Optional[str] = None
    email: Optional[str] = None
    ok_to_leave_voicemail: Optional[StrictBool] = None
    ok_to_text: Optional[StrictBool] = None
    contact_times: Optional[Annotated[Text, Field(max_length=200)]] = None
    #: The hours (Europe/London) in which calls and texts are safe; messages wait for them.
    safe_from: Optional[str] = None
    safe_until: Optional[str] = None
    #: Why a booking goes ahead with no phone number or email for the caller.
    no_contact_reason: Optional[Annotated[Text, Field(max_length=300)]] = None
    needs: Optional[Annotated[list[Literal["mental_health", "addiction", "return_to_work", "other"]], Field(max_length=4)]] = None
    notes: Optional[Annotated[Text, Field(max_length=4000)]] = None
    home_locality: Optional[str] = None
    work_locality: Optional[str] = None
    accessibility_needs: Optional[Annotated[Text, Field(max_length=500)]] = None
    language: Optional[Annotated[Text, Field(max_length=40)]] = None
    consent_to_keep: Optional[StrictBool] = None
    #: The triage this call ends with, and why: an urgent or routine appointment, or another way to help.
    triage: Optional[Literal["urgent", "face_to_face", "video", "signposted", "self_help", "advice_given"]] = None
    triage_reason: Optional[Annotated[Text, Field(max_length=500)]] = None
    #: The caller agrees to be seen in the locality where they work, or by clinicians based there.
    workplace_agreed: Optional[StrictBool] = None
    #: Clinicians and sites the caller asked not to meet (declared conflicts); never shown to clinicians.
    avoid: Optional[Annotated[list[Avoid], Field(max_length=MAX_AVOID)]] = None

    @field_validator("gmc_number")
    @classmethod
    def _gmc(cls, value: Optional[str]) -> Optional[str]:
        return _registration_number(value, r"\d{7}", "gmc_number",
                                    "a GMC reference number is 7 digits, for example 1234567")

    @field_validator("gdc_number")
    @classmethod
    def _gdc(cls, value: Optional[str]) -> Optional[str]:
        # The GDC's registration numbers are 3 to 6 digits (the GDC's own guidance).
        return _registration_number(value, r"\d{3,6}", "gdc_number",
                                    "a GDC registration number is 3 to 6 digits, for example 123456")

    @field_validator("phone", "phone_alt")
    @classmethod
    def _phone(cls, value: Optional[str]) -> Optional[str]:
        if value is None:
            return None
        if len(value) > 40:
            raise PydanticCustomError("phone", "too long for a phone number")
        try:
            return normalise(value)
        except ValueError as exc:
            raise PydanticCustomError("phone", str(exc)) from None

    @field_validator("safe_from", "safe_until")
    @classmethod
    def _clock(cls, value: Optional[str]) -> Optional[str]:
        if value is None:
            return None
        value = value.strip()
        if len(value) == 4 and value[1] == ":":
            value = "0" + value
        if not _CLOCK.match(value):
            raise PydanticCustomError("clock", "a time of day as HH:MM, for example 18:30")
        return value

    @field_validator("avoid")
    @classmethod
    def _unique_avoid(cls, value: Optional[list[Avoid]]) -> Optional[list[Avoid]]:
        if value is None:
            return None
        seen: dict[tuple[str, int], Avoid] = {}
        for item in value:
            seen.setdefault((item.kind, item.id), item)
        return list(seen.values())

    @field_validator("email")
    @classmethod
    def _email(cls, value: Optional[str]) -> Optional[str]:
        if value is None:
            return None
        value = value.strip()
        if len(value) > 254 or not _EMAIL.match(value):
            raise PydanticCustomError("email", "not an email address: use the form name@example.org")
        local, domain = value.rsplit("@", 1)
        return f"{local}@{domain.lower()}"

    @field_validator("home_locality", "work_locality")
    @classmethod
    def _locality(cls, value: Optional[str]) -> Optional[str]:
        if value is None:
            return None
        value = value.strip().upper()
        if not _LOCALITY.match(value):
            raise PydanticCustomError("locality", "not a locality code: choose one from the list")
        return value

    @field_validator("needs")
    @classmethod
    def _unique_needs(cls, value: Optional[list[str]]) -> Optional[list[str]]:
        return None if value is None else list(dict.fromkeys(value))


def unknown_localities(session: Session, update: ContactUpdate) -> list[dict[str, str]]:
    """Per-field problems for locality codes that are well formed but not England's (checked in the database)."""
    fields = {name: getattr(update, name) for name in ("home_locality", "work_locality") if getattr(update, name)}
    if not fields:
        return []
    known = set(session.scalars(select(Locality.code).where(Locality.code.in_(set(fields.values())))))
    return [{"field": name, "problem": f"unknown locality {code}: choose one from the list"}
            for name, code in fields.items() if code not in known]


def unknown_avoided(session: Session, update: ContactUpdate) -> list[dict[str, str]]:
    """Per-item problems for declared conflicts that name no clinician or site (checked in the database)."""
    if not update.avoid:
        return []
    wanted = {"clinician": {item.id for item in update.avoid if item.kind == "clinician"},
              "site": {item.id for item in update.avoid if item.kind == "site"}}
    known = {
        "clinician": set(session.scalars(select(Clinician.id).where(Clinician.id.in_(wanted["clinician"])))) if wanted["clinician"] else set(),
        "site": set(session.scalars(select(Site.id).where(Site.id.in_(wanted["site"])))) if wanted["site"] else set(),
    }
    return [{"field": f"avoid.{index}", "problem": f"no {item.kind} with that id: choose one from the list"}
            for index, item in enumerate(update.avoid) if item.id not in known[item.kind]]


def consistency_problems(merged: dict[str, Any], changed: set[str]) -> list[dict[str, str]]:
    """Problems a save would leave between fields: texts without a mobile, safe times back to front."""
    problems = []
    if merged.get("ok_to_text") is True and not any(is_textable(merged.get(name)) for name in ("phone", "phone_alt")):
        field = "ok_to_text" if "ok_to_text" in changed or not changed & {"phone", "phone_alt"} else \
            ("phone" if "phone" in changed else "phone_alt")
        problems.append({"field": field, "problem": "texts need a mobile number: enter one under Phone or Other phone "
                                                    "first, or choose No for texts"})
    start, end = merged.get("safe_from"), merged.get("safe_until")
    if start and end and start >= end:
        field = "safe_until" if "safe_until" in changed else "safe_from"
        problems.append({"field": field, "problem": "the safe time must end after it starts, on the same day"})
    return problems


def has_contact_route(fields: dict[str, Any]) -> bool:
    """Whether the record gives any way to reach the caller: a phone number or an email."""
    return bool(fields.get("phone") or fields.get("phone_alt") or fields.get("email"))


def with_caller_number(vault: Vault, call: Call, contact: Contact) -> dict[str, Any]:
    """The record's fields, after keeping the number the caller rang from as their phone when the record
    gives no way to reach them (nor the handler's reason why): so that a booking always leaves the
    clinician a way to reach the person they will see."""
    fields = details(vault, contact)
    if has_contact_route(fields) or fields.get("no_contact_reason"):
        return fields
    if call.caller_number_status != "valid" or not call.caller_number_enc or contact.about_self is not True:
        return fields
    fields["phone"] = vault.decrypt(call.caller_number_enc)
    contact.details_enc = vault.encrypt(json.dumps(fields, sort_keys=True))
    return fields


def display_fields(fields: dict[str, Any]) -> dict[str, str]:
    """The record's phone numbers as the caller would say them (07400 123456, +33 6 12 34 56 78)."""
    return {name: display(fields[name]) for name in ("phone", "phone_alt") if fields.get(name)}


def details(vault: Vault, contact: Contact) -> dict[str, Any]:
    """The record's personal fields, decrypted."""
    return json.loads(vault.decrypt(contact.details_enc)) if contact.details_enc else {}


def contact_for_call(session: Session, call_id: int, lock: bool = False) -> Optional[Contact]:
    """The call's first-contact record, if one was started; `lock` holds it until commit (PostgreSQL)."""
    query = select(Contact).where(Contact.call_id == call_id)
    return session.scalar(query.with_for_update() if lock else query)


def handles_call(session: Session, call: Call, user_id: int) -> bool:
    """Whether `user_id` is the handler who accepted the call."""
    entry = session.scalar(select(QueueEntry).where(QueueEntry.call_id == call.id))
    if entry is None or entry.handler_id is None or entry.state in NOT_YET_ACCEPTED:
        return False
    handler = session.get(Handler, entry.handler_id)
    return handler is not None and handler.user_id == user_id


def may_write(session: Session, call: Call, contact: Optional[Contact], user_id: int) -> bool:
    """The handler who took the call, or who recorded its contact, may write to it."""
    return (contact is not None and contact.recorded_by_id == user_id) or handles_call(session, call, user_id)


def may_read(session: Session, contact: Contact, user_id: int, role: str) -> bool:
    """Whether this user may see the whole record (see the module's docstring)."""
    if role == "handler":
        call = session.get(Call, contact.call_id)
        return call is not None and may_write(session, call, contact, user_id)
    if role == "clinician":
        return session.scalar(
            select(Booking.id).join(Clinician, Clinician.id == Booking.clinician_id).where(
                Booking.contact_id == contact.id, Booking.status == "booked", Clinician.user_id == user_id
            ).limit(1)
        ) is not None
    return False


def save(session: Session, vault: Vault, call: Call, user_id: int, update: ContactUpdate,
         now: Optional[dt.datetime] = None) -> Contact:
    """Apply a partial save to the call's record, creating it on the first save.

    Raises ContactError when the record cannot take it (the caller is calling about someone else),
    and FieldProblems when the fields would contradict one another (texts with no mobile number).
    """
    now = now or utcnow()
    changes = update.model_dump(exclude_unset=True)
    contact = contact_for_call(session, call.id, lock=True)
    if contact is None:
        contact = Contact(call_id=call.id, person_hash=call.caller_hash, recorded_by_id=user_id, created_at=now)
        session.add(contact)
    personal = {name: value for name, value in changes.items() if name != "about_self"}
    if "about_self" in changes:
        if changes["about_self"] is False:
            forget_everyone(session, call, contact)
            contact.updated_at = now
            return contact
        contact.about_self = changes["about_self"]
        if contact.disposition == "third_party":
            contact.disposition = "in_progress"
            contact.person_hash = call.caller_hash
    if personal and contact.about_self is False:
        raise ContactError("third_party", "the caller is calling about someone else, so nothing about anyone is kept")
    if personal:
        merged = {**details(vault, contact), **personal}
        merged = {name: value for name, value in merged.items() if value is not None}
        problems = consistency_problems(merged, set(personal))
        if problems:
            raise FieldProblems(problems)
        contact.details_enc = vault.encrypt(json.dumps(merged, sort_keys=True)) if merged else None
    contact.updated_at = now
    return contact


def forget_everyone(session: Session, call: Call, contact: Contact) -> None:
    """The call is about someone else: delete what was typed, the risk answers and the caller's number."""
    if any(booking.status == "booked" for booking in contact.bookings):
        raise ContactError("booked", "cancel the booking first: a booking cannot stay for a third-party call")
    contact.about_self = False
    contact.disposition = "third_party"
    contact.details_enc = None
    contact.person_hash = None
    session.execute(delete(RiskScreen).where(RiskScreen.call_id == call.id))
    call.caller_number_enc = None
    call.caller_hash = None
    call.caller_number_status = "dropped"
    lifecycle.about_someone_else(session, call)


#: What the phone menu (or the web form) may have learnt, and the record's field it fills in.
_ANSWER_FIELDS = {"safe_to_text": "ok_to_text", "safe_for_voicemail": "ok_to_leave_voicemail"}
_NEEDS = ("mental_health", "addiction", "return_to_work", "other")


def suggestions(vault: Vault, call: Call) -> dict[str, Any]:
    """The record's fields as the caller already answered them to the phone menu: about whom, what
    they need, their number (if it can be called back) and how they may be contacted. The handler
    confirms these with the caller rather than asking again."""
    answers = call.answers or {}
    found: dict[str, Any] = {}
    if answers.get("about") == "self":
        found["about_self"] = True
    if call.need in _NEEDS:
        found["needs"] = [call.need]
    if call.caller_number_status == "valid" and call.caller_number_enc:
        number = vault.decrypt(call.caller_number_enc)
        found["phone"] = number
        found["display"] = {"phone": display(number)}
    for answer, name in _ANSWER_FIELDS.items():
        if isinstance(answers.get(answer), bool):
            found[name] = answers[answer]
    if found.get("ok_to_text") and not is_textable(found.get("phone")):
        del found["ok_to_text"]
    if call.channel == "web" and call.request_enc:
        # A request from the website also said how to reach them and when, in their own words.
        written = json.loads(vault.decrypt(call.request_enc) or "{}")
        for name in ("email", "preferred_name"):
            if written.get(name):
                found[name] = written[name]
        if written.get("safe_times"):
            found["contact_times"] = written["safe_times"]
    return found


def latest_voicemail_choice(session: Session, vault: Vault, call: Call) -> Optional[bool]:
    """Whether a message may be left, as the caller last told a handler (this call's record, else the
    newest record for the same number); None if no record says."""
    query = select(Contact).where(Contact.details_enc.is_not(None))
    query = query.where((Contact.call_id == call.id) | (Contact.person_hash == call.caller_hash)) if call.caller_hash \
        else query.where(Contact.call_id == call.id)
    for contact in session.scalars(query.order_by(Contact.updated_at.desc()).limit(5)):
        said = details(vault, contact).get("ok_to_leave_voicemail")
        if said is not None:
            return said is True
    return None


def booking_summary(booking: Optional[Booking]) -> Optional[dict[str, Any]]:
    """What any handler may know of a booking: its status and date, not with whom or where."""
    if booking is None:
        return None
    return {"status": booking.status, "date": booking.starts_at.date().isoformat(), "modality": booking.modality}


def earlier_contacts(session: Session, call: Call) -> list[dict[str, Any]]:
    """A returning caller's earlier contacts (same keyed number hash), newest first, as any handler may see them."""
    if not call.caller_hash:
        return []
    rows = session.scalars(
        select(Contact).where(Contact.person_hash == call.caller_hash, Contact.call_id != call.id)
        .order_by(Contact.created_at.desc()).limit(20)
    )
    return [
        {"date": contact.created_at.date().isoformat(), "disposition": contact.disposition,
         "booking": booking_summary(contact.bookings[-1] if contact.bookings else None)}
        for contact in rows
    ]


def is_textable(e164: Optional[str]) -> bool:
    """Whether a number can take a text message (a mobile, or a number that may be one)."""
    if not e164:
        return False
    kind = phonenumbers.number_type(phonenumbers.parse(e164))
    return kind in (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE)


def record_json(vault: Vault, contact: Contact, declared_conflicts: bool = True) -> dict[str, Any]:
    """The whole record, for those allowed to see it; the declared conflicts only to its handler."""
    latest = contact.bookings[-1] if contact.bookings else None
    fields = details(vault, contact)
    if not declared_conflicts:
        fields.pop("avoid", None)
    return {
        "id": contact.id,
        "call_id": contact.call_id,
        "about_self": contact.about_self,
        "disposition": contact.disposition,
        "created_at": contact.created_at.isoformat(),
        "updated_at": contact.updated_at.isoformat(),
        "fields": fields,
        "display": display_fields(fields),
        "booking": None if latest is None else {"id": latest.id, **(booking_summary(latest) or {})},
        "discharged_on": contact.discharged_on.isoformat() if contact.discharged_on else None,
    }
