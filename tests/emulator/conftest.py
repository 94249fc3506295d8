"""Fixtures for the emulator tests: a stand-in Twilio application and the emulator as a real process.

The stand-in is a small Flask app (in this process, on a thread) that checks every request's
`X-Twilio-Signature` with the official `RequestValidator`, records it, and answers with fixture
TwiML built by `twilio.twiml.voice_response`. The emulator runs as `python -m helpline.emulator`
and is only reached over HTTP on 127.0.0.1.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest
from flask import Flask, Response, request
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from werkzeug.serving import make_server

from helpline.emulator.client import EmulatorClient

ACCOUNT_SID = "AC" + "1" * 32
AUTH_TOKEN = "test-auth-token"
PHONE_NUMBER = "+441134960123"
TIME_SCALE = 0.02
#: Twilio waits 15 s. Short, so that a slow webhook's test is quick; long enough that the stand-in
#: app, answering at once, is never taken for slow on a loaded machine (1.5 s was, under CI).
WEBHOOK_TIMEOUT = 4.0


@dataclass
class Hit:
    """One request the stand-in received."""

    path: str
    method: str
    url: str
    values: dict[str, str]
    signature_ok: bool
    headers: dict[str, str]
    at: float = field(default_factory=time.monotonic)


Handler = Callable[[Hit], Any]


class StandIn:
    """The fake helpline service: routes registered by tests, every hit recorded."""

    def __init__(self) -> None:
        """Build the Flask app and start it on a free port."""
        self.app = Flask("standin")
        self.routes: dict[str, tuple[Handler, str]] = {}
        self.hits: list[Hit] = []
        self.cond = threading.Condition()
        self.app.add_url_rule("/<path:path>", "any", self._dispatch, methods=["GET", "POST"])
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def route(self, path: str, handler: Handler, token: str = AUTH_TOKEN) -> None:
        """Answer `path` with `handler(hit)`; requests not signed with `token` get 403."""
        self.routes[path.lstrip("/")] = (handler, token)

    def _dispatch(self, path: str) -> Response:
        """Validate, record and answer one request."""
        values = request.form.to_dict() if request.method == "POST" else {}
        handler, token = self.routes.get(path, (None, AUTH_TOKEN))
        signature = request.headers.get("X-Twilio-Signature", "")
        ok = RequestValidator(token).validate(request.url, values, signature)
        hit = Hit(path, request.method, request.url, request.values.to_dict(), ok, dict(request.headers))
        with self.cond:
            self.hits.append(hit)
            self.cond.notify_all()
        if not ok:
            return Response("invalid signature", status=403)
        if handler is None:
            return Response("", status=204)
        result = handler(hit)
        if isinstance(result, Response):
            return result
        if isinstance(result, tuple):
            return Response(str(result[0]), status=result[1], content_type="text/xml")
        return Response(str(result), content_type="text/xml")

    def hits_for(self, path: str) -> list[Hit]:
        """Every request to `path` so far."""
        with self.cond:
            return [h for h in self.hits if h.path == path.lstrip("/")]

    def wait_for(self, path: str, count: int = 1, timeout: float = 10.0,
                 where: Callable[[Hit], bool] | None = None) -> list[Hit]:
        """Wait until `path` got at least `count` (matching) requests; return them."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = [h for h in self.hits if h.path == path.lstrip("/") and (where is None or where(h))]
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = sorted({h.path for h in self.hits})
                    raise AssertionError(f"{path}: {len(found)}/{count} requests after {timeout}s (saw {seen[-20:]})")
                self.cond.wait(remaining)


class Scenario:
    """One test's corner of the stand-in: paths under a unique prefix, so calls never cross tests."""

    def __init__(self, standin: StandIn, prefix: str):
        """Remember the prefix."""
        self.standin = standin
        self.prefix = prefix

    def path(self, name: str) -> str:
        """The stand-in path for `name`."""
        return f"{self.prefix}/{name}"

    def url(self, name: str) -> str:
        """The absolute URL for `name`."""
        return f"{self.standin.base}/{self.path(name)}"

    def route(self, name: str, handler: Handler | Any, token: str = AUTH_TOKEN) -> None:
        """Answer `name` with `handler(hit)` (or always with the given TwiML)."""
        fn = handler if callable(handler) else (lambda hit, body=handler: body)
        self.standin.route(self.path(name), fn, token)

    def hits(self, name: str) -> list[Hit]:
        """Requests to `name` so far."""
        return self.standin.hits_for(self.path(name))

    def wait_for(self, name: str, count: int = 1, timeout: float = 10.0,
                 where: Callable[[Hit], bool] | None = None) -> list[Hit]:
        """Wait for requests to `name`."""
        return self.standin.wait_for(self.path(name), count, timeout, where)


@pytest.fixture(scope="session")
def standin():
    """The stand-in helpline service."""
    server = StandIn()
    yield server
    server.close()


@dataclass
class EmulatorProcess:
    """A running `python -m helpline.emulator` and its base URL."""

    process: subprocess.Popen
    url: str
    stderr_lines: list[str]


def start_emulator(standin: StandIn, *extra: str) -> tuple[EmulatorProcess, threading.Thread]:
    """Start the emulator process on a free port and wait for its "listening" line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "HELPLINE_"))}
    command = [sys.executable, "-m", "helpline.emulator", "--port", "0", "--account-sid", ACCOUNT_SID,
               "--auth-token", AUTH_TOKEN, "--phone-number", PHONE_NUMBER,
               "--voice-url", f"{standin.base}/default/voice", "--status-callback", f"{standin.base}/default/status",
               "--time-scale", str(TIME_SCALE), "--webhook-timeout", str(WEBHOOK_TIMEOUT),
               "--tls-dir", tempfile.mkdtemp(prefix="emulator-tls-"), *extra]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    found = threading.Event()
    url_holder: list[str] = []

    def pump() -> None:
        for line in process.stderr:
            lines.append(line)
            match = re.search(r"listening on (http://\S+)", line)
            if match and not found.is_set():
                url_holder.append(match.group(1))
                found.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    if not found.wait(20):
        process.kill()
        process.wait()
        reader.join(5)
        process.stderr.close()
        raise RuntimeError("emulator did not start:\n" + "".join(lines))
    return EmulatorProcess(process, url_holder[0], lines), reader


def stop_emulator(running: EmulatorProcess, reader: threading.Thread) -> None:
    """Terminate the process and close its pipe."""
    running.process.terminate()
    try:
        running.process.wait(10)
    except subprocess.TimeoutExpired:
        running.process.kill()
        running.process.wait()
    reader.join(5)
    running.process.stderr.close()


@pytest.fixture(scope="session")
def emulator_process(standin):
    """The emulator as a separate process (time scale 0.02, webhook timeout WEBHOOK_TIMEOUT)."""
    running, reader = start_emulator(standin)
    yield running
    stop_emulator(running, reader)
    # Anything the emulator logged as a crash is a bug, even when every test passed.
    assert "Traceback" not in "".join(running.stderr_lines), "".join(running.stderr_lines)


@pytest.fixture(scope="session")
def emulator_url(emulator_process) -> str:
    """Base URL of the emulator process."""
    return emulator_process.url


@pytest.fixture()
def emu(emulator_url):
    """A control-API client."""
    with EmulatorClient(emulator_url) as client:
        yield client


@pytest.fixture()
def twilio(emulator_url):
    """The official twilio Client, pointed at the emulator with `client.api.base_url`."""
    client = Client(ACCOUNT_SID, AUTH_TOKEN)
    client.api.base_url = emulator_url
    yield client
    client.http_client.session.close()


@pytest.fixture(scope="session")
def account():
    """The account the emulator pretends to be: sid, token and helpline number."""
    return {"sid": ACCOUNT_SID, "token": AUTH_TOKEN, "number": PHONE_NUMBER}


_counter = itertools.count(1)


@pytest.fixture()
def scenario(standin, request) -> Scenario:
    """A unique path prefix on the stand-in for this test."""
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40]
    return Scenario(standin, f"t{next(_counter)}-{name}")
