"""Helpers for the multi-process and fault tests: a two-process stack on PostgreSQL and Redis, and a
console (HTTP session plus Socket.IO client) that records what it is sent."""

from __future__ import annotations

import os
import queue
import re
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import requests
import socketio

from helpline.bench.stack import Stack, StackOptions

PASSWORD = "a long password for the multi-process tests"


def servers() -> tuple[str, str]:
    """The PostgreSQL and Redis URLs to test against, or skip."""
    postgres, redis_url = os.environ.get("HELPLINE_TEST_POSTGRES_URL"), os.environ.get("HELPLINE_TEST_REDIS_URL")
    if not postgres or not redis_url:
        pytest.skip("HELPLINE_TEST_POSTGRES_URL and HELPLINE_TEST_REDIS_URL are needed")
    return postgres, redis_url


def two_process_stack(workdir: Path, **settings: Any) -> Iterator[Stack]:
    """Two `helpline serve` processes, the emulator and one `helpline scheduler`, on a fresh database."""
    postgres, redis_url = servers()
    options = StackOptions(workdir=workdir, database="postgresql", postgres_url=postgres, redis_url=redis_url, processes=2,
                           time_scale=0.05, consoles_per_process=8, settings=settings)
    with Stack(options) as stack:
        yield stack


def scalar(stack: Stack, statement: Any, **params: Any) -> Any:
    """One value from the stack's database (the engine is disposed of at once)."""
    engine = stack.sql_engine()
    try:
        with engine.connect() as connection:
            return connection.execute(statement, params).scalar()
    finally:
        engine.dispose()


def create_handler(stack: Stack, username: str, role: str = "handler") -> None:
    """`helpline create-user USERNAME --role handler` (or another role)."""
    created = stack.cli("create-user", username, "--role", role, "--password-stdin", stdin=PASSWORD + "\n")
    assert created.returncode == 0, created.stderr


class Console:
    """A handler's browser: logged in over HTTP at one process, its Socket.IO connection there too."""

    def __init__(self, base_url: str, username: str, reconnect: bool = False):
        self.base = base_url
        self.http = requests.Session()
        self.http.trust_env = False
        page = self.http.get(f"{self.base}/login", timeout=10).text
        self.token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        answer = self.http.post(f"{self.base}/login", data={"username": username, "password": PASSWORD, "csrf_token": self.token},
                                allow_redirects=False, timeout=10)
        assert answer.status_code == 302, answer.text
        # A log-in starts a new session with a new CSRF token: the console's pages carry it.
        self.token = re.search(r'<meta name="csrf-token" content="([^"]+)"', self.http.get(f"{self.base}/account", timeout=10).text).group(1)  # type: ignore[union-attr]
        self.me = self.http.get(f"{self.base}/api/me", timeout=10).json()
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.connects = 0
        self.socket = socketio.Client(http_session=self.http, reconnection=reconnect, reconnection_delay=0.2,
                                      reconnection_delay_max=1)
        for name in ("queue", "offer", "offer_withdrawn", "presence", "connect_failed", "wallboard"):
            self.socket.on(name, lambda data, name=name: self.events.put((name, data)), namespace="/console")
        self.socket.on("connect", self._connected, namespace="/console")
        self.socket.connect(self.base, namespaces=["/console"], transports=["websocket"], wait_timeout=10)

    def _connected(self) -> None:
        self.connects += 1

    @property
    def handler_id(self) -> int:
        return int(self.me["handler_id"])

    @property
    def identity(self) -> str:
        return f"client:{self.me['softphone']}"

    def post(self, path: str, payload: dict[str, Any] | None = None, base: str | None = None) -> requests.Response:
        """A state-changing API call, with the CSRF token, to this console's process or to `base`."""
        return self.http.post(f"{base or self.base}{path}", json=payload or {}, headers={"X-CSRFToken": self.token}, timeout=30)

    def wait_for(self, name: str, check: Callable[[Any], bool] = lambda data: True, timeout: float = 20) -> Any:
        """The next `name` event whose payload passes `check`."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {name} event within {timeout}s")
            try:
                event, data = self.events.get(timeout=remaining)
            except queue.Empty:
                continue
            if event == name and check(data):
                return data

    def close(self) -> None:
        try:
            self.socket.disconnect()
        finally:
            self.http.close()


def wait_until(check: Callable[[], Any], timeout: float, message: str | Callable[[], str], every: float = 0.25) -> Any:
    """Poll `check` until it returns something true; fail with `message` after `timeout` seconds
    (a function is called then, to say what was seen at the time of the failure)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(message() if callable(message) else message)
        time.sleep(every)
