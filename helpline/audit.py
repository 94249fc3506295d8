"""The audit log: who read or changed what personal data, when, why, and every log-in, chained by hash.

Other modules call `record` inside the transaction that does the thing being audited:

    audit.record(db.session, current_user, "contact.read", "contact", contact.id)
    audit.record(db.session, current_user, "contact.read", "contact", contact.id, reason=reason)  # supervisor
    audit.record(session, Actor.system("retention"), "retention.purge", counts=...)

The entry is chained and written when that transaction commits, and vanishes with it on rollback, so
the log says exactly what happened. Chaining happens at commit, under a lock (an advisory lock on
PostgreSQL; SQLite's BEGIN IMMEDIATE already lets one writer in at a time), which keeps the lock
short however long the caller's transaction was.

Each entry's hash is SHA-256(previous hash + canonical JSON of the entry); `verify` recomputes the
whole chain and names the first entry that does not fit. Nothing personal goes in: objects are named
by type and id, and free text (reasons, details) is masked of anything that looks like a phone number
or an email address.

"From where" is the request id (also sent back as `X-Request-ID` and attached to log lines), which
ties an entry to the server's logs of the same request. Client addresses are kept only on log-in
events, where they are needed to trace password guessing; for reads of records the authenticated user
already says who, and an address would add tracking of staff without adding accountability.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterator

from flask import g, has_request_context
from sqlalchemy import event, select, text
from sqlalchemy.orm import Session, scoped_session

from .db import is_postgresql
from .masking import mask_personal
from .models import AuditEntry, User, utcnow

#: The hash before the first entry.
GENESIS = "0" * 64
#: Any 64-bit number unique to this lock; the hex spells "audit log".
ADVISORY_LOCK_KEY = 0x61756469746C6F67
ACTION = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")
MAX_REASON = 2000

#: Actions that must say why (a supervisor reading a person's details, exporting or erasing a subject).
_REASON_REQUIRED: set[str] = {"subject.export", "subject.erase"}


class AuditError(ValueError):
    """An audit entry cannot be written as asked (a malformed action, or a missing reason)."""


def require_reason(*actions: str) -> None:
    """Declare that `actions` are only ever recorded with a reason; `record` refuses them without."""
    _REASON_REQUIRED.update(actions)


@dataclass(frozen=True)
class Actor:
    """Who did something: a console user (id and role), or a job or operator who is not one."""

    id: int | None
    role: str
    label: str | None = None

    @classmethod
    def system(cls, job: str) -> "Actor":
        """A scheduled job or other unattended part of the service."""
        return cls(None, "system", job[:64])

    @classmethod
    def operator(cls) -> "Actor":
        """Whoever runs the `helpline` command on the server, named by their operating-system account."""
        import getpass

        try:
            name = getpass.getuser()
        except (OSError, KeyError):  # a container user with no passwd entry
            name = "unknown"
        return cls(None, "operator", f"os:{name}"[:64])

    @classmethod
    def anonymous(cls) -> "Actor":
        """Nobody logged in (a failed log-in for a username that does not exist)."""
        return cls(None, "anonymous")

    @classmethod
    def of(cls, who: Any) -> "Actor":
        """An Actor for a User, Flask-Login's current_user, or an Actor; anything else is anonymous."""
        if isinstance(who, Actor):
            return who
        if who is None or not getattr(who, "is_authenticated", True):
            return cls.anonymous()
        user_id = getattr(who, "id", None)
        role = getattr(who, "role", None)
        if user_id is None or role is None:
            return cls.anonymous()
        return cls(int(user_id), str(role))


@dataclass
class _Pending:
    """An entry waiting for its transaction to commit, when it gets its place in the chain."""

    at: dt.datetime
    actor: Actor
    action: str
    object_type: str | None
    object_id: str | None
    reason: str | None
    request_id: str | None
    detail: dict[str, Any] = field(default_factory=dict)


def request_id() -> str | None:
    """The current request's id (see security.py), or None outside a request."""
    if not has_request_context():
        return None
    return getattr(g, "request_id", None)


def _clean_detail(value: Any) -> Any:
    """JSON-safe, masked copy of `value`: what is hashed must be exactly what is read back."""
    if isinstance(value, dict):
        return {str(key): _clean_detail(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return [_clean_detail(item) for item in items]
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return value
    if isinstance(value, float):
        # Floats do not survive every database's JSON round trip digit for digit; text does.
        return repr(value)
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return mask_personal(str(value))


def record(
    session: Session,
    actor: Any,
    action: str,
    object_type: str | None = None,
    object_id: Any = None,
    reason: str | None = None,
    **detail: Any,
) -> None:
    """Audit `action` by `actor` on (`object_type`, `object_id`) in `session`'s transaction.

    `actor` is a User, `current_user`, or an `Actor`. `detail` holds small non-personal facts (counts,
    ids, a cause); never names, numbers or notes. The entry is written when the session commits.
    """
    if not ACTION.match(action) or len(action) > 64:
        raise AuditError(f"action {action!r} must be dotted lower-case words, at most 64 characters")
    if object_type is not None and (len(object_type) > 32 or not ACTION.match(object_type)):
        raise AuditError(f"object_type {object_type!r} must be a lower-case word")
    reason = (reason or "").strip() or None
    if reason is None and action in _REASON_REQUIRED:
        raise AuditError(f"{action} needs a reason")
    if reason is not None:
        reason = mask_personal(reason[:MAX_REASON])
    if isinstance(session, scoped_session):
        session = session()
    if not session.in_transaction():
        # Tie the entry to a transaction now (no connection is taken yet), so that a rollback
        # before anything else happens still discards it.
        session.begin()
    pending = session.info.setdefault("audit_pending", [])
    pending.append(
        _Pending(
            at=utcnow(),
            actor=Actor.of(actor),
            action=action,
            object_type=object_type,
            object_id=None if object_id is None else str(object_id)[:64],
            reason=reason,
            request_id=request_id(),
            detail=_clean_detail(detail),
        )
    )


def canonical(entry: AuditEntry) -> bytes:
    """The bytes an entry's hash covers: every field but the hash itself, as sorted, compact JSON."""
    fields = {
        "seq": entry.seq,
        "at": entry.at.astimezone(dt.timezone.utc).isoformat(timespec="microseconds"),
        "actor_id": entry.actor_id,
        "actor_role": entry.actor_role,
        "actor_label": entry.actor_label,
        "action": entry.action,
        "object_type": entry.object_type,
        "object_id": entry.object_id,
        "reason": entry.reason,
        "request_id": entry.request_id,
        "detail": entry.detail,
        "prev_hash": entry.prev_hash,
    }
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def entry_hash(entry: AuditEntry) -> str:
    """SHA-256 of the previous entry's hash followed by this entry's canonical JSON."""
    return hashlib.sha256(entry.prev_hash.encode("ascii") + canonical(entry)).hexdigest()


def _lock_and_head(session: Session) -> tuple[int, str]:
    """Serialise appends, then read the chain's last (seq, hash)."""
    if is_postgresql(session):
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
    head = session.execute(select(AuditEntry.seq, AuditEntry.hash).order_by(AuditEntry.seq.desc()).limit(1)).first()
    return (head.seq, head.hash) if head is not None else (0, GENESIS)


@event.listens_for(Session, "before_commit")
def _chain_pending(session: Session) -> None:
    pending: list[_Pending] = session.info.pop("audit_pending", [])
    if not pending:
        return
    seq, previous = _lock_and_head(session)
    for item in pending:
        seq += 1
        # Stored as read back: microseconds, UTC (what `canonical` sees again at verify time).
        entry = AuditEntry(
            seq=seq,
            at=item.at.astimezone(dt.timezone.utc),
            actor_id=item.actor.id,
            actor_role=item.actor.role[:16],
            actor_label=item.actor.label,
            action=item.action,
            object_type=item.object_type,
            object_id=item.object_id,
            reason=item.reason,
            request_id=item.request_id,
            detail=item.detail,
            prev_hash=previous,
        )
        entry.hash = entry_hash(entry)
        previous = entry.hash
        session.add(entry)
    session.flush()


@event.listens_for(Session, "after_soft_rollback")
def _drop_pending(session: Session, previous_transaction: Any) -> None:
    # "soft": record() touches no table, so there may be no database transaction to roll back. A
    # savepoint rolled back keeps what was recorded around it (and errs towards recording).
    if not previous_transaction.nested:
        session.info.pop("audit_pending", None)


# -- verifying and searching ------------------------------------------------------------------------


@dataclass(frozen=True)
class Verification:
    """The outcome of checking the chain: how many entries, the head, and the first problem if any."""

    entries: int
    head_seq: int
    head_hash: str
    broken_seq: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        """Whether every entry fits the chain."""
        return self.broken_seq is None


def verify(session: Session, batch: int = 1000) -> Verification:
    """Recompute the chain from the first entry; stop at the first entry that does not fit.

    Caught: an edited field (its hash no longer matches), a removed or inserted entry (a gap in `seq`
    or a `prev_hash` that does not name its predecessor). Removing the newest entries leaves a shorter
    valid chain; compare the reported head with one recorded elsewhere to catch that.
    """
    expected_seq, previous, count = 1, GENESIS, 0
    last_seq = 0
    while True:
        rows = session.scalars(
            select(AuditEntry).where(AuditEntry.seq >= expected_seq).order_by(AuditEntry.seq).limit(batch)
        ).all()
        if not rows:
            return Verification(count, last_seq, previous)
        for entry in rows:
            if entry.seq != expected_seq:
                return Verification(count, last_seq, previous, expected_seq, f"entry {expected_seq} is missing")
            if entry.prev_hash != previous:
                return Verification(count, last_seq, previous, entry.seq, "does not follow the entry before it")
            if entry_hash(entry) != entry.hash:
                return Verification(count, last_seq, previous, entry.seq, "its content was changed after it was written")
            previous, last_seq = entry.hash, entry.seq
            expected_seq += 1
            count += 1
        session.expunge_all()  # keep memory flat over a long log


@dataclass(frozen=True)
class Filters:
    """What to search the log for; every field optional."""

    user_id: int | None = None
    action: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    object_type: str | None = None
    object_id: str | None = None
    before_seq: int | None = None
    limit: int = 100


def search(session: Session, filters: Filters) -> list[AuditEntry]:
    """Entries matching `filters`, newest first. `action` "contact." matches every contact action."""
    query = select(AuditEntry)
    if filters.user_id is not None:
        query = query.where(AuditEntry.actor_id == filters.user_id)
    if filters.action:
        if filters.action.endswith("."):
            query = query.where(AuditEntry.action.startswith(filters.action, autoescape=True))
        else:
            query = query.where(AuditEntry.action == filters.action)
    if filters.since is not None:
        query = query.where(AuditEntry.at >= filters.since)
    if filters.until is not None:
        query = query.where(AuditEntry.at < filters.until)
    if filters.object_type:
        query = query.where(AuditEntry.object_type == filters.object_type)
    if filters.object_id:
        query = query.where(AuditEntry.object_id == filters.object_id)
    if filters.before_seq is not None:
        query = query.where(AuditEntry.seq < filters.before_seq)
    return list(session.scalars(query.order_by(AuditEntry.seq.desc()).limit(filters.limit)))


def as_dict(entry: AuditEntry) -> dict[str, Any]:
    """An entry as JSON for the API and the CLI."""
    return {
        "seq": entry.seq,
        "at": entry.at.isoformat(),
        "actor": {"id": entry.actor_id, "role": entry.actor_role, "label": entry.actor_label},
        "action": entry.action,
        "object": {"type": entry.object_type, "id": entry.object_id} if entry.object_type else None,
        "reason": entry.reason,
        "request_id": entry.request_id,
        "detail": entry.detail,
        "hash": entry.hash,
    }


def parse_when(value: str, end_of_day: bool = False) -> dt.datetime:
    """An ISO date or date-time as an aware UTC instant (a bare date is midnight UTC, or the next one).

    Raises ValueError with a message fit to show.
    """
    value = value.strip()
    try:
        if len(value) == 10:
            day = dt.date.fromisoformat(value)
            moment = dt.datetime.combine(day, dt.time(), dt.timezone.utc)
            return moment + dt.timedelta(days=1) if end_of_day else moment
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{value[:40]!r} is not an ISO date (2026-01-31) or date-time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.astimezone(dt.timezone.utc)


def user_id_for(session: Session, user: str) -> int | None:
    """A user given by id or username; None when there is no such user."""
    user = user.strip()
    if user.isdigit():
        return int(user)
    return session.scalar(select(User.id).where(User.username == user.lower()))


def iter_all(session: Session, batch: int = 1000) -> Iterator[AuditEntry]:
    """Every entry, oldest first, a batch at a time."""
    after = 0
    while True:
        rows = session.scalars(select(AuditEntry).where(AuditEntry.seq > after).order_by(AuditEntry.seq).limit(batch)).all()
        if not rows:
            return
        yield from rows
        after = rows[-1].seq
