"""Failures are reported like Twilio's debugger (alert codes), and the call hears the application error."""

from __future__ import annotations

import socket
import time

from flask import Response
from twilio.twiml.voice_response import VoiceResponse

APPLICATION_ERROR = "We are sorry, an application error has occurred. Goodbye."


def assert_application_error(emu, sid):
    """The call says Twilio's message and hangs up."""
    state = emu.wait_until_ended(sid)
    assert state["end_reason"] == "application-error"
    assert APPLICATION_ERROR in [e.get("text") for e in state["events"] if e["kind"] == "say"]
    return state


def test_bad_signature_rejected_by_the_app_is_11200(emu, scenario):
    # The app checks signatures against another token, so it answers 403 as the helpline would.
    scenario.route("voice", "<Response><Say>never</Say></Response>", token="some-other-token")
    sid = emu.place_call(url=scenario.url("voice"))
    assert_application_error(emu, sid)
    assert scenario.hits("voice")[0].signature_ok is False
    alert = emu.wait_for_alert(call_sid=sid, code=11200)
    assert alert["message"] == "HTTP retrieval failure"
    assert alert["response_status"] == 403
    assert alert["url"] == scenario.url("voice")


def test_malformed_xml_is_12100(emu, scenario):
    scenario.route("voice", "<Response><Say>unclosed</Response>")
    sid = emu.place_call(url=scenario.url("voice"))
    assert_application_error(emu, sid)
    alert = emu.wait_for_alert(call_sid=sid, code=12100)
    assert alert["message"] == "Document parse failure" and alert["level"] == "error"


def test_wrong_root_element_is_12100(emu, scenario):
    scenario.route("voice", "<Reply><Say>hi</Say></Reply>")
    sid = emu.place_call(url=scenario.url("voice"))
    assert_application_error(emu, sid)
    emu.wait_for_alert(call_sid=sid, code=12100)


def test_unknown_verb_is_12200_and_stops_the_call(emu, scenario):
    scenario.route("voice", "<Response><Say>fine</Say><Sayy>typo</Sayy></Response>")
    sid = emu.place_call(url=scenario.url("voice"))
    assert_application_error(emu, sid)
    alert = emu.wait_for_alert(call_sid=sid, code=12200)
    assert "Sayy" in alert["detail"]


def test_unknown_attribute_only_warns(emu, scenario):
    scenario.route("voice", '<Response><Say colour="blue">still spoken</Say></Response>')
    sid = emu.place_call(url=scenario.url("voice"))
    emu.wait_for(sid, "say", text="still spoken")
    alert = emu.wait_for_alert(call_sid=sid, code=12200)
    assert alert["level"] == "warning" and "colour" in alert["detail"]
    assert emu.wait_until_ended(sid)["end_reason"] == "end-of-twiml"


def test_slow_webhook_is_11205(emu, scenario, emulator_process):
    def slow(hit):
        time.sleep(4.7)  # beyond the test emulator's 4 s webhook timeout (conftest.WEBHOOK_TIMEOUT)
        return "<Response><Say>too late</Say></Response>"

    scenario.route("voice", slow)
    sid = emu.place_call(url=scenario.url("voice"))
    state = assert_application_error(emu, sid)
    assert "too late" not in [e.get("text") for e in state["events"]]
    alert = emu.wait_for_alert(call_sid=sid, code=11205)
    assert alert["message"] == "HTTP connection failure"


def test_wrong_content_type_is_12300(emu, scenario):
    scenario.route("voice", lambda hit: Response('{"say": "hi"}', content_type="application/json"))
    sid = emu.place_call(url=scenario.url("voice"))
    assert_application_error(emu, sid)
    emu.wait_for_alert(call_sid=sid, code=12300)


def test_action_url_server_error_is_11200(emu, scenario):
    scenario.route("voice", '<Response><Gather numDigits="1" action="menu" timeout="30"/></Response>')
    scenario.route("menu", lambda hit: Response("boom", status=500))
    sid = emu.place_call(url=scenario.url("voice"), keys=["1"])
    assert_application_error(emu, sid)
    alert = emu.wait_for_alert(call_sid=sid, code=11200)
    assert alert["response_status"] == 500 and alert["url"] == scenario.url("menu")


def test_unreachable_app_is_a_connection_alert(emu):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sid = emu.place_call(url=f"http://127.0.0.1:{port}/voice")
    assert_application_error(emu, sid)
    alert = emu.wait_for_alert(call_sid=sid)
    assert alert["code"] in {11202, 11205}


def test_verb_not_allowed_in_wait_url_is_reported(emu, scenario):
    queue = scenario.prefix + "-q"
    scenario.route("voice", f'<Response><Enqueue waitUrl="wait">{queue}</Enqueue></Response>')
    scenario.route("wait", '<Response><Dial>+447700900123</Dial><Leave/></Response>')
    sid = emu.place_call(url=scenario.url("voice"))
    emu.wait_for(sid, "queue.left", result="leave")
    alert = emu.wait_for_alert(call_sid=sid, code=12200)
    assert "Dial" in alert["detail"]


def test_failing_status_callback_is_a_15003_warning(emu, scenario, twilio, account):
    number = "+447700900402"
    emu.register_phone(number, auto_answer=True)
    scenario.route("status", lambda hit: Response("no", status=500))
    call = twilio.calls.create(to=number, from_=account["number"], twiml="<Response/>",
                               status_callback=scenario.url("status"))
    alert = emu.wait_for_alert(call_sid=call.sid, code=15003)
    assert alert["level"] == "warning" and alert["response_status"] == 500
