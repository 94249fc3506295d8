"""Key rotation: every encrypted field moves to the new key, keyed hashes follow, the service keeps going."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Column, ForeignKey, Integer, MetaData, String, Table, Text, insert, select

from helpline import keys
from helpline.admin_cli import rotate_key
from helpline.crypto import Vault
from helpline.db import db
from helpline.models import AuditEntry, Call, Handler, User
from helpline.users import create_user

from .conftest import Twilio
from .test_audit import cli_env
from .walker import CallWalker

KEY_A = Vault.generate_key()
KEY_B = Vault.generate_key()
NUMBERS = ("+447911123456", "+447811223344", "+447912345678")


def queue_a_call(app, number: str) -> str:  # type: ignore[no-untyped-def]
    """Walk a caller into the queue, so that their number is kept; returns the call SID."""
    walker = CallWalker(Twilio(app.test_client()), caller=number)
    walker.start()
    for key in ("1", "1", "1"):
        walker.press(key)
    assert walker.queue, walker.text
    return walker.sid


@pytest.fixture
def data_under_a(app_factory):  # type: ignore[no-untyped-def]
    """Three queued callers and a handler's phone, all written under key A."""
    app = app_factory(encryption_key=KEY_A)
    for number in NUMBERS:
        queue_a_call(app, number)
    with app.app_context(), db.transaction() as session:
        user = create_user(session, "alex", "handler", "a long password")
        handler = session.scalars(select(Handler).where(Handler.user_id == user.id)).one()
        handler.phone_number_enc = Vault(KEY_A).encrypt("+447700900555")
    return app


def assert_all_under(key: str, app) -> None:  # type: ignore[no-untyped-def]
    """Every caller number and handler phone opens with `key` alone; hashes are `key`'s."""
    vault = Vault(key)
    with app.app_context():
        db.session.expire_all()
        calls = db.session.scalars(select(Call).where(Call.caller_number_enc.is_not(None))).all()
        assert calls
        for call in calls:
            number = vault.decrypt(call.caller_number_enc)
            assert call.caller_hash == vault.keyed_hash(number)
        phones = db.session.scalars(select(Handler.phone_number_enc).where(Handler.phone_number_enc.is_not(None))).all()
        assert [vault.decrypt(phone) for phone in phones] == ["+447700900555"]


def test_the_models_say_which_columns_are_encrypted():
    by_table = {item.table.name: item for item in keys.plan()}
    assert [column.name for column in by_table["calls"].encrypted] == ["caller_number_enc", "request_enc"]
    assert [(h.name, s.name) for h, s in by_table["calls"].same_row_hashes] == [("caller_hash", "caller_number_enc")]
    assert [column.name for column in by_table["handlers"].encrypted] == ["phone_number_enc"]
    # The second factor's secret is encrypted, so a key rotation moves it too; password hashes are not.
    assert [column.name for column in by_table["users"].encrypted] == ["totp_secret_enc"]


def test_rotation_moves_every_field_to_the_new_key(data_under_a):
    app = data_under_a
    with pytest.raises(ValueError):
        assert_all_under(KEY_B, app)
    report = keys.rotate(db, f"{KEY_B},{KEY_A}", batch_size=1)
    assert report.fields_reencrypted == 4 and report.hashes_recomputed == 3 and report.unreadable == []
    assert_all_under(KEY_B, app)
    assert keys.unreadable_with_newest(db, f"{KEY_B},{KEY_A}") == []
    # Idempotent: a second run finds nothing to do.
    again = keys.rotate(db, f"{KEY_B},{KEY_A}")
    assert again.rows_rewritten == 0 and again.rows_examined == report.rows_examined


def test_an_interrupted_rotation_resumes(data_under_a):
    app = data_under_a

    def crash(table: str, rows: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        keys.rotate(db, f"{KEY_B},{KEY_A}", batch_size=1, progress=crash)
    assert len(keys.unreadable_with_newest(db, f"{KEY_B},{KEY_A}")) == 3  # one call done, two calls and a phone left
    keys.rotate(db, f"{KEY_B},{KEY_A}", batch_size=1)
    assert_all_under(KEY_B, app)


def test_the_service_keeps_answering_during_rotation(data_under_a, app_factory):
    rotating = app_factory(encryption_key=f"{KEY_B},{KEY_A}")
    answered: list[str] = []

    def between_batches(table: str, rows: int) -> None:
        # Three new calls while the calls table is being rotated (each adds a row ahead of the pages).
        if table == "calls" and len(answered) < 3:
            answered.append(queue_a_call(rotating, f"+4479111234{rows:02d}"))

    keys.rotate(db, f"{KEY_B},{KEY_A}", batch_size=1, progress=between_batches)
    assert len(answered) == 3
    assert_all_under(KEY_B, rotating)
    assert keys.unreadable_with_newest(db, f"{KEY_B},{KEY_A}") == []
    # The returning-caller hash of a call taken mid-rotation is the new key's.
    with rotating.app_context():
        call = db.session.scalars(select(Call).where(Call.call_sid == answered[0])).one()
        assert call.caller_hash == Vault(KEY_B).keyed_hash("+447911123401")


def test_a_row_changed_meanwhile_is_not_overwritten(data_under_a):
    app = data_under_a
    with app.app_context():
        call_id = db.session.scalars(select(Call.id).where(Call.caller_number_enc.is_not(None))).first()
        db.session.rollback()  # SQLite: let the rotation's own transaction in
        assert not keys._compare_and_set(db, Call.__table__, call_id, {"caller_number_enc": "stale"}, {"caller_number_enc": "new"})
        assert db.session.get(Call, call_id).caller_number_enc not in ("stale", "new")


def test_a_field_no_key_opens_is_reported_not_lost(data_under_a):
    app = data_under_a
    with app.app_context():
        call = db.session.scalars(select(Call).where(Call.caller_number_enc.is_not(None))).first()
        stranger = Vault(Vault.generate_key()).encrypt("+447700900777")
        call.caller_number_enc = stranger
        db.session.commit()
        report = keys.rotate(db, f"{KEY_B},{KEY_A}")
        assert report.unreadable == [("calls", call.id, "caller_number_enc")]
        db.session.expire_all()
        assert db.session.get(Call, call.id).caller_number_enc == stranger


def test_hashes_kept_in_other_tables_are_translated(app_factory):
    app = app_factory(encryption_key=KEY_A)
    metadata = MetaData()
    people = Table("rotation_people", metadata, Column("id", Integer, primary_key=True), Column("number_enc", Text),
                   Column("number_hash", String(64), info={"keyed_hash_of": "number_enc"}))
    links = Table("rotation_links", metadata, Column("id", Integer, primary_key=True),
                  Column("person_id", ForeignKey("rotation_people.id")),
                  Column("person_hash", String(64), info={"keyed_hash": True}))
    old, new = Vault(KEY_A), Vault(KEY_B)
    with app.app_context():
        metadata.create_all(db.engine)
        try:
            with db.transaction() as session:
                session.execute(insert(people), [{"id": 1, "number_enc": old.encrypt(NUMBERS[0]), "number_hash": old.keyed_hash(NUMBERS[0])}])
                session.execute(insert(links), [{"id": 1, "person_id": 1, "person_hash": old.keyed_hash(NUMBERS[0])},
                                                {"id": 2, "person_id": None, "person_hash": old.keyed_hash("+447700900000")}])
            report = keys.rotate(db, f"{KEY_B},{KEY_A}", metadata=metadata)
            assert report.hashes_recomputed == 1 and report.hashes_translated == 1 and report.hashes_unmatched == 1
            with db.transaction() as session:
                assert session.scalar(select(people.c.number_hash)) == new.keyed_hash(NUMBERS[0])
                assert session.scalar(select(links.c.person_hash).where(links.c.id == 1)) == new.keyed_hash(NUMBERS[0])
            # Translating again (a resumed run) is a no-op.
            assert keys.rotate(db, f"{KEY_B},{KEY_A}", metadata=metadata).hashes_translated == 0
        finally:
            metadata.drop_all(db.engine)


def test_a_marker_naming_a_plain_column_is_refused():
    metadata = MetaData()
    Table("bad", metadata, Column("id", Integer, primary_key=True), Column("notes", Text),
          Column("notes_hash", String(64), info={"keyed_hash_of": "notes"}))
    with pytest.raises(ValueError, match="not an encrypted column"):
        keys.plan(metadata)


def test_the_rotate_key_command(data_under_a, database_url, tmp_path: Path):
    env = {**cli_env(database_url, tmp_path), "HELPLINE_ENCRYPTION_KEY": f"{KEY_B},{KEY_A}"}
    result = CliRunner().invoke(rotate_key, ["--batch-size", "2"], env=env)
    assert result.exit_code == 0, result.output
    assert "older keys can be removed" in result.output
    assert_all_under(KEY_B, data_under_a)
    with data_under_a.app_context():
        entry = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "keys.rotate")).one()
        assert entry.actor_role == "operator" and entry.detail["fields"] == 4
        assert db.session.scalar(select(User.id).where(User.username == "alex"))
