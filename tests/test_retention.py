"""Retention: what is past its time is removed or anonymised, statistics stay, and rules can be added."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from helpline import retention
from helpline.config import ConfigError, load_settings
from helpline.db import db
from helpline.models import (AuditEntry, Booking, Call, CallEvent, Clinician, Contact, Locality, LoginFailure, QueueEntry,
                             Questionnaire, RiskScreen, WebhookReply, utcnow)

from . import conftest
from .conftest import new_call_sid

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.timezone.utc)
NUMBER = "+447911123456"


def make_call(app, outcome: str, days_ago: int, with_number: bool = True) -> int:  # type: ignore[no-untyped-def]
    """A finished call `days_ago` days before NOW, with a timeline, a stored reply and a queue entry."""
    vault = app.extensions["helpline.vault"]
    with db.transaction() as session:
        started = NOW - dt.timedelta(days=days_ago)
        call = Call(call_sid=new_call_sid(), started_at=started, ended_at=started + dt.timedelta(minutes=3),
                    outcome=outcome, outcome_step="about", need="mental_health", duration_s=180,
                    ivr_path=[{"step": "greeting", "at": started.isoformat()}], answers={"about": "self"},
                    caller_number_status="valid" if with_number else "withheld",
                    caller_number_enc=vault.encrypt(NUMBER) if with_number else None,
                    caller_hash=vault.keyed_hash(NUMBER) if with_number else None)
        session.add(call)
        session.flush()
        session.add(CallEvent(call_id=call.id, at=started, kind="step", step="greeting"))
        session.add(QueueEntry(call_id=call.id, placed_at=started, state="abandoned"))
        session.add(WebhookReply(call_sid=call.call_sid, request_key=new_call_sid(), body="<Response/>", created_at=started))
        return call.id


def run_purge(app) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Purge as of NOW, committed."""
    with app.app_context(), db.transaction() as session:
        return retention.purge(session, NOW, app.config["HELPLINE"])


def the_call(call_id: int) -> Call:
    """A call as stored now."""
    with db.transaction() as session:
        return session.get(Call, call_id)


def events_of(call_id: int) -> int:
    """How many timeline lines a call has."""
    with db.transaction() as session:
        return session.scalar(select(func.count()).select_from(CallEvent).where(CallEvent.call_id == call_id))


def assert_anonymised(call: Call) -> None:
    """Nothing left that leads back to the caller; the statistics kept."""
    assert call.caller_number_enc is None and call.caller_hash is None
    assert call.call_sid == f"purged-{call.id}"
    assert call.outcome and call.duration_s == 180 and call.need == "mental_health" and call.started_at


def test_third_party_and_ineligible_calls_lose_their_metadata_after_their_period(app):
    old_third = make_call(app, "third_party", 31)
    new_third = make_call(app, "third_party", 29)
    old_ineligible = make_call(app, "ineligible", 31)
    counts = run_purge(app)
    assert counts["third_party_calls"] == 1 and counts["ineligible_calls"] == 1
    for call_id in (old_third, old_ineligible):
        call = the_call(call_id)
        assert_anonymised(call)
        assert call.ivr_path == [] and events_of(call_id) == 0
    kept = the_call(new_third)
    assert kept.caller_hash is not None and not kept.call_sid.startswith("purged-") and events_of(new_third) == 1


def test_abandoned_calls_lose_the_number_but_keep_the_timeline(app):
    old = make_call(app, "abandoned", 40)
    recent = make_call(app, "abandoned", 5)
    answered = make_call(app, "answered", 400)
    counts = run_purge(app)
    assert counts["abandoned_numbers"] == 1
    call = the_call(old)
    assert_anonymised(call)
    assert events_of(old) == 1 and call.ivr_path  # where callers give up is a statistic
    assert the_call(recent).caller_number_enc is not None
    assert the_call(answered).caller_number_enc is not None  # kept with the record (the contact's rule)


def test_twilio_sids_of_other_legs_go_too(app):
    call_id = make_call(app, "abandoned", 40)
    with db.transaction() as session:
        entry = session.scalars(select(QueueEntry).where(QueueEntry.call_id == call_id)).one()
        entry.caller_leg_sid = new_call_sid()
    run_purge(app)
    with db.transaction() as session:
        entry = session.scalars(select(QueueEntry).where(QueueEntry.call_id == call_id)).one()
        assert entry.caller_leg_sid is None and entry.state == "abandoned"


def test_webhook_replies_and_login_failures_are_short_lived(app):
    make_call(app, "answered", 3)
    fresh = make_call(app, "answered", 1)
    with db.transaction() as session:
        session.add(LoginFailure(address_hash="a" * 64, at=NOW - dt.timedelta(days=2)))
        session.add(LoginFailure(address_hash="b" * 64, at=NOW - dt.timedelta(minutes=5)))
    counts = run_purge(app)
    assert counts["webhook_replies"] == 1 and counts["login_failures"] == 1
    with db.transaction() as session:
        assert session.scalars(select(WebhookReply.call_sid)).all() == [session.get(Call, fresh).call_sid]
        assert session.scalars(select(LoginFailure.address_hash)).all() == ["b" * 64]


def test_purging_again_changes_nothing_and_each_purge_is_audited(app):
    make_call(app, "third_party", 31)
    make_call(app, "abandoned", 31)
    first = run_purge(app)
    second = run_purge(app)
    assert sum(first.values()) > 0 and sum(second.values()) == 0
    with db.transaction() as session:
        entries = session.scalars(select(AuditEntry).where(AuditEntry.action == "retention.purge")).all()
        assert len(entries) == 1 and entries[0].actor_role == "system" and entries[0].detail["counts"] == first


def test_periods_come_from_the_configuration(app_factory):
    app = app_factory(retention={"third_party_days": 60})
    call_id = make_call(app, "third_party", 31)
    assert run_purge(app)["third_party_calls"] == 0
    assert the_call(call_id).caller_hash is not None


def test_other_modules_add_rules(app, monkeypatch):
    seen = []

    def purge_discharged(session, now, settings):  # type: ignore[no-untyped-def]
        seen.append((now, settings.retention.discharged_record_days))
        return 2

    monkeypatch.setitem(retention._RULES, "discharged_contacts", retention.PurgeRule("discharged_contacts", purge_discharged))
    counts = run_purge(app)
    assert counts["discharged_contacts"] == 2 and seen == [(NOW, 7305)]


def test_the_job_runs_every_rule_in_its_own_transaction(app, monkeypatch):
    call_id = make_call(app, "third_party", 400)
    transactions = []
    original = db.transaction

    def counting():  # type: ignore[no-untyped-def]
        transactions.append(1)
        return original()

    monkeypatch.setattr(db, "transaction", counting)
    counts = retention.purge_job(app)
    monkeypatch.undo()
    assert counts["third_party_calls"] == 1 and len(transactions) == len(retention.rules())
    assert_anonymised(the_call(call_id))


@pytest.mark.parametrize(
    ("key", "value"),
    [("third_party_days", 0), ("abandoned_days", "30"), ("webhook_replies_days", 1000), ("discharged_record_days", None),
     ("forever", 1), ("ineligible_days", 1.5)],
)
def test_bad_retention_settings_stop_start_up_naming_the_key(tmp_path, key, value):
    with pytest.raises(ConfigError) as caught:
        load_settings(conftest.test_overrides("sqlite://", tmp_path, retention={key: value}), environ={})
    assert f"retention.{key}" in str(caught.value)


def test_defaults_are_sensible():
    settings = load_settings(environ={}).retention
    assert settings.webhook_replies_days <= 7 and settings.third_party_days <= 90
    # The NHS Records Management Code keeps mental-health records 20 years after treatment ends.
    assert settings.discharged_record_days >= 365 * 20


# -- first-contact records, from their discharge ----------------------------------------------------------


def make_record(app, discharged_days_ago: int | None, now: dt.datetime = NOW) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """An answered call with its record, a booking and a risk screen, discharged `discharged_days_ago`
    days before `now` (None: still open). Returns (call id, contact id)."""
    call_id = make_call(app, "answered", (NOW - now).days + (discharged_days_ago or 0) + 60)
    vault = app.extensions["helpline.vault"]
    with db.transaction() as session:
        if session.get(Locality, "QWO") is None:
            session.add(Locality(code="QWO", name="NHS West Yorkshire ICB", region="North East and Yorkshire"))
            session.flush()
            session.add(Clinician(code="retention-clinician", display_name="Dr Kept", profession="psychiatrist", locality_code="QWO"))
            session.flush()
        clinician_id = session.scalar(select(Clinician.id).where(Clinician.code == "retention-clinician"))
        call = session.get(Call, call_id)
        contact = Contact(call_id=call_id, person_hash=call.caller_hash, about_self=True, disposition="booked",
                          created_at=call.started_at, updated_at=call.started_at,
                          details_enc=vault.encrypt('{"name": "Dr Someone"}'))
        if discharged_days_ago is not None:
            contact.discharged_on = (now - dt.timedelta(days=discharged_days_ago)).date()
            contact.discharged_at = now - dt.timedelta(days=discharged_days_ago)
        session.add(contact)
        session.flush()
        start = call.started_at + dt.timedelta(days=7)
        session.add(Booking(call_id=call_id, contact_id=contact.id, clinician_id=clinician_id, modality="video",
                            starts_at=start, ends_at=start + dt.timedelta(minutes=50), held_start=start, attendance="attended"))
        session.add(RiskScreen(call_id=call_id, handler_user_id=None, level="none", answers_enc=vault.encrypt("{}")))
        session.add(Questionnaire(call_id=call_id, contact_id=contact.id, kind="gad7", recorded_by_role="clinician",
                                  result_enc=vault.encrypt("{}")))
        return call_id, contact.id


def record_left(call_id: int, contact_id: int) -> dict[str, int]:
    """How many of the record's rows are left."""
    with db.transaction() as session:
        def count(model, column, value):  # type: ignore[no-untyped-def]
            return session.scalar(select(func.count()).select_from(model).where(column == value))
        return {"contact": count(Contact, Contact.id, contact_id), "bookings": count(Booking, Booking.contact_id, contact_id),
                "risk": count(RiskScreen, RiskScreen.call_id, call_id),
                "questionnaires": count(Questionnaire, Questionnaire.call_id, call_id)}


def test_records_are_removed_twenty_years_after_discharge_and_their_calls_anonymised(app):
    old = make_record(app, 7306)
    recent = make_record(app, 7304)
    still_open = make_record(app, None)
    counts = run_purge(app)
    assert counts["discharged_contacts"] == 1
    assert record_left(*old) == {"contact": 0, "bookings": 0, "risk": 0, "questionnaires": 0}
    assert_anonymised(the_call(old[0]))
    for kept in (recent, still_open):
        assert record_left(*kept) == {"contact": 1, "bookings": 1, "risk": 1, "questionnaires": 1}
        assert the_call(kept[0]).caller_hash is not None
    # The open episode is never purged, however old its call: the period runs from discharge.
    assert run_purge(app)["discharged_contacts"] == 0


def test_a_record_never_discharged_goes_the_same_period_after_its_last_sign_of_care(app):
    """Its last change, appointment or questionnaire stands for the discharge nobody recorded."""
    forgotten = make_record(app, None)  # called before NOW, an appointment a week later, a questionnaire today
    seen_again = make_record(app, None, NOW - dt.timedelta(days=1))
    today = utcnow()
    later = today + dt.timedelta(days=730)
    with db.transaction() as session:  # ... and another questionnaire two years on
        session.add(Questionnaire(call_id=seen_again[0], contact_id=seen_again[1], kind="phq9", at=later,
                                  recorded_by_role="clinician", result_enc="-"))
    period = dt.timedelta(days=7305)

    def purged(at: dt.datetime) -> int:
        with app.app_context(), db.transaction() as session:
            return retention.purge(session, at, app.config["HELPLINE"])["undischarged_contacts"]

    assert purged(today + period - dt.timedelta(days=1)) == 0
    assert purged(today + period + dt.timedelta(days=1)) == 1
    assert record_left(*forgotten) == {"contact": 0, "bookings": 0, "risk": 0, "questionnaires": 0}
    assert_anonymised(the_call(forgotten[0]))
    assert record_left(*seen_again) == {"contact": 1, "bookings": 1, "risk": 1, "questionnaires": 2}
    assert purged(later + period + dt.timedelta(days=1)) == 1
    assert record_left(*seen_again)["contact"] == 0


def test_the_period_after_discharge_is_configurable(app_factory):
    app = app_factory(retention={"discharged_record_days": 365})
    gone, kept = make_record(app, 366), make_record(app, 300)
    assert run_purge(app)["discharged_contacts"] == 1
    assert record_left(*gone)["contact"] == 0 and record_left(*kept)["contact"] == 1


def test_a_dry_run_says_what_would_go_and_changes_nothing(app, database_url, tmp_path):
    from click.testing import CliRunner

    from helpline.admin_cli import purge_command

    from .test_audit import cli_env

    now = dt.datetime.now(dt.timezone.utc)
    record = make_record(app, 7400, now=now)
    dry = CliRunner().invoke(purge_command, ["--dry-run"], env=cli_env(database_url, tmp_path))
    assert dry.exit_code == 0, dry.output
    assert "nothing was changed" in dry.output and "discharged_contacts: 1" in dry.output
    assert record_left(*record) == {"contact": 1, "bookings": 1, "risk": 1, "questionnaires": 1}
    with db.transaction() as session:
        assert not session.scalars(select(AuditEntry).where(AuditEntry.action == "retention.purge")).all()
    done = CliRunner().invoke(purge_command, [], env=cli_env(database_url, tmp_path))
    assert done.exit_code == 0 and "discharged_contacts: 1" in done.output
    assert record_left(*record)["contact"] == 0
