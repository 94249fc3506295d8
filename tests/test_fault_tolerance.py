"""Faults on the two-process deployment, each on servers the test started itself (a PostgreSQL and a
Redis of its own, on free ports; never the machine's own): a serving process killed in the middle of
the load and restarted loses no call; Redis going away degrades, then recovers within seconds, and a
handler put on a break meanwhile is told; PostgreSQL stopping while callers are in the menus strands
nobody: they are held in Twilio's queue and put in line, and every call's end is recorded.

They stop and start servers and take a while: they run when HELPLINE_TEST_DISRUPT=1 (CI sets it).
"""

from __future__ import annotations

import datetime as dt
import os
import random
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest
import requests
from sqlalchemy import func, select

from helpline.bench import paced
from helpline.bench.checks import audit_calls, held_unknown
from helpline.bench.handlers import Pace
from helpline.bench.servers import OwnPostgres, OwnRedis, ServerMissing
from helpline.bench.stack import Stack, StackOptions
from helpline.models import Call, ConsoleConnection, QueueEntry

from .multiprocess_support import Console, create_handler, scalar, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow, pytest.mark.xdist_group("processes"),
              pytest.mark.skipif(os.environ.get("HELPLINE_TEST_DISRUPT") != "1",
                                 reason="starts, stops and kills servers of its own: set HELPLINE_TEST_DISRUPT=1")]

#: Offers expire quickly, so that an offer held by a console on the killed process moves on within the test.
FAST_OFFERS = {"routing": {"offer_timeout_s": 3}}

#: Characters of a process's log shown when it did not recover.
LOG_TAIL = 4000

#: Seconds the processes have to report healthy again once the server is back. The Redis
#: subscription is tried again every two seconds at most; the margin is for a loaded machine.
RECOVERY_S = 20


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[OwnPostgres, OwnRedis]]:
    """A PostgreSQL and a Redis of the test's own."""
    try:
        postgres = OwnPostgres().create()
    except ServerMissing as exc:
        pytest.skip(str(exc))
    redis_server = OwnRedis(tmp_path / "redis")
    try:
        redis_server.start()
        yield postgres, redis_server
    finally:
        redis_server.destroy()
        postgres.destroy()


@pytest.fixture
def stack(tmp_path: Path, servers: tuple[OwnPostgres, OwnRedis]) -> Iterator[Stack]:
    postgres, redis_server = servers
    options = StackOptions(workdir=tmp_path / "stack", database="postgresql", postgres_url=postgres.url,
                           redis_url=redis_server.url, processes=2, time_scale=0.05, consoles_per_process=8,
                           settings=FAST_OFFERS)
    with Stack(options) as running:
        yield running


@pytest.mark.timeout(300)
def test_a_serving_process_killed_mid_load_and_restarted_loses_no_call(stack: Stack):
    emulator = stack.emulator_client()
    rng = random.Random(3)
    names = paced.create_users(stack, 4)
    handlers = paced.start_handlers(stack, names, emulator, Pace(talk_s=(1.0, 2.0), wrap_up_s=(0.2, 0.4), book_every=0), rng)
    try:
        placing: list[str] = []
        killer_done = False
        started = time.monotonic()
        for index in range(16):
            time.sleep(max(0.0, started + index * 0.3 - time.monotonic()))
            url = f"{stack.service_url(index % 2)}/voice/incoming"
            placing.append(emulator.place_call(paced.caller_number(index), url=url, keys=paced.choose_script(rng)))
            if index == 8 and not killer_done:
                # Mid-load: callers in the IVR, in line and talking, on both processes.
                stack.service(1).kill()
                killer_done = True
                time.sleep(1.5)
                stack.start_service(1)
        still = paced.wait_until_ended(emulator, placing, timeout=90)
        assert not still, [(emulator.call(sid)["activity"], emulator.call(sid)["queue"],
                            scalar(stack, select(Call.step).where(Call.call_sid == sid))) for sid in still]
        paced.wait_until_recorded(stack, placing, timeout=30)
        engine = stack.sql_engine()
        try:
            audit = audit_calls(engine, placing)
        finally:
            engine.dispose()
        # Every call the emulator placed is in the database, once, finished, and none is left in line.
        assert audit.ok, audit.as_dict()
        assert scalar(stack, select(func.count(QueueEntry.id)).where(QueueEntry.state.in_(("waiting", "offered", "connecting")))) == 0
        # The consoles of the killed process came back (to the restarted one) and were sent the queue.
        on_killed = [handler for index, handler in enumerate(handlers) if index % 2 == 1]
        wait_until(lambda: all(handler.log.reconnects >= 2 for handler in on_killed), 30, "consoles did not reconnect")
        # The killed process's console connections are gone: one row per open console, no more.
        wait_until(lambda: scalar(stack, select(func.count(ConsoleConnection.sid))) == len(handlers), 20,
                   "connections of the killed process were not cleared")
        # A call after the restart, at the restarted process, is answered by a handler.
        after = emulator.place_call(paced.caller_number(99), url=f"{stack.service_url(1)}/voice/incoming", keys=["1", "1", "0"])
        assert not paced.wait_until_ended(emulator, [after], timeout=60)
        paced.wait_until_recorded(stack, [after], timeout=30)
        assert scalar(stack, select(Call.outcome).where(Call.call_sid == after)) == "answered"
    finally:
        for handler in handlers:
            handler.stop()


# -- the servers going away ----------------------------------------------------------------------

def health(stack: Stack, index: int) -> tuple[int, str]:
    """The status and body of GET /healthz at serving process `index` (0 and the error when it does not answer)."""
    try:
        response = requests.get(f"{stack.service_url(index)}/healthz", timeout=5)
        return response.status_code, response.text.strip()
    except requests.RequestException as exc:
        return 0, repr(exc)


def healthz(stack: Stack, index: int) -> int:
    """The status of GET /healthz at serving process `index` (0 when it does not answer)."""
    return health(stack, index)[0]


def not_recovered(stack: Stack, what: str) -> Callable[[], str]:
    """A failure message for `wait_until`: what each process's health check says now, and the end of its log."""

    def report() -> str:
        lines = [what]
        for index in range(2):
            status, body = health(stack, index)
            service = stack.service(index)
            lines += [f"--- serve-{index} (running: {service.alive()}): {status} {body}", service.output()[-LOG_TAIL:]]
        return "\n".join(lines)

    return report


def test_redis_going_away_degrades_then_recovers_within_seconds_and_tells_a_handler_put_on_break(
        stack: Stack, servers: tuple[OwnPostgres, OwnRedis]):
    _postgres, redis_server = servers
    emulator = stack.emulator_client()
    create_handler(stack, "rita")
    rita = Console(stack.service_url(0), "rita")
    try:
        assert rita.post("/api/me/status", {"status": "available"}).status_code == 200
        rita.wait_for("presence", lambda data: data["presence"] == "available")
        redis_server.stop()
        # Degraded: /healthz reports the lost subscription at both processes (each listens from start-up).
        wait_until(lambda: healthz(stack, 0) == 503 and healthz(stack, 1) == 503, 10, not_recovered(stack, "not degraded"))
        assert "no live subscription" in health(stack, 0)[1]
        # A call reaches process 1; its offer to rita cannot cross to process 0, and times out (3 s):
        # rita goes on a break her console never hears of.
        sid = emulator.place_call("+447700900333", url=f"{stack.service_url(1)}/voice/incoming", keys=["1", "1", "1"])
        wait_until(lambda: scalar(stack, select(func.count()).select_from(Call).where(Call.call_sid == sid)), 30,
                   "the call was not recorded")
        from helpline.models import Handler
        wait_until(lambda: scalar(stack, select(Handler.presence).where(Handler.id == rita.handler_id)) == "break", 30,
                   "the offer never timed out")
        emulator.hangup(sid)
        back = time.monotonic()
        redis_server.start()
        wait_until(lambda: healthz(stack, 0) == 200 and healthz(stack, 1) == 200, RECOVERY_S,
                   not_recovered(stack, "health did not recover"))
        # Told: her own status, re-sent by the process holding her console once its subscription is
        # back (or, if the expiry's own event got through, that one, which says why).
        told = rita.wait_for("presence", lambda data: data["presence"] == "break", timeout=RECOVERY_S)
        assert told.get("resent") is True or told.get("reason") == "offer_missed", told
        assert time.monotonic() - back < RECOVERY_S
        assert "the Redis subscription is back" in (stack.logs / "serve-0.log").read_text()
        assert not paced.wait_until_ended(emulator, [sid], timeout=30)
        paced.wait_until_recorded(stack, [sid], timeout=30)
        engine = stack.sql_engine()
        try:
            assert audit_calls(engine, [sid]).ok
        finally:
            engine.dispose()
    finally:
        rita.close()


@pytest.mark.timeout(420)
def test_postgresql_stopped_while_callers_are_in_the_menus_strands_nobody(stack: Stack, servers: tuple[OwnPostgres, OwnRedis]):
    """The database stops for 15 s while callers walk the menus: the IVR retries, then holds them in
    Twilio's queue with a waitUrl; once the database is back each is recorded and put in line, the
    handlers answer them all, and every call's end is recorded."""
    postgres, _redis_server = servers
    emulator = stack.emulator_client()
    rng = random.Random(5)
    names = paced.create_users(stack, 3)
    handlers = paced.start_handlers(stack, names, emulator, Pace(talk_s=(0.5, 1.0), wrap_up_s=(0.2, 0.4), book_every=0), rng)
    try:
        placing = [emulator.place_call(paced.caller_number(index), url=f"{stack.service_url(index % 2)}/voice/incoming",
                                       keys=["1", "1", "2"]) for index in range(8)]
        time.sleep(0.5)  # callers into the greeting and the first menus
        postgres.stop()
        time.sleep(15)
        postgres.start()
        wait_until(lambda: healthz(stack, 0) == 200 and healthz(stack, 1) == 200, 60,
                   not_recovered(stack, "health did not recover"))
        engine = stack.sql_engine()
        try:
            # Nobody is left in Twilio's queue unknown to the service (the waitUrl finds them at once).
            wait_until(lambda: not held_unknown(emulator, engine), 30, lambda: f"held and unknown: {held_unknown(emulator, engine)}")
            still = paced.wait_until_ended(emulator, placing, timeout=150)
            assert not still, [(emulator.call(sid)["activity"], emulator.call(sid)["queue"],
                                scalar(stack, select(Call.step).where(Call.call_sid == sid))) for sid in still]
            paced.wait_until_recorded(stack, placing, timeout=90)
            audit = audit_calls(engine, placing)
            assert audit.ok, audit.as_dict()
            assert audit.outcomes.get("answered", 0) == len(placing), audit.as_dict()
        finally:
            engine.dispose()
    finally:
        for handler in handlers:
            handler.stop()


@pytest.mark.timeout(240)
def test_a_call_ending_while_postgresql_is_stopped_is_recorded_within_seconds_of_its_return(
        stack: Stack, servers: tuple[OwnPostgres, OwnRedis]):
    """Twilio never retries a status callback: the one that ends a call while the database is away is
    answered 204 (not an error in Twilio's debugger), kept by the process, and recorded, with the
    moment the call ended, within seconds of the database coming back, not at the next reconciliation."""
    postgres, _redis_server = servers
    emulator = stack.emulator_client()
    sid = emulator.place_call("+447700900444", url=f"{stack.service_url(0)}/voice/incoming", keys=["1", "1", "1"],
                              status_callback=f"{stack.service_url(1)}/voice/status")
    wait_until(lambda: scalar(stack, select(QueueEntry.state).join(Call, Call.id == QueueEntry.call_id)
                              .where(Call.call_sid == sid)) == "waiting", 30, "the caller never joined the line")
    postgres.stop()
    hung_up = dt.datetime.now(dt.timezone.utc)
    emulator.hangup(sid)

    def final_callbacks() -> list[dict]:
        return [event for event in emulator.call(sid)["events"]
                if event["kind"] == "status_callback" and event.get("status") == "completed"]

    wait_until(lambda: final_callbacks(), 30, "the final status callback was never sent")
    assert [event["response_code"] for event in final_callbacks()] == [204]
    time.sleep(3)  # still away a while after the call ended
    postgres.start()
    back = time.monotonic()
    wait_until(lambda: scalar(stack, select(Call.ended_at).where(Call.call_sid == sid)) is not None, 30,
               not_recovered(stack, "the call's end was never recorded"))
    assert time.monotonic() - back < 20  # the replay, well before the reconciliation's minute
    ended = scalar(stack, select(Call.ended_at).where(Call.call_sid == sid))
    assert abs((ended - hung_up).total_seconds()) < 5, (ended, hung_up)  # when it ended, not when it was recorded
    assert scalar(stack, select(Call.twilio_status).where(Call.call_sid == sid)) == "completed"
    engine = stack.sql_engine()
    try:
        audit = audit_calls(engine, [sid])
        assert audit.ok and audit.outcomes == {"abandoned": 1}, audit.as_dict()
    finally:
        engine.dispose()
