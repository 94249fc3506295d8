"""The routing rules, in one place: the order of the line, a caller's position, and the wait to expect.

The line is ordered by `priority` (a supervisor may move a call up), then by `placed_at`, the moment
the caller first joined; a callback request keeps the place of the call it came from. Every question
here is answered by an indexed query, never by reading the whole queue.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from sqlalchemy import (Integer, String, and_, bindparam, exists, func, insert, literal_column, or_, select, true,
                        tuple_, union_all, update)
from flask import Flask
from sqlalchemy.orm import Session

from .config import RoutingSettings
from .db import is_postgresql, run_together
from . import lifecycle
from .events import Coalescer, announce
from .models import Call, CallEvent, Handler, QueueEntry, User, utcnow
from .states import (CALLBACK_ATTEMPTS, CALLBACK_RETRY, IN_LINE, WRAP_UP_OUTCOMES, Move, Presence, QueueState,
                     RoutingError, sources, target)

__all__ = ["CALLBACK_ATTEMPTS", "CALLBACK_RETRY", "IN_LINE", "WRAP_UP_OUTCOMES", "RoutingError"]

#: How far back answered calls count towards the wait estimate.
ESTIMATE_WINDOW = dt.timedelta(minutes=30)


def due(now: dt.datetime):  # type: ignore[no-untyped-def]
    """The SQL condition for an entry that is in line now (a callback waits for the line to open)."""
    return and_(
        QueueEntry.state.in_(IN_LINE),
        or_(QueueEntry.not_before.is_(None), QueueEntry.not_before <= now),
    )


def position(session: Session, entry: QueueEntry, now: dt.datetime) -> int:
    """The entry's place in line, 1 for the next to be answered."""
    ahead = session.scalar(
        select(func.count(QueueEntry.id)).where(
            due(now),
            or_(
                QueueEntry.priority < entry.priority,
                and_(QueueEntry.priority == entry.priority, QueueEntry.placed_at < entry.placed_at),
                and_(
                    QueueEntry.priority == entry.priority,
                    QueueEntry.placed_at == entry.placed_at,
                    QueueEntry.id < entry.id,
                ),
            ),
        )
    )
    return int(ahead or 0) + 1


def estimated_wait_s(session: Session, place: int, now: dt.datetime, default_s: int) -> int:
    """How long the caller at `place` is likely to wait, learnt from recent answers.

    With enough recent answers this is the place divided by the rate at which callers have been
    answered (Little's law); with a few, the average recent wait; with none, the configured default.
    """
    since = now - ESTIMATE_WINDOW
    rows = session.execute(
        select(Call.queued_at, Call.dequeued_at).where(
            Call.outcome == "answered", Call.dequeued_at >= since, Call.queued_at.is_not(None)
        )
    ).all()
    if len(rows) >= 3:
        rate = len(rows) / ESTIMATE_WINDOW.total_seconds()
        return int(place / rate)
    if rows:
        waits = [(left - joined).total_seconds() for joined, left in rows]
        return int(sum(waits) / len(waits))
    return default_s


def spoken_wait(seconds: int) -> str:
    """A wait as a person would say it, rounded up so that nobody is promised too little."""
    if seconds < 60:
        return "less than a minute"
    minutes = -(-seconds // 60)
    if minutes < 60:
        return f"about {minutes} minutes" if minutes > 1 else "about a minute"
    hours = round(minutes / 60, 1)
    return f"about {hours:g} hours" if hours != 1 else "about an hour"


# ---------------------------------------------------------------------------------------------
# Live routing: presence and offers. What happens to a call after that (accept, connect, back in
# line, hang-up, wrap-up) is lifecycle.py's; the states and their allowed moves are states.py's.
#
# The policy, in one place:
#
# * The line is ordered by priority, then `placed_at`, then id (see `due` and `position` above). A
#   callback keeps the place of the call it came from, and waits while its `not_before` is ahead.
# * A call needs a handler whose skills include its need (mental_health, addiction,
#   return_to_work; speak_now and no need fit anyone), who knows dentistry if the call is flagged
#   `dentist`, who speaks the language of a `language:<code>` flag, and who has not declined it.
# * Once a call has waited `routing.skill_fallback_after_s`, any free handler who has not declined
#   it fits (skilled ones still first).
# * Each decision takes the first call in line that some free handler fits, and offers it to the
#   longest idle of those (idle since `available_since`). Free = `available` with a live console.
# * An offer not accepted within `routing.offer_timeout_s` goes back to its place and the handler
#   goes on `break` (a missed offer). A decline sends it back too; the decliner stays available at
#   the back of the idle order and is not offered that call again.
# * After a call the handler is in `wrap_up` until they record an outcome, or `routing.wrap_up_s`.
#
# Every state change is a conditional UPDATE, so that with several processes on one database
# exactly one of two racing changes wins; on PostgreSQL routing also locks what it reads with
# FOR UPDATE SKIP LOCKED, and on SQLite every write transaction is BEGIN IMMEDIATE (db.py).
# Routing passes themselves take turns, across processes: on PostgreSQL each holds a transaction
# advisory lock (ROUTING_LOCK), so a pass never skips a handler another pass had locked and then
# freed - it waits the millisecond for it and sees what that pass committed. No wake-up is lost.
# Functions here change the session and announce what changed; their callers commit.
# ---------------------------------------------------------------------------------------------

PRESENCES = tuple(Presence)
#: What a handler may set for themselves; the others follow from offers and calls.
SETTABLE = (Presence.AVAILABLE, Presence.BREAK, Presence.OFFLINE)
#: Needs that ask for a skilled handler; the flow's other need, speak_now, fits anyone.
SKILLED_NEEDS = ("mental_health", "addiction", "return_to_work")
#: Every value `QueueEntry.need` takes (the flow checks its needs at start-up); None = not asked.
NEED_CLASSES: tuple[str | None, ...] = (*SKILLED_NEEDS, "speak_now", None)
#: Entries fetched at a time when a need's line must be walked past calls nobody free can take: a
#: few at first (the usual walk stops within them), then more at a time, so that a long walk takes
#: a handful of round trips and not one per few rows.
_BATCHES = (16, 128, 1024)
#: The PostgreSQL advisory lock routing passes take turns on (any fixed 64-bit number; "route").
ROUTING_LOCK = 0x726F757465
_TAKE_TURN = select(func.pg_advisory_xact_lock(ROUTING_LOCK))


@dataclass(frozen=True)
class Waiting:
    """A waiting entry as routing reads it (plain values, no ORM object per row)."""

    id: int
    call_id: int
    kind: str
    need: str | None
    flags: tuple[str, ...]
    priority: int
    placed_at: dt.datetime
    declined_by: tuple[int, ...]

    @property
    def order(self) -> tuple[int, dt.datetime, int]:
        """The entry's place in line, as a sort key."""
        return (self.priority, self.placed_at, self.id)


@dataclass
class Free:
    """An available handler with a live console, as routing reads it."""

    id: int
    skills: frozenset[str]
    languages: frozenset[str]
    #: Place in the idle order (0 = idle longest).
    rank: int = 0


def requirements(need: str | None, flags: Iterable[str]) -> tuple[frozenset[str], str | None]:
    """The skills and the language a call asks for."""
    skills = {need} if need in SKILLED_NEEDS else set()
    language = None
    for flag in flags:
        if flag == "dentist":
            skills.add("dentist")
        elif isinstance(flag, str) and flag.startswith("language:"):
            language = flag.split(":", 1)[1]
    return frozenset(skills), language


def fits(handler: Free, entry: Waiting) -> bool:
    """Whether the handler has every skill and the language the call asks for."""
    skills, language = requirements(entry.need, entry.flags)
    return skills <= handler.skills and (language is None or language in handler.languages)


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


def _takeable(entry: Waiting, free: list[Free], cutoff: dt.datetime) -> bool:
    """Whether someone free may be offered the entry."""
    for handler in free:
        if handler.id in entry.declined_by:
            continue
        if entry.placed_at <= cutoff or fits(handler, entry):
            return True
    return False


def _candidate(session: Session, need: str | None, free: list[Free], now: dt.datetime, cutoff: dt.datetime,
               head: Waiting | None, held: set[int]) -> Waiting | None:
    """The first entry of this need's line that someone free may be offered, or None.

    Usually the head of the line; only calls nobody free may take (declined, or asking for
    dentistry or a language nobody free has) are walked past, and so are the `held` ones, whose
    offer failed in this pass because another transaction holds them.
    """
    if head is None:
        return None
    if head.id not in held and _takeable(head, free, cutoff):
        return head
    if any(need not in SKILLED_NEEDS or need in handler.skills for handler in free):
        entries = _walk(session, need, now)
    else:
        # Nobody free has the skill: only calls past the fallback wait can go.
        entries = _walk_waited(session, need, now, cutoff)
    return next((entry for entry in entries if entry.id not in held and _takeable(entry, free, cutoff)), None)


def choose_handler(entry: Waiting, free: list[Free], cutoff: dt.datetime) -> Free | None:
    """The longest-idle free handler who fits the entry; after the fallback wait, any who has not declined it."""
    allowed = [handler for handler in free if handler.id not in entry.declined_by]
    skilled = next((handler for handler in allowed if fits(handler, entry)), None)
    if skilled is not None:
        return skilled
    return allowed[0] if allowed and entry.placed_at <= cutoff else None


@dataclass(frozen=True)
class Offer:
    """An offer made: which call to which handler, and until when."""

    call_id: int
    handler_id: int
    need: str | None
    flags: tuple[str, ...]
    kind: str
    placed_at: dt.datetime
    offered_at: dt.datetime
    timeout_s: int

    def payload(self, now: dt.datetime) -> dict[str, Any]:
        """The `offer` event the handler's console receives (no personal data)."""
        return {
            "call_id": self.call_id,
            "need": self.need,
            "flags": list(self.flags),
            "kind": self.kind,
            "waiting_s": max(0, int((now - self.placed_at).total_seconds())),
            "offered_at": self.offered_at.isoformat(),
            "expires_at": (self.offered_at + dt.timedelta(seconds=self.timeout_s)).isoformat(),
            "timeout_s": self.timeout_s,
        }


#: A need whose candidate has not been looked for yet in this round.
_UNKNOWN: Any = object()


def route(session: Session, settings: RoutingSettings, now: dt.datetime) -> list[Offer]:
    """Offer waiting calls to free handlers until one side runs out; returns the offers made."""
    postgres = is_postgresql(session)
    # Take turns with other processes' passes, then read who is free and the head of each need's
    # line: one round trip (see run_together). Each need's first takeable entry is then looked for
    # again only when its line moves or the handlers who could take it are gone.
    reads = [(_free_statement(postgres), {}), (_heads_statement(), {"now": now})]
    *_, free_rows, head_rows = run_together(session, *([(_TAKE_TURN, {})] if postgres else []), *reads)
    free = _free(free_rows)
    if not free:
        return []
    cutoff = now - dt.timedelta(seconds=settings.skill_fallback_after_s)
    fresh_heads = _heads(head_rows)
    candidates: dict[str | None, Waiting | None] = {}
    offers: list[Offer] = []
    # Entries whose offer failed: another transaction holds them (a claim, a hang-up) and they read
    # as waiting until it commits. Trying them again in this pass would only spin until then; the
    # next pass (the holder's commit, or the sweep within a second) sees them as they are.
    held: set[int] = set()
    while free:
        for need in NEED_CLASSES:
            known = candidates.get(need, _UNKNOWN)
            if known is _UNKNOWN or (known is not None and not _takeable(known, free, cutoff)):
                head = fresh_heads.pop(need) if need in fresh_heads else _head(session, need, now)
                candidates[need] = _candidate(session, need, free, now, cutoff, head, held)
        waiting = [entry for entry in candidates.values() if entry is not None]
        if not waiting:
            break
        entry = min(waiting, key=lambda item: item.order)
        del candidates[entry.need]
        handler = choose_handler(entry, free, cutoff)
        assert handler is not None  # the candidate was takeable by someone free
        free.remove(handler)
        offer = make_offer(session, entry, handler.id, settings, now)
        if offer is not None:
            offers.append(offer)
        else:
            held.add(entry.id)  # the call went elsewhere, or is held: the handler is still free
            free.append(handler)
            free.sort(key=lambda item: item.rank)
    return offers



def _head(session: Session, need: str | None, now: dt.datetime) -> Waiting | None:
    row = session.connection().execute(_statements(need)["head"], {"now": now}).first()
    return _waiting(row) if row is not None else None


@functools.cache
def _offer_statements() -> dict[str, Any]:
    """The statements of an offer made one at a time (SQLite), built once: on the tables, no ORM bookkeeping."""
    entries, handlers, events = QueueEntry.__table__, Handler.__table__, CallEvent.__table__
    (waiting,) = sources(Move.OFFERED)
    return {
        "entry": update(entries)
        .where(entries.c.id == bindparam("entry_id"), entries.c.state == waiting)
        .values(state=target(Move.OFFERED, waiting), handler_id=bindparam("handler_id"), offered_at=bindparam("at")),
        "handler": update(handlers)
        .where(handlers.c.id == bindparam("handler_id"), handlers.c.presence == Presence.AVAILABLE)
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
    entry = (select(entries.c.id).where(entries.c.id == bindparam("entry_id"), entries.c.state == constant(waiting))
             .with_for_update(skip_locked=True).cte("free_entry"))
    handler = (select(handlers.c.id).where(handlers.c.id == bindparam("handler_id"),
                                           handlers.c.presence == constant(Presence.AVAILABLE))
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


# -- presence -----------------------------------------------------------------------------------

def set_presence(session: Session, handler: Handler, presence: str, now: dt.datetime, reason: str | None = None) -> None:
    """Move the handler to `presence`, restarting its clock (and the idle clock when they become free).

    `reason` says why the service moved them without their asking (`offer_missed`), so that their
    console can tell them.
    """
    if presence not in PRESENCES:
        raise ValueError(f"unknown presence {presence!r}")
    if presence == Presence.AVAILABLE and handler.presence != Presence.AVAILABLE:
        handler.available_since = now
    if presence in SETTABLE:
        handler.current_call_id = None
    if presence != handler.presence:
        handler.presence = presence
        handler.presence_since = now
        announce(session, "presence", handler_id=handler.id, presence=presence, since=now.isoformat(), reason=reason)
        announce(session, "console_changed")
    if presence == Presence.AVAILABLE:
        announce(session, "handler_free", handler_id=handler.id)


def change_status(session: Session, handler: Handler, status: str, now: dt.datetime) -> None:
    """The handler sets themselves available, on break or offline."""
    lock(session, handler)
    if status not in SETTABLE:
        raise RoutingError("bad_status", f"status must be one of {', '.join(SETTABLE)}", status=400)
    if handler.presence in (Presence.ON_CALL, Presence.WRAP_UP):
        raise RoutingError(handler.presence, "finish the call and its wrap-up first")
    if handler.presence == Presence.OFFERED:
        if status == Presence.AVAILABLE:
            return
        lifecycle.withdraw(session, handler, "status_changed", now)
    set_presence(session, handler, status, now)


def _fresh(session: Session, model: Any, key: Any) -> Any:
    """A row as the database has it now: routing changes rows with UPDATEs the identity map does not see."""
    return session.get(model, key, populate_existing=True)


def lock(session: Session, handler: Handler) -> None:
    """Re-read the handler, locking their row on PostgreSQL, before changing their state."""
    session.flush()
    session.refresh(handler, with_for_update=True if is_postgresql(session) else None)


def expire_offers(session: Session, settings: RoutingSettings, now: dt.datetime) -> int:
    """Offers left unanswered past the timeout go back in line; their handlers go on break."""
    deadline = now - dt.timedelta(seconds=settings.offer_timeout_s)
    missed = session.scalars(
        _locked(session, select(QueueEntry).where(QueueEntry.state == QueueState.OFFERED, QueueEntry.offered_at <= deadline))
        .execution_options(populate_existing=True)
    ).all()
    for entry in missed:
        lifecycle.offer_missed(session, entry, now)
    return len(missed)


def end_wrap_ups(session: Session, settings: RoutingSettings, now: dt.datetime) -> int:
    """Handlers whose wrap-up has lasted `routing.wrap_up_s` become available."""
    deadline = now - dt.timedelta(seconds=settings.wrap_up_s)
    handlers = session.scalars(
        _locked(session, select(Handler).where(Handler.presence == Presence.WRAP_UP, Handler.presence_since <= deadline))
        .execution_options(populate_existing=True)
    ).all()
    for handler in handlers:
        if handler.current_call_id is not None:
            session.add(CallEvent(call_id=handler.current_call_id, kind="wrap_up_timed_out", at=now,
                                  detail={"handler_id": handler.id}))
        set_presence(session, handler, Presence.AVAILABLE, now)
    return len(handlers)


def sweep(session: Session, settings: RoutingSettings, now: dt.datetime) -> list[Offer]:
    """The periodic pass: expire offers and wrap-ups, then route (callbacks whose time has come included)."""
    expire_offers(session, settings, now)
    end_wrap_ups(session, settings, now)
    return route(session, settings, now)


def handler_gone(session: Session, handler_id: int, now: dt.datetime) -> None:
    """The handler's last console connection closed: free their offer now, and take them off the line.

    A handler on a call keeps it (the call is on their phone or softphone, and ends by itself).
    """
    handler = _fresh(session, Handler, handler_id)
    if handler is None:
        return
    if handler.presence == Presence.OFFERED:
        lifecycle.withdraw(session, handler, "disconnected", now)
    if handler.presence in (Presence.AVAILABLE, Presence.OFFERED):
        set_presence(session, handler, Presence.OFFLINE, now)



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














# -- what the consoles see ------------------------------------------------------------------------

def queue_view(session: Session, now: dt.datetime) -> dict[str, Any]:
    """The body of GET /api/queue and of the `queue` event: the line and the handlers, no personal data."""
    rows = session.execute(
        select(QueueEntry.call_id, QueueEntry.placed_at, QueueEntry.need, QueueEntry.flags)
        .where(due(now))
        .order_by(QueueEntry.priority, QueueEntry.placed_at, QueueEntry.id)
    ).all()
    calls = [
        {"id": call_id, "position": place, "waiting_s": max(0, int((now - placed_at).total_seconds())),
         "need": need, "flags": list(flags or ())}
        for place, (call_id, placed_at, need, flags) in enumerate(rows, start=1)
    ]
    people = session.execute(
        select(Handler.id, User.display_name, Handler.presence, Handler.presence_since, Handler.skills)
        .join(User, User.id == Handler.user_id)
        .where(User.active.is_(True))
        .order_by(Handler.id)
    ).all()
    handlers = [
        {"id": handler_id, "name": name, "presence": presence, "since": since.isoformat(), "skills": list(skills or ())}
        for handler_id, name, presence, since, skills in people
    ]
    return {"calls": calls, "handlers": handlers}


def current_offer(session: Session, handler: Handler, settings: RoutingSettings, now: dt.datetime) -> dict[str, Any] | None:
    """The handler's outstanding offer as the `offer` event carries it, or None."""
    if handler.presence != Presence.OFFERED or handler.current_call_id is None:
        return None
    entry = lifecycle.entry_for(session, handler.current_call_id)
    if entry is None or entry.state != QueueState.OFFERED or entry.handler_id != handler.id or entry.offered_at is None:
        return None
    offer = Offer(entry.call_id, handler.id, entry.need, tuple(entry.flags), entry.kind, entry.placed_at,
                  entry.offered_at, settings.offer_timeout_s)
    return offer.payload(now)


# -- when routing runs ------------------------------------------------------------------------------

#: Where the app keeps its router thread, when `helpline serve` started one.
ROUTER = "helpline.router"
#: Pause before a failed routing pass is tried again.
RETRY_AFTER_S = 0.5


def route_now(app: Flask) -> list[Offer]:
    """One routing pass in a transaction of its own, on the router's own connection (db.own_connection)."""
    from .db import db

    with db.transaction(db.own_connection("router")) as session:
        offers = route(session, app.config["HELPLINE"].routing, utcnow())
        announce(session, "console_changed")
    return offers


def start_router(app: Flask) -> Coalescer:
    """Called by `helpline serve`: route on a thread of the serving worker (without it, in each request).

    The request that changed something (a caller joining the line, a handler becoming free) commits
    and returns; routing follows at once on this thread. A burst of changes costs a pass or two, not
    one pass per change inside each request, and no webhook waits for a routing decision. A pass
    that fails (the database away) is tried again after RETRY_AFTER_S.
    """
    router = Coalescer("helpline-router", lambda: route_now(app), retry_after_s=RETRY_AFTER_S)
    router.thread.start()
    app.extensions[ROUTER] = router
    return router


def init_app(app: Flask) -> None:
    """Route whenever something committed could let a call through: a caller joined or left the line,
    a call ended, or a handler became free. (The periodic sweep covers timeouts; see realtime.py.)"""
    from .db import db

    def wanted() -> None:
        router: Coalescer | None = app.extensions.get(ROUTER)
        if router is not None:
            router.request()
        else:
            route_now(app)

    def ended(call_id: int) -> None:
        with db.transaction() as session:
            lifecycle.call_ended(session, call_id, utcnow())
        wanted()

    db.bus.subscribe("queue_changed", lambda: wanted())
    db.bus.subscribe("call_ended", ended)
    db.bus.subscribe("handler_free", lambda handler_id: wanted())






