"""The scheduler's periodic jobs, declared as data and reconciled into the job store.

`PERIODIC` says what runs and when. Whenever a scheduler takes the lease (see lease.py) it calls
`sync`, which adds a declared job that is missing, replaces one whose function or timing changed,
leaves an unchanged one alone (so its next run time survives restarts: the nightly purge does not
run again because a process restarted), and removes periodic jobs no longer declared.

Appointment reminders are not here: they are one-off jobs the booking code stores per booking
(jobs.py). Offering callbacks whose time has come is routing's sweep (realtime.py), every second in
each serving process; `release_due_callbacks` only makes them show, and be routed, the moment the
line opens even when nothing else changes.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import select, update

from .db import append, db
from .events import announce
from .models import CallEvent, QueueEntry, utcnow
from .routing import IN_LINE

log = logging.getLogger(__name__)

#: Job ids of periodic jobs start with this, so that `sync` knows which stored jobs are its own.
PREFIX = "periodic:"
LONDON = "Europe/London"


@dataclass(frozen=True)
class Periodic:
    """One periodic job: its id, the function (by import path) and its trigger."""

    name: str
    func: str
    trigger: str
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def job_id(self) -> str:
        """The job's id in the store."""
        return PREFIX + self.name

    def build_trigger(self) -> BaseTrigger:
        """The APScheduler trigger this declaration describes."""
        if self.trigger == "interval":
            return IntervalTrigger(timezone="UTC", **self.options)
        if self.trigger == "cron":
            return CronTrigger(timezone=LONDON, **self.options)
        raise ValueError(f"{self.name}: unknown trigger {self.trigger!r}")


PERIODIC: tuple[Periodic, ...] = (
    # Out-of-hours callback requests wait for the opening; at the opening they join the live line.
    Periodic("callbacks-due", "helpline.periodic:release_due_callbacks", "interval", {"seconds": 60}),
    # A web call-back still in line when the times its person said are safe have passed waits for the next.
    Periodic("safe-windows", "helpline.public.referrals:hold_closed_windows", "interval", {"seconds": 60}),
    # What Twilio has live and what the database thinks is live are brought together (reconcile.py):
    # callers held through an outage join the line, calls whose end was never recorded are settled.
    Periodic("reconcile-calls", "helpline.reconcile:reconcile_job", "interval", {"minutes": 1}),
    # Personal data past its retention period goes at night, when the line is closed or quiet.
    Periodic("retention-purge", "helpline.retention:purge_job", "cron", {"hour": 2, "minute": 30}),
)


def sync(scheduler: BaseScheduler, declared: tuple[Periodic, ...] = PERIODIC) -> dict[str, str]:
    """Make the store's periodic jobs match `declared`; returns what happened to each job id.

    added, replaced, kept or removed. Running it again with the same declarations keeps everything.
    """
    stored = {job.id: job for job in scheduler.get_jobs(jobstore="default") if job.id.startswith(PREFIX)}
    actions: dict[str, str] = {}
    for item in declared:
        trigger = item.build_trigger()
        current = stored.pop(item.job_id, None)
        if current is not None and current.func_ref == item.func and str(current.trigger) == str(trigger):
            actions[item.job_id] = "kept"
            continue
        scheduler.add_job(item.func, trigger, id=item.job_id, name=item.name, jobstore="default", replace_existing=True)
        actions[item.job_id] = "replaced" if current is not None else "added"
    for job_id in stored:
        scheduler.remove_job(job_id, jobstore="default")
        actions[job_id] = "removed"
    changed = {job_id: action for job_id, action in actions.items() if action != "kept"}
    if changed:
        log.info("periodic jobs: %s", changed)
    return actions


def release_due_callbacks(now: dt.datetime | None = None) -> int:
    """Callback requests whose `not_before` has come join the line now; returns how many.

    The conditional UPDATE makes a second run change nothing. Clearing `not_before` is what
    "released" means; the timeline keeps when it happened. Announcing the change makes routing
    offer them and every console (and the wallboard) show them at once.
    """
    now = now or utcnow()
    with db.transaction() as session:
        due = session.execute(
            select(QueueEntry.id, QueueEntry.call_id).where(
                QueueEntry.kind == "callback", QueueEntry.state.in_(IN_LINE), QueueEntry.not_before.is_not(None),
                QueueEntry.not_before <= now)
        ).all()
        released = 0
        for entry_id, call_id in due:
            moved = session.execute(
                update(QueueEntry).where(QueueEntry.id == entry_id, QueueEntry.not_before.is_not(None),
                                         QueueEntry.not_before <= now)
                .values(not_before=None).execution_options(synchronize_session=False))
            if moved.rowcount == 1:
                released += 1
                append(session, CallEvent, call_id=call_id, kind="callback_due", at=now, detail={})
        if released:
            announce(session, "queue_changed")
    if released:
        log.info("%d callback(s) joined the line", released)
    return released
