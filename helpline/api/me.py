"""`/api/me`: who is logged in and their presence; a handler sets their status and gets a softphone token."""

from __future__ import annotations

from flask import Response, current_app, jsonify
from flask_login import current_user
from sqlalchemy import select
from .. import routing, softphone
from ..auth import roles_required
from ..db import db
from ..models import Handler, utcnow
from ..errors import error
from . import BadRequest, Routes, body
from .openapi import documented
from .schemas import Me, OfferView, Presence, StatusChange, VoiceToken

routes = Routes()


def current_handler() -> Handler:
    """The logged-in handler's routing record; a 403 BadRequest for anyone without one."""
    handler = db.session.scalar(select(Handler).where(Handler.user_id == current_user.id))
    if handler is None:
        raise BadRequest("forbidden", "you are not set up as a call handler", status=403)
    return handler


@routes.errorhandler(routing.RoutingError)
def _routing_error(exc: routing.RoutingError) -> Response:
    db.session.rollback()
    return error(exc.status, exc.message, exc.detail)


@routes.get("/me")
@documented(responses={200: Me}, roles=("handler", "supervisor", "clinician", "admin"))
@roles_required("handler", "supervisor", "clinician", "admin")
def me() -> Response:
    """Who is logged in; for a handler, their presence, skills, outstanding offer and current call."""
    now = utcnow()
    view = Me(id=current_user.id, username=current_user.username, name=current_user.display_name, role=current_user.role)
    handler = db.session.scalar(select(Handler).where(Handler.user_id == current_user.id))
    if handler is not None:
        settings = current_app.config["HELPLINE"].routing
        view.handler_id = handler.id
        view.presence = handler.presence
        view.since = handler.presence_since.isoformat()
        view.skills = list(handler.skills)
        view.languages = list(handler.languages)
        offer = routing.current_offer(db.session, handler, settings, now)
        view.offer = OfferView.model_validate(offer) if offer is not None else None
        view.call_id = handler.current_call_id if handler.presence in ("on_call", "wrap_up") else None
        view.softphone = None if handler.phone_number_enc else softphone.handler_identity(handler.id)
    return jsonify(view.model_dump(mode="json"))


@routes.post("/me/status")
@documented(body=StatusChange, responses={200: Presence, 409: "On a call or in wrap-up"}, roles=("handler",))
@roles_required("handler")
def set_status() -> Response:
    """Set your own presence: available (to take calls), break or offline."""
    change = body(StatusChange)
    handler = current_handler()
    routing.change_status(db.session, handler, change.status, utcnow())
    db.session.commit()
    return jsonify(Presence(presence=handler.presence, since=handler.presence_since.isoformat()).model_dump())


@routes.get("/voice/token")
@documented(responses={200: VoiceToken}, roles=("handler", "supervisor"))
@roles_required("handler", "supervisor")
def voice_token() -> Response:
    """An access token for your own browser softphone (Twilio's Voice SDK), and where it signals.

    The identity is yours alone (a handler's or a supervisor's); nobody can ask for another's.
    """
    if current_user.role == "handler":
        identity = softphone.handler_identity(current_handler().id)
    else:
        identity = softphone.supervisor_identity(current_user.id)
    try:
        found = softphone.credentials(current_app.config["HELPLINE"], identity)
    except softphone.SoftphoneUnavailable as unavailable:
        view = VoiceToken(mode="unavailable", identity=identity, reason=unavailable.reason)
    else:
        view = VoiceToken(mode="twilio", identity=identity, token=found.token, ttl_s=found.ttl_s,
                          signalling=found.signalling_host,
                          certificate_url=f"https://{found.signalling_host}/" if found.signalling_host else None)
    response = jsonify(view.model_dump(exclude_none=True))
    response.headers["Cache-Control"] = "no-store"
    return response
