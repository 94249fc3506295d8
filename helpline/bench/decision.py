"""The routing decision with a long line: `routing.route` timed directly, 10,000 calls waiting.

A fresh database (SQLite file, or a fresh PostgreSQL database) gets the waiting calls, spread over
the needs, and one free handler with a live console. Each repetition runs the whole decision - find
the free handlers, the head of each need's line, choose, and make the offer with its conditional
UPDATEs - on the router's own connection, as `routing.route_now` does. The pass then commits, as in
service, and the offer is undone, both outside the timing, so that every repetition decides about
the same line. (Rolling back instead would be wrong here: psycopg forgets its prepared statements
at every rollback, which the router's connection does not do in service.)

The first repetitions are reported apart (`first_ms`) and left out of the percentiles. On
PostgreSQL they are the decisions before psycopg prepares the router's statements (on their sixth
run on a connection), which the router's own connection does once in a process's life, in its
first seconds; the percentiles are the decision as the router makes it all day after that.

Two lines are timed: the ordinary one, whose first call the free handler can take, and the hard
line, where the first nine in ten calls ask for a language the handler does not speak and have not
waited long enough for the fallback, so routing must find the first call the handler can take behind
them (an index seek on the calls' language, never a walk over the line).

To time only the decision, without the rest of the benchmark:
`python -c 'from pathlib import Path; from helpline.bench.decision import time_routing_decision;
print(time_routing_decision("postgresql", "postgresql+psycopg://postgres@127.0.0.1:5432/test", 10_000, Path("/tmp")))'`
("sqlite" and None for SQLite; the folder holds its database file).
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import delete, insert, update

from ..config import RoutingSettings
from ..db import Database, upgrade
from ..models import Call, CallEvent, ConsoleConnection, Handler, QueueEntry, User
from .report import percentile

NEEDS = ("mental_health", "addiction", "return_to_work", "speak_now")
REPETITIONS = 300
#: Decisions timed before the percentiles' (see the module's docstring): past psycopg's prepare threshold.
FIRST = 10


def _fill(database: Database, waiting: int, hard: bool, now: dt.datetime) -> None:
    """`waiting` calls in line (oldest first) and one available handler with a console open."""
    with database.transaction() as session:
        user = session.execute(insert(User).returning(User.id), [{
            "username": f"decider-{uuid.uuid4().hex[:8]}", "display_name": "Decision bench", "role": "handler",
            "password_hash": "-", "active": True, "failed_logins": 0, "created_at": now}]).scalar_one()
        handler = session.execute(insert(Handler).returning(Handler.id), [{
            "user_id": user, "presence": "available", "presence_since": now, "available_since": now,
            "skills": ["mental_health", "addiction", "return_to_work"], "languages": ["en"]}]).scalar_one()
        session.execute(insert(ConsoleConnection), [{"sid": uuid.uuid4().hex, "handler_id": handler, "process": "bench",
                                                     "connected_at": now, "seen_at": now}])
        start = now - dt.timedelta(seconds=30)  # within the skill fallback wait: nobody may take a call that does not fit
        calls = [{"call_sid": f"CA{index:032x}", "started_at": start, "step": "queue", "ivr_path": [], "answers": {},
                  "flags": [], "twilio_sequence": -1, "caller_number_status": "withheld"} for index in range(1, waiting + 1)]
        session.execute(insert(Call), calls)
        ids = list(session.scalars(Call.__table__.select().with_only_columns(Call.id).order_by(Call.id)))
        entries = []
        for position, call_id in enumerate(ids):
            unfit = hard and position < waiting * 9 // 10
            entries.append({"call_id": call_id, "kind": "live", "state": "waiting", "need": NEEDS[position % len(NEEDS)],
                            "flags": ["language:cy"] if unfit else [], "language": "cy" if unfit else None, "priority": 100,
                            "placed_at": start + dt.timedelta(microseconds=position), "declined_by": [], "attempts": 0})
        session.execute(insert(QueueEntry), entries)


def _time(database: Database, settings: RoutingSettings, now: dt.datetime) -> list[float]:
    from .. import routing

    sessions = database.own_connection("router")
    timings = []
    for _ in range(FIRST + REPETITIONS):
        with database.transaction(sessions) as session:
            started = time.perf_counter()
            offers = routing.route(session, settings, now)
            timings.append((time.perf_counter() - started) * 1000)
        if len(offers) != 1:
            raise RuntimeError(f"routing made {len(offers)} offers; the bench expects exactly one")
        _undo(database, sessions, offers[0])
    return timings


def _undo(database: Database, sessions: Any, offer: Any) -> None:
    """Put the offered call back in line and the handler back to free, as they were."""
    with database.transaction(sessions) as session:
        session.execute(update(QueueEntry).where(QueueEntry.call_id == offer.call_id)
                        .values(state="waiting", handler_id=None, offered_at=None))
        session.execute(update(Handler).where(Handler.id == offer.handler_id)
                        .values(presence="available", presence_since=offer.offered_at, current_call_id=None))
        session.execute(delete(CallEvent).where(CallEvent.call_id == offer.call_id))


def _fresh_database(kind: str, postgres_url: str | None, folder: Path) -> tuple[str, Any]:
    """A new database URL, and a function that drops it (or None)."""
    if kind == "sqlite":
        return f"sqlite:///{folder / f'decision-{uuid.uuid4().hex[:6]}.db'}", None
    return scratch_postgres(postgres_url, "helpline_decision")


def scratch_postgres(postgres_url: str | None, prefix: str) -> tuple[str, Any]:
    """Create a uniquely named PostgreSQL database on the server of `postgres_url`; return its URL
    and a function that drops it again (the benchmark never touches an existing database)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    server = make_url(postgres_url or "")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    # No pool: the drop must work after PostgreSQL has restarted under the run (the fault tests restart it).
    admin = create_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return server.set(database=name).render_as_string(hide_password=False), drop


def time_routing_decision(kind: str, postgres_url: str | None, waiting: int, folder: Path) -> dict[str, Any]:
    """Time `routing.route` with `waiting` calls in line; returns p50/p99 for the usual and the hard line."""
    settings = RoutingSettings(offer_timeout_s=20, wrap_up_s=120, skill_fallback_after_s=60)
    results: dict[str, Any] = {"waiting": waiting, "database": kind, "repetitions": REPETITIONS, "first": FIRST}
    for hard in (False, True):
        url, drop = _fresh_database(kind, postgres_url, folder)
        database = Database()
        try:
            upgrade(url)
            database.configure(url)
            now = dt.datetime.now(dt.timezone.utc)
            _fill(database, waiting, hard, now)
            if kind == "postgresql":
                with database.transaction() as session:
                    session.connection().exec_driver_sql("ANALYZE")
            timings = _time(database, settings, now)
        finally:
            database.dispose()
            if drop is not None:
                drop()
        prefix = "hard_" if hard else ""
        first, rest = timings[:FIRST], timings[FIRST:]
        results[f"{prefix}first_ms"] = [round(one, 3) for one in first]
        results[f"{prefix}ms_p50"] = round(percentile(rest, 0.5) or 0, 3)
        results[f"{prefix}ms_p99"] = round(percentile(rest, 0.99) or 0, 3)
    return results
