"""The states a call's queue entry and a handler can be in, and which moves between them are allowed.

The values are the words stored in the database and sent to consoles and in the API: `QueueState`
and `Presence` are `StrEnum`s, so a member compares equal to its word and is written as it.
`TRANSITIONS` is the whole life of a queue entry as a table; `lifecycle.py` makes every move through
`apply` (or, for the moves routing makes in one SQL statement, conditions on `sources`), so a move
the table does not list is refused before anything is written. `PRESENCE_MOVES` is the same for a
handler's presence, checked by `presence.set_presence` (and `presence_sources` for the SQL moves). This module imports nothing of the
service's, so that every other module can use it.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any


class QueueState(enum.StrEnum):
    """Where a call's entry in the line is."""

    #: In line, waiting for a handler (a callback also while its `not_before` is ahead).
    WAITING = "waiting"
    #: Offered to one handler, still holding its place in line.
    OFFERED = "offered"
    #: A handler accepted; the service is putting the caller and handler through to each other.
    CONNECTING = "connecting"
    #: Caller and handler are (or were) talking.
    ANSWERED = "answered"
    #: The caller hung up before a handler reached them.
    ABANDONED = "abandoned"
    #: A word the schema allows (models.QUEUE_STATES) but no move leads to: a callback request is an
    #: entry of kind "callback" in state WAITING.
    CALLBACK = "callback"
    #: A callback given up after `CALLBACK_ATTEMPTS` unanswered tries.
    CLOSED = "closed"


class Presence(enum.StrEnum):
    """A handler's state, as their console and the supervisors see it."""

    OFFLINE = "offline"
    AVAILABLE = "available"
    OFFERED = "offered"
    ON_CALL = "on_call"
    WRAP_UP = "wrap_up"
    BREAK = "break"


class Move(enum.StrEnum):
    """The things that happen to a queue entry, each a row of `TRANSITIONS`."""

    #: A live caller joins the line (or comes back to their place in it).
    QUEUED = "queued"
    #: The caller asks to be rung back instead of waiting on the line.
    CALLBACK_REQUESTED = "callback_requested"
    #: Routing (or a supervisor) offers the call to a handler.
    OFFERED = "offered"
    #: A handler takes the call.
    ACCEPTED = "accepted"
    #: Twilio took our requests: caller and handler are being put through.
    CONNECTED = "connected"
    #: The call goes back to its place in line (offer declined, withdrawn or missed; connecting failed;
    #: the handler unreachable; a callback not answered this time).
    BACK_IN_LINE = "back_in_line"
    #: The caller hung up before a handler reached them.
    CALLER_HUNG_UP = "caller_hung_up"
    #: A callback rung too many times without an answer is given up.
    CALLBACK_CLOSED = "callback_closed"


W, O, C, A = QueueState.WAITING, QueueState.OFFERED, QueueState.CONNECTING, QueueState.ANSWERED

#: For each move, the state it starts from (None: the call has no entry yet) and the state it ends in.
#: A state not listed for a move is one the move may not start from.
TRANSITIONS: dict[Move, dict[QueueState | None, QueueState]] = {
    # Joining again while in line (Twilio's queue let the caller go, and they come back) keeps the
    # entry as it is: an outstanding offer stays with its handler.
    Move.QUEUED: {None: W, W: W, O: O},
    Move.CALLBACK_REQUESTED: {None: W, W: W, O: W},
    Move.OFFERED: {W: O},
    Move.ACCEPTED: {W: C, O: C},
    Move.CONNECTED: {C: A},
    Move.BACK_IN_LINE: {O: W, C: W, A: W},
    Move.CALLER_HUNG_UP: {W: QueueState.ABANDONED, O: QueueState.ABANDONED, C: QueueState.ABANDONED},
    Move.CALLBACK_CLOSED: {C: QueueState.CLOSED, A: QueueState.CLOSED},
}
del W, O, C, A

_OFF, _FREE, _OFFERED, _ON_CALL, _WRAP_UP, _BREAK = (Presence.OFFLINE, Presence.AVAILABLE, Presence.OFFERED,
                                                       Presence.ON_CALL, Presence.WRAP_UP, Presence.BREAK)

#: For each presence, the presences a handler may move to from it (staying put is always allowed:
#: it restarts nothing but the clocks). `presence.set_presence` refuses any other move before it
#: writes, and the moves routing makes in one SQL statement condition on `presence_sources`.
PRESENCE_MOVES: dict[Presence, frozenset[Presence]] = {
    # Their own choice (console, or a supervisor for them).
    _OFF: frozenset({_FREE, _BREAK}),
    # Their own choice; offered a call by routing; taking a call from the line; their console gone.
    _FREE: frozenset({_BREAK, _OFF, _OFFERED, _ON_CALL}),
    # Declined, withdrawn or the caller gone (free again); missed (a break); accepted; console gone.
    _OFFERED: frozenset({_FREE, _BREAK, _ON_CALL, _OFF}),
    # The call ended (wrap-up); connecting failed, a callback unanswered or the caller gone before
    # they were through (free again); their phone unreachable (a break, so no call rings nowhere).
    _ON_CALL: frozenset({_WRAP_UP, _FREE, _BREAK}),
    # Outcome recorded or wrap-up timed out (free, or offline with no console open); ending the
    # call failed at Twilio, so it is still up (back on the call).
    _WRAP_UP: frozenset({_FREE, _OFF, _ON_CALL}),
    # Their own choice.
    _BREAK: frozenset({_FREE, _OFF}),
}
del _OFF, _FREE, _OFFERED, _ON_CALL, _WRAP_UP, _BREAK


class PresenceError(RuntimeError):
    """A presence move the table does not allow: a fault in the service, not the handler's doing."""


def check_presence_move(before: Presence | str, after: Presence | str) -> None:
    """Raise PresenceError unless a handler may move from `before` to `after`."""
    if Presence(before) != Presence(after) and Presence(after) not in PRESENCE_MOVES[Presence(before)]:
        raise PresenceError(f"a handler {before} cannot become {after}")


def presence_sources(after: Presence) -> tuple[Presence, ...]:
    """The presences a handler may move to `after` from, for moves made by one conditional UPDATE."""
    return tuple(before for before, allowed in PRESENCE_MOVES.items() if after in allowed)


#: States in which an entry holds a place in line.
IN_LINE = (QueueState.WAITING, QueueState.OFFERED)
#: States in which a handler is being or has been put through to the caller.
WITH_HANDLER = (QueueState.CONNECTING, QueueState.ANSWERED)


#: What a handler may record at wrap-up.
WRAP_UP_OUTCOMES = ("booked", "advice_given", "signposted", "callback_arranged", "third_party", "not_eligible",
                    "caller_hung_up")
#: How many times a callback is rung without an answer before it is closed.
CALLBACK_ATTEMPTS = 3
#: How long a callback that was not answered waits before it is tried again.
CALLBACK_RETRY = dt.timedelta(minutes=10)


class RoutingError(Exception):
    """A routing action that cannot be done now; becomes a 409 (or the given status) for the console."""

    def __init__(self, message: str, detail: object = None, status: int = 409):
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.status = status


class TransitionError(RoutingError):
    """A move the transition table does not allow from the entry's state: nothing was changed."""

    def __init__(self, move: Move, state: QueueState | str | None):
        super().__init__("bad_transition", f"a call {state or 'not in line'} cannot be {move.replace('_', ' ')}")
        self.move = move
        self.state = state


def target(move: Move, state: QueueState | str | None) -> QueueState:
    """The state `move` leads to from `state`; raises TransitionError if the table does not allow it."""
    allowed = TRANSITIONS[move]
    key = QueueState(state) if state is not None else None
    if key not in allowed:
        raise TransitionError(move, state)
    return allowed[key]


def apply(entry: Any, move: Move, *, new: bool = False) -> QueueState:
    """Set the entry's state as `move` says (checked against the table before anything is written).

    `new` says the entry was only just made, so it moves from "no entry" whatever its default state.
    """
    state = target(move, None if new else entry.state)
    entry.state = state
    return state


def sources(move: Move) -> tuple[QueueState, ...]:
    """The states `move` may start from, for the moves made by one conditional UPDATE."""
    return tuple(state for state in TRANSITIONS[move] if state is not None)
