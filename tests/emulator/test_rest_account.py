"""The account's resources (Account, Applications, IncomingPhoneNumbers) through the official twilio Client.

These tests repoint the emulator's number, so they run against an emulator process of their own:
the session's shared emulator keeps its Voice URL for the other tests.
"""

from __future__ import annotations

import re

import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client
from twilio.twiml.voice_response import VoiceResponse

from helpline.emulator.client import EmulatorClient

from conftest import ACCOUNT_SID, AUTH_TOKEN, PHONE_NUMBER, start_emulator, stop_emulator


@pytest.fixture(scope="module")
def own_emulator(standin):
    """An emulator process only this module changes."""
    running, reader = start_emulator(standin)
    yield running
    stop_emulator(running, reader)
    assert "Traceback" not in "".join(running.stderr_lines), "".join(running.stderr_lines)


@pytest.fixture()
def api(own_emulator):
    """The twilio Client pointed at this module's emulator."""
    client = Client(ACCOUNT_SID, AUTH_TOKEN)
    client.api.base_url = own_emulator.url
    yield client
    client.http_client.session.close()


@pytest.fixture()
def control(own_emulator):
    """The emulator's control API, to place calls to the number."""
    with EmulatorClient(own_emulator.url) as client:
        yield client


def test_the_account_is_fetched_with_good_credentials_and_refused_with_bad(api, own_emulator):
    account = api.api.v2010.accounts(ACCOUNT_SID).fetch()
    assert (account.sid, account.status, account.type) == (ACCOUNT_SID, "active", "Full")
    wrong = Client(ACCOUNT_SID, "not-the-token")
    wrong.api.base_url = own_emulator.url
    with pytest.raises(TwilioRestException) as refused:
        wrong.api.v2010.accounts(ACCOUNT_SID).fetch()
    assert (refused.value.status, refused.value.code) == (401, 20003)
    with pytest.raises(TwilioRestException) as elsewhere:
        api.api.v2010.accounts("AC" + "2" * 32).fetch()
    assert (elsewhere.value.status, elsewhere.value.code) == (404, 20404)


def test_applications_are_created_listed_by_friendly_name_updated_and_deleted(api):
    app = api.applications.create(friendly_name="Softphones A", voice_url="https://example.org/voice/client",
                                  voice_method="POST")
    assert re.fullmatch(r"AP[0-9a-f]{32}", app.sid)
    assert (app.friendly_name, app.voice_url, app.voice_method, app.account_sid) == (
        "Softphones A", "https://example.org/voice/client", "POST", ACCOUNT_SID)
    other = api.applications.create(friendly_name="Something else")
    assert [a.sid for a in api.applications.list(friendly_name="Softphones A")] == [app.sid]
    assert {app.sid, other.sid} <= {a.sid for a in api.applications.list()}

    updated = api.applications(app.sid).update(voice_url="https://example.org/voice/other", voice_method="GET")
    assert (updated.voice_url, updated.voice_method) == ("https://example.org/voice/other", "GET")
    assert api.applications(app.sid).fetch().voice_url == "https://example.org/voice/other"

    assert api.applications(other.sid).delete() is True
    with pytest.raises(TwilioRestException) as gone:
        api.applications(other.sid).fetch()
    assert (gone.value.status, gone.value.code) == (404, 20404)
    assert "was not found" in gone.value.msg
    api.applications(app.sid).delete()


def test_applications_page_as_twilio_does(api):
    made = [api.applications.create(friendly_name="Paged").sid for _ in range(5)]
    first = api.applications.page(friendly_name="Paged", page_size=2)
    assert [a.sid for a in first] == made[:2]
    # The library follows next_page_uri by itself; the filter has to survive it.
    assert [a.sid for a in api.applications.list(friendly_name="Paged", page_size=2)] == made
    for sid in made:
        api.applications(sid).delete()


def test_bad_application_fields_are_refused_as_twilio_refuses_them(api):
    with pytest.raises(TwilioRestException) as bad_url:
        api.applications.create(friendly_name="x", voice_url="not a url")
    assert (bad_url.value.status, bad_url.value.code) == (400, 21502)
    with pytest.raises(TwilioRestException) as bad_method:
        api.applications.create(friendly_name="x", voice_method="PUT")
    assert bad_method.value.status == 400
    assert api.applications.list(friendly_name="x") == []


def test_the_emulators_number_is_listed_by_phone_number(api):
    [number] = api.incoming_phone_numbers.list(phone_number=PHONE_NUMBER)
    assert re.fullmatch(r"PN[0-9a-f]{32}", number.sid)
    assert (number.phone_number, number.account_sid) == (PHONE_NUMBER, ACCOUNT_SID)
    assert number.capabilities["voice"] is True
    # Twilio's filter also takes part of a number, and * for any digit.
    assert [n.sid for n in api.incoming_phone_numbers.list(phone_number=PHONE_NUMBER[-4:])] == [number.sid]
    assert [n.sid for n in api.incoming_phone_numbers.list(phone_number=PHONE_NUMBER[:-1] + "*")] == [number.sid]
    assert api.incoming_phone_numbers.list(phone_number="+447700900999") == []
    assert api.incoming_phone_numbers(number.sid).fetch().phone_number == PHONE_NUMBER
    with pytest.raises(TwilioRestException) as missing:
        api.incoming_phone_numbers("PN" + "0" * 32).fetch()
    assert (missing.value.status, missing.value.code) == (404, 20404)


def test_updating_the_number_changes_where_its_calls_go(api, control, scenario, standin):
    [number] = api.incoming_phone_numbers.list(phone_number=PHONE_NUMBER)
    answer = VoiceResponse()
    answer.say("moved by the REST API")
    scenario.route("voice", answer)
    updated = api.incoming_phone_numbers(number.sid).update(
        voice_url=scenario.url("voice"), voice_method="POST", status_callback=scenario.url("status"),
        status_callback_method="POST")
    assert (updated.voice_url, updated.status_callback) == (scenario.url("voice"), scenario.url("status"))
    assert control.config()["voice_url"] == scenario.url("voice")

    sid = control.place_call()
    control.wait_for(sid, "say", text="moved by the REST API")
    [hit] = scenario.wait_for("status")
    assert hit.values["CallSid"] == sid and hit.values["CallStatus"] == "completed" and hit.signature_ok
    assert [h.values["CallSid"] for h in scenario.hits("voice")] == [sid]


def test_a_number_naming_a_twiml_app_takes_the_apps_urls_and_follows_its_changes(api, control, scenario):
    [number] = api.incoming_phone_numbers.list(phone_number=PHONE_NUMBER)
    scenario.route("app-voice", "<Response><Say>the app answers</Say></Response>")
    scenario.route("app-voice-2", "<Response><Say>the app moved</Say></Response>")
    scenario.route("own-voice", "<Response><Say>the number answers</Say></Response>")
    app = api.applications.create(friendly_name="Number app", voice_url=scenario.url("app-voice"))
    api.incoming_phone_numbers(number.sid).update(voice_url=scenario.url("own-voice"), voice_application_sid=app.sid)
    control.wait_for(control.place_call(), "say", text="the app answers")

    api.applications(app.sid).update(voice_url=scenario.url("app-voice-2"))
    control.wait_for(control.place_call(), "say", text="the app moved")

    with pytest.raises(TwilioRestException) as bad:
        api.incoming_phone_numbers(number.sid).update(voice_application_sid="AP" + "9" * 32)
    assert (bad.value.status, bad.value.code) == (400, 22108)

    api.applications(app.sid).delete()  # the number falls back to its own Voice URL, as on Twilio
    assert api.incoming_phone_numbers(number.sid).fetch().voice_application_sid is None
    control.wait_for(control.place_call(), "say", text="the number answers")
