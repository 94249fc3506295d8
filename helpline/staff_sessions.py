"""Server-side staff sessions: a log-in is a record in the database, so it can be ended from the server.

Flask's session cookie is signed, not stored: on its own, a copy of it taken before log-out would keep
working until it expired. So the cookie also carries a random token (`_sid`), and every request of a
logged-in user must find that token's record (`StaffSession`) open. A record ends, and every copy of
the cookie with it, on:

- log-out (`logout`), a password change (`password_changed`), an admin's "sign out everywhere"
  (`signed_out_everywhere`), the user's own "sign out my other sessions" (`signed_out_elsewhere`), a
  second factor reset (`mfa_reset`), an identity-provider sign-in unlinked (`oidc_unlinked`);
- `security.session_idle_minutes` without a request (`idle`), and `security.session_absolute_hours`
  after log-in however busy (`expired`).

Each end is audited (`auth.session_revoked`, with the reason). A log-in starts from an empty session:
whatever the anonymous visitor's cookie held (its CSRF token above all) is dropped, so a token read from
the log-in page is useless afterwards. Socket.IO connections carry the cookie they were opened with;
`realtime` checks their records when they connect, on each heartbeat and in its periodic sweep, and
closes the ones whose session has ended.

Only a hash of the token is stored, so the database alone opens no session. `last_seen_at` is written
at most once a minute per session (`TOUCH_EVERY_S`): the idle limit is measured in minutes, and a write
on every request would make each page view contend for SQLite's single writer.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from typing import Any, Iterable

from flask import Flask, current_app, g, session
from flask_login import login_user, logout_user
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from . import audit, security
from .db import db
from .models import StaffSession, User

#: Key of the session token in Flask's session cookie.
TOKEN_KEY = "_sid"
#: Seconds between writes of a session's last use.
TOUCH_EVERY_S = 60
#: Ends audited as `auth.logout`, and the cause each is audited with.
LOGOUT_CAUSES = {"logout": "user", "idle": "idle", "expired": "expired"}
#: Why a session ended, as audited and stored.
REASONS = ("logout", "idle", "expired", "password_changed", "signed_out_everywhere", "signed_out_elsewhere",
           "mfa_reset", "deactivated", "oidc_unlinked")


class SessionUser:
    """The logged-in user as Flask-Login sees them: an id and a role, nothing personal."""

    def __init__(self, user: User):
        self.id = user.id
        self.username = user.username
        self.display_name = user.display_name
        self.role = user.role
        self.is_active = user.active
        self.is_authenticated = True
        self.is_anonymous = False

    def get_id(self) -> str:
        """The session key for this user."""
        return str(self.id)


def token_hash(token: str) -> str:
    """What is stored of a session token."""
    return hashlib.sha256(token.encode()).hexdigest()


def moment() -> dt.datetime:
    """Now, from `security.now` (which tests move) so that the idle and absolute limits can be tested."""
    return dt.datetime.fromtimestamp(security.now(), dt.timezone.utc)


def _limits(settings: Any = None) -> tuple[dt.timedelta, dt.timedelta]:
    """The idle and absolute limits (of `settings.security`, or the current app's)."""
    settings = (settings or current_app.config["HELPLINE"]).security
    return dt.timedelta(minutes=settings.session_idle_minutes), dt.timedelta(hours=settings.session_absolute_hours)


def ended_by_time(record: StaffSession, now: dt.datetime) -> str | None:
    """"idle" or "expired" when the record has run out at `now`, else None."""
    idle, absolute = _limits()
    if now - record.created_at > absolute:
        return "expired"
    if now - record.last_seen_at > idle:
        return "idle"
    return None


def start(db_session: Session, user: User, method: str) -> None:
    """Begin a fresh session for `user` in this request: empty the cookie session (dropping the
    anonymous CSRF token and anything else it held), log the user in with Flask-Login and store a new
    record. The caller commits."""
    session.clear()
    # Flask-WTF caches the request's token on g: a form rendered after this gets a new one.
    g.pop("csrf_token", None)
    token = secrets.token_urlsafe(32)
    now = moment()
    db_session.add(StaffSession(token_hash=token_hash(token), user_id=user.id, method=method[:32],
                                created_at=now, last_seen_at=now))
    login_user(SessionUser(user))
    session[TOKEN_KEY] = token
    session.permanent = True


def current_record(db_session: Session, data: Any) -> StaffSession | None:
    """The open record of a cookie session (the request's, or a Socket.IO connection's copy), or None."""
    token = data.get(TOKEN_KEY) if data is not None else None
    user_id = data.get("_user_id") if data is not None else None
    if not isinstance(token, str) or not isinstance(user_id, str) or not user_id.isdigit():
        return None
    record = db_session.scalar(select(StaffSession).where(StaffSession.token_hash == token_hash(token)))
    if record is None or record.revoked_at is not None or record.user_id != int(user_id):
        return None
    return record


def check(db_session: Session, data: Any, touch: bool = True) -> tuple[StaffSession | None, str | None]:
    """Whether a cookie session may go on: (its open record, None), or (None, why it may not).

    A record that has run out is revoked here, and the end audited. The caller commits."""
    record = current_record(db_session, data)
    if record is None:
        return None, "revoked"
    now = moment()
    ended = ended_by_time(record, now)
    if ended is not None:
        revoke(db_session, record, ended)
        return None, ended
    if touch and (now - record.last_seen_at).total_seconds() >= TOUCH_EVERY_S:
        record.last_seen_at = now
    return record, None


def revoke(db_session: Session, record: StaffSession, reason: str, actor: Any = None) -> None:
    """End one session (idempotent) and audit it; `actor` is who ended it (default: its own user)."""
    if record.revoked_at is not None:
        return
    if reason not in REASONS:
        raise ValueError(f"unknown reason {reason!r}")
    record.revoked_at = moment()
    record.revoked_reason = reason
    who = actor if actor is not None else audit.Actor(record.user_id, _role_of(db_session, record.user_id))
    # A session that ended by itself (log-out, the limits) is a log-out; one ended by something else
    # that happened (a password change, an admin) is a revocation.
    if reason in LOGOUT_CAUSES:
        audit.record(db_session, who, "auth.logout", "user", record.user_id, cause=LOGOUT_CAUSES[reason], session_id=record.id)
    else:
        audit.record(db_session, who, "auth.session_revoked", "user", record.user_id, cause=reason, session_id=record.id)


def revoke_all(db_session: Session, user_id: int, reason: str, actor: Any = None, keep: StaffSession | None = None) -> int:
    """End every open session of a user (but `keep`); returns how many ended. The caller commits."""
    records = db_session.scalars(select(StaffSession).where(StaffSession.user_id == user_id,
                                                            StaffSession.revoked_at.is_(None))).all()
    ended = 0
    for record in records:
        if keep is not None and record.id == keep.id:
            continue
        revoke(db_session, record, reason, actor)
        ended += 1
    return ended


def logout(db_session: Session) -> None:
    """End the request's own session record (the log-out view and idle ends call this)."""
    record = current_record(db_session, session)
    if record is not None:
        revoke(db_session, record, "logout")


def still_open(db_session: Session, hashes: Iterable[str], settings: Any = None) -> set[str]:
    """Of these token hashes, the ones whose sessions are open and within their limits now
    (`settings` for a caller outside an app context, such as the sweeper's thread)."""
    wanted = list(set(hashes))
    if not wanted:
        return set()
    idle, absolute = _limits(settings)
    now = moment()
    rows = db_session.execute(select(StaffSession.token_hash).where(
        StaffSession.token_hash.in_(wanted), StaffSession.revoked_at.is_(None),
        StaffSession.last_seen_at >= now - idle, StaffSession.created_at >= now - absolute))
    return {row[0] for row in rows}


def touch_hash(db_session: Session, hashed: str) -> None:
    """Mark a session in use (a Socket.IO heartbeat: the console is on duty)."""
    db_session.execute(update(StaffSession).where(StaffSession.token_hash == hashed, StaffSession.revoked_at.is_(None))
                       .values(last_seen_at=moment()))


def open_sessions(db_session: Session, user_id: int) -> list[StaffSession]:
    """A user's open sessions, newest first (the account page lists them)."""
    return list(db_session.scalars(select(StaffSession).where(StaffSession.user_id == user_id, StaffSession.revoked_at.is_(None))
                                   .order_by(StaffSession.created_at.desc())))


def _role_of(db_session: Session, user_id: int) -> str:
    role = db_session.scalar(select(User.role).where(User.id == user_id))
    return role or "unknown"


def check_request() -> None:
    """Let the request go on as its user only while the session's server-side record is open and
    within its limits; otherwise it goes on as nobody (401, or the log-in page)."""
    if "_user_id" not in session:
        # Nobody is logged in: leave the session alone, so webhooks and static files set no cookie.
        return
    session.permanent = True
    record, ended = check(db.session, session)
    if db.session.new or db.session.dirty or db.session.info.get("audit_pending"):
        db.session.commit()  # the last-use mark, or the audited end of a session that ran out
    if record is None:
        logout_user()
        session.clear()
        g.session_ended = ended


def init_app(app: Flask) -> None:
    """Check every request's session against its record (after security.py has given the request its id,
    and before the role matrix's gate, so that an ended session is nobody)."""
    app.before_request(check_request)
