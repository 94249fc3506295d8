"""The database: one engine per process, a session per request or job, and migrations.

SQLite is the embedded default (WAL so readers never wait for the writer, foreign keys enforced,
deleted content overwritten). Write transactions on SQLite start with BEGIN IMMEDIATE, so that two
threads that read and then write take turns instead of failing with "database is locked"; threads of
one process take those turns at a lock of their own (`WriterLock`), woken as soon as it is free.

On PostgreSQL a pooled connection is pinged before use only when it has lain idle for a while
(`PING_AFTER_IDLE_S`): SQLAlchemy's `pool_pre_ping` would add a round trip to every request and
every routing pass, to check a connection that answered a moment ago.

There is one way to commit: `session.commit()`. Every session the service makes is a
`ServiceSession`, whose commit on PostgreSQL sends the changes to tables marked `pipelined` (see
models.Base), and any statements given to `write_with_commit`, with the COMMIT, in one round trip;
on SQLite it writes the same rows on the driver, without the ORM's flush. It raises only for a
transaction that did not commit: every check on what it sends (an UPDATE that must find its row)
runs inside the transaction, before the COMMIT. A line of a call's timeline (or any row of an
"append" table) is added with `append`, as a row written with the commit, without an ORM object.
One helper beside it saves round trips: `run_together` (statements sent together within the
session's transaction, for the routing pass); `read_rows` and `driver_cursor` run one such statement
on the driver. The compiled forms they send are kept in a cache of fixed size (`COMPILED_CACHE_SIZE`).
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections import OrderedDict, deque
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, NamedTuple, NoReturn, Sequence

from flask import Flask
from sqlalchemy import (Integer, bindparam, case, cast, create_engine, event, func, insert, inspect, literal_column,
                        select, update)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.orm import MANYTOONE, Session, configure_mappers, make_transient_to_detached, scoped_session, sessionmaker
from sqlalchemy.orm.attributes import NO_VALUE, set_committed_value
from sqlalchemy.orm.exc import StaleDataError
from sqlalchemy.sql import Executable

from .events import Bus

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
#: A pooled PostgreSQL connection idle longer than this is pinged before it is handed out.
PING_AFTER_IDLE_S = 2.0


#: Seconds a write transaction on SQLite waits for another to finish before failing "database is locked".
SQLITE_BUSY_TIMEOUT_S = 30.0
#: One writer lock per SQLite file in this process (see `WriterLock`), shared by every engine on it.
_SQLITE_WRITERS: dict[str, "WriterLock"] = {}
_SQLITE_WRITERS_LOCK = threading.Lock()


class WriterLock:
    """Threads of one process queue here for an SQLite file's write lock, not in SQLite.

    Every transaction on SQLite starts with BEGIN IMMEDIATE, which takes the file's one write lock.
    A thread that finds it taken is made to wait by SQLite's busy handler, which sleeps and tries
    again - for 1, 2, 5, 10 ... up to 100 ms at a time - so under load the lock stood free while
    the next writer slept, and whoever happened to try at the right moment went first: webhooks
    waited hundreds of milliseconds behind transactions of two, some for seconds. Here a thread
    waits in a queue and is handed the lock the moment the one before it commits or rolls back,
    first come, first served, so that under a burst no caller's webhook is passed over. Another
    process on the same file (an admin command) still meets SQLite's own busy handler. `acquire`
    fails as SQLite would, "database is locked", after the same timeout.
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._held = False
        #: One lock per waiting thread, in the order they came; released to hand the writer over.
        self._waiting: deque[threading.Lock] = deque()

    def locked(self) -> bool:
        return self._held

    def acquire(self) -> None:
        with self._guard:
            if not self._held:
                self._held = True
                return
            turn = threading.Lock()
            turn.acquire()
            self._waiting.append(turn)
        if turn.acquire(timeout=SQLITE_BUSY_TIMEOUT_S):
            return  # handed over by `release`
        with self._guard:
            try:
                self._waiting.remove(turn)
            except ValueError:
                return  # handed over just as the wait ran out: it is ours
        import sqlite3

        from sqlalchemy.exc import OperationalError

        raise OperationalError("BEGIN IMMEDIATE", None, sqlite3.OperationalError("database is locked"))

    def release(self) -> None:
        with self._guard:
            if self._waiting:
                self._waiting.popleft().release()  # still held: now by the next in the queue
            else:
                self._held = False


def _sqlite_connection_class(writer: WriterLock) -> type:
    """An sqlite3 connection class that holds `writer` from its transaction's start (`take_writer`)
    until its commit, rollback or closing."""
    import sqlite3

    class WriterLockedConnection(sqlite3.Connection):
        holds_writer = False

        def take_writer(self) -> None:
            writer.acquire()
            self.holds_writer = True

        def let_writer_go(self) -> None:
            if self.holds_writer:
                self.holds_writer = False
                writer.release()

        def commit(self) -> None:
            try:
                super().commit()
            finally:
                # A COMMIT that fails (SQLITE_BUSY on a checkpoint) leaves the transaction open:
                # the writer is held until its rollback.
                if not self.in_transaction:
                    self.let_writer_go()

        def rollback(self) -> None:
            try:
                super().rollback()
            finally:
                self.let_writer_go()

        def close(self) -> None:
            try:
                super().close()
            finally:
                self.let_writer_go()

    return WriterLockedConnection


def sqlite_file(url: Any) -> str | None:
    """The file of an SQLite database URL (a string or SQLAlchemy's URL); None for another
    database, or for an SQLite database in memory."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return None
    return parsed.database


def make_engine(url: str, pool_size: int = 10, max_overflow: int = 20) -> Engine:
    """Create an engine for `url` with the settings the service relies on."""
    if url.startswith("sqlite"):
        database = sqlite_file(url)
        connect_args: dict[str, Any] = {"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}
        if database is not None:
            Path(database).parent.mkdir(parents=True, exist_ok=True)
            with _SQLITE_WRITERS_LOCK:
                writer = _SQLITE_WRITERS.setdefault(str(Path(database).resolve()), WriterLock())
            connect_args["factory"] = _sqlite_connection_class(writer)
        engine = create_engine(url, connect_args=connect_args)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            # Leave transaction control to SQLAlchemy's "begin" event below, not the driver.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA secure_delete=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(connection):  # type: ignore[no-untyped-def]
            # Sent on the driver: SQLAlchemy's own execution of a fixed statement costs more than the
            # statement, and every transaction starts with it.
            dbapi_connection = connection.connection.driver_connection
            if not hasattr(dbapi_connection, "take_writer"):  # in memory: one connection, nobody to take turns with
                dbapi_connection.execute("BEGIN IMMEDIATE")
                return
            dbapi_connection.take_writer()
            try:
                dbapi_connection.execute("BEGIN IMMEDIATE")
            except BaseException:
                dbapi_connection.let_writer_go()
                raise

        return engine
    engine = create_engine(url, pool_size=pool_size, max_overflow=max_overflow)
    ping_when_idle(engine)
    return engine


def ping_when_idle(engine: Engine) -> None:
    """Ping a pooled connection at checkout if it has been idle more than `PING_AFTER_IDLE_S`.

    This is SQLAlchemy's documented custom pessimistic ping, limited to connections that may have
    gone stale: a dead one raises DisconnectionError, and the pool then connects afresh. A connection
    that dies in the moment after it was last used (a server restart) fails its first statement
    instead; SQLAlchemy then invalidates the whole pool, and the request's own error handling (a
    retried webhook, a retried routing pass) carries on with new connections.
    """

    @event.listens_for(engine, "checkin")
    def _idle_from(_dbapi_connection, record):  # type: ignore[no-untyped-def]
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection, record, _proxy):  # type: ignore[no-untyped-def]
        idle_since = record.info.pop("idle_since", None)
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_S:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            raise DisconnectionError("a pooled connection had gone away") from exc


def is_postgresql(session: Session) -> bool:
    """Whether `session` works on PostgreSQL (else on the embedded SQLite)."""
    return session.get_bind().dialect.name == "postgresql"


#: How many statements' compiled forms are kept (the least recently used goes first). The service
#: sends a few dozen statements built once and kept; the bound is for any built afresh per use.
COMPILED_CACHE_SIZE = 512
#: A type's conversion of one value, to the driver (bind) or from it (result).
Processor = Callable[[Any], Any]


class Compiled(NamedTuple):
    """A statement compiled for one dialect, and how its values are converted on the way."""

    sql: Any
    #: The bind processors of the parameters whose type has one (JSON, UTC timestamps), by name.
    binds: list[tuple[str, Processor]]
    #: Each result column's processor (None where the driver's value is the value), in order.
    results: tuple[Processor | None, ...]


#: The statements of run_together and ServiceSession.commit, compiled: by id and dialect, with the
#: statement kept alive beside its compiled form so that its id is not reused while it is here.
_COMPILED: OrderedDict[tuple[int, str], tuple[Executable, Compiled]] = OrderedDict()
#: The router thread and request threads share the cache.
_COMPILED_LOCK = threading.Lock()


def _compile(statement: Executable, dialect: Any) -> Compiled:
    """The statement compiled for `dialect`, from the cache if there, with its values' processors."""
    key = (id(statement), dialect.name)
    # Found without the lock, which guards only a new entry and the evictions it makes: each of the
    # two steps here is one operation of the dictionary, whole under the GIL, and every commit asks.
    cached = _COMPILED.get(key)
    if cached is not None and cached[0] is statement:
        with contextlib.suppress(KeyError):  # evicted by another thread just now: it is still this one
            _COMPILED.move_to_end(key)
        return cached[1]
    if dialect.name == "sqlite":
        dialect = _sqlite_named()
    # An IN list's values are bound one by one here: SQLAlchemy expands them only when it runs a statement itself.
    sql = statement.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    # By name, once each: a parameter used twice in the statement (bindparam("at") in two places) is
    # one value, to be processed once.
    binds = list({name: processor for bind, name in sql.bind_names.items()
                  if (processor := bind.type.dialect_impl(dialect).bind_processor(dialect)) is not None}.items())
    results = tuple(column.type.dialect_impl(dialect).result_processor(dialect, None)
                    for column in getattr(statement, "exported_columns", ()))
    compiled = Compiled(sql, binds, results)
    with _COMPILED_LOCK:
        _COMPILED[key] = (statement, compiled)
        while len(_COMPILED) > COMPILED_CACHE_SIZE:
            _COMPILED.popitem(last=False)
    return compiled


@functools.cache
def _sqlite_named() -> Any:
    """SQLite's dialect with parameters bound by name (sqlite3 takes both), so that a compiled
    statement's parameters go to the driver as the dict `construct_params` makes."""
    from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite

    return SQLiteDialect_pysqlite(paramstyle="named")


def _compiled(statements: Sequence[tuple[Executable, dict[str, Any]]], dialect: Any) -> list[tuple[str, Any]]:
    """Each statement's SQL (compiled once while cached) and its parameters, for the driver."""
    compiled = []
    for statement, params in statements:
        one = _compile(statement, dialect)
        compiled.append((one.sql.string, _bound(one, params)))
    return compiled


def _bound(compiled: Compiled, params: dict[str, Any]) -> dict[str, Any]:
    """The statement's parameters for the driver, each through its type's bind processor."""
    values = compiled.sql.construct_params(params)
    for name, processor in compiled.binds:
        if name in values:
            values[name] = processor(values[name])
    return values  # type: ignore[no-any-return]


def _pipelined(state: Any) -> str | None:
    return state.mapper.local_table.info.get("pipelined")  # type: ignore[no-any-return]


def _append_rows(session: Session) -> list[tuple[Executable, dict[str, Any]]]:
    """Take the session's new objects of "append" tables out of it, as INSERTs with their values,
    in the order they were added. Objects that refer to another by a relationship stay for the ORM."""
    taken = []
    for obj in session.new:
        state = inspect(obj)
        if _pipelined(state) != "append" or any(key in state.dict for key in state.mapper.relationships.keys()):
            continue
        taken.append(state)
    rows = []
    for state in sorted(taken, key=lambda one: one.insert_order):
        _statement, columns = _append_statement(state.class_)
        rows.append(new_row(state.class_, **{column.key: state.dict[column.key] for column in columns if column.key in state.dict}))
        session.expunge(state.obj())
    return rows


def new_row(cls: type, **given: Any) -> tuple[Executable, dict[str, Any]]:
    """The INSERT of a row of an "append" class, built once, and its values: `given`, each other
    column's default, or None: what `append` writes with the commit, and what the commit writes
    for an "append" object left in the session (`_append_rows`)."""
    statement, _columns = _append_statement(cls)
    return statement, row_values(cls, **given)


def row_values(cls: type, **given: Any) -> dict[str, Any]:
    """A whole new row of `cls` but its primary key, by column: `given`, each other column's default, or None."""
    table = inspect(cls).local_table
    return _defaults(table)[0] | with_defaults(table, given)


@functools.cache
def insert_returning(cls: type, postgresql: bool = False, unique_on: str | None = None) -> Executable:
    """The INSERT of a whole new row of `cls` (`row_values`) that returns it, for `load_one`; built
    once. With `unique_on`, a row whose value of that unique column is taken is not written, and
    nothing is returned (INSERT .. ON CONFLICT DO NOTHING, in the dialect's own form)."""
    table = inspect(cls).local_table
    values = _row_parameters(table)
    if unique_on is None:
        return insert(table).values(values).returning(*table.columns)
    from sqlalchemy.dialects.postgresql import insert as pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    statement = (pg_insert if postgresql else sqlite_insert)(table).values(values)
    return statement.on_conflict_do_nothing(index_elements=[table.c[unique_on]]).returning(*table.columns)


def append(session: Session | scoped_session[Any], cls: type, **given: Any) -> None:
    """Add a row to an "append" table (see models.Base), such as a line of a call's timeline or a
    webhook's stored reply: built as `new_row` builds it and written with the session's commit
    (`ServiceSession.write_with_commit`), in the order added. No ORM object is made of it, which
    cost a webhook more than the INSERT; so the transaction that adds it does not read it back, and
    it has no id until it is written."""
    own = session() if isinstance(session, scoped_session) else session
    own.write_with_commit(*new_row(cls, **given))


@functools.cache
def _append_statement(cls: type) -> tuple[Executable, list[Any]]:
    """The INSERT for an "append" class's rows, and its columns (see `ServiceSession.commit`), built once."""
    table = inspect(cls).local_table
    columns = [column for column in table.columns if not column.primary_key]
    if any(column.server_default is not None or (column.default is not None and not column.default.is_scalar
                                                  and not column.default.is_callable) for column in columns):
        raise TypeError(f"{cls.__name__} has defaults made by the database: it cannot be written in a pipeline")
    return insert(table).values(_row_parameters(table)), columns


def _row_parameters(table: Any) -> dict[str, Any]:
    """A parameter, by the column's key, for each column of `table` but its primary key: a whole new row."""
    return {column.key: bindparam(column.key, type_=column.type) for column in table.columns if not column.primary_key}


def _update_rows(session: Session, checked_in_sql: bool) -> list[tuple[Executable, dict[str, Any]]]:
    """The changes to the session's objects of "update" tables as UPDATEs by primary key, which the
    ORM then takes as written. An object whose foreign keys a changed relationship sets stays for
    the ORM (a relationship kept on the other side's rows, a call's queue entry, is the flush's to
    write), and so does everything when the session deletes rows (the flush orders those)."""
    if session.deleted:
        return []
    rows = []
    for obj in session.dirty:
        state = inspect(obj)
        if _pipelined(state) != "update" or state.identity is None or len(state.identity) != 1:
            continue
        if any(relationship.direction is MANYTOONE and relationship.key in state.committed_state
               and state.attrs[relationship.key].history.has_changes() for relationship in state.mapper.relationships):
            continue
        # Only the attributes the request touched can have changed: committed_state keeps their old
        # values (NO_VALUE for one set before it was loaded), and a value set back to what it was is
        # not written (the comparison the ORM's own history makes for a column).
        columns = state.mapper.column_attrs
        old = state.committed_state
        changed = {key: value for key in old
                   if key in columns and (value := state.dict.get(key, NO_VALUE)) is not NO_VALUE and value != old[key]}
        if changed:
            rows.append((_update_statement(state.class_, tuple(sorted(changed)), checked_in_sql),
                         {"pk": state.identity[0], **{f"new_{key}": value for key, value in changed.items()}}))
        if not state.expired_attributes and all(key in columns for key in state.committed_state):
            # All it touched is written here, or was set to what it was: nothing is left of it for the
            # ORM's flush, which would otherwise walk it (and every object like it) to find that out.
            state._commit_all(state.dict, session.identity_map)
        else:
            for key, value in changed.items():
                set_committed_value(obj, key, value)
    return rows


#: What the check of a pipelined UPDATE says when its row has gone (see `_update_statement`).
ROW_GONE = "helpline: the row to update has gone"


@functools.cache
def _update_statement(cls: type, keys: tuple[str, ...], checked_in_sql: bool) -> Executable:
    """The UPDATE for an "update" class and a set of changed columns (see `ServiceSession.commit`), built once.

    It is checked as the ORM checks its own UPDATEs: it must change exactly one row (else the row
    went, erased while the request ran), and so the transaction fails before its COMMIT, never
    after. On SQLite the driver's row count says so, statement by statement. Sent in a pipeline
    (`checked_in_sql`, PostgreSQL), nothing is read until the COMMIT has gone, so the statement
    checks itself: it fails if it did not change exactly one row, by a cast of `ROW_GONE` to a
    number, made only then (a CASE's other branch is not run), which `ServiceSession.commit` recognises.
    """
    mapper = inspect(cls)
    table = mapper.local_table
    if any(column.onupdate is not None or column.server_onupdate is not None for column in table.columns) \
            or mapper.version_id_col is not None:
        raise TypeError(f"{cls.__name__} has values made on update: it cannot be written in a pipeline")
    columns = {key: mapper.column_attrs[key].columns[0] for key in keys}
    (primary_key,) = table.primary_key.columns
    changed = update(table).where(primary_key == bindparam("pk")).values(
        {column: bindparam(f"new_{key}", type_=column.type) for key, column in columns.items()})
    if not checked_in_sql:
        return changed
    counted = changed.returning(primary_key).cte("changed")
    rows = select(func.count()).select_from(counted).scalar_subquery()
    gone = cast(func.concat(literal_column(f"'{ROW_GONE}: '"), rows), Integer)
    return select(case((rows == literal_column("1"), literal_column("1")), else_=gone))


def _raise_wrapped(connection: Any, raw: Any, sql: str, exc: Exception) -> NoReturn:
    """As SQLAlchemy does for the statements it runs: drop a dead connection, wrap the error."""
    if connection.dialect.is_disconnect(exc, raw, None):
        connection.invalidate(exc)
    raise DBAPIError.instance(sql, None, exc, connection.dialect.loaded_dbapi.Error) from exc


def run_together(session: Session, *statements: tuple[Executable, dict[str, Any]]) -> list[list[Sequence[Any]]]:
    """Run statements built once and kept, in one round trip on PostgreSQL; return each one's rows.

    psycopg's pipeline sends them all (with the transaction's BEGIN, if they come first) and then
    reads the answers; the server still runs them one after another, each with its own snapshot, as
    if sent one by one. On SQLite they simply run in turn. Either way they run on the driver, without
    SQLAlchemy's per-statement work, which on the routing path cost more than the statements
    themselves: so it is only for statements whose compiled form can be cached by identity (built
    once and kept), whose parameters are bound by name (their types' bind processors are applied, as
    SQLAlchemy's would be), and whose rows are read by position. Their values are psycopg's own on
    PostgreSQL; SQLite's driver gives timestamps and JSON as text, so there each value goes through
    its column type's result processor, as SQLAlchemy's would (`_typed_rows`). Like
    `session.execute`, it first writes the session's pending changes.
    """
    session.flush()
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        return [_typed_rows(connection, statement, params) for statement, params in statements]
    if len(statements) == 1:  # nothing to send together: a pipeline would only add its own messages
        return [_driver_rows(connection, *statements[0])]
    raw = connection.connection.dbapi_connection
    assert raw is not None
    compiled = _compiled(statements, connection.dialect)
    try:
        with raw.pipeline():  # type: ignore[union-attr]
            cursors = [raw.execute(sql, params) for sql, params in compiled]  # type: ignore[union-attr]
        return [cursor.fetchall() for cursor in cursors]
    except connection.dialect.loaded_dbapi.Error as exc:
        _raise_wrapped(connection, raw, compiled[0][0], exc)


def read_rows(session: Session, statement: Executable, params: dict[str, Any]) -> list[Sequence[Any]]:
    """The rows of `statement`, built once and kept, run on the driver within the session's transaction.

    What `session.execute` would give for a count or a list of ids, without SQLAlchemy's work per
    statement: on the line's most asked question (a caller's place, at every hold announcement and
    every hang-up in line) that work cost ten times the query. As `session.execute` does, it first
    writes the session's pending changes, unless autoflush is off (`session.no_autoflush`). Rows are
    read by position and their values come as the driver gives them, unprocessed.
    """
    if session.autoflush:
        session.flush()
    return _driver_rows(session.connection(), statement, params)


def _execute(connection: Any, statement: Executable, params: dict[str, Any]) -> tuple[Any, Compiled]:
    """Run one statement, compiled once (`_compile`), on `connection`'s driver; its cursor and compiled form."""
    raw = connection.connection.dbapi_connection
    assert raw is not None
    compiled = _compile(statement, connection.dialect)
    sql = compiled.sql.string
    try:
        return raw.execute(sql, _bound(compiled, params)), compiled
    except connection.dialect.loaded_dbapi.Error as exc:
        _raise_wrapped(connection, raw, sql, exc)


def driver_cursor(connection: Any, statement: Executable, params: dict[str, Any]) -> Any:
    """One statement run on `connection`'s driver (`_execute`): its cursor, for its rows or its row
    count. Within the connection's transaction, as SQLAlchemy would run it."""
    return _execute(connection, statement, params)[0]


def _driver_rows(connection: Any, statement: Executable, params: dict[str, Any]) -> list[Sequence[Any]]:
    """The rows of one statement run on the driver (`driver_cursor`), as the driver gives them."""
    return driver_cursor(connection, statement, params).fetchall()  # type: ignore[no-any-return]


def _typed_rows(connection: Any, statement: Executable, params: dict[str, Any]) -> list[Sequence[Any]]:
    """The rows of one statement run on the driver, each value through its column type's result
    processor (a timestamp or JSON stored as text on SQLite comes back a datetime, a list), as
    SQLAlchemy's own execute gives them."""
    cursor, compiled = _execute(connection, statement, params)
    rows = cursor.fetchall()
    processors = compiled.results
    if not any(processors):
        return rows  # type: ignore[no-any-return]
    if len(processors) != len(cursor.description):
        raise TypeError(f"{len(cursor.description)} columns came back where the statement names {len(processors)}")
    return [tuple(value if process is None or value is None else process(value) for process, value in zip(processors, row))
            for row in rows]


def load_one(session: Session, statement: Executable, params: dict[str, Any], *classes: type) -> tuple[Any, ...] | None:
    """The first row of `statement` as objects of `classes`, persistent in `session` as if the ORM had
    loaded them; None when there is no row. An object the session already holds is given as it holds
    it, as the ORM gives it (an expired one reads itself afresh when used).

    `statement` (built once and kept, its parameters bound by name) returns every column of each
    class's table in turn, in the table's order: a SELECT of whole tables, an outer join's missing
    row all NULL (its object then None), or an INSERT that returns the row it wrote (an INSERT .. ON
    CONFLICT DO NOTHING may return none). It runs on the driver within the session's transaction, and
    each value goes through its type's result processor, as SQLAlchemy's would. The ORM's own loading
    works out how to build each object anew on every query, which cost a webhook more than the
    query: a call is found on every one of them.
    """
    connection = session.connection()
    rows = _driver_rows(connection, statement, params)  # all of them: SQLite finishes an INSERT's RETURNING so
    if not rows:
        return None
    row, start, loaded = rows[0], 0, []
    for cls in classes:
        mapper = inspect(cls)
        columns = _row_columns(mapper, connection.dialect)
        given = {key: processor(value) if processor is not None and value is not None else value
                 for (key, processor), value in zip(columns, row[start:start + len(columns)])}
        start += len(columns)
        identity = mapper.identity_key_from_primary_key([given[column.key] for column in mapper.primary_key])
        if None in identity[1]:
            loaded.append(None)
            continue
        if identity in session.identity_map:
            loaded.append(session.identity_map[identity])
            continue
        obj = mapper.class_manager.new_instance()
        obj.__dict__.update(given)
        make_transient_to_detached(obj)  # as loaded: every value committed, nothing to write
        session.add(obj)
        loaded.append(obj)
    return tuple(loaded)


#: `_row_columns` by mapper and dialect class.
_ROW_COLUMNS: dict[tuple[Any, type], list[tuple[str, Callable[[Any], Any] | None]]] = {}


def _row_columns(mapper: Any, dialect: Any) -> list[tuple[str, Callable[[Any], Any] | None]]:
    """Each column of the mapper's table, in order: its attribute's key and its type's result processor."""
    key = (mapper, type(dialect))
    columns = _ROW_COLUMNS.get(key)
    if columns is None:
        configure_mappers()  # as the ORM's first query would: the objects made need their attributes set up
        columns = _ROW_COLUMNS[key] = [
            (mapper.get_property_by_column(column).key, column.type.dialect_impl(dialect).result_processor(dialect, None))
            for column in mapper.local_table.columns]
    return columns


def with_defaults(table: Any, values: dict[str, Any]) -> dict[str, Any]:
    """`values` for an INSERT into `table`, with each other column's Python-side default filled in
    (SQLAlchemy fills them only when it runs the statement itself; a statement sent with the
    commit is sent as compiled)."""
    fixed, made = _defaults(table)
    filled = {key: value for key, value in fixed.items() if value is not None and key not in values}
    filled.update(values)
    for key, make in made:
        if key not in values:
            filled[key] = make(None)
    return filled


@functools.cache
def _defaults(table: Any) -> tuple[dict[str, Any], tuple[tuple[str, Callable[[Any], Any]], ...]]:
    """Each column of `table` but its primary key with its fixed default (None where it has none), and
    the columns whose default a function makes: worked out once, as every line of a timeline asks."""
    fixed: dict[str, Any] = {}
    made = []
    for column in table.columns:
        if column.primary_key:
            continue
        default = column.default
        fixed[column.key] = default.arg if default is not None and default.is_scalar else None
        if default is not None and default.is_callable:
            made.append((column.key, default.arg))
    return fixed, tuple(made)


#: psycopg's word for a connection outside any transaction (pq.TransactionStatus.IDLE).
TRANSACTION_IDLE = 0
#: Where a session keeps the statements to send with its COMMIT (see ServiceSession.write_with_commit).
WITH_COMMIT = "helpline.with_commit"


class ServiceSession(Session):
    """The service's session. Its `commit()` is the one way the service commits.

    On PostgreSQL the commit sends what it can with the COMMIT, in one round trip, where a flush
    takes one for each change:

    - New rows of "append" tables (see models.Base) go as plain INSERTs, in the order they were
      added. They leave the session, without an id.
    - Changed columns of "update" tables go as UPDATEs by primary key, after the flush of the rest.
      The ORM takes them as written.
    - Statements given to `write_with_commit` go last, before the COMMIT.

    The session's before-commit hooks run first, so that what they write (audit entries) is in the
    same transaction. A failing write (a unique key taken, say) raises as SQLAlchemy's commit would,
    and leaves the transaction for the caller to roll back (which forgets the changes as usual); an
    UPDATE whose row has gone raises StaleDataError, as the ORM's flush would. Nothing raises once
    the COMMIT has gone through: what was written stands, and the caller is not told otherwise.
    On SQLite the same rows are written the same way, statement by statement on the driver, before
    SQLAlchemy's commit: not for round trips (there are none) but because the ORM's flush of them
    cost more than the rest of a webhook. Either way the session's after-commit hooks run (the
    announcements of events.py).
    """

    def write_with_commit(self, statement: Executable, params: dict[str, Any] | None = None) -> None:
        """Write `statement` with `params` in this transaction, at the latest when it commits.

        On PostgreSQL it is sent with the COMMIT: a webhook that only records what Twilio reports
        is then one round trip, its transaction's BEGIN, the statement and the COMMIT together.
        SQLite writes it at the commit too, on the driver. So nothing reads its result, nor sees
        its row before the commit; and it is sent as compiled (and its compiled form is kept by the
        statement's identity: build it once and keep it), so it must name every value a column
        needs (`with_defaults` fills in an INSERT's, `new_row` makes a whole row).
        """
        self.info.setdefault(WITH_COMMIT, []).append((statement, params or {}))

    def commit(self) -> None:
        if self.get_bind().dialect.name != "postgresql":
            self._commit_in_turn()
            return
        connection = self.connection()
        updates = _update_rows(self, checked_in_sql=True)
        statements = self.info.pop(WITH_COMMIT, [])
        compiled = _compiled((*updates, *_append_rows(self), *statements), connection.dialect)
        # What must be written in the same transaction at commit (audit.py chains its entries so) is
        # written now, before the COMMIT goes; the hooks run again in SQLAlchemy's commit, with nothing left.
        self.dispatch.before_commit(self)
        self.flush()
        raw = connection.connection.dbapi_connection
        assert raw is not None
        # Nothing sent yet (a webhook that only writes): psycopg would send its BEGIN in a round trip
        # of its own. Send it with the rest instead, the connection in autocommit for the while.
        begin = raw.info.transaction_status == TRANSACTION_IDLE  # type: ignore[union-attr]
        if begin:
            raw.autocommit = True  # type: ignore[union-attr]
        try:
            # One cursor for them all: a cursor each (raw.execute) cost a webhook more than its statements.
            with raw.cursor() as cursor, raw.pipeline():  # type: ignore[union-attr]
                if begin:
                    cursor.execute("BEGIN")
                for sql, params in compiled:
                    cursor.execute(sql, params)
                # A COMMIT statement, not raw.commit(): that would sync the pipeline once more.
                cursor.execute("COMMIT")
        except connection.dialect.loaded_dbapi.Error as exc:
            if begin and not raw.closed:  # type: ignore[union-attr]
                with contextlib.suppress(connection.dialect.loaded_dbapi.Error):
                    raw.execute("ROLLBACK")  # type: ignore[union-attr]
            if ROW_GONE in str(exc):
                # The transaction failed before its COMMIT: nothing of it was written.
                raise StaleDataError("an UPDATE sent with the commit matched no row") from exc
            _raise_wrapped(connection, raw, compiled[0][0] if compiled else "COMMIT", exc)
        finally:
            if begin and not raw.closed:  # type: ignore[union-attr]
                with contextlib.suppress(connection.dialect.loaded_dbapi.Error):
                    raw.autocommit = False  # type: ignore[union-attr]
        # The transaction has ended on the server: psycopg knows, and SQLAlchemy's own COMMIT sends nothing.
        super().commit()

    def _commit_in_turn(self) -> None:
        """SQLite's commit: the same writes as PostgreSQL's, statement by statement on the driver
        (there is no round trip to save, but the ORM's flush is the webhook's largest cost), then
        SQLAlchemy's commit. A session with nothing of the kind to write (one that only read) does
        not take the database's write lock for it."""
        updates = _update_rows(self, checked_in_sql=False)
        appends = _append_rows(self)
        statements = self.info.pop(WITH_COMMIT, [])
        if updates or appends or statements:
            self.dispatch.before_commit(self)
            self.flush()
            connection = self.connection()
            raw = connection.connection.dbapi_connection
            assert raw is not None
            for index, (sql, params) in enumerate(_compiled((*updates, *appends, *statements), connection.dialect)):
                try:
                    cursor = raw.execute(sql, params)
                except connection.dialect.loaded_dbapi.Error as exc:
                    _raise_wrapped(connection, raw, sql, exc)
                if index < len(updates) and cursor.rowcount != 1:
                    raise StaleDataError("an UPDATE written with the commit matched no row")
        super().commit()

    def rollback(self) -> None:
        self.info.pop(WITH_COMMIT, None)
        super().rollback()

    def close(self) -> None:
        self.info.pop(WITH_COMMIT, None)
        super().close()


class _Readers:
    """Each thread's own connection to the SQLite file, for reads outside any transaction
    (Database.read_outside_transaction). The sqlite3 module's default mode runs a SELECT outside any
    transaction, so a read holds nothing once its rows are fetched."""

    def __init__(self) -> None:
        #: The file, once an engine on one is made.
        self.path: str | None = None
        self._local = threading.local()
        self._lock = threading.Lock()
        #: Every thread's connection, to close; and how many times they have all been closed, so that
        #: a thread holding a closed one opens another.
        self._open: list[Any] = []
        self._generation = 0

    def connection(self) -> Any:
        import sqlite3

        mine = getattr(self._local, "mine", None)
        if mine is None or mine[0] != self._generation:
            reader = sqlite3.connect(self.path or "", timeout=SQLITE_BUSY_TIMEOUT_S, check_same_thread=False)
            with self._lock:
                self._open.append(reader)
                self._local.mine = mine = (self._generation, reader)
        return mine[1]

    def close_all(self) -> None:
        """Close every thread's connection (the engine is replaced or disposed)."""
        with self._lock:
            self._generation += 1
            readers, self._open = self._open, []
        for reader in readers:
            reader.close()


class Database:
    """The engine and session factory of one process, bound to a Flask app with `init_app`."""

    def __init__(self) -> None:
        self.engine: Engine | None = None
        self.factory: sessionmaker[ServiceSession] | None = None
        self.session: scoped_session[ServiceSession] = scoped_session(self._make_session)
        #: Subscribers hear about committed changes (see events.py).
        self.bus = Bus()
        self._own: dict[str, tuple[Engine, sessionmaker[ServiceSession]]] = {}
        #: Each thread's connection for reads without the write lock (`read_outside_transaction`).
        self._readers = _Readers()

    def _make_session(self) -> ServiceSession:
        if self.factory is None:
            raise RuntimeError("the database is not configured; call init_app first")
        return self.factory()

    def configure(self, url: str) -> None:
        """Open the engine for `url` (replacing any earlier one)."""
        if self.engine is not None:
            self.session.remove()
            self.engine.dispose()
        self._close_kept()
        self.engine = make_engine(url)
        self._readers.path = sqlite_file(self.engine.url)
        self.factory = sessionmaker(self.engine, class_=ServiceSession, expire_on_commit=False, info={"bus": self.bus})

    def own_connection(self, name: str) -> sessionmaker[ServiceSession]:
        """Sessions on a connection kept for `name` alone (on PostgreSQL; SQLite shares the pool).

        For a thread that runs the same few statements all day, the router: psycopg prepares a
        statement after its fifth run on a connection, so that PostgreSQL stops planning it each
        time, but forgets every prepared statement when the connection rolls back - as a connection
        of the shared pool does at the end of each request that only read. Users of one name take
        turns on its connection.
        """
        if self.engine is None or self.factory is None:
            raise RuntimeError("the database is not configured; call init_app first")
        if self.engine.dialect.name != "postgresql":
            return self.factory
        self._own_engine(name)
        return self._own[name][1]

    def _own_engine(self, name: str) -> Engine:
        """The engine of the connection kept for `name` (PostgreSQL), made on first use."""
        assert self.engine is not None
        if name not in self._own:
            engine = make_engine(self.engine.url.render_as_string(hide_password=False), pool_size=1, max_overflow=0)
            self._own[name] = (engine, sessionmaker(engine, class_=ServiceSession, expire_on_commit=False, info={"bus": self.bus}))
        return self._own[name][0]

    def _close_kept(self) -> None:
        """Close the connections kept beside the pool: `own_connection`'s and the readers'."""
        for engine, _sessions in self._own.values():
            engine.dispose()
        self._own.clear()
        self._readers.close_all()

    def init_app(self, app: Flask) -> None:
        """Bind to the app's configured URL and close the request's session when it ends."""
        self.bus = Bus()
        self.configure(app.config["HELPLINE"].resolved_database_url)
        app.teardown_appcontext(lambda _exc: self.session.remove())

    @contextmanager
    def transaction(self, sessions: sessionmaker[ServiceSession] | None = None) -> Iterator[ServiceSession]:
        """A fresh session outside any request (jobs, CLI): committed on success, rolled back on error.

        `sessions` picks another factory, such as `own_connection`'s.
        """
        session = sessions() if sessions is not None else self._make_session()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def read_outside_transaction(self, statement: Executable, params: dict[str, Any] | None = None,
                            kept_for: str | None = None) -> list[Sequence[Any]] | None:
        """The rows of `statement` (built once and kept, its parameters bound by name), read outside
        any transaction. Rows come as the driver gives them (by position, unprocessed, as with
        run_together). None for a database in memory, which exists on its one connection alone.

        On SQLite the read takes no write lock (every transaction takes it from its BEGIN; see
        WriterLock): in WAL mode it sees the last commit and waits for no writer. It runs on a
        connection the thread keeps for these reads alone (the router's thread asks after every
        caller who joins or leaves the line): taking one from the pool and giving it back cost more
        than the read.

        On PostgreSQL, whose reads never wait for the writers, it saves round trips: the read goes
        in autocommit, one round trip with no BEGIN or COMMIT, on the connection kept for
        `kept_for` (own_connection), or else one of the pool's.
        """
        if self.engine is None:
            return None
        if self.engine.dialect.name == "postgresql":
            engine = self.engine if kept_for is None else self._own_engine(kept_for)
            with engine.connect() as connection:
                return _driver_rows(connection.execution_options(isolation_level="AUTOCOMMIT"), statement, params or {})
        if self._readers.path is None:
            return None
        compiled = _compile(statement, self.engine.dialect)
        return self._readers.connection().execute(compiled.sql.string, _bound(compiled, params or {})).fetchall()

    def dispose(self) -> None:
        """Close every pooled connection (tests, shutdown)."""
        self.session.remove()
        if self.engine is not None:
            self.engine.dispose()
        self._close_kept()


db = Database()


def alembic_config(url: str) -> AlembicConfig:
    """An Alembic configuration for `url`, with no alembic.ini needed.

    Alembic is imported only where the schema is migrated or checked: a serving worker never needs it.
    """
    from alembic.config import Config as AlembicConfig
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def restrict_sqlite_file(url: str) -> None:
    """Make the embedded database's file readable by the service's own account only (0600), as the
    key files are: it holds the audit log and encrypted records. Created so if new (SQLite gives its
    -wal and -shm files the same mode), tightened if an older one was world-readable."""
    import os

    path = sqlite_file(url)
    if path is None:
        return
    if not os.path.exists(path):
        folder = os.path.dirname(path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    for name in (path, f"{path}-wal", f"{path}-shm", f"{path}-journal"):
        if os.path.exists(name):
            os.chmod(name, 0o600)


def upgrade(url: str) -> None:
    """Create or migrate the database at `url` to the newest schema; running it again changes nothing."""
    from alembic import command

    restrict_sqlite_file(url)
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            config = alembic_config(url)
            config.attributes["connection"] = connection
            command.upgrade(config, "heads")
    finally:
        engine.dispose()


def is_current(url: str) -> bool:
    """Whether the database at `url` has been migrated to the newest schema."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            if not inspect(connection).has_table("alembic_version"):
                return False
            heads = set(MigrationContext.configure(connection).get_current_heads())
        return heads == set(ScriptDirectory.from_config(alembic_config(url)).get_heads())
    finally:
        engine.dispose()
