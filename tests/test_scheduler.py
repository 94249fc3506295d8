"""Texts and reminders: the confirmation goes through Twilio's Messages API (the emulator, a real HTTP
server) only with the caller's consent and in discreet words; the day-before reminder is stored in the
database's job store, survives a restart, and fires with the app's context."""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from typing import Iterator

import pytest
import requests
from apscheduler.schedulers.base import STATE_PAUSED, STATE_RUNNING

from helpline import jobs, scheduler
from helpline.config import ConfigError, load_settings
from helpline.db import db
from helpline.models import Booking
from tests.booking_support import accepted_call, log_in, ready_contact, seed_services
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN
from tests.processes import Process, free_port

SENDER = "+441134960000"
#: Words a text must never contain: the service, the clinician's specialty, the reason for the appointment.
GIVEAWAYS = ("helpline", "practitioner", "health", "psychiatr", "therap", "addiction", "mental", "doctor", "dentist")


@pytest.fixture
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    """The Twilio emulator as a separate process: the service reaches it over HTTP, as it would Twilio.

    One per test, so that each test's outbox holds only its own texts (the SQLite and PostgreSQL
    runs of a test text the same numbers)."""
    port = free_port()
    process = Process([sys.executable, "-m", "helpline.emulator", "--port", str(port), "--signal-port", "-1", "--account-sid", ACCOUNT_SID,
                       "--auth-token", AUTH_TOKEN, "--phone-number", SENDER],
                      {}, f"http://127.0.0.1:{port}", tmp_path_factory.mktemp("emulator") / "emulator.log")
    try:
        process.wait_ready("/emulator/messages")
        yield process
    finally:
        process.stop()


def outbox(emulator: Process, to: str) -> list[dict]:
    """Every text the emulator has had sent to `to`."""
    messages = requests.get(f"{emulator.url}/emulator/messages", timeout=5).json()["messages"]
    return [message for message in messages if message["to"] == to]


@pytest.fixture
def texting_app(app_factory, emulator):
    app = app_factory(twilio={"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "api_base_url": emulator.url,
                              "phone_number": SENDER})
    yield app
    scheduler.shutdown(app)


def in_days(days: int) -> str:
    return (dt.datetime.now(dt.timezone.utc).date() + dt.timedelta(days=days)).isoformat()


def book(app, number: str, days_ahead: int = 3, **fields):  # type: ignore[no-untyped-def]
    """A handler books the first free video slot `days_ahead` days out for a caller on `number`."""
    handler = log_in(app, "handler")
    call_id = accepted_call(app, handler, number=number)
    ready_contact(handler, call_id, **fields)
    slots = handler.get(f"/api/clinicians/slots?from={in_days(days_ahead)}&to={in_days(days_ahead + 1)}&modality=video").get_json()
    response = handler.post("/api/bookings", {"call_id": call_id, "slot_id": slots["slots"][0]["id"]})
    assert response.status_code == 201, response.get_json()
    return handler, response.get_json()


def test_a_caller_who_agreed_to_texts_gets_a_discreet_confirmation(texting_app, emulator):
    seed_services(texting_app)
    _handler, booking = book(texting_app, "+447911123456", phone="07911 123456", ok_to_text=True)
    assert booking["sms"] == "sent"
    [message] = outbox(emulator, "+447911123456")
    assert message["from"] == SENDER
    assert message["body"].startswith("Your appointment is confirmed for ")
    assert "by video" in message["body"] and message["body"].endswith("Reply STOP to opt out.")
    assert not any(word in message["body"].lower() for word in GIVEAWAYS), message["body"]


def test_no_text_without_consent_or_without_a_mobile(texting_app, emulator):
    seed_services(texting_app)
    _handler, refused = book(texting_app, "+447911123460", phone="07911 123460", ok_to_text=False)
    assert refused["sms"] == "not_agreed"
    _handler, unasked = book(texting_app, "+447911123461", phone="07911 123461")
    assert unasked["sms"] == "not_agreed"
    # Texts need a mobile: the record refuses "safe to text" with only a landline, next to the field.
    handler = log_in(texting_app, "handler")
    call_id = accepted_call(texting_app, handler, number="+442079460958")
    response = handler.put(f"/api/calls/{call_id}/contact", {"phone": "020 7946 0958", "ok_to_text": True})
    assert response.status_code == 422
    [problem] = response.get_json()["detail"]
    assert problem["field"] == "ok_to_text" and "mobile" in problem["problem"]
    _handler, landline = book(texting_app, "+442079460958", phone="020 7946 0958")
    assert landline["sms"] == "not_agreed"
    for number in ("+447911123460", "+447911123461", "+442079460958"):
        assert outbox(emulator, number) == []


def test_texts_wait_for_the_callers_safe_hours(texting_app, emulator):
    seed_services(texting_app)
    now = dt.datetime.now(jobs.LONDON)
    # A one-minute window that has just passed: the next one opens tomorrow.
    start = (now - dt.timedelta(minutes=3)).replace(second=0, microsecond=0)
    if start.date() != now.date() or start.hour == 23 and start.minute == 59:
        pytest.skip("too close to midnight for a window earlier today")
    window = {"safe_from": f"{start:%H:%M}", "safe_until": f"{start + dt.timedelta(minutes=1):%H:%M}"}
    _handler, booking = book(texting_app, "+447911123470", days_ahead=4, phone="07911 123470", ok_to_text=True, **window)
    assert booking["sms"] == "held"
    assert outbox(emulator, "+447911123470") == []
    job = scheduler.scheduler(texting_app).get_job(jobs.held_text_job_id(booking["id"]))
    opens = dt.datetime.combine(now.date() + dt.timedelta(days=1), start.time(), jobs.LONDON)
    assert job is not None and job.next_run_time == opens and job.args == (booking["id"], "booked")
    # The reminder, too, goes out when the safe hours open on the day before, not at 10:00.
    reminder = dt.datetime.fromisoformat(booking["reminder_at"]).astimezone(jobs.LONDON)
    assert (reminder.hour, reminder.minute) == (start.hour, start.minute)
    # When the hours open (here: the caller has since said any time is safe), the job sends it.
    with texting_app.app_context():
        contact = db.session.get(Booking, booking["id"]).contact
        vault = texting_app.extensions["helpline.vault"]
        fields = {name: value for name, value in json.loads(vault.decrypt(contact.details_enc)).items()
                  if name not in ("safe_from", "safe_until")}
        contact.details_enc = vault.encrypt(json.dumps(fields))
        db.session.commit()
        assert jobs.send_held_text(booking["id"], "booked") == "sent"
        assert db.session.get(Booking, booking["id"]).confirmation == "sent"
    [message] = outbox(emulator, "+447911123470")
    assert message["body"].startswith("Your appointment is confirmed for ")


def test_a_face_to_face_confirmation_gives_only_the_short_address(texting_app, emulator):
    seed_services(texting_app)
    handler = log_in(texting_app, "handler")
    call_id = accepted_call(texting_app, handler, number="+447911123462")
    ready_contact(handler, call_id, phone="07911 123462", ok_to_text=True)
    slots = handler.get(f"/api/clinicians/slots?from={in_days(3)}&to={in_days(4)}&modality=face_to_face&profession=therapist").get_json()
    handler.post("/api/bookings", {"call_id": call_id, "slot_id": slots["slots"][0]["id"]})
    [message] = outbox(emulator, "+447911123462")
    assert "2 Nowhere Lane, Bradford" in message["body"] and "Test Rooms" not in message["body"]


def test_cancelling_and_moving_are_texted_too(texting_app, emulator):
    seed_services(texting_app)
    handler, booking = book(texting_app, "+447911123463", phone="07911 123463", ok_to_text=True)
    handler.delete(f"/api/bookings/{booking['id']}")
    bodies = [message["body"] for message in outbox(emulator, "+447911123463")]
    assert bodies[-1].startswith("Your appointment on ") and "has been cancelled" in bodies[-1]


def test_the_reminder_is_stored_for_the_day_before_and_removed_on_cancel(texting_app):
    seed_services(texting_app)
    handler, booking = book(texting_app, "+447911123464", days_ahead=4, phone="07911 123464", ok_to_text=True)
    start = dt.datetime.fromisoformat(booking["start"])
    reminder = dt.datetime.fromisoformat(booking["reminder_at"])
    assert reminder.date() == start.date() - dt.timedelta(days=1) and (reminder.hour, reminder.minute) == (10, 0)
    job = scheduler.scheduler(texting_app).get_job(jobs.reminder_job_id(booking["id"]))
    assert job is not None and job.func_ref == jobs.REMINDER_JOB and job.args == (booking["id"],)
    assert job.next_run_time == reminder
    handler.delete(f"/api/bookings/{booking['id']}")
    assert scheduler.scheduler(texting_app).get_job(jobs.reminder_job_id(booking["id"])) is None


def test_reminders_survive_a_restart(texting_app):
    seed_services(texting_app)
    _handler, booking = book(texting_app, "+447911123465", days_ahead=4)
    job_id = jobs.reminder_job_id(booking["id"])
    first = scheduler.scheduler(texting_app)
    assert first.state == STATE_PAUSED
    run_at = first.get_job(job_id).next_run_time
    scheduler.shutdown(texting_app)
    # A new process: a new scheduler on the same database finds the job where the first one left it.
    texting_app.extensions[scheduler.EXTENSION] = scheduler.build_scheduler(texting_app)
    second = scheduler.scheduler(texting_app)
    assert second is not first
    job = second.get_job(job_id)
    assert job is not None and job.next_run_time == run_at and job.func_ref == "helpline.jobs:send_reminder"


def test_a_due_reminder_fires_in_a_running_scheduler_and_texts_the_caller(texting_app, emulator):
    seed_services(texting_app)
    _handler, booking = book(texting_app, "+447911123466", days_ahead=4, phone="07911 123466", ok_to_text=True)
    instance = scheduler.start(texting_app)
    assert instance.state == STATE_RUNNING
    instance.modify_job(jobs.reminder_job_id(booking["id"]), next_run_time=dt.datetime.now(dt.timezone.utc))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        bodies = [message["body"] for message in outbox(emulator, "+447911123466")]
        if any(body.startswith("Reminder:") for body in bodies):
            break
        time.sleep(0.2)
    reminder = next(body for body in bodies if body.startswith("Reminder:"))
    assert "tomorrow" in reminder and not any(word in reminder.lower() for word in GIVEAWAYS)
    assert instance.get_job(jobs.reminder_job_id(booking["id"])) is None  # a date job runs once


def test_a_reminder_for_a_cancelled_booking_sends_nothing(texting_app, emulator):
    seed_services(texting_app)
    handler, booking = book(texting_app, "+447911123467", days_ahead=4, phone="07911 123467", ok_to_text=True)
    with texting_app.app_context():
        stored = db.session.get(Booking, booking["id"])
        stored.status, stored.held_start = "cancelled", None
        db.session.commit()
        assert jobs.send_reminder(booking["id"]) == "skipped"
    assert not any(m["body"].startswith("Reminder:") for m in outbox(emulator, "+447911123467"))


def test_the_embedded_setting_is_strict_and_decides_who_runs_jobs(app_factory):
    with pytest.raises(ConfigError) as raised:
        load_settings({"scheduler": {"embedded": "yes"}}, environ={})
    assert raised.value.problems == ["config: scheduler.embedded: Input should be a valid boolean"]
    with pytest.raises(ConfigError):
        load_settings({"scheduler": {"embedded": True, "extra": 1}}, environ={})
    separate = app_factory(scheduler={"embedded": False})
    try:
        assert scheduler.start_for_serve(separate) is False
        assert separate.extensions[scheduler.EXTENSION].state != STATE_RUNNING
    finally:
        scheduler.shutdown(separate)
    embedded = app_factory(scheduler={"embedded": True})
    try:
        assert scheduler.start_for_serve(embedded) is True
        assert embedded.extensions[scheduler.EXTENSION].state == STATE_RUNNING
    finally:
        scheduler.shutdown(embedded)
