"""The `/console` Socket.IO namespace: who may connect, what they are sent, and offers moving on
when a handler's console goes away."""

from __future__ import annotations

from typing import Any

from flask import Flask
from sqlalchemy import select

from helpline.db import db
from helpline.models import ConsoleConnection, QueueEntry
from helpline.realtime import NAMESPACE, socketio

from .conftest import shows_number
from .test_console_api import Console, queued_call


def connect(app: Flask, console: Console | None = None):  # type: ignore[no-untyped-def]
    """A Socket.IO client on /console, logged in as `console` (or nobody)."""
    flask_client = console.client if console is not None else app.test_client()
    return socketio.test_client(app, namespace=NAMESPACE, flask_test_client=flask_client)


def received(client: Any, name: str) -> list[Any]:
    """The payloads of the `name` events the client has received since last asked for that name."""
    pending = client.__dict__.setdefault("unread", [])
    pending.extend(client.get_received(NAMESPACE))
    client.unread = [event for event in pending if event["name"] != name]
    return [event["args"][0] for event in pending if event["name"] == name]


def entry_of(app: Flask, call_id: int) -> QueueEntry:
    with app.app_context():
        entry = db.session.scalar(select(QueueEntry).where(QueueEntry.call_id == call_id))
        db.session.expunge_all()
        return entry


def test_strangers_and_other_roles_are_refused(app):
    assert not connect(app).is_connected(NAMESPACE)
    clinician = Console(app, "doc", "clinician")
    assert not connect(app, clinician).is_connected(NAMESPACE)


def test_on_connect_a_console_gets_the_queue_and_its_presence(app):
    ann = Console(app, "ann")
    queued_call(app)
    socket = connect(app, ann)
    assert socket.is_connected(NAMESPACE)
    events = socket.get_received(NAMESPACE)
    queue = [event["args"][0] for event in events if event["name"] == "queue"][0]
    assert queue == ann.get("/api/queue").get_json() | {"calls": queue["calls"]}
    assert [call["position"] for call in queue["calls"]] == [1]
    [presence] = [event["args"][0] for event in events if event["name"] == "presence"]
    assert presence["presence"] == "offline"
    with app.app_context():
        assert db.session.scalar(select(ConsoleConnection.handler_id)) == ann.handler_id
    socket.disconnect(NAMESPACE)
    with app.app_context():
        assert db.session.scalar(select(ConsoleConnection.handler_id)) is None


def test_a_new_call_is_offered_to_the_free_handler_and_every_console_sees_the_queue(app):
    ann = Console(app, "ann")
    supervisor = Console(app, "sue", "supervisor")
    ann_socket, sue_socket = connect(app, ann), connect(app, supervisor)
    ann.post("/api/me/status", {"status": "available"})
    assert received(ann_socket, "presence")[-1]["presence"] == "available"
    received(sue_socket, "queue")
    _, call_id = queued_call(app)
    [offer] = received(ann_socket, "offer")
    assert offer["call_id"] == call_id and offer["need"] == "mental_health" and offer["flags"] == []
    assert offer["timeout_s"] == 20 and offer["expires_at"] and offer["waiting_s"] >= 0
    assert set(offer) == {"call_id", "need", "flags", "kind", "waiting_s", "offered_at", "expires_at", "timeout_s"}
    # The offer carries the moment of the `presence` change it caused, so a console can tell a reply
    # that set "available" before it from news that came after it.
    assert received(ann_socket, "presence")[-1] == {"presence": "offered", "since": offer["offered_at"]}
    queues = received(sue_socket, "queue")
    assert queues and queues[-1]["calls"][0]["id"] == call_id
    assert not shows_number(str(queues))
    assert [handler["presence"] for handler in queues[-1]["handlers"]] == ["offered"]
    assert received(sue_socket, "offer") == []
    me = ann.get("/api/me").get_json()
    assert me["presence"] == "offered" and me["offer"]["call_id"] == call_id


def test_a_reconnecting_console_gets_its_offer_back(app):
    ann = Console(app, "ann")
    first_tab = connect(app, ann)
    second_tab = connect(app, ann)
    ann.post("/api/me/status", {"status": "available"})
    _, call_id = queued_call(app)
    assert received(first_tab, "offer")[0]["call_id"] == call_id
    first_tab.disconnect(NAMESPACE)  # another tab is still open: the offer stays
    assert entry_of(app, call_id).state == "offered"
    reloaded = connect(app, ann)
    assert received(reloaded, "offer")[0]["call_id"] == call_id
    assert second_tab.is_connected(NAMESPACE)


def ann_offered_a_call_with_bob_free(app: Flask) -> tuple[Console, Console, Any, Any, int]:
    """Ann is offered a call; then Bob, his console open, becomes free too (and is offered nothing).
    Returns both consoles, both sockets and the call."""
    ann, bob = Console(app, "ann"), Console(app, "bob")
    ann_socket = connect(app, ann)
    ann.post("/api/me/status", {"status": "available"})
    _, call_id = queued_call(app)
    assert received(ann_socket, "offer")[0]["call_id"] == call_id
    bob_socket = connect(app, bob)
    bob.post("/api/me/status", {"status": "available"})
    assert received(bob_socket, "offer") == []
    return ann, bob, ann_socket, bob_socket, call_id


def test_an_offer_moves_on_at_once_when_the_handler_closes_the_console(app):
    ann, bob, ann_socket, bob_socket, call_id = ann_offered_a_call_with_bob_free(app)
    ann_socket.disconnect(NAMESPACE)
    [offer] = received(bob_socket, "offer")
    assert offer["call_id"] == call_id
    entry = entry_of(app, call_id)
    assert entry.state == "offered" and entry.handler_id == bob.handler_id
    assert ann.get("/api/me").get_json()["presence"] == "offline"


def test_a_console_whose_closing_was_not_recorded_is_dropped_once_stale_and_its_offer_moves_on(app, monkeypatch):
    """The console closed while its closing could not be written. The process no longer keeps that
    connection alive, so it goes stale: the sweep drops it, the handler goes offline, and the call
    is offered to the next handler. The console still open is kept alive meanwhile."""
    import datetime as dt

    from sqlalchemy import update
    from sqlalchemy.exc import OperationalError

    from helpline import presence
    from helpline.models import utcnow
    from helpline.realtime import sweep_once

    ann, bob, ann_socket, bob_socket, call_id = ann_offered_a_call_with_bob_free(app)

    def database_away(*_args: Any) -> None:
        raise OperationalError("DELETE FROM console_connections", None, Exception("server closed the connection"))

    with monkeypatch.context() as patch:
        patch.setattr(presence, "disconnect", database_away)
        try:
            ann_socket.disconnect(NAMESPACE)
        except OperationalError:
            pass  # the closing was not recorded
    with app.app_context():
        db.session.execute(update(ConsoleConnection).values(seen_at=utcnow() - dt.timedelta(seconds=30)))
        db.session.commit()
    sweep_once(app)
    with app.app_context():
        seen = dict(db.session.execute(select(ConsoleConnection.handler_id, ConsoleConnection.seen_at)).all())
        db.session.rollback()
    assert utcnow() - seen[ann.handler_id] > dt.timedelta(seconds=29)  # not kept alive
    assert utcnow() - seen[bob.handler_id] < dt.timedelta(seconds=10)  # kept alive
    assert entry_of(app, call_id).handler_id == ann.handler_id
    with app.app_context():
        db.session.execute(update(ConsoleConnection).where(ConsoleConnection.handler_id == ann.handler_id)
                           .values(seen_at=utcnow() - dt.timedelta(seconds=61)))
        db.session.commit()
    sweep_once(app)
    assert ann.get("/api/me").get_json()["presence"] == "offline"
    [offer] = received(bob_socket, "offer")
    assert offer["call_id"] == call_id


def test_declining_withdraws_the_offer_and_it_goes_to_the_next_handler(app):
    ann, bob = Console(app, "ann"), Console(app, "bob")
    ann_socket, bob_socket = connect(app, ann), connect(app, bob)
    ann.post("/api/me/status", {"status": "available"})
    _, call_id = queued_call(app)
    bob.post("/api/me/status", {"status": "available"})
    assert received(ann_socket, "offer")[0]["call_id"] == call_id
    assert ann.post(f"/api/calls/{call_id}/decline").status_code == 200
    assert received(ann_socket, "offer_withdrawn") == [{"call_id": call_id, "reason": "declined"}]
    assert received(bob_socket, "offer")[0]["call_id"] == call_id


def test_a_caller_who_hangs_up_during_an_offer_is_recorded_and_the_handler_freed(app):
    from .conftest import Twilio

    ann = Console(app, "ann")
    ann_socket = connect(app, ann)
    ann.post("/api/me/status", {"status": "available"})
    walker, call_id = queued_call(app)
    received(ann_socket, "offer")
    Twilio(app.test_client()).post("/voice/status", {"CallSid": walker.sid, "CallStatus": "completed", "SequenceNumber": "5"})
    assert received(ann_socket, "offer_withdrawn") == [{"call_id": call_id, "reason": "abandoned"}]
    assert received(ann_socket, "queue")[-1]["calls"] == []
    entry = entry_of(app, call_id)
    assert entry.state == "abandoned" and entry.position_at_exit == 1
    assert ann.get("/api/me").get_json()["presence"] == "available"


def test_a_caller_who_hangs_up_during_an_offer_frees_the_handler_once(app, monkeypatch):
    """The status callback withdraws the offer and frees the handler; settling the call's holders
    after it (in the same transaction on SQLite) must take them as freed, not free them again."""
    from helpline import presence

    from .conftest import Twilio

    ann = Console(app, "ann")
    ann_socket = connect(app, ann)
    ann.post("/api/me/status", {"status": "available"})
    walker, call_id = queued_call(app)
    assert received(ann_socket, "offer")[0]["call_id"] == call_id
    moves: list[tuple[int, str]] = []
    real = presence.set_presence

    def spy(session, handler, to, now, reason=None):  # type: ignore[no-untyped-def]
        moves.append((handler.id, to))
        real(session, handler, to, now, reason)

    monkeypatch.setattr(presence, "set_presence", spy)
    Twilio(app.test_client()).post("/voice/status", {"CallSid": walker.sid, "CallStatus": "completed", "SequenceNumber": "5"})
    assert [to for _, to in moves] == ["available"]
    assert ann.get("/api/me").get_json()["presence"] == "available"


def test_a_missed_offer_sends_the_handler_on_break(app):
    from helpline.models import utcnow
    from helpline.realtime import sweep_once
    import datetime as dt

    ann = Console(app, "ann")
    ann_socket = connect(app, ann)
    ann.post("/api/me/status", {"status": "available"})
    _, call_id = queued_call(app)
    received(ann_socket, "offer")
    with app.app_context():
        entry = db.session.scalar(select(QueueEntry).where(QueueEntry.call_id == call_id))
        entry.offered_at = utcnow() - dt.timedelta(seconds=21)
        db.session.commit()
    sweep_once(app)
    assert received(ann_socket, "offer_withdrawn") == [{"call_id": call_id, "reason": "timeout"}]
    assert received(ann_socket, "presence")[-1]["presence"] == "break"
    assert entry_of(app, call_id).state == "waiting"


def test_after_redis_comes_back_outstanding_offers_are_sent_again_to_this_process_consoles(app):
    """An offer another process made while Redis was away never reached a console here: when this
    process's subscription comes back, it sends every outstanding offer of its consoles again."""
    from helpline.realtime import resend_offers

    ann, bob = Console(app, "ann"), Console(app, "bob")
    ann_socket, bob_socket = connect(app, ann), connect(app, bob)
    ann.post("/api/me/status", {"status": "available"})
    _, call_id = queued_call(app)
    assert [offer["call_id"] for offer in received(ann_socket, "offer")] == [call_id]
    received(bob_socket, "offer")
    assert resend_offers(app) == 1
    [again] = received(ann_socket, "offer")
    assert again["call_id"] == call_id and again["timeout_s"] == 20
    assert received(bob_socket, "offer") == []  # bob has no offer: nothing is sent to him
    ann.post(f"/api/calls/{call_id}/decline", {})
    assert resend_offers(app) == 0


def test_after_redis_comes_back_each_handler_here_is_sent_their_own_presence(app):
    """A handler whose offer (made by another process) timed out while Redis was away was put on a
    break their console never heard of: when the subscription comes back, it is told."""
    from helpline.models import Handler, utcnow
    from helpline.realtime import resend_presence

    ann = Console(app, "ann")
    ann_socket = connect(app, ann)
    received(ann_socket, "presence")
    with app.app_context():
        handler = db.session.get(Handler, ann.handler_id)
        handler.presence, handler.presence_since = "break", utcnow()  # as another process's sweep did
        db.session.commit()
    assert received(ann_socket, "presence") == []  # nothing reached this console meanwhile
    assert resend_presence(app) == 1
    [again] = received(ann_socket, "presence")
    assert again["presence"] == "break" and again["resent"] is True


def test_an_offer_that_times_out_says_why_the_handler_is_on_a_break(app):
    from helpline.realtime import sweep_once
    from helpline.models import utcnow
    import datetime as dt

    ann = Console(app, "ann")
    ann_socket = connect(app, ann)
    ann.post("/api/me/status", {"status": "available"})
    _, call_id = queued_call(app)
    assert [offer["call_id"] for offer in received(ann_socket, "offer")] == [call_id]
    with app.app_context():
        entry = db.session.scalar(select(QueueEntry).where(QueueEntry.call_id == call_id))
        entry.offered_at = utcnow() - dt.timedelta(minutes=5)
        db.session.commit()
    sweep_once(app)
    assert received(ann_socket, "presence")[-1] == {"presence": "break", "since": received_since(ann_socket, app),
                                                     "reason": "offer_missed"}


def received_since(socket: Any, app: Flask) -> str:  # type: ignore[no-untyped-def]
    from helpline.models import Handler

    with app.app_context():
        handler = db.session.scalar(select(Handler).where(Handler.presence == "break"))
        return handler.presence_since.isoformat()


def test_the_message_queue_tries_again_within_seconds_and_says_when_its_subscription_comes_back(monkeypatch):
    """Redis keeps nothing for an absent subscriber: each subscription after the first is announced,
    the pause between tries never grows past RETRY_MAX_S, and `subscribed` says whether one is live."""
    import socketio as python_socketio

    from helpline import realtime
    from helpline.realtime import ConsoleMessageQueue

    outages = iter([True, False, True, True, True, False])  # True: this try finds Redis away
    pauses: list[float] = []
    states: list[bool] = []

    class PubSub:
        def subscribe(self, channel):  # type: ignore[no-untyped-def]
            return channel

        def listen(self):  # type: ignore[no-untyped-def]
            states.append(queue.subscribed)
            yield {"type": "message"}
            raise ConnectionError("Redis went away")

    def connect(self):  # type: ignore[no-untyped-def]
        if next(outages):
            raise ConnectionError("connection refused")
        self.pubsub = PubSub()

    monkeypatch.setattr(python_socketio.RedisManager, "_redis_connect", connect)
    monkeypatch.setattr(realtime.time, "sleep", lambda seconds: (pauses.append(seconds), states.append(queue.subscribed)))
    queue = ConsoleMessageQueue.__new__(ConsoleMessageQueue)  # no Redis: only the (re)subscribing is exercised
    queue.listeners, queue.subscribed, queue.listening, queue.channel = {}, False, False, "c"
    heard: list[str] = []
    queue.on_notice(ConsoleMessageQueue.RESUBSCRIBED, lambda: heard.append("back"))
    loop = queue._redis_listen_with_retries()
    assert next(loop) == {"type": "message"} and heard == [] and queue.listening  # away once, then subscribed
    assert next(loop) == {"type": "message"} and heard == ["back"]  # away three times, then back
    assert pauses[0] == ConsoleMessageQueue.RETRY_FIRST_S
    assert max(pauses) <= ConsoleMessageQueue.RETRY_MAX_S <= 5 and len(pauses) == 5
    # Subscribed while listening; not while pausing between tries (what /healthz reports).
    assert states == [False, True, False, False, False, False, True]
