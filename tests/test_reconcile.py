"""Reconciling calls whose final status callback never came, against the Twilio emulator as a separate
process: a finished call is settled with Twilio's own status, end and duration; a live one is left
alone; one Twilio cannot tell us about is retried, then closed after a day; a second pass changes nothing."""

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
from helpline.models import Call, CallEvent, QueueEntry, utcnow

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
            "lost": stuck(db.session, "CA" + "f" * 32, now - dt.timedelta(hours=30)),
            "recent": stuck(db.session, "CA" + "d" * 32, now - dt.timedelta(minutes=5)),
        }
        db.session.commit()
        counts = reconcile.reconcile_job()
    assert counts == {"settled": 1, "live": 1, "unreachable": 1, "closed_unknown": 1}
    with app.app_context():
        done = db.session.get(Call, ids["done"])
        assert done.twilio_status == "completed" and done.duration_s == int(twilio_done.duration)
        assert done.ended_at == twilio_done.end_time
        assert done.outcome == "abandoned" and done.dequeued_at is not None
        assert db.session.scalar(select(QueueEntry.state).where(QueueEntry.call_id == ids["done"])) == "abandoned"
        [event] = db.session.scalars(select(CallEvent).where(CallEvent.call_id == ids["done"], CallEvent.kind == "reconciled"))
        assert event.detail == {"status": "completed", "duration_s": int(twilio_done.duration)}
        for name in ("live", "unknown", "recent"):
            assert db.session.get(Call, ids[name]).ended_at is None, name
        lost = db.session.get(Call, ids["lost"])
        assert lost.ended_at is not None and lost.twilio_status == "unknown" and lost.outcome == "abandoned"
        db.session.rollback()
        # A second pass settles nothing again: the settled calls are no longer candidates.
        assert reconcile.reconcile_job() == {"settled": 0, "live": 1, "unreachable": 1, "closed_unknown": 0}
    client.calls(live_sid).update(status="completed")


def test_without_twilio_the_job_does_nothing(app_factory):
    app = app_factory(twilio={"account_sid": None, "auth_token": None})
    with app.app_context():
        routing_factories.waiting(db.session, utcnow() - dt.timedelta(hours=5))
        db.session.commit()
        assert reconcile.reconcile_job() == {}
