"""A call's life in the line, in one place: every change of a call's queue entry, and what goes with it.

Queued, offered (line_store.make_offer, one SQL statement), accepted, connected, on hold, ended,
wrap-up, back in line, caller hung up, callback: each is one function here, and each moves the entry
only as states.TRANSITIONS allows (a move it does not list raises TransitionError before anything is
written). The IVR, routing, connect, supervision and reconciliation call these; none of them sets a
queue entry's state itself. The handler's side of each move goes through presence.set_presence.

Functions here change the session and announce what changed; their callers commit. Those that
record what Twilio reports of a call's progress and its conference commit themselves: each is one
statement on PostgreSQL, sent with the COMMIT (ServiceSession.write_with_commit), one round trip. The last few read a call and its entry
for the webhooks, so that the views (voice.py, connect.py) hold no SQL of their own.
"""

from __future__ import annotations

import datetime as dt
import functools
from types import EllipsisType
from typing import Any

from sqlalchemy import and_, bindparam, case, func, literal, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from . import line, line_store, presence
from .config import RoutingSettings
from .db import ServiceSession, append, insert_returning, is_postgresql, load_one, read_rows, row_values, with_defaults
from .events import announce
from .models import Call, CallEvent, Handler, QueueEntry, User, utcnow
from .states import (CALLBACK_ATTEMPTS, CALLBACK_RETRY, IN_LINE, WITH_HANDLER, WRAP_UP_OUTCOMES, Move, Presence,
                     QueueState, RoutingError, TransitionError, apply, sources, target)

__all__ = ["CALLBACK_ATTEMPTS", "CALLBACK_RETRY", "IN_LINE", "WITH_HANDLER", "WRAP_UP_OUTCOMES", "Move", "Presence",
           "QueueState", "RoutingError", "TransitionError"]


def _fresh(session: Session, model: Any, key: Any) -> Any:
    """A row as the database has it now: routing changes rows with UPDATEs the identity map does not see."""
    return session.get(model, key, populate_existing=True)


def entry_for(session: Session, call_id: int) -> QueueEntry | None:
    """The call's queue entry as the database has it now (or None)."""
    return session.scalar(select(QueueEntry).where(QueueEntry.call_id == call_id).execution_options(populate_existing=True))


# -- the call's outcome -------------------------------------------------------------------------------

def settle(session: Session, call: Call, outcome: str, step: str | None, now: dt.datetime | None = None) -> None:
    """Record how the call ended, once: the first outcome stands (and is a line of the timeline)."""
    if call.outcome is None:
        call.outcome = outcome
        call.outcome_step = step
        append(session, CallEvent, call_id=call.id, kind="outcome", step=step, detail={"outcome": outcome},
               **({"at": now} if now is not None else {}))


def about_someone_else(session: Session, call: Call, now: dt.datetime | None = None) -> None:
    """The handler learnt the call is about someone else's health: that is how it ends, whatever the
    phone menu had recorded (the service takes self-referrals only)."""
    call.outcome = "third_party"
    append(session, CallEvent, call_id=call.id, kind="outcome", step=call.outcome_step, detail={"outcome": "third_party"},
           **({"at": now} if now is not None else {}))


# -- joining the line -----------------------------------------------------------------------------------

def _new_entry(session: Session, call: Call, move: Move, placed_at: dt.datetime, kind: str,
               not_before: dt.datetime | None) -> QueueEntry:
    """The call's first place in line, made by `move` (the table says which state it starts in), for
    the need and flags the caller gave.

    Written at once, by an INSERT that returns it (db.load_one), and set on the call as written: left
    to the ORM's flush, a new entry tied to its call cost the webhook that queues a caller more than
    all its other writes together. The call's own changes still go with the commit (db.ServiceSession).
    """
    (entry,) = load_one(session, insert_returning(QueueEntry), row_values(
        QueueEntry, call_id=call.id, placed_at=placed_at, state=target(move, None), **_description(call, kind, not_before)),
        QueueEntry) or (None,)
    assert entry is not None
    set_committed_value(call, "queue_entry", entry)
    return entry


def _description(call: Call, kind: str, not_before: dt.datetime | None) -> dict[str, Any]:
    """What an entry says of the call it is for: `kind`, the need and flags the caller gave, and
    when it may be offered; a new entry is written with it, an entry the call has is given it."""
    return {"kind": kind, "need": call.need, "flags": list(call.flags), "not_before": not_before}


def _describe(entry: QueueEntry, call: Call, kind: str, not_before: dt.datetime | None) -> None:
    """An entry the call already has, now for `kind`, with the need and flags the caller gave."""
    for key, value in _description(call, kind, not_before).items():
        setattr(entry, key, value)


def join_line(session: Session, call: Call, placed_at: dt.datetime) -> QueueEntry:
    """Put the live caller in line (or back in their place), with the need and flags they gave.

    A caller who is already in line keeps their entry as it is, an outstanding offer included:
    Twilio's queue letting them go and taking them back does not move them.
    """
    entry = call.queue_entry
    if entry is None:
        entry = _new_entry(session, call, Move.QUEUED, placed_at, "live", None)
    else:
        apply(entry, Move.QUEUED)
        _describe(entry, call, "live", None)
    if call.queued_at is None:
        call.queued_at = placed_at
    call.dequeued_at = None
    announce(session, "queue_changed")
    return entry


def request_callback(session: Session, call: Call, keep_place: bool, not_before: dt.datetime | None,
                     now: dt.datetime, kind: str = "callback") -> QueueEntry:
    """The caller asks to be rung back: their entry becomes a callback (in their place, if `keep_place`).
    A request from the website joins the line this way too (`kind` "email" when they asked to be written to).

    An offer of their live call that was outstanding is withdrawn from its handler: the handler
    would otherwise be left holding an offer of a call that is no longer theirs to take.
    """
    entry = call.queue_entry
    if entry is None:
        entry = _new_entry(session, call, Move.CALLBACK_REQUESTED, now, kind, not_before)
    else:
        target(Move.CALLBACK_REQUESTED, entry.state)  # refuse before changing anything
        if entry.state == QueueState.OFFERED:
            _release(session, entry, "callback_requested", now)
        apply(entry, Move.CALLBACK_REQUESTED)
        entry.handler_id = entry.offered_at = None
        if not keep_place:
            entry.placed_at = now
        _describe(entry, call, kind, not_before)
    if call.queued_at is not None and call.dequeued_at is None:
        call.dequeued_at = now
    announce(session, "queue_changed")
    return entry


# -- offers ---------------------------------------------------------------------------------------------

#: The queue entries of a call the handler is taking (if any) and of the call they hold, locked in
#: the order of their calls. FOR UPDATE locks only the rows of the outer FROM (the entries), not the
#: handler read in the subquery.
_ENTRIES_BEFORE_HANDLER = (
    select(QueueEntry.id)
    .where(or_(QueueEntry.call_id == bindparam("call_id"),
               QueueEntry.call_id == select(Handler.current_call_id).where(Handler.id == bindparam("handler_id"))
               .scalar_subquery()))
    .order_by(QueueEntry.call_id)
    .with_for_update()
)


def lock_handler(session: Session, handler: Handler, taking: int | None = None) -> None:
    """Re-read the handler, locked on PostgreSQL, and before them the queue entry of the call they
    hold (and of the call `taking`, which they are accepting).

    Every move of a call locks its queue entry before the handler holding it (an offer, a hang-up,
    the callbacks about the legs). The moves that start from the handler (their console closing,
    a status they set, a decline, an accept) take the two in the same order: taken the other way
    round, a console closing as its offer's caller hung up deadlocked, PostgreSQL undid the
    closing, and the handler stayed on the line with no console. The call they hold is read in the
    same statement as its entry is locked; should an offer reach them between that and the lock on
    them, its entry is locked after them, as before. On SQLite every write transaction is alone.
    """
    if is_postgresql(session):
        session.flush()
        session.execute(_ENTRIES_BEFORE_HANDLER, {"call_id": taking, "handler_id": handler.id})
    presence.lock(session, handler)


def withdraw(session: Session, handler: Handler, reason: str, now: dt.datetime) -> QueueEntry | None:
    """Take back the handler's outstanding offer; the call goes back to its place in line."""
    if handler.current_call_id is None:
        return None
    call_id = handler.current_call_id
    entry = entry_for(session, call_id)
    returned = session.execute(
        update(QueueEntry)
        .where(QueueEntry.call_id == call_id, QueueEntry.state == QueueState.OFFERED, QueueEntry.handler_id == handler.id)
        .values(state=target(Move.BACK_IN_LINE, QueueState.OFFERED), handler_id=None, offered_at=None)
        .execution_options(synchronize_session=False)
    )
    if returned.rowcount == 1 and entry is not None:
        session.refresh(entry)  # the UPDATE above bypassed the identity map
        announce(session, "queue_changed")
    announce(session, "offer_withdrawn", handler_id=handler.id, call_id=call_id, reason=reason)
    handler.current_call_id = None
    return entry


def decline(session: Session, handler: Handler, call_id: int, now: dt.datetime) -> None:
    """The handler turns the offer down: it goes back to its place, and is not offered to them again."""
    lock_handler(session, handler)
    if handler.presence != Presence.OFFERED or handler.current_call_id != call_id:
        raise RoutingError("no_offer", "this call is not offered to you")
    entry = withdraw(session, handler, "declined", now)
    if entry is not None:
        entry.declined_by = [*entry.declined_by, handler.id]
        append(session, CallEvent, call_id=call_id, kind="offer_declined", at=now, detail={"handler_id": handler.id})
    presence.set_presence(session, handler, Presence.AVAILABLE, now)


def offer_missed(session: Session, entry: QueueEntry, now: dt.datetime) -> None:
    """An offer left unanswered past the timeout: the call goes back in line, its handler on break."""
    handler = _fresh(session, Handler, entry.handler_id) if entry.handler_id is not None else None
    append(session, CallEvent, call_id=entry.call_id, kind="offer_missed", at=now, detail={"handler_id": entry.handler_id})
    if handler is not None and handler.current_call_id == entry.call_id:
        withdraw(session, handler, "timeout", now)
        presence.set_presence(session, handler, Presence.BREAK, now, reason="offer_missed")
    else:
        back_in_line(session, entry, now, not_before=entry.not_before)


def expire_offers(session: Session, settings: RoutingSettings, now: dt.datetime) -> int:
    """Offers left unanswered past the timeout go back in line; their handlers go on break."""
    deadline = now - dt.timedelta(seconds=settings.offer_timeout_s)
    query = select(QueueEntry).where(QueueEntry.state == QueueState.OFFERED, QueueEntry.offered_at <= deadline)
    if is_postgresql(session):
        query = query.with_for_update(skip_locked=True)
    missed = session.scalars(query.execution_options(populate_existing=True)).all()
    for entry in missed:
        offer_missed(session, entry, now)
    return len(missed)


def _release(session: Session, entry: QueueEntry, reason: str, now: dt.datetime) -> None:
    """Free the handler an entry is offered to (their console is told why), leaving the entry to the caller."""
    handler = _fresh(session, Handler, entry.handler_id) if entry.handler_id is not None else None
    if handler is not None and handler.current_call_id == entry.call_id and handler.presence == Presence.OFFERED:
        announce(session, "offer_withdrawn", handler_id=handler.id, call_id=entry.call_id, reason=reason)
        presence.set_presence(session, handler, Presence.AVAILABLE, now)


# -- accepting and connecting -----------------------------------------------------------------------------

def claim(session: Session, handler: Handler, call_id: int, now: dt.datetime) -> QueueEntry:
    """Take the call for the handler: exactly one of several racing handlers (or processes) wins.

    The entry goes to `connecting` and the handler `on_call`; raises RoutingError for the losers.
    """
    lock_handler(session, handler, taking=call_id)
    if handler.presence not in (Presence.AVAILABLE, Presence.OFFERED):
        raise RoutingError("not_free", f"you are {handler.presence.replace('_', ' ')}")
    # Each UPDATE returns the row it changed (or none), fresh in the session: no read after it.
    entry = session.scalar(
        update(QueueEntry)
        .where(
            QueueEntry.call_id == call_id,
            or_(QueueEntry.state == QueueState.WAITING,
                and_(QueueEntry.state == QueueState.OFFERED, QueueEntry.handler_id == handler.id)),
            or_(QueueEntry.not_before.is_(None), QueueEntry.not_before <= now),
        )
        .values(state=target(Move.ACCEPTED, QueueState.OFFERED), handler_id=handler.id, offered_at=now)
        .returning(QueueEntry)
        .execution_options(synchronize_session=False, populate_existing=True)
    )
    if entry is None:
        raise RoutingError("call_taken", "this call has been taken or is no longer waiting")
    if handler.presence == Presence.OFFERED and handler.current_call_id != call_id:
        withdraw(session, handler, "accepted_another", now)
    moved = session.scalar(
        update(Handler)
        .where(Handler.id == handler.id, Handler.presence.in_((Presence.AVAILABLE, Presence.OFFERED)))
        .values(presence=Presence.ON_CALL, presence_since=now, current_call_id=call_id)
        .returning(Handler)
        .execution_options(synchronize_session=False, populate_existing=True)
    )
    if moved is None:
        raise RoutingError("not_free", "your status changed; try again")
    assert moved is handler
    append(session, CallEvent, call_id=call_id, kind="accepted", at=now, detail={"handler_id": handler.id})
    announce(session, "presence", handler_id=handler.id, presence=Presence.ON_CALL, since=now.isoformat())
    announce(session, "console_changed")
    return entry


def connected(session: Session, entry: QueueEntry, handler: Handler, now: dt.datetime, **legs: str | None) -> bool:
    """Twilio took our requests: the caller and the handler are being put through to each other.

    Only a call still `connecting` to this handler moves on: if the handler's leg has already come
    back unanswered (its callback can beat the accept here), the call is back in line and stays so,
    and False is returned. A call is never `answered` while its caller waits in a Twilio queue.
    """
    locked = line_store.lock_entry(session, entry.call_id)
    if locked is None or locked.state != QueueState.CONNECTING or locked.handler_id != handler.id:
        return False
    call = _fresh(session, Call, entry.call_id)
    assert call is not None
    for name, sid in legs.items():
        setattr(entry, name, sid)
    if entry.kind == "live" and call.ended_at is not None:
        # The caller hung up while we were connecting them.
        caller_hung_up(session, entry, now, handler=handler)
        return True
    with session.no_autoflush:  # the legs just set do not move anyone in line
        position_now = line.position(session, entry, now)
    apply(entry, Move.CONNECTED)
    entry.left_at = now
    entry.left_reason = "answered"
    entry.position_at_exit = position_now
    if entry.kind == "live":
        call.dequeued_at = call.dequeued_at or now
        settle(session, call, "answered", call.step, now)
    append(session, CallEvent, call_id=call.id, kind="answered" if entry.kind == "live" else "callback_placed", at=now,
           detail={"handler_id": handler.id})
    announce(session, "queue_changed")
    announce(session, "console_changed")
    return True


def connect_failed(session: Session, entry: QueueEntry, handler: Handler, detail: str, now: dt.datetime) -> None:
    """Twilio could not connect them: the caller keeps their place, the handler is free again and told."""
    call = _fresh(session, Call, entry.call_id)
    assert call is not None
    append(session, CallEvent, call_id=entry.call_id, kind="connect_failed", at=now, detail={"handler_id": handler.id, "detail": detail})
    announce(session, "connect_failed", handler_id=handler.id, call_id=entry.call_id, detail=detail)
    if entry.kind == "live" and call.ended_at is not None:
        caller_hung_up(session, entry, now, handler=handler)
        return
    back_in_line(session, entry, now, not_before=entry.not_before)
    presence.set_presence(session, handler, Presence.AVAILABLE, now)


def held(session: Session, call_id: int, handler_id: int, on_hold: bool) -> None:
    """The handler put the caller on hold (with the helpline's music), or took them off it."""
    append(session, CallEvent, call_id=call_id, kind="hold" if on_hold else "unhold", detail={"handler_id": handler_id})


# -- leaving the line ---------------------------------------------------------------------------------------

def back_in_line(session: Session, entry: QueueEntry, now: dt.datetime, not_before: dt.datetime | None = None,
                 front: bool = False) -> None:
    """Put a call that was offered or being connected back in its place in line (nobody is dropped).

    `front` puts it at the head of the line, ahead of every priority (as a supervisor's "move up"
    does): for a caller who had reached the front and lost their handler through no fault of theirs.
    """
    call = _fresh(session, Call, entry.call_id)
    assert call is not None
    apply(entry, Move.BACK_IN_LINE)
    entry.handler_id = entry.offered_at = None
    entry.left_at = entry.left_reason = entry.position_at_exit = None
    entry.handler_leg_sid = entry.caller_leg_sid = entry.conference_sid = None
    entry.not_before = not_before
    if front:
        with session.no_autoflush:
            head = session.scalar(select(func.min(QueueEntry.priority)).where(line.due(now), QueueEntry.id != entry.id))
        if head is not None and head <= entry.priority:
            entry.priority = head - 1
    if entry.kind == "live":
        call.dequeued_at = None
        if call.outcome == "answered":
            # Set by `connected` when Twilio took our requests; the handler never reached them after all.
            call.outcome = call.outcome_step = None
    announce(session, "queue_changed")


def caller_hung_up(session: Session, entry: QueueEntry, now: dt.datetime, *, call: Call | None = None,
                   handler: Handler | None = None) -> None:
    """The caller hung up before a handler reached them: record their place, and free the handler.

    `call` is the call as the caller's session already holds it (it is read afresh otherwise);
    `handler` is the one holding an offer of the call or connecting to it, if any.
    """
    call = call if call is not None else _fresh(session, Call, entry.call_id)
    assert call is not None
    if entry.state in sources(Move.CALLER_HUNG_UP):
        if entry.state in IN_LINE:
            with session.no_autoflush:  # the call's pending changes do not move anyone in line
                entry.position_at_exit = line.position(session, entry, now)
        else:
            entry.position_at_exit = entry.position_at_exit or 1
        apply(entry, Move.CALLER_HUNG_UP)
        entry.left_reason = "abandoned"
        entry.left_at = entry.left_at or now
        call.dequeued_at = call.dequeued_at or now
    settle(session, call, "abandoned", call.step, now)
    if handler is not None:
        presence.lock(session, handler)  # their console may have closed meanwhile (handler_gone): read them afresh
    if handler is not None and handler.current_call_id == call.id and handler.presence in (Presence.OFFERED, Presence.ON_CALL):
        if handler.presence == Presence.OFFERED:
            announce(session, "offer_withdrawn", handler_id=handler.id, call_id=call.id, reason="abandoned")
        presence.set_presence(session, handler, Presence.AVAILABLE, now)
    announce(session, "queue_changed")


def handler_unreachable(session: Session, entry: QueueEntry, handler: Handler | None, status: str, now: dt.datetime) -> None:
    """The handler's phone or softphone never answered: a missed offer; the call goes back to the head
    of the line (the caller had reached the front, and it was not their doing)."""
    append(session, CallEvent, call_id=entry.call_id, kind="offer_missed", at=now,
           detail={"handler_id": entry.handler_id, "status": status})
    back_in_line(session, entry, now, front=True)
    if handler is not None and handler.current_call_id == entry.call_id and handler.presence == Presence.ON_CALL:
        presence.set_presence(session, handler, Presence.BREAK, now, reason="handler_unreachable")


def callback_unanswered(session: Session, entry: QueueEntry, handler: Handler | None, status: str, now: dt.datetime) -> None:
    """We rang the caller back and they did not answer: try again later, a few times, then close it."""
    last = entry.attempts + 1 >= CALLBACK_ATTEMPTS
    target(Move.CALLBACK_CLOSED if last else Move.BACK_IN_LINE, entry.state)  # refuse before changing anything
    entry.attempts += 1
    append(session, CallEvent, call_id=entry.call_id, kind="callback_unanswered", at=now,
           detail={"status": status, "attempt": entry.attempts})
    if last:
        apply(entry, Move.CALLBACK_CLOSED)
        entry.left_at, entry.left_reason = now, "callback_unanswered"
        announce(session, "queue_changed")
    else:
        back_in_line(session, entry, now, not_before=now + CALLBACK_RETRY)
    if handler is not None and handler.current_call_id == entry.call_id and handler.presence == Presence.ON_CALL:
        presence.set_presence(session, handler, Presence.AVAILABLE, now)


# -- the end of the call, and wrap-up ---------------------------------------------------------------------------

#: Who holds a call (an offer of it, or the handler talking to them), read when it ends; built once.
_HOLDERS = select(Handler).where(Handler.current_call_id == bindparam("call_id"))
_HOLDERS_LOCKED = _HOLDERS.with_for_update()
#: Whether anybody holds it, asked on the driver: most calls end held by nobody (a caller who hangs
#: up in line, or in the IVR), and the ORM's query cost a status callback more than its own work.
_HELD = select(Handler.id).where(Handler.current_call_id == bindparam("call_id")).limit(1)


def held_by_anyone(database: Any, call_id: int) -> bool:
    """Whether a handler holds the call (an offer of it, or the call itself), read outside any
    transaction (Database.read_outside_transaction) after the call's end has been committed.

    Once the end is committed nobody can be offered the call: routing offers only calls waiting in
    line, and the end took it out. So a handler who holds it now held it before, and if nobody
    does, `call_ended` has nothing to settle, and its transaction (four round trips on PostgreSQL)
    is saved. Most calls end held by nobody: the caller hangs up in line, or in the menus.
    """
    rows = database.read_outside_transaction(_HELD, {"call_id": call_id})
    return rows is None or bool(rows)


def call_ended(session: Session, call_id: int, now: dt.datetime, *, entry: QueueEntry | None | EllipsisType = ...) -> None:
    """The caller's call ended (status callback): withdraw an offer of it, or start the handler's wrap-up.

    `entry` is the call's queue entry (or None) as the transaction that ended the call holds it
    (voice.py, on SQLite); otherwise it, and the holders, are read afresh.
    """
    # Locked, so that a handler whose console closes at the same moment (handler_gone) is moved by one
    # of the two after the other, never freed by this one from what it read before they left.
    holders_query = _HOLDERS_LOCKED if is_postgresql(session) else _HOLDERS
    if entry is ...:
        entry = line_store.lock_entry(session, call_id)  # the entry before its holders, as every move of a call
        holders = session.scalars(holders_query, {"call_id": call_id}, execution_options={"populate_existing": True}).all()
    else:
        # Within the transaction that ended the call: a handler it has already moved (the one an offer
        # of the call was withdrawn from) is taken as the transaction holds them, not as the database
        # still has them; and nothing is written early for the query.
        with session.no_autoflush:
            held = read_rows(session, _HELD, {"call_id": call_id})
            holders = session.scalars(holders_query, {"call_id": call_id}).all() if held else []
    for handler in holders:
        if handler.presence == Presence.OFFERED:
            announce(session, "offer_withdrawn", handler_id=handler.id, call_id=call_id, reason="abandoned")
            presence.set_presence(session, handler, Presence.AVAILABLE, now)
        elif (handler.presence == Presence.ON_CALL and entry is not None and entry.state == QueueState.ANSWERED
              and entry.kind == "live"):
            start_wrap_up(session, handler, now, reason=CALLER_LEFT)
    if entry is not None and entry.kind == "live" and entry.state == QueueState.OFFERED:
        caller_hung_up(session, entry, now)


#: Why a handler's wrap-up started when they did not end the call themselves: the caller's side
#: ended it (they hung up), which their console tells them.
CALLER_LEFT = "caller_left"


def start_wrap_up(session: Session, handler: Handler, now: dt.datetime, reason: str | None = None) -> None:
    """The handler's call is over; wrap-up starts (and ends with an outcome or after `routing.wrap_up_s`).
    `reason` is CALLER_LEFT when the caller's side ended the call, None when the handler did."""
    if handler.presence != Presence.ON_CALL:
        return
    call_id = handler.current_call_id
    presence.set_presence(session, handler, Presence.WRAP_UP, now, reason=reason)
    handler.current_call_id = call_id
    if call_id is not None:
        append(session, CallEvent, call_id=call_id, kind="wrap_up_started", at=now, detail={"handler_id": handler.id})


def finish_wrap_up(session: Session, handler: Handler, call_id: int, outcome: str, now: dt.datetime) -> None:
    """The handler records the call's outcome and is free again."""
    presence.lock(session, handler)
    if outcome not in WRAP_UP_OUTCOMES:
        raise RoutingError("bad_outcome", f"outcome must be one of {', '.join(WRAP_UP_OUTCOMES)}", status=400)
    if handler.current_call_id != call_id or handler.presence not in (Presence.ON_CALL, Presence.WRAP_UP):
        raise RoutingError("not_your_call", "you are not on or wrapping up this call")
    append(session, CallEvent, call_id=call_id, kind="wrap_up", at=now, detail={"handler_id": handler.id, "outcome": outcome})
    presence.set_presence(session, handler, Presence.AVAILABLE, now)


# -- what Twilio tells us about the call and its conference ---------------------------------------------------

def status_progressed(session: ServiceSession, call_sid: str, new_status: str, sequence: int | None,
                      behind: list[str]) -> None:
    """Record a status callback that does not end the call, and commit; a stale or repeated one changes nothing.

    One statement: an upsert of the call's record that moves its status on only if the callback is
    newer (its status is one of `behind`, those at or before it, and the sequence number only
    grows), with its timeline event. On PostgreSQL the two are one statement sent with the COMMIT,
    one round trip (ServiceSession.write_with_commit); on SQLite two statements in one transaction.
    The statements are built once for each kind of callback (`_progress_statements`).
    """
    postgresql = is_postgresql(session)
    moved, logged = _progress_statements(tuple(behind), sequence is not None, postgresql)
    given = {"call_sid": call_sid, "twilio_status": new_status}
    params = with_defaults(Call.__table__, given if sequence is None else given | {"twilio_sequence": sequence})
    event = {"event_at": utcnow(), "event_detail": {"status": new_status, "sequence": sequence}}
    if postgresql:
        session.write_with_commit(logged, params | event)
    else:
        found = session.execute(moved, params).first()
        if found is not None:
            session.execute(logged, {**event, "call_id": found.id, "step": found.step})
    session.commit()


@functools.cache
def _progress_statements(behind: tuple[str, ...], with_sequence: bool, postgresql: bool) -> tuple[Any, Any]:
    """status_progressed's upsert of the call (returning its id and step), and the timeline event
    written from it: on PostgreSQL one statement, the upsert a CTE of the insert; on SQLite the
    event's own insert, given the call's id and step. (The statuses are compared one by one, not
    as an IN list, which would be expanded into the compiled form with the first call's values.)"""
    calls, events = Call.__table__, CallEvent.__table__
    columns = with_defaults(calls, {"call_sid": None, "twilio_status": None, "twilio_sequence": None})
    newer = or_(calls.c.twilio_status.is_(None), *(calls.c.twilio_status == status for status in behind))
    moving = ["twilio_status"]
    if with_sequence:
        moving.append("twilio_sequence")
        newer = and_(newer, calls.c.twilio_sequence < bindparam("twilio_sequence"))
    upsert = (pg_insert if postgresql else sqlite_insert)(calls).values(
        {key: bindparam(key, type_=calls.c[key].type) for key in columns})
    moved = (upsert.on_conflict_do_update(index_elements=[calls.c.call_sid],
                                          set_={key: upsert.excluded[key] for key in moving}, where=newer)
             .returning(calls.c.id, calls.c.step))
    at, detail = bindparam("event_at", type_=events.c.at.type), bindparam("event_detail", type_=events.c.detail.type)
    if not postgresql:
        return moved, events.insert().values(call_id=bindparam("call_id"), at=at, kind="status",
                                             step=bindparam("step"), detail=detail)
    row = moved.cte("moved")
    logged = (events.insert().from_select(["call_id", "at", "kind", "step", "detail"],
                                          select(row.c.id, at, literal("status"), row.c.step, detail))
              .add_cte(row, nest_here=True))
    return moved, logged


#: The participant labels of a supervisor's legs: asked in by the handler (connect.consult), or
#: listening and coaching (`supervisor-<id>`, supervision.py).
SUPERVISOR_LABELS = ("consult", "supervisor-")


def leg_detail(leg: str | None, handler_leg_sid: str | None, label: str = "") -> dict[str, str]:
    """Whose leg a conference event is about, as its timeline event records it: the handler's, a
    supervisor's (by the participant's label), or else the caller's."""
    if not leg:
        return {}
    if label.startswith(SUPERVISOR_LABELS):
        return {"leg": "supervisor"}
    return {"leg": "handler" if leg == handler_leg_sid else "caller"}


def conference_event(session: ServiceSession, call_id: int, kind: str, conference_sid: str, leg: str | None,
                     label: str = "") -> None:
    """Add a conference event to the call's timeline, if the call has a queue entry, and remember the
    conference's SID on a connecting or answered entry that has none yet; and commit.

    On PostgreSQL one statement sent with the COMMIT (the update a data-modifying CTE beside the
    insert); on SQLite two statements in one transaction. They are built once (`_conference_statements`).
    """
    # Also while still `connecting`: the conference often starts before the accept has committed.
    remember = conference_sid.startswith("CF")
    postgresql = is_postgresql(session)
    logged, remembered = _conference_statements(bool(leg), remember, postgresql)
    params = {"the_call_id": call_id, "event_at": utcnow(), "event_kind": kind, "the_conference_sid": conference_sid,
              "leg": leg, "caller_detail": leg_detail(leg, None, label), "handler_detail": leg_detail(leg, leg, label)}
    if postgresql:
        session.write_with_commit(logged, params)
    else:
        session.execute(logged, params)
        if remembered is not None:
            session.execute(remembered, params)
    session.commit()


@functools.cache
def _conference_statements(with_leg: bool, remember: bool, postgresql: bool) -> tuple[Any, Any]:
    """conference_event's insert of the timeline event (its detail saying whose leg, when it names
    one) and update of the entry's conference SID (None when there is none to remember); on
    PostgreSQL the update is a CTE of the insert."""
    entries, events = QueueEntry.__table__, CallEvent.__table__
    call_id = bindparam("the_call_id", type_=entries.c.call_id.type)  # not a column's name: see bindparam()
    entry = select(entries.c.handler_leg_sid).where(entries.c.call_id == call_id).cte("entry")
    json = events.c.detail.type
    detail: Any = bindparam("caller_detail", type_=json)
    if with_leg:
        detail = case((entry.c.handler_leg_sid == bindparam("leg"), bindparam("handler_detail", type_=json)),
                      else_=detail)
    logged = events.insert().from_select(
        ["call_id", "at", "kind", "detail"],
        select(call_id, bindparam("event_at", type_=events.c.at.type), bindparam("event_kind"), detail)
        .select_from(entry))
    remembered = None
    if remember:
        remembered = (update(entries).values(conference_sid=bindparam("the_conference_sid"))
                      .where(entries.c.call_id == call_id, entries.c.conference_sid.is_(None),
                             or_(*(entries.c.state == state for state in WITH_HANDLER))))
    if postgresql and remembered is not None:
        return logged.add_cte(remembered.cte("remembered"), nest_here=True), None
    return logged, remembered


def remember_conference(session: Session, entry: QueueEntry, conference_sid: str) -> None:
    """Keep the SID of the answered call's conference (found by asking Twilio), if none is kept yet; and commit."""
    session.execute(update(QueueEntry).where(QueueEntry.id == entry.id, QueueEntry.conference_sid.is_(None),
                                             QueueEntry.state == QueueState.ANSWERED).values(conference_sid=conference_sid))
    session.commit()
    entry.conference_sid = conference_sid


def handler_rung_again(session: Session, entry: QueueEntry, leg: str) -> None:
    """The handler's new leg after a drop, kept unless another leg's callback has taken its place; and commit."""
    session.execute(update(QueueEntry).where(QueueEntry.id == entry.id, QueueEntry.state == QueueState.ANSWERED,
                                             QueueEntry.handler_leg_sid.is_(None)).values(handler_leg_sid=leg))
    session.commit()


# -- reading a call for a webhook ---------------------------------------------------------------------------------

#: A call by its SID, and its queue entry if it has one, as whole rows (see find_call): built once.
_CALL_AND_ENTRY = (select(Call.__table__, QueueEntry.__table__).outerjoin(QueueEntry.__table__, QueueEntry.call_id == Call.id)
                   .where(Call.call_sid == bindparam("call_sid")))


def find_call(session: Session, call_sid: str) -> Call | None:
    """The call with this CallSid, if the service has seen it, with its queue entry (if any).

    The entry comes in the same query (a LEFT JOIN): the queue, hold and hang-up steps read it
    after changing the call, and a lazy load there would first flush those changes (a round trip of
    its own) and then query again. Every webhook after a call's first finds it here, so the row is
    read on the driver (db.load_one).
    """
    found = load_one(session, _CALL_AND_ENTRY, {"call_sid": call_sid}, Call, QueueEntry)
    return _with_entry(*found) if found is not None else None


def _with_entry(call: Call, entry: QueueEntry | None) -> Call:
    """The call, its queue entry set as read with it (unless the session already had it)."""
    if "queue_entry" not in call.__dict__:
        set_committed_value(call, "queue_entry", entry)
    return call


def call_for_webhook(session: Session, call_sid: str, status: str | None = None, *, new: bool = False) -> Call:
    """The call record for a webhook, created if this is the first the service hears of the call.

    A call's Voice URL request and its first status callbacks arrive together, often at different
    serving processes, and any of them may be first: the record is made with INSERT .. ON CONFLICT
    DO NOTHING, so that exactly one insert wins and the others, instead of failing on the unique
    CallSid, read the winner's row. `new` says the call is most likely new (its Voice URL request):
    the insert comes first, and returns the record it made; any other webhook looks first.
    """
    if not new:
        call = find_call(session, call_sid)
        if call is not None:
            return call  # every webhook after a call's first: one query, not an insert that does nothing
    made = load_one(session, insert_returning(Call, is_postgresql(session), unique_on="call_sid"),
                    row_values(Call, call_sid=call_sid, twilio_status=status), Call)
    if made is not None:
        return _with_entry(made[0], None)  # a call made a moment ago has no place in line
    call = find_call(session, call_sid)
    assert call is not None
    return call


def entry_of(session: Session, call_id: int) -> QueueEntry | None:
    """The call's queue entry (as the session has it, if it has it)."""
    return session.scalar(select(QueueEntry).where(QueueEntry.call_id == call_id))


def open_consult(session: Session, call_id: int) -> tuple[str, int] | None:
    """The supervisor's leg and user id of the call's open consult, or None when there is none."""
    events = session.scalars(select(CallEvent).where(
        CallEvent.call_id == call_id, CallEvent.kind.in_(("consult_started", "consult_returned", "consult_ended")))
        .order_by(CallEvent.id.desc()).limit(1)).all()
    if not events or events[0].kind != "consult_started":
        return None
    return events[0].detail["leg"], events[0].detail["supervisor_id"]


def consult_of_leg(session: Session, call_id: int, leg: str) -> tuple[int, int] | None:
    """The handler and the supervisor of the call's consult whose supervisor's leg is `leg`, or None."""
    for event in session.scalars(select(CallEvent).where(CallEvent.call_id == call_id, CallEvent.kind == "consult_started")
                                 .order_by(CallEvent.id.desc())):
        if event.detail.get("leg") == leg:
            return event.detail["handler_id"], event.detail["supervisor_id"]
    return None


def supervisors_to_ask(session: Session) -> list[User]:
    """The supervisors a handler may ask into a call: every active supervisor account, by name."""
    return list(session.scalars(select(User).where(User.role == "supervisor", User.active.is_(True))
                                .order_by(User.display_name, User.id)))


# -- a handler's own moves that touch an offer (their presence itself is presence.py's) ----------------

def change_status(session: Session, handler: Handler, status: str, now: dt.datetime) -> None:
    """The handler sets themselves available, on break or offline."""
    lock_handler(session, handler)
    if status not in presence.SETTABLE:
        raise RoutingError("bad_status", f"status must be one of {', '.join(presence.SETTABLE)}", status=400)
    if handler.presence in (Presence.ON_CALL, Presence.WRAP_UP):
        raise RoutingError(handler.presence, "finish the call and its wrap-up first")
    if handler.presence == Presence.OFFERED:
        if status == Presence.AVAILABLE:
            return
        withdraw(session, handler, "status_changed", now)
    presence.set_presence(session, handler, status, now)


def handler_gone(session: Session, handler_id: int, now: dt.datetime) -> None:
    """The handler's last console connection closed: free their offer now, and take them off the line.

    A handler on a call keeps it (the call is on their phone or softphone, and ends by itself).
    """
    handler = session.get(Handler, handler_id)
    if handler is None:
        return
    lock_handler(session, handler)  # as the database has it now: a hang-up crossing their leaving waits its turn
    if handler.presence == Presence.OFFERED:
        withdraw(session, handler, "disconnected", now)
    if handler.presence in (Presence.AVAILABLE, Presence.OFFERED):
        presence.set_presence(session, handler, Presence.OFFLINE, now)
