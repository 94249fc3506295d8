"""Security keys (WebAuthn, through py_webauthn) as a second factor beside TOTP.

A user who has set up two-step verification (TOTP, with recovery codes as the fallback) may add
security keys on the account page, where the browser offers WebAuthn; at log-in, after the password
(or an identity provider that did not do a second factor), a user with a key may touch it instead of
typing a code.

- Enrolment: `POST /api/me/security-keys/options` gives the browser creation options with a fresh
  challenge (kept in the session, single use, for `CHALLENGE_S`); `POST /api/me/security-keys` sends
  the new credential back, and py_webauthn checks the challenge, origin (`HELPLINE_PUBLIC_URL`),
  relying-party id (its host) and user presence before its id and public key are stored.
- Log-in: `POST /login/verify/key/options` gives the pending user's keys and a challenge;
  `POST /login/verify/key` checks the assertion's signature against the stored key, the challenge,
  origin and relying-party id, and that the signature counter has moved on (a counter that goes
  backwards betrays a cloned key). A key that is not the user's, or an assertion that fails, counts
  as a wrong code (the account's pause) and is audited.

Attestation is not asked for ("none"): the helpline trusts the person who enrols the key, who has
just proved themselves with a password and a code, not the key's maker.
"""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any, Literal, Optional
from urllib.parse import urlsplit

from flask import Blueprint, Flask, Response, current_app, jsonify, session
from flask_login import current_user
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from . import audit, mfa, security
from .api import Routes, body
from .auth import PENDING, _account_page, _first_step, _pending_user, _second_factor_failed, finish_login
from .api.openapi import documented
from .db import db
from .mfa import keys_of
from .models import SecurityKey, User, utcnow
from .errors import error

bp = Blueprint("security_keys", __name__)
#: Enrolling a key, on /api/me/security-keys (create_app puts them on the API blueprint).
api_routes = Routes()

#: Seconds a challenge stays good.
CHALLENGE_S = 300
#: At most this many keys per user.
MAX_KEYS = 10
_ENROL, _LOG_IN = "_webauthn_enrol", "_webauthn_login"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def relying_party() -> tuple[str, str]:
    """(relying-party id, origin): the public URL's host, and its origin."""
    public = urlsplit(current_app.config["HELPLINE"].public_url)
    return public.hostname or "localhost", f"{public.scheme}://{public.netloc}"


def _new_challenge(key: str, user_id: int) -> bytes:
    challenge = secrets.token_bytes(32)
    session[key] = {"c": _b64(challenge), "u": user_id, "at": int(security.now())}
    return challenge


def _take_challenge(key: str, user_id: int) -> bytes | None:
    """The challenge this browser was given for `user_id`, once, within CHALLENGE_S; else None."""
    from webauthn import base64url_to_bytes

    held = session.pop(key, None)
    if not isinstance(held, dict) or held.get("u") != user_id or not isinstance(held.get("c"), str):
        return None
    if not isinstance(held.get("at"), int) or security.now() - held["at"] > CHALLENGE_S:
        return None
    return base64url_to_bytes(held["c"])


# -- enrolment (the account page) ------------------------------------------------------------------

class KeyOptions(BaseModel):
    """WebAuthn options for navigator.credentials.create() or .get(), base64url-encoded (as py_webauthn's
    options_to_json gives them): `publicKey`."""

    publicKey: dict[str, Any]


#: base64url without padding, as the browser's answer is sent (security_keys.js).
_B64URL = r"^[A-Za-z0-9_-]*$"


class Attestation(BaseModel):
    """The authenticator's attestation response, each part base64url-encoded."""

    model_config = ConfigDict(extra="forbid")

    clientDataJSON: str = Field(max_length=4096, pattern=_B64URL)
    attestationObject: str = Field(max_length=16384, pattern=_B64URL)
    transports: list[Literal["ble", "cable", "hybrid", "internal", "nfc", "smart-card", "usb"]] = Field(default=[], max_length=7)


class NewCredential(BaseModel):
    """navigator.credentials.create()'s answer as security_keys.js sends it (WebAuthn's RegistrationResponseJSON)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=1400, pattern=_B64URL)
    rawId: str = Field(min_length=1, max_length=1400, pattern=_B64URL)
    type: Literal["public-key"]
    authenticatorAttachment: Optional[Literal["platform", "cross-platform"]] = None
    #: Results of the extensions the options asked for: none are asked, so browsers send {}.
    clientExtensionResults: dict[str, dict[str, bool]] = Field(default={}, max_length=8)
    response: Attestation


class NewKey(BaseModel):
    """A new security key: a name for it, and navigator.credentials.create()'s answer, base64url-encoded."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=60)
    credential: NewCredential


class KeyAdded(BaseModel):
    """The key that was added."""

    id: int
    name: str


@api_routes.post("/me/security-keys/options")
@documented(responses={200: KeyOptions, 409: "Set up two-step verification (an authenticator app) first, or too many keys"},
            roles=("handler", "supervisor", "clinician", "admin"))
def enrol_options() -> Response | tuple[Response, int]:
    """Options for adding a security key to your account (a new challenge)."""
    from webauthn import generate_registration_options, options_to_json
    from webauthn.helpers.structs import (AuthenticatorSelectionCriteria, PublicKeyCredentialDescriptor,
                                          ResidentKeyRequirement, UserVerificationRequirement)

    user = db.session.get(User, current_user.id)
    refused = _cannot_add(user)
    if refused is not None:
        return refused
    rp_id, _ = relying_party()
    options = generate_registration_options(
        rp_id=rp_id, rp_name=current_app.config["HELPLINE"].service.name, user_name=user.username,
        user_id=f"helpline-user-{user.id}".encode(), user_display_name=user.display_name,
        challenge=_new_challenge(_ENROL, user.id),
        exclude_credentials=[PublicKeyCredentialDescriptor(id=_decode(key.credential_id)) for key in keys_of(user.id)],
        authenticator_selection=AuthenticatorSelectionCriteria(resident_key=ResidentKeyRequirement.DISCOURAGED,
                                                               user_verification=UserVerificationRequirement.PREFERRED),
    )
    return jsonify({"publicKey": json.loads(options_to_json(options))})


def _decode(text: str) -> bytes:
    from webauthn import base64url_to_bytes

    return base64url_to_bytes(text)


def _is_address(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _cannot_add(user: User) -> Response | None:
    if not mfa.enrolled(user):
        return error(409, "mfa_not_set_up", "set up two-step verification with an authenticator app first: "
                     "a security key is an alternative to its codes, which stay the way back in")
    if _is_address(relying_party()[0]):
        return error(409, "no_host_name", "security keys need the helpline to be reached by a host name "
                     "(HELPLINE_PUBLIC_URL), not an IP address; use a code from the authenticator app")
    if len(keys_of(user.id)) >= MAX_KEYS:
        return error(409, "too_many_keys", f"at most {MAX_KEYS} security keys; remove one first")
    return None


@api_routes.post("/me/security-keys")
@documented(body=NewKey, responses={201: KeyAdded, 422: "invalid_key: the key's answer is not valid for this challenge",
                                    409: "Two-step verification is not set up, too many keys, the key is registered "
                                         "already, or no options were asked for (challenge_expired)"},
            roles=("handler", "supervisor", "clinician", "admin"))
def add_key() -> Response | tuple[Response, int]:
    """Add the security key the browser has just created (after /options)."""
    from webauthn import verify_registration_response
    from webauthn.helpers.exceptions import WebAuthnException

    user = db.session.get(User, current_user.id)
    new = body(NewKey)
    refused = _cannot_add(user)
    if refused is not None:
        return refused
    challenge = _take_challenge(_ENROL, user.id)
    if challenge is None:
        return error(409, "challenge_expired", "ask for new options and try again")
    rp_id, origin = relying_party()
    try:
        verified = verify_registration_response(credential=new.credential.model_dump(exclude_none=True), expected_challenge=challenge,
                                                expected_rp_id=rp_id, expected_origin=origin)
    except (WebAuthnException, ValueError, TypeError, KeyError) as exc:
        return error(422, "invalid_key", f"the security key's answer was not accepted: {str(exc)[:200]}")
    credential_id = _b64(verified.credential_id)
    if db.session.scalar(select(SecurityKey.id).where(SecurityKey.credential_id == credential_id)) is not None:
        return error(409, "key_exists", "that security key is already registered")
    key = SecurityKey(user_id=user.id, credential_id=credential_id, public_key=verified.credential_public_key,
                      sign_count=verified.sign_count, name=new.name.strip() or "Security key")
    db.session.add(key)
    db.session.flush()
    audit.record(db.session, audit.Actor(user.id, user.role), "auth.mfa_enrolled", "user", user.id,
                 factor="security_key", key_id=key.id)
    db.session.commit()
    return jsonify(KeyAdded(id=key.id, name=key.name).model_dump()), 201


@bp.post("/account/security-keys/<int:key_id>/remove")
def remove_key(key_id: int) -> Response | tuple[str, int]:
    """Remove one of your security keys (the account page's form)."""
    key = db.session.get(SecurityKey, key_id)
    if key is None or key.user_id != current_user.id:
        return _account_page(message="There is no such security key on your account.", status=404)
    db.session.delete(key)
    audit.record(db.session, audit.Actor(current_user.id, current_user.role), "auth.mfa_removed", "user", current_user.id,
                 factor="security_key", key_id=key_id)
    db.session.commit()
    return _account_page(notice=f"The security key “{key.name}” has been removed.")


# -- log-in ----------------------------------------------------------------------------------------

@bp.post("/login/verify/key/options")
def login_options() -> Response | tuple[Response, int]:
    """Options for the pending log-in's security key: the user's keys and a new challenge."""
    from webauthn import generate_authentication_options, options_to_json
    from webauthn.helpers.structs import PublicKeyCredentialDescriptor, UserVerificationRequirement

    user = _pending_user()
    if user is None:
        return error(409, "no_login_in_progress", "no log-in is waiting for its second step here: start again from the log-in page")
    keys = keys_of(user.id)
    if not keys:
        return error(409, "no_security_key", "there is no security key on this account: type a code")
    rp_id, _ = relying_party()
    options = generate_authentication_options(
        rp_id=rp_id, challenge=_new_challenge(_LOG_IN, user.id),
        allow_credentials=[PublicKeyCredentialDescriptor(id=_decode(key.credential_id)) for key in keys],
        user_verification=UserVerificationRequirement.PREFERRED)
    return jsonify({"publicKey": json.loads(options_to_json(options))})


@bp.post("/login/verify/key")
def log_in_with_key() -> Response | tuple[Response, int]:
    """The pending log-in's second step with a security key: `{"credential": ...}` from
    navigator.credentials.get(). Answers `{"redirect": ...}`, or 401 for a key that is not accepted."""
    from flask import request
    from webauthn import verify_authentication_response
    from webauthn.helpers.exceptions import WebAuthnException

    user = _pending_user()
    if user is None:
        return error(409, "no_login_in_progress", "no log-in is waiting for its second step here: start again from the log-in page")
    data = request.get_json(silent=True)
    credential = data.get("credential") if isinstance(data, dict) else None
    if not isinstance(credential, dict) or not isinstance(credential.get("id"), str):
        return error(400, "bad_json", 'send {"credential": ...} as navigator.credentials.get() gave it')
    challenge = _take_challenge(_LOG_IN, user.id)
    key = db.session.scalar(select(SecurityKey).where(SecurityKey.credential_id == credential["id"][:1400],
                                                      SecurityKey.user_id == user.id))
    cause = None
    if challenge is None:
        cause = "security_key_challenge"
    elif key is None:
        cause = "security_key_unknown"
    else:
        rp_id, origin = relying_party()
        try:
            verified = verify_authentication_response(
                credential=credential, expected_challenge=challenge, expected_rp_id=rp_id, expected_origin=origin,
                credential_public_key=key.public_key, credential_current_sign_count=key.sign_count)
        except (WebAuthnException, ValueError, TypeError, KeyError):
            cause = "security_key"
        else:
            key.sign_count = verified.new_sign_count
            key.last_used_at = utcnow()
    if cause is not None:
        _second_factor_failed(user, cause)  # counts towards the account's pause, audited, committed
        return error(401, "key_refused", "That security key was not accepted. Try again, or type a code instead.")
    next_url = session[PENDING].get("next") or None
    response = finish_login(user, f"{_first_step()}+security_key", next_url)
    audit.record(db.session, audit.Actor(user.id, user.role), "auth.security_key_used", "user", user.id, key_id=key.id)
    db.session.commit()
    target = response.headers["Location"]
    answer = jsonify({"redirect": target})
    for cookie in response.headers.getlist("Set-Cookie"):
        answer.headers.add("Set-Cookie", cookie)
    return answer


def init_app(app: Flask) -> None:
    """The log-in and account routes (the API's, `api_routes`, go on the API blueprint)."""
    app.register_blueprint(bp)
