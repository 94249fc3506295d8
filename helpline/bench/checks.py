"""What the database says about the calls a run placed: none lost, none twice, all finished, none
taken by two handlers. Used by the benchmark and by the multi-process and fault tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from sqlalchemy import text

#: Twilio's final call statuses.
FINAL_STATUSES = ("completed", "busy", "failed", "no-answer", "canceled")


@dataclass
class CallAudit:
    """The verdict on a set of placed calls."""

    placed: int = 0
    #: Placed calls with no row in `calls`.
    lost: list[str] = field(default_factory=list)
    #: Placed calls with more than one row.
    duplicated: list[str] = field(default_factory=list)
    #: Calls whose row has no final Twilio status, no end time or no outcome.
    unfinished: list[str] = field(default_factory=list)
    #: Calls accepted (or answered) more than once, or by more than one handler.
    double_taken: list[int] = field(default_factory=list)
    #: Queue entries still in line or being connected although their call has ended.
    stranded: list[int] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """No call lost, duplicated, unfinished, taken twice or stranded in the queue."""
        return not (self.lost or self.duplicated or self.unfinished or self.double_taken or self.stranded)

    def as_dict(self) -> dict[str, Any]:
        """The verdict as plain data (lists cut to their first few entries)."""
        return {"placed": self.placed, "ok": self.ok, "lost": len(self.lost), "duplicated": len(self.duplicated),
                "unfinished": len(self.unfinished), "double_taken": len(self.double_taken),
                "stranded": len(self.stranded), "outcomes": self.outcomes,
                "examples": {"lost": self.lost[:5], "duplicated": self.duplicated[:5], "unfinished": self.unfinished[:5],
                             "double_taken": self.double_taken[:5], "stranded": self.stranded[:5]}}


def audit_calls(engine: Any, placed: Iterable[str]) -> CallAudit:
    """Check every placed CallSid against the database."""
    sids = list(placed)
    audit = CallAudit(placed=len(sids))
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT call_sid, twilio_status, ended_at, outcome FROM calls")).all()
        steps = connection.execute(text(
            "SELECT call_id, kind FROM call_events WHERE kind IN ('accepted', 'answered', 'connect_failed', 'offer_missed') "
            "ORDER BY call_id, id")).all()
        stranded = connection.execute(text(
            "SELECT q.call_id FROM queue_entries q JOIN calls c ON c.id = q.call_id "
            "WHERE q.kind = 'live' AND q.state IN ('waiting', 'offered', 'connecting') AND c.ended_at IS NOT NULL")).all()
    by_sid: dict[str, list[Any]] = {}
    for row in rows:
        by_sid.setdefault(row.call_sid, []).append(row)
    for sid in sids:
        found = by_sid.get(sid, [])
        if not found:
            audit.lost.append(sid)
            continue
        if len(found) > 1:
            audit.duplicated.append(sid)
        row = found[0]
        if row.twilio_status not in FINAL_STATUSES or row.ended_at is None or row.outcome is None:
            audit.unfinished.append(sid)
        audit.outcomes[row.outcome or "none"] = audit.outcomes.get(row.outcome or "none", 0) + 1
    audit.double_taken = _taken_twice(steps)
    audit.stranded = sorted(row.call_id for row in stranded)
    return audit


def _taken_twice(steps: Iterable[Any]) -> list[int]:
    """Calls accepted again while an earlier accept still held them, or put through twice.

    A call may be accepted a second time only after the first attempt failed (Twilio could not
    connect it, or the handler's phone never answered), which puts it back in line.
    """
    double: set[int] = set()
    holding: dict[int, bool] = {}
    answered: dict[int, int] = {}
    for call_id, kind in steps:
        if kind == "accepted":
            if holding.get(call_id):
                double.add(call_id)
            holding[call_id] = True
        elif kind in ("connect_failed", "offer_missed"):
            holding[call_id] = False
        elif kind == "answered":
            answered[call_id] = answered.get(call_id, 0) + 1
            if answered[call_id] > 1:
                double.add(call_id)
    return sorted(double)


def held_unknown(emulator: Any, engine: Any) -> list[str]:
    """Callers the emulator still holds in a queue whom the service has no place in line for.

    The database alone cannot show them: a caller the IVR put in Twilio's queue without a record
    (or without a queue entry) is invisible to it, and would wait there for ever. Asked of the
    emulator, which knows where every call is.
    """
    queued = [call["sid"] for call in emulator.calls(live=True) if call.get("queue")]
    if not queued:
        return []
    with engine.connect() as connection:
        known = {row.call_sid for row in connection.execute(text(
            "SELECT c.call_sid FROM calls c JOIN queue_entries q ON q.call_id = c.id "
            "WHERE q.kind = 'live' AND q.state IN ('waiting', 'offered', 'connecting', 'answered')"))}
    return sorted(sid for sid in queued if sid not in known)
