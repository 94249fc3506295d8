"""Putting a caller through to the handler who accepted them, over Twilio's REST API.

Each accepted call gets a conference named `call-<id>`: the handler's softphone (`client:handler-<id>`)
or phone is rung into it, then the caller is redirected out of <Enqueue> into it (or, for a
callback, rung back into it). The conference gives hold now and supervisor listening later.

If Twilio refuses or does not answer, the caller stays where they are and keeps their place in
line, and the handler is told; nobody is dropped. The webhooks here follow the call afterwards:
the conference's events, the handler's leg, and a rung-back caller's leg.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Flask, Response, current_app, request, url_for
from sqlalchemy import case, literal, select, update
from twilio.twiml.voice_response import Conference, Dial, VoiceResponse
from werkzeug.exceptions import HTTPException

from . import routing
from .db import commit_with, db, is_postgresql
from .ivr.engine import Interpreter
from .models import Call, CallEvent, Handler, QueueEntry, utcnow
from .twilio_rest import TwilioGateway, TwilioUnavailable, gateway
from .webhooks import CALL_SID, check_twilio_request, error, idempotent_twiml

log = logging.getLogger(__name__)

bp = Blueprint("connect", __name__, url_prefix="/voice/connect")
bp.before_request(check_twilio_request)

#: Final statuses of a leg that never got through.
UNANSWERED = ("busy", "no-answer", "failed", "canceled")
FINAL = ("completed", *UNANSWERED)
#: Seconds the handler's phone or softphone rings before the call goes back in line.
RING_HANDLER_S = 20


def conference_name(call_id: int) -> str:
    """The conference a call's caller and handler meet in."""
    return f"call-{call_id}"


def handler_identity(handler_id: int) -> str:
    """The Twilio client identity of a handler's browser softphone."""
    return f"handler-{handler_id}"


def _interpreter() -> Interpreter:
    return current_app.extensions["helpline.ivr"]


def _entry(call_id: int) -> QueueEntry | None:
    return db.session.scalar(select(QueueEntry).where(QueueEntry.call_id == call_id))


# -- accepting ------------------------------------------------------------------------------------

def accept(handler: Handler, call_id: int) -> QueueEntry:
    """Claim the call for the handler and connect them; raises routing.RoutingError when it cannot be done."""
    session = db.session
    entry = routing.claim(session, handler, call_id, utcnow())
    # Commit before talking to Twilio: the claim is what makes this handler the only winner, and no
    # lock may be held while we wait on the network.
    commit_with(session)
    call = session.get(Call, call_id)
    assert call is not None
    try:
        legs = _ring(gateway(), entry, call, handler)
    except TwilioUnavailable as exc:
        session.refresh(entry)  # (and the call: connect_failed re-reads it) as they are after the wait
        routing.connect_failed(session, entry, handler, str(exc), utcnow())
        commit_with(session)
        raise routing.RoutingError("connect_failed", str(exc)) from None
    session.refresh(entry)  # (and the call: connected re-reads it) as they are after the wait
    routing.connected(session, entry, handler, utcnow(), **legs)
    commit_with(session)
    return entry


def _ring(twilio: TwilioGateway, entry: QueueEntry, call: Call, handler: Handler) -> dict[str, str | None]:
    """Ring the handler into the call's conference, then bring the caller in; returns the legs' SIDs."""
    vault = current_app.extensions["helpline.vault"]
    target = vault.decrypt(handler.phone_number_enc) if handler.phone_number_enc else f"client:{handler_identity(handler.id)}"
    join = url_for("connect.join", call_id=call.id)
    handler_leg = twilio.add_participant(
        conference_name(call.id), target, label="handler", timeout=RING_HANDLER_S,
        start_conference_on_enter=True, end_conference_on_exit=True,
        status_callback=twilio.absolute(url_for("connect.handler_leg", call_id=call.id)),
        status_callback_method="POST", status_callback_event=["answered", "completed"],
        conference_status_callback=twilio.absolute(url_for("connect.conference", call_id=call.id)),
        conference_status_callback_method="POST", conference_status_callback_event=["start", "end", "join", "leave"],
    )
    try:
        if entry.kind == "live":
            twilio.redirect_call(call.call_sid, join)
            return {"handler_leg_sid": handler_leg, "caller_leg_sid": call.call_sid}
        number = vault.decrypt(call.caller_number_enc) if call.caller_number_enc else None
        if not number:
            raise TwilioUnavailable("there is no number to call back")
        caller_leg = twilio.create_call(number, join, status_path=url_for("connect.caller_leg", call_id=call.id))
        return {"handler_leg_sid": handler_leg, "caller_leg_sid": caller_leg}
    except TwilioUnavailable:
        _hang_up_quietly(twilio, handler_leg)
        raise


def _hang_up_quietly(twilio: TwilioGateway, call_sid: str | None) -> None:
    """End a leg we no longer need; if Twilio cannot, the leg ends itself when nobody joins it."""
    if not call_sid:
        return
    try:
        twilio.hang_up(call_sid)
    except TwilioUnavailable:
        log.warning("could not end leg %s", call_sid)


def hold(handler: Handler, call_id: int, on_hold: bool) -> None:
    """Put the caller on hold in the conference, or take them off it."""
    entry = _entry(call_id)
    if entry is None or handler.current_call_id != call_id or handler.presence != "on_call" or entry.state != "answered":
        raise routing.RoutingError("not_your_call", "you are not on this call")
    if not entry.conference_sid or not entry.caller_leg_sid:
        raise routing.RoutingError("not_connected", "the caller has not joined yet")
    try:
        gateway().update_participant(entry.conference_sid, entry.caller_leg_sid, hold=on_hold)
    except TwilioUnavailable as exc:
        raise routing.RoutingError("twilio_failed", str(exc)) from None
    db.session.add(CallEvent(call_id=call_id, kind="hold" if on_hold else "unhold", detail={"handler_id": handler.id}))
    commit_with(db.session)


# -- Twilio's side --------------------------------------------------------------------------------

@bp.post("/<int:call_id>")
@idempotent_twiml
def join(call_id: int, call_sid: str) -> str:
    """TwiML for the caller's leg: into the conference where the handler is (or back in line)."""
    entry = _entry(call_id)
    call = db.session.get(Call, call_id)
    response = VoiceResponse()
    interpreter = _interpreter()
    voice = interpreter.voice
    if entry is None or call is None or (entry.kind == "live" and call_sid != call.call_sid):
        response.hangup()
        return str(response)
    if entry.state not in ("connecting", "answered"):
        if entry.kind == "live" and entry.state in routing.IN_LINE:
            step = interpreter.queue_step().name
            response.redirect(url_for("voice.step", name=step, n=len(call.ivr_path), requeued=call_sid), method="POST")
        else:
            voice.say(response, "Sorry, we could not connect this call. Goodbye.")
            response.hangup()
        return str(response)
    if entry.kind == "callback":
        voice.say(response, f"This is {interpreter.settings.service.name}, returning your call. Connecting you now.")
    dial = Dial()
    room = Conference(
        conference_name(call_id), start_conference_on_enter=True, end_conference_on_exit=True, beep=False,
        wait_url=interpreter.music_url(), wait_method="GET",
        status_callback=url_for("connect.conference", call_id=call_id), status_callback_method="POST",
        status_callback_event="start end join leave",
    )
    dial.append(room)
    response.append(dial)
    return str(response)


def _status_sid() -> str | Response:
    sid = request.form.get("CallSid", "")
    return sid if CALL_SID.match(sid) else error(400, "bad_call_sid", "CallSid must be a Twilio call SID")


def _holder(entry: QueueEntry) -> Handler | None:
    return db.session.get(Handler, entry.handler_id) if entry.handler_id is not None else None


@bp.post("/<int:call_id>/conference")
def conference(call_id: int) -> Response:
    """The conference's events: remember its SID (for hold), and start wrap-up when it ends.

    Each call's conference reports five or six events; all but the end only add to the timeline
    (and the first may remember the conference's SID), in one statement (`_log_conference_event`).
    """
    event = request.form.get("StatusCallbackEvent", "")
    if not event:
        return Response(status=204)
    kind = f"conference_{event.replace('participant-', '').replace('conference-', '')}"
    conference_sid = request.form.get("ConferenceSid", "")
    leg = request.form.get("CallSid") or None
    if event != "conference-end":
        _log_conference_event(call_id, kind, conference_sid, leg)
        return Response(status=204)
    entry = _entry(call_id)
    if entry is None:
        return Response(status=204)
    if conference_sid.startswith("CF") and entry.conference_sid is None and entry.state == "answered":
        entry.conference_sid = conference_sid
    db.session.add(CallEvent(call_id=call_id, kind=kind, detail=_leg_detail(leg, entry.handler_leg_sid)))
    handler = _holder(entry)
    if handler is not None and handler.current_call_id == call_id:
        routing.start_wrap_up(db.session, handler, utcnow())
    commit_with(db.session)
    return Response(status=204)


def _leg_detail(leg: str | None, handler_leg_sid: str | None) -> dict[str, str]:
    """Whose leg a conference event is about, as its timeline event records it."""
    if not leg:
        return {}
    return {"leg": "handler" if leg == handler_leg_sid else "caller"}


def _log_conference_event(call_id: int, kind: str, conference_sid: str, leg: str | None) -> None:
    """Add a conference event to the call's timeline, if the call has a queue entry, and remember the
    conference's SID on an answered entry that has none yet.

    On PostgreSQL one statement in autocommit (the update a data-modifying CTE beside the insert);
    on SQLite two statements in one transaction.
    """
    entries, events = QueueEntry.__table__, CallEvent.__table__
    entry = select(entries.c.handler_leg_sid).where(entries.c.call_id == call_id).cte("entry")
    json = events.c.detail.type
    detail: Any = literal(_leg_detail(leg, None), json)
    if leg:
        detail = case((entry.c.handler_leg_sid == leg, literal(_leg_detail(leg, leg), json)), else_=detail)
    logged = events.insert().from_select(
        ["call_id", "at", "kind", "detail"],
        select(literal(call_id), literal(utcnow(), events.c.at.type), literal(kind), detail).select_from(entry))
    remembered = None
    if conference_sid.startswith("CF"):
        remembered = (update(entries).values(conference_sid=conference_sid)
                      .where(entries.c.call_id == call_id, entries.c.conference_sid.is_(None), entries.c.state == "answered"))
    if is_postgresql(db.session):
        db.write_alone(logged if remembered is None else logged.add_cte(remembered.cte("remembered"), nest_here=True))
        return
    db.session.execute(logged)
    if remembered is not None:
        db.session.execute(remembered)
    db.session.commit()


@bp.post("/<int:call_id>/handler")
def handler_leg(call_id: int) -> Response:
    """The handler's leg: if it never answered, the caller goes back in line and the handler on break."""
    sid = _status_sid()
    if isinstance(sid, Response):
        return sid
    status = request.form.get("CallStatus", "")
    if status not in UNANSWERED:  # answered or completed: nothing to do (the conference reports both)
        return Response(status=204)
    entry = _entry(call_id)
    if entry is None or entry.handler_leg_sid not in (None, sid):
        return Response(status=204)
    if entry.state not in ("connecting", "answered"):
        return Response(status=204)
    call = db.session.get(Call, call_id)
    assert call is not None
    caller_leg = entry.caller_leg_sid
    routing.handler_unreachable(db.session, entry, _holder(entry), status, utcnow())
    live = entry.kind == "live" and call.ended_at is None
    commit_with(db.session)
    twilio = gateway()
    if live:
        step = _interpreter().queue_step().name
        try:
            twilio.redirect_call(call.call_sid, url_for("voice.step", name=step, n=len(call.ivr_path), requeued=sid))
        except TwilioUnavailable:
            log.warning("could not take call %s back to the queue", call_id)
    elif entry.kind == "callback":
        _hang_up_quietly(twilio, caller_leg)
    return Response(status=204)


@bp.post("/<int:call_id>/caller")
def caller_leg(call_id: int) -> Response:
    """A rung-back caller's leg: unanswered, we try again later; finished, the handler wraps up."""
    sid = _status_sid()
    if isinstance(sid, Response):
        return sid
    status = request.form.get("CallStatus", "")
    entry = _entry(call_id)
    if entry is None or entry.kind != "callback" or status not in FINAL or entry.caller_leg_sid not in (None, sid):
        return Response(status=204)
    if entry.state not in ("connecting", "answered"):
        return Response(status=204)
    handler = _holder(entry)
    now = utcnow()
    db.session.add(CallEvent(call_id=call_id, kind="status", detail={"status": status, "leg": "callback"}))
    handler_leg_sid = entry.handler_leg_sid
    if status in UNANSWERED:
        routing.callback_unanswered(db.session, entry, handler, status, now)
        commit_with(db.session)
        _hang_up_quietly(gateway(), handler_leg_sid)
        return Response(status=204)
    if handler is not None and handler.current_call_id == call_id:
        routing.start_wrap_up(db.session, handler, now)
    commit_with(db.session)
    return Response(status=204)


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> Response:
    return error(exc.code or 400, exc.name.lower().replace(" ", "_"), exc.description)


@bp.errorhandler(Exception)
def _unexpected(exc: Exception) -> Response:
    """A fault of ours: a JSON 500, which Twilio records (and retries callbacks); never a stack trace."""
    log.exception("connect webhook %s failed", request.path)
    db.session.rollback()
    return error(500, "internal_error", "please retry")


def init_app(app: Flask) -> None:
    """Register the connect webhooks (signed by Twilio, so exempt from the console's CSRF check)."""
    from .auth import csrf

    app.register_blueprint(bp)
    csrf.exempt(bp)


