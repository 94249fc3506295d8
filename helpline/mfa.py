"""The second factor: TOTP (RFC 6238, through pyotp) and single-use recovery codes.

Enrolment stores a new secret, encrypted like every other secret field (`_enc`), and only counts once
the user has typed a code from it (`totp_confirmed_at`), so a half-finished enrolment never locks
anyone out. A code is accepted from the step before to the step after now (clocks drift), and each step
at most once (`totp_last_step`, moved forward in one UPDATE so that two requests racing with the same
code cannot both pass).

Recovery codes are ten random codes of 50 bits each, shown once; only their SHA-256 is kept (they are
random, so a slow hash adds nothing), and each is spent in one UPDATE that only an unused code matches.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

import pyotp
from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from .db import db
from .models import RecoveryCode, SecurityKey, User, utcnow

#: How many recovery codes a user holds.
RECOVERY_CODES = 10
#: TOTP parameters every authenticator app understands.
DIGITS, INTERVAL = 6, 30


def enrolled(user: User) -> bool:
    """Whether the user has a confirmed second factor."""
    return user.totp_confirmed_at is not None and bool(user.totp_secret_enc)


def pending_secret(session: Session, user: User, vault: object) -> str:
    """The secret the user is enrolling with: the one already started (so a reloaded page shows the
    same code), or a new one. The caller commits."""
    if user.totp_secret_enc and user.totp_confirmed_at is None:
        return vault.decrypt(user.totp_secret_enc)  # type: ignore[attr-defined]
    secret = pyotp.random_base32()
    user.totp_secret_enc = vault.encrypt(secret)  # type: ignore[attr-defined]
    user.totp_confirmed_at = None
    user.totp_last_step = None
    return secret


def provisioning_uri(secret: str, username: str, issuer: str) -> str:
    """The otpauth:// URI an authenticator app reads from the QR code."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=INTERVAL).provisioning_uri(name=username, issuer_name=issuer)


def qr_data_uri(uri: str) -> str:
    """The URI as a QR code, an SVG in a data: URI (the pages' CSP allows data: images, nothing remote)."""
    import segno

    return segno.make(uri, error="m").svg_data_uri(scale=5, border=2)


def _normalise_code(code: str) -> str:
    return "".join(code.split())


def verify_totp(session: Session, user: User, code: str, vault: object, now: float) -> bool:
    """Whether `code` is the user's current TOTP code, used for the first time; marks its step used."""
    code = _normalise_code(code or "")
    if not user.totp_secret_enc or len(code) != DIGITS or not code.isdigit():
        return False
    totp = pyotp.TOTP(vault.decrypt(user.totp_secret_enc), digits=DIGITS, interval=INTERVAL)  # type: ignore[attr-defined]
    current = int(now // INTERVAL)
    for step in (current - 1, current, current + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            claimed = session.execute(
                update(User).where(User.id == user.id, or_(User.totp_last_step.is_(None), User.totp_last_step < step))
                .values(totp_last_step=step))
            session.refresh(user, ["totp_last_step"])
            return claimed.rowcount == 1  # type: ignore[attr-defined]
    return False


def confirm(session: Session, user: User, code: str, vault: object, now: float) -> list[str] | None:
    """Finish enrolment with a first code: the new recovery codes, or None for a wrong code."""
    if user.totp_confirmed_at is not None or not verify_totp(session, user, code, vault, now):
        return None
    user.totp_confirmed_at = utcnow()
    return new_recovery_codes(session, user)


def _code_hash(code: str) -> str:
    return hashlib.sha256(code.replace("-", "").lower().encode()).hexdigest()


def new_recovery_codes(session: Session, user: User) -> list[str]:
    """Replace the user's recovery codes with new ones; returns them (shown once). The caller commits."""
    session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    codes = []
    for _ in range(RECOVERY_CODES):
        raw = base64.b32encode(secrets.token_bytes(7)).decode().lower().rstrip("=")[:10]
        code = f"{raw[:5]}-{raw[5:]}"
        codes.append(code)
        session.add(RecoveryCode(user_id=user.id, code_hash=_code_hash(code)))
    session.flush()
    return codes


def use_recovery_code(session: Session, user: User, code: str) -> bool:
    """Spend one of the user's unused recovery codes; False if `code` is not one."""
    cleaned = _normalise_code(code or "").replace("-", "").lower()
    if len(cleaned) != 10 or not cleaned.isalnum():
        return False
    found = session.scalar(select(RecoveryCode.id).where(RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None),
                                                         RecoveryCode.code_hash == _code_hash(cleaned)))
    if found is None:
        return False
    spent = session.execute(update(RecoveryCode).where(RecoveryCode.id == found, RecoveryCode.used_at.is_(None))
                            .values(used_at=utcnow()))
    return spent.rowcount == 1  # type: ignore[attr-defined]


def recovery_codes_left(session: Session, user: User) -> int:
    """How many unused recovery codes the user has."""
    return len(session.scalars(select(RecoveryCode.id).where(RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None))).all())


def reset(session: Session, user: User) -> None:
    """Remove the user's second factor, recovery codes and security keys: they enrol again at their
    next log-in. The caller revokes their sessions, audits and commits."""
    user.totp_secret_enc = None
    user.totp_confirmed_at = None
    user.totp_last_step = None
    session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    session.execute(delete(SecurityKey).where(SecurityKey.user_id == user.id))


def keys_of(user_id: int) -> list[SecurityKey]:
    """A user's security keys, oldest first (security_keys.py registers and checks them)."""
    return list(db.session.scalars(select(SecurityKey).where(SecurityKey.user_id == user_id).order_by(SecurityKey.id)))
