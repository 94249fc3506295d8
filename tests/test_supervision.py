"""Supervisor actions on the live queue (move up, offer to a named handler, set presence, listen and
coach through Twilio's conference participants), each on the call's timeline and in the audit log;
and the `wallboard` event pushed to supervisors as the queue changes."""

from __future__ import annotations

from sqlalchemy import select, update

from helpline.db import db
from helpline.models import AuditEntry, QueueEntry, utcnow
from helpline.realtime import NAMESPACE

from . import routing_factories
from .conftest import Twilio
from .test_console_api import Console, presence_of, queued_call, service, state, timeline
from .test_realtime import connect, received
from .twilio_recorder import Recorder, twilio_api  # noqa: F401 - fixture


def audited(app, action: str) -> list[AuditEntry]:  # type: ignore[no-untyped-def]
    with app.app_context():
        rows = list(db.session.scalars(select(AuditEntry).where(AuditEntry.action == action)))
        db.session.expunge_all()
        return rows


def test_moving_a_call_to_the_front(app):
    sue = Console(app, "sue", "supervisor")
    _first, first_id = queued_call(app, "+447911000001")
    _second, second_id = queued_call(app, "+447911000002")
    assert [call["id"] for call in sue.get("/api/queue").get_json()["calls"]] == [first_id, second_id]
    response = sue.post(f"/api/calls/{second_id}/move-up")
    assert response.status_code == 200 and response.get_json() == {"call_id": second_id, "position": 1}
    assert [call["id"] for call in sue.get("/api/queue").get_json()["calls"]] == [second_id, first_id]
    [(kind, detail)] = [event for event in timeline(app, second_id) if event[0] == "supervisor_moved_up"]
    assert detail["from_position"] == 2 and detail["to_position"] == 1
    [entry] = audited(app, "supervision.move_up")
    assert entry.object_id == str(second_id) and entry.actor_role == "supervisor"
    assert sue.post("/api/calls/999999/move-up").status_code == 404


def test_offering_a_call_to_a_named_handler(app):
    sue = Console(app, "sue", "supervisor")
    ann = Console(app, "ann")
    _walker, call_id = queued_call(app)
    # Not available, then available but with no console open: refused, and nothing changes.
    response = sue.post(f"/api/calls/{call_id}/offer", {"handler_id": ann.handler_id})
    assert response.status_code == 409 and response.get_json()["error"] == "handler_not_available"
    assert ann.post("/api/me/status", {"status": "available"}).status_code == 200
    response = sue.post(f"/api/calls/{call_id}/offer", {"handler_id": ann.handler_id})
    assert response.status_code == 409 and response.get_json()["error"] == "handler_not_connected"
    # With the console open, routing offers the waiting call to ann by itself; she declines it, and
    # the supervisor asks her again (a supervisor may overrule a decline).
    socket = connect(app, ann)
    assert received(socket, "offer")[0]["call_id"] == call_id
    assert ann.post(f"/api/calls/{call_id}/decline").status_code == 200
    response = sue.post(f"/api/calls/{call_id}/offer", {"handler_id": ann.handler_id})
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["handler_id"] == ann.handler_id
    assert received(socket, "offer")[-1]["call_id"] == call_id
    entry, _call = state(app, call_id)
    assert entry.state == "offered" and entry.handler_id == ann.handler_id
    assert ("supervisor_offered", {"supervisor_id": sue_id(app), "handler_id": ann.handler_id}) in timeline(app, call_id)
    assert len(audited(app, "supervision.offer")) == 1
    socket.disconnect(NAMESPACE)


def sue_id(app) -> int:  # type: ignore[no-untyped-def]
    from helpline.models import User

    with app.app_context():
        return db.session.scalar(select(User.id).where(User.username == "sue"))


def test_setting_a_handlers_presence(app):
    sue = Console(app, "sue", "supervisor")
    ann = Console(app, "ann")
    response = sue.post(f"/api/handlers/{ann.handler_id}/presence", {"status": "break"})
    assert response.status_code == 200 and response.get_json()["presence"] == "break"
    assert presence_of(app, ann.handler_id) == "break"
    assert sue.post(f"/api/handlers/{ann.handler_id}/presence", {"status": "on_call"}).status_code == 400
    assert sue.post("/api/handlers/999999/presence", {"status": "break"}).status_code == 404
    [entry] = audited(app, "supervision.presence")
    assert entry.object_type == "handler" and entry.object_id == str(ann.handler_id)
    # Handlers cannot use the supervisors' actions.
    assert ann.post(f"/api/handlers/{ann.handler_id}/presence", {"status": "available"}).status_code == 403


def test_listening_rings_once_and_coaching_updates_the_same_participant(app_factory, twilio_api: Recorder):
    app = service(app_factory, twilio_api.url)
    sue = Console(app, "sue", "supervisor")
    ann = Console(app, "ann")
    ann.post("/api/me/status", {"status": "available"})
    _walker, call_id = queued_call(app)
    assert sue.post(f"/api/calls/{call_id}/listen", {"mode": "listen"}).get_json()["error"] == "not_connected"
    assert ann.post(f"/api/calls/{call_id}/accept").status_code == 200
    handler_leg = state(app, call_id)[0].handler_leg_sid
    conference_sid = "CF" + "5" * 32
    with app.app_context():  # as the conference's first status callback leaves it
        db.session.execute(update(QueueEntry).where(QueueEntry.call_id == call_id).values(conference_sid=conference_sid))
        db.session.commit()
    response = sue.post(f"/api/calls/{call_id}/listen", {"mode": "listen"})
    assert response.status_code == 200, response.get_json()
    me = sue_id(app)
    listening = response.get_json()
    assert listening["identity"] == f"supervisor-{me}" and listening["rang"] is True
    response = sue.post(f"/api/calls/{call_id}/listen", {"mode": "coach"})
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["rang"] is False and response.get_json()["leg_sid"] == listening["leg_sid"]
    [ring] = twilio_api.find(f"/Conferences/call-{call_id}/Participants.json")[1:]
    assert ring.value("To") == f"client:supervisor-{me}" and ring.value("Muted") == "true"
    assert ring.value("Label") == f"supervisor-{me}" and ring.value("Coaching") is None
    assert ring.value("EndConferenceOnExit") == "false" and ring.value("StartConferenceOnEnter") == "false"
    assert ring.value("StatusCallback").endswith(f"/voice/supervise/{call_id}?supervisor={me}")
    [coach] = twilio_api.find(f"/Conferences/{conference_sid}/Participants/{listening['leg_sid']}.json")
    assert coach.value("Coaching") == "true" and coach.value("CallSidToCoach") == handler_leg
    assert coach.value("Muted") == "false"
    kinds = [kind for kind, _ in timeline(app, call_id)]
    assert kinds.count("supervisor_ringing") == 1
    assert kinds.count("supervisor_listen") == 1 and kinds.count("supervisor_coach") == 1
    assert len(audited(app, "supervision.coach")) == 1
    assert sue.get(f"/api/calls/{call_id}/listen").get_json()["mode"] == "coach"
    # The same mode again changes nothing at all on the timeline.
    assert sue.post(f"/api/calls/{call_id}/listen", {"mode": "coach"}).status_code == 200
    assert [kind for kind, _ in timeline(app, call_id)].count("supervisor_coach") == 1
    assert sue.post(f"/api/calls/{call_id}/listen", {"mode": "shout"}).status_code == 400


def test_a_supervisor_leg_that_is_never_answered_is_forgotten(app_factory, twilio_api: Recorder):
    app = service(app_factory, twilio_api.url)
    sue = Console(app, "sue", "supervisor")
    ann = Console(app, "ann")
    ann.post("/api/me/status", {"status": "available"})
    _walker, call_id = queued_call(app)
    assert ann.post(f"/api/calls/{call_id}/accept").status_code == 200
    leg = sue.post(f"/api/calls/{call_id}/listen", {"mode": "listen"}).get_json()["leg_sid"]
    me = sue_id(app)
    path = f"/voice/supervise/{call_id}?supervisor={me}"
    for _twice in range(2):  # Twilio retries: one line on the timeline
        assert Twilio(app.test_client()).post(path, {"CallSid": leg, "CallStatus": "no-answer"}).status_code == 204
    assert [kind for kind, _ in timeline(app, call_id)].count("supervisor_left") == 1
    assert sue.get(f"/api/calls/{call_id}/listen").get_json()["mode"] is None
    # So the next Listen rings again rather than updating a participant that is not there.
    response = sue.post(f"/api/calls/{call_id}/listen", {"mode": "barge"})
    assert response.status_code == 200 and response.get_json()["rang"] is True
    assert len(twilio_api.find(f"/Conferences/call-{call_id}/Participants.json")) == 3
    # Unsigned, the callback is refused and changes nothing.
    assert app.test_client().post(path, data={"CallSid": leg, "CallStatus": "completed"}).status_code == 403
    assert sue.get(f"/api/calls/{call_id}/listen").get_json()["mode"] == "barge"


def test_listening_needs_twilio(app_factory):
    app = app_factory(twilio={"account_sid": None, "auth_token": None})
    sue = Console(app, "sue", "supervisor")
    with app.app_context():
        call_id = routing_factories.waiting(db.session, utcnow()).call_id
        db.session.commit()
    response = sue.post(f"/api/calls/{call_id}/listen", {"mode": "listen"})
    assert response.status_code == 409 and response.get_json()["error"] == "twilio_not_configured"


def test_the_wallboard_is_pushed_to_supervisors_as_the_queue_changes(app):
    sue = Console(app, "sue", "supervisor")
    ann = Console(app, "ann")
    supervisor_socket = connect(app, sue)
    handler_socket = connect(app, ann)
    received(supervisor_socket, "wallboard")
    _walker, call_id = queued_call(app)
    boards = received(supervisor_socket, "wallboard")
    assert boards and boards[-1]["waiting"] == 1 and boards[-1]["today"]["reached_queue"] == 1
    assert received(handler_socket, "wallboard") == []  # figures are for supervisors only
    ann.post("/api/me/status", {"status": "available"})
    boards = received(supervisor_socket, "wallboard")
    assert boards[-1]["handlers"]["offered"] == 1  # routing offered ann the call at once
    assert sue.get("/api/supervisor/wallboard").get_json()["waiting"] == 1
    assert ann.get("/api/supervisor/wallboard").status_code == 403
    with app.app_context():
        assert db.session.scalar(select(QueueEntry.state).where(QueueEntry.call_id == call_id)) == "offered"
    supervisor_socket.disconnect(NAMESPACE)
    handler_socket.disconnect(NAMESPACE)


def test_supervisor_routes_are_described_in_openapi(client):
    paths = client.get("/api/openapi.json").get_json()["paths"]
    for path, method in (("/api/calls/{call_id}/move-up", "post"), ("/api/calls/{call_id}/offer", "post"),
                         ("/api/handlers/{handler_id}/presence", "post"), ("/api/calls/{call_id}/listen", "post"),
                         ("/api/calls", "get"), ("/api/calls/{call_id}", "get"), ("/api/supervisor/wallboard", "get"),
                         ("/api/reports/summary", "get"), ("/api/reports/calls.csv", "get")):
        operation = paths[path][method]
        assert operation["x-roles"] == ["supervisor"], path


def test_the_supervisor_page_has_its_own_softphone(app):
    sue = Console(app, "sue", "supervisor")
    page = sue.client.get("/supervisor").get_data(as_text=True)
    # The vendored SDK first, then the page's module (which loads the softphone module itself).
    sdk = page.index('src="/console/static/vendor/twilio.min.js"')
    assert sdk < page.index('type="module" src="/console/static/supervisor.js"')
    assert 'id="softphone-status"' in page and 'role="status"' in page
    assert 'id="supervise-mode"' in page and 'id="supervise-stop"' in page
    response = sue.client.get("/console/static/supervisor.js")
    script = response.get_data(as_text=True)
    response.close()
    assert 'import("./softphone.js")' in script and "aria-pressed" in script
