"""Migrations: idempotent, and in step with the models (a forgotten migration fails here)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text

from helpline.db import is_current, upgrade
from helpline.models import Base

from .conftest import DATABASES, fresh_postgres_database, postgres_url

NOW = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.timezone.utc)


def test_upgrade_twice_changes_nothing(database_url):
    assert is_current(database_url)
    upgrade(database_url)
    assert is_current(database_url)


def test_the_migrations_match_the_models(database_url):
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


@pytest.mark.parametrize("kind", DATABASES)
def test_entries_written_before_the_language_column_get_the_language_of_their_flags(kind, tmp_path):
    """Routing's SQL seeks calls by their language column: a call already in line when the column is
    added must have it too, or it would be found only as one asking for no language."""
    from alembic import command

    from helpline.db import alembic_config

    for url in _empty_database(kind, tmp_path):
        config = alembic_config(url)
        command.upgrade(config, "0001")
        engine = create_engine(url)
        try:
            with engine.begin() as connection:
                for number, flags in enumerate([["dentist", "language:cy"], ["dentist"], []], start=1):
                    connection.execute(text(
                        "INSERT INTO calls (id, call_sid, started_at, caller_number_status, ivr_path, answers, flags,"
                        " twilio_sequence) VALUES (:id, :sid, :at, 'withheld', '[]', '{}', :flags, -1)"),
                        {"id": number, "sid": f"CA{number}", "at": NOW, "flags": json.dumps(flags)})
                    connection.execute(text(
                        "INSERT INTO queue_entries (call_id, kind, state, flags, priority, placed_at)"
                        " VALUES (:id, 'live', 'waiting', :flags, 100, :at)"), {"id": number, "flags": json.dumps(flags), "at": NOW})
            upgrade(url)
            with engine.connect() as connection:
                languages = connection.execute(text("SELECT call_id, language FROM queue_entries ORDER BY call_id")).all()
        finally:
            engine.dispose()
        assert [tuple(row) for row in languages] == [(1, "cy"), (2, None), (3, None)]


def _empty_database(kind: str, folder: Path) -> Iterator[str]:
    """An empty database of `kind`, not migrated at all."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'helpline.db'}"
        return
    base = postgres_url()
    if not base:
        pytest.skip("HELPLINE_TEST_POSTGRES_URL is not set")
    yield from fresh_postgres_database(base)
