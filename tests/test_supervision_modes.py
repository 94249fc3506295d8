"""A supervisor on a live call, end to end: `helpline serve` and the Twilio emulator as separate
processes. A caller is put through to a handler; the supervisor's softphone is rung into the call's
conference once, and Listen, Coach and Barge then change that one participant at the emulator
(Muted, Coaching, CallSidToCoach, as Twilio documents them) until Stop takes it out, leaving the
caller and the handler talking."""

from __future__ import annotations

import re
import time
from typing import Any, Callable

import pytest
import requests
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from .processes import run_cli
from .stack import Stack, start_stack
from .test_e2e_routing import CALLER, PASSWORD, HandlerConsole

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(module_database_url: str, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    yield from start_stack(tmp_path_factory.mktemp("stack"), module_database_url)


class StaffSession:
    """A console user's browser reduced to its HTTP session (no socket: supervisors act through the API)."""

    def __init__(self, stack: Stack, username: str, role: str):
        created = run_cli(["create-user", username, "--role", role, "--password-stdin"], stack.env, stdin=PASSWORD + "\n")
        assert created.returncode == 0, created.stderr
        self.base = stack.service.url
        self.http = requests.Session()
        self.http.trust_env = False
        page = self.http.get(f"{self.base}/login", timeout=10).text
        self.token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        response = self.http.post(f"{self.base}/login", data={"username": username, "password": PASSWORD, "csrf_token": self.token},
                                  allow_redirects=False, timeout=10)
        assert response.status_code == 302
        # A log-in starts a new session with a new CSRF token: the console's pages carry it.
        self.token = re.search(r'<meta name="csrf-token" content="([^"]+)"', self.http.get(f"{self.base}/account", timeout=10).text).group(1)  # type: ignore[union-attr]
        self.me = self.http.get(f"{self.base}/api/me", timeout=10).json()

    def send(self, method: str, path: str, payload: dict[str, Any] | None = None) -> requests.Response:
        return self.http.request(method, f"{self.base}{path}", json=payload if payload is not None else {},
                                 headers={"X-CSRFToken": self.token}, timeout=30)

    def close(self) -> None:
        self.http.close()


def rest(stack: Stack) -> Client:
    """Twilio's own client, pointed at the emulator: the participant as Twilio's REST API reports it."""
    client = Client(stack.env["TWILIO_ACCOUNT_SID"], stack.env["TWILIO_AUTH_TOKEN"], http_client=TwilioHttpClient(timeout=10))
    client.api.base_url = stack.env["TWILIO_API_BASE_URL"]
    return client


def eventually(check: Callable[[], Any], what: str, timeout: float = 15) -> Any:
    """`check()`'s first truthy value, polling (callbacks and legs settle a moment after a request)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"never: {what}")
        time.sleep(0.05)


def conference(stack: Stack, call_id: int) -> dict[str, Any] | None:
    """The call's live conference at the emulator, with its participants."""
    return next((room for room in stack.emulator.conferences()
                 if room["name"] == f"call-{call_id}" and room["status"] != "completed"), None)


def connected_call(stack: Stack, handler: HandlerConsole) -> tuple[str, int]:
    """A caller through the IVR, accepted by `handler`, both legs in the conference."""
    sid = stack.emulator.place_call(CALLER, keys=["1", "1", "1"])
    stack.emulator.wait_for(sid, "enqueued", timeout=20)
    call_id = stack.call_row(sid).id
    handler.wait_for("offer", lambda offer: offer["call_id"] == call_id)
    response = handler.post(f"/api/calls/{call_id}/accept")
    assert response.status_code == 200, response.text
    stack.emulator.wait_for(sid, "conference.joined", timeout=20)
    eventually(lambda: (room := conference(stack, call_id)) and len(room["participants"]) == 2, "caller and handler in the room")
    return sid, call_id


def test_listen_coach_barge_and_stop_change_one_participant(stack):
    ann = HandlerConsole(stack, "ann")
    sue = StaffSession(stack, "sue", "supervisor")
    try:
        stack.emulator.register_client(f"client:{ann.me['softphone']}", auto_answer=True)
        assert ann.post("/api/me/status", {"status": "available"}).json()["presence"] == "available"
        supervisor = f"client:supervisor-{sue.me['id']}"
        stack.emulator.register_client(supervisor, auto_answer=True)
        caller_sid, call_id = connected_call(stack, ann)
        handler_leg = stack.sql("select handler_leg_sid from queue_entries where call_id = :id", id=call_id)[0][0]
        twilio = rest(stack)

        # Listen: rung once into the room, muted, not coaching.
        response = sue.send("POST", f"/api/calls/{call_id}/listen", {"mode": "listen"})
        assert response.status_code == 200, response.text
        joined = response.json()
        assert joined["rang"] is True and joined["identity"] == f"supervisor-{sue.me['id']}"
        leg = joined["leg_sid"]
        stack.emulator.client_wait_for(supervisor, "conference.joined", timeout=20)
        room = eventually(lambda: (found := conference(stack, call_id)) and len(found["participants"]) == 3 and found,
                          "the supervisor in the room")
        conference_sid = room["sid"]

        def participant() -> Any:
            return twilio.conferences(conference_sid).participants(leg).fetch()

        listening = participant()
        assert listening.muted is True and listening.coaching is False
        assert listening.label == f"supervisor-{sue.me['id']}"

        # Coach: the same participant, unmuted, coaching the handler's leg; no second leg rung.
        response = sue.send("POST", f"/api/calls/{call_id}/listen", {"mode": "coach"})
        assert response.status_code == 200, response.text
        assert response.json()["rang"] is False and response.json()["leg_sid"] == leg
        coaching = participant()
        assert coaching.muted is False and coaching.coaching is True and coaching.call_sid_to_coach == handler_leg
        assert len(conference(stack, call_id)["participants"]) == 3  # type: ignore[index]
        assert [call for call in stack.emulator.calls() if call.get("to") == supervisor].__len__() == 1

        # Barge: heard by both, so neither muted nor coaching.
        assert sue.send("POST", f"/api/calls/{call_id}/listen", {"mode": "barge"}).status_code == 200
        barging = participant()
        assert barging.muted is False and barging.coaching is False
        assert sue.send("GET", f"/api/calls/{call_id}/listen").json()["mode"] == "barge"

        # And back to listening.
        assert sue.send("POST", f"/api/calls/{call_id}/listen", {"mode": "listen"}).json()["rang"] is False
        assert participant().muted is True and participant().coaching is False

        # Stop: the supervisor's participant is gone; the caller and the handler are still talking.
        response = sue.send("DELETE", f"/api/calls/{call_id}/listen")
        assert response.status_code == 200, response.text
        eventually(lambda: len(conference(stack, call_id)["participants"]) == 2, "the supervisor out of the room")  # type: ignore[index]
        stack.emulator.wait_until_ended(leg, timeout=20)
        assert stack.emulator.call(caller_sid)["status"] == "in-progress"
        assert stack.emulator.call(handler_leg)["status"] == "in-progress"
        assert sue.send("GET", f"/api/calls/{call_id}/listen").json()["mode"] is None
        assert sue.send("DELETE", f"/api/calls/{call_id}/listen").json()["error"] == "not_supervising"

        kinds = [row.kind for row in stack.sql(
            "select kind from call_events where call_id = :id and kind like 'supervisor_%' order by id", id=call_id)]
        assert kinds == ["supervisor_ringing", "supervisor_listen", "supervisor_coach", "supervisor_barge",
                         "supervisor_listen", "supervisor_stopped"]
        actions = [row.action for row in stack.sql(
            "select action from audit_log where action like 'supervision.%' order by seq")]
        assert actions == ["supervision.listen", "supervision.coach", "supervision.barge", "supervision.listen",
                           "supervision.stop"]
        # The leg's completed callback after Stop adds nothing: the leg was already stopped.
        time.sleep(0.5)
        assert stack.sql("select count(*) from call_events where call_id = :id and kind = 'supervisor_left'", id=call_id)[0][0] == 0

        # Listening again rings again; the call ending takes the supervisor's leg with it, and that is written down.
        assert sue.send("POST", f"/api/calls/{call_id}/listen", {"mode": "listen"}).json()["rang"] is True
        eventually(lambda: len(conference(stack, call_id)["participants"]) == 3, "the supervisor back in the room")  # type: ignore[index]
        stack.emulator.hangup(caller_sid)
        stack.emulator.wait_until_ended(caller_sid, timeout=20)
        eventually(lambda: stack.sql("select count(*) from call_events where call_id = :id and kind = 'supervisor_left'",
                                     id=call_id)[0][0] == 1, "the supervisor's leg written down as left")
        assert sue.send("GET", f"/api/calls/{call_id}/listen").json()["mode"] is None
        assert sue.send("POST", f"/api/calls/{call_id}/listen", {"mode": "listen"}).json()["error"] == "not_connected"
    finally:
        ann.close()
        sue.close()


def test_only_supervisors_may_listen_and_only_to_a_connected_call(stack):
    bob = HandlerConsole(stack, "bob")
    cat = StaffSession(stack, "cat", "clinician")
    pat = StaffSession(stack, "pat", "supervisor")
    try:
        stack.emulator.register_client(f"client:{bob.me['softphone']}", auto_answer=False)
        sid = stack.emulator.place_call("+447911000099", keys=["1", "1", "1"])
        stack.emulator.wait_for(sid, "enqueued", timeout=20)
        call_id = stack.call_row(sid).id
        for session in (bob, cat):
            for method, payload in (("POST", {"mode": "listen"}), ("GET", None), ("DELETE", None)):
                response = session.http.request(method, f"{session.base}/api/calls/{call_id}/listen", json=payload or {},
                                                headers={"X-CSRFToken": session.token}, timeout=10)
                assert response.status_code == 403, (method, response.text)
        # Waiting in the queue is not connected: a clear 409, and nothing rung.
        response = pat.send("POST", f"/api/calls/{call_id}/listen", {"mode": "coach"})
        assert response.status_code == 409 and response.json()["error"] == "not_connected"
        assert "not connected" in response.json()["detail"]
        assert pat.send("POST", "/api/calls/99999999/listen", {"mode": "listen"}).status_code == 404
        assert pat.send("DELETE", "/api/calls/99999999/listen").status_code == 404
        assert not [call for call in stack.emulator.calls() if call.get("to") == f"client:supervisor-{pat.me['id']}"]
        stack.emulator.hangup(sid)
    finally:
        bob.close()
        cat.close()
        pat.close()
