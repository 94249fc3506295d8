"""The console's pages. Each is a shell: its live data comes from the JSON API and Socket.IO."""

from __future__ import annotations

from flask import redirect, render_template, url_for
from flask_login import current_user, login_required
from werkzeug.wrappers import Response

from . import bp


@bp.get("/")
def index() -> Response:
    """Send people to their own page, or to log in."""
    if not current_user.is_authenticated:
        return redirect(url_for("auth.login"))
    from helpline.auth import home_url

    return redirect(home_url())


@bp.get("/account")
@login_required
def account() -> str:
    """Who is logged in, and with which role."""
    return render_template("account.html")
