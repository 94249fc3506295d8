"""Twilio's REST API through the official twilio Client pointed at the emulator."""

from __future__ import annotations

import re
import time
from email.utils import parsedate_to_datetime

import pytest
import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.rest import Client
from twilio.twiml.voice_response import VoiceResponse


def test_base_url_override_reaches_the_emulator(twilio, emulator_url):
    assert twilio.api.base_url == emulator_url
    # Every resource the helpline uses hangs off client.api, so one override covers them all.
    assert twilio.calls._version.domain is twilio.api
    assert twilio.messages._version.domain is twilio.api
    assert twilio.queues._version.domain is twilio.api
    assert twilio.conferences._version.domain is twilio.api
    assert isinstance(twilio.calls.list(limit=1), list)


def test_create_call_with_status_callbacks_in_order(emu, scenario, twilio, account):
    number = "+447700900401"
    emu.register_phone(number, auto_answer=True)
    call = twilio.calls.create(
        to=number, from_=account["number"], twiml="<Response><Say>Hello handler</Say></Response>",
        status_callback=scenario.url("status"), status_callback_event=["initiated", "ringing", "answered", "completed"])
    assert re.fullmatch(r"CA[0-9a-f]{32}", call.sid)
    assert call.direction == "outbound-api"
    emu.wait_for(call.sid, "say", text="Hello handler")
    hits = scenario.wait_for("status", count=4)
    assert [h.values["CallStatus"] for h in hits] == ["initiated", "ringing", "in-progress", "completed"]
    assert [h.values["SequenceNumber"] for h in hits] == ["0", "1", "2", "3"]
    for hit in hits:
        assert hit.signature_ok
        assert hit.values["CallbackSource"] == "call-progress-events"
        assert parsedate_to_datetime(hit.values["Timestamp"]).tzinfo is not None
        assert hit.values["Direction"] == "outbound-api" and hit.values["To"] == number
    assert "CallDuration" in hits[-1].values and "CallDuration" not in hits[0].values
    assert twilio.calls(call.sid).fetch().status == "completed"


def test_inbound_number_callback_gets_completed_only(emu, scenario, standin):
    scenario.route("voice", "<Response><Say>hi</Say></Response>")
    sid = emu.place_call(url=scenario.url("voice"))
    emu.wait_for(sid, "status_callback", status="completed")
    hits = [h for h in standin.hits_for("default/status") if h.values.get("CallSid") == sid]
    assert [h.values["CallStatus"] for h in hits] == ["completed"]
    assert hits[0].values["SequenceNumber"] == "0"


def test_a_call_placed_with_its_own_status_callback_reports_there(emu, scenario, standin):
    """A benchmark spreading calls over several serving processes names each call's process."""
    scenario.route("voice", "<Response><Say>hi</Say></Response>")
    sid = emu.place_call(url=scenario.url("voice"), status_callback=scenario.url("own-status"))
    [hit] = scenario.wait_for("own-status", count=1)
    assert hit.values["CallSid"] == sid and hit.values["CallStatus"] == "completed" and hit.signature_ok
    assert not [h for h in standin.hits_for("default/status") if h.values.get("CallSid") == sid]


def test_fetch_list_update_and_hang_up(emu, scenario, twilio, account):
    identity = scenario.prefix + "-dee"
    emu.register_client(identity)
    response = VoiceResponse()
    response.pause(length=60)
    scenario.route("hold", response)
    scenario.route("moved", "<Response><Say>moved by the API</Say><Pause length=\"60\"/></Response>")
    call = twilio.calls.create(to="client:" + identity, from_=account["number"], url=scenario.url("hold"))
    emu.client_wait_for(identity, "incoming", call_sid=call.sid)
    assert twilio.calls(call.sid).fetch().status == "ringing"
    emu.answer_client(identity)
    emu.wait_for(call.sid, "pause")
    fetched = twilio.calls(call.sid).fetch()
    assert (fetched.status, fetched.to, fetched._from) == ("in-progress", "client:" + identity, account["number"])
    assert call.sid in [c.sid for c in twilio.calls.list(status="in-progress")]

    twilio.calls(call.sid).update(url=scenario.url("moved"), method="POST")
    emu.wait_for(call.sid, "say", text="moved by the API")
    twilio.calls(call.sid).update(twiml="<Response><Say>inline now</Say><Pause length=\"60\"/></Response>")
    emu.wait_for(call.sid, "say", text="inline now")

    updated = twilio.calls(call.sid).update(status="completed")
    assert updated.sid == call.sid
    state = emu.wait_until_ended(call.sid)
    assert state["status"] == "completed" and state["end_reason"] == "api-completed"
    emu.client_wait_for(identity, "ended", call_sid=call.sid)
    with pytest.raises(TwilioRestException) as error:
        twilio.calls(call.sid).update(url=scenario.url("moved"))
    assert error.value.code == 21220


def test_cancel_a_ringing_call(emu, scenario, twilio, account):
    call = twilio.calls.create(to="+447700900499", from_=account["number"], url=scenario.url("never"), timeout=600)
    emu.wait_for(call.sid, "status", status="ringing")
    twilio.calls(call.sid).update(status="canceled")
    assert emu.wait_until_ended(call.sid)["status"] == "canceled"


def test_unanswered_outbound_call_is_no_answer(emu, scenario, twilio, account):
    call = twilio.calls.create(to="+447700900498", from_=account["number"], url=scenario.url("never"), timeout=5)
    assert emu.wait_until_ended(call.sid)["status"] == "no-answer"
    assert scenario.hits("never") == []


def test_a_call_to_a_client_nobody_has_registered_is_no_answer_at_once(emu, scenario, twilio, account):
    call = twilio.calls.create(to=f"client:{scenario.prefix}-away", from_=account["number"], url=scenario.url("never"),
                               timeout=600)
    started = time.monotonic()
    assert emu.wait_until_ended(call.sid, 10)["status"] == "no-answer"
    assert time.monotonic() - started < 5 and scenario.hits("never") == []


def test_errors_use_twilios_shape(twilio, emulator_url, account):
    with pytest.raises(TwilioRestException) as missing:
        twilio.calls("CA" + "0" * 32).fetch()
    assert (missing.value.status, missing.value.code) == (404, 20404)
    with pytest.raises(TwilioRestException) as invalid:
        twilio.calls.create(to="+447700900123", from_=account["number"])
    assert invalid.value.code == 21205
    intruder = Client(account["sid"], "wrong-token")
    intruder.api.base_url = emulator_url
    try:
        with pytest.raises(TwilioRestException) as denied:
            intruder.calls("CA" + "0" * 32).fetch()
    finally:
        intruder.http_client.session.close()
    assert (denied.value.status, denied.value.code) == (401, 20003)


def test_a_list_of_calls_with_a_status_twilio_does_not_know_is_its_400(twilio, emulator_url, account):
    listed = requests.get(f"{emulator_url}/2010-04-01/Accounts/{account['sid']}/Calls.json", params={"Status": "live"},
                          auth=(account["sid"], account["token"]), timeout=10)
    assert listed.status_code == 400
    body = listed.json()
    assert (body["status"], body["code"]) == (400, 20001) and "Status" in body["message"]
    assert body["more_info"] == "https://www.twilio.com/docs/errors/20001"
    # The twilio library reports it as a page it could not fetch, as it does Twilio's own.
    with pytest.raises(TwilioException, match="20001"):
        twilio.calls.list(status="live")
    for status in ("queued", "ringing", "in-progress", "completed", "no-answer"):
        assert isinstance(twilio.calls.list(status=status, limit=1), list)


def test_messages_go_to_the_outbox_with_status_callbacks(emu, scenario, twilio, account):
    after = max([m["seq"] for m in emu.messages()] or [0])
    message = twilio.messages.create(to="+447700900555", from_=account["number"],
                                     body="We will call you back tomorrow", status_callback=scenario.url("sms-status"))
    assert re.fullmatch(r"SM[0-9a-f]{32}", message.sid)
    assert message.status == "queued"
    outboxed = emu.wait_for_message(after=after, to="+447700900555")
    assert outboxed["body"] == "We will call you back tomorrow" and outboxed["sid"] == message.sid
    hits = scenario.wait_for("sms-status", count=2)
    assert [h.values["MessageStatus"] for h in hits] == ["sent", "delivered"]
    assert all(h.signature_ok and h.values["MessageSid"] == message.sid for h in hits)
    assert twilio.messages(message.sid).fetch().status == "delivered"


def test_paging_follows_next_page_uri(emu, scenario, twilio):
    scenario.route("voice", "<Response/>")
    sids = [emu.place_call(url=scenario.url("voice")) for _ in range(3)]
    for sid in sids:
        emu.wait_until_ended(sid)
    listed = [c.sid for c in twilio.calls.list(page_size=1, limit=50)]
    assert set(sids) <= set(listed)
