"""The PostgreSQL connection pool: a connection used a moment ago is handed out without a ping; one
that has lain idle is pinged, and replaced if its server side has gone. And statements sent together
in a pipeline (`run_together`, `ServiceSession.commit`)."""

from __future__ import annotations

import contextlib

import pytest
from sqlalchemy import create_engine, func, text

from helpline import db as db_module
from helpline.db import make_engine

from .conftest import postgres_url

pytestmark = pytest.mark.postgres


@pytest.fixture
def engine():  # type: ignore[no-untyped-def]
    base = postgres_url()
    if not base:
        pytest.skip("HELPLINE_TEST_POSTGRES_URL is not set")
    made = make_engine(base)
    pings: list[object] = []
    ping = made.dialect.do_ping

    def counted(dbapi_connection):  # type: ignore[no-untyped-def]
        pings.append(dbapi_connection)
        return ping(dbapi_connection)

    made.dialect.do_ping = counted  # type: ignore[method-assign]
    yield made, pings
    made.dispose()


def _backend_pid(engine) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _terminate(pid: int) -> None:
    admin = create_engine(postgres_url() or "", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            assert connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar_one()
    finally:
        admin.dispose()


def test_a_connection_used_a_moment_ago_is_not_pinged(engine):  # type: ignore[no-untyped-def]
    engine, pings = engine
    first = _backend_pid(engine)
    for _ in range(5):
        assert _backend_pid(engine) == first
    assert pings == []


def test_an_idle_connection_is_pinged_and_replaced_when_dead(engine, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    engine, pings = engine
    dead = _backend_pid(engine)
    _terminate(dead)
    monkeypatch.setattr(db_module, "PING_AFTER_IDLE_S", 0.0)
    # Without the ping this checkout would hand out the dead connection and the query would fail.
    alive = _backend_pid(engine)
    assert alive != dead
    assert len(pings) == 1


def test_an_idle_live_connection_is_pinged_and_kept(engine, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    engine, pings = engine
    first = _backend_pid(engine)
    monkeypatch.setattr(db_module, "PING_AFTER_IDLE_S", 0.0)
    assert _backend_pid(engine) == first
    assert len(pings) == 1


def test_the_router_keeps_a_connection_whose_statements_stay_prepared(app, database_url):  # type: ignore[no-untyped-def]
    """psycopg prepares a statement on its sixth run on a connection and forgets them all when the
    connection rolls back; routing passes run on a connection of their own, which requests (whose
    read-only transactions end in a rollback) never touch, so PostgreSQL stops planning them."""
    from helpline import routing
    from helpline.db import db

    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite shares its pool: there is nothing to prepare server-side")
    from .routing_factories import handler

    router = db.own_connection("router")
    assert db.own_connection("router") is router
    with db.transaction(router) as session:
        router_pid = session.scalar(text("SELECT pg_backend_pid()"))

    def passes_then_prepared() -> list[str]:
        for _ in range(7):
            routing.route_now(app)
            with db.transaction() as request:  # a request that only reads ends in a rollback
                request.scalar(text("SELECT 1"))
                request.rollback()
        with db.transaction(router) as session:
            assert session.scalar(text("SELECT pg_backend_pid()")) == router_pid
            return list(session.scalars(text("SELECT statement FROM pg_prepared_statements")))

    # With nobody free, a pass is only the read that says so, outside any transaction.
    prepared = passes_then_prepared()
    assert any(statement.startswith("SELECT count(*)") and "FROM handlers" in statement for statement in prepared)
    assert not any("pg_advisory_xact_lock" in statement for statement in prepared)
    with db.transaction() as session:
        handler(session)
    prepared = passes_then_prepared()
    assert any("pg_advisory_xact_lock" in statement for statement in prepared)
    assert any(statement.startswith("SELECT handlers.id") for statement in prepared)


def test_statements_run_together_answer_as_if_run_one_by_one(app, database_url):  # type: ignore[no-untyped-def]
    from sqlalchemy import literal_column, select

    from helpline.db import db, run_together

    first, second = select(literal_column("1")), select(literal_column("2"), literal_column("3")).where(text("2 > :floor"))
    with db.transaction() as session:
        assert run_together(session, (first, {}), (second, {"floor": 1})) == [[(1,)], [(2, 3)]]
        assert run_together(session, (second, {"floor": 5})) == [[]]


def test_statements_run_together_give_values_typed_as_sqlalchemy_types_them(app, database_url):  # type: ignore[no-untyped-def]
    """The routing pass reads the line through run_together: a timestamp comes back with its zone and
    JSON as a list on either database (SQLite's driver gives both as text), as session.execute gives
    them; a union of selects and a count are typed the same way."""
    from sqlalchemy import func, select, union_all

    from helpline import lifecycle
    from helpline.db import db, run_together
    from helpline.models import QueueEntry, utcnow

    with app.app_context():
        now = utcnow()
        call = lifecycle.call_for_webhook(db.session, "CA" + "5" * 32, "ringing", new=True)
        lifecycle.join_line(db.session, call, now)
        call.queue_entry.flags = ["language:cy"]
        db.session.commit()
    columns = (QueueEntry.id, QueueEntry.placed_at, QueueEntry.flags, QueueEntry.declined_by, QueueEntry.language)
    line = select(*columns).where(QueueEntry.state == "waiting")
    both = union_all(line, line)
    count = select(func.count(QueueEntry.id))
    with db.transaction() as session:
        rows, twice, counted = run_together(session, (line, {}), (both, {}), (count, {}))
        expected = [tuple(row) for row in session.execute(line)]
        assert [tuple(row) for row in rows] == expected and [tuple(row) for row in twice] == expected * 2
        (entry_id, placed_at, flags, declined_by, language), = rows
        assert placed_at == now and placed_at.tzinfo is not None
        assert (flags, declined_by, language) == (["language:cy"], [], "cy")
        assert [tuple(row) for row in counted] == [(1,)]


def test_rows_read_on_the_driver_see_pending_changes_unless_autoflush_is_off(app, database_url):  # type: ignore[no-untyped-def]
    """db.read_rows (a caller's place in line): the same answer as session.execute, with the session's
    pending changes written first as the ORM would, and left unwritten under no_autoflush."""
    from sqlalchemy import bindparam, func, select

    from helpline import lifecycle
    from helpline.db import db, read_rows
    from helpline.models import Call

    count = select(func.count(Call.id)).where(Call.call_sid != bindparam("not_sid"))
    with app.app_context():
        lifecycle.call_for_webhook(db.session, "CA" + "1" * 32, "ringing", new=True)
        db.session.commit()
        db.session.add(Call(call_sid="CA" + "2" * 32, twilio_status="ringing"))
        with db.session.no_autoflush:
            assert read_rows(db.session, count, {"not_sid": "none"}) == [(1,)]
        assert read_rows(db.session, count, {"not_sid": "none"}) == [(2,)]
        assert read_rows(db.session, count, {"not_sid": "CA" + "1" * 32}) == db.session.execute(
            count, {"not_sid": "CA" + "1" * 32}).all() == [(1,)]
        db.session.rollback()


def test_a_parameter_used_twice_in_a_statement_is_processed_once(app, database_url):  # type: ignore[no-untyped-def]
    """A timestamp named twice (bindparam("at") in two places) goes to the driver once, processed
    once: processed twice, SQLite's text form of it failed as a timestamp."""
    from sqlalchemy import bindparam, func, or_, select

    from helpline.db import db, read_rows
    from helpline.models import Call, utcnow

    twice = select(func.count(Call.id)).where(or_(Call.started_at < bindparam("at"), Call.started_at == bindparam("at")))
    with app.app_context():
        assert read_rows(db.session, twice, {"at": utcnow()}) == [(0,)]
        db.session.rollback()


def test_statements_run_together_on_a_dead_connection_fail_cleanly_and_the_next_use_reconnects(app, database_url):  # type: ignore[no-untyped-def]
    from sqlalchemy import literal_column, select
    from sqlalchemy.exc import OperationalError

    from helpline.db import db, run_together

    if not database_url.startswith("postgresql"):
        pytest.skip("a pipeline is PostgreSQL's")
    router = db.own_connection("router")
    with db.transaction(router) as session:
        dead = session.scalar(text("SELECT pg_backend_pid()"))
    _terminate(dead)
    with pytest.raises(OperationalError):
        with db.transaction(router) as session:
            run_together(session, (select(literal_column("1")), {}))
    with db.transaction(router) as session:
        assert session.scalar(text("SELECT pg_backend_pid()")) != dead


def test_rows_committed_with_the_session_are_written_and_announced_once_committed(app, database_url, tmp_path):  # type: ignore[no-untyped-def]
    from sqlalchemy import func, select

    from helpline.db import db
    from helpline.events import announce
    from helpline.models import Call, WebhookReply

    from .conftest import round_trips

    heard: list[str] = []
    db.bus.subscribe("test_committed", lambda **data: heard.append(data["sid"]))
    with app.app_context(), contextlib.ExitStack() as stack:
        wire = stack.enter_context(round_trips(db.engine, tmp_path)) if database_url.startswith("postgresql") else None
        session = db.session
        session.add(Call(call_sid="CA" + "a" * 32))
        session.flush()  # BEGIN and the INSERT
        before = wire() if wire is not None else 0
        announce(session, "test_committed", sid="CA" + "a" * 32)
        session.add(WebhookReply(call_sid="CA" + "a" * 32, request_key="one", body="<Response/>"))
        session.add(WebhookReply(call_sid="CA" + "a" * 32, request_key="two", body="<Response/>"))
        session.commit()
        if wire is not None:
            assert wire() - before == 1  # both INSERTs and the COMMIT
        assert heard == ["CA" + "a" * 32]  # after the commit, once
        db.session.remove()
        assert db.session.scalar(select(func.count()).select_from(WebhookReply)) == 2
        assert db.session.scalar(select(func.count()).select_from(Call)) == 1


def test_a_row_committed_with_the_session_that_fails_raises_and_writes_nothing(app, database_url):  # type: ignore[no-untyped-def]
    from sqlalchemy import func, select
    from sqlalchemy.exc import IntegrityError

    from helpline.db import db
    from helpline.events import announce
    from helpline.models import Call, WebhookReply

    heard: list[str] = []
    db.bus.subscribe("test_committed", lambda **data: heard.append(data["sid"]))
    with app.app_context():
        db.session.add(WebhookReply(call_sid="CA" + "b" * 32, request_key="taken", body="<Response/>"))
        db.session.commit()
        db.session.add(Call(call_sid="CA" + "b" * 32))
        announce(db.session, "test_committed", sid="CA" + "b" * 32)
        db.session.add(WebhookReply(call_sid="CA" + "b" * 32, request_key="taken", body="<Response/>"))
        with pytest.raises(IntegrityError):
            db.session.commit()  # the unique key is taken: as a retried webhook finds it
        db.session.rollback()
        assert heard == []
        assert db.session.scalar(select(func.count()).select_from(Call)) == 0  # the session's changes too
        assert db.session.scalar(select(func.count()).select_from(WebhookReply)) == 1
        db.session.add(Call(call_sid="CA" + "c" * 32))
        db.session.commit()  # and the session carries on
        assert db.session.scalar(select(func.count()).select_from(Call)) == 1


def test_append_only_rows_committed_with_the_session_keep_their_values_and_order(app, database_url, tmp_path):  # type: ignore[no-untyped-def]
    """A call's timeline lines (an "append" table) go in the COMMIT's pipeline on PostgreSQL, in the
    order they were added, with their defaults (when, no detail) and JSON detail as the ORM would
    write them; so does the call's UPDATE (an "update" table)."""
    from sqlalchemy import select

    from helpline.db import db
    from helpline.models import Call, CallEvent, WebhookReply, utcnow

    from .conftest import round_trips

    with app.app_context(), contextlib.ExitStack() as stack:
        wire = stack.enter_context(round_trips(db.engine, tmp_path)) if database_url.startswith("postgresql") else None
        session = db.session
        call = Call(call_sid="CA" + "d" * 32)
        session.add(call)
        session.flush()  # BEGIN and the call's INSERT
        before, start = (wire() if wire is not None else 0), utcnow()
        lines = [CallEvent(call_id=call.id, kind="step", step="welcome"),
                 CallEvent(call_id=call.id, kind="key", step="menu", detail={"key": "1", "nested": [1, {"a": None}]}),
                 CallEvent(call_id=call.id, kind="outcome", at=start, detail={"outcome": "ended"})]
        for line in lines:
            session.add(line)
        call.step = "menu"
        reply = WebhookReply(call_sid=call.call_sid, request_key="k", body="<Response/>")
        session.add(reply)
        session.commit()
        if wire is not None:
            assert wire() - before == 1  # the call's UPDATE, the lines, the reply and the COMMIT
            assert all(line not in session for line in [*lines, reply])  # they left the session, unwritten by the ORM
        db.session.remove()
        written = db.session.execute(select(CallEvent.kind, CallEvent.step, CallEvent.detail, CallEvent.at)
                                     .order_by(CallEvent.id)).all()
        assert [(kind, step, detail) for kind, step, detail, _ in written] == [
            ("step", "welcome", {}), ("key", "menu", {"key": "1", "nested": [1, {"a": None}]}),
            ("outcome", None, {"outcome": "ended"})]
        assert all(at.tzinfo is not None and at >= start for _, _, _, at in written[:2]) and written[2][3] == start
        assert db.session.scalar(select(Call.step)) == "menu"
        assert db.session.execute(select(WebhookReply.request_key, WebhookReply.status)).one() == ("k", 200)
        assert db.session.scalar(select(WebhookReply.created_at)) >= start


def test_lines_appended_without_an_object_keep_their_order_and_their_transaction(app, database_url, tmp_path):  # type: ignore[no-untyped-def]
    """`append` adds a timeline line as a row, with no ORM object: written with the commit in the
    order added, with its defaults; on PostgreSQL in the COMMIT's round trip; and not at all when
    its transaction rolls back."""
    from sqlalchemy import select

    from helpline.db import append, db
    from helpline.models import Call, CallEvent, utcnow

    from .conftest import round_trips

    with app.app_context(), contextlib.ExitStack() as stack:
        wire = stack.enter_context(round_trips(db.engine, tmp_path)) if database_url.startswith("postgresql") else None
        call = Call(call_sid="CA" + "c" * 32)
        db.session.add(call)
        db.session.commit()
        append(db.session, CallEvent, call_id=call.id, kind="lost", step="welcome")
        db.session.rollback()
        start = utcnow()
        call.step = "menu"  # read back: the BEGIN and the SELECT
        before = wire() if wire is not None else 0
        append(db.session, CallEvent, call_id=call.id, kind="step", step="welcome")
        append(db.session(), CallEvent, call_id=call.id, kind="key", step="menu", detail={"key": "1"})
        append(db.session, CallEvent, call_id=call.id, kind="outcome", at=start, detail={"outcome": "ended"})
        db.session.commit()
        if wire is not None:
            assert wire() - before == 1  # the call's UPDATE, the lines and the COMMIT
        db.session.remove()
        written = db.session.execute(select(CallEvent.kind, CallEvent.step, CallEvent.detail, CallEvent.at)
                                     .order_by(CallEvent.id)).all()
        assert [(kind, step, detail) for kind, step, detail, _ in written] == [
            ("step", "welcome", {}), ("key", "menu", {"key": "1"}), ("outcome", None, {"outcome": "ended"})]
        assert all(at >= start for _, _, _, at in written[:2]) and written[2][3] == start
        assert db.session.scalar(select(Call.step)) == "menu"


def test_append_only_rows_are_not_written_when_the_commit_fails(app, database_url):  # type: ignore[no-untyped-def]
    from sqlalchemy import func, select
    from sqlalchemy.exc import IntegrityError

    from helpline.db import db
    from helpline.models import Call, CallEvent, WebhookReply

    with app.app_context():
        call = Call(call_sid="CA" + "e" * 32)
        db.session.add(call)
        db.session.add(WebhookReply(call_sid=call.call_sid, request_key="taken", body="<Response/>"))
        db.session.commit()
        db.session.add(CallEvent(call_id=call.id, kind="step", step="welcome"))
        db.session.add(WebhookReply(call_sid=call.call_sid, request_key="taken", body="<Response/>"))
        with pytest.raises(IntegrityError):
            db.session.commit()  # a retried webhook
        db.session.rollback()
        assert db.session.scalar(select(func.count()).select_from(CallEvent)) == 0


def test_a_line_tied_to_its_call_by_the_relationship_is_left_to_the_orm(app, database_url):  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from helpline.db import db
    from helpline.models import Call, CallEvent

    with app.app_context():
        call = Call(call_sid="CA" + "f" * 32)
        tied = CallEvent(call=call, kind="incoming")  # its call_id is only known once the call is written
        db.session.add_all([call, tied])
        db.session.commit()
        assert tied.id is not None
        db.session.remove()
        assert db.session.execute(select(CallEvent.kind, CallEvent.call_id)).all() == [("incoming", call.id)]


def test_changed_rows_committed_with_the_session_are_written_once_and_left_clean(app, database_url, tmp_path):  # type: ignore[no-untyped-def]
    """An "update" table's changed columns go in the COMMIT's pipeline on PostgreSQL, JSON and
    timestamps included; the ORM then takes them as written, so nothing is written twice. A
    queue entry set on the call (a relationship kept on the entry's rows) is the flush's to write."""
    from sqlalchemy import select
    from sqlalchemy.orm import joinedload

    from helpline.db import db
    from helpline.models import Call, QueueEntry, utcnow

    from .conftest import round_trips, statements_sent

    with app.app_context(), contextlib.ExitStack() as stack:
        wire = stack.enter_context(round_trips(db.engine, tmp_path)) if database_url.startswith("postgresql") else None
        call = Call(call_sid="CA" + "9" * 32)
        db.session.add(call)
        db.session.commit()
        before, now = (wire() if wire is not None else 0), utcnow()
        call = db.session.scalar(select(Call).options(joinedload(Call.queue_entry)))  # BEGIN and the SELECT (as find_call)
        call.step, call.ivr_path, call.queued_at = "queue", [{"step": "queue", "at": now.isoformat()}], now
        call.queue_entry = QueueEntry(call_id=call.id, placed_at=now)
        sent = stack.enter_context(statements_sent(db.engine, transaction_control=False))
        db.session.commit()
        if wire is not None:
            assert [one.head() for one in sent] == ["INSERT"]  # the entry, in the flush; not the call
            assert wire() - before == 4  # BEGIN, the SELECT, the entry's INSERT; the UPDATE with the COMMIT
        sent.clear()
        db.session.flush()
        assert sent == []  # taken as written
        db.session.remove()
        stored = db.session.scalar(select(Call))
        assert (stored.step, stored.ivr_path, stored.queued_at) == ("queue", [{"step": "queue", "at": now.isoformat()}], now)
        assert stored.queue_entry is not None and stored.queue_entry.placed_at == now


def test_audit_entries_recorded_before_a_pipelined_commit_are_in_its_transaction(app, database_url, tmp_path):  # type: ignore[no-untyped-def]
    """audit.py writes its entries from the session's before-commit hook: the commit runs it before
    the COMMIT goes, not after (which would write them in a second transaction)."""
    from sqlalchemy import select

    from helpline import audit
    from helpline.db import db
    from helpline.models import AuditEntry, Call

    from .conftest import round_trips

    with app.app_context(), contextlib.ExitStack() as stack:
        wire = stack.enter_context(round_trips(db.engine, tmp_path)) if database_url.startswith("postgresql") else None
        call = Call(call_sid="CA" + "8" * 32)
        db.session.add(call)
        db.session.commit()
        before = wire() if wire is not None else 0
        db.session.execute(select(Call.id))  # BEGIN and a SELECT
        call.step = "welcome"
        audit.record(db.session, audit.Actor.system("test"), "contact.update", "contact", 1)
        db.session.commit()
        if wire is not None:
            # BEGIN, the SELECT; the audit lock, chain head and entry; the call's UPDATE with the COMMIT
            assert wire() - before == 6
        db.session.remove()
        assert db.session.scalar(select(AuditEntry.action)) == "contact.update"
        assert db.session.scalar(select(Call.step)) == "welcome"


def test_an_update_sent_with_the_commit_whose_row_has_gone_fails_before_the_commit(app, database_url):  # type: ignore[no-untyped-def]
    """As the ORM's own check: the UPDATE of a row erased while the request ran fails the transaction,
    so nothing of it is written, and no failure is ever reported for a transaction that committed."""
    from sqlalchemy import delete, func, select
    from sqlalchemy.orm.exc import StaleDataError

    from helpline.db import db
    from helpline.models import Call, WebhookReply

    with app.app_context():
        db.session.add(Call(call_sid="CA" + "d" * 32))
        db.session.commit()
        call = db.session.scalar(select(Call))
        db.session.commit()  # the read's transaction ends (on SQLite another could not write meanwhile)
        call.step = "greeting"
        db.session.add(WebhookReply(call_sid="CA" + "d" * 32, request_key="one", body="<Response/>"))
        with db.engine.begin() as other:  # erased meanwhile
            other.execute(delete(Call).where(Call.id == call.id))
        with pytest.raises(StaleDataError):
            db.session.commit()
        db.session.rollback()
        assert db.session.scalar(select(func.count()).select_from(WebhookReply)) == 0
        db.session.add(Call(call_sid="CA" + "e" * 32))
        db.session.commit()  # the session carries on
        db.session.scalar(select(Call)).step = "menu"
        db.session.commit()  # and an UPDATE whose row is there commits without a word
        assert db.session.scalar(select(Call.step)) == "menu"


def test_the_cache_of_compiled_statements_keeps_a_fixed_number(app, database_url, monkeypatch):  # type: ignore[no-untyped-def]
    from sqlalchemy import literal, select

    from helpline import db as database
    from helpline.db import db, run_together

    monkeypatch.setattr(database, "COMPILED_CACHE_SIZE", 4)
    with app.app_context():
        kept = select(literal(1))
        for number in range(20):
            fresh = select(literal(number) + 1)  # a statement built afresh each time
            first, again = run_together(db.session, (fresh, {}), (kept, {}))
            assert [tuple(row) for row in first] == [(number + 1,)] and [tuple(row) for row in again] == [(1,)]
        if database_url.startswith("postgresql"):
            assert len(database._COMPILED) == 4
            assert (id(kept), "postgresql") in database._COMPILED  # in use, so never the least recently used
        db.session.rollback()


def test_a_statement_written_with_the_commit_is_in_its_transaction(app, database_url):  # type: ignore[no-untyped-def]
    """`write_with_commit` is part of the session's transaction: written when it commits, forgotten
    when it rolls back, on both databases."""
    from sqlalchemy import func, insert, select

    from helpline.db import db, with_defaults
    from helpline.models import Call

    def calls() -> int:
        with db.engine.connect() as other:
            return int(other.scalar(select(func.count()).select_from(Call)) or 0)

    with app.app_context():
        session = db.session()
        session.write_with_commit(insert(Call).values(with_defaults(Call.__table__, {"call_sid": "CA" + "f" * 32})))
        session.rollback()
        session.commit()
        assert calls() == 0
        session.write_with_commit(insert(Call).values(with_defaults(Call.__table__, {"call_sid": "CA" + "f" * 32})))
        session.add(Call(call_sid="CA" + "1" * 32))
        session.commit()
        assert calls() == 2


def test_threads_take_turns_at_the_sqlite_write_lock_in_python(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    """A write transaction on SQLite holds its file's WriterLock from BEGIN to COMMIT or ROLLBACK (or
    the connection's closing); a thread that finds it taken waits there, and fails as SQLite would,
    "database is locked", once the busy timeout has passed. Waiting threads go in the order they came."""
    import threading

    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    from helpline import db as database

    url = f"sqlite:///{tmp_path / 'turns.db'}"
    engine = database.make_engine(url)
    writer = database._SQLITE_WRITERS[str((tmp_path / "turns.db").resolve())]
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE t (n INTEGER)"))
        assert not writer.locked()
        for ending in ("commit", "rollback", "close"):
            connection = engine.connect()
            connection.execute(text("INSERT INTO t VALUES (1)"))
            assert writer.locked()
            if ending != "close":
                getattr(connection, ending)()
            connection.close()
            assert not writer.locked(), ending

        # A second engine on the same file (the scheduler's) shares the lock.
        other = database.make_engine(url)
        holder = engine.connect()
        holder.execute(text("INSERT INTO t VALUES (2)"))
        went_in = threading.Event()

        def second_writer() -> None:
            with other.begin() as connection:
                connection.execute(text("INSERT INTO t VALUES (3)"))
                went_in.set()

        thread = threading.Thread(target=second_writer)
        thread.start()
        assert not went_in.wait(0.3)  # waiting for its turn
        holder.commit()
        thread.join(5)
        assert went_in.is_set()
        holder.close()

        # First come, first served: each waiting thread is handed the lock in turn.
        order: list[int] = []
        holder = engine.connect()
        holder.execute(text("INSERT INTO t VALUES (2)"))
        waiting = []
        for number in range(5):
            def in_turn(number: int = number) -> None:
                writer.acquire()
                order.append(number)
                writer.release()
            waiting.append(threading.Thread(target=in_turn))
            waiting[-1].start()
            while len(writer._waiting) <= number:  # queued before the next one starts
                threading.Event().wait(0.01)
        holder.rollback()
        holder.close()
        for thread in waiting:
            thread.join(5)
        assert order == [0, 1, 2, 3, 4] and not writer.locked()

        monkeypatch.setattr(database, "SQLITE_BUSY_TIMEOUT_S", 0.2)
        holder = engine.connect()
        holder.execute(text("INSERT INTO t VALUES (4)"))
        with pytest.raises(OperationalError, match="database is locked"):
            with other.connect() as connection:
                connection.execute(text("INSERT INTO t VALUES (5)"))
        holder.commit()
        holder.close()
        with engine.connect() as connection:
            assert connection.execute(text("SELECT n FROM t ORDER BY n")).scalars().all() == [1, 2, 3, 4]
        other.dispose()
    finally:
        engine.dispose()


def test_only_the_columns_a_request_changed_are_updated(app, database_url, monkeypatch):  # type: ignore[no-untyped-def]
    """The commit writes a changed row's changed columns alone: a column set back to the value it
    had is left out, and a row whose every change is undone is not written at all."""
    from sqlalchemy import select

    from helpline import db as database
    from helpline.db import db
    from helpline.models import Call

    written: list[tuple[str, ...]] = []
    update_statement = database._update_statement
    monkeypatch.setattr(database, "_update_statement",
                        lambda cls, keys, checked: (written.append(keys), update_statement(cls, keys, checked))[1])
    with app.app_context():
        db.session.add(Call(call_sid="CA" + "7" * 32, step="greeting", answers={"about": "self"}))
        db.session.commit()
        db.session.remove()
        call = db.session.scalar(select(Call))
        call.step = "greeting"  # as it was
        call.answers = {"about": "self"}  # an equal value, a new object
        call.need = "mental_health"
        db.session.commit()
        assert written == [("need",)]
        db.session.remove()
        call = db.session.scalar(select(Call))
        call.need = "addiction"
        call.need = "mental_health"  # undone before the commit
        db.session.commit()
        assert written == [("need",)]
        db.session.remove()
        assert db.session.scalar(select(Call.need)) == "mental_health"


def test_reads_without_the_write_lock_keep_a_connection_per_thread_and_follow_the_database(tmp_path):  # type: ignore[no-untyped-def]
    """On SQLite, `read_outside_transaction` reads on a connection its thread keeps: it sees each commit
    as it is made, while another transaction holds the write lock; a database opened in its place is
    read from then on, and disposing of the database closes every such connection."""
    import sqlite3
    import threading

    from sqlalchemy import select

    from helpline.db import Database, upgrade
    from helpline.models import Call

    first, second = (f"sqlite:///{tmp_path / name}" for name in ("first.db", "second.db"))
    for url in (first, second):
        upgrade(url)
    database = Database()
    database.configure(first)
    count = select(func.count(Call.id))
    try:
        assert database.read_outside_transaction(count) == [(0,)]
        with database.transaction() as session:
            session.add(Call(call_sid="CA" + "8" * 32))
        assert database.read_outside_transaction(count) == [(1,)]
        kept = database._readers.connection()
        with database.transaction() as writing:
            writing.execute(select(Call.id).limit(1))  # holds the write lock from its BEGIN
            elsewhere: list[object] = []
            reader = threading.Thread(target=lambda: elsewhere.append(database.read_outside_transaction(count)))
            reader.start()
            reader.join(timeout=5)
            assert elsewhere == [[(1,)]]  # read on the other thread's own connection, without waiting
        assert database._readers.connection() is kept  # and this thread's is the one it had
        database.configure(second)
        assert database.read_outside_transaction(count) == [(0,)]
        with pytest.raises(sqlite3.ProgrammingError):
            kept.execute("SELECT 1")  # closed when the database was replaced
        kept = database._readers.connection()
    finally:
        database.dispose()
    with pytest.raises(sqlite3.ProgrammingError):
        kept.execute("SELECT 1")


def test_rows_loaded_on_the_driver_are_objects_as_the_orm_would_load_them(app, database_url):  # type: ignore[no-untyped-def]
    """db.load_one (how a webhook finds and makes its call): each value typed as SQLAlchemy types it
    (timestamps with their zone, JSON as lists and dicts), the objects persistent and clean, their
    changes written once at the commit; an outer join's missing row is None; an object the session
    already holds is the session's own; an INSERT .. ON CONFLICT DO NOTHING that writes nothing
    returns nothing."""
    import datetime as dt

    from sqlalchemy import inspect, select

    from helpline import lifecycle
    from helpline.db import db, insert_returning, load_one, row_values
    from helpline.models import Call, QueueEntry, utcnow

    sid = "CA" + "7" * 32
    with app.app_context():
        made = lifecycle.call_for_webhook(db.session, sid, "ringing", new=True)
        assert inspect(made).persistent and made.id and made.queue_entry is None
        assert (made.ivr_path, made.answers, made.twilio_sequence, made.channel) == ([], {}, -1, "phone")
        assert made.started_at.tzinfo is not None and abs(made.started_at - utcnow()) < dt.timedelta(minutes=1)
        assert not db.session.dirty and not db.session.new
        taken = insert_returning(Call, db.engine.dialect.name == "postgresql", unique_on="call_sid")
        assert load_one(db.session, taken, row_values(Call, call_sid=sid), Call) is None  # the SID is taken
        db.session.commit()
        db.session.remove()

        call = lifecycle.find_call(db.session, sid)
        assert call.queue_entry is None and call.twilio_status == "ringing"
        assert lifecycle.find_call(db.session, sid) is call  # the session's own copy
        now = utcnow()
        call.ivr_path = [{"step": "queue", "at": now.isoformat()}]
        lifecycle.join_line(db.session, call, now)
        db.session.commit()
        db.session.remove()

        call = lifecycle.find_call(db.session, sid)
        entry = call.queue_entry
        assert inspect(entry).persistent and entry.call_id == call.id and entry.state == "waiting"
        assert (entry.placed_at, call.queued_at, call.ivr_path) == (now, now, [{"step": "queue", "at": now.isoformat()}])
        assert entry.flags == [] and entry.declined_by == []
        assert lifecycle.find_call(db.session, "CA" + "6" * 32) is None
        db.session.remove()
        assert db.session.scalar(select(QueueEntry.placed_at)) == now
