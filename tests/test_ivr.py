"""Every branch of the IVR, through signed webhooks, with the records each one leaves."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from helpline.db import db
from helpline.models import Call, CallEvent, QueueEntry

from .conftest import WEEKDAYS
from .walker import CallWalker


def assert_put_through(app, walker: CallWalker) -> None:  # type: ignore[no-untyped-def]
    """The caller is in line to speak to someone now, and their call has not been ended."""
    assert walker.enqueue() is not None
    with app.app_context():
        call = the_call(walker.sid)
        assert call.need == "speak_now" and call.outcome is None


def the_call(sid: str) -> Call:
    """The stored record of a call."""
    db.session.expire_all()
    call = db.session.scalar(select(Call).where(Call.call_sid == sid))
    assert call is not None
    return call


def test_greeting_names_service_confidentiality_and_emergency_help(app, twilio):
    walker = CallWalker(twilio)
    walker.start()
    walker.until_menu()
    assert "confidential" in walker.text
    assert "999" in walker.text and "Samaritans" in walker.text and "116 123" in walker.text
    assert "Practitioner Helpline" in walker.text


def test_self_referral_reaches_the_queue_with_a_complete_record(app, twilio):
    walker = CallWalker(twilio, caller="07911 123456")
    walker.start()
    walker.press("1")  # my own health
    walker.press("1")  # eligible
    walker.press("2")  # addiction
    enqueue = walker.enqueue()
    assert enqueue is not None and enqueue.text == "helpline"
    assert enqueue.get("waitUrl") and enqueue.get("action")
    with app.app_context():
        call = the_call(walker.sid)
        assert call.need == "addiction"
        assert call.answers == {"about": "self", "eligible": "yes"}
        assert [entry["step"] for entry in call.ivr_path if "key" not in entry] == [
            "greeting", "opening_check", "about_whom", "eligibility", "need", "queue"]
        assert [entry["key"] for entry in call.ivr_path if "key" in entry] == ["1", "1", "2"]
        assert call.queued_at is not None and call.outcome is None
        assert call.caller_number_status == "valid"
        vault = app.extensions["helpline.vault"]
        assert call.caller_number_enc and "7911" not in call.caller_number_enc
        assert vault.decrypt(call.caller_number_enc) == "+447911123456"
        assert call.caller_hash == vault.keyed_hash("+447911123456")
        entry = db.session.scalar(select(QueueEntry).where(QueueEntry.call_id == call.id))
        assert entry.state == "waiting" and entry.kind == "live" and entry.need == "addiction"
        kinds = [event.kind for event in db.session.scalars(call.events.select())]
        assert kinds[0] == "incoming" and "queued" in kinds


def test_someone_else_is_turned_away_kindly_and_nothing_personal_is_kept(app, twilio):
    walker = CallWalker(twilio)
    walker.start()
    walker.press("2")
    assert not walker.hung_up()  # first, the explanation, and a way back for a key pressed by mistake
    assert "contact us themselves" in walker.text and "call this number" in walker.text and "press 9" in walker.text
    walker.press("1")
    assert walker.hung_up()
    with app.app_context():
        call = the_call(walker.sid)
        assert call.outcome == "third_party"
        assert call.caller_number_status == "dropped"
        assert call.caller_number_enc is None and call.caller_hash is None
        assert db.session.scalar(select(QueueEntry).where(QueueEntry.call_id == call.id)) is None


def test_no_answer_about_whom_after_three_prompts_queues_flagged(app, twilio):
    walker = CallWalker(twilio)
    walker.start()
    walker.silence()
    walker.press("7")  # not a menu key: counts as an attempt too
    walker.silence()
    assert walker.enqueue() is not None
    assert walker.text.count("If you are calling about your own health") == 3
    assert "did not catch that" in walker.text
    with app.app_context():
        call = the_call(walker.sid)
        assert call.flags == ["self_referral_unconfirmed"]
        assert db.session.scalar(select(QueueEntry.flags).where(QueueEntry.call_id == call.id)) == ["self_referral_unconfirmed"]


def test_ineligible_caller_is_signposted(app, twilio):
    walker = CallWalker(twilio)
    walker.start()
    walker.press("1")
    walker.press("2")
    assert not walker.hung_up()
    walker.silence()  # no key: the call ends as if they had confirmed
    assert walker.hung_up()
    for service in ("Scotland", "Wales", "Northern Ireland", "BMA"):
        assert service in walker.text
    with app.app_context():
        call = the_call(walker.sid)
        assert call.outcome == "ineligible"
        assert call.caller_number_enc is None


@pytest.mark.parametrize("key,need", [("1", "mental_health"), ("2", "addiction"), ("3", "return_to_work"), ("0", "speak_now")])
def test_each_need_is_recorded(app, twilio, key, need):
    walker = CallWalker(twilio)
    walker.start()
    walker.press("1")
    walker.press("1")
    walker.press(key)
    assert walker.enqueue() is not None
    with app.app_context():
        assert the_call(walker.sid).need == need


def test_about_the_service_plays_then_returns_to_the_need_menu(app, twilio):
    walker = CallWalker(twilio)
    walker.start()
    walker.press("1")
    walker.press("1")
    walker.press("4")
    assert "face to face or by video" in walker.text
    assert walker.xml.find("Gather") is not None
    walker.press("1")
    assert walker.enqueue() is not None
    with app.app_context():
        steps = [entry["step"] for entry in the_call(walker.sid).ivr_path if "key" not in entry]
        assert steps.count("need") == 2 and "about_service" in steps


def test_withheld_number_is_recorded_as_such_not_rejected(app, twilio):
    walker = CallWalker(twilio, caller="anonymous")
    walker.start()
    walker.press("1")
    walker.press("1")
    walker.press("1")
    assert walker.enqueue() is not None
    with app.app_context():
        call = the_call(walker.sid)
        assert call.caller_number_status == "withheld" and call.caller_number_enc is None


def test_invalid_number_is_recorded_as_invalid(app, twilio):
    walker = CallWalker(twilio, caller="+4412")
    walker.start()
    walker.press("1")
    walker.press("1")
    walker.press("1")
    with app.app_context():
        assert the_call(walker.sid).caller_number_status == "invalid"


CLOSED = {day: [] for day in WEEKDAYS}


def test_out_of_hours_offers_a_callback_and_stores_it(app_factory):
    from .conftest import Twilio, open_one_day_only

    weekly, day = open_one_day_only("09:00-17:00")
    app = app_factory(opening_hours={"weekly": weekly, "closed_dates": []})
    walker = CallWalker(Twilio(app.test_client()))
    walker.start()
    walker.until_menu()
    assert "closed" in walker.text and f"{day}, 9 a.m. to 5 p.m." in walker.text
    assert "999" in walker.text and "116 123" in walker.text
    walker.press("1")
    assert walker.hung_up()
    assert "after we open" in walker.text
    with app.app_context():
        call = the_call(walker.sid)
        assert call.outcome == "callback_requested"
        entry = db.session.scalar(select(QueueEntry).where(QueueEntry.call_id == call.id))
        assert entry.kind == "callback" and entry.state == "waiting"
        assert entry.not_before is not None and entry.not_before > dt.datetime.now(dt.timezone.utc)
        assert app.extensions["helpline.vault"].decrypt(call.caller_number_enc) == "+447911123456"


def test_out_of_hours_without_a_key_says_goodbye_and_never_queues(app_factory):
    from .conftest import Twilio

    app = app_factory(opening_hours={"weekly": CLOSED, "closed_dates": []})
    walker = CallWalker(Twilio(app.test_client()))
    walker.start()
    walker.silence()
    assert walker.hung_up() and walker.enqueue() is None
    with app.app_context():
        call = the_call(walker.sid)
        assert call.outcome == "out_of_hours" and call.caller_number_enc is None


def test_out_of_hours_callback_with_withheld_number_explains(app_factory):
    from .conftest import Twilio

    app = app_factory(opening_hours={"weekly": CLOSED, "closed_dates": []})
    walker = CallWalker(Twilio(app.test_client()), caller="anonymous")
    walker.start()
    walker.press("1")
    assert walker.hung_up() and "cannot see the number" in walker.text
    with app.app_context():
        assert the_call(walker.sid).outcome == "out_of_hours"


def test_closed_date_is_out_of_hours(app_factory):
    from .conftest import Twilio

    today = dt.datetime.now(dt.timezone.utc).astimezone(__import__("zoneinfo").ZoneInfo("Europe/London")).date()
    app = app_factory(opening_hours={"closed_dates": [today.isoformat()]})
    walker = CallWalker(Twilio(app.test_client()))
    walker.start()
    walker.until_menu()
    assert "closed" in walker.text


def test_timeline_records_each_step_and_key_with_times(app, twilio):
    walker = CallWalker(twilio)
    walker.start()
    walker.press("1")
    with app.app_context():
        call = the_call(walker.sid)
        events = list(db.session.scalars(select(CallEvent).where(CallEvent.call_id == call.id).order_by(CallEvent.id)))
        assert [(e.kind, e.step) for e in events][:5] == [
            ("incoming", None), ("step", "greeting"), ("step", "opening_check"), ("step", "about_whom"), ("key", "about_whom")]
        assert all(e.at.tzinfo is not None for e in events)


@pytest.mark.parametrize("presses,flags,answers", [
    ([], ["self_referral_unconfirmed", "eligibility_unconfirmed"], {}),   # 0 at "about whom"
    (["1"], ["eligibility_unconfirmed"], {"about": "self"}),               # 0 at eligibility
    (["1", "1"], [], {"about": "self", "eligible": "yes"}),               # 0 at the need menu
])
def test_zero_at_any_menu_reaches_a_person_flagged_with_what_is_unconfirmed(app, twilio, presses, flags, answers):
    walker = CallWalker(twilio)
    walker.start()
    for key in presses:
        walker.press(key)
    walker.press("0")
    assert walker.enqueue() is not None
    with app.app_context():
        call = the_call(walker.sid)
        assert call.flags == flags and call.answers == answers and call.need == "speak_now"
        entry = db.session.scalar(select(QueueEntry).where(QueueEntry.call_id == call.id))
        assert entry.state == "waiting" and entry.flags == flags


def test_star_repeats_a_menu_without_using_up_a_try(app, twilio):
    walker = CallWalker(twilio)
    walker.start()
    walker.until_menu()
    for _ in range(4):
        walker.press("*")  # more than the menu's three tries: a repeat is not a try
    assert walker.enqueue() is None and not walker.hung_up()
    assert walker.text.count("If you are calling about your own health") == 5
    assert "did not catch that" not in walker.text
    walker.press("1")
    assert "registered with the GMC" in walker.text


def test_zero_out_of_hours_reaches_nobody_and_is_not_taken_for_a_callback(app_factory):
    from .conftest import Twilio

    app = app_factory(opening_hours={"weekly": CLOSED, "closed_dates": []})
    walker = CallWalker(Twilio(app.test_client()))
    walker.start()
    walker.press("0")
    assert walker.enqueue() is None
    with app.app_context():
        assert the_call(walker.sid).outcome == "out_of_hours"


def test_the_greeting_is_spoken_outside_any_menu_and_everything_after_it_inside_one(app, twilio):
    walker = CallWalker(twilio)
    document = walker.start()
    # The service's name, that it is confidential, and the emergency advice: no Gather, so no key can cut them short.
    assert document.find("Gather") is None and "confidential" in walker.text
    assert "999" in walker.text and "116 123" in walker.text
    menu = walker.until_menu()
    gather = menu.find("Gather")
    said = gather.find("Say").text
    # The confidentiality words open the first menu, inside its Gather: a key interrupts them.
    assert said.startswith("Nothing you tell us is shared with your employer") and "press 1" in said
    assert gather.get("finishOnKey") == "" and gather.get("timeout") == "4"


def test_keys_typed_ahead_answer_the_menus_one_by_one(app, twilio):
    walker = CallWalker(twilio, caller="07911 123456")
    document = walker.start()
    walker.until_menu()
    assert walker.xml.find("Gather").get("numDigits") == "3"  # about whom, eligibility and need, at once
    walker.press("112")
    assert walker.enqueue() is not None
    assert "registered with the GMC" not in walker.text  # the menus answered ahead were never played
    with app.app_context():
        call = the_call(walker.sid)
        assert call.answers == {"about": "self", "eligible": "yes"} and call.need == "addiction"
        assert [entry["key"] for entry in call.ivr_path if "key" in entry] == ["1", "1", "2"]
        typed = [e.detail for e in db.session.scalars(call.events.select()) if e.kind == "key"]
        assert [d.get("typed_ahead", False) for d in typed] == [False, True, True]
    assert document is not None


def test_keys_typed_ahead_stop_at_a_confirmation_which_must_be_heard(app, twilio):
    walker = CallWalker(twilio)
    walker.start()
    walker.press("21")  # "someone else", then a 1 meant for the next menu: not taken as "that is right"
    assert not walker.hung_up() and "press 9" in walker.text
    with app.app_context():
        call = the_call(walker.sid)
        assert call.step == "third_party_check" and call.outcome is None
        assert [e.detail for e in db.session.scalars(call.events.select()) if e.kind == "keys_dropped"] == [{"keys": "1"}]


def test_a_mistaken_2_about_whom_is_put_right_with_the_back_key(app, twilio):
    walker = CallWalker(twilio)
    walker.start()
    walker.press("2")
    walker.press("9")  # "I pressed 2 by mistake"
    assert not walker.hung_up()
    assert walker.heard[-1].count("If you are calling about your own health") == 1
    walker.press("1")
    walker.press("1")
    walker.press("1")
    assert walker.enqueue() is not None
    with app.app_context():
        call = the_call(walker.sid)
        assert call.outcome is None and call.answers == {"about": "self", "eligible": "yes"}
        assert call.caller_number_status == "valid" and call.caller_number_enc


def test_a_mistaken_2_at_eligibility_goes_back_to_eligibility(app, twilio):
    walker = CallWalker(twilio)
    walker.start()
    walker.press("1")
    walker.press("2")
    assert "Health for Health Professionals Wales" in walker.text and not walker.hung_up()
    walker.press("9")
    assert "registered with the GMC" in walker.heard[-1]
    walker.press("1")
    assert "what you would like help with" in walker.heard[-1]
    with app.app_context():
        assert the_call(walker.sid).answers == {"about": "self", "eligible": "yes"}


def test_back_goes_one_menu_at_a_time_and_replays_the_first(app, twilio):
    walker = CallWalker(twilio)
    walker.start()
    walker.press("1")
    walker.press("1")
    walker.press("4")  # about the service, then the need menu again
    walker.press("9")
    assert "registered with the GMC" in walker.heard[-1]
    walker.press("9")
    assert "If you are calling about your own health" in walker.heard[-1]
    walker.press("9")  # nothing before the first menu: it plays again
    assert "If you are calling about your own health" in walker.heard[-1]
    assert not walker.hung_up() and walker.enqueue() is None
    with app.app_context():
        assert the_call(walker.sid).step == "about_whom"


def test_back_then_keys_typed_ahead_carry_on(app, twilio):
    walker = CallWalker(twilio)
    walker.start()
    walker.press("1")
    walker.press("911")  # back to about whom, then 1 and 1 again: straight to the need menu
    assert "what you would like help with" in walker.heard[-1]


@pytest.mark.parametrize("words,need", [("mental health", "mental_health"), ("I drink too much alcohol", "addiction"),
                                        ("getting back to work", "return_to_work")])
def test_words_answer_menus_as_keys_do(app, twilio, words, need):
    walker = CallWalker(twilio)
    walker.start()
    walker.until_menu()
    gather = walker.xml.find("Gather")
    assert gather.get("input") == "dtmf speech" and gather.get("language") == "en-GB"
    assert "someone else" in gather.get("hints") and "myself" in gather.get("hints")
    walker.say("myself")
    walker.say("yes")
    walker.say(words)
    assert walker.enqueue() is not None
    with app.app_context():
        call = the_call(walker.sid)
        assert call.need == need and call.answers == {"about": "self", "eligible": "yes"}
        # Only that words were used, never what they were.
        details = [e.detail for e in db.session.scalars(call.events.select()) if e.kind == "key"]
        assert all(d.get("spoken") for d in details) and words not in str(details)


def test_words_that_match_no_key_count_as_a_try(app, twilio):
    walker = CallWalker(twilio)
    walker.start()
    walker.say("what is this")
    assert "did not catch that" in walker.heard[-1]
    walker.say("someone else")
    assert "contact us themselves" in walker.heard[-1]


def test_a_relay_caller_gets_longer_to_answer(app, twilio):
    walker = CallWalker(twilio, caller="+18001441134960000")
    walker.start()
    walker.until_menu()
    assert walker.xml.find("Gather").get("timeout") == "20"
    plain = CallWalker(twilio)
    plain.start()
    plain.until_menu()
    assert plain.xml.find("Gather").get("timeout") == "4"


@pytest.mark.parametrize("presses", [["2"], ["1", "2"]], ids=["someone else", "not eligible"])
def test_zero_at_a_confirmation_reaches_a_person_rather_than_ending_the_call(app, twilio, presses):
    walker = CallWalker(twilio)
    walker.start()
    for key in presses:
        walker.press(key)
    assert "press 9" in walker.heard[-1]
    walker.press("0")
    assert_put_through(app, walker)


def test_star_repeats_a_confirmation(app, twilio):
    walker = CallWalker(twilio)
    walker.start()
    walker.press("2")
    walker.press("*")
    assert "contact us themselves" in walker.heard[-1] and not walker.hung_up()


def test_the_keys_of_every_menu_can_be_said_too(app, twilio):
    walker = CallWalker(twilio)
    walker.start()
    walker.until_menu()
    assert "go back" in walker.xml.find("Gather").get("hints")
    walker.say("could you say that again")
    assert walker.heard[-1].startswith("If you are calling about your own health")
    walker.say("someone else")
    walker.say("sorry, I pressed the wrong key")  # at the confirmation: back to the menu before
    assert "If you are calling about your own health" in walker.heard[-1] and not walker.hung_up()
    walker.say("I'd like to speak to someone")
    assert_put_through(app, walker)


def test_yes_at_a_confirmation_ends_the_call(app, twilio):
    walker = CallWalker(twilio)
    walker.start()
    walker.press("1")
    walker.press("2")
    walker.say("yes, that's right")
    assert walker.hung_up()
    with app.app_context():
        assert the_call(walker.sid).outcome == "ineligible"


def test_a_prompt_fills_each_placeholder_it_names_and_texts_may_name_texts_in_any_order(app, monkeypatch):
    """A prompt's placeholders are filled from the values given, the flow's texts and the service's
    own values; a text may name a text written after it; a text that names itself through another
    is left empty there rather than never ending; and the calendar is read only for a prompt that
    names the next opening."""
    import dataclasses

    interpreter = app.extensions["helpline.ivr"]
    texts = {"first": "Before {second}.", "second": "then {service_name}", "loop_a": "a {loop_b}", "loop_b": "b {loop_a}"}
    speaker = dataclasses.replace(interpreter, flow=dataclasses.replace(interpreter.flow, texts=texts))
    read: list[dt.datetime] = []
    monkeypatch.setattr(type(speaker), "spoken_next_opening", lambda self, now: read.append(now) or "tomorrow at 8 a.m.")
    now = dt.datetime(2026, 12, 7, 20, tzinfo=dt.timezone.utc)
    name = app.config["HELPLINE"].service.name
    assert speaker.render("{first} You are number {position}.", now, position=3) == f"Before then {name}. You are number 3."
    assert speaker.render("{loop_a}", now) == "a b"
    assert read == []
    assert speaker.render("We open {next_opening}.", now) == "We open tomorrow at 8 a.m."
    assert read == [now]


def test_the_documents_the_ivr_keeps_say_nothing_of_who_called(app, twilio, monkeypatch):
    """The IVR's builders keep each document they write (twiml.py): what goes into them must be the
    service's words and URLs, never a caller's number or call. Two callers walk the same way; every
    argument the builders are given is looked at, and the second caller's menus are the first's."""
    from helpline.ivr import twiml

    given: list[str] = []
    menu = twiml.menu
    for builder in twiml.IVR_BUILDERS:
        builder.cache_clear()
        monkeypatch.setattr(twiml, builder.__wrapped__.__name__,
                            lambda *args, _kept=builder: (given.extend(map(repr, args)), _kept(*args))[1])
    callers = []
    for number in ("07911 123456", "07700 900987"):
        walker = CallWalker(twilio, caller=number)
        walker.start()
        for key in ("1", "1", "2"):
            walker.press(key)
        assert walker.enqueue() is not None
        callers.append(walker)
    assert given
    for walker in callers:
        assert not any(part in argument for argument in given
                       for part in (walker.sid, walker.caller.replace(" ", "")[-6:], "911123456", "700900987"))
    assert menu.cache_info().hits >= 3  # the second caller heard the first caller's menus, kept
