"""Shared fixtures: a fresh app on a fresh, migrated database for every test, and signed Twilio requests."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event
from sqlalchemy.engine import Engine
from twilio.request_validator import RequestValidator

from helpline import create_app
from helpline.config import load_settings
from helpline.db import db, upgrade

PUBLIC_URL = "https://helpline.test"
AUTH_TOKEN = "test-auth-token-" + "0" * 16
ACCOUNT_SID = "AC" + "1" * 32
#: Always open, so that tests about the IVR do not depend on the time of day they run.
ALWAYS_OPEN = {day: ["00:00-24:00"] for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}


def postgres_url() -> str | None:
    """The PostgreSQL server to test against, when the machine has one (CI sets it)."""
    return os.environ.get("HELPLINE_TEST_POSTGRES_URL")


def fresh_postgres_database(base_url: str) -> Iterator[str]:
    """Create an empty, uniquely named PostgreSQL database for one test and drop it afterwards."""
    from sqlalchemy import create_engine, text

    name = f"helpline_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        db.dispose()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def migrated_database(kind: str, folder: Path) -> Iterator[str]:
    """A migrated, empty database of `kind`: a SQLite file in `folder`, or a fresh PostgreSQL database."""
    if kind == "sqlite":
        url = f"sqlite:///{folder / 'helpline.db'}"
        upgrade(url)
        yield url
        return
    base = postgres_url()
    if not base:
        pytest.skip("HELPLINE_TEST_POSTGRES_URL is not set")
    for url in fresh_postgres_database(base):
        upgrade(url)
        yield url


DATABASES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database: SQLite always, PostgreSQL too when HELPLINE_TEST_POSTGRES_URL is set."""
    yield from migrated_database(request.param, tmp_path)


@pytest.fixture(scope="module", params=DATABASES)
def module_database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Like `database_url`, shared by one module's tests (for the slower, process-level tests)."""
    yield from migrated_database(request.param, tmp_path_factory.mktemp("db"))


def test_overrides(database_url: str, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    """Configuration for a test app: isolated instance folder, known Twilio credentials, always open."""
    overrides: dict[str, Any] = {
        "public_url": PUBLIC_URL,
        "database_url": database_url,
        "instance_path": str(tmp_path / "instance"),
        "encryption_key": None,
        "twilio": {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN},
        "opening_hours": {"weekly": ALWAYS_OPEN, "closed_dates": []},
        # Tests log in with a username and password, as acceptance tests do; the second factor has its own tests.
        "security": {"require_mfa": False},
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(overrides.get(key), dict):
            value = {**overrides[key], **value}  # security={...} keeps require_mfa off unless it says otherwise
        overrides[key] = value
    return overrides


@pytest.fixture
def app_factory(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Build test apps with extra configuration; the database is shared between them."""
    for variable in ("HELPLINE_CONFIG", "HELPLINE_DATABASE_URL", "HELPLINE_PUBLIC_URL", "TWILIO_AUTH_TOKEN",
                     "TWILIO_ACCOUNT_SID", "HELPLINE_ENCRYPTION_KEY", "HELPLINE_SECRET_KEY", "HELPLINE_REQUIRE_MFA"):
        monkeypatch.delenv(variable, raising=False)

    def build(**extra: Any) -> Flask:
        app = create_app(settings=load_settings(test_overrides(database_url, tmp_path, **extra), environ={}))
        app.config["TESTING"] = True
        return app

    yield build
    db.dispose()


@pytest.fixture
def app(app_factory: Any) -> Flask:
    """The service, configured for tests."""
    return app_factory()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client for the service."""
    return app.test_client()


class Twilio:
    """Sends webhooks to the service the way Twilio does: form-encoded and signed."""

    def __init__(self, client: FlaskClient, token: str = AUTH_TOKEN):
        self.client = client
        self.validator = RequestValidator(token)

    def post(self, url: str, params: dict[str, str] | None = None, signed: bool = True, **kwargs: Any):  # type: ignore[no-untyped-def]
        """POST `params` to `url` (a path, or absolute under the public URL), signed unless told not to."""
        path = url.removeprefix(PUBLIC_URL)
        params = params or {}
        headers = {}
        if signed:
            headers["X-Twilio-Signature"] = self.validator.compute_signature(PUBLIC_URL + path, params)
        return self.client.post(path, data=params, headers=headers, **kwargs)


@pytest.fixture
def twilio(client: FlaskClient) -> Twilio:
    """A Twilio stand-in that signs webhooks for the test app."""
    return Twilio(client)


def new_call_sid() -> str:
    """A fresh, well-formed Twilio call SID."""
    return "CA" + secrets.token_hex(16)


@dataclass(frozen=True)
class Sent:
    """One statement an engine sent to the database, and whether its connection was in autocommit."""

    sql: str
    autocommit: bool

    def head(self, words: int = 1) -> str:
        """The statement's first `words` words ("SELECT", "UPDATE handlers SET", ...)."""
        return " ".join(self.sql.split()[:words])


@contextlib.contextmanager
def statements_sent(engine: Engine, *, transaction_control: bool = True) -> Iterator[list[Sent]]:
    """Every statement `engine` sends while the block runs; without BEGIN, COMMIT and ROLLBACK if
    `transaction_control` is False (SQLite's BEGIN is a statement, psycopg's is not)."""
    sent: list[Sent] = []

    def spy(connection, _cursor, statement, *_args):  # type: ignore[no-untyped-def]
        if transaction_control or not statement.startswith(("BEGIN", "COMMIT", "ROLLBACK")):
            sent.append(Sent(statement, bool(getattr(connection.connection.dbapi_connection, "autocommit", False))))

    event.listen(engine, "before_cursor_execute", spy)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", spy)


@contextlib.contextmanager
def round_trips(engine: Engine, folder: Path) -> Iterator[Callable[[], int]]:
    """Count the round trips to PostgreSQL while the block runs: a function that says how many so far.

    libpq traces every message each pooled connection sends; a round trip ends with each simple
    Query or each Sync (one per statement, or one for a whole pipeline). Counting them, not the
    statements SQLAlchemy sees, also counts psycopg's own BEGIN and COMMIT and what goes in pipelines.
    """
    from psycopg import pq

    log = folder / f"libpq-{uuid.uuid4().hex[:8]}.trace"
    with open(log, "w") as sink:

        def trace(dbapi_connection):  # type: ignore[no-untyped-def]
            dbapi_connection.pgconn.trace(sink.fileno())
            dbapi_connection.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)

        def count() -> int:
            sink.flush()
            sent = [line.split("\t") for line in log.read_text().splitlines()]
            return sum(1 for fields in sent if len(fields) > 2 and fields[0] == "F" and fields[2].startswith(("Sync", "Query")))

        with each_connection(engine, trace, lambda dbapi_connection: dbapi_connection.pgconn.untrace()):
            yield count


@contextlib.contextmanager
def sqlite_statements(engine: Engine) -> Iterator[list[str]]:
    """Every statement SQLite runs on `engine`'s connections while the block runs, as the driver sees
    them: those SQLAlchemy runs, and those the service runs on the driver itself (db.load_one, the
    writes of ServiceSession.commit), which SQLAlchemy's events do not see."""
    sent: list[str] = []
    with each_connection(engine, lambda dbapi_connection: dbapi_connection.set_trace_callback(sent.append),
                         lambda dbapi_connection: dbapi_connection.set_trace_callback(None)):
        yield sent


@contextlib.contextmanager
def each_connection(engine: Engine, start: Callable[[Any], Any], stop: Callable[[Any], Any]) -> Iterator[None]:
    """`start` on each driver connection `engine` hands out while the block runs; `stop` on each after it."""
    started: list[Any] = []

    def checked_out(dbapi_connection, *_args):  # type: ignore[no-untyped-def]
        start(dbapi_connection)
        started.append(dbapi_connection)

    event.listen(engine, "checkout", checked_out)
    try:
        yield
    finally:
        event.remove(engine, "checkout", checked_out)
        for dbapi_connection in started:
            stop(dbapi_connection)


def assert_statements(sent: list[str], expected: list[str], database_url: str) -> None:
    """`sent` is `expected` on PostgreSQL; on SQLite, which inserts a table's rows one by one (in-process,
    so it costs little), the same apart from the INSERTs."""
    if database_url.startswith("postgresql"):
        assert sent == expected
    else:
        assert [one for one in sent if not one.startswith("INSERT")] == [one for one in expected if not one.startswith("INSERT")]


#: An ISO 8601 timestamp, as the API and the timelines write them.
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:[+-]\d\d:\d\d|Z)?")


#: The days of `opening_hours.weekly`, Monday first (as `date.weekday()` counts them).
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def open_one_day_only(hours: str) -> tuple[dict[str, list[str]], str]:
    """Weekly opening hours open for `hours` on one day only, the day after tomorrow in London, and
    that day's name as the IVR speaks it. The line is then closed whenever the test runs: a fixed
    day (open on Mondays) failed every Monday while it was open."""
    import datetime as dt
    from zoneinfo import ZoneInfo

    day = dt.datetime.now(ZoneInfo("Europe/London")).date() + dt.timedelta(days=2)
    return {name: [] for name in WEEKDAYS} | {WEEKDAYS[day.weekday()]: [hours]}, day.strftime("%A")


def shows_number(text: str, fragment: str = "7911") -> bool:
    """Whether `text` holds `fragment` of the test caller's number (+44 7911 ...) anywhere but in a
    timestamp, whose microseconds hold any four digits by chance (".907911")."""
    return fragment in TIMESTAMP.sub("<time>", text)


@pytest.fixture
def smtp_catcher(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """A real SMTP server (the emulator's catcher) that HELPLINE_SMTP_URL points at."""
    from helpline.emulator.events import EventLog
    from helpline.emulator.mailbox import MailCatcher

    log = EventLog()
    catcher = MailCatcher(log)
    monkeypatch.setenv("HELPLINE_SMTP_URL", f"smtp://{catcher.address}")
    caught: list[dict[str, Any]] = []

    class View(list):  # type: ignore[type-arg]
        def __iter__(self):  # type: ignore[no-untyped-def]
            return iter(log.since(0))

        def __len__(self) -> int:
            return len(log.since(0))

    try:
        yield View(caught)  # type: ignore[misc]
    finally:
        catcher.stop()


def pytest_itemcollected(item: pytest.Item) -> None:
    """Under pytest-xdist (scripts/test runs one worker a core) each file's tests run on one worker,
    in order, so a module's fixtures (a running stack, an identity provider) start once and its
    tests may build on each other; the tests that start several processes of their own share one
    worker (`xdist_group("processes")`), so they never compete with each other."""
    if item.get_closest_marker("xdist_group") is None:
        item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))
