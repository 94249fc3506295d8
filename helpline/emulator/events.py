"""Append-only event logs that HTTP clients can long-poll."""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

from .sids import iso, utcnow

#: One counter for every log, so events from different logs still sort into one timeline.
_SEQUENCE = itertools.count(1)
_SEQUENCE_LOCK = threading.Lock()


def next_seq() -> int:
    """Return the next global event sequence number."""
    with _SEQUENCE_LOCK:
        return next(_SEQUENCE)


class EventLog:
    """A thread-safe list of events, each stamped with a monotonically increasing `seq`.

    Readers ask for events after a `seq` they have seen and may wait for new ones, which is how
    the dev phone page and the Python client follow a call without a websocket.
    """

    def __init__(self, limit: int = 5000):
        """Create an empty log keeping at most `limit` events (oldest dropped first)."""
        self._events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._limit = limit

    def append(self, kind: str, **data: Any) -> dict[str, Any]:
        """Record an event of `kind` with `data`, wake waiting readers and return the event."""
        event = {"seq": next_seq(), "at": iso(utcnow()), "kind": kind, **data}
        with self._cond:
            self._events.append(event)
            if len(self._events) > self._limit:
                del self._events[: len(self._events) - self._limit]
            self._cond.notify_all()
        return event

    def since(self, after: int = 0, wait: float = 0.0) -> list[dict[str, Any]]:
        """Return events with `seq > after`, waiting up to `wait` seconds for one to arrive."""
        deadline = time.monotonic() + max(0.0, wait)
        with self._cond:
            while True:
                found = [e for e in self._events if e["seq"] > after]
                remaining = deadline - time.monotonic()
                if found or remaining <= 0:
                    return found
                self._cond.wait(remaining)

    def all(self) -> list[dict[str, Any]]:
        """Return a copy of every event kept."""
        with self._cond:
            return list(self._events)

    def last_seq(self) -> int:
        """Return the `seq` of the newest event, or 0 when empty."""
        with self._cond:
            return self._events[-1]["seq"] if self._events else 0
