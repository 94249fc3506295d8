"""The routing policy: line order, skills, longest idle, fallback, timeouts, declines, wrap-up, and speed."""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Iterator

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from helpline import connect, lifecycle, presence, routing
from helpline import router as router_module
from helpline.config import RoutingSettings
from helpline.decision import takeable
from helpline.db import ServiceSession, db
from helpline.events import announce
from helpline.models import Call, CallEvent, Handler, QueueEntry

from .conftest import statements_sent
from .routing_factories import handler, waiting

NOW = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.timezone.utc)
SETTINGS = RoutingSettings(offer_timeout_s=20, wrap_up_s=120, skill_fallback_after_s=60)


def ago(seconds: float) -> dt.datetime:
    return NOW - dt.timedelta(seconds=seconds)


def later(seconds: float) -> dt.datetime:
    return NOW + dt.timedelta(seconds=seconds)


@pytest.fixture
def session(app) -> Iterator[Session]:  # type: ignore[no-untyped-def]
    """A session with no event bus: these tests call routing directly, with an explicit `now`."""
    with ServiceSession(db.engine, expire_on_commit=False) as opened:
        yield opened


def fresh(session: Session, *rows: object) -> None:
    """Write pending changes, then read the rows back as the database has them."""
    session.flush()
    for row in rows:
        session.refresh(row)


def offered_to(session: Session, entry: QueueEntry) -> int | None:
    fresh(session, entry)
    return entry.handler_id if entry.state == "offered" else None


def events(session: Session, call_id: int, kind: str) -> list[CallEvent]:
    """The call's timeline lines of `kind`, once committed: lines are written with the commit (db.append)."""
    session.commit()
    return list(session.scalars(select(CallEvent).where(CallEvent.call_id == call_id, CallEvent.kind == kind)))


def test_the_longest_idle_handler_gets_the_call(session):
    recent = handler(session, idle_since=ago(30))
    longest = handler(session, idle_since=ago(300))
    entry = waiting(session, ago(5))
    offers = routing.route(session, SETTINGS, NOW)
    assert [(offer.call_id, offer.handler_id) for offer in offers] == [(entry.call_id, longest.id)]
    fresh(session, longest, recent)
    assert longest.presence == "offered" and longest.current_call_id == entry.call_id
    assert recent.presence == "available"
    assert [event.detail for event in events(session, entry.call_id, "offered")] == [{"handler_id": longest.id}]


def test_a_call_goes_to_a_handler_with_the_skill_for_its_need(session):
    handler(session, skills=["mental_health"], idle_since=ago(600))
    addiction = handler(session, skills=["addiction"], idle_since=ago(10))
    entry = waiting(session, ago(5), need="addiction")
    routing.route(session, SETTINGS, NOW)
    assert offered_to(session, entry) == addiction.id


@pytest.mark.parametrize("need", ["speak_now", None])
def test_speak_now_and_no_need_fit_anyone(session, need):
    anyone = handler(session, skills=[], idle_since=ago(60))
    entry = waiting(session, ago(5), need=need)
    routing.route(session, SETTINGS, NOW)
    assert offered_to(session, entry) == anyone.id


@pytest.mark.parametrize("flags, skills, languages, fit", [
    (["dentist"], ["mental_health", "dentist"], ["en"], True),
    (["dentist"], ["mental_health"], ["en"], False),
    (["language:cy"], ["mental_health"], ["en", "cy"], True),
    (["language:cy"], ["mental_health"], ["en"], False),
    (["self_referral_unconfirmed"], ["mental_health"], ["en"], True),
])
def test_dentistry_and_language_flags_ask_for_those_skills(session, flags, skills, languages, fit):
    person = handler(session, skills=skills, languages=languages, idle_since=ago(60))
    entry = waiting(session, ago(5), flags=flags)
    routing.route(session, SETTINGS, NOW)
    assert offered_to(session, entry) == (person.id if fit else None)


def test_after_the_fallback_wait_any_free_handler_may_take_the_call(session):
    person = handler(session, skills=["mental_health"], idle_since=ago(60))
    entry = waiting(session, NOW, need="return_to_work")
    assert routing.route(session, SETTINGS, later(59)) == []
    offers = routing.route(session, SETTINGS, later(60))
    assert [offer.handler_id for offer in offers] == [person.id]
    assert offered_to(session, entry) == person.id


def test_skilled_handlers_still_come_first_after_the_fallback_wait(session):
    handler(session, skills=["mental_health"], idle_since=ago(900))
    skilled = handler(session, skills=["addiction"], idle_since=ago(10))
    entry = waiting(session, ago(600), need="addiction")
    routing.route(session, SETTINGS, NOW)
    assert offered_to(session, entry) == skilled.id


def test_the_line_is_ordered_by_priority_then_time_placed(session):
    first_in = waiting(session, ago(300))
    moved_up = waiting(session, ago(10), priority=50)
    person = handler(session, idle_since=ago(60))
    routing.route(session, SETTINGS, NOW)
    assert offered_to(session, moved_up) == person.id
    assert offered_to(session, first_in) is None


def test_a_callback_keeps_its_place_and_waits_for_its_time(session):
    callback = waiting(session, ago(900), kind="callback")
    live = waiting(session, ago(60))
    tomorrow = waiting(session, ago(1800), kind="callback", not_before=later(3600))
    person = handler(session, idle_since=ago(60))
    routing.route(session, SETTINGS, NOW)
    assert offered_to(session, callback) == person.id
    assert offered_to(session, live) is None and offered_to(session, tomorrow) is None
    # When its time comes, the held-back callback is first in line: it kept its place.
    other = handler(session, idle_since=ago(30))
    routing.route(session, SETTINGS, later(3600))
    assert offered_to(session, tomorrow) == other.id


def test_a_call_skipped_for_skills_does_not_hold_up_calls_behind_it(session):
    addiction = waiting(session, ago(30), need="addiction")
    mental = waiting(session, ago(20), need="mental_health")
    person = handler(session, skills=["mental_health"], idle_since=ago(60))
    routing.route(session, SETTINGS, NOW)
    assert offered_to(session, addiction) is None
    assert offered_to(session, mental) == person.id


def test_only_handlers_with_a_console_open_are_offered_calls(session):
    handler(session, idle_since=ago(900), connected=False)
    handler(session, idle_since=ago(900), presence_="break")
    open_console = handler(session, idle_since=ago(5))
    entry = waiting(session, ago(5))
    routing.route(session, SETTINGS, NOW)
    assert offered_to(session, entry) == open_console.id


def test_each_round_offers_as_many_calls_as_there_are_free_handlers(session):
    people = [handler(session, idle_since=ago(100 - index)) for index in range(3)]
    entries = [waiting(session, ago(50 - index)) for index in range(5)]
    offers = routing.route(session, SETTINGS, NOW)
    # The first in line goes to the longest idle, the second to the next, and so on.
    assert [(offer.call_id, offer.handler_id) for offer in offers] == [
        (entries[index].call_id, people[index].id) for index in range(3)]
    assert [offered_to(session, entry) for entry in entries[3:]] == [None, None]


def _as_waiting(entry: QueueEntry) -> routing.Waiting:
    return routing.Waiting(entry.id, entry.call_id, entry.kind, entry.need, tuple(entry.flags), entry.priority,
                           entry.placed_at, ())


def test_an_offer_to_a_handler_no_longer_free_changes_nothing(session):
    busy = handler(session, idle_since=ago(30))
    busy.presence = "break"
    entry = waiting(session, ago(5))
    session.flush()
    assert routing.make_offer(session, _as_waiting(entry), busy.id, SETTINGS, NOW) is None
    fresh(session, entry, busy)
    assert (entry.state, entry.handler_id, entry.offered_at) == ("waiting", None, None)
    assert busy.presence == "break" and busy.current_call_id is None
    assert events(session, entry.call_id, "offered") == []


def test_an_offer_of_a_call_no_longer_waiting_changes_nothing(session):
    person = handler(session, idle_since=ago(30))
    entry = waiting(session, ago(5))
    entry.state = "abandoned"
    session.flush()
    assert routing.make_offer(session, _as_waiting(entry), person.id, SETTINGS, NOW) is None
    fresh(session, entry, person)
    assert entry.state == "abandoned" and entry.handler_id is None
    assert person.presence == "available" and person.current_call_id is None
    assert events(session, entry.call_id, "offered") == []


def test_an_offer_is_made_whole(session):
    person = handler(session, idle_since=ago(30))
    entry = waiting(session, ago(5))
    offer = routing.make_offer(session, _as_waiting(entry), person.id, SETTINGS, NOW)
    assert offer is not None and (offer.call_id, offer.handler_id) == (entry.call_id, person.id)
    fresh(session, entry, person)
    assert (entry.state, entry.handler_id, entry.offered_at) == ("offered", person.id, NOW)
    assert (person.presence, person.presence_since, person.current_call_id) == ("offered", NOW, entry.call_id)
    [event] = events(session, entry.call_id, "offered")
    assert (event.at, event.detail) == (NOW, {"handler_id": person.id})


@pytest.mark.postgres
def test_an_offer_leaves_a_call_another_transaction_holds_without_waiting(app, database_url):
    if not database_url.startswith("postgresql"):
        pytest.skip("row locks are PostgreSQL's (SQLite writers queue anyway)")
    with db.transaction() as setup:
        person_id = handler(setup, idle_since=ago(30)).id
        entry = waiting(setup, ago(5))
    with db.engine.connect() as other:
        held = other.begin()
        other.execute(select(QueueEntry.id).where(QueueEntry.id == entry.id).with_for_update())
        with ServiceSession(db.engine) as session:
            started = time.monotonic()
            assert routing.make_offer(session, _as_waiting(entry), person_id, SETTINGS, NOW) is None
            assert time.monotonic() - started < 1
            session.commit()
        held.rollback()
    with ServiceSession(db.engine) as session:
        assert session.scalar(select(Handler.presence).where(Handler.id == person_id)) == "available"
        assert session.scalar(select(QueueEntry.state).where(QueueEntry.id == entry.id)) == "waiting"


@pytest.mark.postgres
def test_a_pass_walks_past_a_call_another_transaction_holds_instead_of_trying_it_again(app, database_url):
    """The head of the line is locked (a caller hanging up, a claim) and still reads as waiting until
    that transaction commits: the pass offers the next call rather than retrying the held one."""
    if not database_url.startswith("postgresql"):
        pytest.skip("row locks are PostgreSQL's (SQLite writers queue anyway)")
    with db.transaction() as setup:
        person_id = handler(setup, idle_since=ago(30)).id
        held_entry, next_entry = waiting(setup, ago(9)), waiting(setup, ago(5))
    offers: list[routing.Offer] = []
    with db.engine.connect() as other:
        held = other.begin()
        other.execute(select(QueueEntry.id).where(QueueEntry.id == held_entry.id).with_for_update())

        def route() -> None:
            with ServiceSession(db.engine) as session:
                offers.extend(routing.route(session, SETTINGS, NOW))
                session.commit()

        passing = threading.Thread(target=route)
        passing.start()
        passing.join(timeout=5)
        spinning = passing.is_alive()
        held.rollback()  # lets a pass that kept retrying the held call finish, so the test ends either way
        passing.join()
    assert not spinning, "the pass kept offering the call another transaction holds"
    assert [(offer.call_id, offer.handler_id) for offer in offers] == [(next_entry.call_id, person_id)]


def test_an_offer_not_accepted_in_time_moves_on_and_the_handler_goes_on_break(session):
    slow = handler(session, idle_since=ago(300))
    entry = waiting(session, ago(5))
    routing.route(session, SETTINGS, NOW)
    assert offered_to(session, entry) == slow.id
    nobody_yet = routing.sweep(session, SETTINGS, later(19))
    assert nobody_yet == [] and offered_to(session, entry) == slow.id
    next_one = handler(session, idle_since=ago(10))
    offers = routing.sweep(session, SETTINGS, later(20))
    assert [offer.handler_id for offer in offers] == [next_one.id]
    fresh(session, slow)
    assert slow.presence == "break" and slow.current_call_id is None and slow.presence_since == later(20)
    assert [event.detail for event in events(session, entry.call_id, "offer_missed")] == [{"handler_id": slow.id}]
    fresh(session, entry)
    assert entry.placed_at == ago(5)  # still its own place in line


def test_a_declined_call_goes_to_someone_else_and_the_decliner_waits_their_turn(session):
    decliner = handler(session, idle_since=ago(300))
    entry = waiting(session, ago(5))
    routing.route(session, SETTINGS, NOW)
    lifecycle.decline(session, decliner, entry.call_id, later(1))
    fresh(session, decliner)
    assert decliner.presence == "available" and decliner.available_since == later(1)
    # Nobody else is free: the call is not offered to the decliner again.
    assert routing.route(session, SETTINGS, later(2)) == []
    other = handler(session, idle_since=later(3))
    routing.route(session, SETTINGS, later(4))
    assert offered_to(session, entry) == other.id
    # A new call goes to the decliner, who is free.
    new_call = waiting(session, later(5))
    routing.route(session, SETTINGS, later(6))
    assert offered_to(session, new_call) == decliner.id
    with pytest.raises(routing.RoutingError):
        lifecycle.decline(session, other, new_call.call_id, later(7))


def test_a_handler_whose_last_console_closes_does_not_hold_the_call(session):
    leaving = handler(session, idle_since=ago(300))
    staying = handler(session, idle_since=ago(10))
    second_tab = "second-tab"
    presence.connect(session, second_tab, leaving.id, "test-process", NOW)
    entry = waiting(session, ago(5))
    routing.route(session, SETTINGS, NOW)
    assert offered_to(session, entry) == leaving.id
    assert presence.disconnect(session, second_tab) is None
    assert offered_to(session, entry) == leaving.id  # another tab is still open
    first_tab = f"sid-{leaving.user.username[1:]}"
    assert presence.disconnect(session, first_tab) == leaving.id  # their last
    lifecycle.handler_gone(session, leaving.id, later(2))
    fresh(session, leaving)
    assert leaving.presence == "offline" and entry.state == "waiting" or offered_to(session, entry) is None
    routing.route(session, SETTINGS, later(2))
    assert offered_to(session, entry) == staying.id


def test_connections_of_a_process_that_stopped_are_pruned(session):
    person = handler(session, idle_since=ago(300))
    presence.heartbeat(session, "test-process", [f"sid-{person.user.username[1:]}"], NOW)
    assert presence.prune(session, later(59)) == []
    assert presence.prune(session, later(61)) == [person.id]
    lifecycle.handler_gone(session, person.id, later(61))
    fresh(session, person)
    assert person.presence == "offline"


def test_a_connection_whose_closing_was_not_recorded_goes_stale_while_open_ones_are_kept(session):
    """The process keeps alive only the connections it still holds open: one that closed while its
    closing could not be written (the database was down, or the transaction was undone) is pruned
    once stale, and its handler is taken off the line, instead of being kept fresh for ever."""
    ghost = handler(session, idle_since=ago(300))
    present = handler(session, idle_since=ago(300))
    open_sid = f"sid-{present.user.username[1:]}"
    presence.heartbeat(session, "test-process", [open_sid], later(30))
    assert presence.prune(session, later(61)) == [ghost.id]
    lifecycle.handler_gone(session, ghost.id, later(61))
    fresh(session, ghost, present)
    assert ghost.presence == "offline" and present.presence == "available"
    assert presence.connections(session, present.id) == 1


def test_an_abandoned_offer_frees_the_handler(session):
    person = handler(session, idle_since=ago(300))
    entry = waiting(session, ago(5))
    routing.route(session, SETTINGS, NOW)
    lifecycle.call_ended(session, entry.call_id, later(3))
    fresh(session, person, entry)
    assert person.presence == "available" and person.current_call_id is None
    assert entry.state == "abandoned" and entry.position_at_exit == 1


def test_whether_anyone_holds_a_call_is_read_as_committed_outside_any_transaction(session):
    """After a call's end is committed, the service asks whether anybody holds it before opening a
    transaction to settle them: the handler offered it does; nobody holds a call still in line."""
    handler(session, idle_since=ago(300))
    offered = waiting(session, ago(10))
    in_line = waiting(session, ago(5))
    routing.route(session, SETTINGS, NOW)
    session.commit()
    assert lifecycle.held_by_anyone(db, offered.call_id) is True
    assert lifecycle.held_by_anyone(db, in_line.call_id) is False


def test_wrap_up_lasts_until_the_outcome_or_the_configured_time(session):
    person = handler(session, idle_since=ago(300))
    entry = waiting(session, ago(5))
    routing.route(session, SETTINGS, NOW)
    lifecycle.claim(session, person, entry.call_id, later(1))
    lifecycle.connected(session, entry, person, later(2), handler_leg_sid=None, caller_leg_sid=None)
    call = session.get(Call, entry.call_id)
    assert call.outcome == "answered" and entry.state == "answered"
    call.ended_at = later(100)
    lifecycle.call_ended(session, entry.call_id, later(100))
    fresh(session, person)
    assert person.presence == "wrap_up" and person.current_call_id == entry.call_id
    routing.sweep(session, SETTINGS, later(219))
    fresh(session, person)
    assert person.presence == "wrap_up"
    routing.sweep(session, SETTINGS, later(220))
    # Their console is told why the form closed by itself, with the presence it moved them to.
    told = [data for topic, data in session.info.get("pending_announcements", []) if topic == "presence"]
    assert told[-1] == {"handler_id": person.id, "presence": "available", "since": later(220).isoformat(),
                        "reason": "wrap_up_timed_out"}
    fresh(session, person)
    assert person.presence == "available" and person.available_since == later(220)
    assert events(session, entry.call_id, "wrap_up_timed_out")


def test_a_handler_who_closed_every_console_during_wrap_up_goes_offline_not_available(session):
    """An offer to a handler with no console open would ring nowhere while the caller waits."""
    person = handler(session, idle_since=ago(300), presence_="wrap_up", connected=False)
    person.presence_since = ago(500)
    routing.sweep(session, SETTINGS, NOW)
    fresh(session, person)
    assert person.presence == "offline"


def test_recording_the_outcome_ends_wrap_up(session):
    person = handler(session, idle_since=ago(300), presence_="wrap_up")
    entry = waiting(session, ago(500))
    person.current_call_id = entry.call_id
    with pytest.raises(routing.RoutingError):
        lifecycle.finish_wrap_up(session, person, entry.call_id, "nonsense", NOW)
    lifecycle.finish_wrap_up(session, person, entry.call_id, "signposted", NOW)
    assert person.presence == "available" and person.current_call_id is None
    assert [event.detail["outcome"] for event in events(session, entry.call_id, "wrap_up")] == ["signposted"]


def test_a_handler_on_a_call_cannot_set_themselves_available(session):
    person = handler(session, idle_since=ago(300), presence_="on_call")
    with pytest.raises(routing.RoutingError) as refused:
        routing.change_status(session, person, "available", NOW)
    assert refused.value.message == "on_call"


def test_going_on_break_gives_back_an_offer(session):
    person = handler(session, idle_since=ago(300))
    entry = waiting(session, ago(5))
    routing.route(session, SETTINGS, NOW)
    routing.change_status(session, person, "break", later(1))
    assert person.presence == "break"
    fresh(session, entry)
    assert entry.state == "waiting" and entry.handler_id is None


def _crowd(session: Session, calls: int, handlers: int) -> list[Handler]:
    """`calls` waiting calls of every need (a tenth of them flagged dentist) and `handlers` handlers."""
    needs = ["mental_health", "addiction", "return_to_work", "speak_now", None]
    rows = [{"call_sid": f"CA{index:032x}", "need": needs[index % 5], "flags": ["dentist"] if index % 10 == 0 else []}
            for index in range(calls)]
    session.execute(insert(Call), rows)
    ids = session.scalars(select(Call.id).order_by(Call.id)).all()
    session.execute(insert(QueueEntry), [
        {"call_id": call_id, "kind": "live", "state": "waiting", "need": row["need"], "flags": row["flags"],
         "priority": 100, "placed_at": ago(3600 - index * 0.3), "declined_by": [], "attempts": 0}
        for index, (call_id, row) in enumerate(zip(ids, rows))])
    skill_sets = [["mental_health"], ["addiction"], ["return_to_work"], ["mental_health", "addiction", "dentist"]]
    return [handler(session, skills=skill_sets[index % 4], idle_since=ago(10_000 - index)) for index in range(handlers)]


def test_ten_thousand_waiting_calls_and_three_hundred_handlers_route_quickly(session):
    people = _crowd(session, 10_000, 300)
    session.commit()
    started = time.perf_counter()
    offers = routing.route(session, SETTINGS, NOW)
    elapsed = time.perf_counter() - started
    assert len(offers) == 300 and len({offer.handler_id for offer in offers}) == 300
    # The first in line is flagged dentist: the longest-idle handler who knows dentistry gets it.
    assert offers[0].call_id == 1 and offers[0].handler_id == people[3].id
    print(f"route: {elapsed / len(offers) * 1000:.3f} ms per decision")
    assert elapsed / len(offers) < 0.020, f"{elapsed / len(offers) * 1000:.2f} ms per decision"
    session.commit()


def test_single_decisions_stay_quick_with_ten_thousand_waiting(session):
    people = _crowd(session, 10_000, 40)
    for person in people:
        person.presence = "break"
    session.commit()
    timings = []
    for index, person in enumerate(people):
        person.presence = "available"
        started = time.perf_counter()
        offers = routing.route(session, SETTINGS, later(index))
        timings.append(time.perf_counter() - started)
        assert len(offers) == 1
    print(f"single decisions: {sum(timings) / len(timings) * 1000:.3f} ms each")
    assert sum(timings) / len(timings) < 0.020, f"{sum(timings) / len(timings) * 1000:.2f} ms per decision"


def test_a_need_nobody_free_can_take_is_not_walked_call_by_call(session):
    """Thousands of recent addiction calls and only mental-health handlers: no decision reads them all."""
    for index in range(3000):
        waiting(session, ago(30 - index * 0.001), need="addiction")
    entry = waiting(session, ago(1), need="mental_health")
    person = handler(session, skills=["mental_health"], idle_since=ago(60))
    with statements_sent(db.engine) as statements:
        routing.route(session, SETTINGS, NOW)
    assert offered_to(session, entry) == person.id
    assert len(statements) < 20


def test_a_long_walk_past_calls_nobody_free_can_take_takes_a_handful_of_queries(session):
    """Two thousand Welsh-speaking callers first in line, within the fallback wait, and one handler
    who speaks English: the walk reads the line in growing batches, not sixteen rows at a time."""
    for index in range(2000):
        waiting(session, ago(30 - index * 0.001), flags=["language:cy"])
    entry = waiting(session, ago(1))
    person = handler(session, idle_since=ago(60))
    with statements_sent(db.engine) as statements:
        routing.route(session, SETTINGS, NOW)
    assert offered_to(session, entry) == person.id
    assert len(statements) < 12, len(statements)


# -- the first call someone free may take, when the head of the line is not one: found in SQL ----

def test_calls_in_a_language_nobody_free_speaks_are_passed_over_for_one_they_do(session):
    welsh = [waiting(session, ago(40 - index), flags=["language:cy"]) for index in range(5)]
    french = waiting(session, ago(30), flags=["language:fr"])
    plain = waiting(session, ago(20))
    person = handler(session, languages=["en", "fr"], idle_since=ago(60))
    routing.route(session, SETTINGS, NOW)
    assert offered_to(session, french) == person.id
    assert [offered_to(session, entry) for entry in [*welsh, plain]] == [None] * 6


def test_a_call_in_a_language_spoken_only_by_a_handler_without_the_skill_is_passed_over(session):
    welsh = waiting(session, ago(40), need="addiction", flags=["language:cy"])
    plain = waiting(session, ago(30), need="addiction")
    handler(session, skills=["mental_health"], languages=["en", "cy"], idle_since=ago(600))
    skilled = handler(session, skills=["addiction"], languages=["en"], idle_since=ago(60))
    routing.route(session, SETTINGS, NOW)
    assert offered_to(session, plain) == skilled.id and offered_to(session, welsh) is None


def test_a_dentistry_call_behind_the_head_is_passed_over_by_a_handler_without_dentistry(session):
    waiting(session, ago(50), flags=["language:cy"])
    dentist = waiting(session, ago(40), flags=["dentist"])
    plain = waiting(session, ago(30))
    person = handler(session, idle_since=ago(60))
    routing.route(session, SETTINGS, NOW)
    assert offered_to(session, plain) == person.id and offered_to(session, dentist) is None


def test_a_call_past_the_fallback_wait_behind_the_head_goes_before_later_calls_that_fit(session):
    """The head was moved up and nobody free speaks its language; behind it, a call in another
    language that has waited past the fallback comes before a later call that fits."""
    waiting(session, ago(5), flags=["language:cy"], priority=50)
    waited = waiting(session, ago(90), flags=["language:fr"])
    fits = waiting(session, ago(30))
    person = handler(session, idle_since=ago(60))
    routing.route(session, SETTINGS, NOW)
    assert offered_to(session, waited) == person.id and offered_to(session, fits) is None


def test_a_call_past_the_fallback_wait_in_the_heads_own_priority_is_found(session):
    person = handler(session, idle_since=ago(60))
    declined = waiting(session, ago(95), flags=["language:cy"])
    declined.declined_by = [person.id]
    waited = waiting(session, ago(90), flags=["language:cy"])
    fits = waiting(session, ago(30))
    routing.route(session, SETTINGS, NOW)
    assert offered_to(session, waited) == person.id
    assert offered_to(session, declined) is None and offered_to(session, fits) is None


def test_only_calls_past_the_fallback_wait_go_when_nobody_free_has_the_skill(session):
    waiting(session, ago(5), need="addiction", priority=50)
    recent = waiting(session, ago(30), need="addiction")
    person = handler(session, skills=["mental_health"], idle_since=ago(60))
    assert routing.route(session, SETTINGS, NOW) == []
    waited = waiting(session, ago(90), need="addiction", flags=["language:cy"])
    routing.route(session, SETTINGS, NOW)
    assert offered_to(session, waited) == person.id and offered_to(session, recent) is None


def test_a_callback_held_back_is_not_offered_and_one_whose_time_has_come_keeps_its_place(session):
    waiting(session, ago(50), flags=["language:cy"])
    held_back = waiting(session, ago(45), kind="callback", not_before=later(60))
    due = waiting(session, ago(40), kind="callback", not_before=ago(1))
    live = waiting(session, ago(30))
    person = handler(session, idle_since=ago(60))
    routing.route(session, SETTINGS, NOW)
    assert offered_to(session, due) == person.id
    assert offered_to(session, held_back) is None and offered_to(session, live) is None


def test_a_call_declined_by_the_only_free_handler_is_passed_over(session):
    person = handler(session, idle_since=ago(60))
    waiting(session, ago(50), flags=["language:cy"])
    declined = waiting(session, ago(40))
    declined.declined_by = [person.id]
    plain = waiting(session, ago(30))
    routing.route(session, SETTINGS, NOW)
    assert offered_to(session, plain) == person.id and offered_to(session, declined) is None


def test_the_language_column_follows_the_flags(session):
    entry = waiting(session, ago(30), flags=["dentist", "language:cy"])
    fresh(session, entry)
    assert entry.language == "cy"
    entry.flags = ["dentist"]
    fresh(session, entry)
    assert entry.language is None


def test_a_row_whose_language_column_was_never_written_is_still_routed_by_its_flags(session):
    """A NULL language is no condition to the SQL: the flags still keep the call from a handler who
    does not speak it."""
    waiting(session, ago(50), flags=["language:cy"])
    call = session.execute(insert(Call).returning(Call.id), [{"call_sid": "CA-no-language", "flags": []}]).scalar_one()
    unwritten = session.execute(insert(QueueEntry).returning(QueueEntry.id), [{
        "call_id": call, "kind": "live", "state": "waiting", "need": "mental_health", "flags": ["language:fr"],
        "priority": 100, "placed_at": ago(40), "declined_by": [], "attempts": 0}]).scalar_one()
    plain = waiting(session, ago(30))
    person = handler(session, idle_since=ago(60))
    routing.route(session, SETTINGS, NOW)
    assert offered_to(session, plain) == person.id
    assert session.get(QueueEntry, unwritten).state == "waiting"


def _decided_in_python(session: Session, now: dt.datetime) -> list[tuple[int, int]]:
    """The offers a pass should make, decided by reading the whole line and filtering it in Python."""
    from helpline import line_store

    free = line_store.free_and_heads(session, now).free
    cutoff = now - dt.timedelta(seconds=SETTINGS.skill_fallback_after_s)
    line = [routing.Waiting(entry.id, entry.call_id, entry.kind, entry.need, tuple(entry.flags), entry.priority,
                            entry.placed_at, tuple(entry.declined_by)) for entry in session.scalars(
        select(QueueEntry).where(QueueEntry.state == "waiting",
                                 (QueueEntry.not_before.is_(None)) | (QueueEntry.not_before <= now)))]
    line.sort(key=lambda entry: entry.order)
    made = []
    while free:
        heads = {need: next((entry for entry in line if entry.need == need and takeable(entry, free, cutoff)), None)
                 for need in routing.NEED_CLASSES}
        chosen = routing.pick(heads.values(), free, cutoff)
        if chosen is None:
            break
        entry, person = chosen
        made.append((entry.call_id, person.id))
        line.remove(entry)
        free.remove(person)
    return made


@pytest.mark.parametrize("seed", range(4))
def test_the_decisions_are_those_of_filtering_the_whole_line(session, seed):
    """A line mixing languages, dentistry, declines, priorities, held-back callbacks and calls on
    either side of the fallback wait: the offers made are those of reading it all in Python."""
    import random

    chance = random.Random(seed)
    people = [handler(session, skills=chance.sample(["mental_health", "addiction", "return_to_work", "dentist"],
                                                    chance.randint(0, 3)),
                      languages=chance.sample(["en", "cy", "fr", "pl"], chance.randint(1, 2)), idle_since=ago(3000 + index))
              for index in range(6)]
    for index in range(300):
        flags = [flag for flag, odds in (("dentist", 0.15), (f"language:{chance.choice(['cy', 'fr', 'pl', 'de'])}", 0.7))
                 if chance.random() < odds]
        entry = waiting(session, ago(chance.uniform(0, 150)), need=chance.choice([*routing.NEED_CLASSES]),
                        kind=chance.choice(["live", "callback"]), flags=flags,
                        priority=chance.choice([100] * 8 + [50, 10]),
                        not_before=chance.choice([None] * 6 + [ago(10), later(10)]))
        if chance.random() < 0.1:
            entry.declined_by = [person.id for person in chance.sample(people, 2)]
    fresh(session)
    expected = _decided_in_python(session, NOW)
    offers = routing.route(session, SETTINGS, NOW)
    assert expected, "the line should give at least one offer"
    assert [(offer.call_id, offer.handler_id) for offer in offers] == expected


# -- the routing thread, and passes taking turns ------------------------------------------------

def test_the_router_thread_routes_after_a_commit_and_folds_a_burst_into_few_passes(app, monkeypatch):
    """`helpline serve` routes on a thread of its own: the committing request does not route itself."""
    with db.transaction() as setup:
        person = handler(setup, idle_since=dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=60))
        person_id = person.id
    passes: list[int] = []
    real_route = router_module.route

    def counted(session, settings, now):  # type: ignore[no-untyped-def]
        passes.append(1)
        return real_route(session, settings, now)

    monkeypatch.setattr(router_module, "route", counted)
    router = routing.start_router(app)
    try:
        with db.transaction() as session:
            entry = waiting(session, dt.datetime.now(dt.timezone.utc))
            for _ in range(50):
                announce(session, "queue_changed")
        entry_id = entry.id
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with db.transaction() as session:
                state = session.scalar(select(QueueEntry.state).where(QueueEntry.id == entry_id))
            if state == "offered":
                break
            time.sleep(0.05)
        assert state == "offered"
        with db.transaction() as session:
            assert session.scalar(select(Handler.presence).where(Handler.id == person_id)) == "offered"
        for _ in range(100):
            db.bus.publish("handler_free", handler_id=person_id)
        time.sleep(0.3)
        assert 1 <= len(passes) < 20, len(passes)
    finally:
        router.stop()
        app.extensions.pop(routing.ROUTER, None)


def test_a_failed_routing_pass_is_tried_again(app, monkeypatch):
    """The database away for a moment: the router keeps asking until a pass goes through."""
    calls: list[int] = []
    real = routing.route_now

    def flaky(app_):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("database unavailable")
        return real(app_)

    monkeypatch.setattr(router_module, "RETRY_AFTER_S", 0.01)
    monkeypatch.setattr(router_module, "route_now", flaky)
    router = routing.start_router(app)
    try:
        router.request()
        deadline = time.monotonic() + 5
        while len(calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(calls) >= 3
    finally:
        router.stop()
        app.extensions.pop(routing.ROUTER, None)


HANDLERS_MOVES = {
    "console closes": lambda session, person_id, call_id: lifecycle.handler_gone(session, person_id, later(3)),
    "goes on a break": lambda session, person_id, call_id: lifecycle.change_status(
        session, session.get(Handler, person_id), "break", later(3)),
    "declines": lambda session, person_id, call_id: lifecycle.decline(
        session, session.get(Handler, person_id), call_id, later(3)),
    "accepts": lambda session, person_id, call_id: lifecycle.claim(
        session, session.get(Handler, person_id), call_id, later(3)),
    # A control on the call (hold, end, hand over) first reads it as the handler's connected call.
    "uses a call control": lambda session, person_id, call_id: connect._connected_entry(
        db.session.get(Handler, person_id), call_id),
}


@pytest.mark.postgres
@pytest.mark.parametrize("move", list(HANDLERS_MOVES))
def test_a_handler_moving_as_their_offers_caller_hangs_up_waits_its_turn(app, database_url, move):
    """The caller hangs up just as the handler offered their call moves (their console closes, they
    go on a break, decline or accept). Both lock the call's queue entry and the handler; they take
    them in the same order, so one waits for the other and both finish. Taken the other way round,
    PostgreSQL found a deadlock and undid one of them: a console's closing undone left its handler
    on the line with no console."""
    from helpline import line_store
    from helpline.states import RoutingError

    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite runs one write transaction at a time")
    with db.transaction() as setup:
        person_id = handler(setup, idle_since=ago(300)).id
        call_id = waiting(setup, ago(5)).call_id
        assert routing.route(setup, SETTINGS, NOW)
    failures: list[BaseException] = []

    def handlers_move() -> None:
        try:
            with app.app_context(), db.transaction() as session:
                HANDLERS_MOVES[move](session, person_id, call_id)
        except RoutingError:
            pass  # the call went first, or is not one the move applies to: refused, cleanly
        except Exception as exc:  # noqa: BLE001 - the deadlock, for the assertion below
            failures.append(exc)

    with db.transaction() as hang_up:
        entry = line_store.lock_entry(hang_up, call_id)  # the hang-up's first step: the call's entry
        assert entry is not None
        moving = threading.Thread(target=handlers_move)
        moving.start()
        time.sleep(0.3)  # the handler's move is under way, waiting for a lock
        try:
            lifecycle.caller_hung_up(hang_up, entry, later(3), handler=hang_up.get(Handler, person_id))
        except Exception as exc:  # noqa: BLE001
            failures.append(exc)
            raise
    moving.join(timeout=10)
    assert not moving.is_alive()
    assert failures == []
    with db.transaction() as session:
        state = session.scalar(select(QueueEntry.state).where(QueueEntry.call_id == call_id))
        presence_now, held = session.execute(
            select(Handler.presence, Handler.current_call_id).where(Handler.id == person_id)).one()
    assert state == "abandoned"
    assert held is None
    assert presence_now == {"console closes": "offline", "goes on a break": "break",
                            "declines": "available", "accepts": "available", "uses a call control": "available"}[move]


@pytest.mark.postgres
def test_routing_passes_take_turns_so_none_misses_a_call(app, database_url):
    """Another process's pass holds the routing lock while a call joins: this pass waits its turn,
    then offers the call - it does not skip the handler that pass had locked and give up."""
    import threading

    if not database_url.startswith("postgresql"):
        pytest.skip("the routing lock is PostgreSQL's (SQLite writers queue anyway)")
    now = dt.datetime.now(dt.timezone.utc)
    with db.transaction() as setup:
        person_id = handler(setup, idle_since=now - dt.timedelta(seconds=60)).id
    offers: list[routing.Offer] = []
    with db.engine.connect() as other:
        other_pass = other.begin()
        # The other process's pass: it holds the lock and the free handler's row, and has seen no call.
        other.execute(select(func.pg_advisory_xact_lock(routing.ROUTING_LOCK)))
        other.execute(select(Handler.id).where(Handler.id == person_id).with_for_update())
        with db.transaction() as session:
            entry_id = waiting(session, now).id
        ours = threading.Thread(target=lambda: offers.extend(routing.route_now(app)))
        ours.start()
        time.sleep(0.3)
        waited = ours.is_alive()
        other_pass.commit()
    ours.join(timeout=10)
    assert waited, "the pass did not wait for the other one"
    assert [offer.call_id for offer in offers] and offers[0].handler_id == person_id
    with db.transaction() as session:
        assert session.scalar(select(QueueEntry.state).where(QueueEntry.id == entry_id)) == "offered"


def test_with_nobody_free_a_pass_holds_up_no_webhook_and_still_tells_the_consoles(app, database_url):
    """Every caller joining or leaving the line asks for a routing pass. With every handler busy or
    away, on SQLite the pass reads that nobody is free without the write lock, so it does not wait
    for (or hold up) the webhooks writing meanwhile; the consoles still hear that the line changed.
    Once a handler is free the pass routes as ever."""
    now = dt.datetime.now(dt.timezone.utc)
    with db.transaction() as setup:
        entry_id = waiting(setup, now - dt.timedelta(seconds=5)).id
        handler(setup, presence_="on_call")
    told: list[int] = []
    db.bus.subscribe("console_changed", lambda: told.append(1))
    offers: list[routing.Offer] = []
    if database_url.startswith("sqlite"):
        with db.transaction() as webhook:  # a webhook's transaction, holding the write lock throughout
            webhook.execute(select(Call.id).limit(1))
            finished = threading.Event()
            passer = threading.Thread(target=lambda: (offers.extend(routing.route_now(app)), finished.set()))
            passer.start()
            assert finished.wait(timeout=5), "the pass waited for the write lock"
    else:
        offers.extend(routing.route_now(app))
    assert offers == [] and told == [1]
    with db.transaction() as setup:
        free_id = handler(setup, idle_since=now - dt.timedelta(seconds=60)).id
    offers.extend(routing.route_now(app))
    assert [(offer.call_id, offer.handler_id) for offer in offers] and offers[0].handler_id == free_id
    with db.transaction() as session:
        assert session.scalar(select(QueueEntry.state).where(QueueEntry.id == entry_id)) == "offered"
    assert told == [1, 1]


@pytest.mark.postgres
def test_with_nobody_free_a_pass_on_postgresql_is_one_round_trip(app, database_url, tmp_path):
    """Every caller joining or leaving the line asks for a pass. While every handler is busy, a pass
    is the read that says so, outside any transaction: one round trip on the router's connection,
    not a transaction with the routing lock and its COMMIT. Once someone is free the pass routes."""
    from helpline import line_store

    from .conftest import round_trips

    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has no round trips to save")
    now = dt.datetime.now(dt.timezone.utc)
    with db.transaction() as setup:
        entry_id = waiting(setup, now - dt.timedelta(seconds=5)).id
        handler(setup, presence_="on_call")
    router_engine = db.own_connection(line_store.ROUTER_CONNECTION).kw["bind"]
    with round_trips(router_engine, tmp_path) as wire:
        assert routing.route_now(app) == []
        assert wire() == 1
    with db.transaction() as setup:
        free_id = handler(setup, idle_since=now - dt.timedelta(seconds=60)).id
    with round_trips(router_engine, tmp_path) as wire:
        [offer] = routing.route_now(app)
        assert wire() > 1
    assert offer.handler_id == free_id
    with db.transaction() as session:
        assert session.scalar(select(QueueEntry.state).where(QueueEntry.id == entry_id)) == "offered"


@pytest.mark.postgres
def test_a_hard_line_costs_no_round_trip_more_once_its_first_page_is_read_ahead(app, database_url, tmp_path):
    """On PostgreSQL, a pass whose line's head nobody free may take reads that line's first page in a
    round trip of its own. The next pass reads it ahead, with who is free and the heads, on the guess
    that nothing has changed: one round trip fewer, and the same offer. A wrong guess costs a read."""
    from helpline import line_store

    from .conftest import round_trips

    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has no round trips to save")
    now = dt.datetime.now(dt.timezone.utc)
    with db.transaction() as setup:
        for index in range(5):
            waiting(setup, now - dt.timedelta(seconds=40 - index), flags=["language:cy"])
        plain_call = waiting(setup, now - dt.timedelta(seconds=20)).call_id
        person_id = handler(setup, languages=["en"], idle_since=now - dt.timedelta(seconds=600)).id
    line_store._LOOKED_FOR.clear()

    def one_pass() -> tuple[list[tuple[int, int]], int]:
        with round_trips(db.engine, tmp_path) as wire:
            with db.transaction() as session:
                offers = routing.route(session, SETTINGS, now)
                trips = wire()
        with db.transaction() as session:  # the offer undone: the next pass decides about the same line
            session.execute(QueueEntry.__table__.update().where(QueueEntry.call_id == plain_call)
                            .values(state="waiting", handler_id=None, offered_at=None))
            session.execute(Handler.__table__.update().where(Handler.id == person_id)
                            .values(presence="available", current_call_id=None))
        return [(offer.call_id, offer.handler_id) for offer in offers], trips

    first, first_trips = one_pass()
    second, second_trips = one_pass()
    assert first == second == [(plain_call, person_id)]
    assert second_trips == first_trips - 1, (first_trips, second_trips)
    # The handler now speaks French too: the page read ahead (for English alone) is not the one wanted,
    # and the one wanted is read as in the first pass.
    with db.transaction() as session:
        session.execute(Handler.__table__.update().where(Handler.id == person_id).values(languages=["en", "fr"]))
    third, third_trips = one_pass()
    assert third == first and third_trips == first_trips
    # With nobody free there is nothing to look for: the guess is dropped, not read again every pass.
    with db.transaction() as session:
        session.execute(Handler.__table__.update().where(Handler.id == person_id).values(presence="on_call"))
    assert line_store._LOOKED_FOR
    with db.transaction() as session:
        assert routing.route(session, SETTINGS, now) == []
    assert line_store._LOOKED_FOR == {}
