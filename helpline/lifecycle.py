"""A call's life in the line, in one place: every change of a call's queue entry, and what goes with it.

Queued, offered (line_store.make_offer, one SQL statement), accepted, connected, on hold, ended,
wrap-up, back in line, caller hung up, callback: each is one function here, and each moves the entry
only as states.TRANSITIONS allows (a move it does not list raises TransitionError before anything is
written). The IVR, routing, connect, supervision and reconciliation call these; none of them sets a
queue entry's state itself. The handler's side of each move goes through presence.set_presence.

Functions here change the session and announce what changed; their callers commit.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from . import line, line_store, presence
from .config import RoutingSettings
from .db import is_postgresql
from .events import announce
from .models import Call, CallEvent, Handler, QueueEntry
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
        session.add(CallEvent(call_id=call.id, kind="outcome", step=step, detail={"outcome": outcome},
                              **({"at": now} if now is not None else {})))


# -- joining the line -----------------------------------------------------------------------------------

def join_line(session: Session, call: Call, placed_at: dt.datetime) -> QueueEntry:
    """Put the live caller in line (or back in their place), with the need and flags they gave.

    A caller who is already in line keeps their entry as it is, an outstanding offer included:
    Twilio's queue letting them go and taking them back does not move them.
    """
    entry = call.queue_entry
    if entry is None:
        entry = QueueEntry(call_id=call.id, placed_at=placed_at)
        apply(entry, Move.QUEUED, new=True)
        session.add(entry)
        call.queue_entry = entry
    else:
        apply(entry, Move.QUEUED)
    entry.kind = "live"
    entry.need = call.need
    entry.flags = list(call.flags)
    entry.not_before = None
    if call.queued_at is None:
        call.queued_at = placed_at
    call.dequeued_at = None
    announce(session, "queue_changed")
    return entry


def request_callback(session: Session, call: Call, keep_place: bool, not_before: dt.datetime | None,
                     now: dt.datetime) -> QueueEntry:
    """The caller asks to be rung back: their entry becomes a callback (in their place, if `keep_place`).

    An offer of their live call that was outstanding is withdrawn from its handler: the handler
    would otherwise be left holding an offer of a call that is no longer theirs to take.
    """
    entry = call.queue_entry
    if entry is None:
        entry = QueueEntry(call_id=call.id, placed_at=now)
        apply(entry, Move.CALLBACK_REQUESTED, new=True)
        session.add(entry)
    else:
        target(Move.CALLBACK_REQUESTED, entry.state)  # refuse before changing anything
        if entry.state == QueueState.OFFERED:
            _release(session, entry, "callback_requested", now)
        apply(entry, Move.CALLBACK_REQUESTED)
        entry.handler_id = entry.offered_at = None
        if not keep_place:
            entry.placed_at = now
    entry.kind = "callback"
    entry.need = call.need
    entry.flags = list(call.flags)
    entry.not_before = not_before
    if call.queued_at is not None and call.dequeued_at is None:
        call.dequeued_at = now
    announce(session, "queue_changed")
    return entry


# -- offers ---------------------------------------------------------------------------------------------

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
    presence.lock(session, handler)
    if handler.presence != Presence.OFFERED or handler.current_call_id != call_id:
        raise RoutingError("no_offer", "this call is not offered to you")
    entry = withdraw(session, handler, "declined", now)
    if entry is not None:
        entry.declined_by = [*entry.declined_by, handler.id]
        session.add(CallEvent(call_id=call_id, kind="offer_declined", at=now, detail={"handler_id": handler.id}))
    presence.set_presence(session, handler, Presence.AVAILABLE, now)


def offer_missed(session: Session, entry: QueueEntry, now: dt.datetime) -> None:
    """An offer left unanswered past the timeout: the call goes back in line, its handler on break."""
    handler = _fresh(session, Handler, entry.handler_id) if entry.handler_id is not None else None
    session.add(CallEvent(call_id=entry.call_id, kind="offer_missed", at=now, detail={"handler_id": entry.handler_id}))
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
    presence.lock(session, handler)
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
    session.add(CallEvent(call_id=call_id, kind="accepted", at=now, detail={"handler_id": handler.id}))
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
    session.add(CallEvent(call_id=call.id, kind="answered" if entry.kind == "live" else "callback_placed", at=now,
                          detail={"handler_id": handler.id}))
    announce(session, "queue_changed")
    announce(session, "console_changed")
    return True


def connect_failed(session: Session, entry: QueueEntry, handler: Handler, detail: str, now: dt.datetime) -> None:
    """Twilio could not connect them: the caller keeps their place, the handler is free again and told."""
    call = _fresh(session, Call, entry.call_id)
    assert call is not None
    session.add(CallEvent(call_id=entry.call_id, kind="connect_failed", at=now, detail={"handler_id": handler.id, "detail": detail}))
    announce(session, "connect_failed", handler_id=handler.id, call_id=entry.call_id, detail=detail)
    if entry.kind == "live" and call.ended_at is not None:
        caller_hung_up(session, entry, now, handler=handler)
        return
    back_in_line(session, entry, now, not_before=entry.not_before)
    presence.set_presence(session, handler, Presence.AVAILABLE, now)


def held(session: Session, call_id: int, handler_id: int, on_hold: bool) -> None:
    """The handler put the caller on hold (with the helpline's music), or took them off it."""
    session.add(CallEvent(call_id=call_id, kind="hold" if on_hold else "unhold", detail={"handler_id": handler_id}))


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
    if handler is not None and handler.current_call_id == call.id and handler.presence in (Presence.OFFERED, Presence.ON_CALL):
        if handler.presence == Presence.OFFERED:
            announce(session, "offer_withdrawn", handler_id=handler.id, call_id=call.id, reason="abandoned")
        presence.set_presence(session, handler, Presence.AVAILABLE, now)
    announce(session, "queue_changed")


def handler_unreachable(session: Session, entry: QueueEntry, handler: Handler | None, status: str, now: dt.datetime) -> None:
    """The handler's phone or softphone never answered: a missed offer; the call goes back to the head
    of the line (the caller had reached the front, and it was not their doing)."""
    session.add(CallEvent(call_id=entry.call_id, kind="offer_missed", at=now,
                          detail={"handler_id": entry.handler_id, "status": status}))
    back_in_line(session, entry, now, front=True)
    if handler is not None and handler.current_call_id == entry.call_id and handler.presence == Presence.ON_CALL:
        presence.set_presence(session, handler, Presence.BREAK, now, reason="handler_unreachable")


def callback_unanswered(session: Session, entry: QueueEntry, handler: Handler | None, status: str, now: dt.datetime) -> None:
    """We rang the caller back and they did not answer: try again later, a few times, then close it."""
    last = entry.attempts + 1 >= CALLBACK_ATTEMPTS
    target(Move.CALLBACK_CLOSED if last else Move.BACK_IN_LINE, entry.state)  # refuse before changing anything
    entry.attempts += 1
    session.add(CallEvent(call_id=entry.call_id, kind="callback_unanswered", at=now,
                          detail={"status": status, "attempt": entry.attempts}))
    if last:
        apply(entry, Move.CALLBACK_CLOSED)
        entry.left_at, entry.left_reason = now, "callback_unanswered"
        announce(session, "queue_changed")
    else:
        back_in_line(session, entry, now, not_before=now + CALLBACK_RETRY)
    if handler is not None and handler.current_call_id == entry.call_id and handler.presence == Presence.ON_CALL:
        presence.set_presence(session, handler, Presence.AVAILABLE, now)


# -- the end of the call, and wrap-up ---------------------------------------------------------------------------

def call_ended(session: Session, call_id: int, now: dt.datetime) -> None:
    """The caller's call ended (status callback): withdraw an offer of it, or start the handler's wrap-up."""
    entry = entry_for(session, call_id)
    holders = session.scalars(
        select(Handler).where(Handler.current_call_id == call_id).execution_options(populate_existing=True)
    ).all()
    for handler in holders:
        if handler.presence == Presence.OFFERED:
            announce(session, "offer_withdrawn", handler_id=handler.id, call_id=call_id, reason="abandoned")
            presence.set_presence(session, handler, Presence.AVAILABLE, now)
        elif (handler.presence == Presence.ON_CALL and entry is not None and entry.state == QueueState.ANSWERED
              and entry.kind == "live"):
            start_wrap_up(session, handler, now)
    if entry is not None and entry.kind == "live" and entry.state == QueueState.OFFERED:
        caller_hung_up(session, entry, now)


def start_wrap_up(session: Session, handler: Handler, now: dt.datetime) -> None:
    """The handler's call is over; wrap-up starts (and ends with an outcome or after `routing.wrap_up_s`)."""
    if handler.presence != Presence.ON_CALL:
        return
    call_id = handler.current_call_id
    presence.set_presence(session, handler, Presence.WRAP_UP, now)
    handler.current_call_id = call_id
    if call_id is not None:
        session.add(CallEvent(call_id=call_id, kind="wrap_up_started", at=now, detail={"handler_id": handler.id}))


def finish_wrap_up(session: Session, handler: Handler, call_id: int, outcome: str, now: dt.datetime) -> None:
    """The handler records the call's outcome and is free again."""
    presence.lock(session, handler)
    if outcome not in WRAP_UP_OUTCOMES:
        raise RoutingError("bad_outcome", f"outcome must be one of {', '.join(WRAP_UP_OUTCOMES)}", status=400)
    if handler.current_call_id != call_id or handler.presence not in (Presence.ON_CALL, Presence.WRAP_UP):
        raise RoutingError("not_your_call", "you are not on or wrapping up this call")
    session.add(CallEvent(call_id=call_id, kind="wrap_up", at=now, detail={"handler_id": handler.id, "outcome": outcome}))
    presence.set_presence(session, handler, Presence.AVAILABLE, now)
