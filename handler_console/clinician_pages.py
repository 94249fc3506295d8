"""The clinician's page: their bookings, and the first-contact records of the callers booked with them."""

from __future__ import annotations

from flask import render_template

from . import bp
from .pages import page_for


@bp.get("/clinician")
@page_for("clinician")
def clinician() -> str:
    """A clinician's own bookings; each opens its first-contact record and its calendar entry."""
    return render_template("clinician.html")
