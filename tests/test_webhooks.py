"""Twilio's side of the door: signatures, malformed requests, retries and out-of-order status callbacks."""

from __future__ import annotations

import contextlib
import datetime as dt
import time
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from sqlalchemy import func, select

from helpline.db import db
from helpline.models import Call, CallEvent, QueueEntry, WebhookReply

from .conftest import PUBLIC_URL, Twilio, assert_statements, new_call_sid, round_trips, sqlite_statements, statements_sent
from .walker import CallWalker


def count(model) -> int:  # type: ignore[no-untyped-def]
    """Rows in a table."""
    db.session.expire_all()
    return db.session.scalar(select(func.count()).select_from(model))


def incoming_params(sid: str) -> dict[str, str]:
    """What Twilio posts to the Voice URL."""
    return {"CallSid": sid, "From": "+447911123456", "To": "+443000000000", "CallStatus": "ringing"}


@pytest.mark.parametrize("path", ["/voice/incoming", "/voice/status", "/voice/step/need", "/voice/step/need/keys",
                                  "/voice/queue/wait", "/voice/queue/key", "/voice/queue/left"])
def test_unsigned_requests_are_refused_and_write_nothing(app, twilio, path):
    response = twilio.post(path, incoming_params(new_call_sid()), signed=False)
    assert response.status_code == 403
    assert response.get_json()["error"] == "invalid_signature"
    with app.app_context():
        assert count(Call) == 0 and count(CallEvent) == 0 and count(WebhookReply) == 0


def test_a_forged_signature_is_refused(app, client):
    forged = Twilio(client, token="not-the-real-token")
    assert forged.post("/voice/incoming", incoming_params(new_call_sid())).status_code == 403
    with app.app_context():
        assert count(Call) == 0


def test_a_signature_for_other_parameters_is_refused(app, client, twilio):
    sid = new_call_sid()
    params = incoming_params(sid)
    signature = twilio.validator.compute_signature(PUBLIC_URL + "/voice/incoming", params)
    tampered = {**params, "From": "+447911000000"}
    response = client.post("/voice/incoming", data=tampered, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 403


def test_a_signature_is_checked_against_the_query_string_too(app, client, twilio):
    signature = twilio.validator.compute_signature(PUBLIC_URL + "/voice/step/need?n=1", incoming_params(new_call_sid()))
    response = client.post("/voice/step/need?n=2", data=incoming_params(new_call_sid()), headers={"X-Twilio-Signature": signature})
    assert response.status_code == 403


def test_a_signature_over_the_url_with_its_port_written_out_is_accepted(app, client, twilio):
    """Twilio may sign https://host:443/...: the quick check on our exact URL misses it, and the
    library's check (with and without the port) accepts it."""
    params = incoming_params(new_call_sid())
    signature = twilio.validator.compute_signature(PUBLIC_URL + ":443/voice/incoming", params)
    assert client.post("/voice/incoming", data=params, headers={"X-Twilio-Signature": signature}).status_code == 200


@pytest.mark.parametrize("sid", ["", "CA123", "XX" + "0" * 32, "CA" + "g" * 32])
def test_a_bad_call_sid_is_a_clear_400_and_changes_nothing(app, twilio, sid):
    response = twilio.post("/voice/incoming", {**incoming_params("x"), "CallSid": sid})
    assert response.status_code == 400
    assert response.get_json()["error"] == "bad_call_sid"
    with app.app_context():
        assert count(Call) == 0


def test_oversized_and_nul_parameters_are_refused(app, twilio):
    sid = new_call_sid()
    assert twilio.post("/voice/incoming", {**incoming_params(sid), "From": "1" * 5000}).status_code == 400
    assert twilio.post("/voice/incoming", {**incoming_params(sid), "From": "+44\x00"}).status_code == 400
    with app.app_context():
        assert count(Call) == 0


def test_the_same_incoming_webhook_twice_makes_one_record_and_the_same_reply(app, twilio):
    params = incoming_params(new_call_sid())
    first = twilio.post("/voice/incoming", params)
    second = twilio.post("/voice/incoming", params)
    assert first.status_code == second.status_code == 200
    assert first.data == second.data
    with app.app_context():
        assert count(Call) == 1
        assert count(CallEvent) == 2  # "incoming" and the greeting step, once each


def _first_key_press(twilio: Twilio) -> tuple[CallWalker, str, Any]:
    """A call at its first menu, and "1" pressed there: the walker, the menu's action and the reply."""
    walker = CallWalker(twilio)
    walker.start()
    walker.until_menu()
    action = PUBLIC_URL + walker.xml.find("Gather").get("action")
    return walker, action, twilio.post(action, walker.params(Digits="1"))


def test_a_retried_key_press_is_not_applied_twice(app, twilio):
    walker, action, first = _first_key_press(twilio)
    retry = twilio.post(action, walker.params(Digits="1"))
    assert first.status_code == retry.status_code == 200
    assert retry.data == first.data
    with app.app_context():
        call = db.session.scalar(select(Call).where(Call.call_sid == walker.sid))
        assert [entry.get("key") for entry in call.ivr_path if "key" in entry] == ["1"]
        assert call.step == "eligibility"


def test_a_key_press_retried_after_the_call_moved_on_gets_its_first_reply_and_changes_nothing(app, twilio):
    walker, action, first = _first_key_press(twilio)
    walker.xml = ET.fromstring(first.data)
    walker.press("1")  # the next menu answered too: the call is further on
    with app.app_context():
        before = db.session.scalar(select(Call).where(Call.call_sid == walker.sid))
        path, step, events = list(before.ivr_path), before.step, count(CallEvent)
    retry = twilio.post(action, walker.params(Digits="1"))  # Twilio retries the first, late
    assert retry.status_code == 200 and retry.data == first.data
    with app.app_context():
        after = db.session.scalar(select(Call).where(Call.call_sid == walker.sid))
        assert (after.ivr_path, after.step, count(CallEvent)) == (path, step, events)


def test_revisiting_a_step_is_not_mistaken_for_a_retry(app, twilio):
    walker = CallWalker(twilio)
    walker.start()
    walker.press("1")
    walker.press("1")
    walker.press("4")   # about the service, back to the need menu
    walker.press("4")   # and again
    walker.press("1")
    assert walker.enqueue() is not None
    with app.app_context():
        call = db.session.scalar(select(Call).where(Call.call_sid == walker.sid))
        assert [entry["step"] for entry in call.ivr_path if "key" not in entry].count("about_service") == 2


def status(twilio, sid: str, value: str, sequence: int | None = None, duration: str | None = None):  # type: ignore[no-untyped-def]
    """Post a status callback."""
    params = {"CallSid": sid, "CallStatus": value, "From": "+447911123456"}
    if sequence is not None:
        params["SequenceNumber"] = str(sequence)
    if duration is not None:
        params["CallDuration"] = duration
    return twilio.post("/voice/status", params)


def test_a_late_ringing_never_undoes_completed(app, twilio):
    walker = CallWalker(twilio)
    walker.start()
    assert status(twilio, walker.sid, "completed", 2, "31").status_code == 204
    assert status(twilio, walker.sid, "ringing", 1).status_code == 204
    assert status(twilio, walker.sid, "in-progress").status_code == 204
    with app.app_context():
        call = db.session.scalar(select(Call).where(Call.call_sid == walker.sid))
        assert call.twilio_status == "completed" and call.duration_s == 31 and call.ended_at is not None


def test_status_callbacks_apply_in_sequence_order(app, twilio):
    sid = new_call_sid()
    twilio.post("/voice/incoming", incoming_params(sid))
    status(twilio, sid, "in-progress", 3)
    status(twilio, sid, "ringing", 2)
    status(twilio, sid, "in-progress", 3)  # a repeat
    with app.app_context():
        call = db.session.scalar(select(Call).where(Call.call_sid == sid))
        assert call.twilio_status == "in-progress" and call.twilio_sequence == 3
        assert count(CallEvent.__table__.select().where(CallEvent.kind == "status").subquery()) == 1


def test_a_status_callback_that_does_not_end_the_call_is_one_round_trip_on_postgresql(app, twilio, database_url, tmp_path):
    """Three of a call's four status callbacks only move its status on: on PostgreSQL one statement,
    which makes the record if need be and logs the event, sent with its BEGIN and COMMIT in one round
    trip (ServiceSession.write_with_commit), and nothing else."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite runs the two statements in one local transaction")
    sid = new_call_sid()
    with app.app_context():
        engine = db.engine
    with statements_sent(engine) as sent, round_trips(engine, tmp_path) as wire:
        assert status(twilio, sid, "ringing", 1).status_code == 204  # before the Voice URL request
        assert status(twilio, sid, "in-progress", 2).status_code == 204
        assert status(twilio, sid, "ringing", 1).status_code == 204  # late: changes nothing
        assert wire() == 3
    assert sent == []  # sent by the commit itself, not statement by statement
    with app.app_context():
        call = db.session.scalar(select(Call).where(Call.call_sid == sid))
        assert call.twilio_status == "in-progress" and call.twilio_sequence == 2 and call.step is None
        logged = db.session.scalars(select(CallEvent.detail).where(CallEvent.call_id == call.id)).all()
        assert logged == [{"status": "ringing", "sequence": 1}, {"status": "in-progress", "sequence": 2}]


def test_each_ivr_webhook_takes_a_handful_of_statements(app, twilio, database_url, monkeypatch, tmp_path):
    """Under gevent every round trip to the database is a chance for other requests to run first:
    a new call is made by its insert (no look-up first), and the call's queue entry comes with it
    (no lazy load, which would flush the step's changes early and write twice). On PostgreSQL the
    stored reply, the call's timeline lines and the call's changes go with the COMMIT, in one round
    trip (`db.ServiceSession.commit`), and the call is read and made on the driver (`db.load_one`):
    SQLAlchemy sees none of those, so the round trips are counted on the wire, and the statements
    SQLAlchemy sees beside them. On SQLite every statement is counted as the driver runs it."""
    from helpline import router

    monkeypatch.setattr(router, "route_now", lambda _app: None)  # routing is counted elsewhere
    with app.app_context():
        engine = db.engine
    postgresql = database_url.startswith("postgresql")
    walker = CallWalker(twilio)
    with contextlib.ExitStack() as stack:
        if postgresql:
            seen = stack.enter_context(statements_sent(engine, transaction_control=False))
            wire = stack.enter_context(round_trips(engine, tmp_path))
        else:
            driver = stack.enter_context(sqlite_statements(engine))
        trips = [0]

        def took(on_postgresql: list[str], expected_trips: int, on_sqlite: list[str]) -> None:
            if postgresql:
                assert [one.head() for one in seen] == on_postgresql
                seen.clear()
                assert wire() - trips[0] == expected_trips
                trips[0] = wire()
            else:
                heads = [one.split()[0] for one in driver]
                assert [head for head in heads if head not in ("BEGIN", "COMMIT", "ROLLBACK")] == on_sqlite
                driver.clear()

        def reset() -> None:
            if postgresql:
                seen.clear()
                trips[0] = wire()
            else:
                driver.clear()

        # BEGIN, then each statement below, then the call's UPDATE, its lines and the reply with the COMMIT
        walker.start()
        # the call made; then its first step, two lines of its timeline and the stored reply
        took([], 3, ["INSERT", "UPDATE", "INSERT", "INSERT", "INSERT"])
        walker.follow()
        took([], 3, ["SELECT", "UPDATE", "INSERT", "INSERT", "INSERT"])
        walker.press("1")
        walker.press("1")
        reset()
        walker.request(walker.xml.find("Gather").get("action", ""), Digits="1")  # the need: into the queue
        assert walker.xml.find("Enqueue") is not None
        # + the queue entry, and one more line
        took([], 4, ["SELECT", "INSERT", "UPDATE", "INSERT", "INSERT", "INSERT", "INSERT"])
        status(twilio, walker.sid, "completed", 9, "40")  # hung up in the queue: abandoned, with their place
        # the call and entry; the place (on the driver, `db.read_rows`); the writes with the COMMIT (the
        # call's, the entry's, two lines); on PostgreSQL then, outside any transaction, whether a handler
        # holds the call (on the driver: nobody does, so there is nothing more to settle); on SQLite
        # whether a handler holds the call, in the same transaction
        took([], 4 + 1,
             ["SELECT", "SELECT", "SELECT", "UPDATE", "UPDATE", "INSERT", "INSERT"])


def test_an_unknown_status_is_refused(app, twilio):
    assert status(twilio, new_call_sid(), "exploded").status_code == 400
    with app.app_context():
        assert count(Call) == 0


def test_hanging_up_in_the_ivr_is_abandoned_at_that_step(app, twilio):
    walker = CallWalker(twilio)
    walker.start()
    walker.press("1")  # now at eligibility
    status(twilio, walker.sid, "completed", 5, "12")
    with app.app_context():
        call = db.session.scalar(select(Call).where(Call.call_sid == walker.sid))
        assert call.outcome == "abandoned" and call.outcome_step == "eligibility"
        assert call.caller_number_enc is None  # never reached the queue, so never kept


def test_hanging_up_in_the_queue_is_abandoned_with_position_and_wait(app, twilio):
    first, second = CallWalker(twilio), CallWalker(twilio, caller="+447911654321")
    for walker in (first, second):
        walker.start()
        walker.press("1")
        walker.press("1")
        walker.press("1")
    second.request(second.queue["action"], QueueResult="hangup", QueueTime="40")
    status(twilio, second.sid, "completed", 9, "95")
    with app.app_context():
        call = db.session.scalar(select(Call).where(Call.call_sid == second.sid))
        entry = db.session.scalar(select(QueueEntry).where(QueueEntry.call_id == call.id))
        assert call.outcome == "abandoned" and call.outcome_step == "queue"
        assert entry.state == "abandoned" and entry.position_at_exit == 2
        assert call.dequeued_at >= call.queued_at


def test_a_status_for_a_call_never_seen_still_leaves_a_record(app, twilio):
    sid = new_call_sid()
    status(twilio, sid, "failed", 1)
    with app.app_context():
        call = db.session.scalar(select(Call).where(Call.call_sid == sid))
        assert call.twilio_status == "failed" and call.outcome == "abandoned"
        assert call.caller_number_enc is None


def test_a_status_callback_before_the_voice_url_request_does_not_skip_the_greeting(app, twilio):
    """Twilio may send `initiated` before (or while) it fetches the Voice URL, to another process."""
    sid = new_call_sid()
    assert status(twilio, sid, "initiated", 0).status_code == 204
    response = twilio.post("/voice/incoming", incoming_params(sid))
    assert response.status_code == 200
    with app.app_context():
        assert count(Call) == 1
        call = db.session.scalar(select(Call).where(Call.call_sid == sid))
        assert call.step is not None and call.caller_number_status == "valid"
        kinds = db.session.scalars(select(CallEvent.kind).where(CallEvent.call_id == call.id)).all()
        assert "incoming" in kinds


def test_the_voice_url_request_and_a_status_callback_racing_make_one_record(app, twilio, database_url):
    """Many calls whose first status callback and Voice URL request arrive at once: no error, one record each."""
    import concurrent.futures

    sids = [new_call_sid() for _ in range(12)]
    jobs = [("/voice/incoming", incoming_params(sid)) for sid in sids]
    jobs += [("/voice/status", {"CallSid": sid, "CallStatus": "initiated", "SequenceNumber": "0",
                                "From": "+447911123456"}) for sid in sids]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda job: twilio.post(*job), jobs))
    assert [answer.status_code for answer in answers[:12]] == [200] * 12
    assert [answer.status_code for answer in answers[12:]] == [204] * 12
    assert all(b"Gather" in answer.data or b"Say" in answer.data for answer in answers[:12])
    with app.app_context():
        assert count(Call) == 12
        started = db.session.scalars(select(CallEvent.call_id).where(CallEvent.kind == "incoming")).all()
        assert len(started) == len(set(started)) == 12


def test_a_fault_on_our_side_keeps_the_caller_on_the_line(app, twilio, monkeypatch):
    interpreter = app.extensions["helpline.ivr"]

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("database fell over")

    monkeypatch.setattr(interpreter, "start", broken)
    response = twilio.post("/voice/incoming", incoming_params(new_call_sid()))
    assert response.status_code == 200 and response.mimetype == "text/xml"
    body = response.get_data(as_text=True)
    assert "<Redirect" in body and "retry=1" in body and "Traceback" not in body
    response = twilio.post("/voice/incoming?retry=3", incoming_params(new_call_sid()))
    held = ET.fromstring(response.get_data(as_text=True))
    queue = held.find("Enqueue")
    # Held in Twilio's queue, with a waitUrl through which the service will hear of them again.
    assert queue is not None and queue.text == "helpline" and "/voice/queue/wait?held=" in queue.get("waitUrl", "")
    assert "116 123" in " ".join(say.text or "" for say in held.iter("Say"))


def test_a_passing_database_fault_does_not_lose_a_final_status(app, twilio, monkeypatch):
    from sqlalchemy.exc import OperationalError

    from helpline import voice

    sid = new_call_sid()
    twilio.post("/voice/incoming", incoming_params(sid))
    real = voice._apply_status
    faults = []

    def flaky(*args, **kwargs):  # type: ignore[no-untyped-def]
        if not faults:
            faults.append(1)
            raise OperationalError("UPDATE calls", {}, Exception("database is locked"))
        return real(*args, **kwargs)

    monkeypatch.setattr(voice, "_apply_status", flaky)
    assert status(twilio, sid, "completed", 4, "20").status_code == 204
    assert faults == [1]
    with app.app_context():
        call = db.session.scalar(select(Call).where(Call.call_sid == sid))
        assert call.twilio_status == "completed" and call.duration_s == 20


def test_a_final_status_the_database_cannot_take_is_answered_204_and_recorded_once_it_can(app, twilio, monkeypatch):
    """Twilio never retries a status callback: one that still fails after the brief retries is kept
    and replayed by the process, with the moment it arrived, as soon as the database answers."""
    from sqlalchemy.exc import OperationalError

    from helpline import deferred, voice

    monkeypatch.setattr(deferred, "RETRY_EVERY_S", 0.2)
    monkeypatch.setattr(voice.time, "sleep", lambda seconds: None)  # the brief retries, without their pauses
    sid = new_call_sid()
    twilio.post("/voice/incoming", incoming_params(sid))
    real = voice._apply_status
    away = [True]

    def outage(*args, **kwargs):  # type: ignore[no-untyped-def]
        if away[0]:
            raise OperationalError("UPDATE calls", {}, Exception("connection refused"))
        return real(*args, **kwargs)

    monkeypatch.setattr(voice, "_apply_status", outage)
    arrived = dt.datetime.now(dt.timezone.utc)
    assert status(twilio, sid, "completed", 4, "20").status_code == 204
    kept = app.extensions["helpline.deferred"]
    assert len(kept) == 1
    time.sleep(0.6)  # replayed while the database is still away: kept
    assert len(kept) == 1
    away[0] = False
    deadline = time.monotonic() + 10
    while len(kept) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(kept) == 0
    with app.app_context():
        db.session.expire_all()
        call = db.session.scalar(select(Call).where(Call.call_sid == sid))
        assert call.twilio_status == "completed" and call.duration_s == 20 and call.outcome == "abandoned"
        assert abs((call.ended_at - arrived).total_seconds()) < 0.5  # when it arrived, not when it was replayed


def test_the_connect_webhooks_keep_the_caller_and_the_callbacks_while_the_database_is_away(app, twilio, monkeypatch):
    """The caller's join answers TwiML that asks again (an apology, then music), never an error that
    would end the call; a leg's status callback is answered 204 and kept for replay."""
    from sqlalchemy.exc import OperationalError

    from helpline import connect, deferred

    monkeypatch.setattr(deferred, "RETRY_EVERY_S", 3600)  # kept, not replayed, within this test

    def away(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OperationalError("SELECT", {}, Exception("connection refused"))

    monkeypatch.setattr(connect, "_entry", away)
    monkeypatch.setattr(connect.routing, "lock_entry", away)
    sid = new_call_sid()
    joined = twilio.post("/voice/connect/7", {"CallSid": sid, "CallStatus": "in-progress"})
    assert joined.status_code == 200 and joined.mimetype == "text/xml"
    first = ET.fromstring(joined.data)
    assert first.find("Say") is not None and first.find("Redirect").text == "/voice/connect/7?retry=1"
    later = ET.fromstring(twilio.post("/voice/connect/7?retry=3", {"CallSid": sid, "CallStatus": "in-progress"}).data)
    assert later.find("Play") is not None and later.find("Redirect").text == "/voice/connect/7?retry=4"
    leg = twilio.post("/voice/connect/7/handler", {"CallSid": new_call_sid(), "CallStatus": "no-answer"})
    assert leg.status_code == 204
    assert len(app.extensions["helpline.deferred"]) == 1


def test_twilio_requests_open_no_session_and_set_no_cookie(app, twilio, client):
    """A webhook acts for nobody: it gets Flask's null session (security.StaffSessionInterface), and
    its answer sets no cookie; a browser's request still gets the staff session."""
    from flask import session

    opened: list[bool] = []

    @app.after_request
    def note_session(response):  # type: ignore[no-untyped-def]
        opened.append(not app.session_interface.is_null_session(session))
        return response

    answer = twilio.post("/voice/incoming", incoming_params(new_call_sid()))
    assert answer.status_code == 200 and "Set-Cookie" not in answer.headers
    unsigned = client.post("/voice/incoming", data=incoming_params(new_call_sid()))
    assert unsigned.status_code == 403 and "Set-Cookie" not in unsigned.headers
    page = client.get("/login")
    assert page.status_code == 200 and "Set-Cookie" in page.headers
    assert opened == [False, False, True]
