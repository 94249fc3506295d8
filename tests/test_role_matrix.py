"""The role matrix (helpline/permissions.py) against the running service.

Every route in the app's URL map and every Socket.IO event is tried as every role and as nobody, and
the answer is checked against the matrix: allowed means neither 401 nor 403; refused means 401 (a
log-in page for a browser page) for nobody and 403 for the wrong role. A route or event the matrix
does not list fails the test, so a new one cannot ship before someone decides who may use it.

Path parameters are filled with real objects: one belonging to the user trying the route, and one
belonging to someone else, which object-level rules must refuse (a handler's call, a clinician's
patient, a booking). Supervisors may read a person's details only with a reason, which is audited.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from helpline import display, permissions, realtime, security
from helpline.db import db
from helpline.models import AuditEntry, Clinician, Handler, utcnow
from helpline.realtime import NAMESPACE, socketio
from helpline.scheduler import shutdown
from tests.booking_support import Console, accepted_call, log_in, ready_contact, seed_services
from tests.conftest import Twilio
from tests.test_auth import csrf_from

ROOT = Path(__file__).resolve().parents[1]
REASON = "Safeguarding review requested by the clinical lead"
#: Strings that would show a record leaked: the callers' names and notes.
SECRETS = ("Caller Mine", "Caller Theirs", "note for mine", "note for theirs")


@pytest.fixture(autouse=True)
def _stop_scheduler(app: Flask):  # type: ignore[no-untyped-def]
    yield
    shutdown(app)


@pytest.fixture(autouse=True)
def _cheap_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Still argon2id, but with the smallest cost: these tests log in a dozen users each, and the
    service's cost (deliberately about a second) is tested where passwords are the subject."""
    from argon2 import PasswordHasher

    from helpline import users

    monkeypatch.setattr(users, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


@dataclass
class World:
    """Users of every role, and for the handler and the clinician one object of theirs and one not."""

    app: Flask
    consoles: dict[str, Console]
    anonymous: FlaskClient
    anonymous_token: str
    #: A display-only screen's token.
    display_token: str
    own: dict[str, int]
    other: dict[str, int]

    def client_for(self, principal: str) -> tuple[FlaskClient, str]:
        """The test client and CSRF token of a principal (a role, or anonymous)."""
        if principal == permissions.ANONYMOUS:
            return self.anonymous, self.anonymous_token
        console = self.consoles[principal]
        return console.client, console.token


@pytest.fixture
def world(app: Flask) -> World:
    """A handler on a call with a record and a booking with 'our' clinician; the same for another
    handler and another clinician; a supervisor and an admin."""
    consoles = {role: log_in(app, role) for role in permissions.ROLES}
    other_handler, other_clinician = log_in(app, "handler"), log_in(app, "clinician")
    services = seed_services(app, linked_user_id=consoles["clinician"].user_id)
    with app.app_context():
        db.session.get(Clinician, services.therapist).user_id = other_clinician.user_id
        db.session.commit()
    day = (dt.date.today() + dt.timedelta(days=3)).isoformat()
    made: dict[str, dict[str, int]] = {}
    for name, handler, profession, number in (("own", consoles["handler"], "psychiatrist", "+447911123470"),
                                              ("other", other_handler, "therapist", "+447911123471")):
        call_id = accepted_call(app, handler, number=number)
        contact = ready_contact(handler, call_id, name=f"Caller {name.title()}", notes=f"note for {'mine' if name == 'own' else 'theirs'}")
        slot = handler.get(f"/api/clinicians/slots?from={day}&to={day}&profession={profession}").get_json()["slots"][0]
        booking = handler.post("/api/bookings", {"call_id": call_id, "slot_id": slot["id"]})
        assert booking.status_code == 201, booking.get_json()
        made[name] = {"call_id": call_id, "contact_id": contact["id"], "booking_id": booking.get_json()["id"]}
    with app.app_context():
        # Our handler is on the call now, as after accepting it: the IVR view and hold need that.
        handler_row = db.session.scalar(select(Handler).where(Handler.user_id == consoles["handler"].user_id))
        handler_row.current_call_id, handler_row.presence = made["own"]["call_id"], "on_call"
        made["own"]["handler_id"] = handler_row.id
        made["other"]["handler_id"] = db.session.scalar(select(Handler.id).where(Handler.user_id == other_handler.user_id))
        db.session.commit()
    anonymous = app.test_client()
    token = csrf_from(anonymous.get("/login").get_data(as_text=True))
    with app.app_context():
        _, screen_token = display.create(db.session, "the wall")
        db.session.commit()
    return World(app, consoles, anonymous, token, screen_token, made["own"], made["other"])


# -- what to send ------------------------------------------------------------------------------------

#: Path parameters that are not objects: a real value of each.
FIXED_PARAMETERS = {"name": "greeting", "filename": "common.js",
                    # nobody's: an admin's "sign out everywhere" answers 404 and leaves the shared sessions be
                    "user_id": 999_999,
                    # nobody's security key: removing it answers 404 and removes nothing
                    "key_id": 999_999,
                    # a question of the public self-referral form
                    "step": "need"}
#: Where a static file is named, the one to ask for.
STATIC_FILES = {"static": "hold-music.wav", "console.static": "common.js", "public.static": "public.css"}
#: Valid bodies for the object-level checks, so that a refusal comes from the object rule, not validation.
VALID_BODIES: dict[str, Any] = {
    "api.hold": {"hold": True},
    "api.consult": {"supervisor_id": 1},
    "api.wrap_up": {"outcome": "advice_given"},
    "api.put_call_contact": {"notes": "written by someone else"},
    "api.post_risk": {"thoughts_of_suicide_or_self_harm": False, "plan_or_means": False, "immediate_danger": False,
                      "intoxicated_now": False, "recent_self_harm": False, "protective_factors": True},
    "api.reschedule_booking": {"slot_id": "no-such-slot"},
    "api.send_signposts": {"services": ["samaritans"], "consent": True},
    "api.email_reply": {"body": "Thank you for getting in touch."},
}
#: Scopes that say "theirs only": another person's object must be refused.
OWN_SCOPES = {permissions.OWN_CALL, permissions.OFFERED, permissions.OFFERED_OR_WAITING, permissions.OWN_CONTACT,
              permissions.OWN_PATIENTS, permissions.OWN_BOOKING}


def routes(app: Flask) -> list[tuple[str, str, str]]:
    """(endpoint, method, rule) for every route of the app, HEAD and OPTIONS aside (Flask adds them)."""
    return sorted((rule.endpoint, method, rule.rule) for rule in app.url_map.iter_rules()
                  for method in (rule.methods or set()) - {"HEAD", "OPTIONS"})


def url(endpoint: str, rule: str, ids: dict[str, int]) -> str:
    """The rule with its parameters filled in from `ids` (an object's id) or FIXED_PARAMETERS."""
    def fill(match: re.Match[str]) -> str:
        name = match.group(2)
        if name == "filename":
            return STATIC_FILES[endpoint]
        return str(ids[name] if name in ids else FIXED_PARAMETERS[name])

    return re.sub(r"<(?:(\w+):)?(\w+)>", fill, rule)


def send(client: FlaskClient, token: str, method: str, path: str, body: Any = None, **headers: str):  # type: ignore[no-untyped-def]
    """One request as the console's JavaScript sends it: JSON body, CSRF header, the access reason."""
    headers = {"X-CSRFToken": token, permissions.REASON_HEADER: REASON, **headers}
    response = client.open(path, method=method, json=body if body is not None else ({} if method != "GET" else None),
                           headers=headers)
    # Read and close it: a streamed answer (the CSV) holds its request context open until closed,
    # and the next request would run inside it.
    response.get_data()
    response.close()
    return response


def refused_as_expected(principal: str, path: str, response: Any) -> bool:
    """401 (or a redirect to log in, for a page) for nobody; 403 for a role the route is not for."""
    if principal == permissions.ANONYMOUS:
        if path.startswith("/api/"):
            return response.status_code == 401
        return response.status_code == 302 and "/login" in response.headers.get("Location", "")
    return response.status_code == 403


# -- the matrix covers the app -------------------------------------------------------------------------

def test_every_route_is_in_the_matrix_and_the_matrix_has_no_stale_routes(app: Flask) -> None:
    present = {(endpoint, method) for endpoint, method, _ in routes(app)}
    missing = sorted(present - set(permissions.ROUTES))
    assert not missing, f"routes with no line in helpline/permissions.py ROUTES: {missing}"
    stale = sorted(set(permissions.ROUTES) - present)
    assert not stale, f"ROUTES lines for routes that no longer exist: {stale}"
    for access in permissions.ROUTES.values():
        assert set(access) <= set(permissions.PRINCIPALS)


def test_every_socket_event_is_in_the_matrix() -> None:
    handled = {name[3:] for name in dir(realtime.ConsoleNamespace) if name.startswith("on_") and name != "on_event"}
    handled |= set(socketio.server.handlers.get(NAMESPACE, {}) if isinstance(socketio.server.handlers, dict) else ())
    assert handled == set(permissions.SOCKET_EVENTS), "client events and SOCKET_EVENTS differ"
    # What the server sends: every emit(...), emit_local(...) and _to_handler(...) in the code names its event literally.
    sent = set()
    for source in (ROOT / "helpline").rglob("*.py"):
        sent |= set(re.findall(r"""(?:\bemit|\bemit_local|_to_handler)\(\s*["'](\w+)["']""", source.read_text()))
    assert sent == set(permissions.SOCKET_EMITS), "server events and SOCKET_EMITS differ"


def test_a_route_left_out_of_the_matrix_is_refused_to_everyone(app: Flask, world: World, monkeypatch) -> None:
    monkeypatch.delitem(permissions.ROUTES, ("api.list_localities", "GET"))
    for principal in (*permissions.ROLES, permissions.ANONYMOUS):
        client, token = world.client_for(principal)
        response = send(client, token, "GET", "/api/localities")
        assert response.status_code == 403 and response.get_json()["detail"] == "this route is not in the role matrix"


def test_openapi_x_roles_come_from_the_matrix(app: Flask, world: World) -> None:
    document = world.consoles["admin"].get("/api/openapi.json").get_json()
    assert document["paths"]["/api/contacts/{contact_id}"]["get"]["x-roles"] == ["handler", "supervisor", "clinician"]
    assert document["paths"]["/api/audit"]["get"]["x-roles"] == ["admin"]


# -- every route as every principal ------------------------------------------------------------------

def test_every_route_answers_every_principal_as_the_matrix_says(world: World) -> None:
    twilio = Twilio(world.app.test_client())
    wrong: list[str] = []
    # Reads first and DELETEs last: cancelling the booking would end the clinician's right to the record.
    for endpoint, method, rule in sorted(routes(world.app), key=lambda route: (route[1] == "DELETE", route[1] != "GET")):
        access = permissions.ROUTES[(endpoint, method)]
        path = url(endpoint, rule, world.own)
        if permissions.TWILIO in access:
            # Webhooks: no console user, nor nobody, gets past the signature check; Twilio does.
            for principal in (*permissions.ROLES, permissions.ANONYMOUS):
                client, token = world.client_for(principal)
                status = send(client, token, method, path).status_code
                if status != 403:
                    wrong.append(f"{method} {path} unsigned as {principal}: {status}, expected 403")
            status = twilio.post(path, {"CallSid": "CA" + "0" * 32, "AccountSid": "AC" + "1" * 32}).status_code
            if status in (401, 403):
                wrong.append(f"{method} {path} signed by Twilio: {status}")
            continue
        if permissions.DISPLAY in access:
            # Display-only screens: no console user, nor nobody, gets past the token check; a screen does.
            for principal in (*permissions.ROLES, permissions.ANONYMOUS):
                client, token = world.client_for(principal)
                status = send(client, token, method, path).status_code
                if status != 401:
                    wrong.append(f"{method} {path} without a display token as {principal}: {status}, expected 401")
            status = send(world.anonymous, world.anonymous_token, method, path,
                          Authorization=f"Bearer {world.display_token}").status_code
            if status != 200:
                wrong.append(f"{method} {path} with a display token: {status}")
            continue
        for principal in (*permissions.ROLES, permissions.ANONYMOUS):
            if endpoint in ("auth.logout", "auth.login") and method == "POST":
                client, token = fresh(world, principal)  # logging in or out would end the shared session
            else:
                client, token = world.client_for(principal)
            body = {"username": "nobody-at-all", "password": "x" * 12} if endpoint == "auth.login" else None
            if endpoint == "auth.login" and method == "POST":
                response = client.post(path, data={**body, "csrf_token": token})  # type: ignore[dict-item]
                allowed_status = response.status_code in (200, 302, 401)  # 401 here is "wrong password", not a refusal
                if not allowed_status:
                    wrong.append(f"POST /login as {principal}: {response.status_code}")
                continue
            response = send(client, token, method, path, body)
            if principal in access:
                if response.status_code in (401, 403):
                    wrong.append(f"{method} {path} as {principal}: {response.status_code} {response.get_data(as_text=True)[:120]}, expected allowed")
            elif not refused_as_expected(principal, path, response):
                wrong.append(f"{method} {path} as {principal}: {response.status_code}, expected refused")
    assert not wrong, "\n".join(wrong)


def fresh(world: World, principal: str) -> tuple[FlaskClient, str]:
    """A client of its own for `principal` (a new user of that role), for log-in and log-out."""
    if principal == permissions.ANONYMOUS:
        client = world.app.test_client()
        return client, csrf_from(client.get("/login").get_data(as_text=True))
    console = log_in(world.app, principal)
    return console.client, console.token


def test_someone_elses_objects_are_refused_on_every_route(world: World) -> None:
    """Each object-level rule ("own call", "own patients", ...) refuses another person's object, and
    the refusal carries none of its data."""
    wrong: list[str] = []
    checked = 0
    for endpoint, method, rule in routes(world.app):
        if "<" not in rule:
            continue
        access = permissions.ROUTES[(endpoint, method)]
        for role, scope in access.items():
            if scope not in OWN_SCOPES:
                continue
            client, token = world.client_for(role)
            path = url(endpoint, rule, world.other)
            response = send(client, token, method, path, VALID_BODIES.get(endpoint))
            text = response.get_data(as_text=True)
            checked += 1
            # A read must say 403; an action on a call that is not yours may also say 409 (not your call).
            expected = (403,) if method == "GET" else (403, 409)
            if response.status_code not in expected or any(secret in text for secret in SECRETS):
                wrong.append(f"{method} {path} as {role} ({scope}): {response.status_code} {text[:120]}")
    assert checked >= 12
    assert not wrong, "\n".join(wrong)


def test_creating_a_booking_for_someone_elses_call_is_refused(world: World) -> None:
    handler = world.consoles["handler"]
    response = handler.post("/api/bookings", {"call_id": world.other["call_id"], "slot_id": "anything"})
    assert response.status_code == 403


# -- the records: who reads a person's details ---------------------------------------------------------

def test_a_clinician_sees_their_own_patient_and_not_another_clinicians(world: World) -> None:
    clinician = world.consoles["clinician"]
    mine = clinician.get(f"/api/contacts/{world.own['contact_id']}")
    assert mine.status_code == 200 and mine.get_json()["fields"]["name"] == "Caller Own"
    theirs = clinician.get(f"/api/contacts/{world.other['contact_id']}")
    assert theirs.status_code == 403 and "Caller Other" not in theirs.get_data(as_text=True)


def test_a_handler_sees_the_contact_they_are_working_on_only(world: World) -> None:
    handler = world.consoles["handler"]
    assert handler.get(f"/api/contacts/{world.own['contact_id']}").status_code == 200
    for path in (f"/api/contacts/{world.other['contact_id']}", f"/api/calls/{world.other['call_id']}/contact"):
        response = handler.get(path)
        assert response.status_code == 403 and "Caller Other" not in response.get_data(as_text=True)


def test_a_supervisor_needs_a_recorded_reason_to_see_a_person(world: World) -> None:
    supervisor = world.consoles["supervisor"]
    path = f"/api/contacts/{world.other['contact_id']}"
    for attempt in (supervisor.get(path), supervisor.get(path + "?reason=because"), supervisor.get("/api/contacts/999999")):
        assert attempt.status_code == 403 and attempt.get_json()["error"] == "reason_required"
        assert "Caller Other" not in attempt.get_data(as_text=True)
    with world.app.app_context():
        assert not db.session.scalars(select(AuditEntry).where(AuditEntry.action == permissions.READ_WITH_REASON)).all()

    by_query = supervisor.get(path + "?reason=" + REASON.replace(" ", "+"))
    assert by_query.status_code == 200 and by_query.get_json()["fields"]["name"] == "Caller Other"
    by_header = supervisor.get(path, headers={permissions.REASON_HEADER: "Complaint investigation ref 42"})
    assert by_header.status_code == 200
    with world.app.app_context():
        entries = db.session.scalars(select(AuditEntry).where(AuditEntry.action == permissions.READ_WITH_REASON)
                                     .order_by(AuditEntry.seq)).all()
        assert [(entry.actor_id, entry.actor_role, entry.object_type, entry.object_id, entry.reason) for entry in entries] == [
            (supervisor.user_id, "supervisor", "contact", str(world.other["contact_id"]), REASON),
            (supervisor.user_id, "supervisor", "contact", str(world.other["contact_id"]), "Complaint investigation ref 42"),
        ]


def test_a_reason_with_control_characters_or_too_long_is_refused(world: World) -> None:
    supervisor = world.consoles["supervisor"]
    path = f"/api/contacts/{world.other['contact_id']}"
    assert supervisor.get(path + "?reason=" + "x" * 501).status_code == 400
    assert supervisor.get(path + "?reason=ten+characters%00here").status_code == 400


def test_an_admin_never_sees_a_record(world: World) -> None:
    admin = world.consoles["admin"]
    for path in (f"/api/contacts/{world.own['contact_id']}", f"/api/calls/{world.own['call_id']}/contact",
                 f"/api/bookings/{world.own['booking_id']}", "/api/clinician/bookings"):
        response = admin.client.get(path, headers={permissions.REASON_HEADER: REASON})
        assert response.status_code == 403 and "Caller Own" not in response.get_data(as_text=True), path


def test_reads_of_records_are_audited(world: World) -> None:
    world.consoles["clinician"].get(f"/api/contacts/{world.own['contact_id']}")
    with world.app.app_context():
        [entry] = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "contact.read")).all()
        assert (entry.actor_id, entry.object_id) == (world.consoles["clinician"].user_id, str(world.own["contact_id"]))


# -- Socket.IO -----------------------------------------------------------------------------------------

def open_socket(world: World, principal: str):  # type: ignore[no-untyped-def]
    """A Socket.IO client on /console as `principal`."""
    client, _ = world.client_for(principal)
    return socketio.test_client(world.app, namespace=NAMESPACE, flask_test_client=client)


def test_every_socket_event_answers_every_principal_as_the_matrix_says(world: World) -> None:
    for principal in (*permissions.ROLES, permissions.ANONYMOUS):
        socket = open_socket(world, principal)
        allowed = principal in permissions.SOCKET_EVENTS["connect"]
        assert socket.is_connected(NAMESPACE) == allowed, principal
        if not allowed:
            continue
        assert principal in permissions.SOCKET_EVENTS["heartbeat"]
        assert socket.emit("heartbeat", {}, namespace=NAMESPACE, callback=True) == {"ok": True}
        received = {event["name"] for event in socket.get_received(NAMESPACE)}
        assert received <= {name for name, access in permissions.SOCKET_EMITS.items() if principal in access}
        socket.disconnect(NAMESPACE)
        assert not socket.is_connected(NAMESPACE)


def test_an_idle_session_cannot_open_a_socket(world: World, monkeypatch) -> None:
    clock = [security.now()]
    monkeypatch.setattr(security, "now", lambda: clock[0])
    world.consoles["handler"].get("/api/me")  # the session was last used now
    clock[0] += 31 * 60
    assert not open_socket(world, "handler").is_connected(NAMESPACE)


def test_an_idle_socket_is_told_and_closed_and_a_heartbeat_keeps_it(world: World, monkeypatch) -> None:
    clock = [security.now()]
    monkeypatch.setattr(security, "now", lambda: clock[0])
    world.consoles["handler"].get("/api/me")
    world.consoles["supervisor"].get("/api/me")
    on_duty, walked_away = open_socket(world, "handler"), open_socket(world, "supervisor")
    for minutes in (20, 20, 20):
        clock[0] += minutes * 60
        # The on-duty console beats (console.js: /api/me, then heartbeat); the other page is left alone.
        assert world.consoles["handler"].get("/api/me").status_code == 200
        assert on_duty.emit("heartbeat", {}, namespace=NAMESPACE, callback=True) == {"ok": True}
        realtime.expire_idle_sockets(world.app)
    assert on_duty.is_connected(NAMESPACE)
    assert not walked_away.is_connected(NAMESPACE)
    # (get_received refuses once disconnected; what arrived before is still in the client's queue)
    assert "session_expired" in [event["name"] for event in walked_away.queue if event["namespace"] == NAMESPACE]
    # The page then finds its HTTP session over too, and goes to log in with a message.
    assert world.consoles["supervisor"].get("/api/me").status_code == 401
    page = world.consoles["supervisor"].client.get("/login?next=/supervisor&expired=1").get_data(as_text=True)
    assert "Your session has ended" in page


def test_a_late_heartbeat_does_not_revive_an_expired_socket(world: World, monkeypatch) -> None:
    clock = [security.now()]
    monkeypatch.setattr(security, "now", lambda: clock[0])
    socket = open_socket(world, "supervisor")
    clock[0] += 31 * 60
    assert socket.emit("heartbeat", {}, namespace=NAMESPACE, callback=True) == {"ok": False}
    assert not socket.is_connected(NAMESPACE)


def test_the_log_in_page_sends_a_live_session_back_to_its_page(world: World) -> None:
    response = world.consoles["handler"].client.get("/login?next=/console&expired=1")
    assert response.status_code == 302 and response.headers["Location"].endswith("/console")


# -- the README's table ----------------------------------------------------------------------------

def test_the_markdown_table_lists_every_route(app: Flask) -> None:
    with app.app_context():
        table = permissions.markdown()
    for endpoint, method, rule in routes(app):
        access = permissions.ROUTES[(endpoint, method)]
        if permissions.TWILIO in access or permissions.DISPLAY in access:
            assert f"`{rule}`" in table
        else:
            assert f"| {method} | `{rule}` |" in table
    assert "with a recorded reason" in table and "server sends `alert`" in table
    json.dumps(table)  # plain text
