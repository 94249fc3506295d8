"""Waiting in the queue: position and an estimate learnt from recent waits, hold music, and the
callback that keeps the caller's place."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from helpline import routing
from helpline.db import db
from helpline.models import Call, CallEvent, QueueEntry, utcnow

from . import routing_factories
from .walker import CallWalker


def on_duty(app, presence: str = "on_call", count: int = 1) -> None:  # type: ignore[no-untyped-def]
    """Handlers on duty (busy on a call by default), so that a wait can be estimated."""
    with app.app_context():
        for _ in range(count):
            routing_factories.handler(db.session, presence_=presence)
        db.session.commit()


def queued(twilio, caller: str = "+447911123456") -> CallWalker:  # type: ignore[no-untyped-def]
    """A caller who has gone through the IVR into the queue."""
    walker = CallWalker(twilio, caller=caller)
    walker.start()
    walker.press("1")
    walker.press("1")
    walker.press("1")
    assert walker.enqueue() is not None
    return walker


def wait(walker: CallWalker, queue_time: int = 0):  # type: ignore[no-untyped-def]
    """Twilio polling the waitUrl."""
    return walker.request(walker.queue["wait"], QueuePosition="1", QueueTime=str(queue_time),
                          AvgQueueTime="0", CurrentQueueSize="1", QueueSid="QU" + "0" * 32)


def test_waiting_callers_hear_their_position_then_hold_music(app, twilio):
    on_duty(app)
    first = queued(twilio)
    second = queued(twilio, caller="+447911654321")
    document = wait(second)
    says = [say.text for say in document.iter("Say")]
    assert "You are number 2 in line" in says[0]
    plays = list(document.iter("Play"))
    assert plays and plays[0].text.endswith("/static/hold-music.wav")
    # At least every 60 s: the music between announcements lasts announce_every_s (45 s of 15 s clips).
    assert int(plays[0].get("loop")) * 15 <= 60
    document = wait(first)
    assert "You are number 1 in line" in document.find("Say").text


def test_with_nobody_on_duty_no_time_is_given_and_the_callback_is_offered_at_once(app, twilio):
    walker = queued(twilio)  # offer_callback_after_s is 120: the offer would otherwise wait two minutes
    document = wait(walker)
    gather = document.find("Gather")
    assert gather is not None, "the call-back is offered at once"
    said = gather.find("Say").text
    assert "You are number 1 in line" in said and "cannot tell you how long" in said and "press 2" in said
    assert "minute" not in said  # no made-up time
    with app.app_context():
        told = db.session.scalars(select(CallEvent).where(CallEvent.kind == "wait_estimate")).all()
        assert [(event.detail["place"], event.detail["estimate_s"]) for event in told] == [(1, None)]


def test_a_caller_declined_by_the_only_handler_on_duty_is_not_promised_a_short_wait(app, twilio):
    """The handler declined them (they may know them): routing will not offer them the call again, so
    the caller hears that no time can be given, and is offered the call-back, not "less than a minute"."""
    with app.app_context():
        knows_them = routing_factories.handler(db.session, presence_="available").id
        db.session.commit()
    walker = queued(twilio)
    with app.app_context():
        entry = db.session.scalar(select(QueueEntry))
        entry.declined_by = [knows_them]
        db.session.commit()
    said = wait(walker).find("Gather").find("Say").text
    assert "cannot tell you how long" in said and "minute" not in said


def test_the_estimate_comes_from_the_handlers_on_duty_and_their_handling_times(app, twilio):
    on_duty(app)
    walker = queued(twilio)
    # One handler busy, nothing handled yet to learn from: the configured default, no call-back offer yet.
    document = wait(walker)
    assert "about 3 minutes" in document.find("Say").text and document.find("Gather") is None
    with app.app_context():
        now = utcnow()
        # Three calls handled in the last two hours, each for 10 minutes (answer to end of call).
        for index in range(3):
            answered = now - dt.timedelta(minutes=40 + index)
            db.session.add(Call(call_sid=f"CA{index:032d}", outcome="answered", queued_at=answered - dt.timedelta(seconds=30),
                                dequeued_at=answered, ended_at=answered + dt.timedelta(minutes=10)))
        db.session.commit()
        # Erlang C's positional wait: next in line, one handler busy, 600 s a call: one call to finish.
        assert routing.estimated_wait_s(db.session, 1, now, 180) == 600
        assert routing.estimated_wait_s(db.session, 3, now, 180) == 1800
    assert "about 10 minutes" in wait(walker, queue_time=45).find("Say").text
    on_duty(app)  # a second handler on a call: calls finish twice as often
    assert "about 5 minutes" in wait(walker, queue_time=90).find("Say").text
    on_duty(app, presence="available")  # a handler free now: the next caller waits only for the offer
    assert "less than a minute" in wait(walker, queue_time=120).find("Say").text
    with app.app_context():
        # The one ahead of them takes the free handler; then the first of three handlers to finish: 600 / 3.
        assert routing.estimated_wait_s(db.session, 2, utcnow(), 180) == 200


def test_callback_is_offered_only_after_the_configured_wait(app_factory):
    from .conftest import Twilio

    app = app_factory(queue={"offer_callback_after_s": 0})
    walker = queued(Twilio(app.test_client()))
    document = wait(walker)
    gather = document.find("Gather")
    assert gather is not None and "press 2" in gather.find("Say").text

    later = app_factory(queue={"offer_callback_after_s": 3600})
    on_duty(later)
    walker = queued(Twilio(later.test_client()))
    document = wait(walker)
    assert document.find("Gather") is None and "press 2" not in document.find("Say").text


def test_pressing_2_books_a_callback_that_keeps_the_place_in_line(app_factory):
    from .conftest import Twilio

    app = app_factory(queue={"offer_callback_after_s": 0})
    twilio = Twilio(app.test_client())
    first = queued(twilio)
    second = queued(twilio, caller="+447911654321")
    with app.app_context():
        placed = db.session.scalar(select(QueueEntry.placed_at).join(Call).where(Call.call_sid == first.sid))
    gather = wait(first).find("Gather")
    document = first.request(gather.get("action"), Digits="2")
    assert document.find("Leave") is not None
    document = first.request(first.queue["action"], QueueResult="leave", QueueTime="130")
    assert document.find("Hangup") is not None
    assert "keep your place" in first.text
    with app.app_context():
        call = db.session.scalar(select(Call).where(Call.call_sid == first.sid))
        entry = call.queue_entry
        assert call.outcome == "callback_requested"
        assert entry.kind == "callback" and entry.state == "waiting" and entry.placed_at == placed
        assert entry.not_before is None
        # The callback still stands ahead of the caller who joined after them.
        other = db.session.scalar(select(QueueEntry).join(Call).where(Call.call_sid == second.sid))
        assert routing.position(db.session, entry, utcnow()) == 1
        assert routing.position(db.session, other, utcnow()) == 2
    # Their hanging up afterwards does not turn the callback into an abandoned call.
    twilio.post("/voice/status", {"CallSid": first.sid, "CallStatus": "completed", "SequenceNumber": "9"})
    with app.app_context():
        call = db.session.scalar(select(Call).where(Call.call_sid == first.sid))
        assert call.outcome == "callback_requested" and call.queue_entry.state == "waiting"


@pytest.mark.parametrize("caller", ["anonymous", "+4412", "+33612345678"])
def test_a_caller_we_cannot_call_back_is_told_so_once_with_the_wait(app_factory, caller):
    from .conftest import Twilio

    app = app_factory(queue={"offer_callback_after_s": 0})
    on_duty(app)
    walker = queued(Twilio(app.test_client()), caller=caller)
    document = wait(walker)
    said = " ".join(say.text for say in document.iter("Say"))
    assert document.find("Gather") is None and "press 2" not in said
    assert "cannot call you back" in said and "the wait is likely to be about 3 minutes" in said
    again = " ".join(say.text for say in wait(walker, queue_time=45).iter("Say"))
    assert "cannot call you back" not in again and "the wait is likely to be" in again
    with app.app_context():
        assert db.session.scalars(select(CallEvent.kind).where(CallEvent.kind == "no_callback_told")).all() == ["no_callback_told"]


def test_the_cannot_call_back_notice_waits_for_the_moment_others_are_offered_a_call_back(app, twilio):
    on_duty(app)  # offer_callback_after_s is 120
    walker = queued(twilio, caller="anonymous")
    assert "cannot call you back" not in " ".join(say.text for say in wait(walker).iter("Say"))


def test_a_caller_is_told_the_wait_for_the_handlers_who_have_the_skill_they_need(app, twilio):
    with app.app_context():
        routing_factories.handler(db.session, presence_="on_call", skills=("mental_health",))
        routing_factories.handler(db.session, presence_="on_call", skills=("addiction",))
        now = utcnow()
        for index in range(3):  # each handled for 10 minutes
            answered = now - dt.timedelta(minutes=40 + index)
            db.session.add(Call(call_sid=f"CA{index:032d}", outcome="answered", queued_at=answered - dt.timedelta(seconds=30),
                                dequeued_at=answered, ended_at=answered + dt.timedelta(minutes=10)))
        db.session.commit()
    walker = queued(twilio)  # mental health: one of the two handlers can take it
    assert "about 10 minutes" in wait(walker).find("Say").text  # not 5: the other cannot take it
