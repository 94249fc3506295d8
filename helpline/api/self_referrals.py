"""`POST /api/self-referrals`: a self-referral and call-back request from the public pages, as JSON.

No log-in: the CSRF token of the page it came from (its `<meta name="csrf-token">`, sent back as
`X-CSRFToken` with the page's cookie) is what ties it to a visit to the service's own pages.
"""

from __future__ import annotations

from typing import Optional

from flask import Response, jsonify
from pydantic import BaseModel

from ..db import commit_with, db
from ..models import utcnow
from ..public import referrals
from ..security import client_address
from ..webhooks import error
from . import body, bp
from .openapi import documented


class ReferralAnswer(BaseModel):
    """About someone else or not eligible: what to tell them (nothing is kept)."""

    outcome: str
    message: str


class ReferralTaken(BaseModel):
    """The request is in line: the reference to quote (nothing personal)."""

    reference: str
    at_risk: bool = False
    message: Optional[str] = None


@bp.post("/self-referrals")
@documented(body=referrals.Referral, responses={
    200: ReferralAnswer, 201: ReferralTaken, 400: "Not a request we can take (each problem by field)",
    429: "Too many requests from this address; call the line instead"})
def self_referrals() -> Response | tuple[Response, int]:
    """Ask to be called back (or emailed): joins the same line as phone callers, with channel "web"."""
    referral = body(referrals.Referral)
    now = utcnow()
    session = db.session
    try:
        if referral.about == "self" and referral.eligible is not False:
            referrals.validate(referral)
            if referrals.rate_limited(session, client_address(), now):
                session.commit()
                return error(429, "rate_limited", "too many requests from this address in the last hour; "
                                                  "please call the helpline instead")
        outcome = referrals.submit(session, referral, now)
    except referrals.Refused as refused:
        session.rollback()
        return error(400, "invalid", refused.problems)
    if outcome.outcome in ("third_party", "ineligible"):
        session.rollback()  # nothing was written; nothing is kept
        return jsonify(ReferralAnswer(outcome=outcome.outcome, message=outcome.message).model_dump())
    commit_with(session)
    contact = referral.contact
    if contact is not None and contact.email and (contact.contact_by or ("phone" if contact.phone else "email")) == "email" \
            and not referral.website.strip():
        from .. import mail

        mail.send_confirmation(contact.email, outcome.reference)  # only when they chose email
    taken = ReferralTaken(reference=outcome.reference, at_risk=outcome.at_risk,
                          message=referrals.gate_text("emergency", now) if outcome.at_risk else None)
    return jsonify(taken.model_dump(exclude_none=True)), 201
