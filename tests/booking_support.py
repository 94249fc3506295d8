"""Test data and helpers for first contact, risk and booking: users who are logged in with a CSRF
token, calls a handler has accepted, and a small, fixed set of sites and clinicians."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from helpline.db import db
from helpline.models import AvailabilityRule, Call, Clinician, Handler, QueueEntry, Site, utcnow
from helpline.reference_data import load_localities
from helpline.users import create_user

PASSWORD = "a long password for tests"
ALL_WEEK = range(7)


class Console:
    """A logged-in console user: JSON API calls carry the session cookie and the page's CSRF token."""

    def __init__(self, client: FlaskClient, user_id: int):
        self.client = client
        self.user_id = user_id
        page = client.get("/account").get_data(as_text=True)
        match = re.search(r'<meta name="csrf-token" content="([^"]+)"', page)
        assert match, page
        self.token = match.group(1)

    def _headers(self) -> dict[str, str]:
        return {"X-CSRFToken": self.token}

    def get(self, path: str, **kwargs: Any):  # type: ignore[no-untyped-def]
        return self.client.get(path, **kwargs)

    def put(self, path: str, json: Any):  # type: ignore[no-untyped-def]
        return self.client.put(path, json=json, headers=self._headers())

    def post(self, path: str, json: Any):  # type: ignore[no-untyped-def]
        return self.client.post(path, json=json, headers=self._headers())

    def patch(self, path: str, json: Any):  # type: ignore[no-untyped-def]
        return self.client.patch(path, json=json, headers=self._headers())

    def delete(self, path: str):  # type: ignore[no-untyped-def]
        return self.client.delete(path, headers=self._headers())


def log_in(app: Flask, role: str, username: str | None = None) -> Console:
    """Create a user with `role` and log them in on a fresh client (a handler has a Handler row)."""
    username = username or f"{role}-{secrets.token_hex(3)}"
    with app.app_context():
        user = create_user(db.session(), username, role, PASSWORD, f"{role.title()} {username}")
        db.session.flush()
        if role == "handler" and db.session.scalar(select(Handler.id).where(Handler.user_id == user.id)) is None:
            db.session.add(Handler(user_id=user.id))
        db.session.commit()
        user_id = user.id
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page) or re.search(r'value="([^"]+)"[^>]*name="csrf_token"', page)
    assert token, page
    response = client.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": token.group(1)})
    assert response.status_code == 302, response.get_data(as_text=True)
    return Console(client, user_id)


def accepted_call(app: Flask, handler: Console | None, number: str | None = "+447911123456") -> int:
    """A call the handler has accepted (or nobody has, for `handler=None`); returns its id."""
    with app.app_context():
        vault = app.extensions["helpline.vault"]
        call = Call(call_sid="CA" + secrets.token_hex(16), caller_number_status="valid" if number else "withheld",
                    caller_number_enc=vault.encrypt(number) if number else None,
                    caller_hash=vault.keyed_hash(number) if number else None, answers={"about": "self"})
        db.session.add(call)
        db.session.flush()
        handler_id = None
        if handler is not None:
            handler_id = db.session.scalar(select(Handler.id).where(Handler.user_id == handler.user_id))
        db.session.add(QueueEntry(call_id=call.id, state="answered" if handler else "waiting", handler_id=handler_id,
                                  placed_at=utcnow()))
        db.session.commit()
        return call.id


@dataclass
class Services:
    """The fixed test services' ids."""

    leeds: int
    bradford: int
    manchester: int
    psychiatrist: int
    therapist: int
    manchester_psychologist: int


def seed_services(app: Flask, linked_user_id: int | None = None) -> Services:
    """Localities, three sites and three clinicians available every day, 09:00 to 17:00, hourly."""
    with app.app_context():
        session = db.session
        load_localities(session)
        leeds = Site(code="t-leeds", locality_code="QWO", name="Leeds Test Rooms", address=["Test House", "1 Nowhere Lane"], town="Leeds")
        bradford = Site(code="t-bradford", locality_code="QWO", name="Bradford Test Rooms", address=["2 Nowhere Lane"], town="Bradford")
        manchester = Site(code="t-manchester", locality_code="QOP", name="Manchester Test Rooms", address=["3 Nowhere Lane"], town="Manchester")
        psychiatrist = Clinician(code="t-1", display_name="Dr Test Psychiatrist", profession="psychiatrist", locality_code="QWO",
                                 user_id=linked_user_id)
        therapist = Clinician(code="t-2", display_name="Test Therapist", profession="therapist", locality_code="QWO")
        psychologist = Clinician(code="t-3", display_name="Dr Test Psychologist", profession="psychologist", locality_code="QOP")
        session.add_all([leeds, bradford, manchester, psychiatrist, therapist, psychologist])
        for weekday in ALL_WEEK:
            session.add(AvailabilityRule(clinician=psychiatrist, weekday=weekday, start_minute=9 * 60, end_minute=13 * 60,
                                         slot_minutes=60, modality="face_to_face", site=leeds))
            session.add(AvailabilityRule(clinician=psychiatrist, weekday=weekday, start_minute=14 * 60, end_minute=17 * 60,
                                         slot_minutes=60, modality="video"))
            session.add(AvailabilityRule(clinician=therapist, weekday=weekday, start_minute=9 * 60, end_minute=17 * 60,
                                         slot_minutes=60, modality="face_to_face", site=bradford))
            session.add(AvailabilityRule(clinician=psychologist, weekday=weekday, start_minute=9 * 60, end_minute=17 * 60,
                                         slot_minutes=60, modality="face_to_face", site=manchester))
        session.commit()
        return Services(leeds.id, bradford.id, manchester.id, psychiatrist.id, therapist.id, psychologist.id)


def ready_contact(console: Console, call_id: int, **fields: Any):  # type: ignore[no-untyped-def]
    """Fill in what a booking needs (self-referral, consent, name) plus `fields`."""
    response = console.put(f"/api/calls/{call_id}/contact", {"about_self": True, "consent_to_keep": True,
                                                               "name": "Test Caller", **fields})
    assert response.status_code == 200, response.get_json()
    return response.get_json()["contact"]
