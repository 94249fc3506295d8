"""A known day of calls for the supervisors' figures: every wait, outcome and booking chosen, so that
the wallboard, the reports and the CSV can be checked against exact numbers.

The day is Tuesday 10 March 2026, when London keeps GMT (so London time is UTC time), and "now" is
15:00 that day.
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from helpline.models import (
    Booking,
    Call,
    CallEvent,
    Clinician,
    Contact,
    Handler,
    Locality,
    QueueEntry,
    RiskScreen,
    Site,
)

from . import routing_factories

UTC = dt.timezone.utc
DAY = dt.date(2026, 3, 10)
NOW = dt.datetime(2026, 3, 10, 15, 0, tzinfo=UTC)
_sids = itertools.count(1)


def at(hour: int, minute: int = 0, second: int = 0, day: dt.date = DAY) -> dt.datetime:
    """An instant on the day (UTC = London in March before the clocks change)."""
    return dt.datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=UTC)


def call(session: Session, started: dt.datetime, *, queued_after: int | None = None, wait: int | None = None,
         outcome: str | None = None, talk: int | None = None, need: str | None = "mental_health",
         handler: Handler | None = None, entry_state: str | None = None, kind: str = "live",
         flags: tuple[str, ...] = ()) -> Call:
    """A call that started at `started`, joined the queue `queued_after` seconds later and left it `wait`
    seconds after that (None: still there), ending `talk` seconds after leaving it when given."""
    queued = started + dt.timedelta(seconds=queued_after) if queued_after is not None else None
    left = queued + dt.timedelta(seconds=wait) if queued is not None and wait is not None else None
    ended = left + dt.timedelta(seconds=talk) if left is not None and talk is not None else None
    record = Call(call_sid=f"CA{next(_sids):032x}", started_at=started, queued_at=queued, dequeued_at=left,
                  ended_at=ended, outcome=outcome, need=need if queued is not None else None, flags=list(flags),
                  outcome_step="queue" if outcome else None, duration_s=None if ended is None else int((ended - started).total_seconds()))
    session.add(record)
    session.flush()
    if queued is not None:
        state = entry_state or {"answered": "answered", "abandoned": "abandoned", None: "waiting"}.get(outcome, "callback")
        session.add(QueueEntry(call_id=record.id, kind=kind, state=state, need=record.need, flags=list(flags),
                               placed_at=queued, left_at=left, handler_id=handler.id if handler else None))
        session.flush()
    return record


@dataclass
class KnownDay:
    """The calls, handlers and bookings built by `known_day`, and the figures they must give."""

    calls: dict[str, Call] = field(default_factory=dict)
    handlers: dict[str, Handler] = field(default_factory=dict)


def known_day(session: Session) -> KnownDay:
    """Build the day. The expected figures are written out in the tests that use it."""
    day = KnownDay()
    ann = routing_factories.handler(session, name="ann", idle_since=at(8))
    bob = routing_factories.handler(session, name="bob", idle_since=at(8), presence_="on_call")
    cat = routing_factories.handler(session, name="cat", idle_since=at(8), presence_="break", connected=False)
    day.handlers = {"ann": ann, "bob": bob, "cat": cat}
    calls = day.calls
    # Answered after 10 s, 45 s and 90 s; handled (talk + wrap-up) for 360 s, 120 s and 600 s.
    calls["quick"] = call(session, at(9), queued_after=30, wait=10, outcome="answered", talk=300, handler=ann)
    session.add(CallEvent(call_id=calls["quick"].id, kind="wrap_up", at=calls["quick"].ended_at + dt.timedelta(seconds=60),
                          detail={"handler_id": ann.id, "outcome": "booked"}))
    calls["middling"] = call(session, at(10), queued_after=30, wait=45, outcome="answered", talk=120, handler=bob)
    calls["slow"] = call(session, at(11, 30), queued_after=30, wait=90, outcome="answered", talk=500, handler=ann)
    session.add(CallEvent(call_id=calls["slow"].id, kind="wrap_up_timed_out",
                          at=calls["slow"].dequeued_at + dt.timedelta(seconds=600), detail={"handler_id": ann.id}))
    # Hung up in the queue after 30 s; hung up in the IVR (never queued); about someone else.
    calls["gave_up"] = call(session, at(12), queued_after=30, wait=30, outcome="abandoned", need="addiction")
    calls["ivr_hangup"] = call(session, at(0, 15), outcome="abandoned")
    calls["third_party"] = call(session, at(13), outcome="third_party")
    # Still waiting at 15:00: for 10 s, and for 40 s.
    calls["waiting_10"] = call(session, NOW - dt.timedelta(seconds=40), queued_after=30)
    calls["waiting_40"] = call(session, NOW - dt.timedelta(seconds=70), queued_after=30, need="return_to_work")
    # Asked for a callback after 70 s in the queue (due now), and yesterday's out-of-hours request (due tomorrow).
    calls["callback"] = call(session, at(14), queued_after=30, wait=70, outcome="callback_requested", kind="callback",
                            entry_state="waiting")
    yesterday = call(session, at(21, 0, 0, DAY - dt.timedelta(days=1)), outcome="out_of_hours")
    session.add(QueueEntry(call_id=yesterday.id, kind="callback", state="waiting", placed_at=yesterday.started_at,
                           not_before=at(8, 0, 0, DAY + dt.timedelta(days=1))))
    calls["yesterday"] = yesterday
    bob.current_call_id = calls["middling"].id
    # Bookings: face to face in one locality, by video in another, and one cancelled.
    for code, name in (("QWO", "West Yorkshire"), ("QOP", "Greater Manchester")):
        session.add(Locality(code=code, name=name, region="North"))
    session.flush()
    site = Site(code="leeds-1", locality_code="QWO", name="Test Rooms", address=["1 Test Street"], town="Leeds")
    psychiatrist = Clinician(code="c1", display_name="Dr One", profession="psychiatrist", locality_code="QWO")
    therapist = Clinician(code="c2", display_name="Two Therapist", profession="therapist", locality_code="QOP")
    session.add_all([site, psychiatrist, therapist])
    session.flush()
    for key, clinician, site_, status in (("quick", psychiatrist, site, "booked"), ("middling", therapist, None, "booked"),
                                          ("slow", therapist, None, "cancelled")):
        contact = Contact(call_id=calls[key].id, disposition="booked")
        session.add(contact)
        session.flush()
        starts = at(10, 0, 0, DAY + dt.timedelta(days=7))
        session.add(Booking(call_id=calls[key].id, contact_id=contact.id, clinician_id=clinician.id,
                            site_id=site_.id if site_ else None, modality="face_to_face" if site_ else "video",
                            starts_at=starts, ends_at=starts + dt.timedelta(minutes=50),
                            held_start=starts if status == "booked" else None, status=status))
    # Risk: an immediate alert today (shown), a moderate screen (not an alert), yesterday's (not today).
    session.add(RiskScreen(call_id=calls["quick"].id, at=at(9, 3), handler_user_id=ann.user_id, level="immediate", answers_enc="x"))
    session.add(RiskScreen(call_id=calls["middling"].id, at=at(10, 3), handler_user_id=bob.user_id, level="moderate", answers_enc="x"))
    session.add(RiskScreen(call_id=yesterday.id, at=at(21, 5, 0, DAY - dt.timedelta(days=1)), handler_user_id=ann.user_id,
                           level="immediate", answers_enc="x"))
    session.flush()
    return day
