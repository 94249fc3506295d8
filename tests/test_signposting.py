"""Triage and signposting: the outcome with its reason, an urgent triage's time limit on the search, the
partner-services directory (reference data, searchable), and signposts texted only with consent, in
words that do not name the helpline unless the caller allowed it."""

from __future__ import annotations

import datetime as dt

import pytest

from helpline import booking as slots
from helpline import partners
from tests.booking_support import accepted_call, log_in, ready_contact, seed_services
from tests.test_scheduler import GIVEAWAYS, emulator, outbox, texting_app  # noqa: F401 - fixtures


@pytest.fixture
def handler(app):
    return log_in(app, "handler")


def test_the_directory_names_the_partners_with_a_way_to_reach_each():
    found = partners.services()
    names = " ".join(service.name for service in found)
    for partner in ("BMA wellbeing", "Doctors' Support Network", "Royal Medical Benevolent Fund", "Cameron Fund",
                    "Practitioner Performance Advice", "British Dental Association"):
        assert partner in names
    for service in found:
        assert service.web.startswith("https://") and service.hours and service.helps_with and service.about
    # Every topic has at least one service, and each audience has its own.
    assert {topic for service in found for topic in service.helps_with} >= {"money", "regulatory", "legal", "wellbeing"}


def test_the_directory_is_searchable_in_the_console(app, handler):
    seed_services(app)
    body = handler.get("/api/partner-services?q=money").get_json()
    codes = {service["code"] for service in body["services"]}
    assert {"rmbf", "cameron-fund"} <= codes and "samaritans" not in codes
    assert body["topics"]["regulatory"]
    legal = handler.get("/api/partner-services?topic=legal&for=dentists").get_json()["services"]
    assert legal and all("legal" in s["helps_with"] and s["for"] in ("dentists", "both") for s in legal)
    assert handler.get("/api/partner-services?q=zebra crossing").get_json()["services"] == []
    bad = handler.get("/api/partner-services?topic=astrology&for=nurses")
    assert bad.status_code == 400
    assert {p["field"] for p in bad.get_json()["detail"]} == {"topic", "for"}
    assert log_in(app, "clinician").get("/api/partner-services").status_code == 200


def test_the_triage_outcome_is_recorded_with_its_reason(app, handler):
    seed_services(app)
    call_id = accepted_call(app, handler)
    contact = ready_contact(handler, call_id, triage="signposted", triage_reason="Money worries; wants RMBF details")
    assert contact["fields"]["triage"] == "signposted" and contact["fields"]["triage_reason"].startswith("Money")
    response = handler.put(f"/api/calls/{call_id}/contact", {"triage": "someday", "triage_reason": "r" * 501})
    assert response.status_code == 400
    assert {p["field"] for p in response.get_json()["detail"]} == {"triage", "triage_reason"}


def test_an_urgent_triage_offers_only_slots_within_the_configured_time(app, handler):
    seed_services(app)
    call_id = accepted_call(app, handler)
    ready_contact(handler, call_id, triage="urgent", triage_reason="Struggling to keep safe at work")
    today = dt.datetime.now(slots.LONDON).date()
    body = handler.get(f"/api/clinicians/slots?from={today}&to={today + dt.timedelta(days=10)}&limit=500"
                       f"&call_id={call_id}").get_json()
    limit = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=app.config["HELPLINE"].triage.urgent_within_hours)
    assert body["slots"] and body["urgent_until"]
    assert all(dt.datetime.fromisoformat(slot["start"]) <= limit for slot in body["slots"])
    routine = handler.get(f"/api/clinicians/slots?from={today}&to={today + dt.timedelta(days=10)}&limit=500").get_json()
    assert max(dt.datetime.fromisoformat(slot["start"]) for slot in routine["slots"]) > limit


def signpost(handler, call_id, **body):
    return handler.post(f"/api/calls/{call_id}/signposts", {"services": ["rmbf", "samaritans"], "consent": True, **body})


def test_signposts_are_texted_with_consent_in_discreet_words(texting_app, emulator):  # noqa: F811
    seed_services(texting_app)
    handler = log_in(texting_app, "handler")
    call_id = accepted_call(texting_app, handler, number="+447400123456")
    ready_contact(handler, call_id, phone="07400 123456")
    response = signpost(handler, call_id)
    assert response.status_code == 201 and response.get_json() == {"result": "sent", "channel": "text",
                                                                    "services": ["rmbf", "samaritans"]}
    [message] = outbox(emulator, "+447400123456")
    assert "Royal Medical Benevolent Fund" in message["body"] and "116 123" in message["body"]
    assert "helpline" not in message["body"].lower() and "practitioner" not in message["body"].lower()
    record = handler.get(f"/api/calls/{call_id}/contact").get_json()["contact"]
    assert record["fields"]["signposts"][0]["services"] == ["rmbf", "samaritans"]
    # Allowed to name the service: the text says where it comes from.
    assert signpost(handler, call_id, services=["dsn"], name_the_service=True).status_code == 201
    named = outbox(emulator, "+447400123456")[-1]["body"]
    assert named.startswith(f"From {texting_app.config['HELPLINE'].service.name}")


def test_signposts_without_consent_or_a_mobile_or_naming_nobody_send_nothing(texting_app, emulator):  # noqa: F811
    seed_services(texting_app)
    handler = log_in(texting_app, "handler")
    call_id = accepted_call(texting_app, handler, number="+447400123457")
    ready_contact(handler, call_id, phone="020 7946 0958")
    response = signpost(handler, call_id, consent=False, services=["rmbf", "no-such-service"])
    assert response.status_code == 422
    assert {p["field"] for p in response.get_json()["detail"]} == {"consent", "services.1", "phone"}
    ready_contact(handler, call_id, phone="07400 123457", safe_from="00:00", safe_until="00:01")
    now = dt.datetime.now(slots.LONDON)
    if now.hour == 0 and now.minute == 0:
        pytest.skip("inside the one-minute window")
    response = signpost(handler, call_id)
    assert response.status_code == 409 and response.get_json()["error"] == "outside_safe_hours"
    assert outbox(emulator, "+447400123457") == []
    record = handler.get(f"/api/calls/{call_id}/contact").get_json()["contact"]
    assert "signposts" not in record["fields"]
    assert log_in(texting_app, "handler").post(f"/api/calls/{call_id}/signposts",
                                               {"services": ["rmbf"], "consent": True}).status_code == 403


def test_signposts_are_emailed_with_consent_in_discreet_words(texting_app, emulator, smtp_catcher):  # noqa: F811
    seed_services(texting_app)
    handler = log_in(texting_app, "handler")
    call_id = accepted_call(texting_app, handler, number="+447400123458")
    # No address yet: nothing is sent, and the handler is told where to put one.
    ready_contact(handler, call_id, phone="07400 123458", safe_from="00:00", safe_until="00:01")
    refused = signpost(handler, call_id, channel="email")
    assert refused.status_code == 422 and [p["field"] for p in refused.get_json()["detail"]] == ["email"]
    assert len(smtp_catcher) == 0
    handler.put(f"/api/calls/{call_id}/contact", {"email": "sam@example.org"})
    # Safe hours are for what rings or buzzes: an email goes whatever the hour.
    response = signpost(handler, call_id, channel="email")
    assert response.status_code == 201 and response.get_json()["channel"] == "email"
    [message] = list(smtp_catcher)
    assert message["to"] == ["sam@example.org"] and message["subject"] == "The details you asked for"
    assert "Royal Medical Benevolent Fund" in message["body"] and "116 123" in message["body"]
    for word in ("helpline", "practitioner", "mental", "addiction"):
        assert word not in (message["subject"] + message["body"]).lower()
    assert outbox(emulator, "+447400123458") == []  # by email, not by text
    record = handler.get(f"/api/calls/{call_id}/contact").get_json()["contact"]
    assert [(item["channel"], item["result"]) for item in record["fields"]["signposts"]] == [("email", "sent")]

