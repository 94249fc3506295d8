"""Display-only wall screens: tokens that read the wallboard's figures and nothing else.

A supervisor's wallboard needs a log-in, and a log-in ends after its idle limit, so it cannot run all
day on a wall. A display token instead lets one screen read `GET /api/display/wallboard`: the
figures, handlers by state, service levels and when risk alerts were raised, never a call, a handler's
name or a caller (see `reports.display_board`). It does not time out; the operator revokes it:

    helpline display create "Leeds office wall"   prints the screen's address, with its token, once
    helpline display list                          every screen, when it was last seen, revoked or not
    helpline display revoke ID                     the screen stops at its next refresh

Creating and revoking are audited. Only the token's SHA-256 is stored.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from .models import DisplayToken, utcnow

#: How often a screen's `last_seen_at` is written (a screen reads every few seconds).
SEEN_EVERY = dt.timedelta(minutes=1)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create(session: Session, name: str) -> tuple[DisplayToken, str]:
    """A new screen and its token (shown once; only its hash is kept)."""
    token = secrets.token_urlsafe(32)
    screen = DisplayToken(name=name[:64], token_hash=_hash(token))
    session.add(screen)
    session.flush()
    return screen, token


def screen_for(session: Session, token: str | None, now: dt.datetime) -> DisplayToken | None:
    """The screen a token belongs to, if it is not revoked; notes that the screen was seen."""
    if not token or len(token) > 200:
        return None
    screen = session.scalar(select(DisplayToken).where(DisplayToken.token_hash == _hash(token)))
    if screen is None or screen.revoked_at is not None:
        return None
    if screen.last_seen_at is None or now - screen.last_seen_at >= SEEN_EVERY:
        screen.last_seen_at = now
    return screen


def revoke(session: Session, screen_id: int, now: dt.datetime) -> DisplayToken | None:
    """Stop a screen; None when there is no such screen."""
    screen = session.get(DisplayToken, screen_id)
    if screen is not None and screen.revoked_at is None:
        screen.revoked_at = now
    return screen
