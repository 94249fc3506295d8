"""Finding a slot, and booking, cancelling and moving an appointment.

Slots are not stored: they are computed from the clinicians' weekly availability rules for the dates
asked about, less their exceptions (leave, closures) and the bookings already made. A search runs
three indexed queries whatever its size (rules, exceptions, bookings in the range), then walks the
days in order and stops as soon as it has a page of slots.

A slot's id names its clinician, its site (or `v` for video) and its start in UTC, for example
`12-40-20261203T1030Z`; booking it checks it against the rules again, so an id cannot invent a slot.

Booking is atomic: the unique constraint on a clinician's held start times (see models/booking.py)
lets exactly one of two simultaneous bookings of a slot commit; the other becomes SlotTaken.
"""

from __future__ import annotations

import bisect
import datetime as dt
import re
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Optional
from zoneinfo import ZoneInfo

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session, aliased, contains_eager

from .models import AvailabilityException, AvailabilityRule, Booking, Clinician, Contact, Site, utcnow

LONDON = ZoneInfo("Europe/London")
UTC = dt.timezone.utc
#: The widest date range one search may cover, so a search stays cheap.
MAX_RANGE_DAYS = 62
DEFAULT_RANGE_DAYS = 14
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
#: Slots starting sooner than this are not offered: the caller needs time to get there.
MIN_NOTICE = dt.timedelta(hours=1)
#: How many alternatives a refused booking offers.
NEXT_SLOTS = 5

#: A slot's id: clinician, site (v for video) and start in UTC, e.g. 12-3-20261208T0930Z.
SLOT_ID_PATTERN = r"^(\d{1,9})-(\d{1,9}|v)-(\d{8}T\d{4})Z$"
_SLOT_ID = re.compile(SLOT_ID_PATTERN)


class SlotTaken(Exception):
    """Someone else booked the slot first (or it overlaps one of the clinician's bookings)."""


class SlotNotFound(Exception):
    """The slot id is not one the clinician's availability offers (malformed, past, on leave, ...)."""


class SlotAvoided(Exception):
    """The slot is with a clinician, or at a site, the caller asked not to meet (a declared conflict)."""


class BookingRefused(Exception):
    """The booking cannot be made yet; `missing` names what the first-contact record still needs."""

    def __init__(self, message: str, missing: Optional[list[str]] = None):
        super().__init__(message)
        self.message = message
        self.missing = missing or []


@dataclass(frozen=True)
class Slot:
    """One bookable appointment."""

    start: dt.datetime
    end: dt.datetime
    clinician: Clinician
    site: Optional[Site]
    modality: str

    @property
    def id(self) -> str:
        """The slot's id: clinician, site (v for video) and start in UTC."""
        site = str(self.site.id) if self.site else "v"
        return f"{self.clinician.id}-{site}-{self.start.astimezone(UTC):%Y%m%dT%H%M}Z"

    @property
    def locality(self) -> str:
        """A face-to-face slot's site's locality, or a video slot's clinician's."""
        return self.site.locality_code if self.site else self.clinician.locality_code

    @property
    def key(self) -> tuple[dt.datetime, str]:
        """Sort key: by start, then by id so that paging is stable."""
        return (self.start, self.id)


@dataclass(frozen=True)
class SlotQuery:
    """What the handler is looking for. Dates are Europe/London calendar dates, both inclusive."""

    start_date: dt.date
    end_date: dt.date
    locality: Optional[str] = None
    modality: Optional[str] = None
    profession: Optional[str] = None
    workplace_locality: Optional[str] = None
    include_workplace: bool = False
    clinician_id: Optional[int] = None
    limit: int = DEFAULT_LIMIT
    after: Optional[str] = None
    #: The caller's declared conflicts: clinicians and sites that never appear for them.
    avoid_clinicians: frozenset[int] = frozenset()
    avoid_sites: frozenset[int] = frozenset()
    #: Only slots starting by then (an urgent triage).
    latest_start: Optional[dt.datetime] = None


def avoided(fields: dict[str, Any]) -> tuple[frozenset[int], frozenset[int]]:
    """The clinicians and sites a first-contact record says the caller must not meet."""
    items = fields.get("avoid") or []
    return (frozenset(item["id"] for item in items if item.get("kind") == "clinician"),
            frozenset(item["id"] for item in items if item.get("kind") == "site"))


def for_caller(query: SlotQuery, fields: dict[str, Any], urgent_within: Optional[dt.timedelta] = None,
               now: Optional[dt.datetime] = None) -> SlotQuery:
    """`query` narrowed for the caller a record describes: their workplace locality (unless they agreed
    to it), their declared conflicts, and (triaged urgent) only slots within `urgent_within`."""
    clinicians, sites = avoided(fields)
    if fields.get("triage") == "urgent" and urgent_within is not None:
        latest = (now or utcnow()) + urgent_within
        query = replace(query, latest_start=min(filter(None, (query.latest_start, latest))),
                        end_date=min(query.end_date, local_date(latest)))
    return replace(
        query,
        workplace_locality=query.workplace_locality or fields.get("work_locality"),
        include_workplace=query.include_workplace or fields.get("workplace_agreed") is True,
        avoid_clinicians=query.avoid_clinicians | clinicians,
        avoid_sites=query.avoid_sites | sites,
    )


@dataclass
class SlotPage:
    """A page of slots in start order, and where the next page starts (None at the end)."""

    slots: list[Slot]
    next_after: Optional[str]
    excluded_workplace_locality: Optional[str]


@dataclass
class _Availability:
    """Everything one search needs, loaded with one query each."""

    rules_by_weekday: dict[int, list[AvailabilityRule]] = field(default_factory=lambda: defaultdict(list))
    clinician_off: set[tuple[int, dt.date]] = field(default_factory=set)
    site_closed: set[tuple[int, dt.date]] = field(default_factory=set)
    #: Each clinician's held bookings as sorted (start, end) pairs.
    booked: dict[int, list[tuple[dt.datetime, dt.datetime]]] = field(default_factory=lambda: defaultdict(list))


def local_date(instant: dt.datetime) -> dt.date:
    """The Europe/London calendar date of an instant."""
    return instant.astimezone(LONDON).date()


def wall_clock(day: dt.date, minute: int) -> Optional[dt.datetime]:
    """The instant (UTC) of a Europe/London wall-clock time; None when the clocks skip it (spring forward)."""
    naive = dt.datetime.combine(day, dt.time()) + dt.timedelta(minutes=minute)
    local = naive.replace(tzinfo=LONDON)
    instant = local.astimezone(UTC)
    if instant.astimezone(LONDON).replace(tzinfo=None) != naive:
        return None
    return instant


def _day_bounds(start_date: dt.date, end_date: dt.date) -> tuple[dt.datetime, dt.datetime]:
    first = wall_clock(start_date, 0) or dt.datetime.combine(start_date, dt.time(), UTC)
    last = wall_clock(end_date + dt.timedelta(days=1), 0) or dt.datetime.combine(end_date + dt.timedelta(days=1), dt.time(), UTC)
    return first, last


def _load(session: Session, query: SlotQuery) -> _Availability:
    site = aliased(Site)
    conditions = [Clinician.active.is_(True)]
    if query.profession:
        conditions.append(Clinician.profession == query.profession)
    if query.modality:
        conditions.append(AvailabilityRule.modality == query.modality)
    if query.clinician_id:
        conditions.append(Clinician.id == query.clinician_id)
    if query.locality:
        conditions.append(or_(
            and_(AvailabilityRule.modality == "face_to_face", site.locality_code == query.locality),
            and_(AvailabilityRule.modality == "video", Clinician.locality_code == query.locality),
        ))
    if query.workplace_locality and not query.include_workplace:
        # Neither premises nor clinicians of the caller's workplace locality: a clinician based there
        # may be a colleague or treat the caller's patients, whether they meet in a room or by video.
        conditions.append(or_(AvailabilityRule.modality == "video", site.locality_code != query.workplace_locality))
        conditions.append(Clinician.locality_code != query.workplace_locality)
    if query.avoid_clinicians:
        conditions.append(Clinician.id.not_in(sorted(query.avoid_clinicians)))
    if query.avoid_sites:
        conditions.append(or_(AvailabilityRule.site_id.is_(None), AvailabilityRule.site_id.not_in(sorted(query.avoid_sites))))
    conditions.append(or_(AvailabilityRule.modality == "video", site.active.is_(True)))
    conditions.append(or_(AvailabilityRule.valid_from.is_(None), AvailabilityRule.valid_from <= query.end_date))
    conditions.append(or_(AvailabilityRule.valid_until.is_(None), AvailabilityRule.valid_until >= query.start_date))
    # The clinician and site are loaded onto each rule (contains_eager), in the same query: the
    # slots refer to them, and the session holds loaded rows only weakly, so without this each
    # slot's clinician and site would be fetched again, one query each.
    rules = session.scalars(
        select(AvailabilityRule)
        .join(Clinician, Clinician.id == AvailabilityRule.clinician_id)
        .outerjoin(site, site.id == AvailabilityRule.site_id)
        .where(*conditions)
        .options(contains_eager(AvailabilityRule.clinician), contains_eager(AvailabilityRule.site.of_type(site)))
    ).all()
    found = _Availability()
    clinician_ids = set()
    for rule in rules:
        found.rules_by_weekday[rule.weekday].append(rule)
        clinician_ids.add(rule.clinician_id)
    if not clinician_ids:
        return found
    for exception in session.scalars(select(AvailabilityException).where(
        AvailabilityException.starts_on <= query.end_date, AvailabilityException.ends_on >= query.start_date
    )):
        day = max(exception.starts_on, query.start_date)
        while day <= min(exception.ends_on, query.end_date):
            if exception.clinician_id is not None:
                found.clinician_off.add((exception.clinician_id, day))
            else:
                found.site_closed.add((exception.site_id or 0, day))
            day += dt.timedelta(days=1)
    first, last = _day_bounds(query.start_date, query.end_date)
    for clinician_id, starts_at, ends_at in session.execute(
        select(Booking.clinician_id, Booking.starts_at, Booking.ends_at).where(
            Booking.clinician_id.in_(clinician_ids),
            Booking.held_start.is_not(None),
            # Appointments are at most a few hours long; a day's margin catches any that straddle `first`.
            Booking.starts_at >= first - dt.timedelta(days=1),
            Booking.starts_at < last,
        )
    ):
        found.booked[clinician_id].append((starts_at, ends_at))
    for intervals in found.booked.values():
        intervals.sort()
    return found


def _free(booked: list[tuple[dt.datetime, dt.datetime]], start: dt.datetime, end: dt.datetime) -> bool:
    """Whether [start, end) overlaps none of the sorted held intervals.

    A clinician's held bookings never overlap one another (`find_slot` refuses an overlap), so only
    the last one starting before `end` can reach into [start, end).
    """
    index = bisect.bisect_left(booked, (end,))
    return index == 0 or booked[index - 1][1] <= start


def _day_slots(found: _Availability, day: dt.date, earliest: dt.datetime) -> list[Slot]:
    slots = []
    for rule in found.rules_by_weekday.get(day.weekday(), ()):
        if (rule.valid_from and day < rule.valid_from) or (rule.valid_until and day > rule.valid_until):
            continue
        if (rule.clinician_id, day) in found.clinician_off or (rule.site_id and (rule.site_id, day) in found.site_closed):
            continue
        booked = found.booked.get(rule.clinician_id, [])
        for minute in range(rule.start_minute, rule.end_minute - rule.slot_minutes + 1, rule.slot_minutes):
            start = wall_clock(day, minute)
            if start is None or start < earliest:
                continue
            end = start + dt.timedelta(minutes=rule.slot_minutes)
            if _free(booked, start, end):
                slots.append(Slot(start, end, rule.clinician, rule.site, rule.modality))
    slots.sort(key=lambda slot: slot.key)
    return slots


def parse_slot_id(slot_id: str) -> tuple[int, Optional[int], dt.datetime]:
    """(clinician id, site id or None for video, start in UTC); SlotNotFound if malformed."""
    match = _SLOT_ID.match(slot_id or "")
    if not match:
        raise SlotNotFound("not a slot id")
    clinician, site, start = match.groups()
    try:
        instant = dt.datetime.strptime(start, "%Y%m%dT%H%M").replace(tzinfo=UTC)
    except ValueError:
        raise SlotNotFound("not a slot id") from None
    return int(clinician), None if site == "v" else int(site), instant


def search(session: Session, query: SlotQuery, now: Optional[dt.datetime] = None) -> SlotPage:
    """A page of free slots matching `query`, in start order."""
    now = now or utcnow()
    earliest = now + MIN_NOTICE
    after_key = None
    if query.after:
        _c, _s, after_start = parse_slot_id(query.after)
        after_key = (after_start, query.after)
    found = _load(session, query)
    slots: list[Slot] = []
    day = max(query.start_date, local_date(earliest))
    if after_key:
        day = max(day, local_date(after_key[0]))
    while day <= query.end_date and len(slots) <= query.limit:
        slots.extend(slot for slot in _day_slots(found, day, earliest) if (after_key is None or slot.key > after_key)
                      and (query.latest_start is None or slot.start <= query.latest_start))
        day += dt.timedelta(days=1)
    more = len(slots) > query.limit
    page = slots[: query.limit]
    excluded = query.workplace_locality if query.workplace_locality and not query.include_workplace else None
    return SlotPage(page, page[-1].id if more and page else None, excluded)


def find_slot(session: Session, slot_id: str, now: Optional[dt.datetime] = None) -> Slot:
    """The slot an id names, if the clinician's availability offers it and it is free; raises otherwise."""
    clinician_id, site_id, start = parse_slot_id(slot_id)
    day = local_date(start)
    found = _load(session, SlotQuery(start_date=day, end_date=day, clinician_id=clinician_id))
    booked_before = found.booked.get(clinician_id, [])
    found.booked[clinician_id] = []  # look at the rules alone first, to tell "taken" from "never offered"
    earliest = (now or utcnow()) + MIN_NOTICE
    for slot in _day_slots(found, day, earliest):
        if slot.start == start and (slot.site.id if slot.site else None) == site_id and slot.clinician.id == clinician_id:
            if not _free(booked_before, slot.start, slot.end):
                raise SlotTaken(slot_id)
            return slot
    raise SlotNotFound("the clinician does not offer that slot (it may have passed, or they are away)")


def missing_for_booking(fields: dict[str, Any], contact: Contact) -> list[str]:
    """What the record must have before a booking: self-referral confirmed, consent, a name, and a way
    to reach the caller (a phone number or email) or the handler's reason why there is none."""
    missing = []
    if contact.about_self is not True:
        missing.append("about_self")
    if fields.get("consent_to_keep") is not True:
        missing.append("consent_to_keep")
    if not fields.get("name"):
        missing.append("name")
    if not (fields.get("phone") or fields.get("phone_alt") or fields.get("email") or fields.get("no_contact_reason")):
        missing.append("contact_route")
    return missing


def check_not_avoided(slot: Slot, fields: dict[str, Any]) -> None:
    """SlotAvoided if the slot's clinician or site is one the caller declared a conflict with."""
    clinicians, sites = avoided(fields)
    if slot.clinician.id in clinicians or (slot.site is not None and slot.site.id in sites):
        raise SlotAvoided("the caller asked not to meet this clinician, or not to be seen at this site")


def book(session: Session, contact: Contact, fields: dict[str, Any], slot_id: str, user_id: int,
         now: Optional[dt.datetime] = None) -> Booking:
    """Book the slot for the contact's caller; the caller commits. SlotTaken/SlotNotFound/BookingRefused."""
    missing = missing_for_booking(fields, contact)
    if missing:
        raise BookingRefused("the first-contact record is not ready for a booking", missing)
    slot = find_slot(session, slot_id, now)
    check_not_avoided(slot, fields)
    booking = Booking(call_id=contact.call_id, contact_id=contact.id, clinician_id=slot.clinician.id,
                      site_id=slot.site.id if slot.site else None, modality=slot.modality, starts_at=slot.start,
                      ends_at=slot.end, held_start=slot.start, status="booked", booked_by_id=user_id)
    session.add(booking)
    contact.disposition = "booked"
    session.flush()  # the unique constraint speaks here, inside the caller's transaction
    return booking


def cancel(booking: Booking, now: Optional[dt.datetime] = None) -> None:
    """Cancel the booking; its slot is free again once committed."""
    booking.status = "cancelled"
    booking.held_start = None
    booking.cancelled_at = now or utcnow()
    booking.reminder_at = None
    booking.revision += 1


def reschedule(session: Session, booking: Booking, slot_id: str, now: Optional[dt.datetime] = None,
               fields: Optional[dict[str, Any]] = None) -> Booking:
    """Move the booking to another slot in one transaction; on SlotTaken (or SlotAvoided, a clinician
    or site the caller's record says to avoid) the caller rolls back, and the booking keeps its old slot."""
    booking.held_start = None  # so that a move to an overlapping time is not refused by the booking itself
    session.flush()
    slot = find_slot(session, slot_id, now)
    check_not_avoided(slot, fields or {})
    booking.clinician_id = slot.clinician.id
    booking.site_id = slot.site.id if slot.site else None
    booking.modality = slot.modality
    booking.starts_at, booking.ends_at, booking.held_start = slot.start, slot.end, slot.start
    booking.revision += 1
    session.flush()
    return booking


def alternatives(session: Session, slot_id: str, fields: dict[str, Any], now: Optional[dt.datetime] = None) -> list[Slot]:
    """The next free slots like the one that was taken: same modality, locality and profession, for the
    caller the record `fields` describes (their workplace rule and declared conflicts applied)."""
    workplace_locality = fields.get("work_locality")
    try:
        clinician_id, site_id, start = parse_slot_id(slot_id)
    except SlotNotFound:
        return []
    clinician = session.get(Clinician, clinician_id)
    if clinician is None:
        return []
    site = session.get(Site, site_id) if site_id else None
    locality = site.locality_code if site else clinician.locality_code
    day = local_date(start)
    query = SlotQuery(start_date=day, end_date=day + dt.timedelta(days=DEFAULT_RANGE_DAYS), locality=locality,
                      modality="face_to_face" if site else "video", profession=clinician.profession,
                      workplace_locality=workplace_locality,
                      # The handler already chose a slot in the workplace locality: the caller agreed to it.
                      include_workplace=workplace_locality in (locality, clinician.locality_code), limit=NEXT_SLOTS)
    return search(session, for_caller(query, fields), now).slots


def site_json(site: Optional[Site]) -> Optional[dict[str, Any]]:
    """A site as the API shows it."""
    if site is None:
        return None
    return {"id": site.id, "code": site.code, "name": site.name, "address": list(site.address), "town": site.town,
            "locality": site.locality_code}


def clinician_json(clinician: Clinician) -> dict[str, Any]:
    """A clinician as the API shows it."""
    return {"id": clinician.id, "name": clinician.display_name, "profession": clinician.profession,
            "locality": clinician.locality_code}


def iso_local(instant: dt.datetime) -> str:
    """An instant as ISO 8601 in Europe/London time, with its offset."""
    return instant.astimezone(LONDON).isoformat()


def slot_json(slot: Slot) -> dict[str, Any]:
    """A slot as the API shows it."""
    return {"id": slot.id, "start": iso_local(slot.start), "end": iso_local(slot.end), "modality": slot.modality,
            "locality": slot.locality, "site": site_json(slot.site), "clinician": clinician_json(slot.clinician)}


def slots_json(slots: Iterable[Slot]) -> list[dict[str, Any]]:
    """Slots as the API shows them."""
    return [slot_json(slot) for slot in slots]


def booking_json(booking: Booking) -> dict[str, Any]:
    """A booking as the API shows it to those allowed to see it."""
    return {"id": booking.id, "call_id": booking.call_id, "contact_id": booking.contact_id, "status": booking.status,
            "start": iso_local(booking.starts_at), "end": iso_local(booking.ends_at), "modality": booking.modality,
            "site": site_json(booking.site), "clinician": clinician_json(booking.clinician),
            "confirmation": booking.confirmation, "attendance": booking.attendance,
            "reminder_at": iso_local(booking.reminder_at) if booking.reminder_at else None}
