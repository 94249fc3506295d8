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

Service levels against their targets (configured under `service_levels`; see `definitions()`), computed
the two ways Asterisk's queues report them, with T the answer threshold (60 s by default):

* answered in time, of answered: calls answered within T over calls answered (Asterisk's
  `servicelevelperf`);
* answered in time, of all: calls answered within T plus calls abandoned within T, over calls answered
  plus abandoned (Asterisk's `servicelevelperf2`: a caller who gave up quickly does not count against
  the line);
* abandoned after waiting: calls that hung up after waiting longer than the abandonment threshold
  (30 s by default; a call abandoned at exactly 30 s is a short abandon, as Asterisk counts it), over the
  calls that reached the line and left it;
* call-backs in time: call-backs first rung within their window of being asked for (or of the line
  opening, when asked for while closed), over call-backs whose window has passed or that were rung.

"Within" a threshold means a whole-second wait at most the threshold. Each figure is green at or
better than its target, amber within `amber_margin` of it, red beyond, and `none` with no calls yet.

Channels: every call that reached the line counts once under its channel, a dict of counts by name:
`phone` (a caller waiting on the line) or `callback` (a call-back request's entry in the line); a
`web` channel (a `Call.channel` column, where present) is one more name in the same dict.

Nothing here reads or returns anything personal: calls are counted and described by codes and times.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Iterator
from zoneinfo import ZoneInfo

from sqlalchemy import Float, and_, case, exists, func, literal, or_, select
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
from . import wait_estimate
from .config import ServiceLevelSettings
from .hours import OpeningHours
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
#: The wallboard's "service level now" covers calls that started this long ago or since.
NOW_WINDOW = dt.timedelta(hours=1)
#: Every channel a call can come through, in the order reports list them (see `channel_counts`).
CHANNELS = ("phone", "web", "callback")


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


def reached_line() -> ColumnElement[bool]:
    """A call that reached the line: it waited in it live, or it has a place in it (a call-back asked
    for by phone or on the website). The channels count these; the live figures, those that waited."""
    return or_(Call.queued_at.is_not(None), exists().where(QueueEntry.call_id == Call.id).correlate_except(QueueEntry))


def queue_figures(session: Session, start: dt.datetime, end: dt.datetime, now: dt.datetime) -> dict[str, Any]:
    """Service level, abandonment and average times for calls that started in [start, end), in one query.

    `reached_line` counts every call that reached the line, as the channels do; `reached_queue`, the
    calls that waited in it live, which the service level and abandonment are figures of.
    """
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
        "reached_line": count(reached_line()),
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
        "reached_line": int(row["reached_line"]),
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


# -- service levels against their targets ------------------------------------------------------------

def status(rate: float | None, target: float, margin: float, higher_is_better: bool = True) -> str:
    """green at or better than the target, amber within `margin` of it, red beyond; none without a figure."""
    if rate is None:
        return "none"
    short = (target - rate) if higher_is_better else (rate - target)
    if short <= 1e-9:
        return "green"
    return "amber" if short <= margin + 1e-9 else "red"


def definitions(targets: ServiceLevelSettings) -> dict[str, dict[str, Any]]:
    """Each service level's target and plain-words definition, shown next to the figure wherever it is."""
    answer, abandon, window = targets.answer_within_s, targets.abandon_after_s, targets.callback_within_s
    return {
        "answered_in_time": {
            "label": f"Answered within {answer} s (of answered)", "target": targets.answer_target, "higher_is_better": True,
            "definition": f"Calls answered within {answer} seconds, as a share of the calls answered. "
                          f"Target: at least {targets.answer_target:.0%}."},
        "answered_in_time_all": {
            "label": f"Answered within {answer} s (of all)", "target": targets.answer_target, "higher_is_better": True,
            "definition": f"Calls answered within {answer} seconds plus callers who hung up within {answer} seconds, "
                          f"as a share of all calls answered or abandoned. Target: at least {targets.answer_target:.0%}."},
        "abandoned_after": {
            "label": f"Abandoned after {abandon} s", "target": targets.abandon_target, "higher_is_better": False,
            "definition": f"Callers who hung up after waiting more than {abandon} seconds, as a share of the calls "
                          f"that reached the line and left it. Target: under {targets.abandon_target:.0%}."},
        "callbacks_in_time": {
            "label": f"Call-backs within {window // 60} min", "target": targets.callback_target, "higher_is_better": True,
            "definition": f"Call-backs first rung within {window // 60} minutes of being asked for (or of the line "
                          f"opening), as a share of those rung or overdue. Target: at least {targets.callback_target:.0%}."},
    }


class Levels:
    """Counts one bucket of calls (a day, an hour, today, the last hour) towards the service levels."""

    def __init__(self, targets: ServiceLevelSettings):
        self.targets = targets
        self.answered = self.answered_within = self.abandoned = self.abandoned_within = self.left_line = 0
        self.abandoned_late = 0
        self.callbacks_due = self.callbacks_in_time = 0

    def add(self, outcome: str | None, wait_s: int | None) -> None:
        """A call that reached the line and left it after `wait_s` whole seconds (None: still waiting)."""
        if wait_s is None:
            return
        self.left_line += 1
        if outcome == "answered":
            self.answered += 1
            self.answered_within += wait_s <= self.targets.answer_within_s
        elif outcome == "abandoned":
            self.abandoned += 1
            # Short abandons (within the answer threshold) for the second service level; "after" for the third.
            self.abandoned_within += wait_s <= self.targets.answer_within_s
            self.abandoned_late += wait_s > self.targets.abandon_after_s

    def add_callback(self, in_time: bool) -> None:
        """A call-back rung, or overdue: in time or not."""
        self.callbacks_due += 1
        self.callbacks_in_time += in_time

    def figures(self) -> dict[str, Any]:
        """The counts, the four rates and each rate's colour against its target."""
        late = self.abandoned_late
        rates = {
            "answered_in_time": _rate(self.answered_within, self.answered),
            "answered_in_time_all": _rate(self.answered_within + self.abandoned_within, self.answered + self.abandoned),
            "abandoned_after": _rate(late, self.left_line),
            "callbacks_in_time": _rate(self.callbacks_in_time, self.callbacks_due),
        }
        t = self.targets
        return {
            "answered": self.answered, "answered_within": self.answered_within, "abandoned": self.abandoned,
            "abandoned_within": self.abandoned_within, "abandoned_after_threshold": late,
            "abandoned_short": self.abandoned - late, "left_line": self.left_line,
            "callbacks_due": self.callbacks_due, "callbacks_in_time_count": self.callbacks_in_time,
            **rates,
            "status": {
                "answered_in_time": status(rates["answered_in_time"], t.answer_target, t.amber_margin),
                "answered_in_time_all": status(rates["answered_in_time_all"], t.answer_target, t.amber_margin),
                "abandoned_after": status(rates["abandoned_after"], t.abandon_target, t.amber_margin, higher_is_better=False),
                "callbacks_in_time": status(rates["callbacks_in_time"], t.callback_target, t.amber_margin),
            },
        }


def _whole_seconds(start: dt.datetime, end: dt.datetime) -> int:
    return round((end - start).total_seconds())


def targets_of(settings: Any) -> tuple[ServiceLevelSettings, OpeningHours]:
    """The configured targets and opening hours (for call-backs asked for while closed) of a Settings."""
    return settings.service_levels, OpeningHours.from_settings(settings.opening_hours)


def line_waits(session: Session, start: dt.datetime, end: dt.datetime) -> list[tuple[dt.datetime, str | None, int | None]]:
    """(started_at, outcome, whole-second wait or None while waiting) of each call in [start, end) that reached the line."""
    rows = session.execute(
        select(Call.started_at, Call.outcome, Call.queued_at, func.coalesce(Call.dequeued_at, Call.ended_at))
        .where(Call.started_at >= start, Call.started_at < end, Call.queued_at.is_not(None))
    ).all()
    return [(started, outcome, _whole_seconds(queued, left) if left is not None else None)
            for started, outcome, queued, left in rows]


def callback_times(session: Session, start: dt.datetime, end: dt.datetime, now: dt.datetime,
                   targets: ServiceLevelSettings, hours: OpeningHours | None) -> list[tuple[dt.datetime, bool]]:
    """(started_at, rung in time) of each call-back asked for on a call that started in [start, end),
    leaving out those not yet rung whose window is still open (their fate is open)."""
    attempt = (select(func.min(CallEvent.at)).where(
        CallEvent.call_id == Call.id, CallEvent.kind.in_(("callback_placed", "callback_unanswered"))).scalar_subquery())
    asked = (select(func.min(CallEvent.at)).where(CallEvent.call_id == Call.id, CallEvent.kind == "callback_requested")
             .scalar_subquery())
    rows = session.execute(
        select(Call.started_at, func.coalesce(asked, Call.dequeued_at, Call.started_at), attempt)
        .join(QueueEntry, QueueEntry.call_id == Call.id)
        .where(Call.started_at >= start, Call.started_at < end, QueueEntry.kind == "callback")
    ).all()
    window = dt.timedelta(seconds=targets.callback_within_s)
    found = []
    for started, requested, rung in rows:
        # Asked for while the line was closed: the promise runs from the opening.
        promised_from = requested
        if hours is not None and not hours.is_open(requested):
            promised_from = hours.next_opening(requested) or requested
        deadline = promised_from + window
        if rung is None and now <= deadline:
            continue
        found.append((started, rung is not None and rung <= deadline))
    return found


def service_levels(session: Session, start: dt.datetime, end: dt.datetime, now: dt.datetime,
                   targets: ServiceLevelSettings, hours: OpeningHours | None = None) -> dict[str, Any]:
    """The service levels of the calls that started in [start, end)."""
    levels = Levels(targets)
    for _, outcome, wait_s in line_waits(session, start, end):
        levels.add(outcome, wait_s)
    for _, in_time in callback_times(session, start, end, now, targets, hours):
        levels.add_callback(in_time)
    return levels.figures()


def channel_counts(session: Session, start: dt.datetime, end: dt.datetime) -> dict[str, int]:
    """Calls that reached the line in [start, end), by channel name (see the module's definitions).

    A call's channel is `callback` when its entry in the line is a call-back request, else the call's
    own `channel` ("phone", "web") where the model has that column, else `phone`; a web request that
    asks to be rung back counts as web. Every name in CHANNELS is present, 0 when none came that way.
    """
    own = getattr(Call, "channel", None)
    channel = case((own == "web", literal("web")), (QueueEntry.kind == "callback", literal("callback")),
                   else_=literal("phone")) if own is not None else case(
        (QueueEntry.kind == "callback", literal("callback")), else_=literal("phone"))
    counts = dict.fromkeys(CHANNELS, 0)
    for name, number in session.execute(
        select(channel.label("channel"), func.count(Call.id)).outerjoin(QueueEntry, QueueEntry.call_id == Call.id)
        .where(Call.started_at >= start, Call.started_at < end, reached_line())
        .group_by(channel)
    ):
        counts[name] = counts.get(name, 0) + int(number)
    return counts


# -- the wallboard ----------------------------------------------------------------------------------

def wallboard(session: Session, now: dt.datetime, targets: ServiceLevelSettings | None = None,
              hours: OpeningHours | None = None, default_wait_s: int = 180) -> dict[str, Any]:
    """The body of the `wallboard` event: the line now, the handlers, today's figures, the service
    levels in the last hour and today against their targets, the wait a caller joining now can
    expect (wait_estimate.py; `default_wait_s` until there is anything to learn from), and risk alerts."""
    targets = targets or ServiceLevelSettings()
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
        "service_levels": {
            # The last hour's calls, up to this second (`end` is exclusive).
            "now": service_levels(session, now - NOW_WINDOW, now + dt.timedelta(seconds=1), now, targets, hours),
            "today": service_levels(session, day.start, day.end, now, targets, hours),
            "definitions": definitions(targets),
        },
        "expected_wait": wait_estimate.for_new_caller(session, now, default_wait_s).as_dict(),
        "alerts": alerts(session, day.start),
    }


def wallboard_options(settings: Any) -> dict[str, Any]:
    """`wallboard`'s keyword arguments from a Settings: the targets, opening hours and default wait."""
    targets, hours = targets_of(settings)
    return {"targets": targets, "hours": hours, "default_wait_s": settings.queue.default_wait_estimate_s}


def display_board(board: dict[str, Any]) -> dict[str, Any]:
    """The wallboard as a display-only screen sees it: figures only, no call, handler or person named.

    Alerts keep only when they were raised, so that the room sees that one is open; who and which call
    stay on the supervisors' screens.
    """
    return {
        "at": board["at"], "day": board["day"], "waiting": board["waiting"], "longest_wait_s": board["longest_wait_s"],
        "callbacks_due": board["callbacks_due"], "callbacks_later": board["callbacks_later"],
        "handlers": board["handlers"], "today": board["today"], "service_levels": board["service_levels"],
        "expected_wait": board["expected_wait"],
        "alerts": [{"kind": alert["kind"], "level": alert["level"], "at": alert["at"]} for alert in board["alerts"]],
    }


#: Who holds a web request's alert: nobody until a handler takes it.
WEB_ALERT_HANDLER = "nobody yet (a web request)"


def alerts(session: Session, since: dt.datetime) -> list[dict[str, Any]]:
    """Immediate-risk alerts since `since`, newest first, in the shape of the `alert` event: from risk
    screens, from questionnaires that raised the risk screen (PHQ-9 item 9 above 0), and from web
    requests whose sender said they were not safe now."""
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
    web = session.execute(
        select(CallEvent.call_id, CallEvent.at, CallEvent.id, CallEvent.detail)
        .join(Call, Call.id == CallEvent.call_id)
        .where(CallEvent.kind == "risk", CallEvent.at >= since, Call.channel == "web")
        .order_by(CallEvent.at.desc(), CallEvent.id.desc())
        .limit(ALERTS_SHOWN * 2)
    ).all()
    found += [(at, row_id, {"kind": "risk", "call_id": call_id, "handler": {"id": None, "name": WEB_ALERT_HANDLER},
                            "level": "immediate", "at": at.isoformat(), "source": "web_form"})
              for call_id, at, row_id, detail in web if (detail or {}).get("source") == "web_form"]
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


def summary(session: Session, period: Period, now: dt.datetime, targets: ServiceLevelSettings | None = None,
            hours: OpeningHours | None = None) -> dict[str, Any]:
    """The body of GET /api/reports/summary: volumes by day and hour, service levels by day and hour
    against their targets, abandonment, outcomes, channels, bookings."""
    targets = targets or ServiceLevelSettings()
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
    # Service levels per day and per hour of the day, and over the whole period, from the same calls.
    day_levels = {day: Levels(targets) for day in by_day}
    hour_levels = [Levels(targets) for _ in range(24)]
    whole = Levels(targets)
    for started_at, outcome, wait_s in line_waits(session, period.start, period.end):
        local = started_at.astimezone(LONDON)
        for levels in (day_levels[local.date()], hour_levels[local.hour], whole):
            levels.add(outcome, wait_s)
    for started_at, in_time in callback_times(session, period.start, period.end, now, targets, hours):
        local = started_at.astimezone(LONDON)
        for levels in (day_levels[local.date()], hour_levels[local.hour], whole):
            levels.add_callback(in_time)
    for day, levels in day_levels.items():
        by_day[day]["service"] = levels.figures()
    for hour, levels in enumerate(hour_levels):
        by_hour[hour]["service"] = levels.figures()
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
        "totals": {**queue_figures(session, period.start, period.end, now), "service": whole.figures()},
        "targets": {"answer_within_s": targets.answer_within_s, "abandon_after_s": targets.abandon_after_s,
                    "callback_within_s": targets.callback_within_s, "amber_margin": targets.amber_margin},
        "definitions": definitions(targets),
        "channels": channel_counts(session, period.start, period.end),
        "by_day": list(by_day.values()),
        "by_hour": by_hour,
        "outcomes": outcomes,
        "needs": needs,
        "bookings": {"total": sum(item["bookings"] for item in by_locality), "cancelled": int(cancelled),
                     "by_locality": by_locality, "by_profession": by_profession},
    }


def summary_rows(report: dict[str, Any]) -> Iterator[tuple[str, str, str, Any]]:
    """Every figure of a summary as (section, key, figure, value): the reports' charts as rows.

    Nested service levels are flattened (`service.answered_in_time`); colours come as their words.
    """
    def flat(prefix: str, values: dict[str, Any]) -> Iterator[tuple[str, Any]]:
        for name, value in values.items():
            if isinstance(value, dict):
                yield from flat(f"{prefix}{name}.", value)
            else:
                yield f"{prefix}{name}", value

    for figure, value in flat("", report["totals"]):
        yield "totals", "", figure, value
    for item in report["by_day"]:
        for figure, value in flat("", {k: v for k, v in item.items() if k != "date"}):
            yield "by_day", item["date"], figure, value
    for item in report["by_hour"]:
        for figure, value in flat("", {k: v for k, v in item.items() if k != "hour"}):
            yield "by_hour", f"{item['hour']:02d}:00", figure, value
    for name, value in report["outcomes"].items():
        yield "outcomes", name, "calls", value
    for name, value in report["channels"].items():
        yield "channels", name, "calls", value
    for name, value in report["needs"].items():
        yield "needs", name, "calls", value
    for item in report["bookings"]["by_locality"]:
        yield "bookings_by_locality", item["name"], "bookings", item["bookings"]
    for item in report["bookings"]["by_profession"]:
        yield "bookings_by_profession", item["profession"], "bookings", item["bookings"]


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
