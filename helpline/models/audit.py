"""The audit log and the failed log-in ledger.

`AuditEntry` rows are append-only: the ORM refuses to update or delete them (here), PostgreSQL and
SQLite refuse it with triggers (migration 0004), and each row carries the SHA-256 of the row before
it, so that an edit made behind all of those (a raw file edit) still shows (`helpline audit verify`).
Entries are written through `helpline.audit.record`, never by constructing rows directly.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Optional

from sqlalchemy import Index, String, Text, event
from sqlalchemy.orm import Mapped, ORMExecuteState, Session, mapped_column

from .core import Base, utcnow

__all__ = ["AuditEntry", "LoginFailure", "AppendOnlyError"]


class AppendOnlyError(RuntimeError):
    """Something tried to change or remove an audit entry."""


class AuditEntry(Base):
    """One audited event: who (user id and role), what (action, object), when, why, and from which request.

    Never personal data: objects are named by type and id only, and free text is masked on the way in.
    `seq` is assigned under a lock at commit, so the chain has no gaps and no forks.
    """

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_actor_id_at", "actor_id", "at"),
        Index("ix_audit_log_object", "object_type", "object_id"),
    )

    seq: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    at: Mapped[dt.datetime] = mapped_column(index=True)
    #: No foreign key on purpose: the log must outlive, and never cascade with, what it names.
    actor_id: Mapped[Optional[int]]
    #: handler, supervisor, clinician, admin; or system (jobs), operator (the CLI), anonymous.
    actor_role: Mapped[str] = mapped_column(String(16))
    #: For actors who are not console users: which job, or the operating-system account on the CLI.
    actor_label: Mapped[Optional[str]] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64), index=True)
    object_type: Mapped[Optional[str]] = mapped_column(String(32))
    object_id: Mapped[Optional[str]] = mapped_column(String(64))
    reason: Mapped[Optional[str]] = mapped_column(Text)
    request_id: Mapped[Optional[str]] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class LoginFailure(Base):
    """A failed log-in from a client address, kept briefly to throttle guessing from one place.

    The address is stored only as a keyed hash: the throttle needs to count, never to know who.
    """

    __tablename__ = "login_failures"
    __table_args__ = (Index("ix_login_failures_address_at", "address_hash", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    address_hash: Mapped[str] = mapped_column(String(64))
    at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)


@event.listens_for(AuditEntry, "before_update")
def _refuse_update(_mapper: Any, _connection: Any, target: AuditEntry) -> None:
    raise AppendOnlyError(f"audit entry {target.seq} cannot be changed: the audit log is append-only")


@event.listens_for(AuditEntry, "before_delete")
def _refuse_delete(_mapper: Any, _connection: Any, target: AuditEntry) -> None:
    raise AppendOnlyError(f"audit entry {target.seq} cannot be deleted: the audit log is append-only")


@event.listens_for(Session, "do_orm_execute")
def _refuse_bulk_changes(state: ORMExecuteState) -> None:
    # Bulk `update(AuditEntry)` / `delete(AuditEntry)` statements skip the mapper events above.
    if (state.is_update or state.is_delete) and state.bind_mapper is not None and state.bind_mapper.class_ is AuditEntry:
        raise AppendOnlyError("the audit log is append-only: bulk UPDATE and DELETE are refused")
