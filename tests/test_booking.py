"""Finding slots (order, offsets, the workplace rule, leave, paging, limits) and booking them atomically:
two handlers booking one slot at once end with exactly one booking, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from helpline import booking as slots
from helpline.db import db
from helpline.models import AvailabilityException, Booking, CallEvent, Contact
from helpline.scheduler import shutdown
from tests.booking_support import accepted_call, log_in, ready_contact, seed_services
from tests.conftest import statements_sent

LONDON = slots.LONDON


@pytest.fixture(autouse=True)
def _stop_scheduler(app):
    yield
    shutdown(app)


@pytest.fixture
def services(app):
    return seed_services(app)


@pytest.fixture
def handler(app):
    return log_in(app, "handler")


def in_days(days: int) -> str:
    return (dt.datetime.now(LONDON).date() + dt.timedelta(days=days)).isoformat()


def find(handler, **params):
    query = "&".join(f"{key}={value}" for key, value in params.items())
    response = handler.get(f"/api/clinicians/slots?{query}")
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_slots_are_sorted_local_times_with_offsets(app, services, handler):
    body = find(handler, **{"from": in_days(1), "to": in_days(3), "limit": 500})
    starts = [dt.datetime.fromisoformat(slot["start"]) for slot in body["slots"]]
    assert starts and starts == sorted(starts)
    for slot in body["slots"]:
        start = dt.datetime.fromisoformat(slot["start"])
        assert start.utcoffset() is not None
        assert start.astimezone(LONDON).utcoffset() == start.utcoffset()  # Europe/London wall-clock time
        assert set(slot) == {"id", "start", "end", "modality", "locality", "site", "clinician"}
        assert 9 <= start.hour < 17
        if slot["modality"] == "video":
            assert slot["site"] is None
        else:
            assert slot["site"]["address"] and slot["site"]["locality"] == slot["locality"]


def test_filters_by_locality_modality_and_profession(app, services, handler):
    body = find(handler, **{"from": in_days(1), "to": in_days(2), "locality": "QOP"})
    assert {slot["clinician"]["name"] for slot in body["slots"]} == {"Dr Test Psychologist"}
    body = find(handler, **{"from": in_days(1), "to": in_days(2), "modality": "video"})
    assert body["slots"] and all(slot["modality"] == "video" and slot["site"] is None for slot in body["slots"])
    body = find(handler, **{"from": in_days(1), "to": in_days(2), "profession": "therapist"})
    assert {slot["site"]["town"] for slot in body["slots"]} == {"Bradford"}


def test_sites_and_clinicians_of_the_workplace_locality_are_left_out_unless_overridden(app, services, handler):
    body = find(handler, **{"from": in_days(1), "to": in_days(2), "workplace_locality": "QWO", "limit": 500})
    assert body["excluded_workplace_locality"] == "QWO"
    face_to_face = [slot for slot in body["slots"] if slot["modality"] == "face_to_face"]
    assert face_to_face and all(slot["locality"] != "QWO" for slot in face_to_face)
    # A clinician based in QWO may be the caller's colleague: left out by video as well.
    assert all(slot["clinician"]["locality"] != "QWO" for slot in body["slots"])
    assert not any(slot["modality"] == "video" for slot in body["slots"])
    body = find(handler, **{"from": in_days(1), "to": in_days(2), "workplace_locality": "QWO", "include_workplace": "1",
                            "limit": 500})
    assert body["excluded_workplace_locality"] is None
    assert any(slot["modality"] == "face_to_face" and slot["locality"] == "QWO" for slot in body["slots"])


def test_leave_and_closures_remove_slots(app, services, handler):
    day = dt.date.fromisoformat(in_days(2))
    with app.app_context():
        db.session.add(AvailabilityException(clinician_id=services.therapist, starts_on=day, ends_on=day, kind="leave"))
        db.session.add(AvailabilityException(site_id=services.leeds, starts_on=day, ends_on=day, kind="closure"))
        db.session.commit()
    body = find(handler, **{"from": day.isoformat(), "to": day.isoformat(), "limit": 500})
    names = {(slot["clinician"]["name"], slot["modality"]) for slot in body["slots"]}
    assert ("Test Therapist", "face_to_face") not in names
    assert ("Dr Test Psychiatrist", "face_to_face") not in names  # Leeds is closed
    assert ("Dr Test Psychiatrist", "video") in names


def test_paging_walks_every_slot_once(app, services, handler):
    everything = find(handler, **{"from": in_days(1), "to": in_days(4), "limit": 500})["slots"]
    seen, after = [], None
    while True:
        params = {"from": in_days(1), "to": in_days(4), "limit": 7}
        if after:
            params["after"] = after
        body = find(handler, **params)
        seen += body["slots"]
        after = body["next_after"]
        if not after:
            break
    assert [slot["id"] for slot in seen] == [slot["id"] for slot in everything]


@pytest.mark.parametrize("params, field, status", [
    # Each value the OpenAPI document allows, but not together, or not one that exists: 422.
    ({"from": "2027-01-10", "to": "2027-01-01"}, "to", 422),
    ({"from": "2027-01-01", "to": "2027-03-15"}, "to", 422),
    ({"locality": "NOPE"}, "locality", 422),
    ({"workplace_locality": "XX1"}, "workplace_locality", 422),
    ({"after": "not-a-slot"}, "after", 422),
    # Values the document does not allow: 400.
    ({"from": "soon"}, "from", 400),
    ({"modality": "phone"}, "modality", 400),
    ({"profession": "surgeon"}, "profession", 400),
    ({"limit": "0"}, "limit", 400),
    ({"colour": "blue"}, "colour", 400),
])
def test_bad_searches_are_refused_clearly(app, services, handler, params, field, status):
    query = "&".join(f"{key}={value}" for key, value in params.items())
    response = handler.get(f"/api/clinicians/slots?{query}")
    assert response.status_code == status
    assert any(problem["field"].startswith(field) for problem in response.get_json()["detail"])


def test_slots_skip_the_hour_the_clocks_skip():
    # 29 March 2026: 01:00 to 02:00 does not exist in London.
    assert slots.wall_clock(dt.date(2026, 3, 29), 60) is None
    assert slots.wall_clock(dt.date(2026, 3, 29), 9 * 60) == dt.datetime(2026, 3, 29, 8, 0, tzinfo=dt.timezone.utc)
    assert slots.wall_clock(dt.date(2026, 10, 25), 9 * 60) == dt.datetime(2026, 10, 25, 9, 0, tzinfo=dt.timezone.utc)


def test_search_is_fast_with_hundreds_of_clinicians_and_months_of_bookings(app):
    """300 clinicians, 2 months of slots, 3000 bookings: one page in a handful of queries, however many
    rows there are (time itself is the benchmark's to measure, side by side, not a unit test's)."""
    from .conftest import statements_sent

    from helpline.models import AvailabilityRule, Clinician, Site
    from helpline.reference_data import load_localities

    now = dt.datetime(2027, 2, 1, 8, 0, tzinfo=dt.timezone.utc)
    with app.app_context():
        load_localities(db.session)
        site = Site(code="big", locality_code="QOP", name="Big Rooms", address=["1 Big Road"], town="Manchester")
        db.session.add(site)
        clinicians = [Clinician(code=f"big-{n}", display_name=f"Clinician {n}", profession="therapist", locality_code="QOP")
                      for n in range(300)]
        db.session.add_all(clinicians)
        db.session.flush()
        for clinician in clinicians:
            for weekday in range(5):
                db.session.add(AvailabilityRule(clinician_id=clinician.id, weekday=weekday, start_minute=540, end_minute=1020,
                                                slot_minutes=60, modality="face_to_face", site_id=site.id))
        call = accepted_call(app, None)
        contact = Contact(call_id=call, about_self=True)
        db.session.add(contact)
        db.session.flush()
        for n, clinician in enumerate(clinicians):
            for week in range(10):
                start = now + dt.timedelta(days=6 * week, hours=1 + n % 8)
                db.session.add(Booking(call_id=call, contact_id=contact.id, clinician_id=clinician.id, modality="face_to_face",
                                       site_id=site.id, starts_at=start, ends_at=start + dt.timedelta(hours=1), held_start=start))
        db.session.commit()
        with statements_sent(db.engine, transaction_control=False) as sent:
            page = slots.search(db.session, slots.SlotQuery(start_date=dt.date(2027, 2, 1), end_date=dt.date(2027, 4, 3),
                                                            limit=500), now=now)
        assert len(page.slots) == 500 and page.next_after
        # A query per kind of row (rules, bookings, clinicians, sites...), never one per slot or clinician.
        assert len(sent) <= 6, [item.head(4) for item in sent]
        later = slots.search(db.session, slots.SlotQuery(start_date=dt.date(2027, 3, 25), end_date=dt.date(2027, 4, 3),
                                                         limit=100, locality="QOP"), now=now)
        assert later.slots


def first_slot(handler, **params):
    return find(handler, **{"from": in_days(3), "to": in_days(5), **params})["slots"][0]


def test_booking_a_slot_takes_it_out_of_the_search(app, services, handler):
    call_id = accepted_call(app, handler)
    ready_contact(handler, call_id)
    slot = first_slot(handler)
    response = handler.post("/api/bookings", {"call_id": call_id, "slot_id": slot["id"]})
    assert response.status_code == 201, response.get_json()
    booked = response.get_json()
    assert booked["id"] and booked["status"] == "booked" and booked["start"] == slot["start"]
    assert booked["sms"] == "not_agreed"
    ids = [s["id"] for s in find(handler, **{"from": in_days(3), "to": in_days(5), "limit": 500})["slots"]]
    assert slot["id"] not in ids
    with app.app_context():
        contact = db.session.scalar(select(Contact).where(Contact.call_id == call_id))
        assert contact.disposition == "booked"
        events = db.session.scalars(select(CallEvent).where(CallEvent.call_id == call_id, CallEvent.kind == "booking")).all()
        assert [event.detail["action"] for event in events] == ["booked"]


def test_booking_needs_self_referral_consent_and_a_name(app, services, handler):
    call_id = accepted_call(app, handler)
    slot = first_slot(handler)
    response = handler.post("/api/bookings", {"call_id": call_id, "slot_id": slot["id"]})
    assert response.status_code == 409 and response.get_json()["error"] == "contact_incomplete"
    handler.put(f"/api/calls/{call_id}/contact", {"about_self": True, "name": "Ada"})
    response = handler.post("/api/bookings", {"call_id": call_id, "slot_id": slot["id"]})
    assert response.status_code == 409 and response.get_json()["detail"]["missing"] == ["consent_to_keep"]


def test_booking_with_no_way_to_reach_the_caller_needs_the_handlers_reason(app, services, handler):
    call_id = accepted_call(app, handler, number=None)  # a withheld number
    ready_contact(handler, call_id)
    slot = first_slot(handler)
    response = handler.post("/api/bookings", {"call_id": call_id, "slot_id": slot["id"]})
    assert response.status_code == 409 and response.get_json()["detail"]["missing"] == ["contact_route"]
    ready_contact(handler, call_id, no_contact_reason="No safe number; will call us back on Friday")
    assert handler.post("/api/bookings", {"call_id": call_id, "slot_id": slot["id"]}).status_code == 201


def test_booking_keeps_the_number_the_caller_rang_from_when_none_was_given(app, services, handler):
    call_id = accepted_call(app, handler, number="+447400123456")
    ready_contact(handler, call_id)
    booked = handler.post("/api/bookings", {"call_id": call_id, "slot_id": first_slot(handler)["id"]})
    assert booked.status_code == 201
    record = handler.get(f"/api/calls/{call_id}/contact").get_json()["contact"]
    assert record["fields"]["phone"] == "+447400123456" and record["display"]["phone"] == "07400 123456"


@pytest.mark.parametrize("slot_id, status", [
    ("garbage", 404),
    ("1-1-20270101T0830Z", 404),
])
def test_slots_the_rules_do_not_offer_cannot_be_booked(app, services, handler, slot_id, status):
    call_id = accepted_call(app, handler)
    ready_contact(handler, call_id)
    response = handler.post("/api/bookings", {"call_id": call_id, "slot_id": slot_id})
    assert response.status_code == status and response.get_json()["error"] == "slot_not_found"


def test_a_taken_slot_is_a_409_with_the_next_free_slots(app, services, handler):
    other = log_in(app, "handler")
    first_call, second_call = accepted_call(app, handler), accepted_call(app, other, number="+447911123000")
    ready_contact(handler, first_call)
    ready_contact(other, second_call)
    slot = first_slot(handler, modality="face_to_face", locality="QWO", profession="therapist")
    assert handler.post("/api/bookings", {"call_id": first_call, "slot_id": slot["id"]}).status_code == 201
    response = other.post("/api/bookings", {"call_id": second_call, "slot_id": slot["id"]})
    assert response.status_code == 409
    body = response.get_json()
    assert body["error"] == "slot_taken"
    alternatives = body["detail"]["next_slots"]
    assert alternatives and slot["id"] not in [s["id"] for s in alternatives]
    assert all(s["modality"] == "face_to_face" and s["locality"] == "QWO" and s["clinician"]["profession"] == "therapist"
               for s in alternatives)


def test_two_handlers_booking_one_slot_at_once_exactly_one_wins(app, services):
    handlers = [log_in(app, "handler") for _ in range(4)]
    calls = [accepted_call(app, console, number=f"+44791112300{n}") for n, console in enumerate(handlers)]
    for console, call_id in zip(handlers, calls):
        ready_contact(console, call_id)
    slot = first_slot(handlers[0], modality="video")
    barrier = threading.Barrier(len(handlers))
    statuses: list[int] = []

    def attempt(console, call_id):
        barrier.wait()
        statuses.append(console.post("/api/bookings", {"call_id": call_id, "slot_id": slot["id"]}).status_code)

    threads = [threading.Thread(target=attempt, args=pair) for pair in zip(handlers, calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(statuses) == [201, 409, 409, 409]
    with app.app_context():
        assert db.session.scalar(select(func.count(Booking.id)).where(Booking.held_start.is_not(None))) == 1


def test_the_database_itself_refuses_a_second_hold_of_one_slot(app, services):
    """Two transactions past every check at once: the unique constraint lets exactly one commit."""
    handler = log_in(app, "handler")
    other = log_in(app, "handler")
    calls = [accepted_call(app, handler), accepted_call(app, other, number="+447911123001")]
    ready_contact(handler, calls[0])
    ready_contact(other, calls[1])
    slot_id = first_slot(handler, modality="video")["id"]
    with app.app_context():
        clinician, _site, start = slots.parse_slot_id(slot_id)
        contacts = {c.call_id: c.id for c in db.session.scalars(select(Contact))}
    outcomes: list[str] = []
    committed_first = threading.Event()

    def hold(call_id: int, wait_for_other: bool) -> None:
        with app.app_context(), db.transaction() as session:
            session.add(Booking(call_id=call_id, contact_id=contacts[call_id], clinician_id=clinician, modality="video",
                                starts_at=start, ends_at=start + dt.timedelta(hours=1), held_start=start))
            try:
                if wait_for_other:
                    committed_first.wait(10)
                session.flush()
                outcomes.append("held")
            except IntegrityError:
                outcomes.append("refused")
                session.rollback()

    first = threading.Thread(target=hold, args=(calls[0], False))
    first.start()
    first.join(30)
    committed_first.set()
    second = threading.Thread(target=hold, args=(calls[1], True))
    second.start()
    second.join(30)
    assert outcomes == ["held", "refused"]


def test_cancelling_frees_the_slot_and_is_idempotent(app, services, handler):
    call_id = accepted_call(app, handler)
    ready_contact(handler, call_id)
    slot = first_slot(handler)
    booked = handler.post("/api/bookings", {"call_id": call_id, "slot_id": slot["id"]}).get_json()
    response = handler.delete(f"/api/bookings/{booked['id']}")
    assert response.status_code == 200 and response.get_json()["status"] == "cancelled"
    assert handler.delete(f"/api/bookings/{booked['id']}").status_code == 200
    ids = [s["id"] for s in find(handler, **{"from": in_days(3), "to": in_days(5), "limit": 500})["slots"]]
    assert slot["id"] in ids
    again = handler.post("/api/bookings", {"call_id": call_id, "slot_id": slot["id"]})
    assert again.status_code == 201


def test_rescheduling_moves_atomically(app, services, handler):
    other = log_in(app, "handler")
    mine, theirs = accepted_call(app, handler), accepted_call(app, other, number="+447911123002")
    ready_contact(handler, mine)
    ready_contact(other, theirs)
    found = find(handler, **{"from": in_days(3), "to": in_days(5), "modality": "video", "limit": 10})["slots"]
    booked = handler.post("/api/bookings", {"call_id": mine, "slot_id": found[0]["id"]}).get_json()
    assert other.post("/api/bookings", {"call_id": theirs, "slot_id": found[1]["id"]}).status_code == 201
    # The target is taken: the booking keeps its slot.
    refused = handler.post(f"/api/bookings/{booked['id']}/reschedule", {"slot_id": found[1]["id"]})
    assert refused.status_code == 409 and refused.get_json()["error"] == "slot_taken"
    assert handler.get(f"/api/bookings/{booked['id']}").get_json()["start"] == found[0]["start"]
    moved = handler.patch(f"/api/bookings/{booked['id']}", {"slot_id": found[2]["id"]})
    assert moved.status_code == 200 and moved.get_json()["start"] == found[2]["start"]
    ids = [s["id"] for s in find(handler, **{"from": in_days(3), "to": in_days(5), "modality": "video", "limit": 10})["slots"]]
    assert found[0]["id"] in ids and found[2]["id"] not in ids


def test_bookings_belong_to_their_handler(app, services, handler):
    call_id = accepted_call(app, handler)
    ready_contact(handler, call_id)
    booked = handler.post("/api/bookings", {"call_id": call_id, "slot_id": first_slot(handler)["id"]}).get_json()
    stranger = log_in(app, "handler")
    assert stranger.get(f"/api/bookings/{booked['id']}").status_code == 403
    assert stranger.delete(f"/api/bookings/{booked['id']}").status_code == 403
    assert stranger.post("/api/bookings", {"call_id": call_id, "slot_id": first_slot(handler)["id"]}).status_code == 403
    assert log_in(app, "supervisor").post("/api/bookings", {"call_id": call_id, "slot_id": "x"}).status_code == 403


def test_localities_name_every_icb(app, services, handler):
    body = handler.get("/api/localities").get_json()
    assert len(body["localities"]) == 42
    assert all(set(item) == {"code", "name"} for item in body["localities"])
    sites = handler.get("/api/sites?locality=QWO").get_json()["sites"]
    assert {site["town"] for site in sites} == {"Leeds", "Bradford"}
    clinicians = handler.get("/api/clinicians?locality=QWO").get_json()["clinicians"]
    psychiatrist = next(c for c in clinicians if c["profession"] == "psychiatrist")
    assert {site["town"] for site in psychiatrist["sites"]} == {"Leeds"}
    assert {rule["modality"] for rule in psychiatrist["availability"]} == {"face_to_face", "video"}


def test_a_search_loads_each_clinician_and_site_with_the_rules_not_one_by_one(app, services):
    with app.app_context():
        with statements_sent(db.engine) as sent:
            today = dt.datetime.now(LONDON).date()
            page = slots.search(db.session, slots.SlotQuery(today + dt.timedelta(days=1), today + dt.timedelta(days=7), limit=200))
            shown = slots.slots_json(page.slots)
    statements = [one.sql for one in sent if one.head() == "SELECT"]
    assert len({slot["clinician"]["id"] for slot in shown}) == 3 and len({slot["site"]["id"] for slot in shown if slot["site"]}) == 3
    # Rules (with their clinicians and sites), leave, bookings: no query per clinician or site.
    assert len(statements) <= 3, statements
