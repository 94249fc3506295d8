"""The store behind routing: the SQL that reads the line and the free handlers, and writes an offer.

Most of it is about PostgreSQL's plans: each need's line is read through one index
(ix_queue_entries_state_need_order) with the statements built once (`_statements`), the service's
own words written into the SQL (`constant`) so that a prepared statement keeps a good plan, and a
long line walked in keyset pages. Every state change is a conditional UPDATE, so that with several
processes on one database exactly one of two racing changes wins; on PostgreSQL what routing reads
is also locked with FOR UPDATE SKIP LOCKED, and on SQLite every write transaction is BEGIN IMMEDIATE
(db.py). Routing passes take turns across processes: on PostgreSQL each holds a transaction advisory
lock (ROUTING_LOCK), so a pass never skips a handler another pass had locked and then freed - it
waits the millisecond for it and sees what that pass committed. No wake-up is lost.

The offer is one statement on PostgreSQL (one round trip: the entry and the handler locked and
moved, the timeline's line written, all or nothing) and three conditional statements on SQLite,
which has no data-modifying CTEs or row locks (and needs none: its writers take turns).
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
from typing import Any, Iterable, Iterator

from sqlalchemy import (Integer, String, and_, bindparam, exists, func, insert, literal_column, or_, select, true,
                        tuple_, union_all, update)
from sqlalchemy.orm import Session

from .config import RoutingSettings
from .db import is_postgresql, run_together
from .decision import NEED_CLASSES, SKILLED_NEEDS, Free, Offer, Waiting, takeable
from .events import announce
from .models import CallEvent, Handler, QueueEntry
from .states import Move, Presence, QueueState, presence_sources, sources, target

#: Entries fetched at a time when a need's line must be walked past calls nobody free can take: a
#: few at first (the usual walk stops within them), then more at a time, so that a long walk takes
#: a handful of round trips and not one per few rows.
_BATCHES = (16, 128, 1024)


#: The PostgreSQL advisory lock routing passes take turns on (any fixed 64-bit number; "route").
ROUTING_LOCK = 0x726F757465


_TAKE_TURN = select(func.pg_advisory_xact_lock(ROUTING_LOCK))


def _locked(session: Session, query):  # type: ignore[no-untyped-def]
    """Lock the rows `query` reads, skipping rows another process holds (PostgreSQL only)."""
    return query.with_for_update(skip_locked=True) if is_postgresql(session) else query


_WAITING_COLUMNS = (QueueEntry.id, QueueEntry.call_id, QueueEntry.kind, QueueEntry.need, QueueEntry.flags,
                    QueueEntry.priority, QueueEntry.placed_at, QueueEntry.declined_by)


def _waiting(row: Any) -> Waiting:
    return Waiting(row[0], row[1], row[2], row[3], tuple(row[4] or ()), row[5], row[6], tuple(row[7] or ()))


def constant(value: str | int) -> Any:
    """A fixed value written into the SQL rather than sent as a parameter.

    PostgreSQL plans a prepared statement once for all its parameters' values; with the state, the
    need and the LIMIT as parameters that generic plan cannot use the line's index well, so it would
    plan the statement afresh every time (most of a decision's cost). Only the service's own words
    and numbers go here, never anything a caller or user sent.
    """
    if isinstance(value, int):
        return literal_column(str(int(value)), Integer)
    if not value.replace("_", "").isalnum():
        raise ValueError(f"not a plain word: {value!r}")
    return literal_column(f"'{value}'", String)


def _need_is(need: str | None):  # type: ignore[no-untyped-def]
    return QueueEntry.need.is_(None) if need is None else QueueEntry.need == constant(need)


@functools.cache
def _statements(need: str | None) -> dict[str, Any]:
    """The queries over one need's line, built once: building SQL costs more Python than running it.

    Each is served by ix_queue_entries_state_need_order: an equality on state and need, then the
    line order, so LIMIT stops after the rows it returns.
    """
    due_now = or_(QueueEntry.not_before.is_(None), QueueEntry.not_before <= bindparam("now"))
    line = (
        select(*_WAITING_COLUMNS)
        .where(QueueEntry.state == constant(QueueState.WAITING), _need_is(need), due_now)
        .order_by(QueueEntry.priority, QueueEntry.placed_at, QueueEntry.id)
    )
    after = tuple_(QueueEntry.priority, QueueEntry.placed_at, QueueEntry.id) > tuple_(
        bindparam("priority"), bindparam("placed_at"), bindparam("id"))
    waited = line.where(QueueEntry.priority == bindparam("priority"), QueueEntry.placed_at <= bindparam("cutoff"),
                        tuple_(QueueEntry.placed_at, QueueEntry.id) > tuple_(bindparam("placed_at"), bindparam("id")))
    return {
        "head": line.limit(constant(1)),
        "next_priority": line.where(QueueEntry.priority > bindparam("priority")).limit(constant(1)),
        "batch": {size: line.where(after).limit(constant(size)) for size in _BATCHES},
        # Old enough for the fallback within one priority: an index range on placed_at.
        "waited": {size: waited.limit(constant(size)) for size in _BATCHES},
    }


@functools.cache
def _heads_statement() -> Any:
    """The first entry of every need's line, in one query."""
    return union_all(*(select(_statements(need)["head"].subquery()) for need in NEED_CLASSES))


#: Before any real entry in keyset order.
_START = {"priority": -(2**31), "placed_at": dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc), "id": 0}


def _heads(rows: Iterable[Any]) -> dict[str | None, Waiting | None]:
    """Each need's first waiting entry (None for an empty line), from `_heads_statement`'s rows."""
    found: dict[str | None, Waiting | None] = dict.fromkeys(NEED_CLASSES)
    for row in rows:
        entry = _waiting(row)
        found[entry.need] = entry
    return found


def _pages(session: Session, batches: dict[int, Any], params: dict[str, Any],
           position: dict[str, Any]) -> Iterator[Waiting]:
    """The rows of `batches` (one statement per size in _BATCHES), a batch at a time, each continuing
    after the last row seen (keyset paging): `position` names the keys and where to start."""
    for size in itertools.chain(_BATCHES, itertools.repeat(_BATCHES[-1])):
        rows = [_waiting(row) for row in session.connection().execute(
            _locked(session, batches[size]), {**params, **position})]
        yield from rows
        if len(rows) < size:
            return
        position = {key: getattr(rows[-1], key) for key in position}


def _walk(session: Session, need: str | None, now: dt.datetime) -> Iterator[Waiting]:
    """The need's line, in line order."""
    return _pages(session, _statements(need)["batch"], {"now": now}, dict(_START))


def _walk_waited(session: Session, need: str | None, now: dt.datetime, cutoff: dt.datetime) -> Iterator[Waiting]:
    """The need's entries placed at or before `cutoff`, in line order.

    Taken one priority at a time, so that each query is an index range on placed_at: a walk over
    the whole line looking for old enough calls would read every recent one too.
    """
    statements = _statements(need)
    head = session.connection().execute(statements["head"], {"now": now}).first()
    while head is not None:
        priority = head.priority
        yield from _pages(session, statements["waited"], {"now": now, "priority": priority, "cutoff": cutoff},
                          {"placed_at": _START["placed_at"], "id": 0})
        head = session.connection().execute(statements["next_priority"], {"now": now, "priority": priority}).first()


@functools.cache
def _free_statement(locking: bool) -> Any:
    from .models import ConsoleConnection

    connected = select(ConsoleConnection.sid).where(ConsoleConnection.handler_id == Handler.id).exists()
    query = (
        select(Handler.id, Handler.skills, Handler.languages)
        .where(Handler.presence == constant(Presence.AVAILABLE), connected)
        .order_by(Handler.available_since, Handler.id)
    )
    return query.with_for_update(skip_locked=True, of=Handler) if locking else query


def _free(rows: Iterable[Any]) -> list[Free]:
    """Available handlers with a live console, longest idle first, from `_free_statement`'s rows."""
    return [Free(row[0], frozenset(row[1] or ()), frozenset(row[2] or ()), rank) for rank, row in enumerate(rows)]


def free_and_heads(session: Session, now: dt.datetime) -> tuple[list[Free], dict[str | None, Waiting | None]]:
    """Take turns with other processes' passes, then read who is free and the head of each need's
    line: one round trip (see run_together)."""
    postgres = is_postgresql(session)
    reads = [(_free_statement(postgres), {}), (_heads_statement(), {"now": now})]
    *_, free_rows, head_rows = run_together(session, *([(_TAKE_TURN, {})] if postgres else []), *reads)
    return _free(free_rows), _heads(head_rows)


def head(session: Session, need: str | None, now: dt.datetime) -> Waiting | None:
    row = session.connection().execute(_statements(need)["head"], {"now": now}).first()
    return _waiting(row) if row is not None else None


def candidate(session: Session, need: str | None, free: list[Free], now: dt.datetime, cutoff: dt.datetime,
               head: Waiting | None, held: set[int]) -> Waiting | None:
    """The first entry of this need's line that someone free may be offered, or None.

    Usually the head of the line; only calls nobody free may take (declined, or asking for
    dentistry or a language nobody free has) are walked past, and so are the `held` ones, whose
    offer failed in this pass because another transaction holds them.
    """
    if head is None:
        return None
    if head.id not in held and takeable(head, free, cutoff):
        return head
    if any(need not in SKILLED_NEEDS or need in handler.skills for handler in free):
        entries = _walk(session, need, now)
    else:
        # Nobody free has the skill: only calls past the fallback wait can go.
        entries = _walk_waited(session, need, now, cutoff)
    return next((entry for entry in entries if entry.id not in held and takeable(entry, free, cutoff)), None)


@functools.cache
def _offer_statements() -> dict[str, Any]:
    """The statements of an offer made one at a time (SQLite), built once: on the tables, no ORM bookkeeping."""
    entries, handlers, events = QueueEntry.__table__, Handler.__table__, CallEvent.__table__
    (waiting,) = sources(Move.OFFERED)
    (free,) = presence_sources(Presence.OFFERED)
    return {
        "entry": update(entries)
        .where(entries.c.id == bindparam("entry_id"), entries.c.state == waiting)
        .values(state=target(Move.OFFERED, waiting), handler_id=bindparam("handler_id"), offered_at=bindparam("at")),
        "handler": update(handlers)
        .where(handlers.c.id == bindparam("handler_id"), handlers.c.presence == free)
        .values(presence=Presence.OFFERED, presence_since=bindparam("at"), current_call_id=bindparam("call")),
        # Within the same transaction: the entry as it was before "entry" above, when the handler was not free.
        "undo": update(entries).where(entries.c.id == bindparam("entry_id"))
        .values(state=waiting, handler_id=None, offered_at=None),
        "event": events.insert(),
    }


@functools.cache
def _offer_in_one_statement() -> Any:
    """The whole offer as one PostgreSQL statement: one round trip instead of four.

    It locks the entry (skipping it if another transaction holds it: leave that call to them, do
    not wait) and the handler, each only if still free; both UPDATEs and the timeline's event
    happen only if both were locked, so an offer is made whole or not at all. Returns a row if made.
    The UPDATEs' conditions refer to the locking CTEs, which is also what makes PostgreSQL run the
    locks first (sibling CTEs otherwise run in no set order).
    """
    entries, handlers, events = QueueEntry.__table__, Handler.__table__, CallEvent.__table__
    (waiting,) = sources(Move.OFFERED)
    (free,) = presence_sources(Presence.OFFERED)
    entry = (select(entries.c.id).where(entries.c.id == bindparam("entry_id"), entries.c.state == constant(waiting))
             .with_for_update(skip_locked=True).cte("free_entry"))
    handler = (select(handlers.c.id).where(handlers.c.id == bindparam("handler_id"),
                                           handlers.c.presence == constant(free))
               .with_for_update().cte("free_handler"))
    both_free = and_(exists(select(entry.c.id)), exists(select(handler.c.id)))
    took_entry = (update(entries).where(entries.c.id == bindparam("entry_id"), both_free)
                  .values(state=constant(target(Move.OFFERED, waiting)), handler_id=bindparam("handler_id"),
                          offered_at=bindparam("at"))
                  .returning(entries.c.call_id).cte("took_entry"))
    took_handler = (update(handlers).where(handlers.c.id == bindparam("handler_id"), both_free)
                    .values(presence=constant(Presence.OFFERED), presence_since=bindparam("at"), current_call_id=bindparam("call"))
                    .returning(handlers.c.id).cte("took_handler"))
    made = select(took_entry.c.call_id, bindparam("at", type_=events.c.at.type), constant("offered"),
                  func.json_build_object(constant("handler_id"), took_handler.c.id)
                  ).select_from(took_entry.join(took_handler, true()))
    return insert(events).from_select(["call_id", "at", "kind", "detail"], made).returning(events.c.id)


def _offer_in_steps(session: Session, entry: Waiting, handler_id: int, now: dt.datetime) -> bool:
    """The offer as conditional UPDATEs, one at a time (SQLite, where BEGIN IMMEDIATE already serialises)."""
    connection = session.connection()
    statements = _offer_statements()
    taken = connection.execute(statements["entry"], {"entry_id": entry.id, "handler_id": handler_id, "at": now})
    if taken.rowcount != 1:
        return False
    claimed = connection.execute(statements["handler"], {"handler_id": handler_id, "at": now, "call": entry.call_id})
    if claimed.rowcount != 1:
        connection.execute(statements["undo"], {"entry_id": entry.id})
        return False
    connection.execute(statements["event"], {"call_id": entry.call_id, "kind": "offered", "at": now,
                                             "detail": {"handler_id": handler_id}})
    return True


def make_offer(session: Session, entry: Waiting, handler_id: int, settings: RoutingSettings, now: dt.datetime) -> Offer | None:
    """Offer the entry to the handler, if both are still free; announce it to the handler's console."""
    if is_postgresql(session):
        made = bool(run_together(session, (_offer_in_one_statement(), {
            "entry_id": entry.id, "handler_id": handler_id, "at": now, "call": entry.call_id}))[0])
    else:
        made = _offer_in_steps(session, entry, handler_id, now)
    if not made:
        return None
    offer = Offer(entry.call_id, handler_id, entry.need, entry.flags, entry.kind, entry.placed_at, now,
                  settings.offer_timeout_s)
    announce(session, "offer", handler_id=handler_id, offer=offer.payload(now))
    announce(session, "presence", handler_id=handler_id, presence=Presence.OFFERED, since=now.isoformat())
    announce(session, "console_changed")
    return offer


def lock_entry(session: Session, call_id: int) -> QueueEntry | None:
    """The call's queue entry as committed now, its row locked on PostgreSQL until the transaction ends.

    The accept and the webhooks about a call's legs race (Twilio may report the handler's leg busy
    before the accept has recorded that it connected): each reads the entry this way before changing
    it, so the later one sees what the earlier one did instead of overwriting it. On SQLite every
    write transaction is already one at a time (BEGIN IMMEDIATE).
    """
    session.flush()
    query = select(QueueEntry).where(QueueEntry.call_id == call_id).execution_options(populate_existing=True)
    if is_postgresql(session):
        query = query.with_for_update()
    return session.scalar(query)


def current_offer(session: Session, handler: Handler, settings: RoutingSettings, now: dt.datetime) -> dict[str, Any] | None:
    """The handler's outstanding offer as the `offer` event carries it, or None."""
    if handler.presence != Presence.OFFERED or handler.current_call_id is None:
        return None
    entry = session.scalar(select(QueueEntry).where(QueueEntry.call_id == handler.current_call_id)
                           .execution_options(populate_existing=True))
    if entry is None or entry.state != QueueState.OFFERED or entry.handler_id != handler.id or entry.offered_at is None:
        return None
    offer = Offer(entry.call_id, handler.id, entry.need, tuple(entry.flags), entry.kind, entry.placed_at,
                  entry.offered_at, settings.offer_timeout_s)
    return offer.payload(now)
