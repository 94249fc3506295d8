"""The smaller promises about access: 405s say what is allowed, the OpenAPI document says what the
server enforces, the embedded database is private to the service, the content security policy does
not take the client's word for the host, and cancelling a booking is audited."""

from __future__ import annotations

import os
import stat

from sqlalchemy import select

from helpline.db import db, upgrade
from helpline.models import AuditEntry

from .booking_support import accepted_call, log_in, ready_contact, seed_services


def test_a_405_names_the_methods_the_resource_takes(app):
    console = log_in(app, "handler")
    response = console.client.delete("/api/queue", headers={"X-CSRFToken": console.token})
    assert response.status_code == 405 and response.get_json()["error"] == "method_not_allowed"
    assert set(response.headers["Allow"].replace(" ", "").split(",")) >= {"GET"}
    assert "DELETE" not in response.headers["Allow"]


def test_the_openapi_document_gives_id_bounds_and_404s(client):
    document = client.get("/api/openapi.json").get_json()
    operation = document["paths"]["/api/contacts/{contact_id}"]["get"]
    [parameter] = [p for p in operation["parameters"] if p["in"] == "path"]
    assert parameter["schema"] == {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}
    assert "404" in operation["responses"]
    assert "404" not in document["paths"]["/api/queue"]["get"]["responses"]
    # ... and the bound is the server's: one past it matches no route.
    assert client.get(f"/api/contacts/{2**31}").status_code == 404


def test_the_sqlite_database_is_readable_by_the_service_alone(tmp_path):
    path = tmp_path / "data" / "helpline.db"
    upgrade(f"sqlite:///{path}")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # An older database left world-readable is tightened by the next upgrade.
    os.chmod(path, 0o644)
    upgrade(f"sqlite:///{path}")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_csp_names_the_public_host_not_the_request_host(client):
    policy = client.get("/login", headers={"Host": "attacker.example"}).headers["Content-Security-Policy"]
    connect = next(part for part in policy.split("; ") if part.startswith("connect-src"))
    assert "attacker.example" not in policy
    assert "wss://helpline.test" in connect


def test_cancelling_a_booking_is_audited(app):
    import datetime as dt

    seed_services(app)
    handler = log_in(app, "handler")
    call_id = accepted_call(app, handler)
    ready_contact(handler, call_id, phone="+447911123499")  # a way to reach them, which a booking needs
    day = (dt.date.today() + dt.timedelta(days=3)).isoformat()
    slot = handler.get(f"/api/clinicians/slots?from={day}&to={day}").get_json()["slots"][0]
    made = handler.post("/api/bookings", {"call_id": call_id, "slot_id": slot["id"]})
    assert made.status_code == 201, made.get_json()
    booking = made.get_json()
    assert handler.delete(f"/api/bookings/{booking['id']}").status_code == 200
    assert handler.delete(f"/api/bookings/{booking['id']}").status_code == 200  # again: nothing more happens
    with app.app_context():
        entries = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "booking.cancel")).all()
        assert [(entry.actor_id, entry.object_id) for entry in entries] == [(handler.user_id, str(booking["id"]))]
