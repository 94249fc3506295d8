"""Logging in, sessions, CSRF, and the role check every console route and API call goes through.

Flask-Login keeps the session, Flask-WTF the CSRF token (a hidden `csrf_token` field in forms, the
`X-CSRFToken` header from the console's own JavaScript), argon2 the passwords (see users.py).
"""

from __future__ import annotations

import functools
from typing import Callable, TypeVar

from flask import Blueprint, Flask, Response, current_app, redirect, render_template, request, url_for
from flask_login import LoginManager, current_user, login_user, logout_user
from flask_wtf import FlaskForm
from flask_wtf.csrf import CSRFError, CSRFProtect
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length

from . import security
from .db import db
from .models import User
from .webhooks import error

bp = Blueprint("auth", __name__)
login_manager = LoginManager()
csrf = CSRFProtect()

#: Where each role lands after logging in.
HOME = {"handler": "console.handler", "supervisor": "console.supervisor", "clinician": "console.clinician", "admin": "console.account"}

F = TypeVar("F", bound=Callable[..., object])


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


def home_url() -> str:
    """Where the current user belongs."""
    return url_for(HOME.get(current_user.role, "auth.login"))


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | str:
    """Show the log-in form; on a correct username and password, start a session."""
    form = LoginForm()
    message = None
    status = 200
    if form.validate_on_submit():
        # Lockout, throttle and audit live in security.py; the attempt is recorded whatever its outcome.
        outcome = security.authenticate(db.session, form.username.data or "", form.password.data or "")
        db.session.commit()
        if outcome.user is not None:
            login_user(SessionUser(outcome.user))
            security.session_started()
            return redirect(_safe_next() or home_url())
        message, status = outcome.message, outcome.status
    elif request.method == "POST":
        message, status = "Please fill in both fields.", 401
    elif request.args.get("expired") and current_user.is_authenticated:
        # A console's socket was closed as idle, but another tab kept the session in use: go back.
        return redirect(_safe_next() or home_url())
    elif request.args.get("expired"):
        # The console sent the browser here after a 401 or a closed socket: say why, not just "log in".
        minutes = current_app.config["HELPLINE"].security.session_idle_minutes
        message = (f"Your session has ended: it was unused for {minutes} minutes, or you logged out elsewhere. "
                   "Please log in again.")
    return render_template("login.html", form=form, message=message), status  # type: ignore[return-value]


@bp.post("/logout")
def logout() -> Response:
    """End the session."""
    if current_user.is_authenticated:
        security.record_logout(db.session, current_user)
        db.session.commit()
    logout_user()
    return redirect(url_for("auth.login"))


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
    def _csrf_failed(exc: CSRFError) -> Response:
        return error(400, "csrf_failed", exc.description)
