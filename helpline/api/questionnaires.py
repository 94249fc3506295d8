"""Scored questionnaires (PHQ-9, GAD-7, AUDIT-C): run by the handler during the call, or by the
clinician treating the caller. Results go to the clinician the record is booked with, and to the
handler who recorded them while the call is theirs; nobody else. Every read and write is audited.
"""

from __future__ import annotations

from flask import Response, jsonify
from flask_login import current_user
from sqlalchemy import select

from .. import audit, contacts, questionnaires
from ..auth import roles_required
from ..db import db
from ..models import Call, Handler, Questionnaire
from . import BadRequest, Routes, body
from .clinician import own_patient_or_403
from .contacts import call_or_404, vault
from .openapi import documented

routes = Routes()

RESULT = "{id, kind, name, at, recorded_by_role, score, max_score, band, band_label, answers, risk_raised}"


def own_call_or_403(call_id: int) -> Call:
    """The call, if the handler logged in is on it or wrapping it up; the same 403 otherwise."""
    handler = db.session.scalar(select(Handler).where(Handler.user_id == current_user.id))
    if handler is None or handler.current_call_id != call_id:
        raise BadRequest("forbidden", "only the handler on this call can run or see its questionnaires", 403)
    return call_or_404(call_id)


def recorded(call: Call, contact_id: int | None, submitted: questionnaires.QuestionnaireAnswers) -> tuple[Response, int]:
    """Score, keep and audit the questionnaire: 201 with its result, or 400 naming each bad answer."""
    try:
        row, _ = questionnaires.record(db.session, vault(), call, contact_id, current_user.id, current_user.display_name,
                                       current_user.role, submitted)
    except questionnaires.AnswerProblems as exc:
        db.session.rollback()
        raise BadRequest("invalid", exc.problems) from None
    audit.record(db.session, current_user, "questionnaire.record", "questionnaire", row.id, kind=row.kind)
    db.session.commit()
    return jsonify(questionnaires.as_json(row, vault())), 201


@routes.get("/questionnaires")
@documented(roles=("handler", "clinician"),
            responses={200: "{questionnaires: [{code, name, about, preamble, max_score, items: [{name, text, options: "
                            "[{value, label}]}], bands: [{low, high, code, label}]}]}"})
@roles_required("handler", "clinician")
def questionnaire_definitions() -> Response:
    """The questionnaires that may be run, with their items, answers and severity bands."""
    return jsonify({"questionnaires": [definition.json() for definition in questionnaires.DEFINITIONS.values()]})


@routes.post("/calls/<int:call_id>/questionnaires")
@documented(body=questionnaires.QuestionnaireAnswers, roles=("handler",), responses={
    201: RESULT + "; risk_raised: PHQ-9 item 9 above 0, supervisors alerted: run the risk screen now",
    400: "invalid [{field, problem}]: a missing item, an unknown one, or an answer out of range; nothing is kept"})
@roles_required("handler")
def post_call_questionnaire(call_id: int) -> tuple[Response, int]:
    """Run a questionnaire with the caller on this call."""
    call = own_call_or_403(call_id)
    submitted = body(questionnaires.QuestionnaireAnswers)
    contact = contacts.contact_for_call(db.session, call.id)
    return recorded(call, contact.id if contact else None, submitted)


@routes.get("/calls/<int:call_id>/questionnaires")
@documented(roles=("handler",), responses={200: "{questionnaires: [" + RESULT + "]}: those you recorded on this call"})
@roles_required("handler")
def get_call_questionnaires(call_id: int) -> Response:
    """The questionnaires you ran on the call you are on (or wrapping up)."""
    call = own_call_or_403(call_id)
    found = questionnaires.for_call(db.session, vault(), call.id, recorded_by_id=current_user.id)
    for result in found:
        audit.record(db.session, current_user, "questionnaire.read", "questionnaire", result["id"])
    if found:
        db.session.commit()
    return jsonify({"questionnaires": found})


@routes.post("/contacts/<int:contact_id>/questionnaires")
@documented(body=questionnaires.QuestionnaireAnswers, roles=("clinician",), responses={
    201: RESULT, 400: "invalid [{field, problem}]: a missing item, an unknown one, or an answer out of range"})
@roles_required("clinician")
def post_contact_questionnaire(contact_id: int) -> tuple[Response, int]:
    """Run a questionnaire with a patient booked with you."""
    contact = own_patient_or_403(contact_id)
    submitted = body(questionnaires.QuestionnaireAnswers)
    return recorded(contact.call, contact.id, submitted)


@routes.get("/contacts/<int:contact_id>/questionnaires")
@documented(roles=("clinician",), responses={200: "{questionnaires: [" + RESULT + "]}: the record's, by anyone"})
@roles_required("clinician")
def get_contact_questionnaires(contact_id: int) -> Response:
    """Every questionnaire on a patient's record (the handler's during the call, and yours)."""
    contact = own_patient_or_403(contact_id)
    rows = db.session.scalars(select(Questionnaire).where(
        (Questionnaire.contact_id == contact.id) | (Questionnaire.call_id == contact.call_id)).order_by(Questionnaire.id))
    found = [questionnaires.as_json(row, vault()) for row in rows]
    audit.record(db.session, current_user, "questionnaire.read", "contact", contact.id, count=len(found))
    db.session.commit()
    return jsonify({"questionnaires": found})
