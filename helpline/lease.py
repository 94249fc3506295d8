"""No scheduled job ever runs twice: the scheduler's lease, and a claim on every run.

Two guards, both in the database every process shares (SQLite or PostgreSQL alike):

* The lease. A `scheduler_leases` row names the one scheduler allowed to run jobs, until
  `expires_at`. Its holder renews it every `RENEW_S`; the others try to take it at the same pace and
  succeed only once it has expired (its holder stopped or hung) or been released (a clean stop). A
  scheduler that does not hold the lease stays paused: it still writes jobs to the store.
* The claim. Before a job runs, its run is inserted into `job_runs` under a unique
  (job id, scheduled time) key, in a transaction that also checks the lease is still ours. A
  process that paused past its lease's expiry, woke and tried to run the same job would fail to
  insert the row and skip the run. Together the two mean that configuration mistakes (two
  `helpline scheduler`s, or an embedded scheduler beside one) cost nothing.

Jobs are still written to be idempotent, because a process can die after a run's work committed and
before `finished_at` was set; such a run is not retried.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import socket
import threading
import uuid
from typing import Any, Callable, Iterable

from sqlalchemy import case, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .db import is_postgresql
from .models import JobRun, SchedulerLease, utcnow
from .retention import retention_rule
from .db import db

log = logging.getLogger(__name__)

#: The lease every scheduler of one database competes for.
LEASE = "scheduler"
#: How long a lease lasts without renewal; a stopped holder's jobs move to another process after this.
TTL_S = 30.0
#: How often the holder renews, and the others try to take over.
RENEW_S = 5.0
#: Claimed runs are kept this long, to look back on what ran when.
KEEP_RUNS = dt.timedelta(days=14)


def new_holder() -> str:
    """A scheduler's identity: readable in the table, unique even for two schedulers in one process."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def acquire(session: Session, holder: str, now: dt.datetime, ttl_s: float = TTL_S) -> bool:
    """Take or renew the lease for `holder`; True if it holds the lease until now + ttl_s.

    One conditional UPDATE decides between racing processes: it matches only when the lease is
    already ours or has run out. The first ever acquisition inserts the row, and the primary key
    lets one inserter win.
    """
    expires = now + dt.timedelta(seconds=ttl_s)
    taken = session.execute(
        update(SchedulerLease)
        .where(SchedulerLease.name == LEASE, or_(SchedulerLease.holder == holder, SchedulerLease.expires_at <= now))
        # acquired_at says since when the holder has held it: it changes only when the lease changes hands.
        .values(holder=holder, heartbeat_at=now, expires_at=expires,
                acquired_at=case((SchedulerLease.holder == holder, SchedulerLease.acquired_at), else_=now))
        .execution_options(synchronize_session=False)
    )
    if taken.rowcount == 1:
        return True
    if session.get(SchedulerLease, LEASE) is not None:
        return False
    try:
        with session.begin_nested():
            session.execute(insert(SchedulerLease).values(name=LEASE, holder=holder, acquired_at=now, heartbeat_at=now,
                                                          expires_at=expires))
    except IntegrityError:
        return False
    return True


def release(session: Session, holder: str, now: dt.datetime) -> None:
    """Give the lease up at once (a clean stop), so another scheduler need not wait for it to expire."""
    session.execute(update(SchedulerLease).where(SchedulerLease.name == LEASE, SchedulerLease.holder == holder)
                    .values(expires_at=now).execution_options(synchronize_session=False))


def holds(session: Session, holder: str, now: dt.datetime) -> bool:
    """Whether `holder` holds an unexpired lease (read under a row lock on PostgreSQL)."""
    query = select(SchedulerLease.holder, SchedulerLease.expires_at).where(SchedulerLease.name == LEASE)
    if is_postgresql(session):
        query = query.with_for_update()
    row = session.execute(query).first()
    return row is not None and row.holder == holder and row.expires_at > now


def claim(session: Session, holder: str, job_id: str, run_time: dt.datetime, now: dt.datetime) -> bool:
    """Claim one run of a job for `holder`; False if the lease is not ours or the run was claimed already."""
    if not holds(session, holder, now):
        return False
    try:
        with session.begin_nested():
            session.execute(insert(JobRun).values(job_id=job_id[:191], run_time=run_time, holder=holder, started_at=now))
    except IntegrityError:
        return False
    return True


def finish(session: Session, job_id: str, run_time: dt.datetime, result: str, now: dt.datetime) -> None:
    """Record how a claimed run ended."""
    session.execute(update(JobRun).where(JobRun.job_id == job_id[:191], JobRun.run_time == run_time)
                    .values(finished_at=now, result=result).execution_options(synchronize_session=False))


def forget_old_runs(session: Session, now: dt.datetime) -> int:
    """Drop claimed runs older than KEEP_RUNS (they only matter while a duplicate could still happen)."""
    return session.execute(delete(JobRun).where(JobRun.started_at < now - KEEP_RUNS)).rowcount or 0


def claimed_run_times(transaction: Callable[[], contextlib.AbstractContextManager[Session]], holder: str, job_id: str,
                      run_times: Iterable[dt.datetime]) -> list[dt.datetime]:
    """The run times of `job_id` this scheduler has now claimed, each in its own short transaction."""
    mine = []
    for run_time in run_times:
        with transaction() as session:
            if claim(session, holder, job_id, run_time, utcnow()):
                mine.append(run_time)
            else:
                log.info("job %s at %s was not claimed by this scheduler; skipped", job_id, run_time.isoformat())
    return mine


def run_claimed(transaction: Callable[[], contextlib.AbstractContextManager[Session]], holder: str,
                run_job: Callable[..., list[Any]], job: Any, jobstore_alias: str, run_times: list[dt.datetime],
                logger_name: str) -> list[Any]:
    """APScheduler's `run_job`, for the run times this scheduler claims; records how each ended.

    Runs in the executor's worker thread, so that claims never hold up the scheduler's own loop.
    """
    mine = claimed_run_times(transaction, holder, job.id, run_times)
    if not mine:
        return []
    events = run_job(job, jobstore_alias, mine, logger_name)
    # End the job's own session first: on SQLite an open transaction of it would hold the write
    # lock that recording the run needs, in this same thread.
    db.session.remove()
    for event in events:
        with transaction() as session:
            finish(session, job.id, event.scheduled_run_time, "failed" if event.exception else "ok", utcnow())
    return events


@retention_rule("job_runs")
def _old_job_runs(session: Session, now: dt.datetime, settings: Any) -> int:
    return forget_old_runs(session, now)


class LeaseKeeper:
    """Keeps trying to hold the lease, and tells the scheduler when it gains or loses it."""

    def __init__(self, transaction: Callable[[], contextlib.AbstractContextManager[Session]], holder: str,
                 on_gain: Callable[[], None], on_loss: Callable[[], None], renew_s: float = RENEW_S, ttl_s: float = TTL_S):
        self.transaction = transaction
        self.holder = holder
        self.on_gain = on_gain
        self.on_loss = on_loss
        self.renew_s = renew_s
        self.ttl_s = ttl_s
        self.held = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> bool:
        """One attempt to take or renew the lease; calls on_gain or on_loss when that changes."""
        try:
            with self.transaction() as session:
                held = acquire(session, self.holder, utcnow(), self.ttl_s)
        except Exception:  # noqa: BLE001 - a database hiccup: nothing may run until the lease is confirmed
            log.exception("could not renew the scheduler lease")
            held = False
        if held and not self.held:
            log.info("scheduler %s holds the lease: jobs run here", self.holder)
            self.held = True
            self.on_gain()
        elif not held and self.held:
            log.warning("scheduler %s lost the lease: jobs stop here", self.holder)
            self.held = False
            self.on_loss()
        return held

    def start(self) -> None:
        """Check now, then every `renew_s` seconds in a daemon thread."""
        self.check()

        def loop() -> None:
            while not self._stop.wait(self.renew_s):
                self.check()

        self._thread = threading.Thread(target=loop, name="helpline-scheduler-lease", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing and release the lease if held."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.renew_s + 5)
        if self.held:
            self.held = False
            try:
                with self.transaction() as session:
                    release(session, self.holder, utcnow())
            except Exception:  # noqa: BLE001 - it will simply expire
                log.exception("could not release the scheduler lease")

