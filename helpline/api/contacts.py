"""First-contact records and the risk screen, written by the handler during the call.

Who may see what is decided in `helpline.contacts`; these views only apply it.
"""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, jsonify
from flask_login import current_user
from sqlalchemy.exc import IntegrityError

from .. import contacts, risk
from ..auth import roles_required
from ..crypto import Vault
from ..db import db
from ..models import Call, Contact
from ..webhooks import error
from . import BadRequest, body, bp
from .openapi import documented


def vault() -> Vault:
    """The app's vault."""
    return current_app.extensions["helpline.vault"]


def call_or_404(call_id: int) -> Call:
    """The call, or a 404 error."""
    call = db.session.get(Call, call_id)
    if call is None:
        raise BadRequest("not_found", "no such call", 404)
    return call


def contact_json(contact: Contact) -> dict[str, Any]:
    """The whole record with the call's latest risk screen, for those allowed to see it."""
    return {**contacts.record_json(vault(), contact), "risk": risk.latest(db.session, vault(), contact.call_id)}


@bp.get("/calls/<int:call_id>/contact")
@documented(responses={200: "{contact: record or null, earlier_contacts: [{date, disposition, booking}]}"}, roles=("handler",))
@roles_required("handler")
def get_call_contact(call_id: int) -> Response:
    """The handler's own record for the call they are on (or null), and the caller's earlier contacts."""
    call = call_or_404(call_id)
    contact = contacts.contact_for_call(db.session, call.id)
    if not contacts.may_write(db.session, call, contact, current_user.id):
        return error(403, "forbidden", "only the handler who took this call can see its record")
    return jsonify({"contact": contact_json(contact) if contact else None,
                    "earlier_contacts": contacts.earlier_contacts(db.session, call)})


@bp.put("/calls/<int:call_id>/contact")
@documented(body=contacts.ContactUpdate, roles=("handler",), responses={
    200: "{contact, earlier_contacts}: the record as saved", 404: "No such call",
    409: "third_party (the call is about someone else) or booked (cancel the booking first)"})
@roles_required("handler")
def put_call_contact(call_id: int) -> Response:
    """Save some fields of the call's first-contact record (partial, idempotent, last write wins per field)."""
    update = body(contacts.ContactUpdate)
    problems = contacts.unknown_localities(db.session, update)
    if problems:
        raise BadRequest("invalid", problems)
    for attempt in (1, 2):
        call = call_or_404(call_id)
        if not contacts.may_write(db.session, call, contacts.contact_for_call(db.session, call.id), current_user.id):
            return error(403, "forbidden", "only the handler who took this call can write its record")
        try:
            contact = contacts.save(db.session, vault(), call, current_user.id, update)
            db.session.commit()
            break
        except contacts.ContactError as exc:
            db.session.rollback()
            return error(409, exc.code, exc.message)
        except IntegrityError:
            # Two first saves for the same call raced to create the record; the second now finds it.
            db.session.rollback()
            if attempt == 2:
                raise
    return jsonify({"contact": contact_json(contact), "earlier_contacts": contacts.earlier_contacts(db.session, call)})


@bp.get("/contacts/<int:contact_id>")
@documented(responses={200: "{id, call_id, about_self, disposition, fields, booking, risk, ...}",
                       403: "Not the handler who took it nor a clinician treating the caller"},
            roles=("handler", "clinician"))
@roles_required("handler", "supervisor", "clinician", "admin")
def get_contact(contact_id: int) -> Response:
    """A first-contact record, to the handler who took it and the clinicians treating the caller; 403 to others."""
    contact = db.session.get(Contact, contact_id)
    # The same answer whether or not it exists, so that ids cannot be probed.
    if contact is None or not contacts.may_read(db.session, contact, current_user.id, current_user.role):
        return error(403, "forbidden", "you may not see this record")
    return jsonify(contact_json(contact))


@bp.post("/calls/<int:call_id>/risk")
@documented(body=risk.RiskAnswers, roles=("handler", "supervisor"),
            responses={201: "{id, level, escalation, supervisors_alerted, at}", 404: "No such call"})
@roles_required("handler", "supervisor")
def post_risk(call_id: int) -> tuple[Response, int] | Response:
    """Run the risk screen: the level, the steps to take, and (immediate risk) an alert to every supervisor."""
    answers = body(risk.RiskAnswers)
    call = call_or_404(call_id)
    if current_user.role == "handler" and not contacts.may_write(
            db.session, call, contacts.contact_for_call(db.session, call.id), current_user.id):
        return error(403, "forbidden", "only the handler who took this call can screen it")
    screen = risk.record(db.session, vault(), call, current_user.id, current_user.display_name, answers)
    db.session.commit()
    return jsonify({"id": screen.id, "level": screen.level, "escalation": risk.ESCALATION[screen.level],
                    "supervisors_alerted": screen.level == "immediate", "at": screen.at.isoformat()}), 201
