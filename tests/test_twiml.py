"""Every TwiML the service answers with comes from helpline/ivr/twiml.py: each builder, read back as XML."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from helpline.ivr import twiml

VOICE = twiml.Voice("Polly.Amy", "en-GB")


def parse(response: object) -> ET.Element:
    root = ET.fromstring(str(response))
    assert root.tag == "Response"
    return root


def test_join_conference_waits_for_the_handler_and_ends_with_the_caller() -> None:
    root = parse(twiml.join_conference(VOICE, "Connecting you now.", "call-7", "https://h.example/music.mp3",
                                       "https://h.example/connect/7/conference"))
    say, dial = list(root)
    assert say.tag == "Say" and say.text == "Connecting you now." and say.get("voice") == "Polly.Amy" and say.get("language") == "en-GB"
    assert dial.tag == "Dial"
    (room,) = list(dial)
    assert room.tag == "Conference" and room.text == "call-7"
    assert room.get("startConferenceOnEnter") == "false" and room.get("endConferenceOnExit") == "true" and room.get("beep") == "false"
    assert room.get("waitUrl") == "https://h.example/music.mp3" and room.get("waitMethod") == "GET"
    assert room.get("statusCallback") == "https://h.example/connect/7/conference" and room.get("statusCallbackMethod") == "POST"
    assert room.get("statusCallbackEvent") == "start end join leave"


def test_join_conference_without_a_greeting_says_nothing() -> None:
    root = parse(twiml.join_conference(VOICE, None, "call-8", "/music", "/cb"))
    assert [child.tag for child in root] == ["Dial"]


def test_hang_up_redirect_and_hold_music() -> None:
    assert [child.tag for child in parse(twiml.hang_up())] == ["Hangup"]
    (redirect,) = list(parse(twiml.redirect("/voice/step/queue?n=3")))
    assert redirect.tag == "Redirect" and redirect.text == "/voice/step/queue?n=3" and redirect.get("method") == "POST"
    play, again = list(parse(twiml.music_then_redirect("/music.mp3", "/connect/7?retry=4")))
    assert play.tag == "Play" and play.text == "/music.mp3"
    assert again.tag == "Redirect" and again.text == "/connect/7?retry=4" and again.get("method") == "POST"


def test_speak_and_hang_up() -> None:
    say, hangup = list(parse(twiml.speak_and_hang_up(VOICE, "The helpline console cannot place calls. Goodbye.")))
    assert say.tag == "Say" and say.text == "The helpline console cannot place calls. Goodbye."
    assert hangup.tag == "Hangup"


def test_menu_gathers_one_key_and_falls_through_to_the_same_url() -> None:
    gather, redirect = list(parse(twiml.menu(VOICE, "Press 1.", "/voice/step/need/keys")))
    assert gather.tag == "Gather" and gather.get("numDigits") == "1" and gather.get("action") == "/voice/step/need/keys"
    assert [child.tag for child in gather] == ["Say"] and gather[0].text == "Press 1."
    assert redirect.text == "/voice/step/need/keys"


def test_an_ivr_builder_writes_a_document_once_for_the_same_arguments() -> None:
    twiml.menu.cache_clear()
    first = twiml.menu(VOICE, "Press 1 for yourself.", "/voice/step/whom/keys?attempt=1&n=2", 5, 3, ("myself",))
    again = twiml.menu(VOICE, "Press 1 for yourself.", "/voice/step/whom/keys?attempt=1&n=2", 5, 3, ("myself",))
    other = twiml.menu(VOICE, "Press 1 for yourself.", "/voice/step/whom/keys?attempt=2&n=3", 5, 3, ("myself",))
    assert again is first and other != first
    assert twiml.menu.cache_info().hits == 1 and twiml.menu.cache_info().misses == 2
    gather = parse(other)[0]
    assert gather.get("action") == "/voice/step/whom/keys?attempt=2&n=3" and gather.get("hints") == "myself"
