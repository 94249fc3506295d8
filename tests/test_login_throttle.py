"""Log-in lockout per account and throttling per address, without saying whether a username exists."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlalchemy import select

from helpline.config import ConfigError, load_settings
from helpline.db import db
from helpline.models import AuditEntry, LoginFailure, User, utcnow

from . import conftest
from .test_audit import login
from .test_auth import make_user


def the_user(username: str) -> User:
    """A user as the database has them now."""
    db.session.expire_all()
    return db.session.scalars(select(User).where(User.username == username)).one()


def actions() -> list[str]:
    """Audited actions, oldest first."""
    return list(db.session.scalars(select(AuditEntry.action).order_by(AuditEntry.seq)))


def message_of(response) -> str:  # type: ignore[no-untyped-def]
    """What the log-in page says went wrong (the form echoes the username, so compare only this)."""
    match = re.search(r'role="alert">([^<]*)<', response.get_data(as_text=True))
    assert match, response.get_data(as_text=True)
    return match.group(1)


def test_five_wrong_passwords_pause_the_account(app, client):
    make_user(app, "jo")
    for _ in range(5):
        assert login(client, "jo", "wrong password").status_code == 401
    with app.app_context():
        user = the_user("jo")
        assert user.locked_until is not None and user.locked_until > utcnow() + dt.timedelta(minutes=14)
        assert "auth.account_locked" in actions()
    # The right password no longer opens it, and the answer is the same as for a wrong one.
    locked = login(client, "jo")
    assert locked.status_code == 401
    wrong = login(client, "jo", "wrong password")
    unknown = login(client, "nobody-here", "wrong password")
    assert message_of(locked) == message_of(wrong) == message_of(unknown)
    assert "paused" in message_of(locked)
    with app.app_context():
        causes = [entry.detail["cause"] for entry in db.session.scalars(select(AuditEntry).where(AuditEntry.action == "auth.login_failed"))]
        assert causes[-3:] == ["locked", "locked", "unknown_user"]


def test_the_pause_ends(app, client):
    make_user(app, "jo")
    for _ in range(5):
        login(client, "jo", "wrong password")
    with app.app_context():
        user = the_user("jo")
        user.locked_until = utcnow() - dt.timedelta(seconds=1)
        db.session.commit()
    assert login(client, "jo").status_code == 302
    with app.app_context():
        user = the_user("jo")
        assert user.failed_logins == 0 and user.locked_until is None


def test_a_right_password_resets_the_count(app, client):
    make_user(app, "jo")
    for _ in range(4):
        login(client, "jo", "wrong password")
    assert login(client, "jo").status_code == 302
    with app.app_context():
        assert the_user("jo").failed_logins == 0


def test_the_limit_comes_from_the_configuration(app_factory):
    app = app_factory(security={"max_failed_logins": 2, "lockout_minutes": 60})
    client = app.test_client()
    make_user(app, "jo")
    login(client, "jo", "wrong password")
    login(client, "jo", "wrong password")
    assert login(client, "jo").status_code == 401
    with app.app_context():
        assert the_user("jo").locked_until > utcnow() + dt.timedelta(minutes=59)


def test_one_address_guessing_many_usernames_is_throttled(app_factory):
    app = app_factory(security={"max_failed_logins_per_address": 3})
    client = app.test_client()
    make_user(app, "jo")
    for name in ("ann", "bob", "cat"):
        assert login(client, name, "guess one").status_code == 401
    throttled = login(client, "jo")
    assert throttled.status_code == 429 and "Too many failed log-ins" in throttled.get_data(as_text=True)
    # Another address is not held back.
    other = app.test_client()
    other.environ_base["REMOTE_ADDR"] = "10.0.0.2"
    assert login(other, "jo").status_code == 302
    with app.app_context():
        assert "auth.address_throttled" in actions()
        # The address is counted by keyed hash only.
        hashes = set(db.session.scalars(select(LoginFailure.address_hash)))
        assert len(hashes) == 1 and "127.0.0.1" not in next(iter(hashes))


def test_failures_outside_the_window_do_not_count(app_factory):
    app = app_factory(security={"max_failed_logins_per_address": 2, "lockout_minutes": 10})
    client = app.test_client()
    make_user(app, "jo")
    login(client, "ann", "guess")
    login(client, "bob", "guess")
    with app.app_context():
        for failure in db.session.scalars(select(LoginFailure)):
            failure.at = utcnow() - dt.timedelta(minutes=11)
        db.session.commit()
    assert login(client, "jo").status_code == 302


def test_behind_a_proxy_the_forwarded_address_is_counted(app_factory):
    app = app_factory(security={"max_failed_logins_per_address": 2, "proxy_hops": 1})
    make_user(app, "jo")
    first, second = app.test_client(), app.test_client()
    first.environ_base["HTTP_X_FORWARDED_FOR"] = "198.51.100.7"
    second.environ_base["HTTP_X_FORWARDED_FOR"] = "203.0.113.9"
    login(first, "ann", "guess")
    login(first, "bob", "guess")
    assert login(first, "jo").status_code == 429
    assert login(second, "jo").status_code == 302


def test_an_inactive_account_fails_like_any_other(app, client):
    make_user(app, "jo")
    with app.app_context():
        the_user("jo").active = False
        db.session.commit()
    inactive = login(client, "jo")
    assert inactive.status_code == 401
    assert message_of(inactive) == message_of(login(client, "nobody-here", "x" * 12))


@pytest.mark.parametrize(
    ("key", "value"),
    [("max_failed_logins", 0), ("lockout_minutes", "15"), ("session_idle_minutes", True), ("colour", 1),
     ("max_failed_logins_per_address", -1), ("proxy_hops", 9)],
)
def test_bad_security_settings_stop_start_up_naming_the_key(tmp_path, key, value):
    overrides = conftest.test_overrides("sqlite://", tmp_path, security={key: value})
    with pytest.raises(ConfigError) as caught:
        load_settings(overrides, environ={})
    assert f"security.{key}" in str(caught.value)
