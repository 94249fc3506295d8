"""Logging in, the second factor, the account page's changes, CSRF, and the role check every console
route and API call goes through.

A log-in is a username and password (security.authenticate: throttles, pauses, audit), or a sign-in
through the organisation's OpenID Connect provider (oidc.py), then, when the second factor is required
(`security.require_mfa`) or the user has one, and the provider did not do one, a TOTP or recovery code
(mfa.py), with enrolment at the first log-in; only then does a session start (staff_sessions.py), from
an empty cookie session with a new CSRF token. Flask-Login keeps who is logged in, Flask-WTF the CSRF
token (a hidden `csrf_token` field in forms, the `X-CSRFToken` header from the console's own
JavaScript), argon2 the passwords (see users.py).
"""

from __future__ import annotations

import functools
from typing import Callable, TypeVar

from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, redirect, render_template, request, session, url_for
from flask_login import LoginManager, current_user, logout_user
from flask_wtf import FlaskForm
from flask_wtf.csrf import CSRFError, CSRFProtect
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length

from . import audit, mfa, security, staff_sessions
from .db import db
from .errors import error
from .models import User, utcnow
from .staff_sessions import SessionUser
from .users import UserError, password_matches, set_password

bp = Blueprint("auth", __name__)
login_manager = LoginManager()
csrf = CSRFProtect()

#: Where each role lands after logging in.
HOME = {"handler": "console.handler", "supervisor": "console.supervisor", "clinician": "console.clinician", "admin": "console.account"}

F = TypeVar("F", bound=Callable[..., object])


@login_manager.user_loader
def _load_user(user_id: str) -> SessionUser | None:
    user = db.session.get(User, int(user_id)) if user_id.isdigit() else None
    return SessionUser(user) if user is not None and user.active else None


@login_manager.unauthorized_handler
def _unauthorized() -> Response:
    if request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json":
        return error(401, "login_required", "log in first")
    return redirect(url_for("auth.login", next=request.path))


class LoginForm(FlaskForm):
    """The log-in form: username, password, and the hidden csrf_token Flask-WTF adds."""

    username = StringField("Username", validators=[DataRequired(), Length(max=64)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=256)])


def role_gate(roles: tuple[str, ...], forbidden: Callable[[], object]) -> Callable[[F], F]:
    """Allow the view only to logged-in users with one of `roles`: nobody is sent to log in, and
    anyone else gets what `forbidden` returns (the API's JSON 403, or the console's 403 page)."""

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: object, **kwargs: object) -> object:
            if not current_user.is_authenticated:
                return login_manager.unauthorized()
            if current_user.role not in roles:
                return forbidden()
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def roles_required(*roles: str) -> Callable[[F], F]:
    """Allow the view only to logged-in users with one of `roles`: 401 for nobody, 403 for others."""
    return role_gate(roles, lambda: error(403, "forbidden", f"this needs the role {' or '.join(roles)}"))


def login_required_page(view: F) -> F:
    """Any logged-in console user; nobody is sent to log in."""
    return role_gate(("handler", "supervisor", "clinician", "admin"), lambda: error(403, "forbidden", "log in first"))(view)


def home_url() -> str:
    """Where the current user belongs."""
    return url_for(HOME.get(current_user.role, "auth.login"))


#: How long a log-in may wait between the password and the second factor.
PENDING_S = 300
PENDING = "_pending_login"


class CodeForm(FlaskForm):
    """A second-factor code: six digits from the authenticator app, or a recovery code."""

    code = StringField("Code", validators=[DataRequired(), Length(max=32)])


class PasswordChangeForm(FlaskForm):
    """The account page's password change: the current password, and the new one twice."""

    current_password = PasswordField("Current password", validators=[DataRequired(), Length(max=256)])
    new_password = PasswordField("New password", validators=[DataRequired(), Length(max=256)])
    confirm_password = PasswordField("New password again", validators=[DataRequired(), Length(max=256)])


def _settings() -> Any:
    return current_app.config["HELPLINE"]


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | str:
    """Show the log-in form; on a correct username and password, ask for the second factor (or
    enrolment in one) when it is required or the user has one, else start a session."""
    form = LoginForm()
    message = None
    status = 200
    if form.validate_on_submit():
        # Lockout, throttle and audit live in security.py; the attempt is recorded whatever its outcome.
        outcome = security.authenticate(db.session, form.username.data or "", form.password.data or "")
        if outcome.user is not None:
            user = outcome.user
            if mfa.enrolled(user) or _settings().security.require_mfa:
                begin_second_step(user, "password", _safe_next())
                db.session.commit()
                return redirect(url_for("auth.verify" if mfa.enrolled(user) else "auth.enrol"))
            response = finish_login(user, "password", _safe_next())
            db.session.commit()
            return response
        db.session.commit()
        message, status = outcome.message, outcome.status
    elif request.method == "POST":
        message, status = "Please fill in both fields.", 401
    elif request.args.get("expired") and current_user.is_authenticated:
        # A console's socket was closed as idle, but another tab kept the session in use: go back.
        return redirect(_safe_next() or home_url())
    elif request.args.get("expired"):
        # The console sent the browser here after a 401 or a closed socket: say why, not just "log in".
        minutes = _settings().security.session_idle_minutes
        message = (f"Your session has ended: it was unused for {minutes} minutes, or you logged out elsewhere. "
                   "Please log in again.")
    oidc = _settings().oidc  # the identity provider's button, when one is configured (oidc.py)
    provider = oidc.provider_name if oidc.enabled else None
    return render_template("login.html", form=form, message=message, provider=provider), status  # type: ignore[return-value]


def begin_second_step(user: User, first: str, next_url: str | None) -> None:
    """The first factor has passed (`first`: "password", or "oidc" for a provider that did not do a
    second factor): not logged in yet, the session holds only who passed it, how, and when."""
    session.clear()
    g.pop("csrf_token", None)
    session[PENDING] = {"u": user.id, "at": int(security.now()), "next": next_url, "first": first}


def _first_step() -> str:
    """How the pending log-in's first step was passed ("password" or "oidc")."""
    first = session.get(PENDING, {}).get("first")
    return first if first in ("password", "oidc") else "password"


def finish_login(user: User, method: str, next_url: str | None, **detail: Any) -> Response:
    """Every factor has passed: start a fresh session (a new cookie session and CSRF token, a new
    server-side record), audit the log-in (with `detail`), and mark this browser as one the user logs
    in from."""
    user.failed_logins = 0
    user.locked_until = None
    staff_sessions.start(db.session, user, method)
    audit.record(db.session, audit.Actor(user.id, user.role), "auth.login", "user", user.id,
                 address=security.client_address(), method=method, **detail)
    response = redirect(next_url or url_for(HOME.get(user.role, "auth.login")))
    return security.remember_device(response, user.id)


def _pending_user() -> User | None:
    """Who passed the password step in this browser, within PENDING_S, and may still log in."""
    pending = session.get(PENDING)
    if not isinstance(pending, dict) or not isinstance(pending.get("u"), int) or not isinstance(pending.get("at"), int):
        return None
    if security.now() - pending["at"] > PENDING_S:
        session.pop(PENDING, None)
        return None
    user = db.session.get(User, pending["u"])
    if user is None or not user.active or (user.locked_until is not None and user.locked_until > utcnow()):
        session.pop(PENDING, None)
        return None
    return user


def _second_factor_failed(user: User, cause: str) -> tuple[str, int]:
    """A wrong code counts as a failed log-in of the account (so codes cannot be guessed faster than
    passwords), and is audited. Returns the message and status to show."""
    actor = audit.Actor(user.id, user.role)
    security.count_failure(db.session, user, actor)
    audit.record(db.session, actor, "auth.mfa_failed", "user", user.id, cause=cause, address=security.client_address())
    if user.locked_until is not None and user.locked_until > utcnow():
        session.pop(PENDING, None)
    db.session.commit()
    return "That code is not right, or has been used already. Please try the newest code.", 401


@bp.route("/login/verify", methods=["GET", "POST"])
def verify() -> Response | str:
    """The second step of a log-in: a code from the authenticator app, or a recovery code."""
    user = _pending_user()
    if user is None:
        return redirect(url_for("auth.login"))
    if not mfa.enrolled(user):
        return redirect(url_for("auth.enrol"))
    form = CodeForm()
    message, status = None, 200
    if form.validate_on_submit():
        code = form.code.data or ""
        vault = current_app.extensions["helpline.vault"]
        next_url = session[PENDING].get("next")
        if mfa.verify_totp(db.session, user, code, vault, security.now()):
            response = finish_login(user, f"{_first_step()}+totp", next_url)
            db.session.commit()
            return response
        if mfa.use_recovery_code(db.session, user, code):
            audit.record(db.session, audit.Actor(user.id, user.role), "auth.recovery_code_used", "user", user.id,
                         left=mfa.recovery_codes_left(db.session, user))
            response = finish_login(user, f"{_first_step()}+recovery_code", next_url)
            db.session.commit()
            return response
        message, status = _second_factor_failed(user, "code")
    elif request.method == "POST":
        message, status = "Please type the code.", 400
    return render_template("verify.html", form=form, message=message,  # type: ignore[return-value]
                           has_key=bool(mfa.keys_of(user.id))), status


@bp.route("/login/enrol", methods=["GET", "POST"])
def enrol() -> Response | str:
    """Set up the second factor: at the first log-in (the password has passed, the code is next),
    or from the account page of someone logged in without one."""
    user = db.session.get(User, current_user.id) if current_user.is_authenticated else _pending_user()
    if user is None:
        return redirect(url_for("auth.login"))
    if mfa.enrolled(user):
        return redirect(url_for("console.account") if current_user.is_authenticated else url_for("auth.verify"))
    vault = current_app.extensions["helpline.vault"]
    secret = mfa.pending_secret(db.session, user, vault)
    db.session.commit()
    form = CodeForm()
    message, status = None, 200
    if form.validate_on_submit():
        codes = mfa.confirm(db.session, user, form.code.data or "", vault, security.now())
        if codes is not None:
            audit.record(db.session, audit.Actor(user.id, user.role), "auth.mfa_enrolled", "user", user.id, factor="totp")
            if current_user.is_authenticated:
                db.session.commit()
                return render_template("recovery_codes.html", codes=codes, next_url=url_for("console.account"))
            next_url = session[PENDING].get("next") or url_for(HOME.get(user.role, "auth.login"))
            response = finish_login(user, f"{_first_step()}+totp", next_url)
            db.session.commit()
            # The codes are shown once, on this page, before going on to the console.
            page = render_template("recovery_codes.html", codes=codes, next_url=next_url)
            response.set_data(page)
            response.status_code = 200
            response.headers.pop("Location", None)
            response.mimetype = "text/html"
            return response
        message, status = _second_factor_failed(user, "enrolment_code")
    elif request.method == "POST":
        message, status = "Please type the code your app shows.", 400
    uri = mfa.provisioning_uri(secret, user.username, _settings().service.name)
    return render_template("enrol.html", form=form, message=message, qr=mfa.qr_data_uri(uri),  # type: ignore[return-value]
                           secret=" ".join(secret[i:i + 4] for i in range(0, len(secret), 4))), status


@bp.post("/logout")
def logout() -> Response:
    """End the session: its server-side record too, so that no copy of the cookie works afterwards."""
    if current_user.is_authenticated:
        staff_sessions.logout(db.session)
        db.session.commit()
    logout_user()
    session.clear()
    return redirect(url_for("auth.login"))


def _account_page(password_form: PasswordChangeForm | None = None, message: str | None = None,
                  notice: str | None = None, status: int = 200) -> tuple[str, int]:
    user = db.session.get(User, current_user.id)
    return render_template("account.html", password_form=password_form or PasswordChangeForm(), message=message,
                           notice=notice, enrolled=mfa.enrolled(user),
                           codes_left=mfa.recovery_codes_left(db.session, user) if mfa.enrolled(user) else 0,
                           sessions=staff_sessions.open_sessions(db.session, user.id),
                           security_keys=mfa.keys_of(user.id),
                           require_mfa=_settings().security.require_mfa), status


def account_page() -> tuple[str, int]:
    """The account page (console.account shows it)."""
    return _account_page()


@bp.post("/account/password")
@login_required_page
def change_password() -> Response | tuple[str, int]:
    """Change your own password: the current one first; every other session of yours ends, and this
    one starts afresh."""
    form = PasswordChangeForm()
    if not form.validate_on_submit():
        return _account_page(form, "Please fill in all three password fields.", status=400)
    user = db.session.get(User, current_user.id)
    if not password_matches(user, form.current_password.data or ""):
        actor = audit.Actor(user.id, user.role)
        security.count_failure(db.session, user, actor)
        audit.record(db.session, actor, "auth.password_change_failed", "user", user.id, cause="current_password")
        db.session.commit()
        return _account_page(form, "Your current password is not right.", status=400)
    if form.new_password.data != form.confirm_password.data:
        return _account_page(form, "The two new passwords differ.", status=400)
    try:
        set_password(user, form.new_password.data or "", _settings().service.name)
    except UserError as refused:
        db.session.rollback()
        reason = str(refused).removeprefix("password: ")
        return _account_page(form, f"New password: {reason}.", status=400)
    audit.record(db.session, audit.Actor(user.id, user.role), "auth.password_changed", "user", user.id)
    staff_sessions.revoke_all(db.session, user.id, "password_changed")
    method = "password+totp" if mfa.enrolled(user) else "password"
    staff_sessions.start(db.session, user, method)
    db.session.commit()
    return _account_page(notice="Your password has been changed. Every other session of yours has ended.")


@bp.post("/account/recovery-codes")
@login_required_page
def renew_recovery_codes() -> Response | tuple[str, int]:
    """New recovery codes (the old ones stop working), on a current code from the authenticator app."""
    user = db.session.get(User, current_user.id)
    form = CodeForm()
    if not mfa.enrolled(user):
        return _account_page(message="Set up two-step verification first.", status=400)
    if not form.validate_on_submit() or not mfa.verify_totp(db.session, user, form.code.data or "",
                                                            current_app.extensions["helpline.vault"], security.now()):
        db.session.rollback()
        return _account_page(message="That code is not right, or has been used already.", status=400)
    codes = mfa.new_recovery_codes(db.session, user)
    audit.record(db.session, audit.Actor(user.id, user.role), "auth.recovery_codes_renewed", "user", user.id)
    db.session.commit()
    return render_template("recovery_codes.html", codes=codes, next_url=url_for("console.account")), 200


@bp.post("/account/sessions/end-others")
@login_required_page
def end_other_sessions() -> Response | tuple[str, int]:
    """End every session of yours but this one (a browser left logged in somewhere else)."""
    record = staff_sessions.current_record(db.session, session)
    ended = staff_sessions.revoke_all(db.session, current_user.id, "signed_out_elsewhere", keep=record)
    db.session.commit()
    return _account_page(notice=f"{ended} other session{'s' if ended != 1 else ''} ended.")


def _safe_next() -> str | None:
    """A `next` that stays on this site (never an open redirect)."""
    target = request.args.get("next", "")
    return target if target.startswith("/") and not target.startswith("//") else None


def init_app(app: Flask) -> None:
    """Sessions, CSRF and the log-in routes."""
    settings = app.config["HELPLINE"]
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.public_url.startswith("https://"),
        REMEMBER_COOKIE_HTTPONLY=True,
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session
    )
    login_manager.session_protection = "strong"
    login_manager.init_app(app)
    csrf.init_app(app)
    app.register_blueprint(bp)

    @app.errorhandler(CSRFError)
    def _csrf_failed(exc: CSRFError) -> Response | tuple[str, int]:
        if request.blueprint == "public":
            # A person asking for help, whose form outlived its session: a page that says so and
            # how to reach us, never a line of JSON.
            from .public.pages import service_facts

            return render_template("public/form/session_expired.html", facts=service_facts()), 400
        return error(400, "csrf_failed", exc.description)
