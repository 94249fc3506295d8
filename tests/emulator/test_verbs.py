"""Say, Play, Pause, Gather, Redirect, Hangup and Reject against Twilio's documented behaviour."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from twilio.twiml.voice_response import Gather, VoiceResponse



def twiml(*verbs_builder) -> VoiceResponse:
    """Build a response from callables that add verbs."""
    response = VoiceResponse()
    for add in verbs_builder:
        add(response)
    return response


def kinds(events, *wanted):
    """Event kinds in order, keeping only `wanted` ones."""
    return [e["kind"] for e in events if e["kind"] in wanted]


def test_say_play_pause_in_order_with_attributes(emu, scenario):
    response = VoiceResponse()
    response.say("Welcome to the helpline", voice="alice", language="en-GB", loop=2)
    response.play("music/hold.mp3")
    response.play(digits="12w")
    response.pause(length=2)
    response.say("Goodbye")
    scenario.route("voice", response)

    sid = emu.place_call(url=scenario.url("voice"))
    state = emu.wait_until_ended(sid)

    events = state["events"]
    assert kinds(events, "say", "play", "pause") == ["say", "play", "play", "pause", "say"]
    say = next(e for e in events if e["kind"] == "say")
    assert (say["text"], say["voice"], say["language"], say["loop"]) == ("Welcome to the helpline", "alice", "en-GB", 2)
    plays = [e for e in events if e["kind"] == "play"]
    assert plays[0]["url"] == scenario.url("music/hold.mp3")  # relative to the document's URL
    assert plays[1]["digits"] == "12w"
    assert next(e for e in events if e["kind"] == "pause")["length"] == 2
    assert state["status"] == "completed"
    assert state["end_reason"] == "end-of-twiml"
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_webhook_is_signed_and_carries_standard_parameters(emu, scenario, account):
    scenario.route("voice", VoiceResponse())
    sid = emu.place_call(from_="+447700900123", url=scenario.url("voice"))
    hit = scenario.wait_for("voice")[0]
    assert hit.method == "POST"
    assert hit.signature_ok
    assert re.fullmatch(r"CA[0-9a-f]{32}", hit.values["CallSid"])
    assert hit.values["CallSid"] == sid
    assert hit.values["AccountSid"] == account["sid"]
    assert hit.values["From"] == hit.values["Caller"] == "+447700900123"
    assert hit.values["To"] == hit.values["Called"] == account["number"]
    assert hit.values["Direction"] == "inbound"
    assert hit.values["ApiVersion"] == "2010-04-01"
    assert hit.values["CallStatus"] == "ringing"
    assert "ForwardedFrom" not in hit.values
    assert hit.headers["Content-Type"].startswith("application/x-www-form-urlencoded")


def test_withheld_caller_id_is_anonymous(emu, scenario):
    scenario.route("voice", VoiceResponse())
    emu.place_call(from_="anonymous", url=scenario.url("voice"))
    assert scenario.wait_for("voice")[0].values["From"] == "anonymous"


def test_gather_num_digits_posts_to_relative_action(emu, scenario):
    response = VoiceResponse()
    gather = Gather(num_digits=2, action="menu", timeout=10)
    gather.say("Enter two digits")
    response.append(gather)
    response.say("not reached")
    scenario.route("voice", response)
    scenario.route("menu", VoiceResponse())

    sid = emu.place_call(url=scenario.url("voice"), keys=["12"])
    hit = scenario.wait_for("menu")[0]
    assert hit.values["Digits"] == "12"
    assert hit.values["FinishedOnKey"] == ""
    assert hit.values["CallSid"] == sid
    ended = emu.wait_for(sid, "gather.ended")
    assert ended["reason"] == "num-digits"
    assert not any(e["kind"] == "say" and e["text"] == "not reached" for e in emu.call(sid)["events"])


def test_gather_finish_on_key(emu, scenario):
    response = VoiceResponse()
    response.gather(action=scenario.url("menu"), finish_on_key="#", timeout=10)
    scenario.route("voice", response)
    scenario.route("menu", VoiceResponse())
    emu.place_call(url=scenario.url("voice"), keys=["123#"])
    hit = scenario.wait_for("menu")[0]
    assert (hit.values["Digits"], hit.values["FinishedOnKey"]) == ("123", "#")


def test_gather_timeout_falls_through_to_next_verb(emu, scenario):
    response = VoiceResponse()
    gather = Gather(action="menu", num_digits=1, timeout=3)
    gather.say("Press a key")
    response.append(gather)
    response.say("We did not receive any input")
    scenario.route("voice", response)

    sid = emu.place_call(url=scenario.url("voice"))
    emu.wait_for(sid, "say", text="We did not receive any input")
    assert emu.wait_for(sid, "gather.ended")["reason"] == "timeout"
    emu.wait_until_ended(sid)
    assert scenario.hits("menu") == []


def test_gather_action_on_empty_result(emu, scenario):
    response = VoiceResponse()
    response.gather(action="menu", timeout=2, action_on_empty_result=True)
    response.say("not reached")
    scenario.route("voice", response)
    scenario.route("menu", VoiceResponse())
    emu.place_call(url=scenario.url("voice"))
    hit = scenario.wait_for("menu")[0]
    assert hit.values["Digits"] == ""


def test_gather_without_action_posts_back_to_the_document(emu, scenario):
    def voice(hit):
        response = VoiceResponse()
        if hit.values.get("Digits"):
            response.say(f"You pressed {hit.values['Digits']}")
        else:
            response.gather(num_digits=1, timeout=10)
        return response

    scenario.route("voice", voice)
    sid = emu.place_call(url=scenario.url("voice"), keys=["7"])
    emu.wait_for(sid, "say", text="You pressed 7")
    assert [h.values.get("Digits") for h in scenario.hits("voice")] == [None, "7"]


def test_key_press_barges_in_on_nested_say(emu, scenario):
    response = VoiceResponse()
    gather = Gather(num_digits=1, action="menu", timeout=10)
    gather.say("This menu repeats for ever", loop=0)
    response.append(gather)
    scenario.route("voice", response)
    scenario.route("menu", VoiceResponse())

    sid = emu.place_call(url=scenario.url("voice"))
    emu.wait_for(sid, "say")
    assert emu.press(sid, "5") is True
    hit = scenario.wait_for("menu")[0]
    assert hit.values["Digits"] == "5"
    assert emu.wait_for(sid, "gather.ended")["barged_in"] is True


def test_keys_outside_a_gather_are_ignored(emu, scenario):
    response = VoiceResponse()
    response.pause(length=60)
    scenario.route("voice", response)
    sid = emu.place_call(url=scenario.url("voice"))
    emu.wait_for(sid, "pause")
    assert emu.press(sid, "1") is False
    emu.hangup(sid)
    assert emu.wait_until_ended(sid)["end_reason"] == "caller-hung-up"


def test_redirect_relative_then_absolute_get(emu, scenario):
    first = VoiceResponse()
    first.redirect("second")
    second = VoiceResponse()
    second.redirect(scenario.url("third") + "?step=3", method="GET")
    third = VoiceResponse()
    third.say("arrived")
    scenario.route("voice", first)
    scenario.route("second", second)
    scenario.route("third", third)

    sid = emu.place_call(url=scenario.url("voice"))
    emu.wait_for(sid, "say", text="arrived")
    hit = scenario.wait_for("third")[0]
    assert hit.method == "GET"
    assert hit.signature_ok  # signed over the full URL including the query string
    assert hit.values["step"] == "3" and hit.values["CallSid"] == sid
    assert scenario.hits("second")[0].method == "POST"


def test_hangup_verb_ends_the_call(emu, scenario):
    response = VoiceResponse()
    response.say("bye")
    response.hangup()
    response.say("never said")
    scenario.route("voice", response)
    sid = emu.place_call(url=scenario.url("voice"))
    state = emu.wait_until_ended(sid)
    assert state["status"] == "completed"
    assert state["end_reason"] == "hangup-verb"
    assert "never said" not in [e.get("text") for e in state["events"]]


@pytest.mark.parametrize("reason, status", [("busy", "busy"), ("rejected", "no-answer"), (None, "no-answer")])
def test_reject_first_verb_never_answers(emu, scenario, reason, status):
    response = VoiceResponse()
    if reason:
        response.reject(reason=reason)
    else:
        response.reject()
    scenario.route("voice", response)
    sid = emu.place_call(url=scenario.url("voice"))
    state = emu.wait_until_ended(sid)
    assert state["status"] == status
    assert state["answered"] is False
    assert "in-progress" not in [e.get("status") for e in state["events"] if e["kind"] == "status"]


def test_speech_input_takes_the_callers_words(emu, scenario):
    response = VoiceResponse()
    response.gather(input="speech dtmf", action="menu", timeout=30)
    scenario.route("voice", response)
    scenario.route("menu", VoiceResponse())
    sid = emu.place_call(url=scenario.url("voice"))
    emu.wait_for(sid, "gather.started")
    emu.say(sid, "my own health")
    hit = scenario.wait_for("menu")[0]
    assert hit.values["SpeechResult"] == "my own health"


def test_speech_only_gather_does_not_hear_keys(emu, scenario):
    response = VoiceResponse()
    response.gather(input="speech", action="menu", timeout=30, hints="myself, someone else", language="en-GB")
    scenario.route("voice", response)
    scenario.route("menu", VoiceResponse())
    sid = emu.place_call(url=scenario.url("voice"))
    started = emu.wait_for(sid, "gather.started")
    assert (started["input"], started["hints"], started["language"]) == ("speech", "myself, someone else", "en-GB")
    assert emu.press(sid, "1") is False
    emu.say(sid, "myself")
    hit = scenario.wait_for("menu")[0]
    assert (hit.values["SpeechResult"], hit.values["Confidence"], hit.values["Digits"]) == ("myself", "0.9", "")


def test_scripted_words_and_typed_ahead_keys(emu, scenario):
    response = VoiceResponse()
    gather = Gather(input="dtmf speech", num_digits=3, action="menu", timeout=5)
    gather.say("A long menu " * 20)
    response.append(gather)
    scenario.route("voice", response)
    scenario.route("menu", VoiceResponse())
    sid = emu.place_call(url=scenario.url("voice"), keys=["barge:123"])
    ended = emu.wait_for(sid, "gather.ended")
    assert (ended["digits"], ended["reason"], ended["barged_in"]) == ("123", "num-digits", True)
    assert scenario.wait_for("menu")[0].values["Digits"] == "123"

    sid = emu.place_call(url=scenario.url("voice"), keys=["say:my own health"])
    assert emu.wait_for(sid, "gather.ended")["speech"] == "my own health"
    assert scenario.wait_for("menu", count=2)[1].values["SpeechResult"] == "my own health"


def test_without_barge_in_the_prompt_plays_to_the_end_and_the_keys_still_count(emu, scenario):
    response = VoiceResponse()
    gather = Gather(num_digits=1, action="menu", timeout=10, barge_in=False)
    gather.say("Please listen to the whole of this")
    gather.say("and this too")
    response.append(gather)
    scenario.route("voice", response)
    scenario.route("menu", VoiceResponse())
    sid = emu.place_call(url=scenario.url("voice"), keys=["barge:4"])
    ended = emu.wait_for(sid, "gather.ended")
    assert (ended["digits"], ended["barged_in"]) == ("4", False)
    says = [e["text"] for e in emu.call(sid)["events"] if e["kind"] == "say"]
    assert says == ["Please listen to the whole of this", "and this too"]


def test_events_carry_call_time_with_prompts_at_their_spoken_length(emu, scenario):
    response = VoiceResponse()
    response.say("word " * 27)  # ten seconds at the emulator's speaking rate
    response.hangup()
    scenario.route("voice", response)
    sid = emu.place_call(url=scenario.url("voice"))
    state = emu.wait_until_ended(sid)
    ended = next(e for e in state["events"] if e["kind"] == "ended")
    answered = next(e for e in state["events"] if e.get("call_s") is not None)
    wall = (dt.datetime.fromisoformat(ended["at"]) - dt.datetime.fromisoformat(answered["at"])).total_seconds()
    # Ten seconds of speech, plus whatever else took real time (the webhook), which is not scaled.
    assert 10 <= ended["call_s"] <= 10 + wall + 0.5


def test_auto_speech_timeout_with_the_default_model_warns_as_twilio_does(emu, scenario):
    response = VoiceResponse()
    response.gather(input="speech", action="menu", timeout=5, speech_timeout="auto")
    scenario.route("voice", response)
    scenario.route("menu", VoiceResponse())
    sid = emu.place_call(url=scenario.url("voice"), keys=["say:hello"])
    assert emu.wait_for_alert(code=13335, call_sid=sid)["level"] == "warning"
    assert scenario.wait_for("menu")[0].values["SpeechResult"] == "hello"
