"""The console's JSON API for handlers: presence, the queue, accepting (over Twilio's REST API),
declining, hold, wrap-up, the IVR answers, softphone tokens, and the OpenAPI description."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import socket
import threading
import time
import xml.etree.ElementTree as ET
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from helpline.db import db
from helpline.models import Call, CallEvent, Handler, QueueEntry, User
from helpline.users import create_user

from .conftest import ACCOUNT_SID, Twilio, assert_statements, new_call_sid, round_trips, shows_number, statements_sent
from .test_auth import csrf_from
from .twilio_recorder import Recorder, twilio_api  # noqa: F401 - fixture
from .walker import CallWalker

PASSWORD = "a long password"
HELPLINE_NUMBER = "+443000000000"


def closed_port_url() -> str:
    """A local URL where nothing listens: every request to it fails to connect."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def service(app_factory: Any, api_base_url: str) -> Flask:
    """The service, talking to Twilio at `api_base_url`."""
    return app_factory(twilio={"account_sid": ACCOUNT_SID, "auth_token": "test-auth-token-" + "0" * 16,
                               "api_base_url": api_base_url, "phone_number": HELPLINE_NUMBER})


class Console:
    """A logged-in console user, sending the CSRF token as the console's JavaScript does."""

    def __init__(self, app: Flask, username: str, role: str = "handler", skills: list[str] | None = None):
        with app.app_context():
            create_user(db.session, username, role, PASSWORD, skills=skills)
            db.session.commit()
        self.client: FlaskClient = app.test_client()
        self.token = csrf_from(self.client.get("/login").get_data(as_text=True))
        response = self.client.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": self.token})
        assert response.status_code == 302
        # A log-in starts a new session with a new CSRF token: the console's pages carry it.
        self.token = re.search(r'<meta name="csrf-token" content="([^"]+)"', self.client.get("/account").get_data(as_text=True)).group(1)  # type: ignore[union-attr]
        self.app = app
        self.username = username

    @property
    def handler_id(self) -> int:
        with self.app.app_context():
            return db.session.scalar(select(Handler.id).join(Handler.user).where(User.username == self.username))

    def get(self, path: str):  # type: ignore[no-untyped-def]
        return self.client.get(path)

    def post(self, path: str, payload: dict[str, Any] | None = None):  # type: ignore[no-untyped-def]
        return self.client.post(path, json=payload if payload is not None else {}, headers={"X-CSRFToken": self.token})


def queued_call(app: Flask, caller: str = "+447911123456") -> tuple[CallWalker, int]:
    """A caller who has gone through the IVR into the queue; returns the walker and the call's id."""
    walker = CallWalker(Twilio(app.test_client()), caller=caller)
    walker.start()
    walker.press("1")
    walker.press("1")
    walker.press("1")
    assert walker.enqueue() is not None
    with app.app_context():
        call_id = db.session.scalar(select(Call.id).where(Call.call_sid == walker.sid))
    return walker, call_id


def state(app: Flask, call_id: int) -> tuple[QueueEntry, Call]:
    with app.app_context():
        entry = db.session.scalar(select(QueueEntry).where(QueueEntry.call_id == call_id))
        call = db.session.get(Call, call_id)
        db.session.expunge_all()
        return entry, call


def timeline(app: Flask, call_id: int) -> list[tuple[str, dict[str, Any]]]:
    with app.app_context():
        return [(event.kind, event.detail) for event in db.session.scalars(
            select(CallEvent).where(CallEvent.call_id == call_id).order_by(CallEvent.id))]


def presence_of(app: Flask, handler_id: int) -> str:
    with app.app_context():
        return db.session.get(Handler, handler_id).presence


def test_the_queue_needs_a_handler_or_supervisor(app, client):
    assert client.get("/api/queue").status_code == 401
    clinician = Console(app, "doc", "clinician")
    response = clinician.get("/api/queue")
    assert response.status_code == 403 and response.get_json()["error"] == "forbidden"


def test_the_queue_lists_calls_and_handlers_without_personal_data(app):
    ann = Console(app, "ann")
    supervisor = Console(app, "sue", "supervisor")
    queued_call(app, caller="+447911123456")
    body = supervisor.get("/api/queue").get_json()
    assert set(body) == {"calls", "handlers"}
    [call] = body["calls"]
    assert set(call) == {"id", "position", "waiting_s", "need", "flags", "channel"}
    assert call["position"] == 1 and call["need"] == "mental_health" and call["flags"] == []
    [handler] = body["handlers"]
    assert handler["id"] == ann.handler_id and handler["name"] == "ann" and handler["presence"] == "offline"
    assert set(handler) == {"id", "name", "presence", "since", "skills"}
    assert not shows_number(json.dumps(body))


def test_status_changes_need_the_csrf_token_and_a_known_status(app):
    ann = Console(app, "ann")
    response = ann.client.post("/api/me/status", json={"status": "available"})
    assert response.status_code == 400 and response.get_json()["error"] == "csrf_failed"
    response = ann.post("/api/me/status", {"status": "dancing"})
    assert response.status_code == 400 and response.get_json()["error"] == "invalid"
    response = ann.post("/api/me/status", {"status": "available"})
    assert response.status_code == 200 and response.get_json()["presence"] == "available"
    me = ann.get("/api/me").get_json()
    assert me["presence"] == "available" and me["role"] == "handler" and me["softphone"] == f"handler-{ann.handler_id}"
    assert me["offer"] is None and me["call_id"] is None
    supervisor = Console(app, "sue", "supervisor")
    assert supervisor.get("/api/me").get_json()["handler_id"] is None
    assert supervisor.post("/api/me/status", {"status": "available"}).status_code == 403


def test_accepting_connects_the_caller_to_the_handler_through_twilio(app_factory, twilio_api: Recorder):
    app = service(app_factory, twilio_api.url)
    ann = Console(app, "ann")
    ann.post("/api/me/status", {"status": "available"})
    walker, call_id = queued_call(app)
    response = ann.post(f"/api/calls/{call_id}/accept")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["call_id"] == call_id and body["conference"] == f"call-{call_id}" and body["kind"] == "live"
    assert body["ivr"]["need"] == "mental_health" and body["ivr"]["answers"]["about"] == "self"
    assert not shows_number(json.dumps(body))

    [ring] = twilio_api.find(f"/Conferences/call-{call_id}/Participants.json")
    assert ring.value("To") == f"client:handler-{ann.handler_id}" and ring.value("From") == HELPLINE_NUMBER
    # The handler's leg dropping must not end the call; the caller leaving does.
    assert ring.value("EndConferenceOnExit") == "false"
    [redirect] = twilio_api.find(f"/Calls/{walker.sid}.json")
    assert redirect.value("Url") == f"https://helpline.test/voice/connect/{call_id}"
    # The handler's leg was added before the caller was moved: nobody waits in an empty room.
    assert twilio_api.requests.index(ring) < twilio_api.requests.index(redirect)

    entry, call = state(app, call_id)
    assert entry.state == "answered" and entry.handler_id == ann.handler_id and entry.position_at_exit == 1
    assert call.outcome == "answered" and call.dequeued_at is not None
    assert presence_of(app, ann.handler_id) == "on_call"
    kinds = [kind for kind, _ in timeline(app, call_id)]
    assert kinds.index("accepted") < kinds.index("answered")
    assert ("answered", {"handler_id": ann.handler_id}) in timeline(app, call_id)

    # Twilio fetches the redirect: the caller joins the conference.
    document = walker.request(f"/voice/connect/{call_id}")
    conference = document.find("./Dial/Conference")
    assert conference is not None and conference.text == f"call-{call_id}"
    assert conference.get("endConferenceOnExit") == "true"

    # Only the handler on the call sees what the caller said.
    assert ann.get(f"/api/calls/{call_id}/ivr").get_json()["answers"]["eligible"] == "yes"
    bob = Console(app, "bob")
    assert bob.get(f"/api/calls/{call_id}/ivr").status_code == 403

    # Hold uses the conference's SID, which its status callback brings.
    signer = Twilio(app.test_client())
    signer.post(f"/voice/connect/{call_id}/conference", {"StatusCallbackEvent": "participant-join",
                                                         "ConferenceSid": "CF" + "a" * 32, "CallSid": walker.sid})
    assert ann.post(f"/api/calls/{call_id}/hold", {"hold": True}).status_code == 200
    [hold] = twilio_api.find(f"/Conferences/CF{'a' * 32}/Participants/{walker.sid}.json")
    assert hold.value("Hold") == "true"

    # The caller hangs up: wrap-up starts; the outcome ends it.
    signer.post("/voice/status", {"CallSid": walker.sid, "CallStatus": "completed", "SequenceNumber": "9"})
    assert presence_of(app, ann.handler_id) == "wrap_up"
    assert ann.get("/api/me").get_json()["call_id"] == call_id
    response = ann.post(f"/api/calls/{call_id}/wrap-up", {"outcome": "signposted"})
    assert response.status_code == 200 and response.get_json()["presence"] == "available"
    assert ("wrap_up", {"handler_id": ann.handler_id, "outcome": "signposted"}) in timeline(app, call_id)
    assert ann.post(f"/api/calls/{call_id}/wrap-up", {"outcome": "signposted"}).status_code == 409


def test_accepting_reads_nothing_twice(app_factory, twilio_api: Recorder, database_url, monkeypatch):
    """The claim's UPDATEs return the rows they change, the call read at the start stays in the
    session, and counting the caller's place (on the driver, db.read_rows, unseen here) does not
    flush the legs early: a flush would show here as UPDATEs before the commit."""
    from helpline import router

    app = service(app_factory, twilio_api.url)
    ann = Console(app, "ann")
    ann.post("/api/me/status", {"status": "available"})
    _walker, call_id = queued_call(app)
    monkeypatch.setattr(router, "route_now", lambda _app: None)  # routing passes are counted elsewhere
    with app.app_context():
        engine = db.engine
    with statements_sent(engine, transaction_control=False) as sent:
        assert ann.post(f"/api/calls/{call_id}/accept").status_code == 200
    # The timeline lines and the changes of the last commit are written by its commit
    # (ServiceSession.commit), where SQLAlchemy does not see them.
    # On PostgreSQL the call's entry is locked before the handler, as every move of a call locks them.
    entries_first = ["SELECT queue_entries.id FROM"] if database_url.startswith("postgresql") else []
    assert_statements([one.head(3) for one in sent], [
        "SELECT staff_sessions.id, staff_sessions.token_hash,",  # the session is still open (staff_sessions.py)
        "SELECT users.id, users.username,", "SELECT handlers.id, handlers.user_id,",  # who is asking
        "SELECT calls.id, calls.call_sid,", *entries_first, "SELECT handlers.id, handlers.user_id,",  # the call; lock the handler
        "UPDATE queue_entries SET", "UPDATE handlers SET",  # the claim (its line), committed
        "SELECT queue_entries.id, queue_entries.call_id,", "SELECT calls.id, calls.call_sid,",  # after Twilio
    ], database_url)


def test_conference_events_say_whose_leg_and_keep_the_first_conference_sid(app_factory, twilio_api: Recorder, database_url,
                                                                           tmp_path):
    """All but the conference's end only add to the timeline (and the first remembers its SID): on
    PostgreSQL one statement each, sent with its BEGIN and COMMIT in one round trip. The end starts
    the handler's wrap-up."""
    app = service(app_factory, twilio_api.url)
    ann = Console(app, "ann")
    ann.post("/api/me/status", {"status": "available"})
    walker, call_id = queued_call(app)
    assert ann.post(f"/api/calls/{call_id}/accept").status_code == 200
    handler_leg = state(app, call_id)[0].handler_leg_sid
    assert handler_leg and handler_leg != walker.sid
    signer = Twilio(app.test_client())
    first, second = "CF" + "a" * 32, "CF" + "b" * 32

    def conference(event_name: str, **params: str) -> None:
        response = signer.post(f"/voice/connect/{call_id}/conference", {"StatusCallbackEvent": event_name, **params})
        assert response.status_code == 204

    with app.app_context():
        engine = db.engine
    postgresql = database_url.startswith("postgresql")
    with contextlib.ExitStack() as stack:
        sent = stack.enter_context(statements_sent(engine))
        wire = stack.enter_context(round_trips(engine, tmp_path)) if postgresql else None
        conference("conference-start", ConferenceSid=first)
        conference("participant-join", ConferenceSid=first, CallSid=handler_leg)
        conference("participant-join", ConferenceSid=second, CallSid=walker.sid)
        if wire is not None:
            assert wire() == 3
    if postgresql:
        assert sent == []  # sent by the commit itself, not statement by statement
    assert state(app, call_id)[0].conference_sid == first
    logged = [(kind, detail) for kind, detail in timeline(app, call_id) if kind.startswith("conference_")]
    assert logged == [("conference_start", {}), ("conference_join", {"leg": "handler"}), ("conference_join", {"leg": "caller"})]

    conference("participant-leave", ConferenceSid=first, CallSid=walker.sid)
    conference("conference-end", ConferenceSid=first)
    assert presence_of(app, ann.handler_id) == "wrap_up"
    assert [kind for kind, _ in timeline(app, call_id)][-3:] == ["conference_leave", "conference_end", "wrap_up_started"]

    # A call with no queue entry: nothing to log, and no error.
    _other, unqueued = queued_call(app, caller="+447911000009")
    with app.app_context():
        db.session.execute(QueueEntry.__table__.delete().where(QueueEntry.call_id == unqueued))
        db.session.commit()
    before = timeline(app, unqueued)
    assert signer.post(f"/voice/connect/{unqueued}/conference", {"StatusCallbackEvent": "participant-join",
                                                                 "ConferenceSid": first, "CallSid": walker.sid}).status_code == 204
    assert timeline(app, unqueued) == before


def test_when_twilio_fails_the_caller_keeps_their_place_and_the_handler_is_told(app_factory):
    app = service(app_factory, closed_port_url())
    ann = Console(app, "ann")
    ann.post("/api/me/status", {"status": "available"})
    _, first = queued_call(app, caller="+447911000001")
    _, second = queued_call(app, caller="+447911000002")
    before, _ = state(app, second)
    response = ann.post(f"/api/calls/{second}/accept")
    assert response.status_code == 409
    assert response.get_json()["error"] == "connect_failed" and "Twilio" in response.get_json()["detail"]
    after, call = state(app, second)
    assert after.state == "waiting" and after.handler_id is None and after.placed_at == before.placed_at
    assert call.outcome is None
    assert presence_of(app, ann.handler_id) == "available"
    assert [item["id"] for item in ann.get("/api/queue").get_json()["calls"]] == [first, second]
    assert any(kind == "connect_failed" for kind, _ in timeline(app, second))


def test_twilio_refusing_is_a_failure_too(app_factory, twilio_api: Recorder):
    app = service(app_factory, twilio_api.url)
    twilio_api.fail_with = 400
    ann = Console(app, "ann")
    ann.post("/api/me/status", {"status": "available"})
    _, call_id = queued_call(app)
    assert ann.post(f"/api/calls/{call_id}/accept").get_json()["error"] == "connect_failed"
    assert state(app, call_id)[0].state == "waiting"


def test_two_handlers_racing_to_accept_one_call_exactly_one_wins(app_factory, twilio_api: Recorder):
    app = service(app_factory, twilio_api.url)
    racers = [Console(app, name) for name in ("ann", "bob", "cat")]
    for racer in racers:
        racer.post("/api/me/status", {"status": "available"})
    _, call_id = queued_call(app)
    start = threading.Barrier(len(racers))
    statuses: dict[str, int] = {}

    def race(racer: Console) -> None:
        start.wait()
        statuses[racer.username] = racer.post(f"/api/calls/{call_id}/accept").status_code

    threads = [threading.Thread(target=race, args=(racer,)) for racer in racers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(statuses.values()) == [200, 409, 409]
    [winner] = [racer for racer in racers if statuses[racer.username] == 200]
    entry, _ = state(app, call_id)
    assert entry.handler_id == winner.handler_id and entry.state == "answered"
    assert len(twilio_api.find("/Participants.json")) == 1
    assert [presence_of(app, racer.handler_id) for racer in racers].count("on_call") == 1


def test_a_handler_not_free_cannot_accept(app_factory, twilio_api: Recorder):
    app = service(app_factory, twilio_api.url)
    ann = Console(app, "ann")
    _, call_id = queued_call(app)
    response = ann.post(f"/api/calls/{call_id}/accept")
    assert response.status_code == 409 and response.get_json()["error"] == "not_free"
    assert ann.post("/api/calls/999999/accept").status_code == 404


def test_accepting_a_callback_rings_the_caller_back(app_factory, twilio_api: Recorder):
    app = service(app_factory, twilio_api.url)
    ann = Console(app, "ann")
    ann.post("/api/me/status", {"status": "available"})
    walker, call_id = queued_call(app, caller="+447911123456")
    with app.app_context():
        entry = db.session.scalar(select(QueueEntry).where(QueueEntry.call_id == call_id))
        entry.kind = "callback"
        db.session.commit()
    assert ann.post(f"/api/calls/{call_id}/accept").status_code == 200
    [ring_back] = [item for item in twilio_api.find("/Calls.json") if item.method == "POST"]
    assert ring_back.value("To") == "+447911123456"
    assert ring_back.value("Url") == f"https://helpline.test/voice/connect/{call_id}"
    assert ring_back.value("StatusCallback") == f"https://helpline.test/voice/connect/{call_id}/caller"
    entry, call = state(app, call_id)
    assert entry.state == "answered" and entry.caller_leg_sid
    # Nobody answers: the callback goes back in line for a later try, and the handler is free.
    Twilio(app.test_client()).post(f"/voice/connect/{call_id}/caller", {"CallSid": entry.caller_leg_sid, "CallStatus": "no-answer"})
    entry, _ = state(app, call_id)
    assert entry.state == "waiting" and entry.attempts == 1 and entry.not_before is not None
    assert presence_of(app, ann.handler_id) == "available"


def test_a_handler_who_never_picks_up_sends_the_caller_back_in_line(app_factory, twilio_api: Recorder):
    app = service(app_factory, twilio_api.url)
    ann = Console(app, "ann")
    ann.post("/api/me/status", {"status": "available"})
    walker, call_id = queued_call(app)
    ann.post(f"/api/calls/{call_id}/accept")
    entry, _ = state(app, call_id)
    Twilio(app.test_client()).post(f"/voice/connect/{call_id}/handler", {"CallSid": entry.handler_leg_sid, "CallStatus": "no-answer"})
    entry, call = state(app, call_id)
    assert entry.state == "waiting" and call.outcome is None and call.dequeued_at is None
    assert presence_of(app, ann.handler_id) == "break"
    back = twilio_api.find(f"/Calls/{walker.sid}.json")[-1]
    assert "/voice/step/queue" in (back.value("Url") or "")
    document = walker.request(back.value("Url") or "")
    assert document.find("Enqueue") is not None


def test_the_connect_webhook_is_signed_and_only_for_the_call_itself(app_factory, twilio_api: Recorder):
    app = service(app_factory, twilio_api.url)
    ann = Console(app, "ann")
    ann.post("/api/me/status", {"status": "available"})
    walker, call_id = queued_call(app)
    ann.post(f"/api/calls/{call_id}/accept")
    signer = Twilio(app.test_client())
    assert signer.post(f"/voice/connect/{call_id}", {"CallSid": walker.sid}, signed=False).status_code == 403
    stranger = signer.post(f"/voice/connect/{call_id}", {"CallSid": new_call_sid()})
    assert ET.fromstring(stranger.data).find("Hangup") is not None


def test_declining_returns_the_call_to_its_place(app):
    ann = Console(app, "ann")
    ann.post("/api/me/status", {"status": "available"})
    _, call_id = queued_call(app)
    response = ann.post(f"/api/calls/{call_id}/decline")
    assert response.status_code == 409 and response.get_json()["error"] == "no_offer"


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_the_softphone_token_is_a_voice_grant_for_the_user_alone(app_factory):
    # Real Twilio: signed with the API key, for the handler's own identity, signalling at Twilio's edge.
    keyed = app_factory(twilio={"account_sid": ACCOUNT_SID, "auth_token": "test-auth-token-" + "0" * 16, "api_key_sid": "SK" + "2" * 32, "api_key_secret": "s" * 32, "twiml_app_sid": "AP" + "3" * 32, "token_ttl_s": 600})
    bob = Console(keyed, "bob")
    response = bob.get("/api/voice/token")
    body = response.get_json()
    assert response.headers["Cache-Control"] == "no-store"
    assert body["mode"] == "twilio" and body["identity"] == f"handler-{bob.handler_id}" and body["ttl_s"] == 600
    assert "signalling" not in body
    claims = _claims(body["token"])
    assert claims["grants"]["identity"] == f"handler-{bob.handler_id}"
    assert claims["grants"]["voice"]["incoming"] == {"allow": True}
    assert claims["grants"]["voice"]["outgoing"]["application_sid"] == "AP" + "3" * 32
    assert claims["iss"] == "SK" + "2" * 32 and claims["sub"] == ACCOUNT_SID
    assert abs(claims["exp"] - (time.time() + 600)) < 30
    # A supervisor gets a token for their own softphone; no role can ask for anyone else's identity.
    sue = Console(keyed, "sue", role="supervisor")
    assert _claims(sue.get("/api/voice/token").get_json()["token"])["grants"]["identity"].startswith("supervisor-")
    assert bob.get("/api/voice/token?identity=supervisor-1").get_json()["identity"] == f"handler-{bob.handler_id}"
    assert Console(keyed, "cleo", role="clinician").get("/api/voice/token").status_code == 403


def test_without_an_api_key_real_twilio_softphones_say_what_is_missing(app_factory):
    app = app_factory(twilio={"account_sid": ACCOUNT_SID, "auth_token": "test-auth-token-" + "0" * 16})
    body = Console(app, "ann").get("/api/voice/token").get_json()
    assert body["mode"] == "unavailable" and "TWILIO_API_KEY_SID" in body["reason"] and "token" not in body


def test_with_the_emulator_the_token_points_the_sdk_at_its_signalling(app_factory):
    # No API key: signed with the auth token, which the emulator accepts as Twilio does.
    app = app_factory(twilio={"account_sid": ACCOUNT_SID, "auth_token": "test-auth-token-" + "0" * 16,
                              "api_base_url": "http://127.0.0.1:5050", "signalling_host": "127.0.0.1:5051"})
    ann = Console(app, "ann")
    body = ann.get("/api/voice/token").get_json()
    assert body["signalling"] == "127.0.0.1:5051" and body["certificate_url"] == "https://127.0.0.1:5051/"
    claims = _claims(body["token"])
    assert claims["iss"] == ACCOUNT_SID and claims["grants"]["identity"] == f"handler-{ann.handler_id}"
    # The console page lets the SDK reach that signalling, and nothing else outside this origin.
    policy = ann.get("/console").headers["Content-Security-Policy"]
    assert "wss://127.0.0.1:5051" in policy and "twilio.com" not in policy


def test_an_emulator_that_does_not_answer_is_said_plainly(app_factory):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again at once: nothing listens there
    app = app_factory(twilio={"account_sid": ACCOUNT_SID, "auth_token": "test-auth-token-" + "0" * 16,
                              "api_base_url": f"http://127.0.0.1:{port}"})
    body = Console(app, "ann").get("/api/voice/token").get_json()
    assert body["mode"] == "unavailable" and "helpline emulator" in body["reason"]


def test_openapi_describes_every_api_route(app, client):
    document = client.get("/api/openapi.json").get_json()
    assert document["openapi"].startswith("3.")
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("api."):
            path = rule.rule.replace("<int:", "{").replace("<", "{").replace(">", "}")
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                assert method.lower() in document["paths"][path], (path, method)
    status = document["paths"]["/api/me/status"]["post"]
    assert status["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/StatusChange"}
    assert document["components"]["schemas"]["StatusChange"]["properties"]["status"]["enum"] == ["available", "break", "offline"]
    queue = document["paths"]["/api/queue"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert queue == {"$ref": "#/components/schemas/QueueView"}
    assert "QueuedCall" in document["components"]["schemas"]
