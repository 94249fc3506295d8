"""The line: its order, a caller's position in it, the wait to expect, and the line as consoles see it.

The line is ordered by `priority` (a supervisor may move a call up), then by `placed_at`, the moment
the caller first joined; a callback request keeps the place of the call it came from. Every question
here is answered by an indexed query, never by reading the whole queue.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Collection

from sqlalchemy import and_, bindparam, func, or_, select
from sqlalchemy.orm import Session

from .db import read_rows
from .line_store import constant
from .models import Call, Handler, QueueEntry, User
from .states import IN_LINE
from .wait_estimate import estimate

__all__ = ["IN_LINE", "due", "position", "estimated_wait_s", "spoken_wait", "queue_view"]


def due(now: dt.datetime):  # type: ignore[no-untyped-def]
    """The SQL condition for an entry that is in line now (a callback waits for the line to open).

    The states are written into the SQL (`constant`): as a parameter, an IN list is expanded afresh
    on every run, and a statement built once could not be sent to the driver as compiled (`read_rows`).
    """
    return and_(
        QueueEntry.state.in_([constant(state) for state in IN_LINE]),
        or_(QueueEntry.not_before.is_(None), QueueEntry.not_before <= now),
    )


#: How many entries are in line ahead of one (`position`): built once, since every hold announcement
#: and every hang-up in the line asks it. The same order as the line's own (priority, then the place,
#: then the id), written out so that each branch seeks ix_queue_entries_state_order.
_AHEAD = select(func.count(QueueEntry.id)).where(
    due(bindparam("now")),
    or_(
        QueueEntry.priority < bindparam("priority"),
        and_(QueueEntry.priority == bindparam("priority"), QueueEntry.placed_at < bindparam("placed_at")),
        and_(
            QueueEntry.priority == bindparam("priority"),
            QueueEntry.placed_at == bindparam("placed_at"),
            QueueEntry.id < bindparam("id"),
        ),
    ),
)


def position(session: Session, entry: QueueEntry, now: dt.datetime) -> int:
    """The entry's place in line, 1 for the next to be answered."""
    ((ahead,),) = read_rows(session, _AHEAD, {"now": now, "priority": entry.priority, "placed_at": entry.placed_at,
                                             "id": entry.id})
    return int(ahead) + 1


def estimated_wait_s(session: Session, place: int, now: dt.datetime, default_s: int, need: str | None = None,
                     fallback_in_s: float = 0, declined_by: Collection[int] = ()) -> int | None:
    """How long the caller at `place`, who asked for `need`, is likely to wait; None when nobody is on
    duty who may take the call (wait_estimate.py)."""
    return estimate(session, place, now, default_s, need, fallback_in_s, declined_by).seconds


def spoken_wait(seconds: int) -> str:
    """A wait as a person would say it, rounded up so that nobody is promised too little."""
    if seconds < 60:
        return "less than a minute"
    minutes = -(-seconds // 60)
    if minutes < 60:
        return f"about {minutes} minutes" if minutes > 1 else "about a minute"
    hours = round(minutes / 60, 1)
    return f"about {hours:g} hours" if hours != 1 else "about an hour"


def queue_view(session: Session, now: dt.datetime) -> dict[str, Any]:
    """The body of GET /api/queue and of the `queue` event: the line and the handlers, no personal data."""
    rows = session.execute(
        select(QueueEntry.call_id, QueueEntry.placed_at, QueueEntry.need, QueueEntry.flags, Call.channel)
        .join(Call, Call.id == QueueEntry.call_id)
        .where(due(now))
        .order_by(QueueEntry.priority, QueueEntry.placed_at, QueueEntry.id)
    ).all()
    calls = [
        {"id": call_id, "position": place, "waiting_s": max(0, int((now - placed_at).total_seconds())),
         "need": need, "flags": list(flags or ()), "channel": channel}
        for place, (call_id, placed_at, need, flags, channel) in enumerate(rows, start=1)
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
