"""A tiny HTTP server standing in for Twilio's REST API in unit tests: it records every request and
answers with just enough of Twilio's JSON for the official client to parse."""

from __future__ import annotations

import json
import re
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator
from urllib.parse import parse_qs

import pytest


@dataclass
class Recorded:
    """One request the service made."""

    method: str
    path: str
    form: dict[str, list[str]]

    def value(self, name: str) -> str | None:
        """The single value of a form field."""
        values = self.form.get(name)
        return values[0] if values else None


@dataclass
class Recorder:
    """The running stand-in: its URL and what it has been asked."""

    url: str
    requests: list[Recorded] = field(default_factory=list)
    #: Answer every request with this status and a Twilio error body (None = succeed).
    fail_with: int | None = None

    def find(self, suffix: str) -> list[Recorded]:
        """The requests whose path ends with `suffix`."""
        return [item for item in self.requests if item.path.endswith(suffix)]


class _Handler(BaseHTTPRequestHandler):
    recorder: Recorder

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = parse_qs(self.rfile.read(length).decode()) if length else {}
        self.recorder.requests.append(Recorded(self.command, self.path.split("?")[0], form))
        last = self.path.split("?")[0].rsplit("/", 1)[-1]
        if self.recorder.fail_with:
            status, body = self.recorder.fail_with, {"code": 20003, "message": "refused", "status": self.recorder.fail_with}
        elif self.command == "GET" and last.endswith("s.json"):
            # A list (Conferences.json, Participants.json, ...): empty, in Twilio's paged shape.
            key = re.sub(r"(?<!^)(?=[A-Z])", "_", last[: -len(".json")]).lower()
            status, body = 200, {key: [], "page": 0, "page_size": 50, "uri": self.path, "first_page_uri": self.path,
                                 "next_page_uri": None, "previous_page_uri": None}
        else:
            sid = "CA" + secrets.token_hex(16)
            status = 201 if self.command == "POST" and self.path.endswith(("Participants.json", "Calls.json")) else 200
            body = {"sid": sid, "call_sid": sid, "conference_sid": "CF" + "0" * 32, "account_sid": "AC" + "1" * 32,
                    "status": "queued", "hold": False, "muted": False}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_POST = do_GET = _answer  # noqa: N815 - http.server's naming


@pytest.fixture
def twilio_api() -> Iterator[Recorder]:
    """A recording Twilio REST stand-in on a free local port."""
    recorder = Recorder(url="")
    handler = type("Handler", (_Handler,), {"recorder": recorder})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    recorder.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield recorder
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
