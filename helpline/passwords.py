"""Which passwords staff may choose, after NIST SP 800-63B section 3.1.1.2: long enough, not common,
not about the person, and no composition rules (no "one capital and a digit").

- At least `MIN_LENGTH` characters, at most `MAX_LENGTH` (the log-in form's limit).
- Not one of the 30,000 most common passwords of the leaked-password corpus zxcvbn ships
  (its `passwords` list, package data of the zxcvbn package, MIT licence), in any case.
- Not the username or the person's name, and not containing the username.
- Not easy to guess: zxcvbn's estimate, which also finds keyboard runs (qwertyuiop), sequences
  (1234567890), dates, repeats, l33t substitutions and common words with a digit on the end
  (password123), and is given the user's own details and the service's name as words to try first,
  must reach score 3 (about 10^8 guesses: beyond an online attack, slowed further by argon2).

Every refusal says why, in words a person can act on, and nothing is changed.
"""

from __future__ import annotations

import functools
import re

MIN_LENGTH = 10
MAX_LENGTH = 256
#: zxcvbn's score a password must reach (0-4).
MIN_SCORE = 3
#: zxcvbn's time grows with length; past this, what is left is not weighed (it only adds strength).
_WEIGHED = 100


class PasswordRejected(ValueError):
    """The password may not be used; the message says why."""


@functools.cache
def _common() -> frozenset[str]:
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(FREQUENCY_LISTS["passwords"])


def is_common(password: str) -> bool:
    """Whether `password` is on the list of common and breached passwords (in any case)."""
    return password.lower() in _common()


def context_words(username: str, display_name: str | None, service_name: str | None) -> list[str]:
    """The words an attacker who knows the person and the service would try first."""
    words = [username, *(re.split(r"[\s._-]+", username))]
    if display_name:
        words += [display_name, *display_name.split()]
    if service_name:
        words += [word for word in re.split(r"\W+", service_name) if len(word) > 2]
    words += ["helpline", "practitioner", "doctor", "dentist", "nhs"]
    return [word.lower() for word in words if word]


def check(password: str, username: str, display_name: str | None = None, service_name: str | None = None) -> None:
    """Raise PasswordRejected, saying why, unless `password` may be used by this user."""
    if not isinstance(password, str) or len(password) < MIN_LENGTH:
        raise PasswordRejected(f"password: at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise PasswordRejected(f"password: at most {MAX_LENGTH} characters")
    lowered = password.lower()
    if is_common(password):
        raise PasswordRejected("password: this is one of the most common passwords; choose another")
    name = (display_name or "").strip().lower()
    if (len(username) >= 3 and username.lower() in lowered) or (name and lowered == name):
        raise PasswordRejected("password: it must not contain your username or be your name")
    from zxcvbn import zxcvbn

    result = zxcvbn(password[:_WEIGHED], user_inputs=context_words(username, display_name, service_name))
    if result["score"] < MIN_SCORE:
        warning = (result.get("feedback") or {}).get("warning") or "it would be easy to guess"
        raise PasswordRejected(f"password: too easy to guess ({warning.rstrip('.').lower()}); "
                               "a few unrelated words make a strong one")
