"""Migrations: idempotent, and in step with the models (a forgotten migration fails here)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from helpline.db import is_current, upgrade
from helpline.models import Base


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
