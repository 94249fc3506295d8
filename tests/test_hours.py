"""Opening hours in Europe/London, on both sides of the clock changes."""

from __future__ import annotations

import datetime as dt

import pytest

from helpline.config import load_settings
from helpline.hours import OpeningHours

UTC = dt.timezone.utc


def hours(**opening_hours) -> OpeningHours:  # type: ignore[no-untyped-def]
    return OpeningHours.from_settings(load_settings({"opening_hours": opening_hours} if opening_hours else None, environ={}).opening_hours)


@pytest.mark.parametrize("instant,is_open", [
    # Winter (GMT = UTC): 08:00 London is 08:00 UTC.
    (dt.datetime(2026, 3, 27, 7, 59, tzinfo=UTC), False),
    (dt.datetime(2026, 3, 27, 8, 0, tzinfo=UTC), True),
    (dt.datetime(2026, 3, 27, 19, 59, tzinfo=UTC), True),
    (dt.datetime(2026, 3, 27, 20, 0, tzinfo=UTC), False),
    # Clocks go forward on Sunday 29 March 2026; on Monday 30 March (BST) 08:00 London is 07:00 UTC.
    (dt.datetime(2026, 3, 30, 6, 59, tzinfo=UTC), False),
    (dt.datetime(2026, 3, 30, 7, 0, tzinfo=UTC), True),
    (dt.datetime(2026, 3, 30, 18, 59, tzinfo=UTC), True),
    (dt.datetime(2026, 3, 30, 19, 0, tzinfo=UTC), False),
    # Clocks go back on Sunday 25 October 2026; on Monday 26 October 08:00 London is 08:00 UTC again.
    (dt.datetime(2026, 10, 23, 7, 0, tzinfo=UTC), True),
    (dt.datetime(2026, 10, 26, 7, 30, tzinfo=UTC), False),
    (dt.datetime(2026, 10, 26, 8, 0, tzinfo=UTC), True),
    # Saturday mornings only; Sunday closed; Christmas Day closed although a Friday.
    (dt.datetime(2026, 11, 28, 13, 59, tzinfo=UTC), True),
    (dt.datetime(2026, 11, 28, 14, 0, tzinfo=UTC), False),
    (dt.datetime(2026, 11, 29, 12, 0, tzinfo=UTC), False),
    (dt.datetime(2026, 12, 25, 12, 0, tzinfo=UTC), False),
])
def test_open_or_closed(instant, is_open):
    assert hours().is_open(instant) is is_open


def test_next_opening_across_the_spring_change():
    # Saturday 28 March 2026 at 15:00 GMT: closed until Monday 08:00 BST, which is 07:00 UTC.
    opening = hours().next_opening(dt.datetime(2026, 3, 28, 15, 0, tzinfo=UTC))
    assert opening.astimezone(UTC) == dt.datetime(2026, 3, 30, 7, 0, tzinfo=UTC)
    assert (opening.hour, opening.minute) == (8, 0)


def test_next_opening_skips_closed_dates():
    opening = hours().next_opening(dt.datetime(2026, 12, 24, 21, 0, tzinfo=UTC))
    assert opening.astimezone(UTC) == dt.datetime(2026, 12, 28, 8, 0, tzinfo=UTC)


def test_an_opening_inside_the_skipped_hour_lands_on_a_real_instant():
    weekly = {day: [] for day in ("mon", "tue", "wed", "thu", "fri", "sat")} | {"sun": ["01:30-04:00"]}
    opening = hours(weekly=weekly, closed_dates=[]).next_opening(dt.datetime(2026, 3, 28, 12, 0, tzinfo=UTC))
    # 01:30 does not exist in London on 29 March 2026; the line opens at the first real instant after.
    assert opening.astimezone(UTC) == dt.datetime(2026, 3, 29, 1, 30, tzinfo=UTC)


def test_whole_day():
    weekly = {day: ["00:00-24:00"] for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
    always = hours(weekly=weekly, closed_dates=[])
    assert always.is_open(dt.datetime(2026, 3, 29, 0, 30, tzinfo=UTC))
    assert always.is_open(dt.datetime(2026, 10, 25, 23, 59, tzinfo=UTC))
    # Said as people say it, not "Monday to Sunday, midnight to midnight".
    assert always.spoken_summary() == "We are open at any hour, every day."


def test_the_spoken_summary_groups_days():
    assert hours().spoken_summary() == (
        "We are open Monday to Friday, 8 a.m. to 8 p.m.; Saturday, 8 a.m. to 2 p.m., and closed on public holidays.")


def test_a_naive_instant_is_refused():
    with pytest.raises(ValueError):
        hours().is_open(dt.datetime(2026, 1, 1, 12, 0))


def test_always_open_answers_around_the_clock_and_is_one_setting_away():
    """The demo's HELPLINE_ALWAYS_OPEN: open on a Sunday night and on Christmas Day; false keeps the hours."""
    settings = load_settings(None, environ={"HELPLINE_ALWAYS_OPEN": "true"}).opening_hours
    always = OpeningHours.from_settings(settings)
    for instant in (dt.datetime(2026, 11, 29, 23, 30, tzinfo=UTC), dt.datetime(2026, 12, 25, 3, 0, tzinfo=UTC)):
        assert always.is_open(instant)
    closed = OpeningHours.from_settings(load_settings(None, environ={"HELPLINE_ALWAYS_OPEN": "false"}).opening_hours)
    assert not closed.is_open(dt.datetime(2026, 11, 29, 23, 30, tzinfo=UTC))


def test_a_time_that_ends_a_sentence_has_one_full_stop(app_factory):
    # With no public holidays the summary ends on a time: "8 p.m." is the sentence's end, not "8 p.m..".
    assert hours(closed_dates=[]).spoken_summary().endswith("8 a.m. to 2 p.m.")
    app = app_factory(opening_hours={"weekly": {"mon": ["08:00-20:00"], "sat": ["08:00-14:00"]}, "closed_dates": []})
    interpreter = app.extensions["helpline.ivr"]
    sunday_evening = dt.datetime(2026, 6, 7, 21, 0, tzinfo=UTC)
    spoken = interpreter.render("We will call you back after we open, {next_opening}. {opening_hours}", sunday_evening)
    assert spoken == ("We will call you back after we open, tomorrow at 8 a.m. "
                      "We are open Monday to Friday, 8 a.m. to 8 p.m.; Saturday, 8 a.m. to 2 p.m.")
