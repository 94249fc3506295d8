"""Which handlers have a console open: one row per Socket.IO connection, shared by every process.

Routing offers calls only to handlers with a live connection. When a handler's last connection goes
(the tab closed, the network dropped, or the process holding it stopped refreshing its rows), any
offer they hold moves on at once (`routing.handler_gone`).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from . import routing
from .models import ConsoleConnection

#: A process refreshes its connections every sweep (about a second); rows this old belong to a process that stopped.
STALE = dt.timedelta(seconds=60)


def connect(session: Session, sid: str, handler_id: int, process: str, now: dt.datetime) -> None:
    """Record a new console connection."""
    session.merge(ConsoleConnection(sid=sid, handler_id=handler_id, process=process, connected_at=now, seen_at=now))


def connections(session: Session, handler_id: int) -> int:
    """How many consoles the handler has open."""
    return int(session.scalar(select(func.count(ConsoleConnection.sid)).where(ConsoleConnection.handler_id == handler_id)) or 0)


def disconnect(session: Session, sid: str, now: dt.datetime) -> None:
    """Forget a closed connection; if it was the handler's last, their offer moves on."""
    row = session.get(ConsoleConnection, sid)
    if row is None:
        return
    handler_id = row.handler_id
    session.delete(row)
    session.flush()
    if connections(session, handler_id) == 0:
        routing.handler_gone(session, handler_id, now)


def heartbeat(session: Session, process: str, now: dt.datetime) -> None:
    """Mark this process's connections as still alive."""
    session.execute(update(ConsoleConnection).where(ConsoleConnection.process == process).values(seen_at=now))


def prune(session: Session, now: dt.datetime) -> list[int]:
    """Drop connections of processes that stopped refreshing them; returns the handlers left with none."""
    stale = session.execute(select(ConsoleConnection.sid, ConsoleConnection.handler_id).where(ConsoleConnection.seen_at < now - STALE)).all()
    if not stale:
        return []
    session.execute(delete(ConsoleConnection).where(ConsoleConnection.sid.in_([sid for sid, _ in stale])))
    gone = sorted({handler_id for _, handler_id in stale if connections(session, handler_id) == 0})
    for handler_id in gone:
        routing.handler_gone(session, handler_id, now)
    return gone


def forget_process(session: Session, process: str, now: dt.datetime) -> list[int]:
    """Drop every connection recorded for `process` (a restarted process's previous incarnation, whose
    browsers are reconnecting); returns the handlers left with none, whose offers have moved on."""
    rows = session.execute(select(ConsoleConnection.sid, ConsoleConnection.handler_id).where(ConsoleConnection.process == process)).all()
    if not rows:
        return []
    session.execute(delete(ConsoleConnection).where(ConsoleConnection.process == process))
    gone = sorted({handler_id for _, handler_id in rows if connections(session, handler_id) == 0})
    for handler_id in gone:
        routing.handler_gone(session, handler_id, now)
    return gone
