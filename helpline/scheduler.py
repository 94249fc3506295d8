"""Timed jobs (appointment reminders) with APScheduler 3 and a job store in the service's own database.

Jobs are stored by import path ("helpline.jobs:send_reminder") with plain arguments, so they survive
a restart and any process can run them. Each app has one scheduler, built by `init_scheduler` and
started on first use:

- running (it fires due jobs): in `helpline serve` when `scheduler.embedded` is true (one serving
  process), or in `helpline scheduler`, run once beside several serving processes;
- paused (it only writes jobs to the store): everywhere else, so that a booking made in any process
  still leaves its reminder where the running scheduler will find it.

A running scheduler looks at the store at least every POLL_S seconds, because jobs written by other
processes do not wake it.

No job ever runs twice, whatever the configuration: a started scheduler fires jobs only while it
holds the database lease, and claims each run in the database before running it (lease.py). The
periodic jobs (callbacks at opening, reconciling calls, the retention purge) are declared in
periodic.py and written to the store by whichever scheduler takes the lease.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import logging
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from apscheduler.executors.base import run_job
from apscheduler.executors.pool import BasePoolExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_PAUSED, STATE_RUNNING, STATE_STOPPED
from flask import Flask, current_app

from sqlalchemy.orm import Session, sessionmaker

from . import lease
from .db import make_engine
from .models import utcnow
from . import periodic

log = logging.getLogger(__name__)

EXTENSION = "helpline.scheduler"
#: Seconds between a running scheduler's looks at the store for jobs other processes added.
POLL_S = 30
#: The job run once whenever a scheduler takes the lease (it needs no claim: running it twice is harmless).
RECONCILE_NOW = "helpline.reconcile:reconcile_job"
#: A reminder that could not fire on time (the scheduler was down) still goes out this late, not later.
MISFIRE_GRACE_S = 6 * 3600


class _AppContextPool(concurrent.futures.ThreadPoolExecutor):
    """A thread pool that runs every job inside the app's context (database session, keys, Twilio)."""

    def __init__(self, app: Flask, max_workers: int, owner: "AppScheduler"):
        super().__init__(max_workers, thread_name_prefix="helpline-job")
        self.app = app
        self.owner = owner

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        def in_app() -> Any:
            with self.app.app_context():
                if fn is run_job and args[1] != "memory":
                    # Each run of a stored job is claimed in the database first: none runs twice (lease.py).
                    return lease.run_claimed(self.owner.transaction, self.owner.holder, fn, *args)
                return fn(*args, **kwargs)

        return super().submit(in_app)


class AppExecutor(BasePoolExecutor):
    """APScheduler's pool executor, on a pool that gives each job the app's context."""

    def __init__(self, app: Flask, owner: "AppScheduler", max_workers: int = 4):
        super().__init__(_AppContextPool(app, max_workers, owner))


def _poll() -> None:
    """Nothing: this job exists only to wake the scheduler so it reads the store."""


class AppScheduler(BackgroundScheduler):
    """A BackgroundScheduler whose job store's engine is closed for good once it has stopped."""

    def __init__(self, app: Flask):
        self.engine = make_engine(app.config["HELPLINE"].resolved_database_url)
        # The lease and the claims have an engine of their own: the job store disposes of its engine
        # while the scheduler's thread may still be checking the lease, which would strand a connection.
        self.lease_engine = make_engine(app.config["HELPLINE"].resolved_database_url)
        self._sessions = sessionmaker(self.lease_engine)
        #: Who this scheduler is in the lease table; only the lease's holder runs jobs.
        self.holder = lease.new_holder()
        self.keeper: lease.LeaseKeeper | None = None
        super().__init__(
            jobstores={"default": SQLAlchemyJobStore(engine=self.engine), "memory": MemoryJobStore()},
            executors={"default": AppExecutor(app, self)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": MISFIRE_GRACE_S},
            timezone="UTC",
        )

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A short transaction on the scheduler's own engine (lease and claims), committed on success."""
        with self._sessions.begin() as session:
            yield session

    def keep_lease(self) -> None:
        """Run jobs only while holding the lease: resume on gaining it, pause on losing it."""
        if self.keeper is not None:
            return

        def gained() -> None:
            self.resume()
            periodic.sync(self)
            # Reconcile with Twilio at once rather than a minute from now: what happened while no
            # scheduler ran (a restart, an outage) is put right first (reconcile.py).
            self.add_job(RECONCILE_NOW, id="reconcile-now", jobstore="memory", replace_existing=True)

        self.keeper = lease.LeaseKeeper(self.transaction, self.holder, on_gain=gained, on_loss=self.pause)
        self.keeper.start()

    def _process_jobs(self) -> float | None:
        """Fire due jobs only if the database still says the lease is ours.

        The keeper pauses a scheduler that lost the lease within a renewal; this closes that window
        (a process that slept past its lease's expiry), so that it never even takes a due job from
        the store, which would leave the new holder without it.
        """
        if self.keeper is not None and self.state == STATE_RUNNING and not self._holds_lease():
            return lease.RENEW_S
        return super()._process_jobs()  # type: ignore[no-any-return]

    def _holds_lease(self) -> bool:
        try:
            with self.transaction() as session:
                return lease.holds(session, self.holder, utcnow())
        except Exception:  # noqa: BLE001 - unsure means no: a job skipped now runs at the holder
            log.exception("could not check the scheduler lease")
            return False

    def shutdown(self, wait: bool = True) -> None:
        """Stop, release the lease, then close the store's connections: the scheduler's thread may
        read the store once more on its way out, after the store itself has closed them."""
        super().shutdown(wait)
        if self.keeper is not None:
            self.keeper.stop()
        self.lease_engine.dispose()
        self.engine.dispose()


def build_scheduler(app: Flask) -> AppScheduler:
    """A scheduler on the app's database, not started."""
    return AppScheduler(app)


def init_scheduler(app: Flask) -> None:
    """Give the app its scheduler (started later, on first use or by `start`)."""
    app.extensions[EXTENSION] = build_scheduler(app)


_lock = threading.Lock()


def scheduler(app: Flask | None = None) -> AppScheduler:
    """The app's scheduler, started paused if nothing started it yet, so that jobs reach the store."""
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    instance: AppScheduler = app.extensions[EXTENSION]
    with _lock:
        if instance.state == STATE_STOPPED:
            instance.start(paused=True)
            atexit.register(shutdown, app)
    return instance


def start(app: Flask) -> AppScheduler:
    """Run the app's scheduler in this process: due jobs fire here."""
    instance: AppScheduler = app.extensions[EXTENSION]
    with _lock:
        if instance.state == STATE_STOPPED:
            instance.start(paused=True)
            atexit.register(shutdown, app)
    # Due jobs fire here only while this scheduler holds the database lease (see lease.py).
    instance.keep_lease()
    instance.add_job(_poll, "interval", seconds=POLL_S, id="poll", jobstore="memory", replace_existing=True)
    return instance


def start_for_serve(app: Flask) -> bool:
    """Called by `helpline serve`: run the scheduler in-process when `scheduler.embedded`; True if it runs."""
    if not app.config["HELPLINE"].scheduler.embedded:
        return False
    start(app)
    return True


def shutdown(app: Flask, wait: bool = True) -> None:
    """Stop the app's scheduler (if started) and close its database connections."""
    instance: AppScheduler = app.extensions[EXTENSION]
    with _lock:
        if instance.state in (STATE_RUNNING, STATE_PAUSED):
            instance.shutdown(wait=wait)
