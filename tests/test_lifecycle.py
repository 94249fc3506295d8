"""A call's life in the line: the transition table, walked move by move and state by state."""

from __future__ import annotations

import datetime as dt
from typing import Any, Callable, Iterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from helpline import lifecycle, routing
from helpline.db import ServiceSession, db
from helpline.models import Call, CallEvent, QueueEntry
from helpline.states import TRANSITIONS, Move, Presence, QueueState, TransitionError, apply, sources, target

from .routing_factories import handler, waiting

NOW = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.timezone.utc)
#: Every state an entry can be in, and None for a call that has no entry yet.
STATES: list[QueueState | None] = [None, *QueueState]
PAIRS = [(move, state) for move in Move for state in STATES]


@pytest.fixture
def session(app) -> Iterator[Session]:  # type: ignore[no-untyped-def]
    with ServiceSession(db.engine, expire_on_commit=False) as opened:  # as the service's own sessions are
        yield opened


def pending(session: Session) -> list[tuple[str, dict[str, Any]]]:
    return session.info.get("pending_announcements", [])


def test_the_states_are_the_words_the_database_and_the_api_use():
    from helpline.models.core import QUEUE_STATES

    assert [str(state) for state in QueueState] == list(QUEUE_STATES)
    assert tuple(Presence) == routing.PRESENCES
    assert QueueState.WAITING == "waiting" and f"{QueueState.OFFERED}" == "offered"


def test_every_move_leads_somewhere_the_schema_allows_and_none_leads_to_callback_state():
    for move, table in TRANSITIONS.items():
        assert table, move
        assert QueueState.CALLBACK not in table.values()
        assert set(sources(move)) == {state for state in table if state is not None}


@pytest.mark.parametrize(("move", "state"), PAIRS, ids=[f"{move}-from-{state}" for move, state in PAIRS])
def test_the_table_allows_its_moves_and_refuses_the_rest_writing_nothing(session, move, state):
    entry = waiting(session, NOW)
    if state is not None:
        entry.state = state
    session.commit()
    allowed = TRANSITIONS[move]
    if state in allowed:
        assert apply(entry, move, new=state is None) == allowed[state]
        session.commit()
        session.refresh(entry)
        assert entry.state == allowed[state]
    else:
        with pytest.raises(TransitionError) as refused:
            apply(entry, move, new=state is None)
        assert refused.value.message == "bad_transition" and refused.value.status == 409
        assert move.replace("_", " ") in str(refused.value.detail)
        assert not session.dirty
        session.commit()
        session.refresh(entry)
        assert entry.state == (state or QueueState.WAITING)


def _count_events(session: Session) -> int:
    return int(session.scalar(select(func.count(CallEvent.id))) or 0)


#: The moves made by a lifecycle function on an entry the session holds, and how to ask for each.
CALLS: dict[Move, Callable[[Session, QueueEntry], Any]] = {
    Move.QUEUED: lambda session, entry: lifecycle.join_line(session, session.get(Call, entry.call_id), NOW),
    Move.CALLBACK_REQUESTED: lambda session, entry: lifecycle.request_callback(
        session, session.get(Call, entry.call_id), True, None, NOW),
    Move.BACK_IN_LINE: lambda session, entry: lifecycle.back_in_line(session, entry, NOW),
    Move.CALLBACK_CLOSED: lambda session, entry: lifecycle.callback_unanswered(session, entry, None, "no-answer", NOW),
}
CALL_PAIRS = [(move, state) for move in CALLS for state in QueueState]


@pytest.mark.parametrize(("move", "state"), CALL_PAIRS, ids=[f"{move}-from-{state}" for move, state in CALL_PAIRS])
def test_each_lifecycle_function_makes_only_the_moves_the_table_allows(session, move, state):
    entry = waiting(session, NOW, kind="callback" if move is Move.CALLBACK_CLOSED else "live")
    entry.state = state
    if move is Move.CALLBACK_CLOSED:
        entry.attempts = lifecycle.CALLBACK_ATTEMPTS - 1  # this unanswered try is the last
    session.commit()
    events_before = _count_events(session)
    if state in TRANSITIONS[move]:
        CALLS[move](session, entry)
        session.commit()
        session.refresh(entry)
        assert entry.state == TRANSITIONS[move][state]
    else:
        with pytest.raises(TransitionError):
            CALLS[move](session, entry)
        session.rollback()
        session.refresh(entry)
        assert entry.state == state
        assert _count_events(session) == events_before


def test_a_call_that_has_left_the_line_is_not_put_back_in_it(session):
    entry = waiting(session, NOW)
    lifecycle.caller_hung_up(session, entry, NOW)
    session.commit()
    assert entry.state == QueueState.ABANDONED
    with pytest.raises(TransitionError):
        lifecycle.back_in_line(session, entry, NOW)
    session.rollback()
    session.refresh(entry)
    assert entry.state == QueueState.ABANDONED and entry.left_reason == "abandoned"


def test_an_offer_survives_the_caller_coming_back_into_twilios_queue(session):
    # Twilio's queue may let a caller go and take them back (a redirect, an error) while their call
    # is offered: the handler keeps the offer, and nobody else is offered the call meanwhile.
    person = handler(session, idle_since=NOW - dt.timedelta(minutes=5))
    entry = waiting(session, NOW - dt.timedelta(seconds=30))
    call = session.get(Call, entry.call_id)
    call.queue_entry = entry
    session.commit()
    offers = routing.route(session, routing_settings(), NOW)
    assert [offer.handler_id for offer in offers] == [person.id]
    session.commit()
    session.refresh(entry)
    lifecycle.join_line(session, call, NOW)
    session.commit()
    session.refresh(entry)
    session.refresh(person)
    assert entry.state == QueueState.OFFERED and entry.handler_id == person.id
    assert person.presence == Presence.OFFERED and person.current_call_id == entry.call_id
    other = handler(session, idle_since=NOW - dt.timedelta(minutes=9))
    session.commit()
    assert routing.route(session, routing_settings(), NOW) == []
    lifecycle.claim(session, person, entry.call_id, NOW)
    session.commit()
    assert entry.state == QueueState.CONNECTING and other.presence == Presence.AVAILABLE


def test_asking_for_a_callback_while_offered_frees_the_handler(session):
    person = handler(session, idle_since=NOW - dt.timedelta(minutes=5))
    entry = waiting(session, NOW - dt.timedelta(seconds=30))
    call = session.get(Call, entry.call_id)
    call.queue_entry = entry
    session.commit()
    assert routing.route(session, routing_settings(), NOW)
    session.commit()
    session.refresh(entry)
    session.info.pop("pending_announcements", None)
    lifecycle.request_callback(session, call, True, None, NOW)
    session.commit()
    session.refresh(entry)
    session.refresh(person)
    assert entry.state == QueueState.WAITING and entry.kind == "callback" and entry.handler_id is None
    assert person.presence == Presence.AVAILABLE and person.current_call_id is None


def test_a_caller_who_hangs_up_while_offered_frees_the_handler_at_once(app, session):
    person = handler(session, idle_since=NOW - dt.timedelta(minutes=5))
    entry = waiting(session, NOW - dt.timedelta(seconds=30))
    call = session.get(Call, entry.call_id)
    call.queue_entry = entry
    session.commit()
    assert routing.route(session, routing_settings(), NOW)
    session.commit()
    session.refresh(entry)
    with app.test_request_context():
        app.extensions["helpline.ivr"].abandon(session, call, NOW)
    session.commit()
    session.refresh(entry)
    session.refresh(person)
    session.refresh(call)
    assert entry.state == QueueState.ABANDONED and entry.position_at_exit == 1
    assert call.outcome == "abandoned"
    assert person.presence == Presence.AVAILABLE and person.current_call_id is None
    outcomes = session.scalars(select(CallEvent).where(CallEvent.call_id == call.id, CallEvent.kind == "outcome")).all()
    assert [event.detail for event in outcomes] == [{"outcome": "abandoned"}]


def test_the_offer_statement_takes_its_states_from_the_table():
    assert target(Move.OFFERED, QueueState.WAITING) == QueueState.OFFERED
    assert sources(Move.OFFERED) == (QueueState.WAITING,)
    assert set(sources(Move.ACCEPTED)) == {QueueState.WAITING, QueueState.OFFERED}


def routing_settings():  # type: ignore[no-untyped-def]
    from helpline.config import RoutingSettings

    return RoutingSettings(offer_timeout_s=20, wrap_up_s=120, skill_fallback_after_s=60)


# -- the handler's presence moves ---------------------------------------------------------------------

def test_a_presence_move_the_table_does_not_list_is_refused_before_anything_changes(session):
    """A handler on break is never offered a call or put on one by a fault elsewhere: the table
    (states.PRESENCE_MOVES) is checked before the handler's row changes."""
    from helpline import presence
    from helpline.states import PRESENCE_MOVES, PresenceError, presence_sources

    person = handler(session, presence_="break")
    for refused in (Presence.OFFERED, Presence.ON_CALL, Presence.WRAP_UP):
        with pytest.raises(PresenceError):
            presence.set_presence(session, person, refused, NOW)
        assert person.presence == "break"
    presence.set_presence(session, person, Presence.AVAILABLE, NOW)
    assert person.presence == "available"
    # Every presence can be reached and left; only a free handler is offered a call.
    assert all(PRESENCE_MOVES[state] for state in Presence)
    assert all(any(state in allowed for allowed in PRESENCE_MOVES.values()) for state in Presence)
    assert presence_sources(Presence.OFFERED) == (Presence.AVAILABLE,)


def test_every_presence_move_the_table_allows_works_and_every_other_is_refused(session):
    """The table walked whole: from each presence to each other, set_presence moves the handler as
    the table says or refuses without changing them."""
    from helpline import presence
    from helpline.states import PRESENCE_MOVES, PresenceError

    for before in Presence:
        for after in Presence:
            person = handler(session, presence_=before)
            if after == before or after in PRESENCE_MOVES[before]:
                presence.set_presence(session, person, after, NOW)
                assert person.presence == after
            else:
                with pytest.raises(PresenceError):
                    presence.set_presence(session, person, after, NOW)
                assert person.presence == before
