"""Security keys as the second factor, in Debian's chromium with its virtual authenticator (the
DevTools protocol's WebAuthn domain) on http://localhost, a secure context (a relying party is named
by a host name, never an IP address, so not 127.0.0.1): a user adds a key on the
account page, logs in with it instead of a code, and a key that is not theirs, or an answer that
does not verify, is refused and counted like a wrong code."""

from __future__ import annotations

import base64
import threading
from typing import Any, Iterator

import pyotp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask
from sqlalchemy import select
from werkzeug.serving import make_server

from helpline import security
from helpline.db import db
from helpline.models import AuditEntry, SecurityKey, StaffSession, User, utcnow
from helpline.scheduler import shutdown

from ..processes import free_port
from ..test_auth import make_user

pytestmark = pytest.mark.browser
PASSWORD = "a long password"


@pytest.fixture(autouse=True)
def _cheap_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    from argon2 import PasswordHasher

    from helpline import users

    monkeypatch.setattr(users, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


class ClosedWhenDropped:
    """A response body that is closed when it is dropped, whether or not the server closed it.

    Werkzeug's development server closes a response after sending it, but not when the browser drops
    the connection first (its `finally` reads what is left of the request, and that read raises):
    a static file's handle (the favicon, fetched as the page moves on) was then left to the garbage
    collector, whose ResourceWarning failed whichever test happened to be running.
    """

    def __init__(self, body: Any):
        self.body = body
        self.closed = False

    def __iter__(self) -> Any:
        return iter(self.body)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if hasattr(self.body, "close"):
                self.body.close()

    def __del__(self) -> None:
        self.close()


def closing_bodies(app: Flask) -> Any:
    """`app` as a WSGI app whose every response body is a `ClosedWhenDropped`."""
    return lambda environ, start_response: ClosedWhenDropped(app(environ, start_response))


def test_a_response_dropped_without_being_closed_closes_its_file(app_factory: Any) -> None:
    import gc
    import warnings

    app = app_factory()
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/console/static/favicon.svg", "SERVER_NAME": "localhost",
               "SERVER_PORT": "80", "wsgi.url_scheme": "http", "wsgi.input": None, "wsgi.errors": None}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        body = closing_bodies(app)(environ, lambda status, headers, exc_info=None: None)
        assert b"svg" in next(iter(body))
        del body  # as the server does when the connection drops: never closed
        gc.collect()
    assert not [warning for warning in caught if issubclass(warning.category, ResourceWarning)]


@pytest.fixture
def service(app_factory: Any) -> Iterator[tuple[str, Flask]]:
    """The service over HTTP on this machine, reached as localhost, the second factor required."""
    port = free_port()
    app = app_factory(public_url=f"http://localhost:{port}", security={"require_mfa": True})
    server = make_server("127.0.0.1", port, closing_bodies(app), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://localhost:{port}", app
    server.shutdown()
    thread.join(timeout=10)
    shutdown(app)


def with_totp(app: Flask, username: str) -> str:
    """A user who has set up an authenticator app; returns its secret."""
    make_user(app, username)
    secret = pyotp.random_base32()
    with app.app_context():
        user = db.session.scalar(select(User).where(User.username == username))
        user.totp_secret_enc = app.extensions["helpline.vault"].encrypt(secret)
        user.totp_confirmed_at = utcnow()
        db.session.commit()
    return secret


def with_authenticator(context: Any, page: Any) -> tuple[Any, str]:
    """A virtual platform authenticator (CTAP2, resident keys, user verification) for the page."""
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    added = cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
        "protocol": "ctap2", "transport": "internal", "hasResidentKey": True, "hasUserVerification": True,
        "isUserVerified": True, "automaticPresenceSimulation": True}})
    return cdp, added["authenticatorId"]


def password_step(page: Any, base: str, username: str) -> None:
    # On to the account page afterwards, not the console, whose socket is not what is tested here.
    page.goto(base + "/login?next=/account")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(base + "/login/verify")


def audited(app: Flask, action: str) -> list[AuditEntry]:
    with app.app_context():
        entries = list(db.session.scalars(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.seq)))
        db.session.expunge_all()
        return entries


#: The log-in page's own steps, with a credential of the test's choosing or a signature spoilt.
ATTEMPT = """async ([credentialId, spoil]) => {
  const keys = window.helplineSecurityKeys;
  const { publicKey } = await keys.post("/login/verify/key/options");
  if (credentialId) publicKey.allowCredentials = [{ type: "public-key", id: credentialId }];
  const credential = await keys.getAssertion(publicKey);
  if (spoil) {
    const signature = credential.response.signature;
    credential.response.signature = signature.slice(0, 12) + (signature[12] === "A" ? "B" : "A") + signature.slice(13);
  }
  const answer = await fetch("/login/verify/key", { method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json",
               "X-CSRFToken": document.querySelector('meta[name="csrf-token"]').content },
    body: JSON.stringify({ credential }) });
  return [answer.status, await answer.json()];
}"""


def test_a_security_key_is_added_then_used_instead_of_a_code_and_a_wrong_one_is_refused(browser: Any, service: Any) -> None:
    base, app = service
    secret = with_totp(app, "jo")
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    cdp, authenticator = with_authenticator(context, page)

    # Log in with the password and a code, and add a key on the account page.
    password_step(page, base, "jo")
    page.fill("#code", pyotp.TOTP(secret).at(security.now()))
    page.click("button[type=submit]")
    page.wait_for_url(base + "/account")
    page.fill("#key-name", "Blue key")
    page.click("#add-security-key button[type=submit]")
    page.wait_for_selector("text=Blue key, added")
    assert len(cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})["credentials"]) == 1
    with app.app_context():
        [key] = db.session.scalars(select(SecurityKey)).all()
        assert key.name == "Blue key" and key.user_id == db.session.scalar(select(User.id).where(User.username == "jo"))
        first_count = key.sign_count
    assert audited(app, "auth.mfa_enrolled")[-1].detail == {"factor": "security_key", "key_id": key.id}
    page.click("text=Log out")
    page.wait_for_url(base + "/login")

    # Next log-in: the password, then the key instead of a code.
    password_step(page, base, "jo")
    page.click("#use-security-key")
    page.wait_for_url(base + "/account")
    with app.app_context():
        methods = [row for row in db.session.scalars(select(StaffSession.method).order_by(StaffSession.id))]
        assert methods == ["password+totp", "password+security_key"]
        assert db.session.get(SecurityKey, key.id).sign_count > first_count
    assert audited(app, "auth.login")[-1].detail["method"] == "password+security_key"
    assert audited(app, "auth.security_key_used")
    page.click("text=Log out")
    page.wait_for_url(base + "/login")

    # A signature that does not verify is refused, and counted like a wrong code.
    password_step(page, base, "jo")
    status, answer = page.evaluate(ATTEMPT, [None, True])
    assert status == 401 and answer["error"] == "key_refused"
    # A key the authenticator holds for this site but that is not on jo's account is refused too.
    private = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    stranger = base64.urlsafe_b64encode(b"a key nobody registered").decode().rstrip("=")
    cdp.send("WebAuthn.addCredential", {"authenticatorId": authenticator, "credential": {
        "credentialId": base64.b64encode(b"a key nobody registered").decode(), "isResidentCredential": False,
        "rpId": "localhost", "privateKey": base64.b64encode(private).decode(), "signCount": 1}})
    status, answer = page.evaluate(ATTEMPT, [stranger, False])
    assert status == 401 and answer["error"] == "key_refused"
    assert page.evaluate("fetch('/api/me').then((r) => r.status)") == 401
    assert [entry.detail["cause"] for entry in audited(app, "auth.mfa_failed")] == ["security_key", "security_key_unknown"]
    with app.app_context():
        assert db.session.scalar(select(User.failed_logins).where(User.username == "jo")) == 2
        assert len(db.session.scalars(select(StaffSession)).all()) == 2
    # The genuine key still works afterwards (each attempt had a challenge of its own).
    page.goto(base + "/login/verify")
    page.click("#use-security-key")
    page.wait_for_url(base + "/account")
    context.close()
    assert not errors, errors


def test_a_key_needs_two_step_verification_first_and_is_removed_on_the_account_page(browser: Any, service: Any) -> None:
    base, app = service
    secret = with_totp(app, "jo")
    make_user(app, "sam")  # no authenticator app: not even to enrol one at log-in yet
    context = browser.new_context()
    page = context.new_page()
    with_authenticator(context, page)
    password_step(page, base, "jo")
    page.fill("#code", pyotp.TOTP(secret).at(security.now()))
    page.click("button[type=submit]")
    page.wait_for_url(base + "/account")
    page.fill("#key-name", "Old key")
    page.click("#add-security-key button[type=submit]")
    page.wait_for_selector("text=Old key, added")
    page.click("form.inline button")
    page.wait_for_selector("text=has been removed")
    with app.app_context():
        assert not db.session.scalars(select(SecurityKey)).all()
    assert audited(app, "auth.mfa_removed")[-1].detail["factor"] == "security_key"
    context.close()
