"""The supervisor's other pages: the full-screen wallboard, call review and reports.

Like every console page, each is a shell; its data comes from the JSON API and Socket.IO.
"""

from __future__ import annotations

from flask import render_template

from helpline.routing import NEED_CLASSES

from . import bp
from .pages import page_for

#: Outcomes a call can end with, for the review filter (IVR outcomes, then the queue's).
CALL_OUTCOMES = (
    ("answered", "Answered"),
    ("abandoned", "Hung up before being answered"),
    ("callback_requested", "Asked for a callback"),
    ("out_of_hours", "Out of hours"),
    ("third_party", "About someone else"),
    ("ineligible", "Not eligible"),
    ("in_progress", "Still in progress"),
)


@bp.get("/supervisor/wallboard")
@page_for("supervisor")
def wallboard() -> str:
    """The wallboard: a few huge figures, readable across a room, live over Socket.IO."""
    return render_template("wallboard.html", display=False)


@bp.get("/display")
def display() -> str:
    """The wallboard for a display-only wall screen: a shell open to all, like the log-in page. Its
    figures come from GET /api/display/wallboard with the screen's token (helpline/display.py), and
    there is no log-in to time out."""
    return render_template("wallboard.html", display=True)


@bp.get("/supervisor/review")
@page_for("supervisor")
def review() -> str:
    """Call review: every call with filters, and each call's timeline."""
    needs = [need for need in NEED_CLASSES if need is not None]
    return render_template("review.html", outcomes=CALL_OUTCOMES, needs=needs)


@bp.get("/supervisor/reports")
@page_for("supervisor")
def reports() -> str:
    """Reports over any period: charts drawn in the page, and the CSV download."""
    return render_template("reports.html")
