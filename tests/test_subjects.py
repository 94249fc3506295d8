"""A person's rights: export everything held about them, erase it, both audited with a reason."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from helpline import keys, subjects
from helpline.admin_cli import erase_subject, export_subject
from helpline.crypto import Vault
from helpline.db import db
from helpline.models import (AuditEntry, Booking, Call, Clinician, Contact, Locality, Questionnaire, RiskScreen, Site,
                             utcnow)

from .test_audit import cli_env
from .test_keys import queue_a_call

ME = "+447911123456"
SOMEONE_ELSE = "+447811223344"


@pytest.fixture
def callers(app):  # type: ignore[no-untyped-def]
    """Two calls from ME (one of them on ME's national form), one from someone else."""
    sids = {"me": [queue_a_call(app, ME), queue_a_call(app, "07911 123456")], "else": [queue_a_call(app, SOMEONE_ELSE)]}
    return sids


def key_text(app) -> str:  # type: ignore[no-untyped-def]
    """The test app's key (generated into its instance folder)."""
    return keys.resolve_keys(app.config["HELPLINE"])


def call_ids(sids: list[str]) -> set[int]:
    """Ids of the calls with these SIDs."""
    with db.transaction() as session:
        return set(session.scalars(select(Call.id).where(Call.call_sid.in_(sids))))


def test_a_number_finds_all_of_that_persons_calls_and_only_theirs(app, callers):
    mine = call_ids(callers["me"])
    with app.app_context(), db.transaction() as session:
        subject = subjects.find(session, key_text(app), ["07911-123-456"])
        assert subject.call_ids == mine
        data = subjects.export(session, key_text(app), subject)
    exported = data["records"]["calls"]
    assert {call["caller_number"] for call in exported} == {ME}
    assert all(call["events"] and call["queue_entry"]["state"] for call in exported)
    assert "caller_number_enc" not in exported[0] and SOMEONE_ELSE not in json.dumps(data)
    json.dumps(data)  # everything is JSON


def test_calls_hashed_under_an_older_key_are_found(app_factory):
    old_key, new_key = Vault.generate_key(), Vault.generate_key()
    app = app_factory(encryption_key=old_key)
    expected = call_ids([queue_a_call(app, ME)])
    with db.transaction() as session:
        subject = subjects.find(session, f"{new_key},{old_key}", [ME])
    assert subject.call_ids == expected


def test_a_bad_number_is_refused():
    with pytest.raises(ValueError):
        subjects.find(None, Vault.generate_key(), ["not a number"])  # type: ignore[arg-type]


def test_erasing_keeps_statistics_and_nothing_that_leads_back(app, callers):
    theirs = call_ids(callers["else"])
    with app.app_context(), db.transaction() as session:
        subject = subjects.find(session, key_text(app), [ME])
        counts = subjects.erase(session, subject)
    assert counts["calls"] == 2
    with db.transaction() as session:
        for call in session.scalars(select(Call).where(Call.id.in_(subject.call_ids))):
            assert call.caller_number_enc is None and call.caller_hash is None and call.call_sid.startswith("purged-")
            assert call.need and call.started_at and call.queued_at
        assert subjects.find(session, key_text(app), [ME]).call_ids == set()
        assert subjects.find(session, key_text(app), [SOMEONE_ELSE]).call_ids == theirs


def test_sources_registered_by_other_areas_take_part(app, callers, monkeypatch):
    exported, erased = [], []

    def expand(session, subject, keys_):  # type: ignore[no-untyped-def]
        if subject.call_ids:
            subject.contact_ids.add(99)

    monkeypatch.setitem(subjects._SOURCES, "contacts", subjects.SubjectSource(
        "contacts", expand, lambda session, subject, vault: exported.append(set(subject.contact_ids)) or [{"id": 99}],
        lambda session, subject: erased.append(set(subject.contact_ids)) or 1))
    with app.app_context(), db.transaction() as session:
        subject = subjects.find(session, key_text(app), [ME])
        assert subject.contact_ids == {99}
        assert subjects.export(session, key_text(app), subject)["records"]["contacts"] == [{"id": 99}]
        assert subjects.erase(session, subject) == {"contacts": 1, "calls": 2}


def run(command, args, app, database_url, tmp_path: Path, input: str | None = None):  # type: ignore[no-untyped-def]
    """Run a `helpline` command against the test's database and keys."""
    return CliRunner().invoke(command, args, env=cli_env(database_url, tmp_path), input=input)


def audited(action: str) -> list[AuditEntry]:
    """Audit entries of one action."""
    with db.transaction() as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.action == action)))


def test_export_needs_a_reason_and_is_audited(app, callers, database_url, tmp_path):
    assert run(export_subject, ["--caller-number", ME], app, database_url, tmp_path).exit_code == 2
    assert run(export_subject, ["--reason", "SAR 12"], app, database_url, tmp_path).exit_code == 2
    result = run(export_subject, ["--caller-number", ME, "--reason", "SAR 12"], app, database_url, tmp_path)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {call["caller_number"] for call in data["records"]["calls"]} == {ME}
    (entry,) = audited("subject.export")
    assert entry.reason == "SAR 12" and entry.actor_role == "operator" and entry.object_type == "subject"
    assert set(entry.detail["calls"]) == call_ids(callers["me"])
    assert "7911" not in json.dumps(entry.detail)


def test_erase_asks_first_and_is_audited(app, callers, database_url, tmp_path):
    declined = run(erase_subject, ["--caller-number", ME, "--reason", "erasure request 7"], app, database_url, tmp_path, input="n\n")
    assert declined.exit_code != 0
    assert len(call_ids(callers["me"])) == 2 and audited("subject.erase") == []
    result = run(erase_subject, ["--caller-number", ME, "--reason", "erasure request 7", "--yes"], app, database_url, tmp_path)
    assert result.exit_code == 0, result.output
    assert call_ids(callers["me"]) == set()  # the SIDs are gone with the numbers
    (entry,) = audited("subject.erase")
    assert entry.reason == "erasure request 7" and entry.detail["rows"] == {"contacts": 0, "calls": 2}
    export = run(export_subject, ["--caller-number", ME, "--reason", "check"], app, database_url, tmp_path)
    assert json.loads(export.stdout)["records"]["calls"] == []


# -- first-contact records, their appointments, risk screens and questionnaires ----------------------


def give_record(app, call_sid: str, details: dict[str, str], appointment_in_days: int = 7) -> int:  # type: ignore[no-untyped-def]
    """A first-contact record for the call, with an appointment `appointment_in_days` from now (at a
    site), a risk screen and a questionnaire. Returns the record's id."""
    vault = app.extensions["helpline.vault"]
    with db.transaction() as session:
        if session.get(Locality, "QWO") is None:
            session.add(Locality(code="QWO", name="NHS West Yorkshire ICB", region="North East and Yorkshire"))
            session.flush()
            session.add_all([Clinician(code="subject-clinician", display_name="Dr Seen", profession="psychiatrist", locality_code="QWO"),
                             Site(code="subject-site", locality_code="QWO", name="Quiet Lane Clinic", town="Leeds")])
            session.flush()
        call = session.scalar(select(Call).where(Call.call_sid == call_sid))
        contact = Contact(call_id=call.id, person_hash=call.caller_hash, about_self=True, disposition="booked",
                          details_enc=vault.encrypt(json.dumps(details)))
        session.add(contact)
        session.flush()
        start = utcnow().replace(microsecond=0) + dt.timedelta(days=appointment_in_days, hours=contact.id)  # a slot each
        session.add_all([
            Booking(call_id=call.id, contact_id=contact.id, clinician_id=session.scalar(select(Clinician.id)),
                    site_id=session.scalar(select(Site.id)), modality="face_to_face", starts_at=start,
                    ends_at=start + dt.timedelta(minutes=50), held_start=start),
            RiskScreen(call_id=call.id, level="low", answers_enc=vault.encrypt('{"thoughts_of_harm": "no"}')),
            Questionnaire(call_id=call.id, contact_id=contact.id, kind="gad7", recorded_by_role="clinician",
                          result_enc=vault.encrypt('{"score": 9, "band": "mild"}')),
        ])
        return contact.id


def left_of(contact_id: int) -> dict[str, int]:
    """How many rows of the record, and of what hangs off it, are left."""
    with db.transaction() as session:
        contact = session.get(Contact, contact_id)
        call_id = contact.call_id if contact is not None else -1
        return {"record": int(contact is not None),
                "appointments": len(session.scalars(select(Booking.id).where(Booking.contact_id == contact_id)).all()),
                "risk_screens": len(session.scalars(select(RiskScreen.id).where(RiskScreen.call_id == call_id)).all()),
                "questionnaires": len(session.scalars(select(Questionnaire.id).where(Questionnaire.contact_id == contact_id)).all())}


def test_a_number_finds_the_persons_records_and_the_export_holds_them_decrypted(app, callers):
    mine = give_record(app, callers["me"][0], {"name": "Dr Ada Example", "gmc_number": "1234567"})
    theirs = give_record(app, callers["else"][0], {"name": "Dr Not Them"})
    with app.app_context(), db.transaction() as session:
        subject = subjects.find(session, key_text(app), [ME])
        assert subject.contact_ids == {mine}
        data = subjects.export(session, key_text(app), subject)
    held = data["records"]["contacts"]
    (record,) = held["first_contact_records"]
    assert record["id"] == mine and record["details"] == {"name": "Dr Ada Example", "gmc_number": "1234567"}
    (appointment,) = held["appointments"]
    assert appointment["contact_id"] == mine and appointment["clinician"] == "Dr Seen" and appointment["site"] == "Quiet Lane Clinic"
    assert [screen["answers"] for screen in held["risk_screens"]] == [{"thoughts_of_harm": "no"}]
    assert [form["result"] for form in held["questionnaires"]] == [{"score": 9, "band": "mild"}]
    assert "Not Them" not in json.dumps(data) and theirs not in subject.contact_ids


def test_a_record_found_by_its_id_leads_to_all_of_that_persons_calls(app, callers):
    record = give_record(app, callers["me"][1], {"name": "Dr Ada Example"})
    with app.app_context(), db.transaction() as session:
        subject = subjects.find(session, key_text(app), contact_ids=[record])
    assert subject.call_ids == call_ids(callers["me"]) and subject.numbers == {ME}


def test_numbers_written_in_a_record_are_not_followed_to_other_peoples_calls(app, callers):
    # A shared or work phone given to reach the caller may be someone else's own line.
    give_record(app, callers["me"][0], {"name": "Dr Ada Example", "phone_alt": SOMEONE_ELSE})
    with app.app_context(), db.transaction() as session:
        subject = subjects.find(session, key_text(app), [ME])
    assert subject.call_ids == call_ids(callers["me"])


def test_erasing_removes_the_records_and_what_hangs_off_them(app, callers):
    mine = give_record(app, callers["me"][0], {"name": "Dr Ada Example"})
    theirs = give_record(app, callers["else"][0], {"name": "Dr Not Them"})
    with app.app_context(), db.transaction() as session:
        counts = subjects.erase(session, subjects.find(session, key_text(app), [ME]))
    assert counts == {"contacts": 4, "calls": 2}  # the record, its appointment, screen and questionnaire
    assert left_of(mine) == {"record": 0, "appointments": 0, "risk_screens": 0, "questionnaires": 0}
    assert left_of(theirs) == {"record": 1, "appointments": 1, "risk_screens": 1, "questionnaires": 1}
    with db.transaction() as session:
        assert subjects.find(session, key_text(app), [ME]).found is False


def test_the_commands_take_a_record_id_and_erasing_warns_of_appointments_to_come(app, callers, database_url, tmp_path):
    record = give_record(app, callers["me"][0], {"name": "Dr Ada Example"})
    export = run(export_subject, ["--contact-id", str(record), "--reason", "SAR 13"], app, database_url, tmp_path)
    assert export.exit_code == 0, export.output
    assert json.loads(export.stdout)["records"]["contacts"]["first_contact_records"][0]["details"]["name"] == "Dr Ada Example"
    erased = run(erase_subject, ["--contact-id", str(record), "--reason", "erasure request 8", "--yes"], app, database_url, tmp_path)
    assert erased.exit_code == 0, erased.output
    assert "found 2 calls and 1 first-contact records" in erased.stderr
    assert "1 appointments still to come" in erased.stderr
    assert left_of(record)["record"] == 0 and call_ids(callers["me"]) == set()
    (entry,) = audited("subject.erase")
    assert entry.detail["contacts"] == [record] and entry.detail["rows"] == {"contacts": 4, "calls": 2}
