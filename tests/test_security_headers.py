"""Headers on every response, idle sessions, cookies, and no personal data in the logs."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import select

from helpline import security
from helpline.db import db
from helpline.models import AuditEntry

from .conftest import ACCOUNT_SID, AUTH_TOKEN, Twilio
from .test_audit import login
from .test_auth import make_user
from .walker import CallWalker


def csp(response) -> dict[str, list[str]]:  # type: ignore[no-untyped-def]
    """The Content-Security-Policy as {directive: [sources]}."""
    policy = response.headers["Content-Security-Policy"]
    return {name: values for name, *values in (part.split() for part in policy.split(";"))}


@pytest.mark.parametrize("path", ["/login", "/api/queue", "/api/nowhere", "/account"])
def test_every_response_carries_the_security_headers(client, path):
    response = client.get(path)
    policy = csp(response)
    assert policy["default-src"] == ["'self'"]
    assert policy["script-src"] == ["'self'"] and policy["style-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"] and policy["base-uri"] == ["'none'"]
    assert policy["form-action"] == ["'self'"] and policy["img-src"] == ["'self'", "data:"]
    # The socket's origin is the public URL's (https here, so wss only), whatever Host the request named.
    assert {"'self'", "wss://helpline.test"} <= set(policy["connect-src"])
    assert "ws://helpline.test" not in policy["connect-src"] and "wss://localhost" not in policy["connect-src"]
    assert not any(source in ("*", "ws:", "wss:", "http:", "https:") for source in policy["connect-src"])
    headers = response.headers
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert "microphone=(self)" in headers["Permissions-Policy"] and "camera=()" in headers["Permissions-Policy"]
    assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
    assert headers["Strict-Transport-Security"].startswith("max-age=")  # the test public URL is https
    assert headers["Cache-Control"] == "no-store"
    assert len(headers["X-Request-ID"]) == 32


@pytest.mark.parametrize(("proxy_hops", "offered", "kept"), [
    (1, "nginx-0123456789abcdef", True),   # the proxy's id, so its log and ours name one request
    (0, "nginx-0123456789abcdef", False),  # no proxy configured: the header is the client's word
    (1, "bad id; with spaces", False),     # not an id: ours instead
])
def test_a_request_id_is_taken_from_the_proxy_only(app_factory, proxy_hops, offered, kept):
    app = app_factory(security={"proxy_hops": proxy_hops})
    answered = app.test_client().get("/login", headers={"X-Request-ID": offered}).headers["X-Request-ID"]
    assert (answered == offered) is kept
    if not kept:
        assert len(answered) == 32


def test_webhook_replies_carry_them_and_set_no_cookie(app, twilio):
    walker = CallWalker(twilio)
    response = twilio.post("/voice/incoming", walker.params())
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store" and "Content-Security-Policy" in response.headers
    assert "Set-Cookie" not in response.headers


def test_static_files_may_be_cached(client):
    response = client.get("/static/hold-music.wav")
    assert response.status_code == 200
    assert response.headers.get("Cache-Control") != "no-store"
    response.close()


def test_no_hsts_over_plain_http(app_factory):
    client = app_factory(public_url="http://127.0.0.1:5000").test_client()
    assert "Strict-Transport-Security" not in client.get("/login").headers


def test_the_local_emulator_may_be_reached_in_demo_mode(app_factory):
    app = app_factory(twilio={"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "api_base_url": "http://127.0.0.1:5050"})
    policy = csp(app.test_client().get("/login"))
    assert "http://127.0.0.1:5050" in policy["connect-src"] and "ws://127.0.0.1:5050" in policy["connect-src"]
    assert "https://*.twilio.com" not in policy["connect-src"]


def test_twilio_is_reached_only_with_real_twilio(app_factory):
    policy = csp(app_factory().test_client().get("/login"))
    assert "wss://*.twilio.com" in policy["connect-src"] and "https://sdk.twilio.com" in policy["media-src"]
    policy = csp(app_factory(twilio={"account_sid": None, "auth_token": None}).test_client().get("/login"))
    assert not any("twilio" in source for source in policy["connect-src"])


def test_a_hostile_host_header_cannot_inject_into_the_policy(client):
    response = client.get("/login", headers={"Host": "evil.example; script-src *"})
    assert "script-src *" not in response.headers["Content-Security-Policy"]
    assert csp(response)["script-src"] == ["'self'"]


def test_the_session_cookie_is_secure_httponly_and_lax(app, client):
    make_user(app, "jo")
    response = login(client, "jo")
    cookies = {value.split("=", 1)[0]: value for value in response.headers.getlist("Set-Cookie")}
    cookie = cookies["session"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" in cookie
    assert "Expires=" in cookie  # permanent, with the idle lifetime
    # The trusted-device cookie goes only to the log-in page, never to script, never cross-site.
    device = cookies[security.DEVICE_COOKIE]
    assert "HttpOnly" in device and "SameSite=Strict" in device and "Secure" in device and "Path=/login" in device


def test_a_session_idle_too_long_is_over(app, client, monkeypatch):
    make_user(app, "root", role="admin")
    clock = [security.now()]
    monkeypatch.setattr(security, "now", lambda: clock[0])
    login(client, "root")
    assert client.get("/api/audit").status_code == 200
    clock[0] += 20 * 60
    assert client.get("/api/audit").status_code == 200  # activity resets the idle timer
    clock[0] += 20 * 60
    assert client.get("/api/audit").status_code == 200
    clock[0] += 31 * 60
    response = client.get("/api/audit")
    assert response.status_code == 401 and response.get_json()["error"] == "login_required"
    assert client.get("/api/audit").status_code == 401
    with app.app_context():
        last = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "auth.logout")).one()
        assert last.detail["cause"] == "idle"


def test_the_idle_limit_comes_from_the_configuration(app_factory, monkeypatch):
    app = app_factory(security={"session_idle_minutes": 5})
    assert app.permanent_session_lifetime.total_seconds() == 300
    client = app.test_client()
    make_user(app, "root", role="admin")
    clock = [security.now()]
    monkeypatch.setattr(security, "now", lambda: clock[0])
    login(client, "root")
    clock[0] += 6 * 60
    assert client.get("/api/audit").status_code == 401


# -- no personal data in logs ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["+447911123456", "07911 123456", "07911-123-456", "+44 (0)7911 123456", "020 7946 0958", "%2B447911123456",
     "tel:+447911123456", "(020) 7946-0958"],
)
def test_phone_numbers_are_masked(text):
    masked = security.mask_personal(f"caller {text} rang")
    assert not any(run in masked for run in ("7911", "7946", "1234")), masked
    assert masked.startswith("caller ") and masked.endswith(" rang")


@pytest.mark.parametrize(
    "text",
    ["CA0123456789abcdef0123456789abcdef", "2026-11-24 02:28:59", "127.0.0.1", "call 42 at position 3", "took 1500 ms"],
)
def test_other_things_stay_legible(text):
    assert security.mask_personal(text) == text


def test_emails_are_masked():
    assert "example.org" not in security.mask_personal("from jo.bloggs@example.org today")


def test_log_records_are_masked_whoever_logs_them(app, caplog):
    caplog.set_level(logging.DEBUG)
    logging.getLogger("somewhere.else").warning("caller %s, email %s", "+447911123456", "jo@example.org")
    try:
        raise ValueError("bad number 07911 123456")
    except ValueError:
        logging.getLogger("helpline.test").exception("failed for +447911123456")
    assert "7911" not in caplog.text and "example.org" not in caplog.text
    assert "•••••••••456" in caplog.text


def test_a_whole_call_leaves_no_caller_number_in_the_logs(app, caplog):
    caplog.set_level(logging.DEBUG)
    twilio = Twilio(app.test_client())
    walker = CallWalker(twilio, caller="+447911123456")
    walker.start()
    walker.press("1")
    walker.press("1")
    walker.press("1")
    walker.request(walker.queue["wait"], QueueTime="30")
    twilio.post("/voice/status", {"CallSid": walker.sid, "CallStatus": "completed", "From": "+447911123456", "SequenceNumber": "9"})
    # A fault on our side is logged with the request, and must not carry the number either.
    interpreter = app.extensions["helpline.ivr"]

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("could not parse From=+447911123456")

    original = interpreter.start
    interpreter.start = broken
    try:
        CallWalker(twilio, caller="+447911123456").start()
    finally:
        interpreter.start = original
    assert caplog.records, "the call should have logged something"
    for needle in ("7911123456", "7911 123456", "447911"):
        assert needle not in caplog.text
