"""Dial with Client, Number and Conference: ringing, answering, talking, DialCallStatus."""

from __future__ import annotations

import time

from twilio.twiml.voice_response import Dial, VoiceResponse


def dial_doc(kind: str, target: str, **attrs) -> VoiceResponse:
    """A document dialling one client or number, with its action."""
    response = VoiceResponse()
    dial = Dial(action="dialled", **attrs)
    getattr(dial, kind)(target)
    response.append(dial)
    response.say("not reached when there is an action")
    return response


def after_dial(hit) -> VoiceResponse:
    """The action document: says the DialCallStatus."""
    response = VoiceResponse()
    response.say("dial status " + hit.values["DialCallStatus"])
    return response


def test_dial_client_answer_talk_and_callee_hangup(emu, scenario):
    identity = scenario.prefix + "-alice"
    emu.register_client(identity)
    response = VoiceResponse()
    dial = Dial(action="dialled", timeout=20)
    dial.client(identity, status_callback="child-status", status_callback_event="initiated ringing answered completed")
    response.append(dial)
    scenario.route("voice", response)
    scenario.route("dialled", after_dial)

    caller = emu.place_call(from_="+447700900111", url=scenario.url("voice"))
    incoming = emu.client_wait_for(identity, "incoming")
    assert incoming["from"] == "+447700900111" and incoming["to"] == "client:" + identity
    leg = emu.answer_client(identity)
    assert leg == incoming["call_sid"]
    emu.wait_for(caller, "bridged", with_sid=leg)
    emu.client_wait_for(identity, "bridged", with_sid=caller)

    emu.client_say(identity, "Hello, you are through to the helpline")
    emu.wait_for(caller, "heard", text="Hello, you are through to the helpline")
    emu.say(caller, "thank you")
    emu.client_wait_for(identity, "heard", text="thank you")

    emu.hangup_client(identity)
    emu.wait_for(caller, "say", text="dial status completed")
    action = scenario.wait_for("dialled")[0].values
    assert action["DialCallSid"] == leg
    assert action["DialCallStatus"] == "completed"
    assert "DialCallDuration" in action
    child = scenario.wait_for("child-status", count=4)
    assert [h.values["CallStatus"] for h in child] == ["initiated", "ringing", "in-progress", "completed"]
    assert [h.values["SequenceNumber"] for h in child] == ["0", "1", "2", "3"]
    assert all(h.values["Direction"] == "outbound-dial" and h.values["ParentCallSid"] == caller for h in child)


def test_dial_unregistered_client_is_no_answer_at_once(emu, scenario):
    """As at Twilio, a client identity nobody has registered is not found: it does not ring out
    (600 s here would be 12 s under the time scale)."""
    scenario.route("voice", dial_doc("client", scenario.prefix + "-nobody", timeout=600))
    scenario.route("dialled", after_dial)
    caller = emu.place_call(url=scenario.url("voice"))
    emu.wait_for(caller, "dial.started")
    started = time.monotonic()
    emu.wait_for(caller, "say", text="dial status no-answer", timeout=10)
    assert time.monotonic() - started < 5


def test_dial_client_reject_is_busy(emu, scenario):
    identity = scenario.prefix + "-bob"
    emu.register_client(identity)
    scenario.route("voice", dial_doc("client", identity, timeout=30))
    scenario.route("dialled", after_dial)
    caller = emu.place_call(url=scenario.url("voice"))
    emu.client_wait_for(identity, "incoming")
    emu.reject_client(identity)
    emu.wait_for(caller, "say", text="dial status busy")


def test_caller_hangs_up_while_client_rings(emu, scenario):
    identity = scenario.prefix + "-carol"
    emu.register_client(identity)
    scenario.route("voice", dial_doc("client", identity, timeout=30))
    scenario.route("dialled", VoiceResponse())
    caller = emu.place_call(url=scenario.url("voice"))
    incoming = emu.client_wait_for(identity, "incoming")
    emu.hangup(caller)
    assert scenario.wait_for("dialled")[0].values["DialCallStatus"] == "canceled"
    ended = emu.client_wait_for(identity, "ended", call_sid=incoming["call_sid"])
    assert ended["status"] == "canceled"


def test_dial_number_auto_answer_and_no_action_continues(emu, scenario):
    number = "+447700900301"
    emu.register_phone(number, auto_answer=True)
    response = VoiceResponse()
    response.dial(number, caller_id="+441134960123")
    response.say("back after the dial")
    scenario.route("voice", response)
    caller = emu.place_call(url=scenario.url("voice"))
    event = emu.wait_for(caller, "bridged")
    leg = emu.call(event["with_sid"])
    assert (leg["to"], leg["from"], leg["direction"]) == (number, "+441134960123", "outbound-dial")
    emu.phone_wait_for(number, "bridged")
    emu.hangup_phone(number)
    emu.wait_for(caller, "say", text="back after the dial")


def test_dial_number_nobody_there_is_no_answer(emu, scenario):
    scenario.route("voice", dial_doc("number", "+447700900999", timeout=3))
    scenario.route("dialled", after_dial)
    caller = emu.place_call(url=scenario.url("voice"))
    emu.wait_for(caller, "say", text="dial status no-answer")


def test_conference_waits_starts_and_routes_talk(emu, scenario, twilio):
    room = scenario.prefix + "-room"
    handler = scenario.prefix + "-handler"
    emu.register_client(handler, auto_answer=True)
    response = VoiceResponse()
    dial = Dial(action="dialled")
    dial.conference(room, start_conference_on_enter=False, end_conference_on_exit=True, wait_url="conf-wait",
                    status_callback="conf-events", status_callback_event="start end join leave mute")
    response.append(dial)
    scenario.route("voice", response)
    wait = VoiceResponse()
    wait.say("Please hold for a handler")
    wait.pause(length=5)
    scenario.route("conf-wait", wait)
    scenario.route("dialled", after_dial)

    caller = emu.place_call(url=scenario.url("voice"))
    emu.wait_for(caller, "say", text="Please hold for a handler")
    conference = next(c for c in twilio.conferences.list(friendly_name=room))
    assert conference.status == "init"

    participant = twilio.conferences(conference.sid).participants.create(
        from_="+441134960123", to="client:" + handler, start_conference_on_enter=True, label="handler")
    assert participant.call_sid
    emu.wait_for(caller, "conference.started")
    assert twilio.conferences(conference.sid).fetch().status == "in-progress"
    emu.wait_for(participant.call_sid, "conference.joined")

    assert emu.client_say(handler, "Hello from the handler") == [caller]
    emu.wait_for(caller, "heard", text="Hello from the handler")
    listed = twilio.conferences(conference.sid).participants.list()
    assert {p.call_sid for p in listed} == {caller, participant.call_sid}

    twilio.conferences(conference.sid).participants(participant.call_sid).update(muted=True)
    emu.wait_for(participant.call_sid, "conference.mute")
    assert emu.client_say(handler, "nobody hears this") == []
    assert twilio.conferences(conference.sid).participants(participant.call_sid).fetch().muted is True

    twilio.conferences(conference.sid).participants(caller).delete()
    emu.wait_for(caller, "say", text="dial status completed")
    # The caller had endConferenceOnExit, so the handler's participant call ends too.
    assert emu.wait_until_ended(participant.call_sid)["status"] == "completed"
    assert twilio.conferences(conference.sid).fetch().status == "completed"
    events = [h.values["StatusCallbackEvent"] for h in scenario.wait_for("conf-events", count=7)]
    assert events == ["participant-join", "participant-join", "conference-start", "participant-mute",
                      "participant-leave", "conference-end", "participant-leave"]
    sequence = [int(h.values["SequenceNumber"]) for h in scenario.hits("conf-events")]
    assert sequence == sorted(sequence)


def test_a_conference_wait_url_may_name_an_audio_file(emu, scenario):
    """Twilio plays an MP3 or WAV named as a conference's waitUrl, as if by <Play>; no alert."""
    from flask import Response

    room = scenario.prefix + "-room"
    response = VoiceResponse()
    dial = Dial()
    dial.conference(room, start_conference_on_enter=False, wait_url="music.wav", wait_method="GET")
    response.append(dial)
    scenario.route("voice", response)
    scenario.route("music.wav", lambda hit: Response(b"RIFF....WAVE", content_type="audio/x-wav"))

    caller = emu.place_call(url=scenario.url("voice"))
    emu.wait_for(caller, lambda event: event["kind"] == "play" and event["url"].endswith("/music.wav"))
    assert not emu.alerts(call_sid=caller)
    emu.hangup(caller)


def test_a_caller_redirected_while_their_room_starts_follows_the_redirect(emu, scenario, twilio):
    """The room starts while the caller's wait music is still being fetched, and a redirect comes
    before the fetch returns: the redirect wins, and the old room's start is not raised later in
    the new document (it once ended the call with an internal error)."""
    import threading

    room = scenario.prefix + "-room"
    handler = scenario.prefix + "-handler"
    emu.register_client(handler, auto_answer=True)
    response = VoiceResponse()
    dial = Dial()
    dial.conference(room, start_conference_on_enter=False, wait_url="slow-wait")
    response.append(dial)
    scenario.route("voice", response)
    release = threading.Event()

    def slow_wait(hit):
        release.wait(5)
        music = VoiceResponse()
        music.pause(length=5)
        return music

    scenario.route("slow-wait", slow_wait)
    moved = VoiceResponse()
    moved.say("moved out of the room")
    moved.pause(length=2)
    moved.say("still here after the pause")
    scenario.route("moved", moved)

    caller = emu.place_call(url=scenario.url("voice"))
    scenario.wait_for("slow-wait")
    conference = next(c for c in twilio.conferences.list(friendly_name=room))
    participant = twilio.conferences(conference.sid).participants.create(
        from_="+441134960123", to="client:" + handler, start_conference_on_enter=True)
    emu.wait_for(participant.call_sid, "conference.joined")
    twilio.calls(caller).update(url=scenario.url("moved"), method="POST")
    release.set()

    emu.wait_for(caller, "say", text="still here after the pause")
    assert not emu.alerts(call_sid=caller)
    assert emu.call(caller)["status"] == "in-progress"
    emu.hangup(caller)
