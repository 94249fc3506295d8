"""The store behind routing: the SQL that reads the line and the free handlers, and writes an offer.

Most of it is about the plans: each need's line is read through its indexes, never scanned - its
head through ix_queue_entries_state_need_order, and the first call someone free may take, when the
head is not one, through seeks on the caller's language (ix_queue_entries_state_need_language_order)
and on the fallback wait (`_takeable_statements`). The statements are built once, with the service's
own words written into the SQL (`constant`) so that a PostgreSQL prepared statement keeps a good plan. Every state change is a conditional UPDATE, so that with several
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
from typing import Any, Iterable, Iterator, NamedTuple

from sqlalchemy import (Integer, String, and_, bindparam, exists, func, insert, literal_column, or_, select, true,
                        tuple_, union_all, update)
from sqlalchemy.orm import Session

from .config import RoutingSettings
from .db import driver_cursor, is_postgresql, new_row, run_together
from .decision import NEED_CLASSES, SKILLED_NEEDS, Free, Offer, Waiting, takeable
from .events import announce
from .models import CallEvent, Handler, QueueEntry
from .states import Move, Presence, QueueState, presence_sources, sources, target

#: Entries fetched at a time when the head of a need's line is not one someone free may take: a few
#: at first (the first that SQL lets through is usually it), then more at a time, so that looking
#: past many that only Python can rule out (declined, dentistry) takes a handful of round trips.
_BATCHES = (4, 64, 1024)


#: The PostgreSQL advisory lock routing passes take turns on (any fixed 64-bit number; "route").
ROUTING_LOCK = 0x726F757465


_TAKE_TURN = select(func.pg_advisory_xact_lock(ROUTING_LOCK))


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


#: The line's order: priority, then when the caller joined, then id (line.py).
_LINE_ORDER = (QueueEntry.priority, QueueEntry.placed_at, QueueEntry.id)


#: In line now: a callback waits while its `not_before` is ahead.
_DUE_NOW = or_(QueueEntry.not_before.is_(None), QueueEntry.not_before <= bindparam("now"))


@functools.cache
def _statements(need: str | None) -> dict[str, Any]:
    """The queries over one need's line, built once: building SQL costs more Python than running it.

    Served by ix_queue_entries_state_need_order: an equality on state and need, then the line order,
    so LIMIT stops after the rows it returns.
    """
    line = (
        select(*_WAITING_COLUMNS)
        .where(QueueEntry.state == constant(QueueState.WAITING), _need_is(need), _DUE_NOW)
        .order_by(*_LINE_ORDER)
    )
    return {"head": line.limit(constant(1))}


@functools.cache
def _takeable_statements(need: str | None, languages: int, locking: bool) -> dict[int, Any]:
    """The entries of one need's line that someone free may be offered as far as SQL can tell, in
    line order: one statement per size in _BATCHES, built once. The first (the usual and only one)
    reads from the head of the line on; the others continue after a keyset position (`priority`,
    `placed_at`, `id`). The first has no such condition because nothing it needs comes before the
    head, and because PostgreSQL estimates a row comparison by its first column alone: with every
    call at one priority it would expect no rows at all, and might as well read the line through the
    other index, filtering on the language, as through the language's own.

    `languages` is how many languages the free handlers with the need's skill speak, bound as
    `language_0`, `language_1`, ...; -1 when nobody free has the skill, so that only calls past the
    fallback wait can go. `locking`: each branch locks the rows it returns, skipping rows another
    transaction holds (PostgreSQL, where FOR UPDATE goes inside a UNION's branches, not on it). Each
    branch of the UNION ALL is a seek on an index, LIMITed on its own:

    * a call asking for no language, or for one of those languages: ix_queue_entries_state_need_language_order,
      one seek per language (an equality on state, need and language, then the line order), so calls
      in other languages are never read;
    * a call placed at or before `cutoff`, in the head's priority (`head_priority`: no entry of the
      line comes before it): ix_queue_entries_state_need_order, a range on placed_at within it;
    * the same in the priorities after it (a supervisor's moves make these few, and usually none).

    The union is a superset of what `decision.takeable` accepts, and never leaves out a call it
    accepts: declines, dentistry and the handlers one by one are checked on the rows it returns,
    in Python, as before. So the decisions are the same as walking the whole line.
    """
    columns = [column.label(column.key) for column in _WAITING_COLUMNS]
    after = tuple_(*_LINE_ORDER) > tuple_(bindparam("priority"), bindparam("placed_at"), bindparam("id"))
    mine = (QueueEntry.state == constant(QueueState.WAITING), _need_is(need), _DUE_NOW)
    waited = QueueEntry.placed_at <= bindparam("cutoff")
    head_priority = bindparam("head_priority")
    # Each branch: its condition, and its order. A language's branch is ordered by the language first
    # (one value within it, so the same order): PostgreSQL does not count `language IS NULL` as fixing
    # the column, and would otherwise sort, or read the line through the other index and filter.
    by_language = (QueueEntry.language, *_LINE_ORDER)
    conditions: list[tuple[Any, tuple[Any, ...]]] = []
    if languages >= 0:
        conditions.append((QueueEntry.language.is_(None), by_language))
        conditions += [(QueueEntry.language == bindparam(f"language_{index}"), by_language) for index in range(languages)]
    conditions += [(and_(QueueEntry.priority == head_priority, waited), _LINE_ORDER),
                   (and_(QueueEntry.priority > head_priority, waited), _LINE_ORDER)]

    def branch(condition: Any, order: tuple[Any, ...], size: int) -> Any:
        query = select(*columns).where(*mine, condition, *([after] if size != _BATCHES[0] else []))
        query = query.order_by(*order).limit(constant(size))
        return select((query.with_for_update(skip_locked=True) if locking else query).subquery())

    def statement(size: int) -> Any:
        branches = [branch(condition, order, size) for condition, order in conditions]
        found = union_all(*branches).subquery()
        return select(*(found.c[column.key] for column in _WAITING_COLUMNS)).order_by(
            found.c.priority, found.c.placed_at, found.c.id).limit(constant(size))

    return {size: statement(size) for size in _BATCHES}


@functools.cache
def _heads_statement() -> Any:
    """The first entry of every need's line, in one query."""
    return union_all(*(select(_statements(need)["head"].subquery()) for need in NEED_CLASSES))


def _heads(rows: Iterable[Any]) -> dict[str | None, Waiting | None]:
    """Each need's first waiting entry (None for an empty line), from `_heads_statement`'s rows."""
    found: dict[str | None, Waiting | None] = dict.fromkeys(NEED_CLASSES)
    for row in rows:
        entry = _waiting(row)
        found[entry.need] = entry
    return found


def _pages(session: Session, batches: dict[int, Any], params: dict[str, Any], first: list[Waiting]) -> Iterator[Waiting]:
    """The rows of `batches` (one statement per size in _BATCHES), a batch at a time: `first`, the
    first batch's rows, already read; then each batch after the last row seen (keyset paging)."""
    rows, sizes = first, itertools.chain(_BATCHES, itertools.repeat(_BATCHES[-1]))
    size = next(sizes)
    while True:
        yield from rows
        if len(rows) < size:
            return
        position = {"priority": rows[-1].priority, "placed_at": rows[-1].placed_at, "id": rows[-1].id}
        size = next(sizes)
        rows = [_waiting(row) for row in session.connection().execute(batches[size], {**params, **position})]


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


#: How many handlers are free (for `nobody_free`).
_FREE_COUNT = select(func.count()).select_from(_free_statement(False).subquery())


def _free(rows: Iterable[Any]) -> list[Free]:
    """Available handlers with a live console, longest idle first, from `_free_statement`'s rows."""
    return [Free(row[0], frozenset(row[1] or ()), frozenset(row[2] or ()), rank) for rank, row in enumerate(rows)]


class FirstRead(NamedTuple):
    """What a routing pass reads in its first round trip (`free_and_heads`)."""

    free: list[Free]
    heads: dict[str | None, Waiting | None]
    #: First pages of the hard lines read ahead (`_LOOKED_FOR`), by need: statement, parameters, rows.
    read_ahead: dict[str | None, tuple[Any, dict[str, Any], list[Any]]]


#: The first pages the last pass on PostgreSQL had to read for the lines whose head nobody free could
#: take (`candidates`), by need: the statement, and its parameters but the pass's time. The next pass
#: reads them again in its first round trip, on the guess that the free handlers' languages and the
#: heads' priorities are as they were, so that such a line costs no round trip more than any other;
#: `candidates` takes those rows only where its own statement and parameters turn out the same. A
#: hint shared by this process's passes: a wrong guess costs a read, never a wrong offer.
_LOOKED_FOR: dict[str | None, tuple[Any, dict[str, Any]]] = {}


def free_and_heads(session: Session, now: dt.datetime, cutoff: dt.datetime | None = None) -> FirstRead:
    """Take turns with other processes' passes, then read who is free and the head of each need's
    line, and (on PostgreSQL, given the pass's fallback `cutoff`) the pages read ahead: one round
    trip (see run_together)."""
    global _LOOKED_FOR  # replaced whole, never changed in place: another pass may be reading it
    postgres = is_postgresql(session)
    lock = [(_TAKE_TURN, {})] if postgres else []
    reads = [(_free_statement(postgres), {}), (_heads_statement(), {"now": now})]
    ahead = ({need: (statement, {**params, "now": now, "cutoff": cutoff}) for need, (statement, params) in _LOOKED_FOR.items()}
             if postgres and cutoff is not None else {})
    free_rows, head_rows, *page_rows = run_together(session, *lock, *reads, *ahead.values())[len(lock):]
    if ahead and not free_rows:
        # Nobody free, so nothing to look for: the guess is dropped, not read again at every pass
        # until someone is (that pass looks for itself, and the next reads ahead again).
        _LOOKED_FOR = {}
    pages = {need: (statement, params, rows) for (need, (statement, params)), rows in zip(ahead.items(), page_rows)}
    return FirstRead(_free(free_rows), _heads(head_rows), pages)


#: The name of the connection the routing passes keep (Database.own_connection).
ROUTER_CONNECTION = "router"


def nobody_free(database: Any) -> bool:
    """Whether the last commit left no handler free, read outside any transaction
    (Database.read_outside_transaction) on the router's connection.

    Every caller joining or leaving the line asks for a routing pass, and while every handler is
    busy (a burst, exactly when the line is needed most) each of those passes would find nobody to
    offer a call to. Asked first, the pass costs a read: on SQLite without the write lock, so it
    holds up no webhook; on PostgreSQL one round trip, where the pass's transaction took two (its
    reads with the routing lock, then its COMMIT). A handler freed after the read is routed to by
    the pass their own change asks for.
    """
    rows = database.read_outside_transaction(_FREE_COUNT, kept_for=ROUTER_CONNECTION)
    return rows is not None and rows[0][0] == 0


def head(session: Session, need: str | None, now: dt.datetime) -> Waiting | None:
    row = session.connection().execute(_statements(need)["head"], {"now": now}).first()
    return _waiting(row) if row is not None else None


def _spoken(need: str | None, free: list[Free]) -> tuple[str, ...] | None:
    """The languages spoken by the free handlers with the need's skill, in a fixed order (so that one
    statement serves each count); None when nobody free has the skill."""
    able = [handler for handler in free if need not in SKILLED_NEEDS or need in handler.skills]
    if not able:
        return None
    return tuple(sorted({language for handler in able for language in handler.languages if isinstance(language, str)}))


def candidates(session: Session, heads: dict[str | None, Waiting | None], free: list[Free], now: dt.datetime,
               cutoff: dt.datetime, held: set[int],
               read_ahead: dict[str | None, tuple[Any, dict[str, Any], list[Any]]] | None = None
               ) -> dict[str | None, Waiting | None]:
    """For each need of `heads` (its line's first entry, or None), the first entry of its line that
    someone free may be offered, or None.

    Usually the head of the line. Otherwise the database finds the first entry asking for no
    language or one that a free handler with the skill speaks, or past the fallback wait
    (`_takeable_statements`), for every such need in one round trip (run_together); only what SQL
    cannot tell - declines, dentistry, the `held` entries, whose offer failed in this pass because
    another transaction holds them - is looked past here, reading on in pages if it must.

    `read_ahead` is given to a pass's first look: the first pages `free_and_heads` read ahead, used
    where they are what this look would read, and what this look reads is remembered for the next pass.
    """
    global _LOOKED_FOR  # replaced whole, never changed in place: another pass may be reading it
    found: dict[str | None, Waiting | None] = {}
    looks: dict[str | None, tuple[dict[int, Any], dict[str, Any]]] = {}
    for need, head in heads.items():
        if head is None or (head.id not in held and takeable(head, free, cutoff)):
            found[need] = head
            continue
        spoken = _spoken(need, free)
        languages = () if spoken is None else spoken
        statements = _takeable_statements(need, -1 if spoken is None else len(languages), is_postgresql(session))
        looks[need] = statements, {"now": now, "cutoff": cutoff, "head_priority": head.priority,
                                   **{f"language_{index}": language for index, language in enumerate(languages)}}
    if read_ahead is not None and is_postgresql(session):
        _LOOKED_FOR = {need: (statements[_BATCHES[0]], {key: value for key, value in params.items() if key not in ("now", "cutoff")})
                       for need, (statements, params) in looks.items()}
    if not looks:
        return found
    ahead = read_ahead or {}
    first_pages = {need: ahead[need][2] for need, (statements, params) in looks.items()
                   if need in ahead and ahead[need][0] is statements[_BATCHES[0]] and ahead[need][1] == params}
    unread = [need for need in looks if need not in first_pages]
    if unread:
        pages = run_together(session, *((looks[need][0][_BATCHES[0]], looks[need][1]) for need in unread))
        first_pages.update(zip(unread, pages))
    for need, (statements, params) in looks.items():
        entries = _pages(session, statements, params, [_waiting(row) for row in first_pages[need]])
        found[need] = next((entry for entry in entries if entry.id not in held and takeable(entry, free, cutoff)), None)
    return found


@functools.cache
def _offer_statements() -> dict[str, Any]:
    """The statements of an offer made one at a time (SQLite), built once: on the tables, no ORM
    bookkeeping, run on the driver (db.driver_cursor); the timeline's event is a row like any other (db.new_row)."""
    entries, handlers = QueueEntry.__table__, Handler.__table__
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
    taken = driver_cursor(connection, statements["entry"], {"entry_id": entry.id, "handler_id": handler_id, "at": now})
    if taken.rowcount != 1:
        return False
    claimed = driver_cursor(connection, statements["handler"], {"handler_id": handler_id, "at": now, "call": entry.call_id})
    if claimed.rowcount != 1:
        driver_cursor(connection, statements["undo"], {"entry_id": entry.id})
        return False
    driver_cursor(connection, *new_row(CallEvent, call_id=entry.call_id, kind="offered", at=now,
                                       detail={"handler_id": handler_id}))
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
