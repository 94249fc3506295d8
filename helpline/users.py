"""Accounts: creating users, setting and checking passwords (argon2, through argon2-cffi).

Every password set goes through `passwords.check` (common and breached passwords, the user's own
details, guessability), whether from the `helpline create-user` command or the account page.
"""

from __future__ import annotations

import re

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from . import passwords
from .models import ROLES, Handler, User, utcnow

#: OWASP's recommended argon2id settings (19 MiB, 2 passes, 1 lane). argon2-cffi's default takes
#: 64 MiB for every log-in, which alone would push a serving process past its memory budget when
#: a shift of handlers logs in at once. Hashes made with other settings still verify.
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
MIN_PASSWORD = passwords.MIN_LENGTH
#: What a new handler takes until a supervisor says otherwise.
DEFAULT_SKILLS = ["mental_health", "addiction", "return_to_work"]


class UserError(ValueError):
    """A user cannot be created as asked; the message says why."""


def hash_password(password: str) -> str:
    """An argon2id hash of `password`."""
    return _hasher.hash(password)


def password_matches(user: User, password: str) -> bool:
    """Whether `password` is the user's; constant-time, and false for a damaged hash."""
    try:
        return _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def create_user(
    session: Session,
    username: str,
    role: str,
    password: str,
    display_name: str | None = None,
    skills: list[str] | None = None,
) -> User:
    """Add a user (and a handler's routing record); raises UserError for a bad name, role or password."""
    username = username.strip().lower()
    if not USERNAME.match(username):
        raise UserError("username: use 2-64 lower-case letters, digits, dots, dashes or underscores")
    if role not in ROLES:
        raise UserError(f"role: must be one of {', '.join(ROLES)}")
    try:
        passwords.check(password, username, display_name)
    except passwords.PasswordRejected as rejected:
        raise UserError(str(rejected)) from None
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise UserError(f"username: {username!r} is already taken")
    user = User(username=username, role=role, display_name=display_name or username, password_hash=hash_password(password),
                password_changed_at=utcnow())
    session.add(user)
    if role == "handler":
        session.add(Handler(user=user, skills=list(skills if skills is not None else DEFAULT_SKILLS)))
    session.flush()
    return user


def set_password(user: User, new_password: str, service_name: str | None = None) -> None:
    """Give `user` a new password, if the policy allows it (UserError says why not); the caller
    ends their other sessions, audits and commits."""
    try:
        passwords.check(new_password, user.username, user.display_name, service_name)
    except passwords.PasswordRejected as rejected:
        raise UserError(str(rejected)) from None
    if password_matches(user, new_password):
        raise UserError("password: choose a password you have not been using")
    user.password_hash = hash_password(new_password)
    user.password_changed_at = utcnow()
