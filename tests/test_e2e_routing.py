"""Live routing end to end: a call placed through the Twilio emulator into a real `helpline serve`
(separate processes over HTTP) is queued, offered to a handler's console over Socket.IO, accepted
through the API, and the caller is redirected into a conference with the handler's softphone."""

from __future__ import annotations

import queue
import re
from typing import Any

import pytest
import requests
import socketio

from .processes import run_cli
from .stack import Stack, start_stack

CALLER = "+447911123456"
PASSWORD = "a long password for the routing test"  # not containing the username, which the policy refuses
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(module_database_url: str, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    yield from start_stack(tmp_path_factory.mktemp("stack"), module_database_url)


class HandlerConsole:
    """A handler's browser (or, with `role`, a supervisor's), reduced to its HTTP session and its Socket.IO connection."""

    def __init__(self, stack: Stack, username: str, role: str = "handler"):
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
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.socket = socketio.Client(http_session=self.http, reconnection=False)
        for name in ("queue", "offer", "offer_withdrawn", "presence", "connect_failed", "consult"):
            self.socket.on(name, lambda data, name=name: self.events.put((name, data)), namespace="/console")
        self.socket.connect(self.base, namespaces=["/console"], transports=["polling"], wait_timeout=10)
        self.me = self.http.get(f"{self.base}/api/me", timeout=10).json()

    def post(self, path: str, payload: dict[str, Any] | None = None) -> requests.Response:
        return self.http.post(f"{self.base}{path}", json=payload or {}, headers={"X-CSRFToken": self.token}, timeout=30)

    def wait_for(self, name: str, check: Any = lambda data: True, timeout: float = 20) -> Any:
        """The next `name` event whose payload passes `check`."""
        while True:
            event, data = self.events.get(timeout=timeout)
            if event == name and check(data):
                return data

    def close(self) -> None:
        self.socket.disconnect()
        self.http.close()


def test_a_queued_call_is_offered_accepted_and_put_through_to_the_handler(stack):
    ann = HandlerConsole(stack, "ann")
    try:
        identity = ann.me["softphone"]
        assert identity == f"handler-{ann.me['handler_id']}"
        token = ann.http.get(f"{ann.base}/api/voice/token", timeout=10).json()
        # The emulator speaks the SDK's signalling: the token says where, and is for this handler alone.
        assert token["mode"] == "twilio" and token["identity"] == identity and token["signalling"]
        stack.emulator.register_client(f"client:{identity}", auto_answer=True)
        assert ann.post("/api/me/status", {"status": "available"}).json()["presence"] == "available"

        sid = stack.emulator.place_call(CALLER, keys=["1", "1", "1"])
        stack.emulator.wait_for(sid, "enqueued", timeout=20)
        call_id = stack.call_row(sid).id
        offer = ann.wait_for("offer")
        assert offer["call_id"] == call_id and offer["need"] == "mental_health"
        ann.wait_for("queue", lambda body: [call["id"] for call in body["calls"]] == [call_id])

        response = ann.post(f"/api/calls/{call_id}/accept")
        assert response.status_code == 200, response.text
        assert response.json()["conference"] == f"call-{call_id}"

        left = stack.emulator.wait_for(sid, "queue.left", timeout=20)
        assert left["result"] == "redirected"
        joined = stack.emulator.wait_for(sid, "conference.joined", timeout=20)
        assert joined["conference"] == f"call-{call_id}"
        stack.emulator.client_wait_for(f"client:{identity}", lambda event: event["kind"] in ("answered", "conference.joined"), timeout=20)
        conference = next(item for item in stack.emulator.conferences() if item["name"] == f"call-{call_id}")
        assert len(conference["participants"]) == 2

        stack.emulator.hangup(sid)
        stack.emulator.wait_until_ended(sid, timeout=20)
        ann.wait_for("presence", lambda data: data["presence"] == "wrap_up")
        assert ann.post(f"/api/calls/{call_id}/wrap-up", {"outcome": "advice_given"}).json()["presence"] == "available"
        row = stack.call_row(sid)
        assert row.outcome == "answered"
        kinds = [event.kind for event in stack.sql("select kind from call_events where call_id = :id order by id", id=call_id)]
        for step in ("queued", "offered", "accepted", "answered", "wrap_up_started", "wrap_up"):
            assert step in kinds, (step, kinds)
    finally:
        ann.close()
