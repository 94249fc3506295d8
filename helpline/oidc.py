"""Sign-in through an OpenID Connect provider (NHS Care Identity Service 2, Microsoft Entra ID, ...), as
an alternative to a password.

Authlib's Flask client does the protocol: discovery, the authorization code flow with PKCE (S256), the
state and nonce kept in the (signed) session until the provider sends the browser back, the token
exchange with the client secret, and the ID token's signature (the provider's published keys), issuer,
audience, expiry and nonce, which this module insists on (authlib checks the audience only when told
to).

The provider proves who someone is; it never decides who may use the helpline:

- the claim `oidc.username_claim` (with `oidc.username_domain` taken off, when set) must name an
  existing, active helpline user: an identity provider never creates an account nor chooses a role;
  anyone else gets a page saying so, and the refusal is audited;
- the first sign-in binds the account to the provider's subject (`sub`); a later one with the same
  username but another subject (a name or address reused for someone else) is refused;
- the log-in then is a password log-in's equal: a fresh server-side session with a new CSRF token
  (`auth.finish_login`), audited with the method "oidc";
- it counts as two-factor only when the provider says so: `amr` naming mfa, otp or hwk, or an `acr`
  in `oidc.mfa_acr_values`. Otherwise the helpline's own second factor (TOTP) follows whenever a
  password log-in would need it (`security.require_mfa`, or the user has enrolled).
"""

from __future__ import annotations

import logging
from typing import Any

import requests
from flask import Blueprint, Flask, Response, current_app, redirect, render_template, request, session, url_for
from flask_login import current_user
from sqlalchemy import select

from . import audit, auth, mfa, security
from .auth import _safe_next, home_url
from .db import db
from .models import User, utcnow

log = logging.getLogger(__name__)

bp = Blueprint("oidc", __name__)

#: The name the client is registered under in authlib's registry (and its session keys).
CLIENT = "staff_idp"
#: `amr` values (RFC 8176) that say a second factor was used.
MFA_AMR = frozenset({"mfa", "otp", "hwk"})
#: Where the page to go to after the log-in waits in the session while the browser is at the provider.
NEXT_KEY = "_oidc_next"


def _settings() -> Any:
    return current_app.config["HELPLINE"].oidc


def _client() -> Any:
    """The registered authlib client, or None when sign-in through a provider is not configured."""
    registry = current_app.extensions.get("helpline.oidc")
    return registry.create_client(CLIENT) if registry is not None else None


def redirect_uri() -> str:
    """The callback the provider sends the browser back to: register exactly this with it."""
    return current_app.config["HELPLINE"].public_url + url_for("oidc.callback")


class Refused(Exception):
    """A sign-in through the provider that cannot go on: `cause` is audited, `message` shown."""

    def __init__(self, cause: str, message: str, status: int = 403, user: User | None = None, **detail: Any):
        super().__init__(cause)
        self.cause, self.message, self.status, self.user, self.detail = cause, message, status, user, detail


@bp.get("/login/oidc")
def start() -> Response | tuple[str, int]:
    """Send the browser to the provider (state, nonce and PKCE verifier kept in the session)."""
    client = _client()
    if client is None:
        return render_template("oidc_refused.html", message="Signing in through an identity provider is not set up here."), 404
    if current_user.is_authenticated:
        return redirect(home_url())
    next_url = _safe_next()
    if next_url:
        session[NEXT_KEY] = next_url
    else:
        session.pop(NEXT_KEY, None)
    extra = {"acr_values": " ".join(_settings().mfa_acr_values)} if _settings().mfa_acr_values else {}
    try:
        return client.authorize_redirect(redirect_uri(), **extra)
    except (requests.RequestException, ValueError) as exc:
        log.warning("identity provider unreachable at the start of a sign-in: %s", exc)
        return _refused_page(Refused("provider_unreachable", f"{_settings().provider_name} cannot be reached just now. "
                                     "Please try again in a minute, or log in with your password.", 503))


@bp.get("/login/oidc/callback")
def callback() -> Response | tuple[str, int]:
    """The provider sent the browser back: check everything, then log in (or ask for the helpline's
    second factor, or refuse with a page that says why)."""
    client = _client()
    if client is None:
        return render_template("oidc_refused.html", message="Signing in through an identity provider is not set up here."), 404
    next_url = session.pop(NEXT_KEY, None)
    try:
        claims = _verified_claims(client)
        user = _staff_user(claims)
    except Refused as refused:
        who = audit.Actor(refused.user.id, refused.user.role) if refused.user is not None else audit.Actor.anonymous()
        audit.record(db.session, who, "auth.login_failed", "user" if refused.user is not None else None,
                     refused.user.id if refused.user is not None else None, method="oidc", cause=refused.cause,
                     address=security.client_address(), **refused.detail)
        db.session.commit()
        return _refused_page(refused)
    return _log_in(user, claims, next_url)


def _refused_page(refused: Refused) -> tuple[str, int]:
    return render_template("oidc_refused.html", message=refused.message), refused.status


def _verified_claims(client: Any) -> dict[str, Any]:
    """The ID token's claims after authlib's checks and ours, with the userinfo endpoint's answer
    merged in when the username claim is not in the ID token (CIS2 puts most claims there)."""
    from authlib.integrations.base_client import MismatchingStateError, OAuthError
    from joserfc.errors import JoseError

    settings = _settings()
    name = settings.provider_name
    if request.args.get("error"):
        # The person cancelled, or the provider refused them: its words are its own, not shown raw.
        raise Refused("provider_error", f"{name} did not sign you in. You can try again, or log in with your password.",
                      401, error=request.args.get("error", "")[:64])
    try:
        metadata = client.load_server_metadata()
        if metadata.get("issuer") != settings.issuer:
            raise Refused("issuer_mismatch", f"{name} is not set up correctly here. Please tell your administrator.", 502)
        token = client.authorize_access_token(claims_options={
            "iss": {"essential": True, "value": settings.issuer},
            "aud": {"essential": True, "value": settings.client_id},
            "sub": {"essential": True},
        })
    except MismatchingStateError:
        raise Refused("state", "This sign-in link has expired or was not started in this browser. "
                      "Please start again from the log-in page.", 400) from None
    except OAuthError as exc:
        raise Refused("token_exchange", f"{name} did not complete the sign-in. Please start again from the log-in page.",
                      401, error=str(exc.error or "")[:64]) from None
    except (JoseError, ValueError) as exc:
        log.warning("identity provider's ID token refused: %s", exc)
        raise Refused("id_token", f"The answer from {name} could not be trusted, so you are not signed in. "
                      "Please start again from the log-in page.", 401, error=type(exc).__name__) from None
    except requests.RequestException as exc:
        log.warning("identity provider unreachable during a sign-in: %s", exc)
        raise Refused("provider_unreachable", f"{name} cannot be reached just now. Please try again in a minute, "
                      "or log in with your password.", 503) from None
    claims = token.get("userinfo")
    if not claims:
        # No ID token (a plain OAuth answer): nothing says who this is, nor for whom it was issued.
        raise Refused("id_token", f"The answer from {name} had no ID token, so you are not signed in.", 401,
                      error="missing")
    claims = dict(claims)
    if settings.username_claim not in claims:
        try:
            extra = client.userinfo(token=token)
        except (requests.RequestException, ValueError) as exc:
            log.warning("identity provider's userinfo unreachable: %s", exc)
            raise Refused("provider_unreachable", f"{name} cannot be reached just now. Please try again in a minute.",
                          503) from None
        if extra.get("sub") != claims["sub"]:
            raise Refused("userinfo_subject", f"The answer from {name} could not be trusted, so you are not signed in.", 401)
        # Whether a second factor was used is the ID token's word alone (amr, acr), never userinfo's.
        claims = {**{key: value for key, value in extra.items() if key not in ("amr", "acr")}, **claims}
    return claims


def _username_from(claims: dict[str, Any]) -> str | None:
    """The helpline username the configured claim names, or None when it names none."""
    settings = _settings()
    value = claims.get(settings.username_claim)
    if not isinstance(value, str) or not value.strip():
        return None
    value = value.strip().lower()
    if settings.username_domain:
        suffix = "@" + settings.username_domain.lower()
        if not value.endswith(suffix):
            return None
        value = value[: -len(suffix)]
    return value[:64] if len(value) <= 64 else None


def _staff_user(claims: dict[str, Any]) -> User:
    """The helpline user the claims name: existing, active, not paused, and this subject's."""
    settings = _settings()
    username = _username_from(claims)
    unknown = Refused("unknown_user", f"{settings.provider_name} signed you in, but you have no account on this helpline "
                      "(or it is not linked to that sign-in). Please ask your administrator to create one for you; "
                      "signing in elsewhere never creates one.", 403)
    if username is None:
        raise unknown
    user = db.session.scalar(select(User).where(User.username == username))  # usernames are lower-case
    if user is None:
        raise unknown
    if not user.active:
        raise Refused("inactive", unknown.message, 403, user=user)
    if user.locked_until is not None and user.locked_until > utcnow():
        raise Refused("locked", "This account is paused after too many failed attempts. Please try again later.", 403,
                      user=user)
    subject = str(claims["sub"])[:255]
    if user.oidc_subject is not None and user.oidc_issuer == settings.issuer and user.oidc_subject != subject:
        raise Refused("subject_mismatch", unknown.message, 403, user=user)
    taken = db.session.scalar(select(User.id).where(User.oidc_issuer == settings.issuer, User.oidc_subject == subject,
                                                    User.id != user.id))
    if taken is not None:
        raise Refused("subject_mismatch", unknown.message, 403, user=user)
    return user


def provider_second_factor(claims: dict[str, Any]) -> bool:
    """Whether the provider says this sign-in used a second factor (`amr`, or a configured `acr`)."""
    amr = claims.get("amr") or []
    if isinstance(amr, str):
        amr = [amr]
    acr = claims.get("acr")
    return bool(MFA_AMR & {str(value) for value in amr}) or (isinstance(acr, str) and acr in _settings().mfa_acr_values)


def _log_in(user: User, claims: dict[str, Any], next_url: str | None) -> Response:
    """Bind the subject, then log in, or go on to the helpline's own second factor."""
    settings = _settings()
    if user.oidc_subject is None or user.oidc_issuer != settings.issuer:
        user.oidc_issuer, user.oidc_subject = settings.issuer, str(claims["sub"])[:255]
        audit.record(db.session, audit.Actor(user.id, user.role), "auth.oidc_linked", "user", user.id)
    provider_mfa = provider_second_factor(claims)
    if not provider_mfa and (mfa.enrolled(user) or current_app.config["HELPLINE"].security.require_mfa):
        auth.begin_second_step(user, "oidc", next_url)
        db.session.commit()
        return redirect(url_for("auth.verify" if mfa.enrolled(user) else "auth.enrol"))
    response = auth.finish_login(user, "oidc", next_url, provider_mfa=provider_mfa)
    db.session.commit()
    return response


def init_app(app: Flask) -> None:
    """Register the provider with authlib when one is configured; the routes exist either way (404
    while none is), so that the role matrix is the same for every deployment."""
    settings = app.config["HELPLINE"].oidc
    app.register_blueprint(bp)
    if not settings.enabled:
        return
    from authlib.integrations.flask_client import OAuth

    registry = OAuth(app)
    registry.register(
        CLIENT,
        client_id=settings.client_id,
        client_secret=settings.client_secret,
        server_metadata_url=settings.issuer.rstrip("/") + "/.well-known/openid-configuration",
        client_kwargs={"scope": settings.scopes, "code_challenge_method": "S256", "timeout": settings.timeout_s,
                       "token_endpoint_auth_method": "client_secret_basic"},
    )
    app.extensions["helpline.oidc"] = registry
