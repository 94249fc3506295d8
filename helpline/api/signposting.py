"""Partner services and signposting: the directory the handler searches, and sending the caller the
services they chose, by text, only with their consent and in words that do not name the helpline
unless they allowed it."""

from __future__ import annotations

import json
import logging
from typing import Annotated, Literal, Optional

from flask import Response, current_app, jsonify, request
from flask_login import current_user
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from .. import audit, contacts, jobs, mail, partners
from ..auth import roles_required
from ..db import append, db
from ..errors import error
from ..models import CallEvent, utcnow
from ..twilio_rest import TwilioUnavailable, gateway
from . import BadRequest, Routes, body
from .contacts import call_or_404, vault
from .openapi import documented, one_of

routes = Routes()

log = logging.getLogger(__name__)


class Signpost(BaseModel):
    """POST /api/calls/<id>/signposts."""

    model_config = ConfigDict(extra="forbid")

    services: Annotated[list[Annotated[str, Field(min_length=1, max_length=40)]], Field(min_length=1, max_length=6)]
    #: The caller agreed, on this call, to be sent these details.
    consent: StrictBool
    #: By text to their mobile (within their safe hours), or by email to the address on their record.
    channel: Literal["text", "email"] = "text"
    #: The caller allowed the text to say where it comes from.
    name_the_service: StrictBool = False


@routes.get("/partner-services")
@documented(responses={200: "{services: [{code, name, phone, web, hours, helps_with, for, about}], topics: {code: words}}"},
            roles=("handler", "supervisor", "clinician"),
            query={"q": "words that must all appear in the name, description or topics",
                   "topic": one_of("one of the topics", partners.TOPICS), "for": one_of("whom it serves", ("doctors", "dentists"))})
@roles_required("handler", "supervisor", "clinician")
def partner_services() -> Response:
    """The partner services callers may be signposted to, searched by words, topic and audience."""
    words = (request.args.get("q") or "")[:100]
    topic = request.args.get("topic") or None
    audience = request.args.get("for") or None
    problems = []
    if topic and topic not in partners.TOPICS:
        problems.append({"field": "topic", "problem": f"one of {', '.join(partners.TOPICS)}"})
    if audience and audience not in ("doctors", "dentists"):
        problems.append({"field": "for", "problem": "doctors or dentists"})
    if problems:
        raise BadRequest("invalid", problems)
    found = partners.search(words, topic, audience)
    return jsonify({"services": [service.json() for service in found], "topics": partners.TOPICS})


@routes.post("/calls/<int:call_id>/signposts")
@documented(body=Signpost, roles=("handler",), responses={
    201: "{result: sent|failed, channel, services: [codes]}: what was sent (recorded on the caller's record)",
    422: "invalid: unknown services, no consent, no mobile number to text or no email address to write to",
    409: "not_about_self (no record for a self-referral yet) or outside_safe_hours (texts, the caller's safe hours)"})
@roles_required("handler")
def send_signposts(call_id: int) -> tuple[Response, int] | Response:
    """Text or email the caller the partner services they chose, with their consent, in discreet words."""
    request_body = body(Signpost)
    call = call_or_404(call_id)
    contact = contacts.contact_for_call(db.session, call.id)
    if not contacts.may_write(db.session, call, contact, current_user.id):
        return error(403, "forbidden", "only the handler who took this call can signpost for it")
    known = partners.by_code()
    problems = [{"field": f"services.{index}", "problem": f"no partner service {code!r}: choose from the directory"}
                for index, code in enumerate(request_body.services) if code not in known]
    by_email = request_body.channel == "email"
    if not request_body.consent:
        problems.append({"field": "consent", "problem": f"ask the caller whether we may {'email' if by_email else 'text'} "
                                                        "them these details first"})
    if contact is None or contact.about_self is not True:
        if not problems:
            return error(409, "not_about_self", "confirm that the call is about the caller's own health first")
    fields = contacts.details(vault(), contact) if contact else {}
    number = next((fields[name] for name in ("phone", "phone_alt") if contacts.is_textable(fields.get(name))), None)
    address = fields.get("email")
    if by_email and not address:
        problems.append({"field": "email", "problem": "emails need an address: enter one under Email first"})
    if not by_email and number is None:
        problems.append({"field": "phone", "problem": "texts need a mobile number: enter one under Phone first"})
    if problems:
        raise BadRequest("invalid", problems, status=422)
    now = utcnow()
    # Safe hours are for calls and texts, which arrive with a sound; an email waits to be opened.
    if not by_email and jobs.next_safe(fields, now) > now:
        return error(409, "outside_safe_hours", f"the caller said texts are safe from {fields.get('safe_from') or '00:00'} "
                                                f"to {fields.get('safe_until') or '24:00'}: read the details out instead")
    chosen = [known[code] for code in dict.fromkeys(request_body.services)]
    service_name: Optional[str] = current_app.config["HELPLINE"].service.name if request_body.name_the_service else None
    words = partners.signpost_text(chosen, service_name)
    try:
        if by_email:
            # The subject says nothing of who wrote or why: it may be read over a shoulder.
            mail.send(address, "The details you asked for", words + "\n\nIf you need help urgently, call 999, "
                                                                    "or Samaritans free on 116 123 at any hour.\n")
        else:
            gateway().send_sms(number, words)
        result = "sent"
    except (TwilioUnavailable, mail.MailUnavailable) as exc:
        log.warning("signpost %s for call %s not sent: %s", request_body.channel, call.id, exc)
        result = "failed"
    sent = {"services": [service.code for service in chosen], "channel": request_body.channel, "at": now.isoformat(),
            "result": result}
    contact = contacts.contact_for_call(db.session, call.id, lock=True)
    fields = contacts.details(vault(), contact)
    fields["signposts"] = [*fields.get("signposts", []), sent]
    contact.details_enc = vault().encrypt(json.dumps(fields, sort_keys=True))
    contact.updated_at = now
    # The timeline says that a signpost went out, never to whom or which.
    append(db.session, CallEvent, call_id=call.id, kind="signpost", detail={"count": len(chosen), "result": result})
    audit.record(db.session, current_user, "contact.signpost", "contact", contact.id, fields=["signposts"])
    db.session.commit()
    return jsonify({"result": result, "channel": request_body.channel, "services": sent["services"]}), 201
