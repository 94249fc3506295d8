"""The routing decision on plain values: no database, no app."""

from __future__ import annotations

import datetime as dt

import pytest

from helpline.decision import Free, Waiting, choose_handler, fits, language_asked, pick, requirements, takeable

NOW = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.timezone.utc)
#: Calls placed at or before this have waited long enough for any free handler.
CUTOFF = NOW - dt.timedelta(seconds=60)
ALL = frozenset({"mental_health", "addiction", "return_to_work"})


def call(entry_id: int, need: str | None = "mental_health", waited_s: float = 10, priority: int = 100,
         flags: tuple[str, ...] = (), declined_by: tuple[int, ...] = ()) -> Waiting:
    return Waiting(entry_id, 1000 + entry_id, "live", need, flags, priority, NOW - dt.timedelta(seconds=waited_s),
                   declined_by)


def person(handler_id: int, rank: int, skills: frozenset[str] = ALL, languages: frozenset[str] = frozenset({"en"})) -> Free:
    return Free(handler_id, skills, languages, rank)


def test_a_call_asks_for_its_skill_dentistry_and_language():
    assert requirements("addiction", ("dentist", "language:cy")) == (frozenset({"addiction", "dentist"}), "cy")
    assert requirements("speak_now", ()) == (frozenset(), None)
    welsh = person(1, 0, ALL | {"dentist"}, frozenset({"en", "cy"}))
    assert fits(welsh, call(1, "addiction", flags=("dentist", "language:cy")))
    assert not fits(person(2, 1), call(1, "addiction", flags=("dentist",)))


def test_the_language_asked_for_is_the_last_language_flag():
    assert language_asked(["dentist", "language:cy", "language:pl"]) == "pl"
    assert language_asked(["dentist"]) is None and language_asked(None) is None and language_asked([7]) is None


def test_the_first_in_line_goes_to_the_longest_idle_handler_who_fits():
    longest, recent = person(1, 0), person(2, 1)
    later, first = call(1, waited_s=5), call(2, waited_s=30)
    assert pick([later, None, first], [longest, recent], CUTOFF) == (first, longest)


def test_priority_comes_before_the_time_waited():
    moved_up, older = call(1, waited_s=5, priority=1), call(2, waited_s=50)
    assert pick([older, moved_up], [person(1, 0)], CUTOFF)[0] is moved_up  # type: ignore[index]


def test_a_skilled_handler_is_chosen_over_a_longer_idle_unskilled_one():
    unskilled, skilled = person(1, 0, frozenset()), person(2, 1)
    assert choose_handler(call(1, "addiction"), [unskilled, skilled], CUTOFF) is skilled


def test_after_the_fallback_wait_anyone_free_who_has_not_declined_may_take_it():
    unskilled, decliner = person(1, 1, frozenset()), person(2, 0, frozenset())
    fresh, old = call(1, "addiction", waited_s=10), call(2, "addiction", waited_s=61, declined_by=(2,))
    assert not takeable(fresh, [unskilled, decliner], CUTOFF)
    assert takeable(old, [unskilled, decliner], CUTOFF)
    assert choose_handler(old, [decliner, unskilled], CUTOFF) is unskilled


def test_a_handler_who_declined_is_not_offered_the_call_again():
    decliner = person(1, 0)
    assert not takeable(call(1, declined_by=(1,)), [decliner], CUTOFF)
    assert choose_handler(call(1, declined_by=(1,), waited_s=600), [decliner], CUTOFF) is None


def test_nothing_to_offer_when_no_need_has_a_takeable_call():
    assert pick([None, None], [person(1, 0)], CUTOFF) is None
    with pytest.raises(ValueError):
        pick([call(1, "addiction")], [person(1, 0, frozenset())], CUTOFF)
