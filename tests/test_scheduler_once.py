"""No job ever runs twice: the scheduler's database lease, the claim on every run, the periodic jobs
declared as data, and two `helpline scheduler` processes on one database (SQLite and PostgreSQL)
handing over without running any job twice."""

from __future__ import annotations

import datetime as dt
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from apscheduler.schedulers.base import STATE_PAUSED, STATE_RUNNING
from sqlalchemy import text

from sqlalchemy.orm import Session

from helpline import lease, periodic, scheduler
from helpline.db import make_engine
from helpline.models import JobRun, utcnow

from . import scheduler_probe
from .processes import Process

T0 = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.timezone.utc)


@pytest.fixture
def engine(database_url: str):  # type: ignore[no-untyped-def]
    made = make_engine(database_url)
    with made.begin() as connection:
        connection.execute(text(scheduler_probe.CREATE))
    yield made
    made.dispose()


def lease_holder(engine) -> str | None:  # type: ignore[no-untyped-def]
    with engine.connect() as connection:
        return connection.execute(text("SELECT holder FROM scheduler_leases")).scalar()


def probe_counts(engine) -> Counter:  # type: ignore[no-untyped-def]
    with engine.connect() as connection:
        return Counter(n for (n,) in connection.execute(text(f"SELECT n FROM {scheduler_probe.TABLE}")))


def test_the_lease_goes_to_one_holder_until_it_expires_or_is_released(engine):
    with Session(engine) as session, session.begin():
        assert lease.acquire(session, "a", T0, ttl_s=30)
        assert not lease.acquire(session, "b", T0 + dt.timedelta(seconds=10), ttl_s=30)
        assert lease.acquire(session, "a", T0 + dt.timedelta(seconds=20), ttl_s=30)  # renewed to T0+50
        assert not lease.acquire(session, "b", T0 + dt.timedelta(seconds=45), ttl_s=30)
        assert lease.acquire(session, "b", T0 + dt.timedelta(seconds=51), ttl_s=30)  # a stopped renewing
        assert not lease.holds(session, "a", T0 + dt.timedelta(seconds=52))
        lease.release(session, "b", T0 + dt.timedelta(seconds=60))
        assert lease.acquire(session, "a", T0 + dt.timedelta(seconds=60), ttl_s=30)


def test_a_run_is_claimed_once_and_only_by_the_lease_holder(engine):
    with Session(engine) as session, session.begin():
        assert lease.acquire(session, "a", T0)
        assert not lease.claim(session, "b", "job", T0, T0)  # not the holder
        assert lease.claim(session, "a", "job", T0, T0)
        assert not lease.claim(session, "a", "job", T0, T0)  # already claimed
        assert lease.claim(session, "a", "job", T0 + dt.timedelta(minutes=1), T0)
        assert lease.forget_old_runs(session, T0 + lease.KEEP_RUNS + dt.timedelta(seconds=1)) == 2


def test_two_running_schedulers_on_one_database_run_each_job_once(app_factory, engine):
    first, second = app_factory(), app_factory()
    try:
        one = scheduler.start(first)
        two = scheduler.start(second)
        assert one.state == STATE_RUNNING and two.state == STATE_PAUSED  # the lease decides
        # Force the second to run too, as a process that slept through its lease's expiry might: the
        # claims still let each run happen once.
        two.resume()
        start = utcnow() + dt.timedelta(seconds=1)
        for n in range(12):
            one.add_job("tests.scheduler_probe:record", "date", run_date=start + dt.timedelta(milliseconds=100 * n),
                        args=[n], id=f"probe-{n}")
        two.wakeup()
        deadline = time.monotonic() + 20
        while sum(probe_counts(engine).values()) < 12 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1)  # room for any duplicate to show
        assert probe_counts(engine) == Counter(range(12))
        with Session(engine) as session:
            runs = session.query(JobRun).filter(JobRun.job_id.like("probe-%")).all()
            assert len(runs) == 12 and {run.holder for run in runs} == {one.holder}
            assert {run.result for run in runs} == {"ok"}
    finally:
        scheduler.shutdown(first)
        scheduler.shutdown(second)


def test_periodic_jobs_are_declared_as_data_and_synced_idempotently(app):
    instance = scheduler.scheduler(app)
    try:
        first = periodic.sync(instance)
        assert set(first.values()) == {"added"} and set(first) == {item.job_id for item in periodic.PERIODIC}
        purge = instance.get_job("periodic:retention-purge")
        assert purge.func_ref == "helpline.retention:purge_job"
        assert periodic.sync(instance) == {job_id: "kept" for job_id in first}
        assert instance.get_job("periodic:retention-purge").next_run_time == purge.next_run_time
        changed = tuple(item if item.name != "reconcile-calls" else periodic.Periodic(item.name, item.func, "interval", {"minutes": 5})
                        for item in periodic.PERIODIC if item.name != "callbacks-due")
        assert periodic.sync(instance, changed) == {"periodic:reconcile-calls": "replaced", "periodic:retention-purge": "kept",
                                                     "periodic:safe-windows": "kept", "periodic:callbacks-due": "removed"}
        assert instance.get_job("periodic:callbacks-due") is None
    finally:
        scheduler.shutdown(app)


def test_a_callback_due_at_opening_joins_the_line(app):
    from helpline.db import db
    from helpline.models import CallEvent, QueueEntry

    from . import routing_factories

    now = utcnow()
    with app.app_context():
        later = routing_factories.waiting(db.session, now - dt.timedelta(hours=10), kind="callback",
                                          not_before=now + dt.timedelta(hours=1))
        due = routing_factories.waiting(db.session, now - dt.timedelta(hours=10), kind="callback",
                                        not_before=now - dt.timedelta(seconds=1))
        db.session.commit()
        assert periodic.release_due_callbacks(now) == 1
        assert periodic.release_due_callbacks(now) == 0  # a second run changes nothing
        assert db.session.get(QueueEntry, due.id, populate_existing=True).not_before is None
        assert db.session.get(QueueEntry, later.id, populate_existing=True).not_before is not None
        assert [event.kind for event in db.session.query(CallEvent).filter_by(call_id=due.call_id)] == ["callback_due"]


@pytest.mark.slow
def test_two_scheduler_processes_hand_over_without_running_a_job_twice(app, database_url, engine, tmp_path: Path):
    # The jobs go in the store first: a running scheduler sleeps until its next job is due.
    start = utcnow() + dt.timedelta(seconds=6)
    writer = scheduler.scheduler(app)
    for n in range(24):
        writer.add_job("tests.scheduler_probe:record", "date", run_date=start + dt.timedelta(milliseconds=250 * n),
                       args=[n], id=f"probe-{n}")
    scheduler.shutdown(app)
    env = {"HELPLINE_DATABASE_URL": database_url, "HELPLINE_INSTANCE_PATH": str(tmp_path / "instance")}

    def scheduler_process(n: int) -> Process:
        return Process([sys.executable, "-m", "helpline", "scheduler"], env, "", tmp_path / f"scheduler-{n}.log")

    processes = [scheduler_process(1)]
    first = processes[0]
    try:
        deadline = time.monotonic() + 60
        # The second starts once the first holds the lease, so that we know which one to stop.
        while not lease_holder(engine):
            assert time.monotonic() < deadline and first.popen.poll() is None, first.output()
            time.sleep(0.1)
        second = scheduler_process(2)
        processes.append(second)
        while sum(probe_counts(engine).values()) < 8:
            assert time.monotonic() < deadline, first.output()
            time.sleep(0.1)
        # The holder stops (cleanly: it gives the lease up); the other takes over within a renewal.
        first.signal_group(signal.SIGTERM)
        first.popen.wait(timeout=20)
        while sum(probe_counts(engine).values()) < 24:
            assert time.monotonic() < deadline, second.output()
            time.sleep(0.1)
        time.sleep(1)
        assert probe_counts(engine) == Counter(range(24))
        with engine.connect() as connection:
            pids = {pid for (pid,) in connection.execute(text(f"SELECT DISTINCT pid FROM {scheduler_probe.TABLE}"))}
            holders = {row[0] for row in connection.execute(text("SELECT DISTINCT holder FROM job_runs WHERE job_id LIKE 'probe-%'"))}
        assert pids == {first.popen.pid, second.popen.pid} and len(holders) == 2
    finally:
        for process in processes:
            process.stop()
