"""Socket.IO: the `/console` namespace, and pushing routing's changes to the consoles as they commit.

The server emits, on `/console`:
  * `queue` (the body of GET /api/queue) to every console on every change, and on connect;
  * `offer` {call_id, need, flags, kind, waiting_s, offered_at, expires_at, timeout_s} to the offered handler;
  * `offer_withdrawn` {call_id, reason} (timeout, declined, abandoned, disconnected, status_changed,
    accepted_another) to that handler;
  * `presence` {presence, since, reason?} to the handler whose presence changed (`reason` when the
    service moved them without their asking: `offer_missed`, `handler_unreachable`), on connect,
    and again to every handler connected to a process whose Redis subscription has come back;
  * `connect_failed` {call_id, detail} to the handler whose accept Twilio could not connect;
  * `session_expired` {} to a connection left idle past `security.session_idle_minutes`, or whose
    log-in session has ended (log-out, a password change, an admin's "sign out everywhere", the
    absolute limit: see staff_sessions.py), which is then closed.
The client may send `heartbeat` (the handler's console does while on duty): the connection is in
use, like any request that refreshes the log-in session. Who may send and receive what is in the
role matrix (helpline/permissions.py).
Rooms: `handler:<id>` for each handler's consoles, `supervisors` for supervisors. Broadcasts carry
no personal data. With `redis_url` set, any process can emit to clients connected to any other.

Several processes: an event for one handler crosses Redis to whichever process holds their socket.
The views everyone shares (`queue`, and the supervisors' `wallboard`) do not: each process reads
them from the database and sends them to its own sockets only, and a change committed in one
process reaches the others as a small notice on the same Redis channel (ConsoleMessageQueue), so
that no process pushes a whole queue through Redis for every console of every other process.

`start_sweeper` runs the periodic pass (offers and wrap-ups that expire, callbacks that fall due,
stale connections) in a daemon thread; `helpline serve` starts it, tests call the functions.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import threading
import time
import uuid
from typing import Any, Callable

from flask import Flask, current_app, request
from flask import session as login_session
from flask_login import current_user
from flask_socketio import Namespace, SocketIO, emit, join_room
import socketio as python_socketio
from sqlalchemy import select
from sqlalchemy.engine import make_url

from . import lifecycle, presence, routing, security, staff_sessions
from .db import db
from .events import Coalescer
from .models import Handler, utcnow

log = logging.getLogger(__name__)

NAMESPACE = "/console"
#: Roles that may open the console's socket.
ROLES = ("handler", "supervisor")
#: Seconds between sweeps: offers expire within this of their deadline.
SWEEP_EVERY_S = 1.0
#: Where each app keeps its SocketLeases.
LEASES = "helpline.socket_leases"
#: Shortest gap between two `queue` broadcasts of one serving process (see start_queue_broadcaster).
#: A second is what a person reading the line needs (its timers tick in the browser), and offers
#: never wait for it; at 0.25 s, 50 consoles parsing the whole line took as much CPU as the service.
QUEUE_MIN_GAP_S = 1.0
BROADCASTER = "helpline.queue_broadcaster"

socketio = SocketIO()


#: The start of a handler's room's name.
HANDLER_ROOM = "handler:"


def handler_room(handler_id: int) -> str:
    """The room of one handler's consoles."""
    return f"{HANDLER_ROOM}{handler_id}"


def supervisor_room(user_id: int) -> str:
    """The room of one supervisor's pages (beside the room of all of them, "supervisors")."""
    return f"supervisor:{user_id}"


def _handler_for(user_id: int) -> Handler | None:
    from sqlalchemy import select

    return db.session.scalar(select(Handler).where(Handler.user_id == user_id))


class SocketLeases:
    """When each of this process's connections was last in use, so that idle ones can be closed.

    A Socket.IO connection keeps the copy of the log-in session it was opened with, and HTTP requests
    that refresh the session never reach it; left alone it would outlive the idle limit forever on an
    unattended screen. Each connection therefore has a lease here, renewed by the client's
    `heartbeat`, and `expire_idle_sockets` closes the ones that ran out. Only the process holding a
    connection needs to know about it, so this lives in memory.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, float] = {}
        #: Each connection's log-in session (the hash of its token), checked by `close_ended_sessions`.
        self._session: dict[str, str] = {}

    def open(self, sid: str, moment: float, session_hash: str = "") -> None:
        """A connection has just been opened (by a session that was not idle)."""
        with self._lock:
            self._seen[sid] = moment
            self._session[sid] = session_hash

    def open_sids(self) -> list[str]:
        """The connections open now."""
        with self._lock:
            return list(self._seen)

    def sessions(self) -> dict[str, str]:
        """Each open connection's log-in session hash."""
        with self._lock:
            return dict(self._session)

    def renew(self, sid: str, moment: float, limit_s: float) -> bool:
        """Mark the connection in use; False if its lease had already run out (it must be closed)."""
        with self._lock:
            seen = self._seen.get(sid)
            if seen is None or moment - seen > limit_s:
                return False
            self._seen[sid] = moment
            return True

    def close(self, sid: str) -> None:
        """The connection has gone."""
        with self._lock:
            self._seen.pop(sid, None)
            self._session.pop(sid, None)

    def expired(self, moment: float, limit_s: float) -> list[str]:
        """The connections idle for longer than `limit_s`, removed from the leases."""
        with self._lock:
            gone = [sid for sid, seen in self._seen.items() if moment - seen > limit_s]
            for sid in gone:
                del self._seen[sid]
                self._session.pop(sid, None)
            return gone


def _end_idle_socket(sid: str) -> None:
    """Tell the console why, then close the connection (on_disconnect tidies presence as for any close)."""
    socketio.emit("session_expired", {}, to=sid, namespace=NAMESPACE)
    socketio.server.disconnect(sid, namespace=NAMESPACE)


def expire_idle_sockets(app: Flask) -> list[str]:
    """Close this process's connections idle past `security.session_idle_minutes`; returns their ids."""
    limit = app.config["HELPLINE"].security.session_idle_minutes * 60
    gone = app.extensions[LEASES].expired(security.now(), limit)
    for sid in gone:
        _end_idle_socket(sid)
    return gone


def close_ended_sessions(app: Flask) -> list[str]:
    """Close this process's connections whose log-in session has ended (revoked, idle or past its
    absolute limit) since they were opened; returns their ids. One query for all of them."""
    leases: SocketLeases = app.extensions[LEASES]
    held = leases.sessions()
    if not held:
        return []
    with db.transaction() as session:
        still = staff_sessions.still_open(session, held.values(), app.config["HELPLINE"])
    gone = [sid for sid, hashed in held.items() if hashed not in still]
    for sid in gone:
        leases.close(sid)
        _end_idle_socket(sid)
    return gone


def _session_hash() -> str:
    token = login_session.get(staff_sessions.TOKEN_KEY)
    return staff_sessions.token_hash(token) if isinstance(token, str) else ""


class ConsoleNamespace(Namespace):
    """The console's live channel: logged-in handlers and supervisors only."""

    def on_connect(self, auth: Any = None) -> None:
        """Refuse strangers and idle sessions; join the rooms; send the current state back (so a reconnect restores it)."""
        if not current_user.is_authenticated or current_user.role not in ROLES:
            raise ConnectionRefusedError("login_required")
        # The handshake does not pass through the HTTP session check (staff_sessions.py), so it is made here.
        record, _ended = staff_sessions.check(db.session, login_session, touch=False)
        db.session.commit()
        if record is None:
            raise ConnectionRefusedError("session_expired")
        current_app.extensions[LEASES].open(request.sid, security.now(), _session_hash())  # type: ignore[attr-defined]
        now = utcnow()
        settings = current_app.config["HELPLINE"]
        if current_user.role == "supervisor":
            join_room("supervisors")
            join_room(supervisor_room(current_user.id))
            emit("queue", routing.queue_view(db.session, now))
            db.session.rollback()
            return
        handler = _handler_for(current_user.id)
        if handler is None:
            current_app.extensions[LEASES].close(request.sid)  # type: ignore[attr-defined]
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

    def on_heartbeat(self, data: Any = None) -> dict[str, bool]:
        """The console is in use (a handler on duty): renew the connection's lease, or end it if it ran out."""
        sid: str = request.sid  # type: ignore[attr-defined]
        hashed = _session_hash()
        with db.transaction() as session:
            open_now = hashed in staff_sessions.still_open(session, [hashed])
            if open_now:
                staff_sessions.touch_hash(session, hashed)  # a console on duty keeps its log-in alive
        if not open_now or not current_app.extensions[LEASES].renew(sid, security.now(), security.idle_limit_s()):
            current_app.extensions[LEASES].close(sid)
            _end_idle_socket(sid)
            return {"ok": False}
        return {"ok": True}

    def on_disconnect(self, reason: Any = None) -> None:
        """Forget the connection; the handler's offer moves on if it was their last."""
        current_app.extensions[LEASES].close(request.sid)  # type: ignore[attr-defined]
        with db.transaction() as session:
            gone = presence.disconnect(session, request.sid)  # type: ignore[attr-defined]
            if gone is not None:
                lifecycle.handler_gone(session, gone, utcnow())


class ConsoleMessageQueue(python_socketio.RedisManager):
    """Socket.IO's Redis message queue, which also carries `notice`s between serving processes.

    A notice names a topic (`console_changed`) and nothing else; every other process hears it on
    its listening thread and tells its own subscribers, who then read what changed from the
    database. It travels on the Socket.IO channel as an emit to a namespace no client can join,
    so Redis outages, reconnection and the channel's name are handled in one place.
    """

    NOTICE_NAMESPACE = "/_helpline_notices"
    #: Heard by this process alone, when its subscription comes back after Redis was away.
    RESUBSCRIBED = "resubscribed"
    #: Seconds between the first tries to subscribe again after Redis went away, and the most.
    #: python-socketio doubles its pause up to a minute; offers time out in 20 s, so a process
    #: that kept missing them for most of a minute after Redis had returned would strand them.
    RETRY_FIRST_S = 0.5
    RETRY_MAX_S = 2.0

    def __init__(self, url: str, channel: str):
        self.listeners: dict[str, list[Callable[[], None]]] = {}
        #: Whether this process holds a live subscription to the channel now (what /healthz reports).
        self.subscribed = False
        #: Whether the listening thread has started (python-socketio starts it with the first socket,
        #: `helpline serve` at start-up: see start_listening).
        self.listening = False
        super().__init__(url, channel=channel)

    def _redis_listen_with_retries(self) -> Any:
        """python-socketio's listening loop, with a short, capped pause between tries and the state
        of the subscription kept for /healthz.

        Redis keeps nothing for a subscriber that is away: whatever was published meanwhile is lost
        to this process, so each subscription after the first is announced (RESUBSCRIBED).
        """
        self.listening = True
        pause, first = self.RETRY_FIRST_S, True
        while True:
            try:
                self._redis_connect()
                pubsub = self.pubsub
                pubsub.subscribe(self.channel)
                self.subscribed, pause = True, self.RETRY_FIRST_S
                if not first:
                    self._tell(self.RESUBSCRIBED)
                first = False
                yield from pubsub.listen()
            except Exception as exc:  # noqa: BLE001 - any failure means "not subscribed": try again shortly
                if self.subscribed or pause == self.RETRY_FIRST_S:
                    log.warning("the Redis subscription is down (%s); trying again every %g s at most",
                                exc.__class__.__name__, self.RETRY_MAX_S)
                self.subscribed = False
                time.sleep(pause)
                pause = min(pause * 2, self.RETRY_MAX_S)

    def on_notice(self, topic: str, listener: Callable[[], None]) -> None:
        """Call `listener()` when another process sends a notice of `topic`."""
        self.listeners.setdefault(topic, []).append(listener)

    def notice(self, topic: str) -> None:
        """Tell the other processes that `topic` changed (this process's subscribers already know)."""
        self._publish({"method": "emit", "event": topic, "data": None, "namespace": self.NOTICE_NAMESPACE,
                       "room": None, "skip_sid": None, "callback": None, "host_id": self.host_id})

    def _handle_emit(self, message: dict[str, Any]) -> None:
        if message.get("namespace") != self.NOTICE_NAMESPACE:
            super()._handle_emit(message)
            return
        self._tell(str(message.get("event")))

    def _tell(self, topic: str) -> None:
        for listener in self.listeners.get(topic, ()):
            try:
                listener()
            except Exception:  # noqa: BLE001 - one broken listener must not stop Socket.IO's thread
                log.exception("notice listener for %s failed", topic)


def message_queue() -> ConsoleMessageQueue | None:
    """This process's Redis message queue, or None when it serves alone."""
    manager = getattr(socketio.server, "manager", None)
    return manager if isinstance(manager, ConsoleMessageQueue) else None


def _local_rooms() -> dict[Any, Any]:
    """The `/console` rooms of the sockets connected to this process, each with its members."""
    manager = getattr(socketio.server, "manager", None)
    return getattr(manager, "rooms", {}).get(NAMESPACE, {})


def has_local_clients(room: str | None = None) -> bool:
    """Whether a socket connected to this process is on `/console` (in `room`, if given)."""
    return bool(_local_rooms().get(room))


def emit_local(event: str, body: Any, to: str | None = None) -> None:
    """Send to the sockets connected to this process only (the others send to theirs)."""
    socketio.emit(event, body, to=to, namespace=NAMESPACE, ignore_queue=True)


def subscription_state() -> str | None:
    """'ok' when this process holds a live subscription to the Redis channel, else why not; None when
    the process serves alone (no Redis) or has not started listening (no console yet, outside `serve`)."""
    shared = message_queue()
    if shared is None or not shared.listening:
        return None
    return "ok" if shared.subscribed else "unavailable (no live subscription)"


def start_listening() -> None:
    """Called by `helpline serve`: subscribe to the Redis channel at start-up, not with the first
    console, so that /healthz reports the subscription from the start."""
    server = socketio.server
    if message_queue() is not None and server is not None and not server.manager_initialized:
        server.manager_initialized = True
        server.manager.initialize()


def broadcast_queue() -> None:
    """Send the queue as it is now to every console connected to this process.

    Runs inside another session's commit (see events.py), so it uses a session of its own and
    pushes no app context, whose teardown would close the committing request's session.
    """
    if not has_local_clients():
        return
    with db.transaction() as session:
        body = routing.queue_view(session, utcnow())
    emit_local("queue", body)


def start_queue_broadcaster(app: Flask, min_gap_s: float = QUEUE_MIN_GAP_S) -> Coalescer:
    """Called by `helpline serve`: send `queue` from a thread, at most once every `min_gap_s` (without it, each change sends one).

    Under load the queue changes many times a second (every caller joining, every offer, accept and
    hang-up), and each `queue` event carries the whole line to every console: sent after each
    change, it would cost the service a query and every console a parse per change, most of them
    stale before they arrive. The first change after a quiet spell is sent at once; changes during
    the gap that follows are folded into one event at its end, which reads the queue as it is then.
    Offers and presence go to their handler at once, never through here. Every process runs one,
    for its own consoles.
    """
    broadcaster = Coalescer("helpline-queue-broadcast", broadcast_queue, min_gap_s=min_gap_s)
    broadcaster.thread.start()
    app.extensions[BROADCASTER] = broadcaster
    return broadcaster


def resend_offers(app: Flask) -> int:
    """Send again to this process's consoles every offer still outstanding for them; returns how many.

    Called when this process's Redis subscription comes back after an outage: an offer another
    process made meanwhile could not reach a console connected here, and would otherwise ring
    nowhere until it timed out and put the handler on break. A console shown an offer it already
    has keeps it as it is.
    """
    here = [int(room.removeprefix(HANDLER_ROOM)) for room, sids in _local_rooms().items()
            if isinstance(room, str) and room.startswith(HANDLER_ROOM) and sids]
    if not here:
        return 0
    sent = 0
    settings = app.config["HELPLINE"].routing
    with db.transaction() as session:
        for handler in session.scalars(select(Handler).where(Handler.id.in_(here), Handler.presence == "offered")):
            offer = routing.current_offer(session, handler, settings, utcnow())
            if offer is not None:
                emit_local("offer", offer, to=handler_room(handler.id))
                sent += 1
    if sent:
        log.info("re-sent %d outstanding offer(s) after the Redis subscription came back", sent)
    return sent


def resend_presence(app: Flask) -> int:
    """Send each handler connected to this process their own presence as it is now; returns how many.

    Called when the Redis subscription comes back: a handler whose offer, made by another process,
    expired while Redis was away was put on break without their console hearing of it. The console
    tells a handler moved to a break they did not choose, on screen and with a sound.
    """
    here = [int(room.removeprefix(HANDLER_ROOM)) for room, sids in _local_rooms().items()
            if isinstance(room, str) and room.startswith(HANDLER_ROOM) and sids]
    if not here:
        return 0
    with db.transaction() as session:
        rows = session.execute(select(Handler.id, Handler.presence, Handler.presence_since).where(Handler.id.in_(here))).all()
    for handler_id, presence_now, since in rows:
        emit_local("presence", {"presence": presence_now, "since": since.isoformat(), "resent": True},
                   to=handler_room(handler_id))
    return len(rows)


def _presence_payload(presence: str, since: str, reason: str | None = None) -> dict[str, Any]:
    return {"presence": presence, "since": since, **({"reason": reason} if reason else {})}


def _to_handler(event: str, handler_id: int, payload: dict[str, Any]) -> None:
    socketio.emit(event, payload, to=handler_room(handler_id), namespace=NAMESPACE)


def redis_channel(settings: Any) -> str:
    """The Redis channel of this deployment's Socket.IO events: one per database.

    Every process of one deployment names the same database, so they share a channel; two
    deployments (or test runs, or benchmarks) that share a Redis server but not a database never
    see each other's events - Redis channels are server-wide, and both would have a `handler:1`.
    """
    url = make_url(settings.resolved_database_url)
    where = f"{url.get_backend_name()}://{url.host or ''}:{url.port or ''}/{url.database or ''}"
    return "helpline-" + hashlib.sha256(where.encode()).hexdigest()[:16]


def async_mode() -> str:
    """"gevent" in a worker gevent has patched (`helpline serve` on PostgreSQL, server.py), else "threading".

    Said outright: left to choose, Flask-SocketIO would pick gevent whenever it is installed.
    """
    monkey = sys.modules.get("gevent.monkey")
    return "gevent" if monkey is not None and monkey.is_module_patched("socket") else "threading"


def init_app(app: Flask) -> None:
    """Bind Socket.IO to the app (through Redis when configured) and push committed changes."""
    settings = app.config["HELPLINE"]
    app.extensions["helpline.process"] = uuid.uuid4().hex
    app.extensions[LEASES] = SocketLeases()
    # Origins are left at the default: only pages served by this host may open the socket.
    if settings.redis_url:
        socketio.init_app(app, async_mode=async_mode(),
                          client_manager=ConsoleMessageQueue(settings.redis_url, redis_channel(settings)))
    else:
        socketio.init_app(app, async_mode=async_mode())
    socketio.on_namespace(ConsoleNamespace(NAMESPACE))
    bus = db.bus

    def queue_changed_here() -> None:
        broadcaster: Coalescer | None = app.extensions.get(BROADCASTER)
        if broadcaster is not None:
            broadcaster.request()
        else:
            broadcast_queue()

    def console_changed() -> None:
        queue_changed_here()
        shared = message_queue()
        if shared is not None:
            try:
                shared.notice("console_changed")
            except Exception:  # noqa: BLE001 - Redis is away: this process's consoles are told all the same
                log.warning("could not tell the other processes that the queue changed (Redis unavailable)")

    bus.subscribe("console_changed", console_changed)
    shared = message_queue()
    if shared is not None:
        # Another process changed the queue: the consoles connected here are told, as for a change made here.
        shared.on_notice("console_changed", lambda: bus.publish("console_changed_elsewhere"))
        bus.subscribe("console_changed_elsewhere", queue_changed_here)
        # Back after Redis was away: what the other processes sent meanwhile is lost to this one.
        def resubscribed() -> None:
            log.warning("the Redis subscription is back: sending this process's consoles what they may have missed")
            resend_presence(app)
            resend_offers(app)
            queue_changed_here()

        shared.on_notice(ConsoleMessageQueue.RESUBSCRIBED, resubscribed)
    bus.subscribe("offer", lambda handler_id, offer: _to_handler("offer", handler_id, offer))
    bus.subscribe("offer_withdrawn", lambda handler_id, call_id, reason:
                  _to_handler("offer_withdrawn", handler_id, {"call_id": call_id, "reason": reason}))
    bus.subscribe("presence", lambda handler_id, presence, since, reason=None:
                  _to_handler("presence", handler_id, _presence_payload(presence, since, reason)))
    bus.subscribe("connect_failed", lambda handler_id, call_id, detail:
                  _to_handler("connect_failed", handler_id, {"call_id": call_id, "detail": detail}))
    bus.subscribe("consult", _consult_changed)


def _consult_changed(call_id: int, state: str, handler_id: int, supervisor_id: int) -> None:
    """A supervisor asked into a call answered, was brought in to the caller, was sent back or left
    (connect.CONSULT_STATES): both the handler and that supervisor are told, so that neither screen
    says the caller cannot hear them when they can."""
    payload = {"call_id": call_id, "state": state}
    _to_handler("consult", handler_id, payload)
    socketio.emit("consult", payload, to=supervisor_room(supervisor_id), namespace=NAMESPACE)


def adopt_identity(app: Flask, identity: str) -> None:
    """Name this serving process by its host and port, and drop the console connections a previous
    process of that name left behind: it was killed or crashed, and its browsers are reconnecting
    (here or elsewhere). Without this they would linger until `presence.STALE` had passed, and
    routing would keep offering calls to consoles that are gone."""
    app.extensions["helpline.process"] = identity
    try:
        with db.transaction() as session:
            now = utcnow()
            for handler_id in presence.forget_process(session, identity):
                lifecycle.handler_gone(session, handler_id, now)
    except Exception:  # noqa: BLE001 - the database may be down; the sweeper prunes them once they go stale
        log.exception("could not clear the console connections of a previous %s", identity)


def sweep_once(app: Flask) -> None:
    """One periodic pass: close idle connections, keep this process's others alive, drop dead ones, expire, route."""
    settings = app.config["HELPLINE"]
    expire_idle_sockets(app)
    close_ended_sessions(app)
    with db.transaction() as session:
        now = utcnow()
        presence.heartbeat(session, app.extensions["helpline.process"], app.extensions[LEASES].open_sids(), now)
        for handler_id in presence.prune(session, now):
            lifecycle.handler_gone(session, handler_id, now)
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
