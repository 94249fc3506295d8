"""First-contact records and the risk screen, written by the handler during the call.

Who may see what is decided in `helpline.contacts` (and, for supervisors, a recorded reason: see
helpline/permissions.py); these views only apply it.
"""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, jsonify, request
from flask_login import current_user
from sqlalchemy.exc import IntegrityError

from .. import audit, contacts, episodes, permissions, risk
from ..auth import roles_required
from ..crypto import Vault
from ..db import db
from ..models import Call, Contact
from ..errors import error
from . import CONTROL_CHARACTERS, BadRequest, Routes, body
from .openapi import documented, text

routes = Routes()


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
    """The whole record with the call's latest risk screen, for those allowed to see it. The caller's
    declared conflicts (people and places to avoid) go only to the handler who recorded them."""
    record = contacts.record_json(vault(), contact, declared_conflicts=current_user.role == "handler")
    # Localities in words (NHS West Yorkshire ICB), beside their codes.
    codes = {name: record["fields"].get(name) for name in ("home_locality", "work_locality")}
    names = episodes.locality_names(db.session, {code for code in codes.values() if isinstance(code, str)})
    record["display"].update({name: names[code] for name, code in codes.items() if code in names})
    return {**record, "risk": risk.latest(db.session, vault(), contact.call_id)}


def web_request_details(call: Any) -> dict[str, Any] | None:
    """What a request from the public website said (its reference, how and when to contact them, their
    words), for the handler who holds the call; None for a phone call."""
    from ..public.referrals import request_details

    return request_details(call)


@routes.get("/calls/<int:call_id>/contact")
@documented(responses={200: "{contact: record or null, earlier_contacts: [{date, disposition, booking}], ivr: {answers, need, "
                            "flags}, suggested: the record's fields as the phone menu learnt them (before the first save)}"},
            roles=("handler",))
@roles_required("handler")
def get_call_contact(call_id: int) -> Response:
    """The handler's own record for the call they are on (or null), and the caller's earlier contacts."""
    call = call_or_404(call_id)
    contact = contacts.contact_for_call(db.session, call.id)
    if not contacts.may_write(db.session, call, contact, current_user.id):
        return error(403, "forbidden", "only the handler who took this call can see its record")
    view = {"contact": contact_json(contact) if contact else None, "earlier_contacts": contacts.earlier_contacts(db.session, call),
            "ivr": {"answers": dict(call.answers or {}), "need": call.need, "flags": list(call.flags or [])},
            "suggested": contacts.suggestions(vault(), call) if contact is None else {},
            "web_request": web_request_details(call)}
    if contact is not None:
        audit.record(db.session, current_user, "contact.read", "contact", contact.id)
        db.session.commit()
    return jsonify(view)


@routes.put("/calls/<int:call_id>/contact")
@documented(body=contacts.ContactUpdate, roles=("handler",), responses={
    200: "{contact, earlier_contacts}: the record as saved", 404: "No such call",
    400: "invalid [{field, problem}]: a value the document does not allow",
    422: "invalid [{field, problem}]: a phone number, email or registration number that is not one, an unknown "
         "locality or conflict, texts with no mobile number, a safe time that ends before it starts",
    409: "third_party (the call is about someone else) or booked (cancel the booking first)"})
@roles_required("handler")
def put_call_contact(call_id: int) -> Response:
    """Save some fields of the call's first-contact record (partial, idempotent, last write wins per field)."""
    update = body(contacts.ContactUpdate)
    problems = contacts.unknown_localities(db.session, update) + contacts.unknown_avoided(db.session, update)
    if problems:
        raise BadRequest("invalid", problems, status=422)
    for attempt in (1, 2):
        call = call_or_404(call_id)
        if not contacts.may_write(db.session, call, contacts.contact_for_call(db.session, call.id), current_user.id):
            return error(403, "forbidden", "only the handler who took this call can write its record")
        try:
            contact = contacts.save(db.session, vault(), call, current_user.id, update)
            db.session.flush()  # the record's id, for a first save
            # Which fields changed, never their values: the audit log holds nothing personal.
            audit.record(db.session, current_user, "contact.update", "contact", contact.id,
                         fields=sorted(update.model_dump(exclude_unset=True)))
            db.session.commit()
            break
        except contacts.ContactError as exc:
            db.session.rollback()
            return error(409, exc.code, exc.message)
        except contacts.FieldProblems as exc:
            db.session.rollback()
            raise BadRequest("invalid", exc.problems, status=422) from None
        except IntegrityError:
            # Two first saves for the same call raced to create the record; the second now finds it.
            db.session.rollback()
            if attempt == 2:
                raise
    return jsonify({"contact": contact_json(contact), "earlier_contacts": contacts.earlier_contacts(db.session, call)})


@routes.get("/contacts/<int:contact_id>")
@documented(responses={200: "{id, call_id, about_self, disposition, fields, booking, risk, ...}",
                       403: "forbidden: not the handler who took it nor a clinician treating the caller; "
                            "reason_required: a supervisor who gave no reason"},
            query={"reason": text(f"supervisors: why you need this person's details ({permissions.MIN_REASON} to "
                                  f"{permissions.MAX_REASON} characters; or the {permissions.REASON_HEADER} header); audited",
                                  max_length=permissions.MAX_REASON, pattern=f"^[^\t\n\r{CONTROL_CHARACTERS}]*$")})
@roles_required("handler", "supervisor", "clinician")
def get_contact(contact_id: int) -> Response:
    """A first-contact record: to the handler who took it, the clinicians treating the caller, and a
    supervisor who says why (the reason is audited); 403 to anyone else. Every read is audited."""
    if current_user.role == "supervisor":
        # Asked before looking the record up, so that a supervisor without a reason learns nothing,
        # not even whether the id exists.
        reason = access_reason()
        contact = db.session.get(Contact, contact_id)
        if contact is None:
            return error(403, "forbidden", "you may not see this record")
        audit.record(db.session, current_user, permissions.READ_WITH_REASON, "contact", contact.id, reason=reason)
    else:
        contact = db.session.get(Contact, contact_id)
        # The same answer whether or not it exists, so that ids cannot be probed.
        if contact is None or not contacts.may_read(db.session, contact, current_user.id, current_user.role):
            return error(403, "forbidden", "you may not see this record")
        audit.record(db.session, current_user, "contact.read", "contact", contact.id)
    body = contact_json(contact)
    db.session.commit()
    return jsonify(body)


def access_reason() -> str:
    """The supervisor's reason for seeing a person's details; a 403 reason_required, or 400, if unusable."""
    given = request.args.get("reason") or request.headers.get(permissions.REASON_HEADER) or ""
    reason = " ".join(given.split())
    if len(reason) < permissions.MIN_REASON:
        raise BadRequest("reason_required", f"say why you need to see this person's details, in at least "
                         f"{permissions.MIN_REASON} characters (?reason= or the {permissions.REASON_HEADER} header); "
                         "it is kept in the audit log", status=403)
    if len(reason) > permissions.MAX_REASON or any(ord(char) < 32 or ord(char) == 127 for char in reason):
        raise BadRequest("invalid", [{"field": "reason", "problem": f"at most {permissions.MAX_REASON} characters of plain text"}])
    return reason


@routes.post("/calls/<int:call_id>/risk")
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
