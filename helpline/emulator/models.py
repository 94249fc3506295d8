"""Plain state objects shared by calls: queues, conferences, bridges, devices, messages.

Every mutation happens while the owning `Emulator.lock` is held; these classes do no locking of
their own.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .events import EventLog
from .sids import new_sid, utcnow

if TYPE_CHECKING:
    from .call import Call

#: Twilio's default maximum queue size.
DEFAULT_MAX_QUEUE_SIZE = 1000


@dataclass
class QueueMember:
    """A call waiting in a queue."""

    call: "Call"
    enqueued_at: float = field(default_factory=time.monotonic)
    date_enqueued: datetime = field(default_factory=utcnow)

    def wait_time(self) -> int:
        """Whole seconds this member has waited (in call time, i.e. unscaled)."""
        return int((time.monotonic() - self.enqueued_at) / self.call.emulator.config.time_scale)


@dataclass
class Queue:
    """A named call queue, created on demand by `<Enqueue>` or through the REST API."""

    account_sid: str
    friendly_name: str
    max_size: int = DEFAULT_MAX_QUEUE_SIZE
    sid: str = field(default_factory=lambda: new_sid("QU"))
    date_created: datetime = field(default_factory=utcnow)
    date_updated: datetime = field(default_factory=utcnow)
    members: list[QueueMember] = field(default_factory=list)
    # Recent waits, for AvgQueueTime; bounded so a long-running emulator stays small.
    past_waits: deque = field(default_factory=lambda: deque(maxlen=200))
    # Calls blocked in <Dial><Queue> waiting for someone to join.
    dialers: set = field(default_factory=set)

    def position_of(self, call: "Call") -> int | None:
        """1-based position of `call`, or None when it is not waiting here."""
        for index, member in enumerate(self.members):
            if member.call is call:
                return index + 1
        return None

    def member(self, call_sid: str) -> QueueMember | None:
        """The member for `call_sid` ("Front" means the first in line)."""
        if call_sid.lower() == "front":
            return self.members[0] if self.members else None
        return next((m for m in self.members if m.call.sid == call_sid), None)

    def average_wait(self) -> int:
        """Average seconds spent waiting, over recent departures and everyone still waiting."""
        waits = list(self.past_waits) + [m.wait_time() for m in self.members]
        return int(sum(waits) / len(waits)) if waits else 0


@dataclass
class Bridge:
    """Two call legs connected to each other (a Dial to a client, number or queue)."""

    a: "Call"
    b: "Call"
    started_at: float | None = None
    ended: bool = False
    ended_by: str | None = None

    def other(self, call: "Call") -> "Call":
        """The leg at the far end from `call`."""
        return self.b if call is self.a else self.a

    def duration(self) -> int:
        """Whole seconds of connected time (unscaled)."""
        if self.started_at is None:
            return 0
        return int((time.monotonic() - self.started_at) / self.a.emulator.config.time_scale)


@dataclass
class Participant:
    """One call in a conference, with its mute/hold/coach state."""

    call: "Call"
    conference: "Conference"
    muted: bool = False
    hold: bool = False
    coaching: bool = False
    call_sid_to_coach: str | None = None
    start_conference_on_enter: bool = True
    end_conference_on_exit: bool = False
    label: str | None = None
    status: str = "connected"
    date_created: datetime = field(default_factory=utcnow)
    date_updated: datetime = field(default_factory=utcnow)
    joined_at: float = field(default_factory=time.monotonic)


@dataclass
class Conference:
    """A named conference room; `init` until someone with startConferenceOnEnter joins."""

    account_sid: str
    friendly_name: str
    sid: str = field(default_factory=lambda: new_sid("CF"))
    status: str = "init"
    date_created: datetime = field(default_factory=utcnow)
    date_updated: datetime = field(default_factory=utcnow)
    participants: dict[str, Participant] = field(default_factory=dict)
    reason_conference_ended: str | None = None
    call_sid_ending_conference: str | None = None
    status_callback: str | None = None
    status_callback_method: str = "POST"
    status_callback_events: set[str] = field(default_factory=set)
    callback_sequence: int = 0


@dataclass
class Endpoint:
    """A browser client identity or a phone number that the emulator can ring."""

    key: str  # "client:alice" or "+447911123456"
    registered: bool = False
    auto_answer: bool = False
    current: "Call | None" = None
    log: EventLog = field(default_factory=EventLog)

    @property
    def kind(self) -> str:
        """"client" for a browser identity, "phone" for a number."""
        return "client" if self.key.startswith("client:") else "phone"

    def describe(self) -> dict[str, Any]:
        """JSON view for the control API."""
        return {
            "key": self.key,
            "kind": self.kind,
            "registered": self.registered,
            "auto_answer": self.auto_answer,
            "call_sid": self.current.sid if self.current else None,
            "call_status": self.current.status if self.current else None,
        }


@dataclass
class Message:
    """An SMS the application asked us to send; it lands in the outbox."""

    account_sid: str
    to: str
    from_: str
    body: str
    status_callback: str | None = None
    sid: str = field(default_factory=lambda: new_sid("SM"))
    status: str = "queued"
    date_created: datetime = field(default_factory=utcnow)
    date_updated: datetime = field(default_factory=utcnow)
    date_sent: datetime | None = None
