"""Clinicians see their own bookings and the records of the callers booked with them, and nobody
else's; their calendar entries are valid iCalendar."""

from __future__ import annotations

import datetime as dt

import pytest

from helpline.calendar import escape, fold
from helpline.models import utcnow
from helpline.scheduler import shutdown
from tests.booking_support import accepted_call, log_in, ready_contact, seed_services


@pytest.fixture(autouse=True)
def _stop_scheduler(app):
    yield
    shutdown(app)


@pytest.fixture
def world(app):
    """Two clinicians with log-ins, and a booking with each."""
    mine, theirs = log_in(app, "clinician"), log_in(app, "clinician")
    services = seed_services(app, linked_user_id=mine.user_id)
    from helpline.db import db
    from helpline.models import Clinician

    with app.app_context():
        db.session.get(Clinician, services.therapist).user_id = theirs.user_id
        db.session.commit()
    handler = log_in(app, "handler")
    day = (dt.date.today() + dt.timedelta(days=3)).isoformat()
    bookings = {}
    for name, profession, number in (("mine", "psychiatrist", "+447911123470"), ("theirs", "therapist", "+447911123471")):
        call_id = accepted_call(app, handler, number=number)
        ready_contact(handler, call_id, name=f"Caller {name}", notes=f"note for {name}")
        slot = handler.get(f"/api/clinicians/slots?from={day}&to={day}&profession={profession}").get_json()["slots"][0]
        bookings[name] = handler.post("/api/bookings", {"call_id": call_id, "slot_id": slot["id"]}).get_json()
    return {"mine": mine, "theirs": theirs, "handler": handler, "bookings": bookings}


def test_a_clinician_sees_their_own_bookings_only(world):
    listed = world["mine"].get("/api/clinician/bookings").get_json()["bookings"]
    assert [booking["id"] for booking in listed] == [world["bookings"]["mine"]["id"]]
    assert listed[0]["patient"]["name"] == "Caller mine"


def test_a_clinician_reads_their_patients_records_and_is_refused_others(world):
    mine, theirs = world["bookings"]["mine"], world["bookings"]["theirs"]
    record = world["mine"].get(f"/api/contacts/{mine['contact_id']}")
    assert record.status_code == 200 and record.get_json()["fields"]["notes"] == "note for mine"
    refused = world["mine"].get(f"/api/contacts/{theirs['contact_id']}")
    assert refused.status_code == 403 and "note for theirs" not in refused.get_data(as_text=True)
    assert world["mine"].get("/api/contacts/999999").status_code == 403
    assert world["mine"].get(f"/api/bookings/{theirs['id']}").status_code == 403
    assert world["mine"].get(f"/api/bookings/{theirs['id']}.ics").status_code == 403


def test_after_a_cancellation_the_clinician_no_longer_sees_the_record(world):
    mine = world["bookings"]["mine"]
    world["handler"].delete(f"/api/bookings/{mine['id']}")
    assert world["mine"].get(f"/api/contacts/{mine['contact_id']}").status_code == 403
    # The slot stays in their diary, marked cancelled, without the patient's name.
    listed = world["mine"].get("/api/clinician/bookings")
    [booking] = listed.get_json()["bookings"]
    assert booking["id"] == mine["id"] and booking["status"] == "cancelled" and booking["patient"] is None
    assert "Caller mine" not in listed.get_data(as_text=True)


def test_the_names_a_clinician_is_shown_are_audited_per_record(app, world):
    from sqlalchemy import select

    from helpline.db import db
    from helpline.models import AuditEntry

    def name_reads() -> list[tuple[str | None, str | None]]:
        with app.app_context():
            return [(entry.object_type, entry.object_id) for entry in
                    db.session.scalars(select(AuditEntry).where(AuditEntry.action == "contact.name_read"))]

    mine = world["bookings"]["mine"]
    world["mine"].get("/api/clinician/bookings")
    assert name_reads() == [("contact", str(mine["contact_id"]))]
    # A diary with nobody in it, or only a cancelled booking, shows no name and writes nothing.
    world["theirs"].get("/api/clinician/bookings?from=2020-01-01&to=2020-01-31")
    world["handler"].delete(f"/api/bookings/{mine['id']}")
    world["mine"].get("/api/clinician/bookings")
    assert len(name_reads()) == 1


def test_clinicians_cannot_use_the_handlers_api(world):
    assert world["mine"].get("/api/clinicians/slots").status_code == 403
    assert world["mine"].post("/api/bookings", {"call_id": 1, "slot_id": "x"}).status_code == 403


def test_the_calendar_entry_is_rfc_5545_and_names_no_patient(world):
    booking = world["bookings"]["mine"]
    response = world["mine"].get(f"/api/bookings/{booking['id']}.ics")
    assert response.status_code == 200 and response.mimetype == "text/calendar"
    raw = response.get_data()
    assert raw.endswith(b"\r\n") and b"\n" not in raw.replace(b"\r\n", b"")
    lines = raw.decode().split("\r\n")[:-1]
    assert lines[0] == "BEGIN:VCALENDAR" and lines[-1] == "END:VCALENDAR"
    assert all(len(line.encode()) <= 75 for line in lines)
    unfolded = raw.decode().replace("\r\n ", "")
    start = dt.datetime.fromisoformat(booking["start"]).astimezone(dt.timezone.utc)
    assert f"DTSTART:{start:%Y%m%dT%H%M%SZ}" in unfolded
    assert f"UID:booking-{booking['id']}@helpline.test" in unfolded
    assert "LOCATION:Test House\\, 1 Nowhere Lane\\, Leeds" in unfolded or "LOCATION:Video call" in unfolded
    assert "Caller mine" not in unfolded and "note for mine" not in unfolded
    assert world["handler"].get(f"/api/bookings/{booking['id']}.ics").status_code == 403


def test_the_clinician_page(app, world):
    page = world["mine"].get("/clinician")
    assert page.status_code == 200 and "clinician.js" in page.get_data(as_text=True)
    assert world["handler"].get("/clinician").status_code == 403


# -- the clinician's side: patients, attendance, discharge ---------------------------------------------


def begun(app, booking_id: int, days_ago: int = 1) -> None:  # type: ignore[no-untyped-def]
    """Move a booking's appointment into the past, as if it had happened."""
    from helpline.db import db
    from helpline.models import Booking

    with app.app_context():
        booking = db.session.get(Booking, booking_id)
        length = booking.ends_at - booking.starts_at
        booking.starts_at = utcnow() - dt.timedelta(days=days_ago)
        booking.ends_at = booking.starts_at + length
        booking.held_start = booking.starts_at
        db.session.commit()


def audited(app, action: str) -> list[tuple[int | None, str | None]]:  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from helpline.db import db
    from helpline.models import AuditEntry

    with app.app_context():
        return [(entry.actor_id, entry.object_id) for entry in
                db.session.scalars(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.seq))]


def test_a_clinician_lists_their_patients_with_localities_in_words(app, world):
    mine = world["bookings"]["mine"]
    world["handler"].put(f"/api/calls/{mine['call_id']}/contact", {"home_locality": "QOP", "work_locality": "QWO"})
    listed = world["mine"].get("/api/clinician/patients")
    assert listed.status_code == 200
    [patient] = listed.get_json()["patients"]
    assert patient["contact_id"] == mine["contact_id"] and patient["name"] == "Caller mine"
    assert patient["home_locality"] == {"code": "QOP", "name": "NHS Greater Manchester ICB"}
    assert patient["work_locality"] == {"code": "QWO", "name": "NHS West Yorkshire ICB"}
    assert patient["next_appointment"] and patient["discharged_on"] is None and patient["appointments"] == 1
    assert "note for" not in listed.get_data(as_text=True)
    assert audited(app, "contact.name_read") == [(world["mine"].user_id, str(mine["contact_id"]))]
    # The record itself names the localities in words too.
    record = world["mine"].get(f"/api/contacts/{mine['contact_id']}").get_json()
    assert record["display"]["work_locality"] == "NHS West Yorkshire ICB"


def test_attendance_is_recorded_once_the_appointment_has_begun(app, world):
    mine = world["bookings"]["mine"]
    path = f"/api/bookings/{mine['id']}/attendance"
    early = world["mine"].put(path, {"attendance": "attended"})
    assert early.status_code == 409 and early.get_json()["error"] == "not_yet"
    begun(app, mine["id"])
    for bad in ({"attendance": "maybe"}, {}, {"attendance": "attended", "extra": 1}):
        assert world["mine"].put(path, bad).status_code == 400
    done = world["mine"].put(path, {"attendance": "did_not_attend"})
    assert done.status_code == 200 and done.get_json()["attendance"] == "did_not_attend"
    assert world["mine"].get("/api/clinician/patients").get_json()["patients"][0]["did_not_attend"] == 1
    assert audited(app, "booking.attendance") == [(world["mine"].user_id, str(mine["id"]))]
    # Nobody else records it: another clinician, or the handler.
    theirs = world["bookings"]["theirs"]
    begun(app, theirs["id"])
    assert world["mine"].put(f"/api/bookings/{theirs['id']}/attendance", {"attendance": "attended"}).status_code == 403
    assert world["handler"].put(path, {"attendance": "attended"}).status_code == 403


def test_a_clinician_records_a_discharge_and_its_date(app, world):
    mine = world["bookings"]["mine"]
    path = f"/api/contacts/{mine['contact_id']}/discharge"
    tomorrow = (dt.date.today() + dt.timedelta(days=2)).isoformat()
    future = world["mine"].put(path, {"discharged_on": tomorrow})
    assert future.status_code == 422
    assert future.get_json()["detail"] == [{"field": "discharged_on", "problem": "the discharge date cannot be in the future"}]
    before = world["mine"].put(path, {"discharged_on": "2020-01-01"})
    assert before.status_code == 422 and "before the first contact" in before.get_json()["detail"][0]["problem"]
    assert world["mine"].put(path, {"discharged_on": "not a date"}).status_code == 400
    assert world["mine"].get("/api/clinician/patients").get_json()["patients"][0]["discharged_on"] is None

    today = dt.date.today()
    done = world["mine"].put(path, {"discharged_on": today.isoformat()})
    assert done.status_code == 200, done.get_json()
    assert done.get_json() == {"contact_id": mine["contact_id"], "discharged_on": today.isoformat(),
                               "keep_until": (today + dt.timedelta(days=7305)).isoformat()}
    [patient] = world["mine"].get("/api/clinician/patients").get_json()["patients"]
    assert patient["discharged_on"] == today.isoformat()
    assert world["mine"].get(f"/api/contacts/{mine['contact_id']}").get_json()["discharged_on"] == today.isoformat()
    assert world["mine"].put(path, {"discharged_on": None}).get_json()["discharged_on"] is None
    assert audited(app, "contact.discharge") == [(world["mine"].user_id, str(mine["contact_id"]))]
    assert audited(app, "contact.reopen") == [(world["mine"].user_id, str(mine["contact_id"]))]
    # Another clinician's patient is refused, with nothing said about it.
    theirs = world["bookings"]["theirs"]
    refused = world["mine"].put(f"/api/contacts/{theirs['contact_id']}/discharge", {"discharged_on": today.isoformat()})
    assert refused.status_code == 403 and "Caller theirs" not in refused.get_data(as_text=True)


def test_the_clinician_page_names_the_clinician(world):
    page = world["mine"].get("/clinician").get_data(as_text=True)
    assert "Dr Test Psychiatrist" in page and "NHS West Yorkshire ICB" in page


@pytest.mark.parametrize("text, escaped", [
    ("a,b;c\\d", "a\\,b\\;c\\\\d"),
    ("line one\nline two", "line one\\nline two"),
    ("crlf\r\nend", "crlf\\nend"),
])
def test_text_values_are_escaped(text, escaped):
    assert escape(text) == escaped


def test_long_lines_fold_at_75_octets_without_splitting_characters():
    line = "DESCRIPTION:" + "é" * 100
    folded = fold(line)
    pieces = folded.split("\r\n ")
    assert all(len(piece.encode()) <= (75 if n == 0 else 74) for n, piece in enumerate(pieces))
    assert "".join(pieces) == line
    assert fold("SHORT:line") == "SHORT:line"
