"""Call controls that mean what they say, through the whole stack: `helpline serve` and the Twilio
emulator as separate processes over HTTP.

Hold works on the first click; End call and a wrap-up of a connected call leave no leg in progress;
the handler's leg dropping holds the caller and rings the handler again (or puts the caller back at
the head of the line); a handler leg that comes back busy puts the caller back in line in the
database and at Twilio whichever of its callback and the accept comes first; a warm hand-over to a
supervisor; and callbacks that present the configured number and leave nothing on voicemail.
"""

from __future__ import annotations

import secrets
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import requests
import yaml
from sqlalchemy import create_engine

from helpline import connect
from helpline.emulator.client import EmulatorClient

from .conftest import ALWAYS_OPEN
from .processes import Process, free_port, run_cli, serve
from .stack import TIME_SCALE, Stack, start_stack
from .test_e2e_routing import PASSWORD, HandlerConsole

pytestmark = pytest.mark.slow

CALLER = "+447911123456"
#: The number callbacks present in these tests (not the helpline's own, +443300000000).
CALLBACK_ID = "+443300000999"


@pytest.fixture(scope="module")
def stack(module_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    settings = {"queue": {"offer_callback_after_s": 0}, "twilio": {"callback_caller_id": CALLBACK_ID}}
    yield from start_stack(tmp_path_factory.mktemp("stack"), module_database_url, settings)


def eventually(check: Callable[[], Any], timeout: float = 15, what: str = "the condition") -> Any:
    """The first truthy value of `check()` within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} never held; last: {value!r}")
        time.sleep(0.05)


def console(stack: Stack, prefix: str) -> HandlerConsole:
    """A new handler (unique name) with their console open."""
    return HandlerConsole(stack, f"{prefix}{secrets.token_hex(3)}")


def offered_call(stack: Stack, ann: HandlerConsole, auto_answer: bool, caller: str = CALLER) -> tuple[str, int, str]:
    """A caller queued and offered to `ann`, whose softphone is registered; (CallSid, call id, identity)."""
    identity = f"client:{ann.me['softphone']}"
    stack.emulator.register_client(identity, auto_answer=auto_answer)
    assert ann.post("/api/me/status", {"status": "available"}).status_code == 200
    sid = stack.emulator.place_call(caller, keys=["1", "1", "1"])
    stack.emulator.wait_for(sid, "enqueued", timeout=20)
    call_id = stack.call_row(sid).id
    ann.wait_for("offer", lambda data: data["call_id"] == call_id)
    return sid, call_id, identity


def room(stack: Stack, call_id: int) -> dict[str, Any] | None:
    """The call's live conference at the emulator with someone in it, or None (a room nobody reached
    never starts, as at Twilio)."""
    return next((item for item in stack.emulator.conferences()
                 if item["name"] == f"call-{call_id}" and item["status"] != "completed" and item["participants"]), None)


def participant(stack: Stack, call_id: int, call_sid: str) -> dict[str, Any] | None:
    """A participant of the call's live conference, by CallSid."""
    found = room(stack, call_id)
    return next((item for item in found["participants"] if item["call_sid"] == call_sid), None) if found else None


def live_legs(stack: Stack, *parties: str) -> list[dict[str, Any]]:
    """Calls still in progress at the emulator to or from any of `parties` (numbers or client:...)."""
    return [call for call in stack.emulator.calls(live=True) if call["from"] in parties or call["to"] in parties]


def in_twilio_queue(stack: Stack, sid: str) -> bool:
    return any(member["call_sid"] == sid for queue in stack.emulator.queues() for member in queue["members"])


def kinds(stack: Stack, call_id: int) -> list[str]:
    return [row.kind for row in stack.sql("select kind from call_events where call_id = :id order by id", id=call_id)]


def entry_of(stack: Stack, call_id: int) -> Any:
    return stack.sql("select * from queue_entries where call_id = :id", id=call_id)[0]


def presence(stack: Stack, ann: HandlerConsole) -> str:
    return stack.sql("select presence from handlers where id = :id", id=ann.me["handler_id"])[0].presence


def back_at_the_head_of_the_line(stack: Stack, sid: str, call_id: int) -> None:
    """The caller waits in the Twilio queue again, and the database agrees: in line, first, not answered."""
    eventually(lambda: in_twilio_queue(stack, sid) and room(stack, call_id) is None, what="the caller back in the queue")
    entry = entry_of(stack, call_id)
    assert entry.state == "waiting" and entry.handler_id is None
    assert stack.call_row(sid).outcome is None
    head = stack.sql("select call_id from queue_entries where state = 'waiting' order by priority, placed_at, id limit 1")
    assert head[0].call_id == call_id
    time.sleep(0.3)  # and it stays so: nothing late moves the call to `answered` or out of the queue
    assert entry_of(stack, call_id).state == "waiting" and in_twilio_queue(stack, sid)


# -- hold ----------------------------------------------------------------------------------------

def test_the_first_hold_right_after_accept_holds_the_caller(stack):
    ann = console(stack, "hold")
    try:
        sid, call_id, _ = offered_call(stack, ann, auto_answer=True)
        assert ann.post(f"/api/calls/{call_id}/accept").status_code == 200
        # At once: the caller may still be on the way from the queue into the conference.
        response = ann.post(f"/api/calls/{call_id}/hold", {"hold": True})
        assert response.status_code == 200, response.text
        held = participant(stack, call_id, sid)
        assert held is not None and held["hold"] is True
        stack.emulator.wait_for(sid, lambda event: event["kind"] == "play" and event.get("hold_music"), timeout=10)
        assert ann.post(f"/api/calls/{call_id}/hold", {"hold": False}).status_code == 200
        assert participant(stack, call_id, sid)["hold"] is False
        timeline = kinds(stack, call_id)
        assert timeline.index("hold") < timeline.index("unhold")
        stack.emulator.hangup(sid)
        stack.emulator.wait_until_ended(sid, timeout=20)
    finally:
        ann.close()


# -- ending the call -----------------------------------------------------------------------------

def test_end_call_completes_every_leg_and_starts_wrap_up(stack):
    ann = console(stack, "end")
    try:
        sid, call_id, identity = offered_call(stack, ann, auto_answer=True)
        assert ann.post(f"/api/calls/{call_id}/accept").status_code == 200
        eventually(lambda: room(stack, call_id) and len(room(stack, call_id)["participants"]) == 2, what="both in the room")

        response = ann.post(f"/api/calls/{call_id}/hangup")
        assert response.status_code == 200, response.text
        assert response.json()["presence"] == "wrap_up"
        stack.emulator.wait_until_ended(sid, timeout=20)
        eventually(lambda: not live_legs(stack, CALLER, identity), what="no leg left in progress")
        assert room(stack, call_id) is None
        assert "ended_by_handler" in kinds(stack, call_id)
        time.sleep(0.3)  # the legs' and the conference's last callbacks change nothing now
        assert presence(stack, ann) == "wrap_up"
        assert "handler_dropped" not in kinds(stack, call_id)

        again = ann.post(f"/api/calls/{call_id}/hangup")
        assert again.status_code == 409 and again.json()["error"] == "not_connected"
        assert ann.post(f"/api/calls/{call_id}/wrap-up", {"outcome": "advice_given"}).json()["presence"] == "available"
    finally:
        ann.close()


def test_hangup_is_refused_when_the_call_is_not_connected_to_you(stack):
    ann, bob = console(stack, "ann"), console(stack, "bob")
    try:
        sid, call_id, _ = offered_call(stack, ann, auto_answer=True)
        refused = ann.post(f"/api/calls/{call_id}/hangup")  # offered, not accepted
        assert refused.status_code == 409 and refused.json()["error"] == "not_connected"
        assert ann.post(f"/api/calls/{call_id}/accept").status_code == 200
        eventually(lambda: room(stack, call_id) and len(room(stack, call_id)["participants"]) == 2, what="both in the room")
        theirs = bob.post(f"/api/calls/{call_id}/hangup")
        assert theirs.status_code == 409 and theirs.json()["error"] == "not_connected"
        assert bob.post("/api/calls/999999/hangup").status_code == 409
        assert len(room(stack, call_id)["participants"]) == 2 and presence(stack, ann) == "on_call"
        assert ann.post(f"/api/calls/{call_id}/hangup").status_code == 200
        stack.emulator.wait_until_ended(sid, timeout=20)
    finally:
        ann.close()
        bob.close()


def test_a_wrap_up_of_a_connected_call_ends_it_first(stack):
    ann = console(stack, "wrap")
    try:
        sid, call_id, identity = offered_call(stack, ann, auto_answer=True)
        assert ann.post(f"/api/calls/{call_id}/accept").status_code == 200
        eventually(lambda: room(stack, call_id) and len(room(stack, call_id)["participants"]) == 2, what="both in the room")

        response = ann.post(f"/api/calls/{call_id}/wrap-up", {"outcome": "signposted"})
        assert response.status_code == 200 and response.json()["presence"] == "available"
        stack.emulator.wait_until_ended(sid, timeout=20)
        eventually(lambda: not live_legs(stack, CALLER, identity), what="no leg left in progress")
        found = [event for event in kinds(stack, call_id) if event in ("ended_by_handler", "wrap_up")]
        assert found == ["ended_by_handler", "wrap_up"]
    finally:
        ann.close()


def test_a_bad_wrap_up_leaves_the_connected_call_alone(stack):
    ann = console(stack, "badwrap")
    try:
        sid, call_id, _ = offered_call(stack, ann, auto_answer=True)
        assert ann.post(f"/api/calls/{call_id}/accept").status_code == 200
        eventually(lambda: room(stack, call_id) and len(room(stack, call_id)["participants"]) == 2, what="both in the room")
        response = ann.post(f"/api/calls/{call_id}/wrap-up", {"outcome": "made_up"})
        assert response.status_code == 400
        assert len(room(stack, call_id)["participants"]) == 2 and presence(stack, ann) == "on_call"
        assert ann.post(f"/api/calls/{call_id}/hangup").status_code == 200
        stack.emulator.wait_until_ended(sid, timeout=20)
    finally:
        ann.close()


# -- the handler's leg dropping ------------------------------------------------------------------

def answered_call(stack: Stack, ann: HandlerConsole) -> tuple[str, int, str]:
    """A call accepted by `ann`, whose softphone answers by hand; both in the conference."""
    sid, call_id, identity = offered_call(stack, ann, auto_answer=False)
    assert ann.post(f"/api/calls/{call_id}/accept").status_code == 200
    stack.emulator.client_wait_for(identity, "incoming", timeout=20)
    stack.emulator.answer_client(identity)
    eventually(lambda: room(stack, call_id) and len(room(stack, call_id)["participants"]) == 2, what="both in the room")
    return sid, call_id, identity


def dropped_and_rung_again(stack: Stack, ann: HandlerConsole) -> tuple[str, int, str]:
    """A call `ann` answered whose softphone then hung up (a network fault, a page unloading), and
    the service's ring back reaching the softphone; (CallSid, call id, identity)."""
    sid, call_id, identity = answered_call(stack, ann)
    mark = stack.emulator.client_events(identity)[-1]["seq"]
    stack.emulator.hangup_client(identity)
    stack.emulator.client_wait_for(identity, "incoming", timeout=20, after=mark)
    return sid, call_id, identity


def test_a_dropped_handler_leg_holds_the_caller_and_rings_the_handler_again(stack):
    ann = console(stack, "drop")
    try:
        sid, call_id, identity = answered_call(stack, ann)
        first_leg = entry_of(stack, call_id).handler_leg_sid
        mark = stack.emulator.client_events(identity)[-1]["seq"]

        stack.emulator.hangup_client(identity)  # the softphone's connection drops
        stack.emulator.client_wait_for(identity, "incoming", timeout=20, after=mark)
        held = participant(stack, call_id, sid)
        assert held is not None and held["hold"] is True, "the caller waits with music, still in the call"
        assert presence(stack, ann) == "on_call" and entry_of(stack, call_id).state == "answered"

        stack.emulator.answer_client(identity)
        eventually(lambda: (participant(stack, call_id, sid) or {}).get("hold") is False, what="the caller off hold")
        assert len(room(stack, call_id)["participants"]) == 2
        assert eventually(lambda: entry_of(stack, call_id).handler_leg_sid not in (None, first_leg), what="the new leg known")
        assert {"handler_dropped", "handler_back"} <= set(kinds(stack, call_id))

        # The caller hanging up still ends it all.
        stack.emulator.hangup(sid)
        stack.emulator.wait_until_ended(sid, timeout=20)
        eventually(lambda: presence(stack, ann) == "wrap_up", what="wrap-up")
        eventually(lambda: not live_legs(stack, CALLER, identity), what="no leg left in progress")
    finally:
        ann.close()


def test_a_dropped_handler_who_does_not_answer_again_sends_the_caller_to_the_head_of_the_line(stack):
    ann = console(stack, "gone")
    try:
        sid, call_id, identity = dropped_and_rung_again(stack, ann)
        stack.emulator.reject_client(identity)

        back_at_the_head_of_the_line(stack, sid, call_id)
        assert presence(stack, ann) == "break"
        assert {"handler_dropped", "handler_not_back", "offer_missed"} <= set(kinds(stack, call_id))
        stack.emulator.hangup(sid)
        stack.emulator.wait_until_ended(sid, timeout=20)
    finally:
        ann.close()


def test_a_dropped_handler_whose_softphone_is_not_back_yet_is_rung_again_until_it_is(stack):
    """A reload mid-call: the page's softphone hangs up as the page goes, and the service's ring back
    finds nobody registered. The caller stays on hold and the ring is tried again, and the reloaded
    page's softphone takes it."""
    ann = console(stack, "reload")
    try:
        sid, call_id, identity = dropped_and_rung_again(stack, ann)  # the page unloads: its softphone hangs up
        mark = stack.emulator.client_events(identity)[-1]["seq"]
        stack.emulator.unregister_client(identity)  # ... and has gone: the ring back finds nobody
        eventually(lambda: "handler_not_there" in kinds(stack, call_id), what="the ring that found nobody")
        held = participant(stack, call_id, sid)
        assert held is not None and held["hold"] is True, "the caller waits with music, still in the call"
        assert presence(stack, ann) == "on_call" and entry_of(stack, call_id).state == "answered"

        stack.emulator.register_client(identity)  # the reloaded page's softphone
        stack.emulator.client_wait_for(identity, "incoming", timeout=20, after=mark)
        stack.emulator.answer_client(identity)
        eventually(lambda: (participant(stack, call_id, sid) or {}).get("hold") is False, what="the caller off hold")
        assert presence(stack, ann) == "on_call" and entry_of(stack, call_id).state == "answered"
        seen = kinds(stack, call_id)
        assert {"handler_dropped", "handler_not_there", "handler_back"} <= set(seen)
        assert "offer_missed" not in seen and "handler_not_back" not in seen

        stack.emulator.hangup(sid)
        stack.emulator.wait_until_ended(sid, timeout=20)
        eventually(lambda: presence(stack, ann) == "wrap_up", what="wrap-up")
    finally:
        ann.close()


def test_a_dropped_handler_whose_softphone_never_comes_back_sends_the_caller_to_the_head_of_the_line(stack):
    """The rings back are tried for a while only: then the caller goes back in line, not held for ever."""
    ann = console(stack, "closed")
    try:
        sid, call_id, identity = dropped_and_rung_again(stack, ann)
        stack.emulator.unregister_client(identity)  # the tab was closed

        eventually(lambda: "handler_not_back" in kinds(stack, call_id), timeout=connect.REJOIN_WITHIN_S + 25,
                   what="the rings back given up")
        back_at_the_head_of_the_line(stack, sid, call_id)
        assert presence(stack, ann) == "break"
        tries = kinds(stack, call_id).count("handler_not_there")
        assert 2 <= tries <= connect.REJOIN_WITHIN_S / connect.REJOIN_PAUSE_S + 1, tries
        stack.emulator.hangup(sid)
        stack.emulator.wait_until_ended(sid, timeout=20)
    finally:
        ann.close()


# -- a handler leg that never answers, whichever callback comes first --------------------------------

def test_a_busy_handler_leg_after_the_accept_puts_the_caller_back_at_the_head(stack):
    ann = console(stack, "busy")
    try:
        sid, call_id, identity = offered_call(stack, ann, auto_answer=False)
        assert ann.post(f"/api/calls/{call_id}/accept").status_code == 200
        assert entry_of(stack, call_id).state == "answered"
        stack.emulator.client_wait_for(identity, "incoming", timeout=20)
        stack.emulator.reject_client(identity)  # busy, after the accept committed `answered`

        back_at_the_head_of_the_line(stack, sid, call_id)
        assert presence(stack, ann) == "break" and "offer_missed" in kinds(stack, call_id)
        stack.emulator.hangup(sid)
        stack.emulator.wait_until_ended(sid, timeout=20)
    finally:
        ann.close()


class GatedTwilio:
    """A pass-through in front of the emulator's REST API that can hold back one request: the
    accept's redirect of the caller into the conference, so that the handler leg's callback is
    certain to arrive before the accept has recorded anything."""

    def __init__(self, upstream: str):
        self.upstream = upstream
        self.gate: Callable[[str, str, bytes], bool] | None = None
        self.held = threading.Event()
        self.release = threading.Event()
        gated = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _pass(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                gate = gated.gate
                if gate is not None and gate(self.command, self.path, body):
                    gated.gate = None
                    gated.held.set()
                    gated.release.wait(timeout=30)
                headers = {name: value for name, value in self.headers.items()
                           if name.lower() in ("authorization", "content-type", "accept", "user-agent")}
                answer = requests.request(self.command, gated.upstream + self.path, data=body, headers=headers, timeout=20)
                self.send_response(answer.status_code)
                self.send_header("Content-Type", answer.headers.get("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_DELETE = _pass  # noqa: N815 - http.server's naming

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def gated(module_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, GatedTwilio]]:
    """The whole stack, with the service's Twilio REST requests passing through a GatedTwilio."""
    tmp = tmp_path_factory.mktemp("gated")
    service_port, emulator_port = free_port(), free_port()
    service_url, emulator_url = f"http://127.0.0.1:{service_port}", f"http://127.0.0.1:{emulator_port}"
    proxy = GatedTwilio(emulator_url)
    site = tmp / "site.yaml"
    site.write_text(yaml.safe_dump({"opening_hours": {"weekly": ALWAYS_OPEN, "closed_dates": []}}))
    env = {
        "HELPLINE_CONFIG": str(site), "HELPLINE_DATABASE_URL": module_database_url,
        "HELPLINE_INSTANCE_PATH": str(tmp / "instance"), "HELPLINE_PUBLIC_URL": service_url,
        "TWILIO_ACCOUNT_SID": "AC" + secrets.token_hex(16), "TWILIO_AUTH_TOKEN": secrets.token_hex(16),
        "TWILIO_API_BASE_URL": proxy.url, "TWILIO_PHONE_NUMBER": "+443300000000",
    }
    assert run_cli(["db", "upgrade"], env).returncode == 0
    events = [arg for event in ("initiated", "ringing", "answered", "completed") for arg in ("--status-callback-event", event)]
    emulator = Process(
        [sys.executable, "-m", "helpline.emulator", "--port", str(emulator_port), "--time-scale", str(TIME_SCALE),
         "--voice-url", f"{service_url}/voice/incoming", "--status-callback", f"{service_url}/voice/status",
         "--phone-number", env["TWILIO_PHONE_NUMBER"], "--account-sid", env["TWILIO_ACCOUNT_SID"],
         "--auth-token", env["TWILIO_AUTH_TOKEN"], *events],
        env, emulator_url, tmp / "emulator.log")
    client, engine = EmulatorClient(emulator_url), create_engine(module_database_url)
    try:
        emulator.wait_ready("/emulator/health")
        for service in serve(env, tmp, service_port):
            yield Stack(service, emulator, client, engine, env), proxy
    finally:
        proxy.close()
        client.close()
        engine.dispose()
        emulator.stop()


def test_a_busy_handler_leg_before_the_accept_has_committed_puts_the_caller_back_at_the_head(gated):
    stack, proxy = gated
    ann = console(stack, "race")
    try:
        sid, call_id, identity = offered_call(stack, ann, auto_answer=False)
        # Hold back the accept's redirect of the caller: the accept has rung the handler and waits.
        proxy.gate = lambda method, path, body: (method == "POST" and path.endswith(f"/Calls/{sid}.json")
                                                 and b"voice%2Fconnect" in body)
        result: dict[str, requests.Response] = {}
        accepting = threading.Thread(target=lambda: result.update(accept=ann.post(f"/api/calls/{call_id}/accept")))
        accepting.start()
        assert proxy.held.wait(timeout=20), "the accept never redirected the caller"
        assert entry_of(stack, call_id).state == "connecting"
        stack.emulator.client_wait_for(identity, "incoming", timeout=20)
        stack.emulator.reject_client(identity)  # busy, while the accept has committed nothing more
        eventually(lambda: "offer_missed" in kinds(stack, call_id), what="the busy leg's callback handled")
        assert entry_of(stack, call_id).state == "waiting"

        proxy.release.set()
        accepting.join(timeout=30)
        response = result["accept"]
        assert response.status_code == 409 and response.json()["error"] == "handler_unreachable"
        back_at_the_head_of_the_line(stack, sid, call_id)
        assert "answered" not in kinds(stack, call_id)
        assert presence(stack, ann) == "break"

        # And the line goes on: with a handler free, the caller is offered again (to whichever handler
        # is free longest: another test's may be, so the line is read, not one console).
        bob = console(stack, "next")
        try:
            bob.post("/api/me/status", {"status": "available"})
            eventually(lambda: stack.sql("select state from queue_entries where call_id = :id", id=call_id)[0][0]
                       == "offered", what="the caller offered again")
        finally:
            bob.close()
        stack.emulator.hangup(sid)
        stack.emulator.wait_until_ended(sid, timeout=20)
    finally:
        ann.close()


# -- asking a supervisor -------------------------------------------------------------------------

def test_a_warm_hand_over_holds_the_caller_rings_the_supervisor_then_joins_or_returns(stack):
    name = f"sup{secrets.token_hex(3)}"
    boss = HandlerConsole(stack, name, role="supervisor")  # the supervisor's page, told how the consult goes
    ann = console(stack, "consult")

    def both_told(state: str) -> None:
        """The handler's console and the supervisor's page both hear that the consult is now `state`."""
        for page in (ann, boss):
            page.wait_for("consult", lambda data: data == {"call_id": call_id, "state": state})

    try:
        supervisors = ann.http.get(f"{ann.base}/api/supervisors/available", timeout=10).json()["supervisors"]
        supervisor = next(item for item in supervisors if item["name"] == name)
        supervisor_client = f"client:supervisor-{supervisor['id']}"
        stack.emulator.register_client(supervisor_client, auto_answer=True)
        sid, call_id, _ = offered_call(stack, ann, auto_answer=True)
        assert ann.post(f"/api/calls/{call_id}/accept").status_code == 200
        # The hand-over starts from a connected call: the caller in the room with the handler.
        eventually(lambda: participant(stack, call_id, sid), what="the caller in the room")

        assert ann.post(f"/api/calls/{call_id}/consult", {"supervisor_id": 999999}).status_code == 404
        assert ann.post(f"/api/calls/{call_id}/consult", {"supervisor_id": "x"}).status_code == 400
        assert ann.post(f"/api/calls/{call_id}/consult/join").json()["error"] == "no_consult"

        started = ann.post(f"/api/calls/{call_id}/consult", {"supervisor_id": supervisor["id"]})
        assert started.status_code == 200, started.text
        assert started.json()["identity"] == f"supervisor-{supervisor['id']}"
        assert participant(stack, call_id, sid)["hold"] is True
        supervisor_leg = started.json()["leg_sid"]
        eventually(lambda: participant(stack, call_id, supervisor_leg), what="the supervisor in the room")
        # The supervisor's softphone answered: the handler is told they can talk (the caller on hold).
        both_told("answered")
        assert ann.post(f"/api/calls/{call_id}/consult", {"supervisor_id": supervisor["id"]}).json()["error"] == "consult_open"

        assert ann.post(f"/api/calls/{call_id}/consult/join").status_code == 200
        assert participant(stack, call_id, sid)["hold"] is False
        assert len(room(stack, call_id)["participants"]) == 3
        # Brought in: the supervisor's page must now say the caller hears them.
        both_told("joined")

        # The supervisor leaves the three-way call; a second consult, and back to the caller alone.
        stack.emulator.hangup_client(supervisor_client)
        eventually(lambda: participant(stack, call_id, supervisor_leg) is None, what="the supervisor gone")
        both_told("left")
        again = ann.post(f"/api/calls/{call_id}/consult", {"supervisor_id": supervisor["id"]})
        assert again.status_code == 200, again.text
        second_leg = again.json()["leg_sid"]
        eventually(lambda: participant(stack, call_id, second_leg), what="the supervisor in the room again")
        both_told("answered")
        assert participant(stack, call_id, sid)["hold"] is True
        assert ann.post(f"/api/calls/{call_id}/consult/return").status_code == 200
        both_told("returned")
        eventually(lambda: participant(stack, call_id, second_leg) is None, what="the supervisor gone again")
        assert participant(stack, call_id, sid)["hold"] is False
        assert len(room(stack, call_id)["participants"]) == 2
        # The timeline says whose leg came and went: the supervisor's, never the caller's.
        legs = stack.sql("select detail from call_events where call_id = :id and kind in ('conference_join', 'conference_leave')",
                         id=call_id)
        assert sum(1 for row in legs if "supervisor" in str(row.detail)) == 4, [row.detail for row in legs]
        assert {"consult_started", "consult_ended", "consult_returned"} <= set(kinds(stack, call_id))
        audited = {row.action for row in stack.sql("select action from audit_log where object_id = :id", id=str(call_id))}
        assert {"call.consult", "call.consult_join", "call.consult_return"} <= audited

        assert ann.post(f"/api/calls/{call_id}/hangup").status_code == 200
        stack.emulator.wait_until_ended(sid, timeout=20)
    finally:
        ann.close()
        boss.close()


# -- callbacks -----------------------------------------------------------------------------------

def callback_request(stack: Stack, number: str) -> int:
    """A caller asks to be called back from the queue; the id of their call (nobody is free to offer it to)."""
    sid = stack.emulator.place_call(number, keys=["1", "1", "1"])
    stack.emulator.wait_for(sid, "say", timeout=20, text_contains="rather we called you back")
    assert stack.emulator.press(sid, "2")
    stack.emulator.wait_until_ended(sid, timeout=20)
    heard = " ".join(event.get("text", "") for event in stack.emulator.call(sid)["events"] if event["kind"] == "say")
    assert "withheld" not in heard
    assert "The call will come from 0 3 3 0, 0 0 0, 0 9 9 9." in heard and "we will not leave a message" in heard
    return stack.call_row(sid).id


def test_a_callback_presents_the_configured_number_and_leaves_nothing_on_voicemail(stack):
    number = "+447911000111"
    stack.emulator.register_phone(number, auto_answer=True, answered_by="machine_start")
    call_id = callback_request(stack, number)
    ann = console(stack, "voicemail")
    try:
        identity = f"client:{ann.me['softphone']}"
        stack.emulator.register_client(identity, auto_answer=True)
        ann.post("/api/me/status", {"status": "available"})
        ann.wait_for("offer", lambda data: data["call_id"] == call_id and data["kind"] == "callback")
        assert ann.post(f"/api/calls/{call_id}/accept").status_code == 200

        leg = eventually(lambda: next((call for call in stack.emulator.calls() if call["to"] == number
                                       and call["direction"] == "outbound-api"), None), what="the callback placed")
        assert leg["from"] == CALLBACK_ID
        stack.emulator.wait_until_ended(leg["sid"], timeout=20)
        events = stack.emulator.call(leg["sid"])["events"]
        assert any(event["kind"] == "machine_detection" and event["answered_by"] == "machine_start" for event in events)
        assert not [event for event in events if event["kind"] in ("say", "play")], "nothing is said to voicemail"
        assert not any(event["kind"] == "conference.joined" for event in events)

        entry = eventually(lambda: (lambda row: row if row.state == "waiting" else None)(entry_of(stack, call_id)),
                           what="the callback back in line")
        assert entry.attempts == 1 and entry.not_before is not None
        assert "callback_voicemail" in kinds(stack, call_id)
        eventually(lambda: presence(stack, ann) == "available", what="the handler free again")
        eventually(lambda: not live_legs(stack, number, identity), what="no leg left in progress")
    finally:
        ann.close()


def test_a_callback_answered_by_a_person_connects_and_shows_the_configured_number(stack):
    number = "+447911000222"
    stack.emulator.register_phone(number, auto_answer=True)
    call_id = callback_request(stack, number)
    ann = console(stack, "person")
    try:
        identity = f"client:{ann.me['softphone']}"
        stack.emulator.register_client(identity, auto_answer=True)
        ann.post("/api/me/status", {"status": "available"})
        ann.wait_for("offer", lambda data: data["call_id"] == call_id)
        assert ann.post(f"/api/calls/{call_id}/accept").status_code == 200
        leg = eventually(lambda: next((call for call in stack.emulator.calls() if call["to"] == number
                                       and call["direction"] == "outbound-api"), None), what="the callback placed")
        assert leg["from"] == CALLBACK_ID
        stack.emulator.wait_for(leg["sid"], "conference.joined", timeout=20)
        assert any("returning your call" in event.get("text", "") for event in stack.emulator.call(leg["sid"])["events"])

        assert ann.post(f"/api/calls/{call_id}/hangup").status_code == 200
        stack.emulator.wait_until_ended(leg["sid"], timeout=20)
        eventually(lambda: not live_legs(stack, number, identity), what="no leg left in progress")
        assert ann.post(f"/api/calls/{call_id}/wrap-up", {"outcome": "advice_given"}).status_code == 200
    finally:
        ann.close()
