"""`/api/calls/<id>/...`: what a handler does with a call: accept, decline, hold, wrap up, and see the IVR."""

from __future__ import annotations

from flask import Response, jsonify

from .. import connect, routing
from ..auth import roles_required
from ..db import commit_with, db
from ..models import Call, QueueEntry, utcnow
from . import BadRequest, bp, body
from .me import current_handler
from .openapi import documented
from .schemas import Accepted, Done, Hold, IvrView, Presence, WrapUp


def ivr_view(call: Call) -> IvrView:
    """What the caller told the IVR (never their number)."""
    waited = None
    if call.queued_at is not None and call.dequeued_at is not None:
        waited = int((call.dequeued_at - call.queued_at).total_seconds())
    return IvrView(call_id=call.id, need=call.need, flags=list(call.flags), answers=dict(call.answers),
                   path=list(call.ivr_path), waited_s=waited, number_status=call.caller_number_status)


@bp.post("/calls/<int:call_id>/accept")
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


@bp.post("/calls/<int:call_id>/decline")
@documented(responses={200: Presence, 409: "The call is not offered to you"}, roles=("handler",))
@roles_required("handler")
def decline(call_id: int) -> Response:
    """Turn down the call offered to you: it keeps its place and goes to someone else."""
    handler = current_handler()
    routing.decline(db.session, handler, call_id, utcnow())
    commit_with(db.session)
    return jsonify(Presence(presence=handler.presence, since=handler.presence_since.isoformat()).model_dump())


@bp.post("/calls/<int:call_id>/hold")
@documented(body=Hold, responses={200: Done, 409: "Not your call, not connected yet, or Twilio failed"}, roles=("handler",))
@roles_required("handler")
def hold(call_id: int) -> Response:
    """Put the caller on hold (they hear music), or take them off hold."""
    change = body(Hold)
    connect.hold(current_handler(), call_id, change.hold)
    return jsonify(Done().model_dump())


@bp.post("/calls/<int:call_id>/wrap-up")
@documented(body=WrapUp, responses={200: Presence, 409: "You are not on or wrapping up this call"}, roles=("handler",))
@roles_required("handler")
def wrap_up(call_id: int) -> Response:
    """Record the call's outcome; you are available again."""
    change = body(WrapUp)
    handler = current_handler()
    routing.finish_wrap_up(db.session, handler, call_id, change.outcome, utcnow())
    commit_with(db.session)
    return jsonify(Presence(presence=handler.presence, since=handler.presence_since.isoformat()).model_dump())


@bp.get("/calls/<int:call_id>/ivr")
@documented(responses={200: IvrView}, roles=("handler",))
@roles_required("handler")
def ivr(call_id: int) -> Response:
    """What the caller said in the IVR: only for the handler on the call or wrapping it up."""
    handler = current_handler()
    call = db.session.get(Call, call_id)
    if call is None or handler.current_call_id != call_id or handler.presence not in ("on_call", "wrap_up"):
        raise BadRequest("forbidden", "only the handler working this call may see it", status=403)
    return jsonify(ivr_view(call).model_dump(mode="json"))
