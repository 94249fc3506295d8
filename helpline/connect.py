"""Putting a caller through to the handler who accepted them, over Twilio's REST API.

Each accepted call gets a conference named `call-<id>`: the handler's softphone (`client:handler-<id>`)
or phone is rung into it, then the caller is redirected out of <Enqueue> into it (or, for a
callback, rung back into it). The conference gives hold now and supervisor listening later.

If Twilio refuses or does not answer, the caller stays where they are and keeps their place in
line, and the handler is told; nobody is dropped. The webhooks here follow the call afterwards:
the conference's events, the handler's leg, and a rung-back caller's leg.

Who ends the call: the caller leaving ends the conference (their `<Conference>` has
endConferenceOnExit); the handler's End call completes it through the REST API (`end_call`). The
handler's own leg never ends it: if that leg drops while the call is up (a network fault, a closed
or reloaded tab), the caller is held with music and the handler's softphone is rung again; if nobody
answers the caller goes back to the head of the line (`handler_leg`).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from typing import Any

from flask import Blueprint, Flask, Response, current_app, request, url_for
from sqlalchemy import select

from . import audit, lifecycle, routing
from .contacts import latest_voicemail_choice
from .db import append, db
from .deferred import keep_for_replay
from .errors import error, register_webhook_errors
from .events import announce
from .ivr import twiml
from .ivr.engine import APOLOGY, Interpreter
from .models import Call, CallEvent, Handler, QueueEntry, User, utcnow
from .softphone import handler_identity, supervisor_identity
from .twilio_rest import NOT_FOUND, TwilioGateway, TwilioUnavailable, gateway
from .webhooks import CALL_SID, check_twilio_request, idempotent_twiml
from .auth import csrf

log = logging.getLogger(__name__)

bp = Blueprint("connect", __name__, url_prefix="/voice/connect")
bp.before_request(check_twilio_request)

#: Final statuses of a leg that never got through.
UNANSWERED = ("busy", "no-answer", "failed", "canceled")
FINAL = ("completed", *UNANSWERED)
#: Seconds the handler's phone or softphone rings before the call goes back in line.
RING_HANDLER_S = 20
#: Seconds a supervisor's softphone rings when a handler asks them into a call.
RING_SUPERVISOR_S = 30
#: How long a hold (or a consult) waits for the caller to arrive in the conference: just after an
#: accept the caller's leg is still on its way from the queue, and Twilio knows no participant yet.
JOIN_WAIT_S = 5.0
#: Pause between looks while waiting for the caller to arrive.
JOIN_POLL_S = 0.1
#: After a handler's leg drops, a ring that fails because their softphone is not there (a reloading page
#: registers again within a second or two, and Twilio ends at once a ring to a client nobody has
#: registered) is tried again every REJOIN_PAUSE_S, for REJOIN_WITHIN_S after the drop, the caller on
#: hold meanwhile; then the caller goes back to the head of the line. A busy ring (declined) is not.
REJOIN_WITHIN_S = 10.0
REJOIN_PAUSE_S = 2.0
NOT_THERE = ("no-answer", "failed")
#: What Twilio's answering machine detection says when a person did not answer (AnsweredBy).
NOT_A_PERSON = ("machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other", "fax")


def conference_name(call_id: int) -> str:
    """The conference a call's caller and handler meet in."""
    return f"call-{call_id}"


def _interpreter() -> Interpreter:
    return current_app.extensions["helpline.ivr"]


def _entry(call_id: int) -> QueueEntry | None:
    return lifecycle.entry_of(db.session, call_id)


# -- accepting ------------------------------------------------------------------------------------

def accept(handler: Handler, call_id: int) -> QueueEntry:
    """Claim the call for the handler and connect them; raises routing.RoutingError when it cannot be done."""
    session = db.session
    from .public.referrals import hold_until_safe

    held = hold_until_safe(session, handler, call_id, utcnow())
    if held is not None:
        # A web request is rung only inside the times the person said are safe.
        session.commit()
        raise routing.RoutingError("outside_safe_times", "this person asked to be called only at certain times; "
                                   f"their request waits until {held.isoformat()}")
    entry = lifecycle.claim(session, handler, call_id, utcnow())
    # Commit before talking to Twilio: the claim is what makes this handler the only winner, and no
    # lock may be held while we wait on the network.
    session.commit()
    call = session.get(Call, call_id)
    assert call is not None
    if entry.kind == "email":
        # A web request to be answered by email: there is nobody to ring; the handler has it in hand
        # and replies from the console (mail.py).
        lifecycle.connected(session, entry, handler, utcnow())
        session.commit()
        return entry
    try:
        legs = _ring(gateway(), entry, call, handler)
    except TwilioUnavailable as exc:
        session.refresh(entry)  # (and the call: connect_failed re-reads it) as they are after the wait
        lifecycle.connect_failed(session, entry, handler, str(exc), utcnow())
        session.commit()
        raise routing.RoutingError("connect_failed", str(exc)) from None
    if not lifecycle.connected(session, entry, handler, utcnow(), **legs):
        # The handler's leg came back busy, unanswered or failed before we got here: the call is
        # already back at the head of the line (handler_leg), and the caller back in the queue.
        session.commit()
        raise routing.RoutingError("handler_unreachable", "your softphone or phone did not take the call; "
                                   "the caller is back at the head of the line")
    session.commit()
    return entry


def _target(handler: Handler) -> str:
    """Where the handler's calls ring: their phone if they set one, else their browser softphone."""
    vault = current_app.extensions["helpline.vault"]
    return vault.decrypt(handler.phone_number_enc) if handler.phone_number_enc else f"client:{handler_identity(handler.id)}"


def _ring_handler(twilio: TwilioGateway, call_id: int, handler: Handler, again: bool = False) -> str:
    """Ring the handler into the call's conference; returns their leg's CallSid.

    Their leg never ends the conference (endConferenceOnExit false): a dropped softphone must not
    cut the caller off. `again` marks the ring after such a drop, so that its callbacks are read so.
    """
    status = url_for("connect.handler_leg", call_id=call_id, again=1) if again else url_for("connect.handler_leg", call_id=call_id)
    return twilio.add_participant(
        conference_name(call_id), _target(handler), label="handler", timeout=RING_HANDLER_S,
        start_conference_on_enter=True, end_conference_on_exit=False,
        status_callback=twilio.absolute(status),
        status_callback_method="POST", status_callback_event=["answered", "completed"],
        conference_status_callback=twilio.absolute(url_for("connect.conference", call_id=call_id)),
        conference_status_callback_method="POST", conference_status_callback_event=["start", "end", "join", "leave"],
    )


def _ring(twilio: TwilioGateway, entry: QueueEntry, call: Call, handler: Handler) -> dict[str, str | None]:
    """Ring the handler into the call's conference, then bring the caller in; returns the legs' SIDs.

    A callback presents the configured callback caller ID (the number callers are told to expect)
    and asks for answering machine detection, so that `join` can tell a person from voicemail.
    """
    vault = current_app.extensions["helpline.vault"]
    join = url_for("connect.join", call_id=call.id)
    handler_leg = _ring_handler(twilio, call.id, handler)
    try:
        if entry.kind == "live":
            twilio.redirect_call(call.call_sid, join)
            return {"handler_leg_sid": handler_leg, "caller_leg_sid": call.call_sid}
        number = vault.decrypt(call.caller_number_enc) if call.caller_number_enc else None
        if not number:
            raise TwilioUnavailable("there is no number to call back")
        caller_leg = twilio.create_call(number, join, status_path=url_for("connect.caller_leg", call_id=call.id),
                                        caller_id=twilio.settings.twilio.callback_number, machine_detection=True)
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


# -- the handler's controls ---------------------------------------------------------------------

def _connected_entry(handler: Handler, call_id: int, error: str = "not_connected") -> QueueEntry:
    """The call's entry, when the handler is on it and it is connected; RoutingError `error` otherwise.

    Ends the read transaction: what follows talks to Twilio, and no lock may be held meanwhile.
    """
    session = db.session
    entry = routing.lock_entry(session, call_id)  # the entry before the handler, as every move of a call locks them
    routing.lock(session, handler)
    if (entry is None or entry.state != "answered" or entry.handler_id != handler.id
            or handler.current_call_id != call_id or handler.presence != "on_call"):
        session.rollback()
        raise routing.RoutingError(error, "you are not connected to this call")
    session.commit()
    return entry


def _conference_sid(twilio: TwilioGateway, entry: QueueEntry) -> str | None:
    """The SID of the call's live conference: as its events told us, or else asked of Twilio by name
    (the events may not have arrived yet, or arrived while the accept was still committing)."""
    if entry.conference_sid:
        return entry.conference_sid
    found = twilio.find_conference(conference_name(entry.call_id))
    if found:
        lifecycle.remember_conference(db.session, entry, found)
    return found


def _update_caller(twilio: TwilioGateway, entry: QueueEntry, **changes: Any) -> str:
    """Change the caller's participant (hold, HoldUrl...), waiting a moment for them to arrive.

    Just after an accept the caller's leg is still on its way from the queue into the conference,
    and Twilio answers 20404 for a participant (or a conference) it does not have yet. That is not
    a failure the handler should see: look again for up to JOIN_WAIT_S. Returns the conference SID.
    """
    deadline = time.monotonic() + JOIN_WAIT_S
    while True:
        try:
            conference_sid = _conference_sid(twilio, entry)
            if conference_sid and entry.caller_leg_sid:
                twilio.update_participant(conference_sid, entry.caller_leg_sid, **changes)
                return conference_sid
        except TwilioUnavailable as exc:
            if exc.code != NOT_FOUND:
                raise routing.RoutingError("twilio_failed", str(exc)) from None
        if time.monotonic() >= deadline:
            raise routing.RoutingError("not_connected", "the caller has not joined the call yet; try again in a moment")
        time.sleep(JOIN_POLL_S)


def _hold_changes(on_hold: bool) -> dict[str, Any]:
    """The participant update that holds the caller with the helpline's own music, or takes them off hold."""
    if on_hold:
        return {"hold": True, "hold_url": _interpreter().music_url(), "hold_method": "GET"}
    return {"hold": False}


def hold(handler: Handler, call_id: int, on_hold: bool) -> None:
    """Put the caller on hold in the conference (they hear the helpline's music), or take them off it."""
    entry = _connected_entry(handler, call_id, error="not_your_call")
    _update_caller(gateway(), entry, **_hold_changes(on_hold))
    lifecycle.held(db.session, call_id, handler.id, on_hold)
    db.session.commit()


def end_call(handler: Handler, call_id: int) -> None:
    """The handler ends the call: the conference is completed through Twilio, and they go to wrap-up.

    The handler goes to wrap-up (and the timeline says who ended it) before Twilio is asked, so that
    the handler's leg ending a moment later reads as the end it is, not as a dropped softphone. If
    Twilio cannot end it, the handler is put back on the call and told.
    """
    session = db.session
    entry = _connected_entry(handler, call_id)
    routing.lock(session, handler)
    if handler.presence != "on_call" or handler.current_call_id != call_id:
        session.rollback()
        raise routing.RoutingError("not_connected", "you are not connected to this call")
    append(session, CallEvent, call_id=call_id, kind="ended_by_handler", detail={"handler_id": handler.id})
    lifecycle.start_wrap_up(session, handler, utcnow())
    session.commit()
    if entry.kind == "email":
        return  # no call at Twilio to end
    try:
        _complete(gateway(), entry)
    except TwilioUnavailable as exc:
        routing.lock(session, handler)
        if handler.presence == "wrap_up" and handler.current_call_id == call_id:
            routing.set_presence(session, handler, "on_call", utcnow())
        append(session, CallEvent, call_id=call_id, kind="end_failed", detail={"handler_id": handler.id, "detail": str(exc)})
        session.commit()
        raise routing.RoutingError("twilio_failed", str(exc)) from None


def _complete(twilio: TwilioGateway, entry: QueueEntry) -> None:
    """End every leg of the call at Twilio: the conference (everyone in it leaves, and the caller's and
    handler's calls end with it), then each known leg, in case one had not reached the conference.

    Raises TwilioUnavailable only when Twilio did not answer: a leg Twilio refuses to end (20404,
    or not in progress) is already over.
    """
    ended = False
    conference_sid = _conference_sid(twilio, entry)
    if conference_sid:
        try:
            twilio.end_conference(conference_sid)
            ended = True
        except TwilioUnavailable as exc:
            if exc.code is None:
                raise
    for leg in (entry.caller_leg_sid, entry.handler_leg_sid):
        if not leg:
            continue
        try:
            twilio.hang_up(leg)
        except TwilioUnavailable as exc:
            if exc.code is None and not ended:
                raise
            log.info("leg of call %s already over (%s)", entry.call_id, exc)


# -- asking a supervisor --------------------------------------------------------------------------

def available_supervisors() -> list[User]:
    """The supervisors a handler may ask into a call: every active supervisor account, by name.

    Whether a supervisor's softphone is on is known only when it rings; a consult that is not
    answered leaves the caller on hold until the handler returns to them.
    """
    return lifecycle.supervisors_to_ask(db.session)


def _consult_leg(call_id: int) -> tuple[str, int] | None:
    """The supervisor's leg and user id of the call's open consult, or None when there is none."""
    return lifecycle.open_consult(db.session, call_id)


def consult(handler: Handler, user: Any, call_id: int, supervisor_id: int) -> dict[str, Any]:
    """Warm hand-over: hold the caller (with music) and ring the supervisor into the call's conference.

    The handler and the supervisor talk while the caller hears music; then the handler brings the
    supervisor into the call (`consult_join`) or returns to the caller alone (`consult_return`).
    """
    entry = _connected_entry(handler, call_id)
    supervisor = db.session.get(User, supervisor_id)
    if supervisor is None or supervisor.role != "supervisor" or not supervisor.active:
        raise routing.RoutingError("no_such_supervisor", "there is no such supervisor", status=404)
    if _consult_leg(call_id) is not None:
        raise routing.RoutingError("consult_open", "a supervisor is already being asked into this call")
    db.session.rollback()  # nothing written: no transaction stays open while Twilio is asked
    twilio = gateway()
    conference_sid = _update_caller(twilio, entry, **_hold_changes(True))
    identity = supervisor_identity(supervisor.id)
    try:
        leg = twilio.add_participant(conference_sid, f"client:{identity}", label="consult", timeout=RING_SUPERVISOR_S,
                                     start_conference_on_enter=True, end_conference_on_exit=False, beep="false")
    except TwilioUnavailable as exc:
        _release_caller(twilio, entry)
        raise routing.RoutingError("twilio_failed", str(exc)) from None
    append(db.session, CallEvent, call_id=call_id, kind="consult_started",
           detail={"handler_id": handler.id, "supervisor_id": supervisor.id, "leg": leg})
    audit.record(db.session, user, "call.consult", "call", call_id, supervisor_id=supervisor.id)
    db.session.commit()
    return {"call_id": call_id, "supervisor_id": supervisor.id, "identity": identity, "leg_sid": leg}


def _release_caller(twilio: TwilioGateway, entry: QueueEntry) -> None:
    """Take the caller off hold after a consult could not start (they must not be left on music)."""
    try:
        _update_caller(twilio, entry, hold=False)
    except routing.RoutingError:
        log.warning("could not take the caller of call %s off hold", entry.call_id)


def consult_join(handler: Handler, user: Any, call_id: int) -> None:
    """Bring the consulted supervisor into the call: the caller comes off hold and all three talk."""
    entry = _connected_entry(handler, call_id)
    opened = _consult_leg(call_id)
    db.session.rollback()  # only read: no transaction stays open while Twilio is asked
    if opened is None:
        raise routing.RoutingError("no_consult", "no supervisor is being asked into this call")
    _update_caller(gateway(), entry, hold=False)
    append(db.session, CallEvent, call_id=call_id, kind="consult_ended",
           detail={"handler_id": handler.id, "supervisor_id": opened[1], "joined": True})
    audit.record(db.session, user, "call.consult_join", "call", call_id, supervisor_id=opened[1])
    announce(db.session, "consult", call_id=call_id, state="joined", handler_id=handler.id, supervisor_id=opened[1])
    db.session.commit()


def consult_return(handler: Handler, user: Any, call_id: int) -> None:
    """Return to the caller alone: the supervisor's leg leaves the conference and the caller comes off hold."""
    entry = _connected_entry(handler, call_id)
    opened = _consult_leg(call_id)
    db.session.rollback()  # only read: no transaction stays open while Twilio is asked
    if opened is None:
        raise routing.RoutingError("no_consult", "no supervisor is being asked into this call")
    leg, supervisor_id = opened
    twilio = gateway()
    conference_sid = _conference_sid(twilio, entry)
    if conference_sid:
        try:
            twilio.remove_participant(conference_sid, leg)
        except TwilioUnavailable as exc:
            if exc.code != NOT_FOUND:  # not found: the supervisor had already left, or never answered
                raise routing.RoutingError("twilio_failed", str(exc)) from None
    _hang_up_quietly(twilio, leg)  # still ringing, it is not a participant yet: stop the ring
    _update_caller(twilio, entry, hold=False)
    append(db.session, CallEvent, call_id=call_id, kind="consult_returned",
           detail={"handler_id": handler.id, "supervisor_id": supervisor_id})
    audit.record(db.session, user, "call.consult_return", "call", call_id, supervisor_id=supervisor_id)
    announce(db.session, "consult", call_id=call_id, state="returned", handler_id=handler.id, supervisor_id=supervisor_id)
    db.session.commit()


# -- Twilio's side --------------------------------------------------------------------------------

@bp.post("/<int:call_id>")
@idempotent_twiml
def join(call_id: int, call_sid: str) -> str:
    """TwiML for the caller's leg: into the conference where the handler is (or back in line).

    The caller waits in the conference with music until the handler's leg is in (they do not start
    it), and leaving ends it. A callback answered by voicemail (AnsweredBy from machine detection)
    hears nothing and is tried again later: a message could tell someone else that this person
    called a doctors' helpline, so nothing is left unless the caller told us voicemail is safe.
    """
    entry = _entry(call_id)
    call = db.session.get(Call, call_id)
    interpreter = _interpreter()
    voice = interpreter.voice
    if entry is None or call is None or (entry.kind == "live" and call_sid != call.call_sid):
        return twiml.hang_up()
    if entry.state not in ("connecting", "answered"):
        if entry.kind == "live" and entry.state in routing.IN_LINE:
            step = interpreter.queue_step().name
            return twiml.redirect(url_for("voice.step", name=step, n=len(call.ivr_path), requeued=call_sid))
        return twiml.speak_and_hang_up(voice, "Sorry, we could not connect this call. Goodbye.")
    greeting = None
    if entry.kind == "callback":
        if request.form.get("AnsweredBy", "") in NOT_A_PERSON:
            message = _reached_voicemail(entry, call)
            return twiml.speak_and_hang_up(voice, message) if message else twiml.hang_up()
        greeting = f"This is {interpreter.settings.service.name}, returning your call. Connecting you now."
    return twiml.join_conference(voice, greeting, conference_name(call_id), interpreter.music_url(),
                                 url_for("connect.conference", call_id=call_id))


def voicemail_safe(call: Call) -> bool:
    """Whether the caller said a message may be left for them (an explicit yes; no answer is a no).

    What they last told a handler (the newest first-contact record for this call or this number)
    counts over what they said when asking for the callback.
    """
    said = latest_voicemail_choice(db.session, current_app.extensions["helpline.vault"], call)
    if said is not None:
        return said
    return (call.answers or {}).get("safe_for_voicemail") is True


def _reached_voicemail(entry: QueueEntry, call: Call) -> str | None:
    """A callback reached a machine: free the handler and leave the callback in line for a later try.
    Returns the short message to leave before hanging up, only if the caller said that is safe."""
    session = db.session
    locked = routing.lock_entry(session, entry.call_id)
    handler_leg = locked.handler_leg_sid if locked is not None else None
    if locked is not None and locked.state in ("connecting", "answered"):
        append(session, CallEvent, call_id=entry.call_id, kind="callback_voicemail", detail={"message_left": voicemail_safe(call)})
        lifecycle.callback_unanswered(session, locked, _holder(locked), "machine", utcnow())
    message = None
    if voicemail_safe(call):
        message = f"This is {_interpreter().settings.service.name}, returning your call. We will try again later."
    session.commit()
    _hang_up_quietly(gateway(), handler_leg)
    return message


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
    label = request.form.get("ParticipantLabel", "")
    if event != "conference-end":
        _log_conference_event(call_id, kind, conference_sid, leg, label)
        if label == "consult" and leg and event in CONSULT_STATES:
            _consult_changed(call_id, leg, CONSULT_STATES[event])
        return Response(status=204)
    entry = _entry(call_id)
    if entry is None:
        return Response(status=204)
    if conference_sid.startswith("CF") and entry.conference_sid is None and entry.state in ("connecting", "answered"):
        entry.conference_sid = conference_sid
    append(db.session, CallEvent, call_id=call_id, kind=kind, detail=lifecycle.leg_detail(leg, entry.handler_leg_sid))
    handler = _holder(entry)
    if handler is not None and handler.current_call_id == call_id:
        # Still on the call when the room closed: the caller left it (their leg ends the conference).
        lifecycle.start_wrap_up(db.session, handler, utcnow(), reason=lifecycle.CALLER_LEFT)
    db.session.commit()
    return Response(status=204)


def _log_conference_event(call_id: int, kind: str, conference_sid: str, leg: str | None, label: str) -> None:
    """Add a conference event to the call's timeline (lifecycle.conference_event: one statement on PostgreSQL)."""
    lifecycle.conference_event(db.session(), call_id, kind, conference_sid, leg, label)


#: What a supervisor's leg joining or leaving the room means for the consult it was rung for; the
#: handler's own moves add "joined" (`consult_join`) and "returned" (`consult_return`).
CONSULT_STATES = {"participant-join": "answered", "participant-leave": "left"}


def _consult_changed(call_id: int, leg: str, state: str) -> None:
    """Tell the handler and the supervisor that the supervisor asked into the call answered, or left it.

    A softphone that answers at once can join before the handler's request that rang it has
    recorded the consult (it learns the leg's SID only as Twilio answers it): look again for up to
    JOIN_WAIT_S, as a hold waits for the caller to arrive.
    """
    deadline = time.monotonic() + JOIN_WAIT_S
    while (found := lifecycle.consult_of_leg(db.session, call_id, leg)) is None and time.monotonic() < deadline:
        db.session.rollback()  # read afresh, and hold nothing while waiting
        time.sleep(JOIN_POLL_S)
    if found is not None:
        announce(db.session, "consult", call_id=call_id, state=state, handler_id=found[0], supervisor_id=found[1])
    db.session.commit()


@bp.post("/<int:call_id>/handler")
def handler_leg(call_id: int) -> Response:
    """The handler's leg. Never answered (busy, no-answer, failed): the caller goes back to the head
    of the line and the handler on break, in the database and at Twilio, whichever of this and the
    accept comes first. Ended while the call is up and nobody asked for it: the handler dropped.
    Answered after such a drop (`again`): they are back, and the caller comes off hold."""
    sid = _status_sid()
    if isinstance(sid, Response):
        return sid
    status = request.form.get("CallStatus", "")
    again = request.args.get("again") == "1"
    if status in UNANSWERED:
        return _handler_unreachable(call_id, sid, status, again)
    if status == "completed":
        return _handler_left(call_id, sid)
    if status == "in-progress" and again:
        return _handler_back(call_id, sid)
    return Response(status=204)


def _handler_unreachable(call_id: int, sid: str, status: str, again: bool) -> Response:
    session = db.session
    entry = routing.lock_entry(session, call_id)
    if entry is None or entry.handler_leg_sid not in (None, sid) or entry.state not in ("connecting", "answered"):
        session.rollback()
        return Response(status=204)
    call = db.session.get(Call, call_id)
    assert call is not None
    caller_leg = entry.caller_leg_sid
    if again and status in NOT_THERE and _dropped_lately(entry, call):
        # Their softphone is not back yet (a reloading page): the caller stays on hold, and we ring again
        # shortly. The spent leg stays recorded until then, so that this ring's own record of it
        # (handler_rung_again, which may come after this callback) does not take it for a live one.
        entry.handler_leg_sid = sid
        append(session, CallEvent, call_id=call_id, kind="handler_not_there", detail={"handler_id": entry.handler_id, "status": status})
        session.commit()
        _ring_again_soon(call_id, sid)
        return Response(status=204)
    if again:
        append(session, CallEvent, call_id=call_id, kind="handler_not_back", detail={"handler_id": entry.handler_id, "status": status})
    lifecycle.handler_unreachable(session, entry, _holder(entry), status, utcnow())
    live = entry.kind == "live" and call.ended_at is None
    session.commit()
    twilio = gateway()
    if live:
        _back_to_queue(twilio, call, sid)
    elif entry.kind == "callback":
        _hang_up_quietly(twilio, caller_leg)
    return Response(status=204)


def _dropped_lately(entry: QueueEntry, call: Call) -> bool:
    """Whether the handler's leg of this call, still up, dropped less than REJOIN_WITHIN_S ago."""
    if entry.state != "answered" or call.ended_at is not None:
        return False
    dropped_at = db.session.scalar(select(CallEvent.at).where(CallEvent.call_id == call.id, CallEvent.kind == "handler_dropped")
                                   .order_by(CallEvent.id.desc()).limit(1))
    return dropped_at is not None and utcnow() - dropped_at < dt.timedelta(seconds=REJOIN_WITHIN_S)


def _ring_again_soon(call_id: int, failed_sid: str) -> None:
    """Ring the handler of a held call again after REJOIN_PAUSE_S, in this process (`_ring_again`)."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    timer = threading.Timer(REJOIN_PAUSE_S, _ring_again, (app, call_id, failed_sid))
    timer.daemon = True
    timer.start()


def _ring_again(app: Flask, call_id: int, failed_sid: str) -> None:
    """The pause after a ring that found no softphone is over: ring the handler once more, if the
    call is still theirs, up and waiting for them. A request context of its own gives the ring's
    callback URLs (as a replayed status callback has one, deferred.py)."""
    with app.test_request_context():
        try:
            session = db.session
            entry = routing.lock_entry(session, call_id)
            call = session.get(Call, call_id)
            handler = _holder(entry) if entry is not None else None
            if (entry is None or call is None or handler is None or entry.state != "answered" or entry.handler_leg_sid != failed_sid
                    or call.ended_at is not None or handler.current_call_id != call_id or handler.presence != "on_call"):
                session.rollback()
                return
            entry.handler_leg_sid = None  # the next leg's callbacks are taken, whichever comes first
            session.commit()
            _ring_back(gateway(), entry, handler, failed_sid)
        except Exception:  # noqa: BLE001 - a timer thread: say what failed (the caller stays on hold, the call on the handler's screen)
            db.session.rollback()
            log.exception("could not ring the handler of call %s again", call_id)


def _back_to_queue(twilio: TwilioGateway, call: Call, reason_sid: str) -> None:
    """Send a live caller back into the queue's TwiML (out of the conference, or of the queue and in again)."""
    step = _interpreter().queue_step().name
    try:
        twilio.redirect_call(call.call_sid, url_for("voice.step", name=step, n=len(call.ivr_path), requeued=reason_sid))
    except TwilioUnavailable:
        log.warning("could not take call %s back to the queue", call.id)


def _handler_left(call_id: int, sid: str) -> Response:
    """The handler's leg ended. After an End call, or because the caller left, nothing is to be done;
    but while the caller is still in the conference and nobody asked, the handler has dropped."""
    session = db.session
    entry = routing.lock_entry(session, call_id)
    handler = _holder(entry) if entry is not None else None
    if (entry is None or handler is None or entry.state != "answered" or entry.handler_leg_sid != sid
            or handler.presence != "on_call" or handler.current_call_id != call_id):
        session.rollback()
        return Response(status=204)
    session.commit()
    twilio = gateway()
    # Callbacks come in any order: ask Twilio whether the caller is still there rather than guess.
    try:
        conference_sid = _conference_sid(twilio, entry)
        caller_there = bool(conference_sid and entry.caller_leg_sid
                            and twilio.participant_status(conference_sid, entry.caller_leg_sid) == "connected")
    except TwilioUnavailable:
        log.warning("could not tell whether call %s's caller is still there; treating the call as over", call_id)
        caller_there, conference_sid = False, None
    if not caller_there or conference_sid is None:
        return Response(status=204)  # the call is over: the conference's end starts the wrap-up
    _handler_dropped(twilio, entry, handler, conference_sid, sid)
    return Response(status=204)


def _handler_dropped(twilio: TwilioGateway, entry: QueueEntry, handler: Handler, conference_sid: str, sid: str) -> None:
    """Hold the caller with music and ring the handler once more; if that cannot even be placed,
    the caller goes back to the head of the line."""
    session = db.session
    locked = routing.lock_entry(session, entry.call_id)
    if locked is None or locked.state != "answered" or locked.handler_leg_sid != sid:
        session.rollback()
        return  # a repeated callback: the first one is already seeing to it
    locked.handler_leg_sid = None  # the next leg's callbacks are taken, whichever comes first
    append(session, CallEvent, call_id=entry.call_id, kind="handler_dropped", detail={"handler_id": handler.id})
    session.commit()
    if locked.caller_leg_sid:
        try:
            twilio.update_participant(conference_sid, locked.caller_leg_sid, **_hold_changes(True))
        except TwilioUnavailable:
            log.warning("could not hold the caller of call %s while their handler is rung again", entry.call_id)
    _ring_back(twilio, locked, handler, sid)


def _ring_back(twilio: TwilioGateway, entry: QueueEntry, handler: Handler, reason_sid: str) -> None:
    """Ring the handler of a held call again; if that cannot even be placed, the caller goes back to
    the head of the line. `reason_sid` is the leg whose end led here."""
    session = db.session
    try:
        leg = _ring_handler(twilio, entry.call_id, handler, again=True)
    except TwilioUnavailable:
        call = session.get(Call, entry.call_id)
        relocked = routing.lock_entry(session, entry.call_id)
        if call is None or relocked is None or relocked.state != "answered":
            session.rollback()
            return
        lifecycle.handler_unreachable(session, relocked, _holder(relocked), "failed", utcnow())
        session.commit()
        if relocked.kind == "live":
            _back_to_queue(twilio, call, reason_sid)
        return
    lifecycle.handler_rung_again(session, entry, leg)


def _handler_back(call_id: int, sid: str) -> Response:
    """The handler answered the ring after their drop: take the caller off hold."""
    session = db.session
    entry = routing.lock_entry(session, call_id)
    if entry is None or entry.state != "answered" or entry.handler_leg_sid not in (None, sid):
        session.rollback()
        return Response(status=204)
    if entry.handler_leg_sid is None:
        entry.handler_leg_sid = sid
    append(session, CallEvent, call_id=call_id, kind="handler_back", detail={"handler_id": entry.handler_id})
    session.commit()
    conference_sid = entry.conference_sid
    if conference_sid and entry.caller_leg_sid:
        try:
            gateway().update_participant(conference_sid, entry.caller_leg_sid, hold=False)
        except TwilioUnavailable:
            log.warning("could not take the caller of call %s off hold", call_id)
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
    append(db.session, CallEvent, call_id=call_id, kind="status", detail={"status": status, "leg": "callback"})
    handler_leg_sid = entry.handler_leg_sid
    if status in UNANSWERED:
        lifecycle.callback_unanswered(db.session, entry, handler, status, now)
        db.session.commit()
        _hang_up_quietly(gateway(), handler_leg_sid)
        return Response(status=204)
    if handler is not None and handler.current_call_id == call_id:
        lifecycle.start_wrap_up(db.session, handler, now, reason=lifecycle.CALLER_LEFT)
    db.session.commit()
    return Response(status=204)


#: The status callbacks here (Twilio never retries one).
STATUS_CALLBACKS = ("connect.conference", "connect.handler_leg", "connect.caller_leg")
#: Tries of the caller's join with an apology before they hear hold music between tries.
JOIN_APOLOGIES = 3


def _unexpected(exc: Exception) -> Response:
    """A fault of ours (the database away), never answered with a stack trace, nor so as to lose the call.

    A status callback, which Twilio never retries, is answered 204 and kept for replay as soon as
    the database answers (deferred.py). The caller's join is answered with TwiML that asks again:
    an apology a few times, then hold music between tries, until the database answers; the caller
    then goes into the conference, or back in line if their handler's leg gave up meanwhile.
    """
    log.exception("connect webhook %s failed", request.path)
    try:
        db.session.rollback()
    except Exception:  # noqa: BLE001 - the database is away; the answer must not need it
        log.warning("could not roll back after a failed connect webhook")
    if request.endpoint in STATUS_CALLBACKS:
        keep_for_replay()
        return Response(status=204)
    if request.endpoint == "connect.join":
        return Response(_join_later(), mimetype="text/xml")
    return error(500, "internal_error", "please retry")


register_webhook_errors(bp, _unexpected)


def _join_later() -> str:
    """TwiML that keeps the caller on the line and fetches their join again."""
    from urllib.parse import urlencode

    tries = request.args.get("retry", "0")
    done = int(tries) if tries.isdigit() else 0
    url = f"{request.path}?{urlencode({**request.args, 'retry': str(done + 1)})}"
    interpreter = _interpreter()
    if done < JOIN_APOLOGIES:
        return twiml.retry_later(interpreter.voice, APOLOGY, url)
    return twiml.music_then_redirect(interpreter.music_url(), url)


def init_app(app: Flask) -> None:
    """Register the connect webhooks (signed by Twilio, so exempt from the console's CSRF check)."""
    app.register_blueprint(bp)
    csrf.exempt(bp)


