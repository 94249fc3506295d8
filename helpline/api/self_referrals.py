"""`POST /api/self-referrals`: a self-referral and call-back request from the public pages, as JSON.

No log-in: the CSRF token of the page it came from (its `<meta name="csrf-token">`, sent back as
`X-CSRFToken` with the page's cookie) is what ties it to a visit to the service's own pages.
"""

from __future__ import annotations

from typing import Annotated, Optional

from flask import Response, jsonify
from flask_login import current_user
from pydantic import BaseModel, ConfigDict, Field

from .. import audit
from ..auth import roles_required
from ..db import append, db
from ..models import Call, CallEvent, utcnow
from ..public import referrals
from ..security import client_address
from ..errors import error
from . import Routes, body
from .openapi import documented

routes = Routes()


class ReferralAnswer(BaseModel):
    """About someone else or not eligible: what to tell them (nothing is kept)."""

    outcome: str
    message: str


class ReferralTaken(BaseModel):
    """The request is in line: the reference to quote (nothing personal)."""

    reference: str
    at_risk: bool = False
    message: Optional[str] = None


@routes.post("/self-referrals")
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
    session.commit()
    contact = referral.contact
    if contact is not None and contact.email and (contact.contact_by or ("phone" if contact.phone else "email")) == "email" \
            and not referral.website.strip():
        from .. import mail

        mail.send_confirmation(contact.email, outcome.reference)  # only when they chose email
    taken = ReferralTaken(reference=outcome.reference, at_risk=outcome.at_risk,
                          message=referrals.gate_text("emergency", now) if outcome.at_risk else None)
    return jsonify(taken.model_dump(exclude_none=True)), 201


class EmailReply(BaseModel):
    """POST /api/calls/<id>/email: the handler's reply to a web request that asked for email."""

    model_config = ConfigDict(extra="forbid")

    body: Annotated[str, Field(min_length=1, max_length=5000)]


class EmailSent(BaseModel):
    """The reply went to the mail server."""

    sent: bool
    message_id: str


#: Said after every reply, so that the person always has the emergency advice.
REPLY_FOOTER = ("\n\n--\nPlease do not reply to this email with anything urgent. If you need help now, call 999, "
                "or Samaritans free on 116 123 at any hour.\nReference {reference}")


@routes.post("/calls/<int:call_id>/email")
@documented(body=EmailReply, responses={200: EmailSent, 403: "Not your call", 404: "No such call",
                                        409: "Not a web request with an email address", 502: "The mail server did not take it"},
            roles=("handler",))
@roles_required("handler")
def email_reply(call_id: int) -> Response | tuple[Response, int]:
    """Answer a web request by email, from the call you hold (on it or wrapping up)."""
    from .. import mail
    from .me import current_handler

    handler = current_handler()
    call = db.session.get(Call, call_id)
    if call is None:
        return error(404, "not_found", "no such call")
    if handler.current_call_id != call_id or handler.presence not in ("on_call", "wrap_up"):
        return error(403, "forbidden", "you can only reply to the request you are working on")
    details = referrals.request_details(call)
    if not details or not details.get("email"):
        return error(409, "no_email", "this request did not give an email address to reply to")
    reply = body(EmailReply)
    try:
        message_id = mail.send(details["email"], f"Your request {details.get('reference', '')}".strip(),
                               reply.body.strip() + REPLY_FOOTER.format(reference=details.get("reference", "")))
    except mail.MailUnavailable as exc:
        return error(502, "mail_failed", str(exc))
    append(db.session, CallEvent, call_id=call_id, kind="email_sent", detail={"handler_id": handler.id})
    audit.record(db.session, current_user, "call.email_sent", "call", call_id)
    db.session.commit()
    return jsonify(EmailSent(sent=True, message_id=message_id).model_dump())
