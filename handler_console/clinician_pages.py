"""The clinician's page: their patients and bookings, and the first-contact records of the callers booked with them."""

from __future__ import annotations

from flask import current_app, render_template
from flask_login import current_user
from sqlalchemy import select

from helpline.db import db
from helpline.models import Clinician, Locality

from . import bp
from .pages import page_for

#: A clinician's profession in words.
PROFESSIONS = {"psychiatrist": "Psychiatrist", "psychologist": "Psychologist",
               "addiction_specialist": "Addiction specialist", "therapist": "Therapist"}


@bp.get("/clinician")
@page_for("clinician")
def clinician() -> str:
    """A clinician's own patients and bookings; each opens its first-contact record and its calendar entry.
    The page names the clinician the log-in is linked to, so that nobody works in someone else's diary."""
    row = db.session.scalar(select(Clinician).where(Clinician.user_id == current_user.id))
    locality = db.session.get(Locality, row.locality_code) if row else None
    return render_template("clinician.html", clinician=row,
                           profession=PROFESSIONS.get(row.profession, row.profession) if row else None,
                           based_in=locality.name if locality else None,
                           keep_years=round(current_app.config["HELPLINE"].retention.discharged_record_days / 365.25))
