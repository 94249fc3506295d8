"""Every IVR branch end to end: calls placed through the Twilio emulator into a real `helpline serve`,
both separate processes over HTTP, and the records they leave."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from helpline.emulator.client import EmulatorClient

from .conftest import open_one_day_only
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


def loaded(value: Any) -> Any:
    """A JSON column as read by plain SQL: text on SQLite, already parsed on PostgreSQL."""
    return json.loads(value) if isinstance(value, str) else value


def answer_to_queue_s(stack: Stack, sid: str) -> float:
    """Call time from the answer until the caller was in Twilio's queue, as the emulator counts it:
    prompts at their spoken length, webhooks at their real time."""
    events = stack.emulator.call(sid)["events"]
    enqueued = next(event for event in events if event["kind"] == "enqueued")
    return enqueued["call_s"]


def test_a_caller_who_types_ahead_is_in_line_within_15_seconds_having_heard_the_emergency_advice(stack):
    sid = stack.emulator.place_call(CALLER, keys=["barge:111"])
    stack.emulator.wait_for(sid, "enqueued", timeout=20)
    events = stack.emulator.call(sid)["events"]
    first_key = next(index for index, event in enumerate(events) if event["kind"] == "digits")
    advice = next(index for index, event in enumerate(events) if event["kind"] == "say" and "116 123" in event["text"])
    assert advice < first_key  # the advice was spoken in full before any key was heard
    ended = next(event for event in events if event["kind"] == "gather.ended")
    assert (ended["digits"], ended["barged_in"]) == ("111", True)
    assert answer_to_queue_s(stack, sid) < 15
    row = stack.call_row(sid)
    assert row.need == "mental_health" and loaded(row.answers) == {"about": "self", "eligible": "yes"}
    stack.emulator.hangup(sid)

    listener = stack.emulator.place_call(CALLER, keys=["1", "1", "1"])
    stack.emulator.wait_for(listener, "enqueued", timeout=30)
    assert answer_to_queue_s(stack, listener) > answer_to_queue_s(stack, sid) + 30  # they heard three menus
    stack.emulator.hangup(listener)


@pytest.mark.parametrize("keys,flags", [
    (["0"], ["self_referral_unconfirmed", "eligibility_unconfirmed"]),
    (["1", "0"], ["eligibility_unconfirmed"]),
    (["1", "1", "0"], []),
    (["2", "0"], ["eligibility_unconfirmed"]),
], ids=["about whom", "eligibility", "need", "a confirmation"])
def test_zero_at_every_menu_reaches_the_line(stack, keys, flags):
    sid = stack.emulator.place_call(CALLER, keys=keys)
    stack.emulator.wait_for(sid, "enqueued", timeout=20)
    row = stack.call_row(sid)
    assert row.need == "speak_now" and loaded(row.flags) == flags
    stack.emulator.hangup(sid)


def test_star_repeats_the_menu(stack):
    sid = stack.emulator.place_call(CALLER, keys=["*", "1", "1", "1"])
    stack.emulator.wait_for(sid, "enqueued", timeout=30)
    text = heard(stack, sid)
    assert text.count("If you are calling about your own health") == 2
    assert text.count("free and confidential") == 1 and text.count("Nothing you tell us is shared") == 1  # not said again
    stack.emulator.hangup(sid)


@pytest.mark.parametrize("keys", [["2", "9", "1", "1", "1"], ["1", "2", "9", "1", "1"]], ids=["about whom", "eligibility"])
def test_a_2_pressed_by_mistake_is_put_right_with_the_back_key(stack, keys):
    sid = stack.emulator.place_call(CALLER, keys=keys)
    stack.emulator.wait_for(sid, "enqueued", timeout=30)
    assert "press 9" in heard(stack, sid)
    row = stack.call_row(sid)
    assert row.outcome is None and loaded(row.answers) == {"about": "self", "eligible": "yes"}
    assert row.caller_number_status == "valid"
    stack.emulator.hangup(sid)


def test_someone_else_confirmed_with_1_ends_the_call_keeping_nothing(stack):
    sid = stack.emulator.place_call(CALLER, keys=["2", "1"])
    stack.emulator.wait_until_ended(sid, timeout=20)
    row = stack.wait_for_row(sid, lambda row: row.outcome is not None)
    assert (row.outcome, row.caller_number_status, row.caller_number_enc, row.caller_hash) == ("third_party", "dropped", None, None)


def test_a_mistaken_someone_else_said_in_words_is_put_right_in_words(stack):
    sid = stack.emulator.place_call(CALLER, keys=["say:someone else", "say:go back", "say:myself", "1", "1"])
    stack.emulator.wait_for(sid, "enqueued", timeout=30)
    row = stack.call_row(sid)
    assert row.outcome is None and loaded(row.answers) == {"about": "self", "eligible": "yes"}
    stack.emulator.hangup(sid)


def test_words_answer_the_menus(stack):
    sid = stack.emulator.place_call(CALLER, keys=["say:it's about myself", "say:yes", "say:alcohol"])
    stack.emulator.wait_for(sid, "enqueued", timeout=30)
    started = stack.emulator.wait_for(sid, "gather.started")
    assert started["input"] == "dtmf speech" and started["language"] == "en-GB" and "someone else" in started["hints"]
    row = stack.call_row(sid)
    assert row.need == "addiction" and loaded(row.answers) == {"about": "self", "eligible": "yes"}
    stack.emulator.hangup(sid)


def test_a_relay_caller_gets_longer_at_every_menu(stack):
    sid = stack.emulator.place_call("+18001441134960000", keys=["1", "1"])
    stack.emulator.wait_for(sid, "say", timeout=20, text_contains="what you would like help with")
    timeouts = [event["timeout"] for event in stack.emulator.call(sid)["events"] if event["kind"] == "gather.started"]
    assert timeouts == [20, 20, 20]
    stack.emulator.hangup(sid)
    plain = stack.emulator.place_call(CALLER)
    assert stack.emulator.wait_for(plain, "gather.started", timeout=20)["timeout"] == 4
    stack.emulator.hangup(plain)


def test_a_withheld_number_hears_once_that_we_cannot_call_back(stack):
    sid = stack.emulator.place_call("anonymous", keys=["1", "1", "1"])
    stack.emulator.wait_for(sid, "say", timeout=20, text_contains="cannot call you back")
    stack.emulator.wait_for(sid, "queue.wait", timeout=20)
    text = heard(stack, sid)
    assert text.count("cannot call you back") == 1 and "rather we called you back" not in text
    assert "in line" in text
    stack.emulator.hangup(sid)


@pytest.fixture
def opening() -> tuple[dict[str, list[str]], str]:
    """The closed stack's opening hours, and the one day they open (worked out once for the test)."""
    return open_one_day_only("09:00-10:00")


@pytest.fixture
def closed_stack(database_url: str, tmp_path: Path, opening):  # type: ignore[no-untyped-def]
    weekly, _day = opening
    yield from start_stack(tmp_path, database_url, {"opening_hours": {"weekly": weekly, "closed_dates": []}})


def test_out_of_hours_press_1_for_a_callback(closed_stack, opening):
    _weekly, day = opening
    sid = closed_stack.emulator.place_call(CALLER, keys=["1"])
    closed_stack.emulator.wait_until_ended(sid, timeout=20)
    text = heard(closed_stack, sid)
    assert "closed" in text and f"{day}, 9 a.m. to 10 a.m." in text and "116 123" in text
    row = closed_stack.call_row(sid)
    assert row.outcome == "callback_requested"
    assert closed_stack.sql("select kind from queue_entries where call_id = :id", id=row.id)[0][0] == "callback"
