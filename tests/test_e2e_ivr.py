"""Every IVR branch end to end: calls placed through the Twilio emulator into a real `helpline serve`,
both separate processes over HTTP, and the records they leave."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpline.emulator.client import EmulatorClient

from .processes import run_cli
from .stack import Stack, start_stack

CALLER = "+447911123456"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(module_database_url: str, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    yield from start_stack(tmp_path_factory.mktemp("stack"), module_database_url, {"queue": {"offer_callback_after_s": 0}})


def heard(stack: Stack, sid: str) -> str:
    """Everything the caller heard."""
    return " ".join(event.get("text", "") for event in stack.emulator.call(sid)["events"] if event["kind"] == "say")


def test_a_self_referral_reaches_the_queue_and_hears_its_position(stack):
    sid = stack.emulator.place_call(CALLER, keys=["1", "1", "1"])
    stack.emulator.wait_for(sid, "enqueued", timeout=20)
    # Nobody is on duty here: the caller hears their place, that no time can be given, and the call-back offer.
    stack.emulator.wait_for(sid, "say", timeout=20, text_contains="in line. Nobody is free to answer just now")
    assert "press 2" in heard(stack, sid)
    row = stack.call_row(sid)
    assert (row.need, row.caller_number_status, row.outcome) == ("mental_health", "valid", None)
    assert "999" in heard(stack, sid) and "116 123" in heard(stack, sid)
    stack.emulator.hangup(sid)
    stack.emulator.wait_until_ended(sid, timeout=20)
    row = stack.wait_for_row(sid, lambda row: row.twilio_status == "completed")
    assert row.outcome == "abandoned" and row.outcome_step == "queue"
    entry = stack.sql("select state, position_at_exit from queue_entries where call_id = :id", id=row.id)[0]
    assert entry.state == "abandoned" and entry.position_at_exit >= 1


def test_someone_else_is_turned_away_and_nothing_is_kept(stack):
    sid = stack.emulator.place_call(CALLER, keys=["2"])
    final = stack.emulator.wait_until_ended(sid, timeout=20)
    assert "contact us themselves" in heard(stack, sid)
    assert final["status"] == "completed"
    row = stack.call_row(sid)
    assert (row.outcome, row.caller_number_status, row.caller_number_enc, row.caller_hash) == ("third_party", "dropped", None, None)


def test_an_ineligible_caller_is_signposted(stack):
    sid = stack.emulator.place_call(CALLER, keys=["1", "2"])
    stack.emulator.wait_until_ended(sid, timeout=20)
    assert "Health for Health Professionals Wales" in heard(stack, sid)
    assert stack.call_row(sid).outcome == "ineligible"


def test_silence_about_whom_queues_flagged(stack):
    sid = stack.emulator.place_call(CALLER, keys=["", "", ""])
    stack.emulator.wait_for(sid, "enqueued", timeout=30)
    assert "self_referral_unconfirmed" in stack.call_row(sid).flags


def test_pressing_2_in_the_queue_books_a_callback_and_ends_politely(stack):
    sid = stack.emulator.place_call(CALLER, keys=["1", "1", "2"])
    stack.emulator.wait_for(sid, "say", timeout=20, text_contains="rather we called you back")
    assert stack.emulator.press(sid, "2")
    stack.emulator.wait_until_ended(sid, timeout=20)
    assert "keep your place" in heard(stack, sid)
    row = stack.call_row(sid)
    assert row.outcome == "callback_requested"
    entry = stack.sql("select kind, state from queue_entries where call_id = :id", id=row.id)[0]
    assert tuple(entry) == ("callback", "waiting")


def test_simulate_call_prints_the_transcript(stack):
    result = run_cli(["simulate-call", "--keys", "2", "--from", CALLER, "--emulator", stack.emulator_process.url], stack.env)
    assert result.returncode == 0, result.stderr
    assert "contact us themselves" in result.stdout


@pytest.fixture
def closed_stack(database_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    closed = {day: [] for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")} | {"mon": ["09:00-10:00"]}
    yield from start_stack(tmp_path, database_url, {"opening_hours": {"weekly": closed, "closed_dates": []}})


def test_out_of_hours_press_1_for_a_callback(closed_stack):
    sid = closed_stack.emulator.place_call(CALLER, keys=["1"])
    closed_stack.emulator.wait_until_ended(sid, timeout=20)
    text = heard(closed_stack, sid)
    assert "closed" in text and "Monday, 9 a.m. to 10 a.m." in text and "116 123" in text
    row = closed_stack.call_row(sid)
    assert row.outcome == "callback_requested"
    assert closed_stack.sql("select kind from queue_entries where call_id = :id", id=row.id)[0][0] == "callback"
