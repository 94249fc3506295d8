"""The wait a caller is told, and the one supervisors see: from the handlers on duty, how long their
recent calls took and the line ahead, never from a constant.

The model is Erlang C's (M/M/N: callers arrive at random, N handlers each take calls lasting AHT on
average). In it, a caller with k callers ahead of them once every handler is busy waits for k+1 calls
to finish, and calls finish at N/AHT a second: on average (k+1)·AHT/N. A caller who can be offered to
a handler who is free now waits only for the offer. For a caller who has not joined yet (what the
wallboard shows) the model gives Erlang C's average wait, C(N, A)·AHT/(N − A) with A = λ·AHT the
traffic in Erlangs, or the positional wait of the line as it stands when the handlers cannot keep up
(A ≥ N, where the formula has no steady state).

Inputs, each from an indexed query:
* handlers on duty: available, being offered a call, on a call or wrapping up (on break and offline
  are not on duty); for a caller whose need asks for a skill, those with it. When nobody on duty has
  it, any handler may take the call once it has waited `routing.skill_fallback_after_s`: the wait is
  then the whole line's, and never less than the time left until then (`skill_fallback`). Callers
  ahead with other needs still count as ahead, and languages are not considered: nobody is promised
  too little;
* AHT: the average handling (answer to end of wrap-up) of the calls handled in the last HANDLE_WINDOW,
  when there are at least MIN_HANDLED of them;
* λ: callers who joined the line in the last ARRIVAL_WINDOW.

Without enough handled calls: no wait while a handler is free for the caller, else the recent answers
(callers answered in the last ANSWER_WINDOW: the place over the rate at which they were answered,
Little's law), then the configured default. With nobody on duty there is no honest time to give: `seconds` is None, and the
caller is told so and offered the call-back at once (ivr/engine.py).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass
from typing import Any, Collection, Iterable, Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .decision import SKILLED_NEEDS
from .models import Call, CallEvent, Handler, QueueEntry, User

#: Handlers counted as on duty: they will take a call now or when the one they are on is done.
ON_DUTY = ("available", "offered", "on_call", "wrap_up")
#: How far back handled calls give the average handling time ...
HANDLE_WINDOW = dt.timedelta(hours=2)
#: ... and how many it needs before it is trusted.
MIN_HANDLED = 3
#: How far back joining the line counts towards the arrival rate.
ARRIVAL_WINDOW = dt.timedelta(minutes=30)
#: How far back answered calls count for the fallback ...
ANSWER_WINDOW = dt.timedelta(minutes=30)
#: ... and the shortest span their rate is taken over.
MIN_SPAN = dt.timedelta(minutes=1)
#: The CallEvent recording what a caller was told (the benchmark sets it against the wait that followed).
TOLD = "wait_estimate"


@dataclass(frozen=True)
class Estimate:
    """A wait estimate and what it came from."""

    #: The expected wait in seconds; None when no honest time can be given (nobody on duty).
    seconds: int | None
    #: erlang_c, handler_free, recent_answers, default, skill_fallback or nobody_on_duty.
    method: str
    on_duty: int
    free: int
    #: Average handling time of recent calls, in seconds (None: too few to trust).
    handle_s: float | None = None
    #: Erlang C's probability that a caller joining now waits at all (None: not computed).
    chance_of_waiting: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def erlang_c(servers: int, traffic: float) -> float:
    """Erlang C: the chance a caller has to wait, with `servers` handlers and `traffic` Erlangs offered.

    Computed through Erlang B's recurrence (stable for any number of servers); 1 when the handlers
    cannot keep up (traffic at or above the servers).
    """
    if servers <= 0 or traffic >= servers:
        return 1.0
    if traffic <= 0:
        return 0.0
    blocking = 1.0
    for k in range(1, servers + 1):
        blocking = traffic * blocking / (k + traffic * blocking)
    return servers * blocking / (servers - traffic * (1 - blocking))


def positional_wait(place: int, on_duty: int, free: int, handle_s: float) -> float:
    """Expected wait of the caller at `place` (1 = next) in the M/M/N model: nothing while a handler is
    free for them, else the time for (place − free) calls to finish at on_duty/handle_s a second."""
    ahead_of_a_handler = place - free
    if ahead_of_a_handler <= 0:
        return 0.0
    return ahead_of_a_handler * handle_s / on_duty


def new_caller_wait(on_duty: int, free: int, waiting: int, handle_s: float, arrivals_per_s: float) -> tuple[float, float]:
    """(expected wait, chance of waiting) for a caller joining now: Erlang C's steady state while the
    handlers keep up, the line as it stands when they do not, whichever is longer."""
    traffic = arrivals_per_s * handle_s
    chance = erlang_c(on_duty, traffic)
    behind_the_line = positional_wait(waiting + 1, on_duty, free, handle_s)
    if traffic >= on_duty:
        return behind_the_line, 1.0
    return max(chance * handle_s / (on_duty - traffic), behind_the_line), chance


def _on_duty(session: Session) -> Sequence[Any]:
    """Each handler on duty: their id, presence and skills."""
    return session.execute(
        select(Handler.id, Handler.presence, Handler.skills).join(User, User.id == Handler.user_id)
        .where(User.active.is_(True), Handler.presence.in_(ON_DUTY))).all()


def _staff(on_duty: Sequence[Any], need: str | None = None, declined_by: Collection[int] = ()) -> tuple[int, int]:
    """How many handlers are on duty, and how many free: of those with the skill `need` asks for, if
    any, and never one who declined the call (routing will not offer it to them again)."""
    able = [presence for handler_id, presence, skills in on_duty
            if handler_id not in declined_by and (need not in SKILLED_NEEDS or need in (skills or ()))]
    return len(able), sum(1 for presence in able if presence == "available")


def _handle_s(session: Session, now: dt.datetime) -> float | None:
    """Average handling (answer to end of wrap-up, or to the call's end) of calls handled recently."""
    wrap_up_end = (select(func.min(CallEvent.at))
                   .where(CallEvent.call_id == Call.id, CallEvent.kind.in_(("wrap_up", "wrap_up_timed_out")))
                   .scalar_subquery())
    rows = session.execute(
        select(Call.dequeued_at, func.coalesce(wrap_up_end, Call.ended_at))
        .where(Call.outcome == "answered", Call.dequeued_at.is_not(None), Call.ended_at >= now - HANDLE_WINDOW)
    ).all()
    spans = [(done - answered).total_seconds() for answered, done in rows if done is not None and done > answered]
    return sum(spans) / len(spans) if len(spans) >= MIN_HANDLED else None


def _recent_answers(session: Session, place: int, now: dt.datetime) -> int | None:
    """The fallback: place over the recent answer rate (three or more answers, Little's law), else their mean wait."""
    rows = session.execute(
        select(Call.queued_at, Call.dequeued_at).where(
            Call.outcome == "answered", Call.dequeued_at >= now - ANSWER_WINDOW, Call.queued_at.is_not(None))
    ).all()
    if len(rows) >= 3:
        # The rate over the time the answers actually span (not the whole window: after a quiet spell,
        # three answers in the last minute are one every twenty seconds, not one every ten minutes).
        span = max(MIN_SPAN.total_seconds(), (now - min(left for _joined, left in rows)).total_seconds())
        return int(place * span / len(rows))
    if rows:
        return int(sum((left - joined).total_seconds() for joined, left in rows) / len(rows))
    return None


def estimate(session: Session, place: int, now: dt.datetime, default_s: int, need: str | None = None,
             fallback_in_s: float = 0, declined_by: Collection[int] = ()) -> Estimate:
    """The expected wait of the caller at `place` in line (1 = next), who asked for `need`, whom any
    handler may take in `fallback_in_s` seconds, and whom the handlers `declined_by` declined (see
    the module's definitions)."""
    staff = _on_duty(session)
    on_duty, free = _staff(staff, need, declined_by)
    if on_duty == 0 and need in SKILLED_NEEDS:
        anyone = _estimate(session, place, now, default_s, *_staff(staff, declined_by=declined_by))
        if anyone.seconds is None:
            return anyone
        return Estimate(max(anyone.seconds, math.ceil(fallback_in_s)), "skill_fallback", anyone.on_duty, anyone.free,
                        anyone.handle_s)
    return _estimate(session, place, now, default_s, on_duty, free)


def _estimate(session: Session, place: int, now: dt.datetime, default_s: int, on_duty: int, free: int) -> Estimate:
    """The expected wait of the caller at `place`, with `on_duty` handlers who could take the call and
    `free` of them free now."""
    if on_duty == 0:
        return Estimate(None, "nobody_on_duty", 0, 0)
    return _estimate_with(session, place, now, default_s, on_duty, free, _handle_s(session, now))


def _estimate_with(session: Session, place: int, now: dt.datetime, default_s: int, on_duty: int, free: int,
                   handle_s: float | None) -> Estimate:
    """`_estimate` once the recent handling time is known (None: too few calls handled lately)."""
    if handle_s is not None:
        return Estimate(round(positional_wait(place, on_duty, free, handle_s)), "erlang_c", on_duty, free, round(handle_s, 1))
    if place <= free:
        # A handler is free for them: only the offer stands between, whatever the history.
        return Estimate(0, "handler_free", on_duty, free)
    recent = _recent_answers(session, place, now)
    if recent is not None:
        return Estimate(recent, "recent_answers", on_duty, free)
    return Estimate(default_s, "default", on_duty, free)


def for_new_caller(session: Session, now: dt.datetime, default_s: int) -> Estimate:
    """The wait a caller joining the line now can expect (the wallboard's figure)."""
    waiting = int(session.scalar(select(func.count(QueueEntry.id))
                                 .where(QueueEntry.state.in_(("waiting", "offered")), QueueEntry.kind == "live")) or 0)
    on_duty, free = _staff(_on_duty(session))
    if on_duty == 0:
        return Estimate(None, "nobody_on_duty", 0, 0)
    handle_s = _handle_s(session, now)
    if handle_s is None:
        return _estimate_with(session, waiting + 1, now, default_s, on_duty, free, None)
    arrivals = session.scalar(select(func.count(Call.id)).where(Call.queued_at >= now - ARRIVAL_WINDOW)) or 0
    seconds, chance = new_caller_wait(on_duty, free, waiting, handle_s, int(arrivals) / ARRIVAL_WINDOW.total_seconds())
    return Estimate(round(seconds), "erlang_c", on_duty, free, round(handle_s, 1), round(chance, 3))


def errors(told: Iterable[tuple[dt.datetime, int | None, dt.datetime | None]]) -> dict[str, Any]:
    """How far estimates were from the waits that followed: (told at, estimate, answered at) for each
    estimate told to a caller who was then answered. Returns the count, and the median and 90th
    percentile of the absolute error in seconds, and the median signed error (+: told too long)."""
    absolute, signed = [], []
    for at, estimate_s, answered in told:
        if estimate_s is None or answered is None:
            continue
        error = estimate_s - (answered - at).total_seconds()
        signed.append(error)
        absolute.append(abs(error))

    def percentile(values: list[float], fraction: float) -> float | None:
        if not values:
            return None
        ordered = sorted(values)
        rank = (len(ordered) - 1) * fraction
        low, high = math.floor(rank), math.ceil(rank)
        return round(ordered[low] + (ordered[high] - ordered[low]) * (rank - low), 1)

    return {"n": len(absolute), "median_abs_error_s": percentile(absolute, 0.5),
            "p90_abs_error_s": percentile(absolute, 0.9), "median_error_s": percentile(signed, 0.5)}


def told_and_answered(session: Session) -> list[tuple[dt.datetime, int | None, dt.datetime | None]]:
    """(told at, estimate, answered at) of every estimate told to a caller who was then answered."""
    rows = session.execute(
        select(CallEvent.at, CallEvent.detail, Call.dequeued_at).join(Call, Call.id == CallEvent.call_id)
        .where(CallEvent.kind == TOLD, Call.outcome == "answered")
    ).all()
    return [(at, (detail or {}).get("estimate_s"), answered) for at, detail, answered in rows]
