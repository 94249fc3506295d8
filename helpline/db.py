"""The database: one engine per process, a session per request or job, and migrations.

SQLite is the embedded default (WAL so readers never wait for the writer, foreign keys enforced,
deleted content overwritten). Write transactions on SQLite start with BEGIN IMMEDIATE, so that two
threads that read and then write take turns instead of failing with "database is locked".
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from flask import Flask
from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, scoped_session, sessionmaker

from .events import Bus

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def make_engine(url: str) -> Engine:
    """Create an engine for `url` with the settings the service relies on."""
    if url.startswith("sqlite"):
        database = url.split(":///", 1)[-1]
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            # Leave transaction control to SQLAlchemy's "begin" event below, not the driver.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA secure_delete=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(connection):  # type: ignore[no-untyped-def]
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


class Database:
    """The engine and session factory of one process, bound to a Flask app with `init_app`."""

    def __init__(self) -> None:
        self.engine: Engine | None = None
        self.factory: sessionmaker[Session] | None = None
        self.session: scoped_session[Session] = scoped_session(self._make_session)
        #: Subscribers hear about committed changes (see events.py).
        self.bus = Bus()

    def _make_session(self) -> Session:
        if self.factory is None:
            raise RuntimeError("the database is not configured; call init_app first")
        return self.factory()

    def configure(self, url: str) -> None:
        """Open the engine for `url` (replacing any earlier one)."""
        if self.engine is not None:
            self.session.remove()
            self.engine.dispose()
        self.engine = make_engine(url)
        self.factory = sessionmaker(self.engine, expire_on_commit=False, info={"bus": self.bus})

    def init_app(self, app: Flask) -> None:
        """Bind to the app's configured URL and close the request's session when it ends."""
        self.bus = Bus()
        self.configure(app.config["HELPLINE"].resolved_database_url)
        app.teardown_appcontext(lambda _exc: self.session.remove())

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A fresh session outside any request (jobs, CLI): committed on success, rolled back on error."""
        session = self._make_session()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        """Close every pooled connection (tests, shutdown)."""
        self.session.remove()
        if self.engine is not None:
            self.engine.dispose()


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


def upgrade(url: str) -> None:
    """Create or migrate the database at `url` to the newest schema; running it again changes nothing."""
    from alembic import command

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
