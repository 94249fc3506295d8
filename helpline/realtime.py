"""Socket.IO: the `/console` namespace, and pushing routing's changes to the consoles as they commit.

The server emits, on `/console`:
  * `queue` (the body of GET /api/queue) to every console on every change, and on connect;
  * `offer` {call_id, need, flags, kind, waiting_s, expires_at, timeout_s} to the offered handler;
  * `offer_withdrawn` {call_id, reason} (timeout, declined, abandoned, disconnected, status_changed,
    accepted_another) to that handler;
  * `presence` {presence, since} to the handler whose presence changed, and on connect;
  * `connect_failed` {call_id, detail} to the handler whose accept Twilio could not connect.
Rooms: `handler:<id>` for each handler's consoles, `supervisors` for supervisors. Broadcasts carry
no personal data. With `redis_url` set, any process can emit to clients connected to any other.

`start_sweeper` runs the periodic pass (offers and wrap-ups that expire, callbacks that fall due,
stale connections) in a daemon thread; `helpline serve` starts it, tests call the functions.
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

from flask import Flask, current_app, request
from flask_login import current_user
from flask_socketio import Namespace, SocketIO, emit, join_room

from . import presence, routing
from .db import db
from .models import Handler, utcnow

log = logging.getLogger(__name__)

NAMESPACE = "/console"
#: Roles that may open the console's socket.
ROLES = ("handler", "supervisor")
#: Seconds between sweeps: offers expire within this of their deadline.
SWEEP_EVERY_S = 1.0

socketio = SocketIO()


def handler_room(handler_id: int) -> str:
    """The room of one handler's consoles."""
    return f"handler:{handler_id}"


def _handler_for(user_id: int) -> Handler | None:
    from sqlalchemy import select

    return db.session.scalar(select(Handler).where(Handler.user_id == user_id))


class ConsoleNamespace(Namespace):
    """The console's live channel: logged-in handlers and supervisors only."""

    def on_connect(self, auth: Any = None) -> None:
        """Refuse strangers; join the rooms; send the current state back (so a reconnect restores it)."""
        if not current_user.is_authenticated or current_user.role not in ROLES:
            raise ConnectionRefusedError("login_required")
        now = utcnow()
        settings = current_app.config["HELPLINE"]
        if current_user.role == "supervisor":
            join_room("supervisors")
            emit("queue", routing.queue_view(db.session, now))
            db.session.rollback()
            return
        handler = _handler_for(current_user.id)
        if handler is None:
            raise ConnectionRefusedError("not_a_handler")
        handler_id = handler.id
        join_room(handler_room(handler_id))
        presence.connect(db.session, request.sid, handler_id, current_app.extensions["helpline.process"], now)  # type: ignore[attr-defined]
        db.session.commit()
        emit("queue", routing.queue_view(db.session, now))
        emit("presence", {"presence": handler.presence, "since": handler.presence_since.isoformat()})
        offer = routing.current_offer(db.session, handler, settings.routing, now)
        if offer is not None:
            emit("offer", offer)
        # End the read before routing writes in a session of its own (SQLite has one writer at a time).
        db.session.rollback()
        # A handler who was already available could take a waiting call now that they are connected.
        db.bus.publish("handler_free", handler_id=handler_id)

    def on_disconnect(self, reason: Any = None) -> None:
        """Forget the connection; the handler's offer moves on if it was their last."""
        with db.transaction() as session:
            presence.disconnect(session, request.sid, utcnow())  # type: ignore[attr-defined]


def broadcast_queue() -> None:
    """Send every console the queue as it is now.

    Runs inside another session's commit (see events.py), so it uses a session of its own and
    pushes no app context, whose teardown would close the committing request's session.
    """
    with db.transaction() as session:
        body = routing.queue_view(session, utcnow())
    socketio.emit("queue", body, namespace=NAMESPACE)


def _to_handler(event: str, handler_id: int, payload: dict[str, Any]) -> None:
    socketio.emit(event, payload, to=handler_room(handler_id), namespace=NAMESPACE)


def init_app(app: Flask) -> None:
    """Bind Socket.IO to the app (through Redis when configured) and push committed changes."""
    settings = app.config["HELPLINE"]
    app.extensions["helpline.process"] = uuid.uuid4().hex
    # Origins are left at the default: only pages served by this host may open the socket.
    socketio.init_app(app, async_mode="threading", message_queue=settings.redis_url)
    socketio.on_namespace(ConsoleNamespace(NAMESPACE))
    bus = db.bus
    bus.subscribe("console_changed", broadcast_queue)
    bus.subscribe("offer", lambda handler_id, offer: _to_handler("offer", handler_id, offer))
    bus.subscribe("offer_withdrawn", lambda handler_id, call_id, reason:
                  _to_handler("offer_withdrawn", handler_id, {"call_id": call_id, "reason": reason}))
    bus.subscribe("presence", lambda handler_id, presence, since:
                  _to_handler("presence", handler_id, {"presence": presence, "since": since}))
    bus.subscribe("connect_failed", lambda handler_id, call_id, detail:
                  _to_handler("connect_failed", handler_id, {"call_id": call_id, "detail": detail}))


def sweep_once(app: Flask) -> None:
    """One periodic pass: keep this process's connections alive, drop dead ones, expire, route."""
    settings = app.config["HELPLINE"]
    with db.transaction() as session:
        now = utcnow()
        presence.heartbeat(session, app.extensions["helpline.process"], now)
        presence.prune(session, now)
        routing.sweep(session, settings.routing, now)


def start_sweeper(app: Flask, every_s: float = SWEEP_EVERY_S) -> threading.Event:
    """Run `sweep_once` every `every_s` seconds in a daemon thread; set the returned event to stop it."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every_s):
            try:
                sweep_once(app)
            except Exception:  # noqa: BLE001 - a failed pass is logged and the next one tries again
                log.exception("routing sweep failed")

    threading.Thread(target=loop, name="helpline-sweeper", daemon=True).start()
    return stop
