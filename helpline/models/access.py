"""Staff access: the server-side record of every log-in session, second-factor recovery codes, and
security keys (WebAuthn credentials).

A session's cookie carries only a random token; its record here says whose it is, when it started
and was last used, and whether it has been revoked (log-out, a password change, an admin's "sign out
everywhere", the idle and absolute limits). The token itself is never stored, only its SHA-256, so a
copy of the database opens no session.
"""

from __future__ import annotations

import datetime as dt
from typing import Optional

from sqlalchemy import ForeignKey, Index, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from .core import Base, utcnow

__all__ = ["StaffSession", "RecoveryCode", "SecurityKey"]


class StaffSession(Base):
    """One log-in of a console user, from the moment the last factor passed until it ends."""

    __tablename__ = "staff_sessions"
    __table_args__ = (Index("ix_staff_sessions_user_open", "user_id", "revoked_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    #: SHA-256 (hex) of the random token in the session cookie.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    #: How the user proved who they are: password, password+totp, password+recovery_code.
    method: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[Optional[dt.datetime]]
    #: logout, idle, expired, password_changed, signed_out_everywhere, signed_out_elsewhere, mfa_reset, deactivated
    revoked_reason: Mapped[Optional[str]] = mapped_column(String(32))


class RecoveryCode(Base):
    """A single-use code that stands in for the second factor when the authenticator is lost.

    Only a hash is kept: the codes are shown once, at enrolment (or when renewed), and never again.
    """

    __tablename__ = "recovery_codes"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    used_at: Mapped[Optional[dt.datetime]]


class SecurityKey(Base):
    """A security key (a WebAuthn credential) a user may give at log-in instead of a TOTP code.

    Only public material is kept: the credential's id and public key, and the authenticator's
    signature counter (a counter that goes backwards betrays a cloned key).
    """

    __tablename__ = "security_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    credential_id: Mapped[str] = mapped_column(String(1400), unique=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    sign_count: Mapped[int] = mapped_column(default=0)
    name: Mapped[str] = mapped_column(String(60))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[Optional[dt.datetime]]
