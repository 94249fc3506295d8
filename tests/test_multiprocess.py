"""Several `helpline serve` processes on one PostgreSQL database and one Redis: Socket.IO events
cross between processes, routing stays safe when processes race, and the scheduler runs once."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select, text, update

from helpline.bench.stack import Stack
from helpline.models import Call, ConsoleConnection, Handler, QueueEntry, User

from .conftest import fresh_postgres_database
from .multiprocess_support import Console, create_handler, scalar, servers, two_process_stack, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow, pytest.mark.xdist_group("processes")]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    yield from two_process_stack(tmp_path_factory.mktemp("multiprocess"))


def test_an_event_published_by_one_process_reaches_a_console_on_another(stack: Stack):
    create_handler(stack, "ann")
    ann = Console(stack.service_url(0), "ann")
    try:
        ann.wait_for("presence", lambda data: data["presence"] == "offline")
        # The session cookie is good at every process (one secret key): this request, and the
        # `presence` event it publishes, happen in process 1; ann's socket is on process 0.
        changed = ann.post("/api/me/status", {"status": "available"}, base=stack.service_url(1))
        assert changed.status_code == 200, changed.text
        assert ann.wait_for("presence", lambda data: data["presence"] == "available")["presence"] == "available"

        # A call arriving at process 1 is routed there and offered to ann's console on process 0.
        stack.emulator_client().register_client(ann.identity, auto_answer=True)
        sid = stack.emulator_client().place_call("+447700900111", url=f"{stack.service_url(1)}/voice/incoming",
                                                 keys=["1", "1", "1"])
        offer = ann.wait_for("offer", timeout=30)
        assert offer["need"] == "mental_health"
        assert scalar(stack, select(Call.id).where(Call.call_sid == sid)) == offer["call_id"]
        stack.emulator_client().hangup(sid)
    finally:
        ann.close()


def test_a_change_in_one_process_refreshes_the_queue_and_wallboard_of_consoles_on_another(stack: Stack):
    """`queue` and `wallboard` are sent by each process to its own sockets: a call that joins the
    line at process 1 must still reach a supervisor whose socket is on process 0, at once."""
    create_handler(stack, "sam", role="supervisor")
    sam = Console(stack.service_url(0), "sam")
    emulator = stack.emulator_client()
    try:
        sid = emulator.place_call("+447700900222", url=f"{stack.service_url(1)}/voice/incoming", keys=["1", "1", "2"])
        call_id = wait_until(lambda: scalar(stack, select(QueueEntry.call_id).join(Call, Call.id == QueueEntry.call_id)
                                            .where(Call.call_sid == sid)), 30, "the call never joined the line")
        line = sam.wait_for("queue", lambda body: any(call["id"] == call_id for call in body["calls"]), timeout=10)
        assert next(call for call in line["calls"] if call["id"] == call_id)["need"] == "addiction"
        assert sam.wait_for("wallboard", lambda body: body["waiting"] >= 1, timeout=10)["waiting"] >= 1
        emulator.hangup(sid)
        sam.wait_for("queue", lambda body: all(call["id"] != call_id for call in body["calls"]), timeout=10)
    finally:
        sam.close()


def test_two_handlers_on_two_processes_accepting_one_call_only_one_wins(stack: Stack):
    create_handler(stack, "bob")
    create_handler(stack, "cara")
    bob, cara = Console(stack.service_url(0), "bob"), Console(stack.service_url(1), "cara")
    emulator = stack.emulator_client()
    try:
        for console in (bob, cara):
            emulator.register_client(console.identity, auto_answer=True)
            assert console.post("/api/me/status", {"status": "available"}).status_code == 200
        # Handlers of the tests before closed their consoles: each is offline once the service has
        # heard the socket close (or is freed later with none open), so bob and cara alone may be offered the call.
        # A close that never reached the service (the machine busy) is heard at the Socket.IO ping
        # timeout instead, 25 + 20 s after the console's last ping: hence a minute.
        free = text("SELECT u.username, h.presence, (SELECT COUNT(*) FROM console_connections c WHERE c.handler_id = h.id) "
                    "FROM handlers h JOIN users u ON u.id = h.user_id WHERE h.presence IN ('available', 'offered')")
        wait_until(lambda: sorted(name for name, _presence, _consoles in rows(stack, free)) == ["bob", "cara"], 60,
                   lambda: f"free, with their consoles: {rows(stack, free)}")
        sid = emulator.place_call("+447700900222", url=f"{stack.service_url(0)}/voice/incoming", keys=["1", "1", "0"])
        offered_to = None
        for console in (bob, cara):
            try:
                offer = console.wait_for("offer", timeout=30 if offered_to is None else 1)
                offered_to = console
                call_id = offer["call_id"]
            except AssertionError:
                continue
        entry = select(QueueEntry.state, QueueEntry.handler_id).join(Call, Call.id == QueueEntry.call_id).where(Call.call_sid == sid)
        assert offered_to is not None, f"no offer; the call's entry: {scalar(stack, entry)}"
        start = threading.Barrier(2)
        answers: dict[str, int] = {}

        def accept(console: Console, name: str) -> None:
            start.wait()
            answers[name] = console.post(f"/api/calls/{call_id}/accept").status_code

        threads = [threading.Thread(target=accept, args=(bob, "bob")), threading.Thread(target=accept, args=(cara, "cara"))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert sorted(answers.values()) == [200, 409], answers
        assert scalar(stack, text("SELECT COUNT(*) FROM call_events WHERE call_id = :call_id AND kind = 'accepted'"),
                      call_id=call_id) == 1
        emulator.hangup(sid)
    finally:
        bob.close()
        cara.close()


def rows(stack: Stack, statement: Any) -> list[tuple[Any, ...]]:
    """Every row of a query on the stack's database."""
    engine = stack.sql_engine()
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(statement)]
    finally:
        engine.dispose()


# -- routing decisions racing in two processes -------------------------------------------------------

ROUNDS = 12
CALLS = 30
HANDLERS = 10


def _route_in_child(url: str, barrier: Any, results: Any) -> None:
    """In a process of its own: wait for the other, then route once and report the offers made."""
    from helpline import routing
    from helpline.config import RoutingSettings
    from helpline.db import Database

    database = Database()
    database.configure(url)
    settings = RoutingSettings(offer_timeout_s=20, wrap_up_s=120, skill_fallback_after_s=60)
    try:
        for _ in range(ROUNDS):
            barrier.wait(timeout=60)  # the parent has reset the line
            with database.transaction() as session:
                offers = routing.route(session, settings, dt.datetime.now(dt.timezone.utc))
            results.put([(offer.call_id, offer.handler_id) for offer in offers])
            barrier.wait(timeout=60)  # both have routed
    finally:
        database.dispose()


def _reset(database: Any, handler_ids: list[int], now: dt.datetime) -> None:
    with database.transaction() as session:
        session.execute(update(QueueEntry).values(state="waiting", handler_id=None, offered_at=None))
        session.execute(update(Handler).where(Handler.id.in_(handler_ids))
                        .values(presence="available", current_call_id=None, available_since=now))


def test_two_processes_routing_at_once_never_offer_a_call_twice(tmp_path: Path):
    postgres, _redis = servers()
    from helpline.db import Database, upgrade

    for url in fresh_postgres_database(postgres):
        upgrade(url)
        database = Database()
        database.configure(url)
        now = dt.datetime.now(dt.timezone.utc)
        with database.transaction() as session:
            handler_ids = []
            for index in range(HANDLERS):
                user = session.execute(insert(User).returning(User.id), [{
                    "username": f"racer{index}", "display_name": f"Racer {index}", "role": "handler", "password_hash": "-",
                    "active": True, "failed_logins": 0, "created_at": now}]).scalar_one()
                handler = session.execute(insert(Handler).returning(Handler.id), [{
                    "user_id": user, "presence": "available", "presence_since": now, "available_since": now,
                    "skills": ["mental_health", "addiction", "return_to_work"], "languages": ["en"]}]).scalar_one()
                session.execute(insert(ConsoleConnection), [{"sid": uuid.uuid4().hex, "handler_id": handler,
                                                             "process": "test", "connected_at": now, "seen_at": now}])
                handler_ids.append(handler)
            for index in range(CALLS):
                call = session.execute(insert(Call).returning(Call.id), [{
                    "call_sid": f"CA{uuid.uuid4().hex}", "started_at": now, "ivr_path": [], "answers": {}, "flags": [],
                    "twilio_sequence": -1, "caller_number_status": "withheld"}]).scalar_one()
                session.execute(insert(QueueEntry), [{"call_id": call, "kind": "live", "state": "waiting", "need": "speak_now",
                                                      "flags": [], "priority": 100, "declined_by": [], "attempts": 0,
                                                      "placed_at": now + dt.timedelta(milliseconds=index)}])
        context = multiprocessing.get_context("spawn")
        barrier, results = context.Barrier(3), context.Queue()
        children = [context.Process(target=_route_in_child, args=(url, barrier, results)) for _ in range(2)]
        try:
            for child in children:
                child.start()
            for _ in range(ROUNDS):
                _reset(database, handler_ids, now)
                barrier.wait(timeout=60)
                barrier.wait(timeout=60)
                offers = results.get(timeout=30) + results.get(timeout=30)
                calls = [call_id for call_id, _ in offers]
                handlers = [handler_id for _, handler_id in offers]
                assert len(set(calls)) == len(calls), f"a call was offered twice: {offers}"
                assert len(set(handlers)) == len(handlers), f"a handler got two offers: {offers}"
                with database.transaction() as session:
                    offered = session.execute(select(QueueEntry.call_id, QueueEntry.handler_id)
                                              .where(QueueEntry.state == "offered")).all()
                    holding = session.scalar(select(func.count(Handler.id)).where(Handler.presence == "offered"))
                # The database agrees with what both processes announced, and every handler holds one call.
                assert sorted(offered) == sorted(offers) and holding == len(offers)
                # Together they used every free handler on the first calls in line.
                assert len(offers) == HANDLERS
        finally:
            for child in children:
                child.join(timeout=30)
                if child.is_alive():
                    child.kill()
            database.dispose()


def test_the_multi_process_deployment_runs_the_scheduler_once(stack: Stack):
    config = (stack.workdir / "bench-config.yaml").read_text()
    assert "embedded: false" in config
    assert stack.scheduler is not None and stack.scheduler.alive(), stack.scheduler_note
    assert all(stack.service(index).alive() for index in range(2))
