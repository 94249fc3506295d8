"""Test data for routing: handlers with consoles open, and calls waiting in line."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Iterable

from sqlalchemy.orm import Session

from helpline import presence
from helpline.models import Call, ConsoleConnection, Handler, QueueEntry, User

_numbers = itertools.count(1)


def handler(session: Session, skills: Iterable[str] = ("mental_health", "addiction", "return_to_work"),
            idle_since: dt.datetime | None = None, presence_: str = "available", connected: bool = True,
            languages: Iterable[str] = ("en",), name: str | None = None) -> Handler:
    """A handler (with a user that cannot log in), available since `idle_since`, with a console open."""
    number = next(_numbers)
    user = User(username=name or f"h{number}", display_name=f"Handler {number}", role="handler", password_hash="!")
    person = Handler(user=user, skills=list(skills), languages=list(languages), presence=presence_,
                     available_since=idle_since, presence_since=idle_since or dt.datetime.now(dt.timezone.utc))
    session.add(person)
    session.flush()
    if connected:
        presence.connect(session, f"sid-{number}", person.id, "test-process", idle_since or dt.datetime.now(dt.timezone.utc))
        session.flush()
    return person


def waiting(session: Session, placed_at: dt.datetime, need: str | None = "mental_health", kind: str = "live",
            flags: Iterable[str] = (), priority: int = 100, not_before: dt.datetime | None = None) -> QueueEntry:
    """A call waiting in line since `placed_at`."""
    call = Call(call_sid=f"CA{next(_numbers):032x}", need=need, flags=list(flags), queued_at=placed_at)
    session.add(call)
    session.flush()
    entry = QueueEntry(call_id=call.id, kind=kind, need=need, flags=list(flags), priority=priority,
                       placed_at=placed_at, not_before=not_before)
    session.add(entry)
    session.flush()
    return entry


def connections(session: Session, handler_id: int) -> list[ConsoleConnection]:
    """The handler's open consoles."""
    from sqlalchemy import select

    return list(session.scalars(select(ConsoleConnection).where(ConsoleConnection.handler_id == handler_id)))
