"""What supervisors do: watch the live wallboard, act on the queue, listen, coach or barge, and review calls.

Actions go through routing's own rules and mechanisms (offers, presence), so a supervisor can never
put the queue in a state routing itself could not reach. Each action is written on the call's
timeline (a CallEvent naming the supervisor) and audited, in the same transaction as the change.

A supervisor on a live call has one leg in its conference (`client:supervisor-<id>`, labelled so),
rung once and then switched between listen, coach and barge by updating that participant through
Twilio's REST API; the call's timeline remembers the leg (see `current_leg`), and the leg's status
callback writes down when it ends.

The wallboard (Socket.IO `wallboard` to the `supervisors` room) is pushed after every committed
change to the queue or to a handler's presence, and every PUSH_EVERY_S seconds besides, so that
waits and today's figures move on a screen nobody touches. In `helpline serve` a pusher thread
coalesces bursts of changes into at most one push per MIN_GAP_S; without it (tests, the scheduler
process) each change pushes at once.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from flask import Blueprint, Flask, Response, current_app, request, url_for
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from twilio.base.exceptions import TwilioException, TwilioRestException

from . import audit, presence, reports, routing
from .connect import conference_name
from .db import append, db, is_postgresql
from .events import announce
from .models import Booking, Call, CallEvent, Clinician, Handler, QueueEntry, Site, User, utcnow
from .softphone import supervisor_identity
from .twilio_rest import TwilioGateway, TwilioUnavailable, gateway
from .auth import csrf
from .errors import error
from .realtime import emit_local, has_local_clients
from .risk import ALERT_TOPIC
from .webhooks import CALL_SID, check_twilio_request

log = logging.getLogger(__name__)

#: The room every supervisor's console joins (realtime.py).
SUPERVISORS = "supervisors"
#: The wallboard is pushed at least this often.
PUSH_EVERY_S = 5.0
#: ... and, in `helpline serve`, at most this often however busy the line is.
MIN_GAP_S = 0.5
#: Seconds a supervisor's softphone rings before Twilio gives up.
RING_SUPERVISOR_S = 30
#: A supervisor's ways of being on a call: muted, heard by the handler only, or heard by both.
MODES = ("listen", "coach", "barge")
#: Timeline kinds that tell, latest first, where a supervisor's leg on a call is (see `current_leg`).
LEG_KINDS = ("supervisor_ringing", "supervisor_listen", "supervisor_coach", "supervisor_barge",
             "supervisor_stopped", "supervisor_left")
#: Seconds past the ring timeout after which a ring that never reported back no longer counts.
PENDING_GRACE_S = 15
#: A leg's statuses before it is answered, and when it has ended.
RINGING = ("queued", "initiated", "ringing")
LEG_ENDED = ("completed", "busy", "no-answer", "failed", "canceled")
#: Event kinds whose details name a user by `handler_user_id` rather than a handler id.
_USER_KEYS = ("handler_user_id", "supervisor_id")


class SupervisionError(routing.RoutingError):
    """A supervisor action that cannot be done now (a 409 unless said otherwise)."""


def _note(session: Session, supervisor: Any, call_id: int | None, kind: str, action: str, now: dt.datetime,
          **detail: Any) -> None:
    """Put the action on the call's timeline and in the audit log."""
    if call_id is not None:
        append(session, CallEvent, call_id=call_id, kind=kind, at=now, detail={"supervisor_id": supervisor.id, **detail})
    audit.record(session, supervisor, action, "call" if call_id is not None else "handler",
                 call_id if call_id is not None else detail.get("handler_id"), **detail)


def _entry(session: Session, call_id: int) -> QueueEntry:
    entry = session.scalar(select(QueueEntry).where(QueueEntry.call_id == call_id)
                           .execution_options(populate_existing=True))
    if entry is None:
        raise SupervisionError("not_in_line", "this call is not in the queue", status=404)
    return entry


# -- actions on the queue ----------------------------------------------------------------------------

def move_to_front(session: Session, supervisor: Any, call_id: int, now: dt.datetime) -> int:
    """Move a waiting call to the front of the line (ahead of every other priority); returns its place."""
    entry = _entry(session, call_id)
    if entry.state not in routing.IN_LINE:
        raise SupervisionError("not_waiting", "this call is no longer waiting")
    before = routing.position(session, entry, now)
    if before > 1:
        front = session.scalar(
            select(QueueEntry.priority).where(routing.due(now), QueueEntry.id != entry.id)
            .order_by(QueueEntry.priority).limit(1))
        entry.priority = min(entry.priority, (front if front is not None else entry.priority) - 1)
        session.flush()
    after = routing.position(session, entry, now)
    _note(session, supervisor, call_id, "supervisor_moved_up", "supervision.move_up", now,
          from_position=before, to_position=after, priority=entry.priority)
    announce(session, "queue_changed")
    return after


def offer_to(session: Session, supervisor: Any, call_id: int, handler_id: int, now: dt.datetime) -> routing.Offer:
    """Offer a waiting call to a named handler now, through routing's offer (timeout, decline and all).

    The handler must be available with a console open; skills are the supervisor's judgement, and a
    handler who declined the call before may be asked again.
    """
    entry = _entry(session, call_id)
    if entry.state != "waiting" or (entry.not_before is not None and entry.not_before > now):
        raise SupervisionError("not_waiting", "this call is not waiting to be offered")
    handler = session.get(Handler, handler_id, populate_existing=True)
    if handler is None:
        raise SupervisionError("no_such_handler", "there is no such handler", status=404)
    if handler.presence != "available":
        raise SupervisionError("handler_not_available", f"the handler is {handler.presence.replace('_', ' ')}")
    if presence.connections(session, handler_id) == 0:
        raise SupervisionError("handler_not_connected", "the handler has no console open")
    waiting = routing.Waiting(entry.id, entry.call_id, entry.kind, entry.need, tuple(entry.flags or ()),
                              entry.priority, entry.placed_at, ())
    offer = routing.make_offer(session, waiting, handler_id, current_app.config["HELPLINE"].routing, now)
    if offer is None:
        raise SupervisionError("offer_failed", "the call or the handler was taken a moment ago; try again")
    _note(session, supervisor, call_id, "supervisor_offered", "supervision.offer", now, handler_id=handler_id)
    return offer


def set_presence(session: Session, supervisor: Any, handler_id: int, status: str, now: dt.datetime) -> Handler:
    """Set a handler's presence (available, break or offline) as they could themselves."""
    handler = session.get(Handler, handler_id)
    if handler is None:
        raise SupervisionError("no_such_handler", "there is no such handler", status=404)
    offered_call = handler.current_call_id if handler.presence == "offered" else None
    routing.change_status(session, handler, status, now)
    _note(session, supervisor, offered_call, "supervisor_presence", "supervision.presence", now,
          handler_id=handler_id, presence=status)
    return handler


@dataclass(frozen=True)
class Leg:
    """A supervisor's leg into a call's conference, as the call's timeline remembers it."""

    mode: str
    #: None while Twilio is still being asked to ring it (another request is doing so).
    leg_sid: str | None
    #: The conference's SID when it was known at the last action (Twilio addresses participants by it).
    conference_sid: str | None
    since: dt.datetime


def _participant_changes(mode: str, handler_leg_sid: str) -> dict[str, Any]:
    """What Twilio's Participant resource must say for `mode`, as Twilio documents it: listen is
    muted; coach is unmuted with Coaching and CallSidToCoach (only that leg hears); barge is unmuted
    and not coaching, heard by everyone."""
    if mode == "listen":
        return {"muted": True, "coaching": False}
    if mode == "coach":
        return {"muted": False, "coaching": True, "call_sid_to_coach": handler_leg_sid}
    return {"muted": False, "coaching": False}


def current_leg(session: Session, call_id: int, supervisor_id: int, now: dt.datetime) -> Leg | None:
    """The supervisor's leg on the call now, or None.

    No table of its own: the call's timeline already records every ring, switch, stop and drop, and
    its latest line for this supervisor says where they are. A ring that was asked for and never
    reported back (its process died mid-request) stops counting once it could no longer be ringing.
    """
    rows = session.execute(
        select(CallEvent.at, CallEvent.kind, CallEvent.detail)
        .where(CallEvent.call_id == call_id, CallEvent.kind.in_(LEG_KINDS))
        .order_by(CallEvent.at.desc(), CallEvent.id.desc())
    ).all()
    for at, kind, detail in rows:
        if (detail or {}).get("supervisor_id") != supervisor_id:
            continue
        if kind in ("supervisor_stopped", "supervisor_left"):
            return None
        if kind == "supervisor_ringing":
            stale = now - at > dt.timedelta(seconds=RING_SUPERVISOR_S + PENDING_GRACE_S)
            return None if stale else Leg(detail["mode"], None, None, at)
        return Leg(detail["mode"], detail.get("leg_sid"), detail.get("conference_sid"), at)
    return None


class _Missing:
    """Twilio answered 404: the participant, call or conference is not there (any more)."""


MISSING = _Missing()


def _rest(what: str, action: Callable[[], Any], *, missing_ok: bool = False) -> Any:
    """Run a Twilio request, turning failures into TwilioUnavailable; a 404 is MISSING when
    `missing_ok` (a leg still ringing is not yet a participant, and a finished one no longer is)."""
    try:
        return action()
    except TwilioRestException as exc:
        if missing_ok and exc.status == 404:
            return MISSING
        log.warning("Twilio refused to %s: %s %s", what, exc.status, exc.code)
        raise SupervisionError("twilio_failed", f"Twilio refused to {what} (error {exc.code or exc.status})") from None
    except (TwilioException, OSError) as exc:
        log.warning("Twilio did not answer a request to %s: %s", what, type(exc).__name__)
        raise SupervisionError("twilio_failed", f"Twilio did not answer a request to {what}") from None


def _running_conference_sid(twilio: TwilioGateway, call_id: int) -> str | None:
    """The SID of the call's conference in progress, found by its friendly name (Twilio addresses
    participants only under the conference's SID, and the service may not have heard it yet)."""
    rooms = _rest("look up the conference", lambda: twilio.client.conferences.list(
        friendly_name=conference_name(call_id), status="in-progress", limit=1))
    return str(rooms[0].sid) if rooms else None


def _leg_status(twilio: TwilioGateway, leg_sid: str) -> str | None:
    """A leg's call status at Twilio (None when Twilio has no such call)."""
    call = _rest("look up the supervisor's leg", lambda: twilio.client.calls(leg_sid).fetch(), missing_ok=True)
    return None if call is MISSING else str(call.status)


def _connected_entry(session: Session, call_id: int) -> tuple[Call, QueueEntry]:
    """The call and its queue entry, locked, when it is connected to a handler: 404 or 409 otherwise."""
    call = session.get(Call, call_id)
    if call is None:
        raise SupervisionError("no_such_call", "there is no such call", status=404)
    query = select(QueueEntry).where(QueueEntry.call_id == call_id).execution_options(populate_existing=True)
    # One supervisor leg per call and supervisor: deciding to ring is serialised on the entry's row
    # (SQLite serialises every write transaction already, with BEGIN IMMEDIATE).
    entry = session.scalar(query.with_for_update() if is_postgresql(session) else query)
    if entry is None or entry.state != "answered" or call.ended_at is not None or not entry.handler_leg_sid:
        raise SupervisionError("not_connected", "the call is not connected to a handler now")
    return call, entry


def _configured_gateway() -> TwilioGateway:
    twilio = gateway()
    if not twilio.configured:
        raise SupervisionError("twilio_not_configured",
                               "listening needs Twilio (TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN)")
    return twilio


def supervise(session: Session, supervisor: Any, call_id: int, mode: str, now: dt.datetime) -> dict[str, Any]:
    """Listen to, coach or barge into a connected call from the supervisor's softphone.

    The first time, Twilio rings `client:supervisor-<id>` into the call's conference set for `mode`.
    With a leg already there, the same participant is updated (Muted, Coaching, CallSidToCoach), so
    switching mode never rings again or adds a second leg. Each change is on the call's timeline
    and audited; asking for the mode already in force changes nothing.
    """
    if mode not in MODES:
        raise SupervisionError("bad_mode", f"mode must be one of {', '.join(MODES)}", status=400)
    twilio = _configured_gateway()
    _call, entry = _connected_entry(session, call_id)
    leg = current_leg(session, call_id, supervisor.id, now)
    if leg is None:
        return _ring(session, twilio, supervisor, entry, mode, now)
    if leg.leg_sid is None:
        raise SupervisionError("still_ringing", "your softphone is already being rung into this call; answer it first")
    handler_leg, handler_id = entry.handler_leg_sid, entry.handler_id
    conference_sid = entry.conference_sid or leg.conference_sid
    # Hold no lock while Twilio answers.
    session.rollback()
    conference_sid = conference_sid or _running_conference_sid(twilio, call_id)
    updated: Any = MISSING
    if conference_sid is not None:
        assert handler_leg is not None
        updated = _rest("update the supervisor's participant", lambda: twilio.client.conferences(conference_sid)
                        .participants(leg.leg_sid).update(**_participant_changes(mode, handler_leg)), missing_ok=True)
    if updated is MISSING:
        status = _leg_status(twilio, leg.leg_sid)
        if status in RINGING:
            raise SupervisionError("still_ringing", "your softphone is still ringing; answer it, then change mode")
        # The leg ended without our hearing of it: say so on the timeline, and ring afresh.
        _record_left(session, call_id, supervisor.id, leg.leg_sid, status or "gone", utcnow())
        session.commit()
        return supervise(session, supervisor, call_id, mode, utcnow())
    if mode != leg.mode:
        _note(session, supervisor, call_id, f"supervisor_{mode}", f"supervision.{mode}", utcnow(),
              handler_id=handler_id, mode=mode, previous_mode=leg.mode, leg_sid=leg.leg_sid, conference_sid=conference_sid)
    return {"call_id": call_id, "mode": mode, "identity": supervisor_identity(supervisor.id), "leg_sid": leg.leg_sid,
            "conference": conference_name(call_id), "conference_sid": conference_sid, "rang": False}


def _ring(session: Session, twilio: TwilioGateway, supervisor: Any, entry: QueueEntry, mode: str,
          now: dt.datetime) -> dict[str, Any]:
    """Ring the supervisor's softphone into the conference, set for `mode` from the start.

    The ring is written down (and committed) before Twilio is asked, so that a second request finds
    it and does not ring a second leg; a refusal is written down as the leg leaving.
    """
    call_id, handler_leg, handler_id = entry.call_id, entry.handler_leg_sid, entry.handler_id
    assert handler_leg is not None
    append(session, CallEvent, call_id=call_id, kind="supervisor_ringing", at=now,
           detail={"supervisor_id": supervisor.id, "mode": mode})
    session.commit()
    identity = supervisor_identity(supervisor.id)
    options = {key: value for key, value in _participant_changes(mode, handler_leg).items() if value}
    status_path = url_for("supervise.leg", call_id=call_id, supervisor=supervisor.id)
    try:
        leg_sid = twilio.add_participant(
            conference_name(call_id), f"client:{identity}", label=identity, timeout=RING_SUPERVISOR_S, beep="false",
            start_conference_on_enter=False, end_conference_on_exit=False,
            status_callback=twilio.absolute(status_path), status_callback_method="POST",
            status_callback_event=["answered", "completed"], **options)
    except TwilioUnavailable as exc:
        append(session, CallEvent, call_id=call_id, kind="supervisor_left", at=utcnow(),
               detail={"supervisor_id": supervisor.id, "status": "twilio_failed"})
        session.commit()
        raise SupervisionError("twilio_failed", str(exc)) from None
    _note(session, supervisor, call_id, f"supervisor_{mode}", f"supervision.{mode}", utcnow(),
          handler_id=handler_id, mode=mode, leg_sid=leg_sid)
    return {"call_id": call_id, "mode": mode, "identity": identity, "leg_sid": leg_sid,
            "conference": conference_name(call_id), "conference_sid": None, "rang": True}


def stop(session: Session, supervisor: Any, call_id: int, now: dt.datetime) -> dict[str, Any]:
    """Take the supervisor's leg out of the call: Twilio removes the participant (a leg still ringing
    is ended instead). Works on a call that has ended too, so nothing is ever left behind."""
    twilio = _configured_gateway()
    if session.get(Call, call_id) is None:
        raise SupervisionError("no_such_call", "there is no such call", status=404)
    leg = current_leg(session, call_id, supervisor.id, now)
    if leg is None:
        raise SupervisionError("not_supervising", "you are not listening to this call")
    if leg.leg_sid is None:
        raise SupervisionError("still_ringing", "your softphone is being rung into this call; try again in a moment")
    entry = session.scalar(select(QueueEntry).where(QueueEntry.call_id == call_id))
    handler_id = entry.handler_id if entry is not None else None
    conference_sid = (entry.conference_sid if entry is not None else None) or leg.conference_sid
    session.rollback()
    detail = {"handler_id": handler_id, "mode": leg.mode, "leg_sid": leg.leg_sid}
    # The stop is on the timeline before Twilio is asked: the leg's end, reported while it is being
    # removed, then finds it stopped rather than lost. If Twilio refuses, the line is taken back.
    stopped = CallEvent(call_id=call_id, kind="supervisor_stopped", at=utcnow(),
                        detail={"supervisor_id": supervisor.id, **detail})
    session.add(stopped)
    session.commit()
    try:
        conference_sid = conference_sid or _running_conference_sid(twilio, call_id)
        removed: Any = MISSING
        if conference_sid is not None:
            removed = _rest("remove the supervisor from the call", lambda: twilio.client.conferences(conference_sid)
                            .participants(leg.leg_sid).delete(), missing_ok=True)
        if removed is MISSING:
            # Not (or no longer) in the conference: end the leg itself, if it is still ringing or up.
            if _leg_status(twilio, leg.leg_sid) in (*RINGING, "in-progress"):
                _rest("end the supervisor's leg", lambda: twilio.client.calls(leg.leg_sid).update(status="completed"),
                      missing_ok=True)
    except SupervisionError:
        session.rollback()
        session.delete(session.merge(stopped))
        session.commit()
        raise
    audit.record(session, supervisor, "supervision.stop", "call", call_id, **detail)
    return {"call_id": call_id, "mode": None, "identity": supervisor_identity(supervisor.id), "leg_sid": None}


def state(session: Session, supervisor: Any, call_id: int, now: dt.datetime) -> dict[str, Any]:
    """Where the supervisor is on the call: their mode and leg, or none (404 for no such call)."""
    if session.get(Call, call_id) is None:
        raise SupervisionError("no_such_call", "there is no such call", status=404)
    leg = current_leg(session, call_id, supervisor.id, now)
    return {"call_id": call_id, "mode": leg.mode if leg else None, "identity": supervisor_identity(supervisor.id),
            "leg_sid": leg.leg_sid if leg else None, "ringing_requested": bool(leg and leg.leg_sid is None),
            "since": leg.since.isoformat() if leg else None}


def _record_left(session: Session, call_id: int, supervisor_id: int, leg_sid: str | None, status: str,
                 now: dt.datetime) -> None:
    append(session, CallEvent, call_id=call_id, kind="supervisor_left", at=now,
           detail={"supervisor_id": supervisor_id, "leg_sid": leg_sid, "status": status})


# -- Twilio's reports on a supervisor's leg -----------------------------------------------------------

bp = Blueprint("supervise", __name__, url_prefix="/voice/supervise")
bp.before_request(check_twilio_request)


@bp.post("/<int:call_id>")
def leg(call_id: int) -> Response:
    """The status callback of a supervisor's leg (`?supervisor=<user id>`).

    A leg that ends (never answered, dropped, or the conference over) is written down as left, so
    the next Listen rings again rather than updating a participant that is gone. A leg answered
    after the call ended, or after the supervisor stopped, is hung up: otherwise it would wait alone
    in an empty conference of the same name.
    """
    sid = request.form.get("CallSid", "")
    if not CALL_SID.match(sid):
        return error(400, "bad_call_sid", "CallSid must be a Twilio call SID")
    supervisor_id = request.args.get("supervisor", type=int)
    status = request.form.get("CallStatus", "")
    if supervisor_id is None or db.session.get(Call, call_id) is None:
        return Response(status=204)
    now = utcnow()
    current = current_leg(db.session, call_id, supervisor_id, now)
    ours = current is not None and current.leg_sid in (None, sid)
    if status in LEG_ENDED:
        if ours:
            _record_left(db.session, call_id, supervisor_id, sid, status, now)
            db.session.commit()
        return Response(status=204)
    if status == "in-progress":
        entry = db.session.scalar(select(QueueEntry).where(QueueEntry.call_id == call_id))
        call = db.session.get(Call, call_id)
        connected = entry is not None and entry.state == "answered" and call is not None and call.ended_at is None
        if not (ours and connected):
            db.session.rollback()
            try:
                gateway().hang_up(sid)
            except TwilioUnavailable:
                log.warning("could not end supervisor leg %s of call %s", sid, call_id)
    return Response(status=204)


# -- call review -----------------------------------------------------------------------------------

#: Detail keys a timeline never shows, whatever an event recorded (belt and braces: none should).
_NEVER_SHOWN = frozenset({"from", "to", "caller", "number", "phone", "email", "name", "notes"})


def timeline(session: Session, call_id: int) -> dict[str, Any] | None:
    """A call's story for review: IVR path and keys, waits, offers and who missed them, who answered,
    the outcome, risk levels and bookings. Staff are named; the caller never is."""
    call = session.get(Call, call_id)
    if call is None:
        return None
    events = session.execute(
        select(CallEvent.at, CallEvent.kind, CallEvent.step, CallEvent.detail)
        .where(CallEvent.call_id == call_id).order_by(CallEvent.at, CallEvent.id)
    ).all()
    handler_ids = {detail.get("handler_id") for *_, detail in events if isinstance(detail.get("handler_id"), int)}
    user_ids = {detail.get(key) for *_, detail in events for key in _USER_KEYS if isinstance(detail.get(key), int)}
    entry = session.scalar(select(QueueEntry).where(QueueEntry.call_id == call_id))
    if entry is not None and entry.handler_id is not None:
        handler_ids.add(entry.handler_id)
    handlers = reports.handler_names(session, handler_ids)
    users = dict(session.execute(select(User.id, User.display_name).where(User.id.in_(sorted(user_ids)))).all()) if user_ids else {}
    lines = []
    for at, kind, step, detail in events:
        shown = {key: value for key, value in (detail or {}).items() if key not in _NEVER_SHOWN}
        if isinstance(shown.get("handler_id"), int):
            shown["handler"] = handlers.get(shown["handler_id"])
        for key in _USER_KEYS:
            if isinstance(shown.get(key), int):
                shown[key.removesuffix("_id").removesuffix("_user") + "_name"] = users.get(shown[key])
        lines.append({"at": reports.local_time(at), "kind": kind, "step": step, "detail": shown})
    row = session.execute(reports.row_query().where(Call.id == call_id)).one()
    summary = reports.call_row(row)
    answered_by = summary["handler_id"]
    bookings = [
        {"id": booking_id, "status": status, "starts_at": reports.local_time(starts_at), "modality": modality,
         "locality": locality, "profession": profession}
        for booking_id, status, starts_at, modality, locality, profession in session.execute(
            select(Booking.id, Booking.status, Booking.starts_at, Booking.modality,
                   func.coalesce(Site.locality_code, Clinician.locality_code), Clinician.profession)
            .join(Clinician, Clinician.id == Booking.clinician_id).outerjoin(Site, Site.id == Booking.site_id)
            .where(Booking.call_id == call_id).order_by(Booking.id))
    ]
    return {
        **summary,
        "handler": {"id": answered_by, "name": handlers.get(answered_by)} if answered_by else None,
        "answers": dict(call.answers or {}),
        "path": [dict(step) for step in call.ivr_path or ()],
        "risk": [line["detail"].get("level") for line in lines if line["kind"] == "risk"],
        "bookings": bookings,
        "missed_by": [line["detail"].get("handler") for line in lines if line["kind"] == "offer_missed"],
        "declined_by": [line["detail"].get("handler") for line in lines if line["kind"] == "offer_declined"],
        "events": lines,
    }


# -- the live wallboard ------------------------------------------------------------------------------

def push_wallboard(app: Flask) -> None:
    """Compute the wallboard now and send it to every supervisor connected to this process.

    Uses a session of its own (it may run inside another session's commit, see events.py). `app` is
    the app whose database and Socket.IO server are meant (one per process in service).
    """
    # Each process pushes to the supervisors connected to it (see realtime.py), and to none if it has none.
    if not has_local_clients(SUPERVISORS):
        return
    # No app context is pushed: its teardown would close the session of a request committing now.
    with db.transaction() as session:
        body = reports.wallboard(session, utcnow(), **reports.wallboard_options(app.config["HELPLINE"]))
    emit_local("wallboard", body, to=SUPERVISORS)


class WallboardPusher:
    """Pushes the wallboard on request (coalesced) and every `every_s` seconds, in a daemon thread.

    The thread is started in the process that serves the sockets, on first use: gunicorn forks its
    worker after `helpline serve` built the app, and a thread started before the fork would push
    from a process no browser is connected to.
    """

    def __init__(self, app: Flask, every_s: float = PUSH_EVERY_S, min_gap_s: float = MIN_GAP_S):
        self.app = app
        self.every_s = every_s
        self.min_gap_s = min_gap_s
        self.wanted = threading.Event()
        self.stopped = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None

    def ensure_started(self) -> None:
        """Start the thread in this process if it is not running here yet."""
        with self._lock:
            if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
                return
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name="helpline-wallboard", daemon=True)
            self._thread.start()

    def request(self) -> None:
        """Something changed: push soon."""
        self.ensure_started()
        self.wanted.set()

    def _run(self) -> None:
        while not self.stopped.is_set():
            self.wanted.wait(self.every_s)
            if self.stopped.is_set():
                return
            self.wanted.clear()
            try:
                push_wallboard(self.app)
            except Exception:  # noqa: BLE001 - a failed push is logged; the next one tries again
                log.exception("wallboard push failed")
            time.sleep(self.min_gap_s)

    def stop(self) -> None:
        """Stop the thread (it finishes any push under way)."""
        self.stopped.set()
        self.wanted.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


EXTENSION = "helpline.wallboard"


def start_wallboard(app: Flask) -> WallboardPusher:
    """Called by `helpline serve`: push the wallboard from a thread, coalesced and periodic."""
    pusher = WallboardPusher(app)
    app.extensions[EXTENSION] = pusher
    pusher.ensure_started()
    return pusher


def wallboard_running(app: Flask) -> None:
    """Make sure this process pushes the wallboard periodically (a supervisor has just looked at it)."""
    pusher: WallboardPusher | None = app.extensions.get(EXTENSION)
    if pusher is not None:
        pusher.ensure_started()


def init_app(app: Flask) -> None:
    """Register the supervisor legs' status callback (signed by Twilio, so exempt from the console's
    CSRF check), and push the wallboard after every committed change to the queue, to presence, and
    after a risk alert."""
    app.register_blueprint(bp)
    csrf.exempt(bp)

    def changed(**_data: Any) -> None:
        pusher: WallboardPusher | None = app.extensions.get(EXTENSION)
        if pusher is not None:
            pusher.request()
        else:
            push_wallboard(app)

    db.bus.subscribe("console_changed", changed)
    # A change committed by another serving process (realtime.py passes its notice on).
    db.bus.subscribe("console_changed_elsewhere", changed)
    db.bus.subscribe(ALERT_TOPIC, changed)
