"""What supervisors do: watch the live wallboard, act on the queue, listen or coach, and review calls.

Actions go through routing's own rules and mechanisms (offers, presence), so a supervisor can never
put the queue in a state routing itself could not reach. Each action is written on the call's
timeline (a CallEvent naming the supervisor) and audited, in the same transaction as the change.

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
from typing import Any

from flask import Flask, current_app
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from . import audit, presence, reports, routing
from .connect import conference_name
from .db import db
from .events import announce
from .models import Booking, Call, CallEvent, Clinician, Handler, QueueEntry, Site, User, utcnow
from .twilio_rest import TwilioUnavailable, gateway

log = logging.getLogger(__name__)

#: The room every supervisor's console joins (realtime.py).
SUPERVISORS = "supervisors"
#: The wallboard is pushed at least this often.
PUSH_EVERY_S = 5.0
#: ... and, in `helpline serve`, at most this often however busy the line is.
MIN_GAP_S = 0.5
#: Seconds a supervisor's softphone rings before Twilio gives up.
RING_SUPERVISOR_S = 30
#: How listening and coaching are said on the timeline.
MODES = ("listen", "coach")
#: Event kinds whose details name a user by `handler_user_id` rather than a handler id.
_USER_KEYS = ("handler_user_id", "supervisor_id")


def supervisor_identity(user_id: int) -> str:
    """The Twilio client identity a supervisor's softphone registers as."""
    return f"supervisor-{user_id}"


class SupervisionError(routing.RoutingError):
    """A supervisor action that cannot be done now (a 409 unless said otherwise)."""


def _note(session: Session, supervisor: Any, call_id: int | None, kind: str, action: str, now: dt.datetime,
          **detail: Any) -> None:
    """Put the action on the call's timeline and in the audit log."""
    if call_id is not None:
        session.add(CallEvent(call_id=call_id, kind=kind, at=now, detail={"supervisor_id": supervisor.id, **detail}))
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


def listen(session: Session, supervisor: Any, call_id: int, mode: str, now: dt.datetime) -> dict[str, Any]:
    """Ring the supervisor's softphone into the call's conference: muted (listen), or coaching the handler.

    Coaching lets the handler hear the supervisor and the caller not. Needs Twilio configured and
    the call connected (its conference running, with the handler's leg known).
    """
    if mode not in MODES:
        raise SupervisionError("bad_mode", f"mode must be one of {', '.join(MODES)}", status=400)
    twilio = gateway()
    if not twilio.configured:
        raise SupervisionError("twilio_not_configured", "listening needs Twilio (TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN)")
    entry = _entry(session, call_id)
    call = session.get(Call, call_id)
    if entry.state != "answered" or call is None or call.ended_at is not None or not entry.handler_leg_sid:
        raise SupervisionError("not_connected", "the call is not connected to a handler")
    options: dict[str, Any] = {"label": f"supervisor-{mode}", "timeout": RING_SUPERVISOR_S, "beep": "false",
                               "start_conference_on_enter": False, "end_conference_on_exit": False}
    if mode == "listen":
        options["muted"] = True
    else:
        options.update(coaching=True, call_sid_to_coach=entry.handler_leg_sid)
    identity = supervisor_identity(supervisor.id)
    # Commit nothing before Twilio answers: no lock is held while we wait on the network.
    session.rollback()
    try:
        leg = twilio.add_participant(conference_name(call_id), f"client:{identity}", **options)
    except TwilioUnavailable as exc:
        raise SupervisionError("twilio_failed", str(exc)) from None
    _note(session, supervisor, call_id, f"supervisor_{mode}", f"supervision.{mode}", utcnow(),
          handler_id=entry.handler_id)
    return {"call_id": call_id, "mode": mode, "identity": identity, "leg_sid": leg, "conference": conference_name(call_id)}


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
    from .realtime import emit_local, has_local_clients

    # Each process pushes to the supervisors connected to it (see realtime.py), and to none if it has none.
    if not has_local_clients(SUPERVISORS):
        return
    # No app context is pushed: its teardown would close the session of a request committing now.
    with db.transaction() as session:
        body = reports.wallboard(session, utcnow())
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
    """Push the wallboard after every committed change to the queue, to presence, and after a risk alert."""
    from .risk import ALERT_TOPIC

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
