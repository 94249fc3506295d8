"""Supervisors' routes: the wallboard's figures, actions on the live queue, and call review.

GET  /api/supervisor/wallboard             the `wallboard` event's body, on demand (a page's first paint)
POST /api/calls/<id>/move-up               to the front of the line
POST /api/calls/<id>/offer                 {"handler_id"}: offer it to that handler now
POST /api/handlers/<id>/presence           {"status": "available" | "break" | "offline"}
POST /api/calls/<id>/listen                {"mode": "listen" | "coach" | "barge"}: ring your softphone in, or switch
GET  /api/calls/<id>/listen                your leg on the call now (mode, or none)
DELETE /api/calls/<id>/listen              take your leg out of the call
GET  /api/calls?from=&to=&outcome=&need=&handler=&page=&per_page=
GET  /api/calls/<id>                       one call's timeline
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from flask import Response, current_app, jsonify, request
from flask_login import current_user
from pydantic import BaseModel, ConfigDict, Field

from .. import reports, supervision
from ..auth import roles_required
from ..db import db
from ..models import utcnow
from ..routing import SETTABLE
from . import BadRequest, Routes, body
from .openapi import date, documented, whole_number

routes = Routes()

#: Calls per page of review, by default and at most.
PER_PAGE = 50
MAX_PER_PAGE = 200


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OfferTo(_Body):
    """Which handler to offer the call to."""

    handler_id: int


class SetPresence(_Body):
    """The presence to give a handler."""

    status: Literal[SETTABLE]  # type: ignore[valid-type]


class Listen(_Body):
    """Listen muted, coach the handler (the caller does not hear you), or barge in (both hear you)."""

    mode: Literal[supervision.MODES]  # type: ignore[valid-type]


class Wallboard(BaseModel):
    """Live figures: the line, the handlers by presence, today's service level and risk alerts."""

    at: str
    day: str
    waiting: int
    longest_wait_s: int
    callbacks_due: int
    callbacks_later: int
    handlers: dict[str, int]
    on_calls: list[dict[str, Any]]
    today: dict[str, Any]
    alerts: list[dict[str, Any]]


class Moved(BaseModel):
    """The call's place in line now."""

    call_id: int
    position: int


class Offered(BaseModel):
    """The offer made (the handler's console rings as for any offer)."""

    call_id: int
    handler_id: int
    expires_at: str


class HandlerPresence(BaseModel):
    """A handler's presence and since when."""

    handler_id: int
    presence: str
    since: str


class Listening(BaseModel):
    """Your leg in the call's conference: just rung (`rang`), or the one already there, switched to `mode`."""

    call_id: int
    mode: str
    identity: str
    leg_sid: str
    conference: str
    conference_sid: Optional[str]
    rang: bool


class ListeningState(BaseModel):
    """Your leg on the call now: its mode, or none; `ringing_requested` while Twilio is being asked to ring it."""

    call_id: int
    mode: Optional[str]
    identity: str
    leg_sid: Optional[str]
    ringing_requested: bool
    since: Optional[str]


class Stopped(BaseModel):
    """Your leg has been taken out of the call."""

    call_id: int
    mode: None
    identity: str
    leg_sid: None


class CallList(BaseModel):
    """One page of calls for review, newest first, with the count of each outcome matched."""

    model_config = ConfigDict(populate_by_name=True)

    from_: str = Field(alias="from")
    to: str
    page: int
    per_page: int
    total: int
    counts: dict[str, int]
    calls: list[dict[str, Any]]


class CallTimeline(BaseModel):
    """One call for review: its row, IVR path and answers, events, risk levels and bookings; never the caller."""

    call_id: int
    outcome: str
    path: list[dict[str, Any]]
    events: list[dict[str, Any]]
    bookings: list[dict[str, Any]]
    handler: Optional[dict[str, Any]]


@routes.get("/supervisor/wallboard")
@documented(responses={200: Wallboard}, roles=("supervisor",))
@roles_required("supervisor")
def wallboard() -> Response:
    """The wallboard's figures now (the same body the `wallboard` Socket.IO event carries)."""
    supervision.wallboard_running(current_app._get_current_object())  # type: ignore[attr-defined]
    return jsonify(reports.wallboard(db.session, utcnow(), **reports.wallboard_options(current_app.config["HELPLINE"])))


@routes.post("/calls/<int:call_id>/move-up")
@documented(responses={200: Moved, 404: "Not in the queue", 409: "No longer waiting"}, roles=("supervisor",))
@roles_required("supervisor")
def move_up(call_id: int) -> Response:
    """Move a waiting call to the front of the line; recorded on its timeline and audited."""
    place = supervision.move_to_front(db.session, current_user, call_id, utcnow())
    db.session.commit()
    return jsonify(Moved(call_id=call_id, position=place).model_dump())


@routes.post("/calls/<int:call_id>/offer")
@documented(body=OfferTo, responses={200: Offered, 404: "No such call or handler",
                                     409: "The call is not waiting, or the handler is not available and connected"},
            roles=("supervisor",))
@roles_required("supervisor")
def offer(call_id: int) -> Response:
    """Offer a waiting call to a named handler now, through routing's offer (it times out and can be declined)."""
    change = body(OfferTo)
    made = supervision.offer_to(db.session, current_user, call_id, change.handler_id, utcnow())
    db.session.commit()
    payload = made.payload(utcnow())
    return jsonify(Offered(call_id=call_id, handler_id=made.handler_id, expires_at=payload["expires_at"]).model_dump())


@routes.post("/handlers/<int:handler_id>/presence")
@documented(body=SetPresence, responses={200: HandlerPresence, 404: "No such handler", 409: "On a call or in wrap-up"},
            roles=("supervisor",))
@roles_required("supervisor")
def handler_presence(handler_id: int) -> Response:
    """Set a handler's presence: available, break or offline (not while they are on a call or wrapping up)."""
    change = body(SetPresence)
    handler = supervision.set_presence(db.session, current_user, handler_id, change.status, utcnow())
    db.session.commit()
    return jsonify(HandlerPresence(handler_id=handler.id, presence=handler.presence,
                                   since=handler.presence_since.isoformat()).model_dump())


@routes.post("/calls/<int:call_id>/listen")
@documented(body=Listen, responses={200: Listening, 404: "No such call",
                                    409: "Twilio not configured, the call not connected, your softphone still ringing, "
                                         "or Twilio failed"},
            roles=("supervisor",))
@roles_required("supervisor")
def listen(call_id: int) -> Response:
    """Be on the call from your softphone (client supervisor-<your user id>): listen (muted), coach (only the
    handler hears you) or barge (both hear you). The first time rings your softphone into the call's
    conference; after that the same leg is switched, never rung again."""
    change = body(Listen)
    joined = supervision.supervise(db.session, current_user, call_id, change.mode, utcnow())
    db.session.commit()
    return jsonify(Listening(**joined).model_dump())


@routes.get("/calls/<int:call_id>/listen")
@documented(responses={200: ListeningState, 404: "No such call"}, roles=("supervisor",))
@roles_required("supervisor")
def listening(call_id: int) -> Response:
    """Your leg on the call now (a leg that was never answered, or dropped, is gone from here)."""
    return jsonify(ListeningState(**supervision.state(db.session, current_user, call_id, utcnow())).model_dump())


@routes.delete("/calls/<int:call_id>/listen")
@documented(responses={200: Stopped, 404: "No such call",
                       409: "You are not on the call, your softphone is still being rung, or Twilio failed"},
            roles=("supervisor",))
@roles_required("supervisor")
def stop_listening(call_id: int) -> Response:
    """Take your leg out of the call (the caller and the handler stay connected)."""
    stopped = supervision.stop(db.session, current_user, call_id, utcnow())
    db.session.commit()
    return jsonify(Stopped(**stopped).model_dump())


def _int_arg(name: str, default: int | None, low: int, high: int | None = None) -> int | None:
    text = request.args.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) < low or (high is not None and int(text) > high):
        bounds = f"from {low}" + (f" to {high}" if high is not None else "")
        raise BadRequest("bad_parameter", f"{name}: a whole number {bounds}")
    return int(text)


def period() -> reports.Period:
    """The request's from/to as a Period; a clear 400 when they are not a valid range."""
    try:
        return reports.parse_period(request.args.get("from"), request.args.get("to"), utcnow())
    except reports.RangeError as exc:
        raise BadRequest("bad_range", exc.detail, status=exc.status) from None


@routes.get("/calls")
@documented(responses={200: CallList}, roles=("supervisor",),
            query={"from": date("first day (Europe/London; default today)"), "to": date("last day, inclusive (default from)"),
                   "outcome": "an outcome code, or in_progress", "need": "a need code, or not_given",
                   "handler": whole_number("the id of the handler who answered"), "page": whole_number("1, 2, ..."),
                   "per_page": whole_number("calls per page", maximum=MAX_PER_PAGE)})
@roles_required("supervisor")
def calls() -> Response:
    """Every call in the period for review, newest first, filtered by outcome, need and answering handler."""
    chosen = period()
    page = _int_arg("page", 1, 1)
    per_page = _int_arg("per_page", PER_PAGE, 1, MAX_PER_PAGE)
    handler = _int_arg("handler", None, 1)
    outcome = request.args.get("outcome", "").strip()[:32] or None
    need = request.args.get("need", "").strip()[:32] or None
    result = reports.review_page(db.session, chosen, outcome, need, handler, page or 1, per_page or PER_PAGE)
    return jsonify(result)


@routes.get("/calls/<int:call_id>")
@documented(responses={200: CallTimeline, 404: "No such call"}, roles=("supervisor",))
@roles_required("supervisor")
def call_timeline(call_id: int) -> Response:
    """One call's timeline: IVR steps and keys with times, waits, offers and who missed them, who answered,
    the outcome and any booking. Never the caller's number or name."""
    story = supervision.timeline(db.session, call_id)
    if story is None:
        raise BadRequest("not_found", "no such call", status=404)
    return jsonify(story)
