"""A handler's presence: their state (available, offered, on a call, wrap-up, break, offline) and
which consoles they have open.

The states and what a handler may set are here; the moves that come with a call (offered, on a
call, wrap-up) are made by lifecycle.py and line_store.make_offer through `set_presence`. Consoles
are one row per Socket.IO connection, shared by every process: routing offers calls only to
handlers with a live connection, and when a handler's last connection goes (the tab closed, the
network dropped, or the process holding it stopped refreshing its rows), any offer they hold moves
on at once (`lifecycle.handler_gone`, with `lifecycle.change_status` the handler's own choice).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Collection

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from .config import RoutingSettings
from .db import append, is_postgresql
from .events import announce
from .models import CallEvent, ConsoleConnection, Handler
from .states import Presence, check_presence_move

#: A process refreshes its connections every sweep (about a second); rows this old belong to a process that stopped.
STALE = dt.timedelta(seconds=60)


def connect(session: Session, sid: str, handler_id: int, process: str, now: dt.datetime) -> None:
    """Record a new console connection."""
    session.merge(ConsoleConnection(sid=sid, handler_id=handler_id, process=process, connected_at=now, seen_at=now))


def connections(session: Session, handler_id: int) -> int:
    """How many consoles the handler has open."""
    return int(session.scalar(select(func.count(ConsoleConnection.sid)).where(ConsoleConnection.handler_id == handler_id)) or 0)


def disconnect(session: Session, sid: str) -> int | None:
    """Forget a closed connection; returns the handler if it was their last (lifecycle.handler_gone moves
    their offer on)."""
    row = session.get(ConsoleConnection, sid)
    if row is None:
        return None
    handler_id = row.handler_id
    session.delete(row)
    session.flush()
    return handler_id if connections(session, handler_id) == 0 else None


def heartbeat(session: Session, process: str, open_sids: Collection[str], now: dt.datetime) -> None:
    """Mark this process's connections that are still open (`open_sids`) as alive.

    Only those: a row whose connection has closed, but whose closing was not recorded (the database
    was down, or the transaction was undone), then goes stale and `prune` drops it, instead of
    being kept fresh for as long as the process lives with routing offering calls to it.
    """
    if not open_sids:
        return
    session.execute(update(ConsoleConnection)
                    .where(ConsoleConnection.process == process, ConsoleConnection.sid.in_(sorted(open_sids)))
                    .values(seen_at=now))


def prune(session: Session, now: dt.datetime) -> list[int]:
    """Drop connections of processes that stopped refreshing them; returns the handlers left with none
    (lifecycle.handler_gone moves their offers on)."""
    stale = session.execute(select(ConsoleConnection.sid, ConsoleConnection.handler_id).where(ConsoleConnection.seen_at < now - STALE)).all()
    if not stale:
        return []
    session.execute(delete(ConsoleConnection).where(ConsoleConnection.sid.in_([sid for sid, _ in stale])))
    return sorted({handler_id for _, handler_id in stale if connections(session, handler_id) == 0})


def forget_process(session: Session, process: str) -> list[int]:
    """Drop every connection recorded for `process` (a restarted process's previous incarnation, whose
    browsers are reconnecting); returns the handlers left with none (lifecycle.handler_gone moves their
    offers on)."""
    rows = session.execute(select(ConsoleConnection.sid, ConsoleConnection.handler_id).where(ConsoleConnection.process == process)).all()
    if not rows:
        return []
    session.execute(delete(ConsoleConnection).where(ConsoleConnection.process == process))
    return sorted({handler_id for _, handler_id in rows if connections(session, handler_id) == 0})


# -- the handler's state ----------------------------------------------------------------------------

def _skip_locked(session: Session, query: Any) -> Any:
    """Lock the rows `query` reads, skipping rows another process holds (PostgreSQL only)."""
    return query.with_for_update(skip_locked=True) if is_postgresql(session) else query


PRESENCES = tuple(Presence)


#: What a handler may set for themselves; the others follow from offers and calls.
SETTABLE = (Presence.AVAILABLE, Presence.BREAK, Presence.OFFLINE)


def set_presence(session: Session, handler: Handler, presence: str, now: dt.datetime, reason: str | None = None) -> None:
    """Move the handler to `presence`, restarting its clock (and the idle clock when they become free).

    `reason` says why the service moved them without their asking (`offer_missed`), so that their
    console can tell them.
    """
    if presence not in PRESENCES:
        raise ValueError(f"unknown presence {presence!r}")
    check_presence_move(handler.presence, presence)
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


def _fresh(session: Session, model: Any, key: Any) -> Any:
    """A row as the database has it now: routing changes rows with UPDATEs the identity map does not see."""
    return session.get(model, key, populate_existing=True)


def lock(session: Session, handler: Handler) -> None:
    """Re-read the handler, locking their row on PostgreSQL, before changing their state."""
    session.flush()
    session.refresh(handler, with_for_update=True if is_postgresql(session) else None)


def end_wrap_ups(session: Session, settings: RoutingSettings, now: dt.datetime) -> int:
    """Handlers whose wrap-up has lasted `routing.wrap_up_s` become available, or offline if they have
    closed every console meanwhile (an offer to them would ring nowhere)."""
    deadline = now - dt.timedelta(seconds=settings.wrap_up_s)
    handlers = session.scalars(
        _skip_locked(session, select(Handler).where(Handler.presence == Presence.WRAP_UP, Handler.presence_since <= deadline))
        .execution_options(populate_existing=True)
    ).all()
    for handler in handlers:
        if handler.current_call_id is not None:
            append(session, CallEvent, call_id=handler.current_call_id, kind="wrap_up_timed_out", at=now,
                   detail={"handler_id": handler.id})
        set_presence(session, handler, Presence.AVAILABLE if connections(session, handler.id) else Presence.OFFLINE, now,
                     reason="wrap_up_timed_out")
    return len(handlers)
