"""An emulated call handler: a console user logged in over HTTP, with a Socket.IO client on `/console`
and a softphone identity registered in the emulator that answers by itself.

Each handler works like a person at the console: when an `offer` arrives it accepts the call, talks
for a few seconds (sometimes booking an appointment while the caller is on the line), ends the call,
waits for the service to put it in wrap-up, records an outcome after a short pause and is available
again. Socket.IO events are read on the client's own thread and handed to a worker thread, so that a
handler busy on a call never holds up its event stream.

Every moment that matters is stamped with `time.time()`, which every process on the machine shares,
so that it can be set against the emulator's and the database's timestamps afterwards.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import random
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import requests
import socketio
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from ..emulator.client import EmulatorClient

log = logging.getLogger(__name__)

NAMESPACE = "/console"
#: Fields a booking needs on the caller's first-contact record, with a way to reach them (no real
#: person's details: an address in a domain kept for examples).
CONTACT = {"about_self": True, "consent_to_keep": True, "name": "Bench Caller", "email": "bench.caller@example.org"}


@dataclass
class Pace:
    """How long a handler spends on each part of a call, in wall-clock seconds."""

    talk_s: tuple[float, float] = (2.0, 4.0)
    wrap_up_s: tuple[float, float] = (0.3, 0.8)
    #: Book an appointment on about one call in this many (0 = never).
    book_every: int = 5


@dataclass
class HandlerLog:
    """What one handler saw and did, with wall-clock times."""

    #: call_id -> when the first `offer` of it reached this handler's Socket.IO client.
    offers: dict[int, float] = field(default_factory=dict)
    #: call_id -> when the service made that first offer (the offer's `offered_at`).
    offers_made: dict[int, float] = field(default_factory=dict)
    #: (call_id, sent, answered, HTTP status) of each accept.
    accepts: list[tuple[int, float, float, int]] = field(default_factory=list)
    #: Moments this handler became free (went available, or finished a wrap-up).
    free_at: list[float] = field(default_factory=list)
    #: (call_id, seconds, HTTP status) of each POST /api/bookings.
    bookings: list[tuple[int, float, int]] = field(default_factory=list)
    queue_events: int = 0
    missed_offers: int = 0
    reconnects: int = 0
    errors: list[str] = field(default_factory=list)


class Handler:
    """One emulated handler; `start()` logs in and connects, `stop()` disconnects."""

    def __init__(self, username: str, password: str, base_url: str, emulator: EmulatorClient, pace: Pace,
                 rng: random.Random, api_url: str | None = None):
        """`base_url`: the process the console's socket stays with; `api_url`: where its HTTP requests
        go (a proxy in front of every process, which would send them to another one), if not there."""
        self.username = username
        self.password = password
        self.base_url = base_url.rstrip("/")
        self.api_url = (api_url or base_url).rstrip("/")
        self.emulator = emulator
        self.pace = pace
        self.rng = rng
        self.log = HandlerLog()
        self.http = requests.Session()
        self.http.trust_env = False
        # A keep-alive connection the server closed while the handler was talking fails the next
        # request before it is sent; a browser sends it again on a new connection, and so do we.
        retry = Retry(total=2, connect=2, read=1, status=0, other=0, allowed_methods=None, raise_on_status=False)
        self.http.mount("http://", HTTPAdapter(max_retries=retry))
        self.csrf = ""
        self.handler_id = 0
        self.identity = ""
        self.presence = "offline"
        self.calls_taken = 0
        self._inbox: queue.Queue[tuple[str, Any, float]] = queue.Queue()
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._work, name=f"bench-{username}", daemon=True)
        # websocket-client checks each message's UTF-8 in pure Python, byte by byte: with fifty
        # consoles each sent the whole line every second, that was a large share of the benchmark's
        # own CPU (which it takes from the service on this machine). A browser does it natively.
        self.socket = socketio.Client(http_session=self.http, reconnection=True, reconnection_delay=0.5,
                                      reconnection_delay_max=2, randomization_factor=0.2,
                                      websocket_extra_options={"skip_utf8_validation": True})
        for name in ("offer", "offer_withdrawn", "presence", "queue", "connect_failed"):
            self.socket.on(name, self._receiver(name), namespace=NAMESPACE)
        self.socket.on("connect", self._on_connect, namespace=NAMESPACE)

    # -- set-up ---------------------------------------------------------------------------------

    def _receiver(self, name: str) -> Any:
        def receive(data: Any = None) -> None:
            stamp = time.time()
            if name == "queue":
                # Every console gets every change of the queue: count them, do not queue them.
                self.log.queue_events += 1
                return
            self._inbox.put((name, data, stamp))
        return receive

    def _on_connect(self) -> None:
        self.log.reconnects += 1

    def log_in(self) -> None:
        """Log in through the form, as a browser does, and learn the handler's id and softphone."""
        page = self.http.get(f"{self.api_url}/login", timeout=30).text
        match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page) or re.search(r'value="([^"]+)"[^>]*name="csrf_token"', page)
        if match is None:
            raise RuntimeError("the log-in page has no CSRF token")
        self.csrf = match.group(1)
        answer = self.http.post(f"{self.api_url}/login", data={"username": self.username, "password": self.password,
                                                                  "csrf_token": self.csrf}, allow_redirects=False, timeout=30)
        if answer.status_code != 302:
            raise RuntimeError(f"log-in of {self.username} failed: HTTP {answer.status_code}")
        # A log-in starts a new session with a new CSRF token: the console's pages carry it.
        fresh = re.search(r'<meta name="csrf-token" content="([^"]+)"', self.http.get(f"{self.api_url}/account", timeout=30).text)
        if fresh is None:
            raise RuntimeError("the account page has no CSRF token")
        self.csrf = fresh.group(1)
        me = self.http.get(f"{self.api_url}/api/me", timeout=30).json()
        self.handler_id = int(me["handler_id"])
        self.identity = f"client:{me['softphone']}"

    def start(self) -> None:
        """Log in, register the softphone, open the console's socket and become available."""
        self.log_in()
        self.emulator.register_client(self.identity, auto_answer=True)
        self.socket.connect(self.base_url, namespaces=[NAMESPACE], transports=["websocket"], wait_timeout=30)
        self._worker.start()
        self._go_available()

    def stop(self) -> None:
        """Stop working and close the console."""
        self._stop.set()
        self._inbox.put(("stop", None, time.time()))
        self._worker.join(timeout=10)
        try:
            self.socket.disconnect()
        except Exception:  # noqa: BLE001 - a connection that is already gone is closed enough
            pass
        self.http.close()

    # -- the console's API ------------------------------------------------------------------------

    def _post(self, path: str, payload: dict[str, Any] | None = None, method: str = "POST") -> requests.Response:
        return self.http.request(method, f"{self.api_url}{path}", json=payload or {}, headers={"X-CSRFToken": self.csrf},
                                 timeout=60)

    def _post_until_served(self, path: str, payload: dict[str, Any] | None = None, patience_s: float = 60) -> requests.Response:
        """POST as a person would press the button again: while the service cannot be reached or
        answers 5xx (a database outage, a process restarting), try again every second, for a while."""
        deadline = time.time() + patience_s
        while True:
            try:
                answer = self._post(path, payload)
            except requests.ConnectionError:
                if time.time() > deadline or self._stop.is_set():
                    raise
            else:
                if answer.status_code < 500 or time.time() > deadline or self._stop.is_set():
                    return answer
            time.sleep(1)

    def _go_available(self) -> None:
        stamp = time.time()
        answer = self._post_until_served("/api/me/status", {"status": "available"})
        if answer.status_code == 200:
            self.log.free_at.append(stamp)
            self.presence = answer.json().get("presence", "available")
        else:
            self.log.errors.append(f"status available -> {answer.status_code} {answer.text[:200]}")

    # -- the working loop ---------------------------------------------------------------------------

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                name, data, stamp = self._inbox.get(timeout=1)
            except queue.Empty:
                continue
            try:
                self._handle(name, data, stamp)
            except Exception as exc:  # noqa: BLE001 - one failed step is recorded; the handler carries on
                log.exception("handler %s: %s failed", self.username, name)
                self.log.errors.append(f"{name}: {exc.__class__.__name__}: {exc}")

    def _handle(self, name: str, data: Any, stamp: float) -> None:
        if name == "presence":
            self.presence = data["presence"]
            if self.presence == "break":
                # An offer timed out (the service puts the handler on a break): a person would come back.
                self.log.missed_offers += 1
                self._go_available()
            elif self.presence == "offline" and not self._stop.is_set():
                # The console lost its process (it crashed) and the service took the handler off the
                # line; the console, connected again, says so: a person would make themselves available.
                self._go_available()
        elif name == "offer":
            call_id = int(data["call_id"])
            if call_id not in self.log.offers:
                self.log.offers[call_id] = stamp
                self.log.offers_made[call_id] = dt.datetime.fromisoformat(data["offered_at"]).timestamp()
            self._take(call_id)

    def _take(self, call_id: int) -> None:
        """Accept the offered call, talk, hang up, wrap up, and be free again."""
        sent = time.time()
        answer = self._post(f"/api/calls/{call_id}/accept")
        self.log.accepts.append((call_id, sent, time.time(), answer.status_code))
        if answer.status_code != 200:
            # Taken by someone else or gone (the caller hung up): nothing to do but wait for the next.
            return
        self.calls_taken += 1
        talk_until = time.time() + self.rng.uniform(*self.pace.talk_s)
        booked = False
        if self.pace.book_every and self.rng.random() < 1 / self.pace.book_every:
            booked = self._book(call_id)
        time.sleep(max(0.0, talk_until - time.time()))
        self._hang_up(call_id)
        self._await_wrap_up(call_id)
        time.sleep(self.rng.uniform(*self.pace.wrap_up_s))
        stamp = time.time()
        done = self._post_until_served(f"/api/calls/{call_id}/wrap-up", {"outcome": "booked" if booked else "advice_given"})
        if done.status_code == 200:
            self.presence = done.json().get("presence", "available")
            self.log.free_at.append(stamp)
        else:
            self.log.errors.append(f"wrap-up {call_id} -> {done.status_code} {done.text[:200]}")
            self._go_available()

    def _hang_up(self, call_id: int) -> None:
        """The handler presses End call, as the console does: the service ends every leg and starts
        wrap-up. (A softphone that simply drops is a lost handler: the service holds the caller and
        rings again.) A 409 means the caller hung up first, which ends the call too. Pressed again
        while the service cannot act on it."""
        ended = self._post_until_served(f"/api/calls/{call_id}/hangup")
        if ended.status_code == 200:
            self.presence = ended.json().get("presence", "wrap_up")
        elif ended.status_code != 409:
            self.log.errors.append(f"end call {call_id} -> {ended.status_code} {ended.text[:200]}")

    def _await_wrap_up(self, call_id: int, timeout: float = 30) -> None:
        """Wait for the service to say the call is over (presence `wrap_up`), handling other events meanwhile."""
        deadline = time.time() + timeout
        while self.presence != "wrap_up" and time.time() < deadline:
            try:
                name, data, _stamp = self._inbox.get(timeout=0.5)
            except queue.Empty:
                continue
            if name == "presence":
                self.presence = data["presence"]
            elif name == "stop":
                self._stop.set()
                return
        if self.presence != "wrap_up":
            self.log.errors.append(f"call {call_id}: no wrap_up within {timeout:g}s (presence {self.presence})")

    def _book(self, call_id: int) -> bool:
        """Record the caller's first contact and book them the first free slot (another on a clash)."""
        contact = self._post(f"/api/calls/{call_id}/contact", CONTACT, method="PUT")
        if contact.status_code != 200:
            self.log.errors.append(f"contact {call_id} -> {contact.status_code} {contact.text[:200]}")
            return False
        slots = self.http.get(f"{self.api_url}/api/clinicians/slots", params={"limit": 50}, timeout=60)
        choices = slots.json().get("slots", []) if slots.status_code == 200 else []
        if not choices:
            self.log.errors.append(f"no slots to book ({slots.status_code})")
            return False
        slot_id = self.rng.choice(choices)["id"]
        for _ in range(3):
            started = time.time()
            answer = self._post("/api/bookings", {"call_id": call_id, "slot_id": slot_id})
            self.log.bookings.append((call_id, time.time() - started, answer.status_code))
            if answer.status_code == 201:
                return True
            following = (answer.json().get("detail") or {}).get("next_slots") if answer.status_code == 409 else None
            if not following:
                self.log.errors.append(f"booking {call_id} -> {answer.status_code} {answer.text[:200]}")
                return False
            slot_id = following[0]["id"]
        return False
