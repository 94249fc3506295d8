"""The console's pages. Each is a shell: its live data comes from the JSON API and Socket.IO."""

from __future__ import annotations

from typing import Callable, TypeVar

from flask import current_app, redirect, render_template, url_for
from flask_login import current_user, login_required
from werkzeug.wrappers import Response

from . import bp

F = TypeVar("F", bound=Callable[..., object])

#: The outcomes a handler records at wrap-up, in the order they are offered.
OUTCOMES = (
    ("booked", "Assessment booked"),
    ("advice_given", "Advice given"),
    ("signposted", "Signposted elsewhere"),
    ("callback_arranged", "Callback arranged"),
    ("third_party", "About someone else"),
    ("not_eligible", "Not eligible"),
    ("caller_hung_up", "Caller hung up"),
)


def page_for(*roles: str) -> Callable[[F], F]:
    """Serve the page to logged-in users with one of `roles`; send others to log in, or a 403 page.

    Unlike `auth.roles_required`, which answers the API in JSON, a person who opens the wrong page
    in a browser is shown a page with a way back to their own.
    """
    from helpline.auth import home_url, role_gate

    return role_gate(roles, lambda: (render_template("forbidden.html", home=home_url()), 403))


@bp.get("/staff")
def index() -> Response:
    """Send staff to their own page, or to log in. (`/` is the public home page.)"""
    if not current_user.is_authenticated:
        return redirect(url_for("auth.login"))
    from helpline.auth import home_url

    return redirect(home_url())


@bp.get("/account")
@login_required
def account() -> tuple[str, int]:
    """Who is logged in, with which role; their password, second factor and sessions."""
    from helpline.auth import account_page

    return account_page()


@bp.get("/console")
@page_for("handler")
def handler() -> str:
    """The call handler's console: presence, the live queue, offers, the call in hand and wrap-up."""
    routing = current_app.config["HELPLINE"].routing
    return render_template(
        "handler.html",
        offer_timeout_s=routing.offer_timeout_s,
        wrap_up_s=routing.wrap_up_s,
        # The console keeps an on-duty handler's session alive (console.js); it needs the server's limit.
        idle_s=current_app.config["HELPLINE"].security.session_idle_minutes * 60,
        outcomes=OUTCOMES,
    )


@bp.get("/supervisor")
@page_for("supervisor")
def supervisor() -> str:
    """The supervisor's live, read-only view of the queue and the handlers."""
    return render_template("supervisor.html")
