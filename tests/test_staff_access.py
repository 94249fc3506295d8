"""Staff access fit for mental-health records: sessions that end on the server, a fresh CSRF token at
log-in, passwords that resist guessing, the second factor, and throttling that spares an office."""

from __future__ import annotations

import datetime as dt
import re

import pyotp
import pytest
from sqlalchemy import select

from helpline import realtime, security
from helpline.config import ConfigError, load_settings
from helpline.db import db
from helpline.models import AuditEntry, StaffSession, User, utcnow
from helpline.realtime import NAMESPACE, socketio
from helpline.users import UserError, create_user

from . import conftest
from .booking_support import log_in
from .test_audit import login
from .test_auth import csrf_from, make_user


def audited(action: str) -> list[AuditEntry]:
    """The audit entries of one action, oldest first."""
    db.session.expire_all()
    return list(db.session.scalars(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.seq)))


def copy_of(client, app):  # type: ignore[no-untyped-def]
    """Another browser holding a copy of `client`'s cookies, as someone who copied them would."""
    other = app.test_client()
    for cookie in client._cookies.values():  # noqa: SLF001 - the test client has no public cookie list
        other.set_cookie(cookie.key, cookie.value, domain=cookie.domain, path=cookie.path)
    return other


# -- sessions that end -------------------------------------------------------------------------------

def test_a_cookie_copied_before_log_out_is_useless_after_it(app):
    console = log_in(app, "admin")
    thief = copy_of(console.client, app)
    assert thief.get("/api/me").status_code == 200
    console.client.post("/logout", data={"csrf_token": console.token})
    assert thief.get("/api/me").status_code == 401
    assert thief.get("/api/audit").status_code == 401
    with app.app_context():
        [record] = db.session.scalars(select(StaffSession)).all()
        assert record.revoked_reason == "logout"
        assert audited("auth.logout")[-1].detail["cause"] == "user"


def test_the_session_cookie_holds_a_token_whose_record_stores_only_a_hash(app):
    console = log_in(app, "handler")
    with app.app_context():
        [record] = db.session.scalars(select(StaffSession)).all()
        assert len(record.token_hash) == 64 and record.method == "password"
    with console.client.session_transaction() as data:
        token = data["_sid"]
    assert token not in record.token_hash


def test_the_csrf_token_of_the_anonymous_log_in_page_is_refused_after_log_in(app, client):
    make_user(app, "jo")
    anonymous_token = csrf_from(client.get("/login").get_data(as_text=True))
    assert client.post("/login", data={"username": "jo", "password": "a long password",
                                       "csrf_token": anonymous_token}).status_code == 302
    stale = client.post("/api/me/status", json={"status": "available"}, headers={"X-CSRFToken": anonymous_token})
    assert stale.status_code == 400 and stale.get_json()["error"] == "csrf_failed"
    fresh = re.search(r'<meta name="csrf-token" content="([^"]+)"', client.get("/account").get_data(as_text=True)).group(1)
    assert fresh != anonymous_token
    assert client.post("/api/me/status", json={"status": "available"}, headers={"X-CSRFToken": fresh}).status_code == 200


def test_a_write_without_a_log_in_is_told_to_log_in_not_that_csrf_failed(client):
    response = client.post("/api/me/status", json={"status": "available"})
    assert response.status_code == 401 and response.get_json()["error"] == "login_required"
    assert client.delete("/api/bookings/1").status_code == 401


def test_a_password_change_ends_every_other_session_and_rotates_this_one(app):
    make_user(app, "jo")
    first, second = app.test_client(), app.test_client()
    login(first, "jo")
    login(second, "jo")
    token = csrf_from(first.get("/account").get_data(as_text=True))
    with first.session_transaction() as data:
        before = data["_sid"]
    changed = first.post("/account/password", data={"csrf_token": token, "current_password": "a long password",
                                                    "new_password": "violet kettle under nine maps",
                                                    "confirm_password": "violet kettle under nine maps"})
    assert changed.status_code == 200 and "has been changed" in changed.get_data(as_text=True)
    assert second.get("/api/me").status_code == 401
    assert first.get("/api/me").status_code == 200
    with first.session_transaction() as data:
        assert data["_sid"] != before
    with app.app_context():
        assert audited("auth.password_changed")
        assert [entry.detail["cause"] for entry in audited("auth.session_revoked")] == ["password_changed", "password_changed"]
    assert login(app.test_client(), "jo", "violet kettle under nine maps").status_code == 302
    assert login(app.test_client(), "jo", "a long password").status_code == 401


@pytest.mark.parametrize(("current", "new", "again", "says"), [
    ("wrong password", "violet kettle under nine maps", "violet kettle under nine maps", "current password is not right"),
    ("a long password", "violet kettle under nine maps", "violet kettle under nine map", "differ"),
    ("a long password", "password123", "password123", "most common"),
    ("a long password", "jo-jo-jo-2025", "jo-jo-jo-2025", "username"),
    ("a long password", "short", "short", "at least 10"),
])
def test_a_refused_password_change_says_why_and_changes_nothing(app, client, current, new, again, says):
    make_user(app, "jo")
    login(client, "jo")
    token = csrf_from(client.get("/account").get_data(as_text=True))
    with app.app_context():
        before = db.session.scalar(select(User.password_hash).where(User.username == "jo"))
    response = client.post("/account/password", data={"csrf_token": token, "current_password": current,
                                                      "new_password": new, "confirm_password": again})
    assert response.status_code == 400 and says in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(select(User.password_hash).where(User.username == "jo")) == before
        assert not audited("auth.password_changed")
    assert client.get("/api/me").status_code == 200


def test_an_admin_signs_a_user_out_everywhere_and_their_socket_closes(app):
    handler, admin = log_in(app, "handler"), log_in(app, "admin")
    socket = socketio.test_client(app, namespace=NAMESPACE, flask_test_client=handler.client)
    assert socket.is_connected(NAMESPACE)
    ended = admin.post(f"/api/users/{handler.user_id}/sessions/revoke", {})
    assert ended.status_code == 200 and ended.get_json() == {"user_id": handler.user_id, "ended": 1}
    assert handler.get("/api/me").status_code == 401
    assert realtime.close_ended_sessions(app)
    assert not socket.is_connected(NAMESPACE)
    assert "session_expired" in [event["name"] for event in socket.queue if event["namespace"] == NAMESPACE]
    with app.app_context():
        [entry] = audited("auth.session_revoked")
        assert (entry.actor_id, entry.object_id, entry.detail["cause"]) == (admin.user_id, str(handler.user_id), "signed_out_everywhere")
    assert admin.post("/api/users/999999/sessions/revoke", {}).status_code == 404
    assert handler.post(f"/api/users/{admin.user_id}/sessions/revoke", {}).status_code in (401, 403)


def test_a_revoked_session_cannot_open_a_socket_and_a_heartbeat_ends_one_that_was_open(app):
    handler = log_in(app, "handler")
    socket = socketio.test_client(app, namespace=NAMESPACE, flask_test_client=handler.client)
    with app.app_context():
        record = db.session.scalars(select(StaffSession)).one()
        record.revoked_at, record.revoked_reason = utcnow(), "signed_out_everywhere"
        db.session.commit()
    assert socket.emit("heartbeat", {}, namespace=NAMESPACE, callback=True) == {"ok": False}
    assert not socket.is_connected(NAMESPACE)
    assert not socketio.test_client(app, namespace=NAMESPACE, flask_test_client=handler.client).is_connected(NAMESPACE)


def test_a_session_ends_at_the_absolute_limit_however_busy(app_factory, monkeypatch):
    app = app_factory(security={"session_absolute_hours": 2})
    clock = [security.now()]
    monkeypatch.setattr(security, "now", lambda: clock[0])
    console = log_in(app, "admin")
    for _ in range(5):  # in use every 20 minutes: never idle
        clock[0] += 20 * 60
        assert console.get("/api/audit").status_code == 200
    clock[0] += 21 * 60
    assert console.get("/api/audit").status_code == 401
    with app.app_context():
        assert audited("auth.logout")[-1].detail["cause"] == "expired"


def test_the_account_page_ends_the_users_other_sessions(app):
    make_user(app, "jo")
    here, elsewhere = app.test_client(), app.test_client()
    login(here, "jo")
    login(elsewhere, "jo")
    page = here.get("/account").get_data(as_text=True)
    assert "2 open sessions" in page
    response = here.post("/account/sessions/end-others", data={"csrf_token": csrf_from(page)})
    assert "1 other session ended" in response.get_data(as_text=True)
    assert elsewhere.get("/account").status_code == 302 and here.get("/api/me").status_code == 200


# -- passwords ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("password", ["password123", "qwertyuiop", "1234567890", "Password1234", "jo-smith-1990",
                                      "helpline2024!", "iloveyou12345"])
def test_common_guessable_and_personal_passwords_are_refused(app, password):
    with app.app_context():
        with pytest.raises(UserError) as refused:
            create_user(db.session, "jo-smith", "handler", password, "Jo Smith")
        db.session.rollback()
        assert str(refused.value).startswith("password: ")
        assert db.session.scalar(select(User).where(User.username == "jo-smith")) is None


def test_a_long_unrelated_passphrase_is_accepted(app):
    with app.app_context():
        create_user(db.session, "jo-smith", "handler", "violet kettle under nine maps", "Jo Smith")


def test_the_command_line_refuses_a_common_password_and_creates_nobody(tmp_path):
    from .processes import run_cli

    url = f"sqlite:///{tmp_path / 'helpline.db'}"
    env = {"HELPLINE_DATABASE_URL": url, "HELPLINE_INSTANCE_PATH": str(tmp_path / "instance")}
    assert run_cli(["db", "upgrade"], env).returncode == 0
    done = run_cli(["create-user", "jo", "--role", "handler", "--password-stdin"], env, stdin="password123\n")
    assert done.returncode != 0 and "most common" in done.stderr + done.stdout
    again = run_cli(["create-user", "jo", "--role", "handler", "--password-stdin"], env, stdin="violet kettle under nine maps\n")
    assert again.returncode == 0, again.stderr


# -- the second factor -------------------------------------------------------------------------------

@pytest.fixture
def mfa_app(app_factory):  # type: ignore[no-untyped-def]
    """The service as deployed: a second factor for every staff log-in."""
    return app_factory(security={"require_mfa": True})


@pytest.fixture
def mfa_client(mfa_app):  # type: ignore[no-untyped-def]
    """A browser on that service."""
    return mfa_app.test_client()


def secret_of(page: str) -> str:
    """The TOTP key the enrolment page shows."""
    return re.search(r'<code id="totp-secret">([^<]+)</code>', page).group(1).replace(" ", "")


def code_at(secret: str, offset_steps: int = 0) -> str:
    """The authenticator app's code now (or a step away)."""
    totp = pyotp.TOTP(secret)
    return totp.at(security.now() + offset_steps * 30)


def enrol(app, client, username: str = "jo") -> tuple[str, list[str]]:  # type: ignore[no-untyped-def]
    """Log in for the first time and enrol; returns the secret and the recovery codes shown."""
    response = login(client, username)
    assert response.status_code == 302 and response.headers["Location"].endswith("/login/enrol")
    page = client.get("/login/enrol").get_data(as_text=True)
    assert 'src="data:image/svg+xml' in page  # the QR code, served inline
    secret = secret_of(page)
    done = client.post("/login/enrol", data={"csrf_token": csrf_from(page), "code": code_at(secret)})
    assert done.status_code == 200, done.get_data(as_text=True)
    codes = re.findall(r"<li><code>([a-z2-7]{5}-[a-z2-7]{5})</code></li>", done.get_data(as_text=True))
    assert len(codes) == 10
    return secret, codes


def test_a_password_alone_does_not_log_in_when_the_second_factor_is_required(mfa_app, mfa_client):
    client = mfa_client
    make_user(mfa_app, "jo")
    response = login(client, "jo")
    assert response.status_code == 302 and response.headers["Location"].endswith("/login/enrol")
    assert client.get("/api/me").status_code == 401
    with mfa_app.app_context():
        assert not audited("auth.login")


def test_enrolment_at_first_log_in_then_a_code_at_each_log_in(mfa_app, mfa_client):
    client = mfa_client
    make_user(mfa_app, "jo")
    secret, _codes = enrol(mfa_app, client)
    assert client.get("/api/me").status_code == 200
    with mfa_app.app_context():
        assert audited("auth.mfa_enrolled") and audited("auth.login")[-1].detail["method"] == "password+totp"
        user = db.session.scalar(select(User).where(User.username == "jo"))
        assert secret not in (user.totp_secret_enc or "")  # encrypted at rest
    later = mfa_app.test_client()
    response = login(later, "jo")
    assert response.headers["Location"].endswith("/login/verify")
    page = later.get("/login/verify").get_data(as_text=True)
    wrong = later.post("/login/verify", data={"csrf_token": csrf_from(page), "code": "000000"})
    assert wrong.status_code == 401 and later.get("/api/me").status_code == 401
    # The code just used at enrolment (same time step) cannot be used again; the next step's can.
    replay = later.post("/login/verify", data={"csrf_token": csrf_from(page), "code": code_at(secret)})
    assert replay.status_code == 401
    right = later.post("/login/verify", data={"csrf_token": csrf_from(page), "code": code_at(secret, 1)})
    assert right.status_code == 302 and later.get("/api/me").status_code == 200
    with mfa_app.app_context():
        assert [entry.detail["cause"] for entry in audited("auth.mfa_failed")] == ["code", "code"]


def test_a_recovery_code_logs_in_once(mfa_app, mfa_client):
    client = mfa_client
    make_user(mfa_app, "jo")
    _secret, codes = enrol(mfa_app, client)
    for attempt, expected in ((codes[0].upper(), 302), (codes[0], 401)):
        browser = mfa_app.test_client()
        login(browser, "jo")
        page = browser.get("/login/verify").get_data(as_text=True)
        assert browser.post("/login/verify", data={"csrf_token": csrf_from(page), "code": attempt}).status_code == expected
    with mfa_app.app_context():
        [used] = audited("auth.recovery_code_used")
        assert used.detail["left"] == 9


def test_wrong_codes_pause_the_account_like_wrong_passwords(mfa_app, mfa_client):
    client = mfa_client
    make_user(mfa_app, "jo")
    secret, _ = enrol(mfa_app, client)
    browser = mfa_app.test_client()
    login(browser, "jo")
    page = browser.get("/login/verify").get_data(as_text=True)
    for _ in range(5):
        browser.post("/login/verify", data={"csrf_token": csrf_from(page), "code": "123456"})
    with mfa_app.app_context():
        assert db.session.scalar(select(User.locked_until).where(User.username == "jo")) > utcnow()
    # The pending log-in is gone: even the right code now goes back to the password.
    assert browser.post("/login/verify", data={"csrf_token": csrf_from(page), "code": code_at(secret, 1)}).status_code == 302
    assert browser.get("/api/me").status_code == 401


def test_a_pending_log_in_runs_out(mfa_app, mfa_client, monkeypatch):
    client = mfa_client
    make_user(mfa_app, "jo")
    clock = [security.now()]
    monkeypatch.setattr(security, "now", lambda: clock[0])
    login(client, "jo")
    clock[0] += 6 * 60
    response = client.get("/login/enrol")
    assert response.status_code == 302 and response.headers["Location"].endswith("/login")


def test_without_the_requirement_an_enrolled_user_is_still_asked_for_a_code(app_factory):
    required = app_factory(security={"require_mfa": True})
    make_user(required, "jo")
    enrol(required, required.test_client())
    relaxed = app_factory()
    browser = relaxed.test_client()
    assert login(browser, "jo").headers["Location"].endswith("/login/verify")
    other = relaxed.test_client()
    make_user(relaxed, "ann")
    assert login(other, "ann").status_code == 302 and other.get("/api/me").status_code == 200


def test_require_mfa_is_on_by_default_and_the_environment_turns_it_off(tmp_path):
    overrides = conftest.test_overrides("sqlite://", tmp_path)
    overrides.pop("security")
    assert load_settings(overrides, environ={}).security.require_mfa is True
    assert load_settings(overrides, environ={"HELPLINE_REQUIRE_MFA": "false"}).security.require_mfa is False
    assert load_settings(overrides, environ={"HELPLINE_REQUIRE_MFA": "TRUE"}).security.require_mfa is True
    with pytest.raises(ConfigError) as caught:
        load_settings(overrides, environ={"HELPLINE_REQUIRE_MFA": "maybe"})
    assert "HELPLINE_REQUIRE_MFA" in str(caught.value)


# -- throttling that spares an office ------------------------------------------------------------------

def test_guessing_from_an_office_address_does_not_lock_out_colleagues_who_have_logged_in_there(app_factory):
    app = app_factory(security={"max_failed_logins_per_address": 3})
    make_user(app, "jo")
    make_user(app, "ann")
    colleague = app.test_client()
    assert login(colleague, "jo").status_code == 302  # this browser has logged in as jo before
    colleague.post("/logout", data={"csrf_token": csrf_from(colleague.get("/login").get_data(as_text=True))})
    attacker = app.test_client()  # same address (the office's NAT), no device cookie
    for name in ("ann", "bob", "cat"):
        login(attacker, name, "guess one more")
    assert login(attacker, "ann").status_code == 429
    assert login(colleague, "jo").status_code == 302
    with app.app_context():
        assert audited("auth.address_throttled")


def test_a_paused_account_still_opens_from_the_users_own_browser_but_not_to_its_guesses(app):
    make_user(app, "jo")
    own = app.test_client()
    assert login(own, "jo").status_code == 302
    own.post("/logout", data={"csrf_token": csrf_from(own.get("/account").get_data(as_text=True))})
    attacker = app.test_client()
    for _ in range(5):
        login(attacker, "jo", "wrong password")
    assert login(attacker, "jo").status_code == 401  # paused for the attacker
    # The device cookie's own failures are limited too: five wrong guesses and it is trusted no more.
    for _ in range(5):
        assert login(own, "jo", "wrong password").status_code == 401
    assert login(own, "jo").status_code == 401
    with app.app_context():
        assert any(entry.detail.get("trusted_device") for entry in audited("auth.login_failed"))


def test_a_device_cookie_for_one_user_does_not_help_another(app):
    make_user(app, "jo")
    make_user(app, "ann")
    browser = app.test_client()
    login(browser, "jo")
    for _ in range(5):
        login(app.test_client(), "ann", "wrong password")
    assert login(browser, "ann").status_code == 401
    with app.app_context():
        assert db.session.scalar(select(User.locked_until).where(User.username == "ann")) > utcnow() - dt.timedelta(seconds=1)


def test_the_operator_signs_a_user_out_everywhere_and_resets_their_second_factor(tmp_path):
    from sqlalchemy import create_engine

    from .processes import run_cli

    url = f"sqlite:///{tmp_path / 'helpline.db'}"
    env = {"HELPLINE_DATABASE_URL": url, "HELPLINE_INSTANCE_PATH": str(tmp_path / "instance")}
    assert run_cli(["db", "upgrade"], env).returncode == 0
    assert run_cli(["create-user", "jo", "--role", "handler", "--password-stdin"], env,
                   stdin="violet kettle under nine maps\n").returncode == 0
    engine = create_engine(url)
    with engine.begin() as connection:
        user_id = connection.exec_driver_sql("SELECT id FROM users WHERE username = 'jo'").scalar()
        for token in ("a" * 64, "b" * 64):
            connection.exec_driver_sql(
                "INSERT INTO staff_sessions (token_hash, user_id, method, created_at, last_seen_at) "
                "VALUES (?, ?, 'password', '2030-01-01 00:00:00', '2030-01-01 00:00:00')", (token, user_id))
        connection.exec_driver_sql("UPDATE users SET totp_secret_enc = 'x', totp_confirmed_at = '2030-01-01 00:00:00' WHERE id = ?", (user_id,))
    done = run_cli(["sign-out-everywhere", "jo"], env)
    assert done.returncode == 0 and "2 sessions ended" in done.stdout
    assert run_cli(["sign-out-everywhere", "nobody"], env).returncode != 0
    assert run_cli(["reset-mfa", "jo"], env).returncode == 0
    with engine.begin() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM staff_sessions WHERE revoked_at IS NULL").scalar() == 0
        assert connection.exec_driver_sql("SELECT totp_secret_enc, totp_confirmed_at FROM users").one() == (None, None)
        actions = [row[0] for row in connection.exec_driver_sql("SELECT action FROM audit_log ORDER BY seq")]
    engine.dispose()
    assert actions.count("auth.session_revoked") == 2 and "auth.mfa_reset" in actions
