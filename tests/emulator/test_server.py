"""The dev phone page, the health endpoint and many calls at once."""

from __future__ import annotations

import time

import requests


def test_dev_phone_page_is_served_locally(emulator_url, account):
    with requests.Session() as http:
        page = http.get(emulator_url + "/", timeout=5)
        assert page.status_code == 200 and "text/html" in page.headers["Content-Type"]
        html = page.text
        for element in ('id="caller-keypad"', 'id="caller-withheld"', 'id="device-name"', 'id="answer"',
                        'id="outbox"', 'id="alerts"', account["number"]):
            assert element in html
        assert "://" not in html.split("<body", 1)[1].split("</header>", 1)[1]  # nothing from a CDN
        script = http.get(emulator_url + "/devphone-static/devphone.js", timeout=5)
        assert script.status_code == 200 and "speechSynthesis" in script.text
        assert http.get(emulator_url + "/devphone-static/devphone.css", timeout=5).status_code == 200


def test_health_and_control_errors(emu):
    assert emu.health()["status"] == "ok"
    with requests.Session() as http:
        missing = http.get(emu.base_url + "/emulator/calls/CA123", timeout=5)
        assert missing.status_code == 404 and missing.json()["error"] == "unknown_call"
        bad = http.post(emu.base_url + "/emulator/calls", json={}, timeout=5)
        assert bad.status_code == 400 and bad.json()["error"] == "missing_from"


def test_two_hundred_concurrent_calls(emu, scenario):
    scenario.route("voice", '<Response><Say>Thank you for calling</Say><Pause length="150"/>'
                            '<Say>Goodbye</Say></Response>')
    sids = [emu.place_call(from_=f"+4477009{n:05d}", url=scenario.url("voice")) for n in range(200)]
    deadline = time.monotonic() + 3
    peak = 0
    while time.monotonic() < deadline:
        live = {c["sid"] for c in emu.calls(live=True)}
        peak = max(peak, len(live & set(sids)))
        if peak == 200:
            break
        time.sleep(0.05)
    assert peak == 200
    for sid in sids:
        state = emu.wait_until_ended(sid, timeout=30)
        assert state["status"] == "completed" and state["end_reason"] == "end-of-twiml"
    assert emu.alerts(call_sid=sids[0]) == []
    assert len(scenario.hits("voice")) == 200 and all(h.signature_ok for h in scenario.hits("voice"))
