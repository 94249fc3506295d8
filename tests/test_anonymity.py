"""Anonymity by person as well as by place: clinicians based in the caller's workplace locality are left
out of every search (video included) unless the caller agrees, and the clinicians and sites a caller
declares a conflict with never appear for them: not in a search, not in `next_slots` after a 409, and
not when a booking is moved. The declared conflicts are kept encrypted and shown to no clinician."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from helpline import booking as slots
from helpline.db import db
from helpline.models import AvailabilityRule, Clinician, Contact, Site
from helpline.scheduler import shutdown
from tests.booking_support import ALL_WEEK, accepted_call, log_in, ready_contact, seed_services


@pytest.fixture(autouse=True)
def _stop_scheduler(app):
    yield
    shutdown(app)


@pytest.fixture
def services(app):
    """The standard test services plus a QWO-based psychologist who sees people in Manchester (QOP)
    and by video, and a second Manchester psychologist."""
    fixed = seed_services(app)
    with app.app_context():
        manchester = db.session.get(Site, fixed.manchester)
        commuter = Clinician(code="t-4", display_name="Dr Leeds Commuter", profession="psychologist", locality_code="QWO")
        second = Clinician(code="t-5", display_name="Dr Second Psychologist", profession="psychologist", locality_code="QOP")
        db.session.add_all([commuter, second])
        for weekday in ALL_WEEK:
            db.session.add(AvailabilityRule(clinician=commuter, weekday=weekday, start_minute=9 * 60, end_minute=12 * 60,
                                            slot_minutes=60, modality="face_to_face", site=manchester))
            db.session.add(AvailabilityRule(clinician=commuter, weekday=weekday, start_minute=13 * 60, end_minute=16 * 60,
                                            slot_minutes=60, modality="video"))
            db.session.add(AvailabilityRule(clinician=second, weekday=weekday, start_minute=9 * 60, end_minute=17 * 60,
                                            slot_minutes=60, modality="face_to_face", site=manchester))
        db.session.commit()
        fixed.commuter, fixed.second = commuter.id, second.id  # type: ignore[attr-defined]
    return fixed


@pytest.fixture
def handler(app):
    return log_in(app, "handler")


def in_days(days: int) -> str:
    return (dt.datetime.now(slots.LONDON).date() + dt.timedelta(days=days)).isoformat()


def search(handler, **params):
    params = {"from": in_days(1), "to": in_days(3), "limit": 500, **params}
    response = handler.get("/api/clinicians/slots?" + "&".join(f"{key}={value}" for key, value in params.items()))
    assert response.status_code == 200, response.get_json()
    return response.get_json()["slots"]


def clinicians_of(found):
    return {slot["clinician"]["name"] for slot in found}


def test_a_clinician_based_in_the_workplace_locality_is_left_out_wherever_and_however_they_see_people(app, services, handler):
    everyone = clinicians_of(search(handler))
    assert "Dr Leeds Commuter" in everyone
    for modality in ("video", "face_to_face"):
        found = search(handler, workplace_locality="QWO", modality=modality)
        assert found or modality == "video"
        assert all(slot["clinician"]["locality"] != "QWO" for slot in found), modality
    # Manchester is not where the caller works, but the commuter is based where they do.
    manchester = search(handler, workplace_locality="QWO", locality="QOP")
    assert clinicians_of(manchester) == {"Dr Test Psychologist", "Dr Second Psychologist"}
    # The caller agreed: everyone is back.
    assert clinicians_of(search(handler, workplace_locality="QWO", include_workplace=1)) == everyone


def test_the_callers_record_applies_its_workplace_rule_and_agreement_to_the_search(app, services, handler):
    call_id = accepted_call(app, handler)
    ready_contact(handler, call_id, work_locality="QWO")
    found = search(handler, call_id=call_id)
    assert found and all(slot["clinician"]["locality"] != "QWO" and slot["locality"] != "QWO" for slot in found)
    ready_contact(handler, call_id, workplace_agreed=True)
    assert "Dr Leeds Commuter" in clinicians_of(search(handler, call_id=call_id))


def test_declared_conflicts_never_appear_in_a_search(app, services, handler):
    call_id = accepted_call(app, handler)
    ready_contact(handler, call_id, avoid=[{"kind": "clinician", "id": services.second},
                                           {"kind": "site", "id": services.bradford}])
    found = search(handler, call_id=call_id)
    assert found
    assert "Dr Second Psychologist" not in clinicians_of(found)
    assert all((slot["site"] or {}).get("id") != services.bradford for slot in found)
    # The search names nobody left out at the caller's request.
    body = handler.get(f"/api/clinicians/slots?from={in_days(1)}&to={in_days(2)}&call_id={call_id}").get_data(as_text=True)
    assert "Second Psychologist" not in body and "Bradford" not in body
    # Searching for another handler's call is refused.
    other = log_in(app, "handler")
    assert other.get(f"/api/clinicians/slots?call_id={call_id}").status_code == 403


def test_a_declared_conflict_cannot_be_booked_even_by_its_slot_id(app, services, handler):
    call_id = accepted_call(app, handler)
    [slot] = search(handler, locality="QOP", profession="psychologist", limit=1)
    ready_contact(handler, call_id, avoid=[{"kind": "clinician", "id": slot["clinician"]["id"]}])
    response = handler.post("/api/bookings", {"call_id": call_id, "slot_id": slot["id"]})
    assert response.status_code == 409 and response.get_json()["error"] == "avoided"
    with app.app_context():
        assert db.session.scalar(select(Contact.disposition).where(Contact.call_id == call_id)) == "in_progress"


def test_next_slots_after_a_409_leave_out_the_declared_conflicts(app, services, handler):
    other = log_in(app, "handler")
    first_call, second_call = accepted_call(app, handler), accepted_call(app, other, number="+447911123000")
    ready_contact(handler, first_call)
    ready_contact(other, second_call, avoid=[{"kind": "clinician", "id": services.second}])
    found = search(handler, locality="QOP", profession="psychologist", modality="face_to_face")
    slot = next(s for s in found if s["clinician"]["id"] == services.manchester_psychologist)
    assert handler.post("/api/bookings", {"call_id": first_call, "slot_id": slot["id"]}).status_code == 201
    response = other.post("/api/bookings", {"call_id": second_call, "slot_id": slot["id"]})
    assert response.status_code == 409 and response.get_json()["error"] == "slot_taken"
    next_slots = response.get_json()["detail"]["next_slots"]
    assert next_slots and services.second not in {s["clinician"]["id"] for s in next_slots}
    # Without the conflict, the same search would have offered the second psychologist.
    third = accepted_call(app, handler, number="+447911123001")
    ready_contact(handler, third)
    again = handler.post("/api/bookings", {"call_id": third, "slot_id": slot["id"]}).get_json()["detail"]["next_slots"]
    assert services.second in {s["clinician"]["id"] for s in again}


def test_a_booking_cannot_be_moved_to_a_declared_conflict(app, services, handler):
    call_id = accepted_call(app, handler)
    ready_contact(handler, call_id, avoid=[{"kind": "site", "id": services.bradford}])
    found = search(handler, call_id=call_id, locality="QOP")
    booked = handler.post("/api/bookings", {"call_id": call_id, "slot_id": found[0]["id"]}).get_json()
    bradford = next(s for s in search(handler, profession="therapist") if s["site"]["id"] == services.bradford)
    response = handler.post(f"/api/bookings/{booked['id']}/reschedule", {"slot_id": bradford["id"]})
    assert response.status_code == 409 and response.get_json()["error"] == "avoided"
    assert handler.get(f"/api/bookings/{booked['id']}").get_json()["start"] == booked["start"]


def test_declared_conflicts_are_encrypted_and_shown_to_no_clinician(app, services, handler):
    clinician = log_in(app, "clinician")
    with app.app_context():
        db.session.get(Clinician, services.manchester_psychologist).user_id = clinician.user_id
        db.session.commit()
    call_id = accepted_call(app, handler)
    contact = ready_contact(handler, call_id, avoid=[{"kind": "clinician", "id": services.second}])
    assert contact["fields"]["avoid"] == [{"kind": "clinician", "id": services.second}]
    slot = next(s for s in search(handler, call_id=call_id, locality="QOP")
                if s["clinician"]["id"] == services.manchester_psychologist)
    assert handler.post("/api/bookings", {"call_id": call_id, "slot_id": slot["id"]}).status_code == 201
    seen = clinician.get(f"/api/contacts/{contact['id']}")
    assert seen.status_code == 200 and "avoid" not in seen.get_json()["fields"]
    with app.app_context():
        raw = db.session.scalar(select(Contact.details_enc).where(Contact.id == contact["id"]))
        assert "avoid" not in raw and "clinician" not in raw


def test_a_declared_conflict_naming_nobody_changes_nothing(app, services, handler):
    call_id = accepted_call(app, handler)
    ready_contact(handler, call_id, avoid=[{"kind": "site", "id": services.leeds}])
    response = handler.put(f"/api/calls/{call_id}/contact", {"avoid": [{"kind": "clinician", "id": 987654}]})
    assert response.status_code == 422
    assert response.get_json()["detail"] == [{"field": "avoid.0", "problem": "no clinician with that id: choose one from the list"}]
    fields = handler.get(f"/api/calls/{call_id}/contact").get_json()["contact"]["fields"]
    assert fields["avoid"] == [{"kind": "site", "id": services.leeds}]
