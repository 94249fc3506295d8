"""`/api/calls/<id>/...`: what a handler does with a call: accept, decline, hold, end, ask a supervisor,
wrap up, and see the IVR."""

from __future__ import annotations

from flask import Response, jsonify
from sqlalchemy import select

from .. import connect, lifecycle, routing
from ..auth import roles_required
from ..db import db
from flask_login import current_user

from ..models import Call, QueueEntry, utcnow
from . import BadRequest, Routes, body
from .me import current_handler
from .openapi import documented
from .schemas import (Accepted, Consult, ConsultStarted, Done, Hold, IvrView, Presence, SupervisorOnDuty, Supervisors,
                      WrapUp)

routes = Routes()


def ivr_view(call: Call) -> IvrView:
    """What the caller told the IVR (never their number)."""
    waited = None
    if call.queued_at is not None and call.dequeued_at is not None:
        waited = int((call.dequeued_at - call.queued_at).total_seconds())
    return IvrView(call_id=call.id, need=call.need, flags=list(call.flags), answers=dict(call.answers),
                   path=list(call.ivr_path), waited_s=waited, number_status=call.caller_number_status)


@routes.post("/calls/<int:call_id>/accept")
@documented(responses={200: Accepted, 409: "Taken by someone else, not free, or Twilio could not connect (connect_failed)"},
            roles=("handler",))
@roles_required("handler")
def accept(call_id: int) -> Response:
    """Take a call that is offered to you or waiting: the caller is put through to your softphone or phone."""
    handler = current_handler()
    # Held here for the whole request: the session's identity map keeps objects only while they are
    # referenced, and the accept reads the call again.
    call = db.session.get(Call, call_id)
    if call is None:
        raise BadRequest("not_found", "no such call", status=404)
    entry: QueueEntry = connect.accept(handler, call_id)
    view = Accepted(call_id=call_id, kind=entry.kind, conference=connect.conference_name(call_id), ivr=ivr_view(call))  # type: ignore[arg-type]
    return jsonify(view.model_dump(mode="json"))


@routes.post("/calls/<int:call_id>/decline")
@documented(responses={200: Presence, 409: "The call is not offered to you"}, roles=("handler",))
@roles_required("handler")
def decline(call_id: int) -> Response:
    """Turn down the call offered to you: it keeps its place and goes to someone else."""
    handler = current_handler()
    lifecycle.decline(db.session, handler, call_id, utcnow())
    db.session.commit()
    return jsonify(Presence(presence=handler.presence, since=handler.presence_since.isoformat()).model_dump())


@routes.post("/calls/<int:call_id>/hold")
@documented(body=Hold, responses={200: Done, 409: "Not your call, not connected yet, or Twilio failed"}, roles=("handler",))
@roles_required("handler")
def hold(call_id: int) -> Response:
    """Put the caller on hold (they hear music), or take them off hold."""
    change = body(Hold)
    connect.hold(current_handler(), call_id, change.hold)
    return jsonify(Done().model_dump())


@routes.post("/calls/<int:call_id>/hangup")
@documented(responses={200: Presence, 409: "Not connected to you (not_connected), or Twilio could not end it (twilio_failed)"},
            roles=("handler",))
@roles_required("handler")
def hangup(call_id: int) -> Response:
    """End the call you are on: the conference and every leg of it end at Twilio, and you go to wrap-up."""
    handler = current_handler()
    connect.end_call(handler, call_id)
    return jsonify(Presence(presence=handler.presence, since=handler.presence_since.isoformat()).model_dump())


@routes.post("/calls/<int:call_id>/wrap-up")
@documented(body=WrapUp, responses={200: Presence, 409: "You are not on or wrapping up this call, or Twilio could not end it"},
            roles=("handler",))
@roles_required("handler")
def wrap_up(call_id: int) -> Response:
    """Record the call's outcome; you are available again.

    On a call still connected this ends it first, as the hang-up does: after a wrap-up no leg of the
    call is left in progress, so the next call cannot ring a softphone that is still busy.
    """
    change = body(WrapUp)
    handler = current_handler()
    if handler.presence == "on_call" and handler.current_call_id == call_id:
        entry = db.session.scalar(select(QueueEntry).where(QueueEntry.call_id == call_id))
        if entry is not None and entry.state == "answered" and entry.handler_id == handler.id:
            connect.end_call(handler, call_id)
    lifecycle.finish_wrap_up(db.session, handler, call_id, change.outcome, utcnow())
    db.session.commit()
    return jsonify(Presence(presence=handler.presence, since=handler.presence_since.isoformat()).model_dump())


@routes.get("/supervisors/available")
@documented(responses={200: Supervisors}, roles=("handler",))
@roles_required("handler")
def available_supervisors() -> Response:
    """The supervisors you may ask into a call (a warm hand-over), by name."""
    people = [SupervisorOnDuty(id=user.id, name=user.display_name) for user in connect.available_supervisors()]
    return jsonify(Supervisors(supervisors=people).model_dump())


@routes.post("/calls/<int:call_id>/consult")
@documented(body=Consult, responses={200: ConsultStarted, 404: "No such supervisor",
                                     409: "Not connected to you, a consult already open, or Twilio failed"},
            roles=("handler",))
@roles_required("handler")
def consult(call_id: int) -> Response:
    """Ask a supervisor into the call: the caller is held with music while their softphone rings in to you."""
    asked = body(Consult)
    started = connect.consult(current_handler(), current_user, call_id, asked.supervisor_id)
    return jsonify(ConsultStarted(**started).model_dump())


@routes.post("/calls/<int:call_id>/consult/join")
@documented(responses={200: Done, 409: "Not connected to you, no consult open, or Twilio failed"}, roles=("handler",))
@roles_required("handler")
def consult_join(call_id: int) -> Response:
    """Bring the supervisor you consulted into the call: the caller comes off hold and the three of you talk."""
    connect.consult_join(current_handler(), current_user, call_id)
    return jsonify(Done().model_dump())


@routes.post("/calls/<int:call_id>/consult/return")
@documented(responses={200: Done, 409: "Not connected to you, no consult open, or Twilio failed"}, roles=("handler",))
@roles_required("handler")
def consult_return(call_id: int) -> Response:
    """Go back to the caller alone: the supervisor leaves the call and the caller comes off hold."""
    connect.consult_return(current_handler(), current_user, call_id)
    return jsonify(Done().model_dump())


@routes.get("/calls/<int:call_id>/ivr")
@documented(responses={200: IvrView}, roles=("handler",))
@roles_required("handler")
def ivr(call_id: int) -> Response:
    """What the caller said in the IVR: only for the handler on the call or wrapping it up."""
    handler = current_handler()
    call = db.session.get(Call, call_id)
    if call is None or handler.current_call_id != call_id or handler.presence not in ("on_call", "wrap_up"):
        raise BadRequest("forbidden", "only the handler working this call may see it", status=403)
    return jsonify(ivr_view(call).model_dump(mode="json"))
