"""The scheduler's bookkeeping: who may run jobs now (a lease), and which runs have been claimed.

With several processes on one database, exactly one scheduler holds the lease and runs jobs; every
run is also claimed by inserting its (job, scheduled time) row, which the unique key lets only one
process do. The lease keeps the others idle; the claim makes a second run impossible even if two
schedulers ever believed they held the lease at once (a process paused past its lease's expiry).
"""

from __future__ import annotations

import datetime as dt
from typing import Optional

from sqlalchemy import Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from .core import Base, utcnow

__all__ = ["SchedulerLease", "JobRun"]


class SchedulerLease(Base):
    """A named lease: held by `holder` until `expires_at`, renewed by its holder's heartbeat."""

    __tablename__ = "scheduler_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: The holding scheduler's identity (host, process id and a random part).
    holder: Mapped[str] = mapped_column(String(128))
    acquired_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]


class JobRun(Base):
    """One claimed run of a scheduled job: the unique key is what lets a run happen once only."""

    __tablename__ = "job_runs"
    __table_args__ = (
        UniqueConstraint("job_id", "run_time", name="uq_job_runs_job_id_run_time"),
        Index("ix_job_runs_started_at", "started_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[str] = mapped_column(String(191))
    #: The time the run was scheduled for (not when it started).
    run_time: Mapped[dt.datetime]
    holder: Mapped[str] = mapped_column(String(128))
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[Optional[dt.datetime]]
    #: ok, failed, or NULL while running (or if the process died mid-run).
    result: Mapped[Optional[str]] = mapped_column(String(16))
