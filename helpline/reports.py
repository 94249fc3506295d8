"""The supervisors' figures, computed in one place: the live wallboard, the reports, the CSV and call review.

Definitions (the same on the wallboard, in reports and in the CSV):

* A day is a calendar day in Europe/London; a call belongs to the day it started (`calls.started_at`,
  indexed, so every figure over a period is an index range).
* Waits are counted in whole seconds, from joining the queue (`queued_at`) to leaving it
  (`dequeued_at`: answered, hung up, or asked for a callback).
* Service level at T seconds: calls answered within T, of the calls that reached the queue, leaving
  out those still waiting that have not yet waited T (their fate is still open). A caller still
  waiting past T already counts as missed.
* Abandonment rate: calls that hung up while in the queue, of the calls that reached it and have
  left it.
* Time to answer: the wait of answered calls. Time to handle: from the answer to the end of the
  handler's wrap-up (or to the call's end while wrap-up is under way).

Nothing here reads or returns anything personal: calls are counted and described by codes and times.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Iterator
from zoneinfo import ZoneInfo

from sqlalchemy import Float, and_, case, func, literal, or_, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from .models import (
    Booking,
    Call,
    CallEvent,
    Clinician,
    Handler,
    Locality,
    Questionnaire,
    QueueEntry,
    RiskScreen,
    Site,
    User,
)
from .models.core import UTCDateTime
from .routing import IN_LINE, PRESENCES

LONDON = ZoneInfo("Europe/London")
#: The service levels reported, in seconds.
SERVICE_LEVELS = (20, 60)
#: The longest period a report may cover.
MAX_RANGE_DAYS = 366
#: Risk alerts the wallboard keeps showing (today's most recent).
ALERTS_SHOWN = 10
#: Rows read at a time when writing the CSV.
CSV_BATCH = 1000


# -- seconds between two timestamps, in SQL ---------------------------------------------------------

class seconds_between(FunctionElement[float]):  # noqa: N801 - reads as the SQL function it stands for
    """Seconds from the first timestamp to the second, on PostgreSQL and SQLite alike."""

    type = Float()
    inherit_cache = True
    name = "seconds_between"


@compiles(seconds_between)
def _seconds_default(element: seconds_between, compiler: Any, **kw: Any) -> str:
    start, end = list(element.clauses)
    return f"EXTRACT(EPOCH FROM ({compiler.process(end, **kw)} - {compiler.process(start, **kw)}))"


@compiles(seconds_between, "sqlite")
def _seconds_sqlite(element: seconds_between, compiler: Any, **kw: Any) -> str:
    start, end = list(element.clauses)
    return f"((julianday({compiler.process(end, **kw)}) - julianday({compiler.process(start, **kw)})) * 86400.0)"


def _instant(value: dt.datetime) -> ColumnElement[dt.datetime]:
    """A bound timestamp stored the way the columns are (UTC; SQLite's text form)."""
    return literal(value, UTCDateTime())


def _within(seconds: ColumnElement[float], limit: int) -> ColumnElement[bool]:
    # Whole seconds: a wait of 20.4 s is a 20-second wait.
    return seconds < limit + 0.5


# -- periods ----------------------------------------------------------------------------------------

class RangeError(ValueError):
    """A date range the reports refuse; `detail` says which parameter and why.

    `status` is 400 for a value that is not a date, 422 for two dates that make no period to report
    (reversed, or too long): each is a date the API's document allows, but not together."""

    def __init__(self, detail: str, status: int = 422):
        super().__init__(detail)
        self.detail = detail
        self.status = status


@dataclass(frozen=True)
class Period:
    """Calendar days in Europe/London, `first` to `last` inclusive."""

    first: dt.date
    last: dt.date

    @property
    def start(self) -> dt.datetime:
        """The first instant of the period (London midnight), in UTC."""
        return dt.datetime.combine(self.first, dt.time(), LONDON).astimezone(dt.timezone.utc)

    @property
    def end(self) -> dt.datetime:
        """The instant after the period ends (midnight after the last day), in UTC."""
        return dt.datetime.combine(self.last + dt.timedelta(days=1), dt.time(), LONDON).astimezone(dt.timezone.utc)

    def days(self) -> list[dt.date]:
        """Each day of the period."""
        return [self.first + dt.timedelta(days=n) for n in range((self.last - self.first).days + 1)]


def today(now: dt.datetime) -> Period:
    """The London day `now` falls in."""
    day = now.astimezone(LONDON).date()
    return Period(day, day)


def parse_period(first: str | None, last: str | None, now: dt.datetime) -> Period:
    """`from` and `to` (ISO dates, inclusive) as a Period; either missing means the other, both today.

    Raises RangeError saying what is wrong: not a date, from after to, or longer than MAX_RANGE_DAYS.
    """
    def day(name: str, text: str | None) -> dt.date | None:
        if text is None or text.strip() == "":
            return None
        try:
            return dt.date.fromisoformat(text.strip())
        except ValueError:
            raise RangeError(f"{name}: {text[:40]!r} is not a date (use YYYY-MM-DD)", status=400) from None

    start, end = day("from", first), day("to", last)
    start = start or end or today(now).first
    end = end or start
    if start > end:
        raise RangeError(f"from ({start}) is after to ({end})")
    if (end - start).days + 1 > MAX_RANGE_DAYS:
        raise RangeError(f"the range covers {(end - start).days + 1} days; at most {MAX_RANGE_DAYS} at a time")
    return Period(start, end)


def local_time(value: dt.datetime | None) -> str | None:
    """An instant as ISO 8601 in Europe/London time (None stays None)."""
    return value.astimezone(LONDON).isoformat() if value is not None else None


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


# -- the queue's figures over a period ---------------------------------------------------------------

def _wrap_up_end() -> Any:
    return (
        select(func.min(CallEvent.at))
        .where(CallEvent.call_id == Call.id, CallEvent.kind.in_(("wrap_up", "wrap_up_timed_out")))
        .scalar_subquery()
    )


def queue_figures(session: Session, start: dt.datetime, end: dt.datetime, now: dt.datetime) -> dict[str, Any]:
    """Service level, abandonment and average times for calls that started in [start, end), in one query."""
    reached = Call.queued_at.is_not(None)
    waiting = and_(reached, Call.dequeued_at.is_(None), Call.ended_at.is_(None))
    wait = seconds_between(Call.queued_at, Call.dequeued_at)
    waited_so_far = seconds_between(Call.queued_at, _instant(now))
    answered = Call.outcome == "answered"
    handle = seconds_between(Call.dequeued_at, func.coalesce(_wrap_up_end(), Call.ended_at))

    def count(condition: ColumnElement[bool]) -> Any:
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    columns = {
        "calls": func.count(Call.id),
        "reached_queue": count(reached),
        "waiting": count(waiting),
        "answered": count(answered),
        "abandoned": count(and_(reached, Call.outcome == "abandoned")),
        "avg_answer": func.avg(case((and_(answered, Call.dequeued_at.is_not(None)), wait))),
        "avg_handle": func.avg(case((and_(answered, Call.ended_at.is_not(None), Call.dequeued_at.is_not(None)), handle))),
    }
    for limit in SERVICE_LEVELS:
        columns[f"within_{limit}"] = count(and_(answered, _within(wait, limit)))
        columns[f"open_{limit}"] = count(and_(waiting, _within(waited_so_far, limit)))
    row = session.execute(
        select(*(column.label(name) for name, column in columns.items()))
        .where(Call.started_at >= start, Call.started_at < end)
    ).one()._mapping
    figures: dict[str, Any] = {
        "calls": int(row["calls"]),
        "reached_queue": int(row["reached_queue"]),
        "answered": int(row["answered"]),
        "abandoned": int(row["abandoned"]),
        "still_waiting": int(row["waiting"]),
    }
    for limit in SERVICE_LEVELS:
        figures[f"answered_within_{limit}s"] = int(row[f"within_{limit}"])
        figures[f"service_level_{limit}s"] = _rate(int(row[f"within_{limit}"]), figures["reached_queue"] - int(row[f"open_{limit}"]))
    figures["abandonment_rate"] = _rate(figures["abandoned"], figures["reached_queue"] - figures["still_waiting"])
    figures["avg_answer_s"] = round(float(row["avg_answer"])) if row["avg_answer"] is not None else None
    figures["avg_handle_s"] = round(float(row["avg_handle"])) if row["avg_handle"] is not None else None
    return figures


# -- the wallboard ----------------------------------------------------------------------------------

def wallboard(session: Session, now: dt.datetime) -> dict[str, Any]:
    """The body of the `wallboard` event: the line now, the handlers, today's figures and risk alerts."""
    line = session.execute(
        select(func.count(QueueEntry.id), func.min(QueueEntry.placed_at))
        .where(QueueEntry.state.in_(IN_LINE), QueueEntry.kind == "live")
    ).one()
    due_now = or_(QueueEntry.not_before.is_(None), QueueEntry.not_before <= now)
    callbacks = session.execute(
        select(func.coalesce(func.sum(case((due_now, 1), else_=0)), 0), func.count(QueueEntry.id))
        .where(QueueEntry.state.in_(IN_LINE), QueueEntry.kind == "callback")
    ).one()
    presence = dict.fromkeys(PRESENCES, 0)
    for state, number in session.execute(
        select(Handler.presence, func.count(Handler.id)).join(User, User.id == Handler.user_id)
        .where(User.active.is_(True)).group_by(Handler.presence)
    ):
        presence[state] = int(number)
    on_calls = [
        {"handler_id": handler_id, "call_id": call_id, "presence": state}
        for handler_id, call_id, state in session.execute(
            select(Handler.id, Handler.current_call_id, Handler.presence)
            .where(Handler.presence.in_(("on_call", "wrap_up")), Handler.current_call_id.is_not(None))
            .order_by(Handler.id))
    ]
    day = today(now)
    return {
        "at": now.isoformat(),
        "day": day.first.isoformat(),
        "waiting": int(line[0]),
        "longest_wait_s": max(0, int((now - line[1]).total_seconds())) if line[1] is not None else 0,
        "callbacks_due": int(callbacks[0]),
        "callbacks_later": int(callbacks[1]) - int(callbacks[0]),
        "handlers": presence,
        "on_calls": on_calls,
        "today": queue_figures(session, day.start, day.end, now),
        "alerts": alerts(session, day.start),
    }


def alerts(session: Session, since: dt.datetime) -> list[dict[str, Any]]:
    """Immediate-risk alerts since `since`, newest first, in the shape of the `alert` event: from risk
    screens, and from questionnaires that raised the risk screen (PHQ-9 item 9 above 0)."""
    screens = session.execute(
        select(RiskScreen.call_id, RiskScreen.handler_user_id, User.display_name, RiskScreen.level, RiskScreen.at,
               RiskScreen.id)
        .outerjoin(User, User.id == RiskScreen.handler_user_id)
        .where(RiskScreen.level == "immediate", RiskScreen.at >= since)
        .order_by(RiskScreen.at.desc(), RiskScreen.id.desc())
        .limit(ALERTS_SHOWN)
    ).all()
    answers = session.execute(
        select(Questionnaire.call_id, Questionnaire.recorded_by_id, User.display_name, Questionnaire.kind, Questionnaire.at,
               Questionnaire.id)
        .outerjoin(User, User.id == Questionnaire.recorded_by_id)
        .where(Questionnaire.risk_raised.is_(True), Questionnaire.at >= since)
        .order_by(Questionnaire.at.desc(), Questionnaire.id.desc())
        .limit(ALERTS_SHOWN)
    ).all()
    found = [(at, row_id, {"kind": "risk", "call_id": call_id, "handler": {"id": user_id, "name": name}, "level": level,
                           "at": at.isoformat(), "source": "risk_screen"})
             for call_id, user_id, name, level, at, row_id in screens]
    found += [(at, row_id, {"kind": "risk", "call_id": call_id, "handler": {"id": user_id, "name": name}, "level": "immediate",
                            "at": at.isoformat(), "source": kind})
              for call_id, user_id, name, kind, at, row_id in answers]
    found.sort(key=lambda item: (item[0], item[1]), reverse=True)
    return [alert for _, _, alert in found[:ALERTS_SHOWN]]


# -- reports over a period ----------------------------------------------------------------------------

def _booking_places() -> Any:
    """Each booking's locality (the site's, or the clinician's for video) and profession."""
    return (
        select(Booking.call_id, Booking.status, func.coalesce(Site.locality_code, Clinician.locality_code).label("locality"),
               Clinician.profession.label("profession"))
        .join(Clinician, Clinician.id == Booking.clinician_id)
        .outerjoin(Site, Site.id == Booking.site_id)
    )


def summary(session: Session, period: Period, now: dt.datetime) -> dict[str, Any]:
    """The body of GET /api/reports/summary: volumes by day and hour, service level, outcomes, bookings."""
    in_period = and_(Call.started_at >= period.start, Call.started_at < period.end)
    by_day = {day: {"date": day.isoformat(), "calls": 0, "reached_queue": 0, "answered": 0, "abandoned": 0}
              for day in period.days()}
    by_hour = [{"hour": hour, "calls": 0, "answered": 0, "abandoned": 0} for hour in range(24)]
    for started_at, queued, outcome in session.execute(
        select(Call.started_at, Call.queued_at.is_not(None), Call.outcome).where(in_period)
    ):
        local = started_at.astimezone(LONDON)
        day, hour = by_day[local.date()], by_hour[local.hour]
        day["calls"] += 1
        hour["calls"] += 1
        day["reached_queue"] += 1 if queued else 0
        if outcome == "answered":
            day["answered"] += 1
            hour["answered"] += 1
        elif outcome == "abandoned" and queued:
            day["abandoned"] += 1
            hour["abandoned"] += 1
    outcomes = {outcome or "in_progress": int(number) for outcome, number in session.execute(
        select(Call.outcome, func.count(Call.id)).where(in_period).group_by(Call.outcome).order_by(Call.outcome))}
    needs = {need or "not_given": int(number) for need, number in session.execute(
        select(Call.need, func.count(Call.id)).where(in_period, Call.queued_at.is_not(None))
        .group_by(Call.need).order_by(Call.need))}
    places = _booking_places().join(Call, Call.id == Booking.call_id).where(in_period).subquery()
    booked = places.c.status == "booked"
    names = dict(session.execute(select(Locality.code, Locality.name)).all())
    by_locality = [
        {"code": code, "name": names.get(code, code), "bookings": int(number)}
        for code, number in session.execute(
            select(places.c.locality, func.count()).where(booked).group_by(places.c.locality).order_by(places.c.locality))
    ]
    by_profession = [
        {"profession": profession, "bookings": int(number)}
        for profession, number in session.execute(
            select(places.c.profession, func.count()).where(booked).group_by(places.c.profession).order_by(places.c.profession))
    ]
    cancelled = session.scalar(select(func.count()).select_from(places).where(places.c.status == "cancelled")) or 0
    return {
        "from": period.first.isoformat(),
        "to": period.last.isoformat(),
        "timezone": "Europe/London",
        "totals": queue_figures(session, period.start, period.end, now),
        "by_day": list(by_day.values()),
        "by_hour": by_hour,
        "outcomes": outcomes,
        "needs": needs,
        "bookings": {"total": sum(item["bookings"] for item in by_locality), "cancelled": int(cancelled),
                     "by_locality": by_locality, "by_profession": by_profession},
    }


# -- one row per call: the CSV and call review -------------------------------------------------------

CSV_COLUMNS = ("call_id", "started_at", "ended_at", "need", "flags", "outcome", "outcome_step", "queued_at",
               "answered_at", "left_queue_at", "wait_s", "handle_s", "duration_s", "handler_id", "booked",
               "booking_locality", "booking_profession")


def row_query() -> Any:
    """Every column of a call's row, with its answering handler and its booking (if any)."""
    places = _booking_places().where(Booking.status == "booked").subquery()
    booking = (
        select(places.c.call_id, func.min(places.c.locality).label("locality"), func.min(places.c.profession).label("profession"))
        .group_by(places.c.call_id).subquery()
    )
    answered_by = case((QueueEntry.state == "answered", QueueEntry.handler_id))
    return (
        select(Call.id, Call.started_at, Call.ended_at, Call.need, Call.flags, Call.outcome, Call.outcome_step,
               Call.queued_at, Call.dequeued_at, Call.duration_s, answered_by.label("handler_id"),
               booking.c.locality, booking.c.profession, _wrap_up_end().label("wrap_up_end"))
        .outerjoin(QueueEntry, QueueEntry.call_id == Call.id)
        .outerjoin(booking, booking.c.call_id == Call.id)
    )


def _seconds(start: dt.datetime | None, end: dt.datetime | None) -> int | None:
    return round((end - start).total_seconds()) if start is not None and end is not None else None


def call_row(row: Any) -> dict[str, Any]:
    """One call as a flat, non-personal record (the CSV's columns)."""
    answered = row.outcome == "answered"
    return {
        "call_id": row.id,
        "started_at": local_time(row.started_at),
        "ended_at": local_time(row.ended_at),
        "need": row.need or "",
        "flags": ";".join(str(flag) for flag in row.flags or ()),
        "outcome": row.outcome or "in_progress",
        "outcome_step": row.outcome_step or "",
        "queued_at": local_time(row.queued_at),
        "answered_at": local_time(row.dequeued_at) if answered else None,
        "left_queue_at": local_time(row.dequeued_at),
        "wait_s": _seconds(row.queued_at, row.dequeued_at),
        "handle_s": _seconds(row.dequeued_at, row.wrap_up_end or row.ended_at) if answered else None,
        "duration_s": row.duration_s,
        "handler_id": row.handler_id,
        "booked": "yes" if row.locality is not None or row.profession is not None else "no",
        "booking_locality": row.locality or "",
        "booking_profession": row.profession or "",
    }


def call_rows(session: Session, period: Period) -> Iterator[dict[str, Any]]:
    """Every call that started in the period, oldest first, a batch at a time (keyset on id)."""
    query = row_query().where(Call.started_at >= period.start, Call.started_at < period.end).order_by(Call.id)
    after = 0
    while True:
        rows = session.execute(query.where(Call.id > after).limit(CSV_BATCH)).all()
        for row in rows:
            yield call_row(row)
        if len(rows) < CSV_BATCH:
            return
        after = rows[-1].id


def review_page(session: Session, period: Period, outcome: str | None, need: str | None, handler_id: int | None,
                page: int, per_page: int) -> dict[str, Any]:
    """Calls for review, newest first, filtered and paged; with the count of each outcome matched."""
    conditions = [Call.started_at >= period.start, Call.started_at < period.end]
    if outcome:
        conditions.append(Call.outcome.is_(None) if outcome == "in_progress" else Call.outcome == outcome)
    if need:
        conditions.append(Call.need.is_(None) if need == "not_given" else Call.need == need)
    if handler_id is not None:
        conditions.append(and_(QueueEntry.state == "answered", QueueEntry.handler_id == handler_id))
    base = select(Call.id).outerjoin(QueueEntry, QueueEntry.call_id == Call.id).where(*conditions)
    total = session.scalar(select(func.count()).select_from(base.subquery())) or 0
    counts = {name or "in_progress": int(number) for name, number in session.execute(
        select(Call.outcome, func.count(Call.id)).outerjoin(QueueEntry, QueueEntry.call_id == Call.id)
        .where(*conditions).group_by(Call.outcome).order_by(Call.outcome))}
    rows = session.execute(
        row_query().where(*conditions).order_by(Call.started_at.desc(), Call.id.desc())
        .offset((page - 1) * per_page).limit(per_page)
    ).all()
    names = handler_names(session, {row.handler_id for row in rows if row.handler_id is not None})
    calls = []
    for row in rows:
        item = call_row(row)
        item["handler"] = {"id": row.handler_id, "name": names.get(row.handler_id)} if row.handler_id else None
        calls.append(item)
    return {"from": period.first.isoformat(), "to": period.last.isoformat(), "page": page, "per_page": per_page,
            "total": int(total), "counts": counts, "calls": calls}


def handler_names(session: Session, handler_ids: set[int]) -> dict[int, str]:
    """Display names of handlers (staff, never callers) by handler id."""
    if not handler_ids:
        return {}
    return dict(session.execute(select(Handler.id, User.display_name).join(User, User.id == Handler.user_id)
                                .where(Handler.id.in_(sorted(handler_ids)))).all())
