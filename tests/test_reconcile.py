"""Reconciling with Twilio, against the Twilio emulator as a separate process: a finished call is
settled with Twilio's own status, end and duration, and its handler goes to wrap-up; a live one is
left alone; one Twilio has no record of is closed; callers Twilio holds in its queue whom the service
has no place for join the line in Twilio's order; a second pass changes nothing."""

from __future__ import annotations

import datetime as dt
import sys
import time
from typing import Iterator

import pytest
from sqlalchemy import select
from twilio.rest import Client

from helpline import reconcile
from helpline.db import db
from helpline.models import Call, CallEvent, Handler, QueueEntry, utcnow

from . import routing_factories
from .conftest import ACCOUNT_SID, AUTH_TOKEN
from .processes import Process, free_port

SENDER = "+441134960000"


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    """The emulator with every phone answering by itself, and no status callbacks to anyone."""
    port = free_port()
    process = Process([sys.executable, "-m", "helpline.emulator", "--port", str(port), "--signal-port", "-1", "--account-sid", ACCOUNT_SID,
                       "--auth-token", AUTH_TOKEN, "--phone-number", SENDER, "--auto-answer", "*", "--time-scale", "0.05"],
                      {}, f"http://127.0.0.1:{port}", tmp_path_factory.mktemp("emulator") / "emulator.log")
    try:
        process.wait_ready("/emulator/health")
        yield process
    finally:
        process.stop()


def twilio_client(emulator: Process) -> Client:
    client = Client(ACCOUNT_SID, AUTH_TOKEN)
    client.api.base_url = emulator.url
    return client


def finished_call(client: Client) -> str:
    """A call that has really ended in the emulator; returns its SID."""
    sid = client.calls.create(to="+447700900001", from_=SENDER, twiml="<Response><Say>Hello.</Say><Hangup/></Response>").sid
    deadline = time.monotonic() + 15
    while client.calls(sid).fetch().status != "completed":
        assert time.monotonic() < deadline, "the emulator's call never completed"
        time.sleep(0.1)
    return sid


def stuck(session, sid: str, started: dt.datetime) -> int:  # type: ignore[no-untyped-def]
    """Our record of a call still waiting in line, as if its `completed` callback was lost."""
    entry = routing_factories.waiting(session, started)
    call = session.get(Call, entry.call_id)
    call.call_sid, call.started_at, call.step = sid, started, "queue"
    session.flush()
    return call.id


def test_reconciling_against_the_emulator(app_factory, emulator):
    app = app_factory(twilio={"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "api_base_url": emulator.url,
                              "phone_number": SENDER})
    client = twilio_client(emulator)
    done_sid = finished_call(client)
    live_sid = client.calls.create(to="+447700900002", from_=SENDER, twiml='<Response><Pause length="6000"/></Response>').sid
    twilio_done = client.calls(done_sid).fetch()
    now = utcnow()
    with app.app_context():
        ids = {
            "done": stuck(db.session, done_sid, now - dt.timedelta(hours=5)),
            "live": stuck(db.session, live_sid, now - dt.timedelta(hours=5)),
            "unknown": stuck(db.session, "CA" + "e" * 32, now - dt.timedelta(hours=5)),
            "recent": stuck(db.session, "CA" + "d" * 32, now - dt.timedelta(minutes=1)),
        }
        # The handler who was talking to the finished call never heard that it ended.
        handler = routing_factories.handler(db.session, presence_="on_call")
        handler.current_call_id = ids["done"]
        entry = db.session.scalar(select(QueueEntry).where(QueueEntry.call_id == ids["done"]))
        entry.state, entry.handler_id = "answered", handler.id
        handler_id = handler.id
        db.session.commit()
        counts = reconcile.reconcile_job()
    assert counts == {"settled": 1, "live": 1, "unreachable": 0, "closed_unknown": 2, "adopted": 0, "recorded": 0}
    with app.app_context():
        done = db.session.get(Call, ids["done"])
        assert done.twilio_status == "completed" and done.duration_s == int(twilio_done.duration)
        assert done.ended_at == twilio_done.end_time
        [event] = db.session.scalars(select(CallEvent).where(CallEvent.call_id == ids["done"], CallEvent.kind == "reconciled"))
        assert event.detail == {"status": "completed", "duration_s": int(twilio_done.duration)}
        assert db.session.get(Handler, handler_id).presence == "wrap_up"
        assert db.session.get(Call, ids["live"]).ended_at is None
        for name in ("unknown", "recent"):
            gone = db.session.get(Call, ids[name])
            assert gone.ended_at is not None and gone.twilio_status == "unknown" and gone.outcome == "abandoned", name
        db.session.rollback()
        # A second pass settles nothing again: the settled calls are no longer open.
        assert reconcile.reconcile_job() == {"settled": 0, "live": 1, "unreachable": 0, "closed_unknown": 0,
                                             "adopted": 0, "recorded": 0}
    client.calls(live_sid).update(status="completed")


def test_callers_twilio_holds_in_the_queue_join_the_line_in_twilios_order(app_factory, emulator):
    """Callers held while the database could not be written: Twilio has them, the line does not."""
    app = app_factory(twilio={"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "api_base_url": emulator.url,
                              "phone_number": SENDER}, queue={"name": "reconcile-test"})
    client = twilio_client(emulator)
    held = '<Response><Enqueue>reconcile-test</Enqueue></Response>'
    unknown = client.calls.create(to="+447700900011", from_=SENDER, twiml=held).sid
    time.sleep(0.05)
    midway = client.calls.create(to="+447700900012", from_=SENDER, twiml=held).sid
    with app.app_context():
        # Known, half-way through the menus, with no place in line: the IVR held it after a failed key.
        call = Call(call_sid=midway, step="need", answers={"about": "self", "eligible": "yes"})
        db.session.add(call)
        db.session.commit()
        deadline = time.monotonic() + 15
        while len(client.queues.list()) == 0 or client.queues.list()[0].current_size < 2:
            assert time.monotonic() < deadline, "the emulator never queued both callers"
            time.sleep(0.1)
        counts = reconcile.reconcile_job()
        assert counts["adopted"] == 2
        line = db.session.execute(select(Call.call_sid, Call.flags, Call.need, QueueEntry.state)
                                  .join(QueueEntry, QueueEntry.call_id == Call.id)
                                  .order_by(QueueEntry.placed_at, QueueEntry.id)).all()
        assert [row[0] for row in line] == [unknown, midway]
        assert line[0][1] == ["self_referral_unconfirmed"] and line[0][3] == "waiting"
        assert line[1][1] == [] and line[1][2] == "speak_now"  # answers kept; the need menu was never answered
        db.session.rollback()
        assert reconcile.reconcile_job()["adopted"] == 0
    for sid in (unknown, midway):
        client.calls(sid).update(status="completed")


def test_without_twilio_the_job_does_nothing(app_factory):
    app = app_factory(twilio={"account_sid": None, "auth_token": None})
    with app.app_context():
        routing_factories.waiting(db.session, utcnow() - dt.timedelta(hours=5))
        db.session.commit()
        assert reconcile.reconcile_job() == {}
