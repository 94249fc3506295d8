"""The routing decision: given the free handlers and the head of each need's line, who is offered what.

Pure: plain values in, plain values out, no database (the store, line_store.py, reads the values
and writes the offers; router.py runs the pass). The policy:

* The line is ordered by priority, then `placed_at`, then id (line.py). A callback keeps the place
  of the call it came from, and waits while its `not_before` is ahead.
* A call needs a handler whose skills include its need (mental_health, addiction, return_to_work;
  speak_now and no need fit anyone), who knows dentistry if the call is flagged `dentist`, who speaks
  the language of a `language:<code>` flag, and who has not declined it.
* Once a call has waited `routing.skill_fallback_after_s`, any free handler who has not declined it
  fits (skilled ones still first).
* Each decision takes the first call in line that some free handler fits, and offers it to the
  longest idle of those (idle since `available_since`). Free = `available` with a live console.
* An offer not accepted within `routing.offer_timeout_s` goes back to its place and the handler goes
  on `break` (a missed offer). A decline sends it back too; the decliner stays available at the back
  of the idle order and is not offered that call again (lifecycle.py).
* After a call the handler is in `wrap_up` until they record an outcome, or `routing.wrap_up_s`
  (presence.py).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Iterable

#: Needs that ask for a skilled handler; the flow's other need, speak_now, fits anyone.
SKILLED_NEEDS = ("mental_health", "addiction", "return_to_work")


#: Every value `QueueEntry.need` takes (the flow checks its needs at start-up); None = not asked.
NEED_CLASSES: tuple[str | None, ...] = (*SKILLED_NEEDS, "speak_now", None)


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


def language_asked(flags: Iterable[Any] | None) -> str | None:
    """The language a call's `language:<code>` flag asks for (the last, if several), or None.

    The queue entry keeps it in a column of its own (QueueEntry.language), so that the line's SQL can
    look past calls in languages nobody free speaks without reading their flags.
    """
    language = None
    for flag in flags or ():
        if isinstance(flag, str) and flag.startswith("language:"):
            language = flag.split(":", 1)[1]
    return language


def requirements(need: str | None, flags: Iterable[str]) -> tuple[frozenset[str], str | None]:
    """The skills and the language a call asks for."""
    skills = {need} if need in SKILLED_NEEDS else set()
    if "dentist" in flags:
        skills.add("dentist")
    return frozenset(skills), language_asked(flags)


def fits(handler: Free, entry: Waiting) -> bool:
    """Whether the handler has every skill and the language the call asks for."""
    skills, language = requirements(entry.need, entry.flags)
    return skills <= handler.skills and (language is None or language in handler.languages)


def takeable(entry: Waiting, free: list[Free], cutoff: dt.datetime) -> bool:
    """Whether someone free may be offered the entry."""
    for handler in free:
        if handler.id in entry.declined_by:
            continue
        if entry.placed_at <= cutoff or fits(handler, entry):
            return True
    return False


def choose_handler(entry: Waiting, free: list[Free], cutoff: dt.datetime) -> Free | None:
    """The longest-idle free handler who fits the entry; after the fallback wait, any who has not declined it."""
    allowed = [handler for handler in free if handler.id not in entry.declined_by]
    skilled = next((handler for handler in allowed if fits(handler, entry)), None)
    if skilled is not None:
        return skilled
    return allowed[0] if allowed and entry.placed_at <= cutoff else None


def pick(candidates: Iterable[Waiting | None], free: list[Free], cutoff: dt.datetime) -> tuple[Waiting, Free] | None:
    """The next offer to make: the first in line of `candidates` (each need's first takeable entry),
    and the handler it goes to; None when there is none. `cutoff`: calls placed at or before it may
    go to any free handler who has not declined them."""
    waiting = [entry for entry in candidates if entry is not None]
    if not waiting:
        return None
    entry = min(waiting, key=lambda item: item.order)
    handler = choose_handler(entry, free, cutoff)
    if handler is None:
        raise ValueError(f"entry {entry.id} is not takeable by anyone free")
    return entry, handler


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
