"""Callers held while the database cannot be written: they hear the emergency advice, wait in
Twilio's queue with a waitUrl, and are put in line, in the order they were held and with the key
they had pressed, by that waitUrl once the database answers. A key, or a redirect, for a step the
call has left changes nothing."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError


from helpline.db import ServiceSession, db
from helpline.models import Call, CallEvent, QueueEntry, WebhookReply

from .walker import CallWalker


def the_call(sid: str) -> Call | None:
    db.session.expire_all()
    return db.session.scalar(select(Call).where(Call.call_sid == sid))


@pytest.fixture
def outage(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Every webhook's commit fails, as when PostgreSQL is away; `outage.end()` brings it back."""
    real = ServiceSession.commit

    class Outage:
        def begin(self) -> None:
            def down(session):  # type: ignore[no-untyped-def]
                raise OperationalError("COMMIT", {}, Exception("connection refused"))

            monkeypatch.setattr(ServiceSession, "commit", down)

        def end(self) -> None:
            monkeypatch.setattr(ServiceSession, "commit", real)

    return Outage()


def retry_until_held(walker: CallWalker, key: str) -> ET.Element:
    """Press `key` at the current menu while the database is away; follow the retries until held."""
    walker.until_menu()
    gather = walker.xml.find("Gather")  # type: ignore[union-attr]
    walker.request(gather.get("action", ""), Digits=key)
    for _retry in range(5):
        if walker.enqueue() is not None:
            return walker.xml  # type: ignore[return-value]
        redirect = walker.xml.find("Redirect")  # type: ignore[union-attr]
        assert redirect is not None, ET.tostring(walker.xml)  # type: ignore[arg-type]
        assert f"digits={key}" in (redirect.text or "")  # the key travels with each retry
        walker.request(redirect.text or "")
    raise AssertionError("the caller was never held")


def test_a_caller_held_in_an_outage_is_put_in_line_with_their_key_by_the_wait_url(app, twilio, outage):
    early, late = CallWalker(twilio, caller="+447911000001"), CallWalker(twilio, caller="+447911000002")
    for walker in (early, late):
        walker.start()
        walker.press("1")  # own health: now at eligibility
    outage.begin()
    held = retry_until_held(early, "1")  # eligible, pressed while nothing could be written
    retry_until_held(late, "1")
    text = " ".join(say.text or "" for say in held.iter("Say"))
    assert "999" in text and "116 123" in text and "stay on the line" in text
    queue = held.find("Enqueue")
    assert queue is not None and queue.text == "helpline" and queue.get("waitUrl")
    wait = urlsplit(early.queue["wait"])
    assert parse_qs(wait.query)["step"] == ["eligibility"] and parse_qs(wait.query)["key"] == ["1"]
    with app.app_context():
        assert the_call(early.sid).step == "eligibility"  # nothing of the key was written
    # While the database is still away, the waitUrl answers with the advice and music, never an error.
    waited = late.request(late.queue["wait"], QueueTime="3", QueuePosition="2")
    assert waited.find("Play") is not None and waited.find("Redirect") is None and waited.find("Enqueue") is None
    outage.end()
    # The later caller's waitUrl comes first; the earlier caller still goes ahead of them in line.
    late.request(late.queue["wait"], QueueTime="20", QueuePosition="2")
    early.request(early.queue["wait"], QueueTime="22", QueuePosition="1")
    assert "number 1 in line" in " ".join(early.heard[-1:])
    with app.app_context():
        first, second = the_call(early.sid), the_call(late.sid)
        assert first.answers == {"about": "self", "eligible": "yes"}
        assert first.need == "speak_now" and first.flags == []  # the need menu was never heard
        assert first.step == "queue" and first.queue_entry.state == "waiting"
        assert first.caller_number_enc is not None
        assert first.queue_entry.placed_at < second.queue_entry.placed_at
        [queued] = db.session.scalars(select(CallEvent).where(CallEvent.call_id == first.id, CallEvent.kind == "queued"))
        assert queued.detail["held"] is True and queued.detail["key_recovered"] == "1"
        # A second fetch of the waitUrl does not put them in line twice.
    early.request(early.queue["wait"], QueueTime="40", QueuePosition="1")
    with app.app_context():
        assert db.session.scalar(select(func.count(QueueEntry.id))) == 2


def test_a_caller_whose_first_request_failed_is_recorded_by_the_wait_url(app, twilio, outage):
    walker = CallWalker(twilio)
    outage.begin()
    walker.start()
    for _retry in range(3):
        walker.follow()
    assert walker.enqueue() is not None
    with app.app_context():
        assert the_call(walker.sid) is None
    outage.end()
    walker.request(walker.queue["wait"], QueueTime="30", QueuePosition="1")
    with app.app_context():
        call = the_call(walker.sid)
        # Nothing was answered: the flow's own "no key" path says what a handler must confirm.
        assert call.flags == ["self_referral_unconfirmed"] and call.queue_entry.state == "waiting"
        assert call.started_at <= call.queue_entry.placed_at


def test_a_key_for_a_step_the_call_has_left_changes_nothing(app, twilio):
    walker = CallWalker(twilio)
    walker.start()
    walker.until_menu()
    about_whom = walker.xml.find("Gather").get("action")  # type: ignore[union-attr]
    walker.press("1")  # own health: on to eligibility
    with app.app_context():
        before = the_call(walker.sid)
        path, answers, step = list(before.ivr_path), dict(before.answers), before.step
        events = db.session.scalar(select(func.count(CallEvent.id)).where(CallEvent.call_id == before.id))
    replayed = walker.request(about_whom, Digits="2")  # "someone else", for a step already answered
    assert replayed.find("Hangup") is None
    gather = replayed.find("Gather")
    assert gather is not None and "/voice/step/eligibility/keys" in gather.get("action", "")
    with app.app_context():
        after = the_call(walker.sid)
        assert (after.step, after.answers, after.ivr_path, after.outcome) == (step, answers, path, None)
        assert db.session.scalar(select(func.count(CallEvent.id)).where(CallEvent.call_id == after.id)) == events
    # The same request again is answered the same way (a retry), and the call goes on from where it is.
    assert walker.request(about_whom, Digits="2").find("Gather").get("action") == gather.get("action")  # type: ignore[union-attr]
    walker.press("1")
    with app.app_context():
        assert the_call(walker.sid).answers == {"about": "self", "eligible": "yes"}


def test_a_redirect_to_a_step_the_call_has_left_changes_nothing(app, twilio):
    walker = CallWalker(twilio)
    walker.start()
    greeting_next = walker.xml.find("Redirect").text  # type: ignore[union-attr]  # the greeting's, to the opening check
    walker.press("1")  # own health: on to eligibility
    with app.app_context():
        before = the_call(walker.sid)
        path, answers, step = list(before.ivr_path), dict(before.answers), before.step
        events = db.session.scalar(select(func.count(CallEvent.id)).where(CallEvent.call_id == before.id))
    assert step == "eligibility"
    # The greeting's redirect again, late (another request: it carries another parameter), and a
    # redirect to a step the call never reached from here: each answers where the caller is.
    for late in (greeting_next + "&late=1", "/voice/step/third_party?n=1", "/voice/step/need?n=99"):
        answer = walker.request(late)
        assert answer.find("Hangup") is None
        gather = answer.find("Gather")
        assert gather is not None and "/voice/step/eligibility/keys" in gather.get("action", ""), late
    with app.app_context():
        after = the_call(walker.sid)
        assert (after.step, after.answers, after.ivr_path, after.outcome) == (step, answers, path, None)
        assert db.session.scalar(select(func.count(CallEvent.id)).where(CallEvent.call_id == after.id)) == events
    # The call goes on from where it is.
    walker.press("1")  # eligible
    walker.press("1")  # mental health: into the queue
    assert walker.enqueue() is not None
    with app.app_context():
        assert the_call(walker.sid).answers == {"about": "self", "eligible": "yes"}


def test_a_bad_held_moment_in_the_wait_url_is_ignored(app, twilio):
    walker = CallWalker(twilio)
    walker.start()
    walker.request("/voice/queue/wait?held=not-a-time&step=nowhere&key=9", QueueTime="x")
    with app.app_context():
        call = the_call(walker.sid)
        assert call.queue_entry.state == "waiting"
        assert abs((call.queue_entry.placed_at - dt.datetime.now(dt.timezone.utc)).total_seconds()) < 30
        assert db.session.scalar(select(func.count(WebhookReply.id))) >= 2


def test_keys_typed_ahead_in_an_outage_are_all_applied_once_the_database_answers(app, twilio, outage):
    walker = CallWalker(twilio, caller="+447911000003")
    walker.start()
    walker.until_menu()
    outage.begin()
    retry_until_held(walker, "112")  # own health, eligible, addiction: all at the first menu
    assert parse_qs(urlsplit(walker.queue["wait"]).query)["key"] == ["112"]
    outage.end()
    walker.request(walker.queue["wait"], QueueTime="5", QueuePosition="1")
    with app.app_context():
        call = the_call(walker.sid)
        assert call.answers == {"about": "self", "eligible": "yes"} and call.need == "addiction" and call.flags == []
        [queued] = db.session.scalars(select(CallEvent).where(CallEvent.call_id == call.id, CallEvent.kind == "queued"))
        assert queued.detail["key_recovered"] == "112"
