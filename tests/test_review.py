"""Call review: every call, filtered by date, outcome, need and answering handler, paged; and one call's
timeline (IVR steps and keys, offers and who missed them, who answered, the outcome, bookings),
never naming or numbering the caller."""

from __future__ import annotations

import datetime as dt
import json

from helpline import routing
from helpline.db import db
from helpline.models import utcnow

from .booking_support import log_in
from .conftest import Twilio, shows_number
from .supervision_factories import known_day
from .walker import CallWalker


def test_the_list_filters_and_pages(app):
    with app.app_context():
        day = known_day(db.session)
        db.session.commit()
        ids = {name: record.id for name, record in day.calls.items()}
        ann = day.handlers["ann"].id
    sue = log_in(app, "supervisor")
    body = sue.get("/api/calls?from=2026-03-10&to=2026-03-10").get_json()
    assert body["total"] == 9 and len(body["calls"]) == 9
    assert body["counts"] == {"abandoned": 2, "answered": 3, "callback_requested": 1, "in_progress": 2, "third_party": 1}
    assert [call["call_id"] for call in body["calls"]][:2] == [ids["waiting_10"], ids["waiting_40"]]  # newest first
    answered = sue.get(f"/api/calls?from=2026-03-10&outcome=answered&handler={ann}").get_json()
    assert sorted(call["call_id"] for call in answered["calls"]) == sorted([ids["quick"], ids["slow"]])
    assert answered["calls"][0]["handler"]["id"] == ann
    assert [c["call_id"] for c in sue.get("/api/calls?from=2026-03-10&need=addiction").get_json()["calls"]] == [ids["gave_up"]]
    assert sue.get("/api/calls?from=2026-03-10&outcome=in_progress").get_json()["total"] == 2
    assert sue.get("/api/calls?from=2026-03-09&to=2026-03-09").get_json()["total"] == 1
    pages = [sue.get(f"/api/calls?from=2026-03-10&per_page=4&page={n}").get_json() for n in (1, 2, 3)]
    assert [len(page["calls"]) for page in pages] == [4, 4, 1]
    assert len({call["call_id"] for page in pages for call in page["calls"]}) == 9
    for query in ("per_page=0", "per_page=500", "page=x", "handler=-1", "from=10/03/2026"):
        assert sue.get(f"/api/calls?{query}").status_code == 400, query
    assert log_in(app, "handler").get("/api/calls").status_code == 403


def test_a_calls_timeline_tells_its_story_without_the_caller(app):
    sue = log_in(app, "supervisor")
    ann = log_in(app, "handler", "ann")
    walker = CallWalker(Twilio(app.test_client()), caller="+447911123456")
    walker.start()
    for key in ("1", "1", "1"):
        walker.press(key)
    walker.enqueue()
    listing = sue.get("/api/calls").get_json()
    [row] = listing["calls"]
    call_id = row["call_id"]
    # An offer ann never answered: the timeline names who missed it.
    with app.app_context():
        from helpline.models import Handler, QueueEntry
        from sqlalchemy import select

        handler = db.session.scalar(select(Handler).where(Handler.user_id == ann.user_id))
        entry = db.session.scalar(select(QueueEntry).where(QueueEntry.call_id == call_id))
        waiting = routing.Waiting(entry.id, call_id, entry.kind, entry.need, (), entry.priority, entry.placed_at, ())
        handler.presence = "available"
        db.session.flush()
        settings = app.config["HELPLINE"].routing
        assert routing.make_offer(db.session, waiting, handler.id, settings, utcnow()) is not None
        routing.expire_offers(db.session, settings, utcnow() + dt.timedelta(seconds=settings.offer_timeout_s + 1))
        db.session.commit()
    story = sue.get(f"/api/calls/{call_id}").get_json()
    assert story["outcome"] == "in_progress" and story["need"] == "mental_health"
    assert [step["step"] for step in story["path"] if "key" in step] == ["about_whom", "eligibility", "need"]
    kinds = [event["kind"] for event in story["events"]]
    for kind in ("incoming", "step", "key", "queued", "offered", "offer_missed"):
        assert kind in kinds, kind
    assert story["missed_by"] == ["Handler ann"]
    keys = [event["detail"]["key"] for event in story["events"] if event["kind"] == "key"]
    assert keys == ["1", "1", "1"]
    text = json.dumps(story)
    assert not shows_number(text) and walker.sid not in text
    assert sue.get("/api/calls/999999").status_code == 404


def test_a_third_party_call_shows_its_path_and_no_person(app):
    sue = log_in(app, "supervisor")
    walker = CallWalker(Twilio(app.test_client()), caller="+447911123999")
    walker.start()
    walker.press("2")
    walker.press("1")  # "that is right": the call ends
    listing = sue.get("/api/calls?outcome=third_party").get_json()
    assert listing["counts"] == {"third_party": 1}
    [row] = listing["calls"]
    story = sue.get(f"/api/calls/{row['call_id']}").get_json()
    assert story["outcome"] == "third_party" and story["handler"] is None and story["bookings"] == []
    assert [step["step"] for step in story["path"]][-1] == story["outcome_step"]
    assert not shows_number(json.dumps(story)) and not shows_number(json.dumps(listing))
