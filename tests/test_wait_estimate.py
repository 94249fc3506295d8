"""The wait estimate's model (Erlang C) against worked figures, its fallbacks, what the wallboard shows,
and the error measure the benchmark prints."""

from __future__ import annotations

import datetime as dt
import math

import pytest

from helpline import reports, wait_estimate
from helpline.db import db
from helpline.models import Call, utcnow

from . import routing_factories


def erlang_c_by_the_textbook(servers: int, traffic: float) -> float:
    """Erlang C's closed form, to check the recurrence against."""
    top = traffic ** servers / math.factorial(servers) * servers / (servers - traffic)
    return top / (sum(traffic ** k / math.factorial(k) for k in range(servers)) + top)


@pytest.mark.parametrize(("servers", "traffic"), [(1, 0.5), (2, 1.0), (10, 8.0), (25, 20.0), (3, 0.1)])
def test_erlang_c_matches_the_closed_form(servers, traffic):
    assert wait_estimate.erlang_c(servers, traffic) == pytest.approx(erlang_c_by_the_textbook(servers, traffic))


def test_erlang_c_edges_and_worked_figures():
    assert wait_estimate.erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert wait_estimate.erlang_c(10, 8.0) == pytest.approx(0.409, abs=0.001)
    assert wait_estimate.erlang_c(3, 3.0) == 1.0 and wait_estimate.erlang_c(3, 5.0) == 1.0  # cannot keep up
    assert wait_estimate.erlang_c(3, 0.0) == 0.0 and wait_estimate.erlang_c(0, 1.0) == 1.0
    # The positional wait: a free handler serves the next caller at once; behind them, calls finish at N/AHT.
    assert wait_estimate.positional_wait(1, on_duty=4, free=1, handle_s=400) == 0
    assert wait_estimate.positional_wait(3, on_duty=4, free=1, handle_s=400) == 200
    # A new caller, handlers keeping up: Erlang C's mean wait, C·AHT/(N − A); 2 handlers, A = 1 Erlang.
    seconds, chance = wait_estimate.new_caller_wait(on_duty=2, free=0, waiting=0, handle_s=300, arrivals_per_s=1 / 300)
    assert chance == pytest.approx(1 / 3) and seconds == pytest.approx(150)  # the line (one call to finish) is longer
    seconds, chance = wait_estimate.new_caller_wait(on_duty=10, free=2, waiting=0, handle_s=300, arrivals_per_s=8 / 300)
    assert seconds == pytest.approx(0.409 * 300 / 2, rel=0.01)
    # Not keeping up: the line as it stands.
    seconds, chance = wait_estimate.new_caller_wait(on_duty=2, free=0, waiting=5, handle_s=300, arrivals_per_s=1 / 60)
    assert chance == 1.0 and seconds == 6 * 300 / 2


def _handled(minutes_ago: int, handle_s: int, waited_s: int = 30, sid: int = 0) -> Call:
    answered = utcnow() - dt.timedelta(minutes=minutes_ago)
    return Call(call_sid=f"CA{sid:032d}", outcome="answered", queued_at=answered - dt.timedelta(seconds=waited_s),
                dequeued_at=answered, ended_at=answered + dt.timedelta(seconds=handle_s))


def test_the_estimate_falls_back_from_handling_times_to_recent_answers_to_the_default(app):
    with app.app_context():
        now = utcnow()
        assert wait_estimate.estimate(db.session, 1, now, 180).method == "nobody_on_duty"
        assert wait_estimate.estimate(db.session, 1, now, 180).seconds is None
        routing_factories.handler(db.session, presence_="on_call")
        routing_factories.handler(db.session, presence_="break")  # not on duty
        db.session.commit()
        told = wait_estimate.estimate(db.session, 2, now, 180)
        assert (told.method, told.seconds, told.on_duty, told.free) == ("default", 180, 1, 0)
        # Two calls handled: too few to trust their handling time; their waits (40 s, 80 s) are the recent answers.
        db.session.add_all([_handled(5, 100, waited_s=40, sid=1), _handled(6, 100, waited_s=80, sid=2)])
        db.session.commit()
        told = wait_estimate.estimate(db.session, 2, utcnow(), 180)
        assert (told.method, told.seconds) == ("recent_answers", 60)  # their mean wait
        db.session.add(_handled(7, 400, sid=3))
        db.session.commit()
        told = wait_estimate.estimate(db.session, 2, utcnow(), 180)
        assert told.method == "erlang_c" and told.handle_s == 200.0 and told.seconds == 400  # 2 calls to finish at 1/200 s
        # The wallboard's figure for a caller joining now: nobody waiting, one handler busy, one arrival in 30 min.
        new = wait_estimate.for_new_caller(db.session, utcnow(), 180)
        assert new.method == "erlang_c" and new.seconds == 200 and 0 < new.chance_of_waiting <= 1
        board = reports.wallboard(db.session, utcnow(), default_wait_s=180)
        assert board["expected_wait"]["seconds"] == 200 and board["expected_wait"]["on_duty"] == 1


def test_the_benchmark_error_is_the_estimate_less_the_wait_that_followed():
    at = dt.datetime(2026, 3, 10, 9, tzinfo=dt.timezone.utc)
    told = [(at, 120, at + dt.timedelta(seconds=100)),   # 20 s too long
            (at, 60, at + dt.timedelta(seconds=120)),    # 60 s too short
            (at, 300, at + dt.timedelta(seconds=290)),   # 10 s too long
            (at, None, at + dt.timedelta(seconds=10)),   # no time given: not an estimate
            (at, 30, None)]                              # never answered: no wait to compare
    figures = wait_estimate.errors(told)
    assert figures == {"n": 3, "median_abs_error_s": 20.0, "p90_abs_error_s": 52.0, "median_error_s": 10.0}
    assert wait_estimate.errors([])["median_abs_error_s"] is None


def test_a_caller_whose_need_asks_for_a_skill_is_told_the_wait_for_the_handlers_with_it(app):
    with app.app_context():
        routing_factories.handler(db.session, presence_="on_call", skills=("mental_health",))
        routing_factories.handler(db.session, presence_="on_call", skills=("mental_health", "addiction"))
        db.session.add_all([_handled(minutes, 300, sid=minutes) for minutes in (5, 6, 7)])
        db.session.commit()
        now = utcnow()

        def told(place: int, need: str | None, fallback_in_s: float = 0) -> wait_estimate.Estimate:
            return wait_estimate.estimate(db.session, place, now, 180, need, fallback_in_s)

        # Three calls to finish: at 2/300 a second with both handlers, at 1/300 with the one who has the skill.
        assert (told(3, "mental_health").on_duty, told(3, "mental_health").seconds) == (2, 450)
        assert (told(3, "addiction").on_duty, told(3, "addiction").seconds) == (1, 900)
        assert told(3, "speak_now").seconds == told(3, None).seconds == 450  # fits anyone
        # Nobody on duty has the skill: anyone may take the call after the fallback wait, so the whole
        # line's wait, and never less than the time left until then.
        fallback = told(1, "return_to_work", fallback_in_s=500)
        assert (fallback.method, fallback.seconds) == ("skill_fallback", 500)
        assert told(3, "return_to_work", fallback_in_s=20).seconds == 450


def test_a_caller_declined_by_the_only_free_handler_is_not_told_they_are_next(app):
    """A handler who declines a call (they know the caller, say) is never offered it again, so they
    do not count for that caller's wait: with nobody else on duty, no time is promised at all."""
    with app.app_context():
        knows_them = routing_factories.handler(db.session, presence_="available", skills=("mental_health",))
        db.session.commit()
        now = utcnow()
        assert wait_estimate.estimate(db.session, 1, now, 180, "speak_now").method == "handler_free"
        declined = wait_estimate.estimate(db.session, 1, now, 180, "speak_now", declined_by=(knows_them.id,))
        assert (declined.method, declined.seconds) == ("nobody_on_duty", None)
        # Another handler on duty: the wait is theirs to give.
        routing_factories.handler(db.session, presence_="on_call", skills=("mental_health",))
        db.session.commit()
        assert wait_estimate.estimate(db.session, 1, now, 180, "speak_now", declined_by=(knows_them.id,)).on_duty == 1
