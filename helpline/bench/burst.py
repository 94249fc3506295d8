"""The burst benchmark: a thousand callers ringing in within a minute (a national news story, a TV appeal).

What happens: `callers` (1,000) ring in evenly over `ramp_s` (60 s) and go through the IVR to the
line. Most type ahead ("barge:111" and the like: a caller in a hurry who knows the menus), some
listen to each menu before answering it. Every script leads to the line, so every caller placed is
one who should be queued. A few handlers (20 by default) answer at the usual pace: about four calls
a second between them, so the line builds up to hundreds waiting and positions move as calls are
answered - the state in which a wrong position would show, and the one a burst really brings. Fifty
handlers would empty the line faster than the callers fill it and test nothing about it.

Callers stay in line until they have heard at least one position announcement (Twilio asks the
queue's waitUrl as they join, so most hear one at once; those who waited longer hear one every
`announce_every_s` of call time). Once every caller has been queued and heard one (or been taken by a
handler before), the callers still waiting hang up, handlers finish their calls and the run ends:
the run is bounded by the ramp, the IVR and one announcement, then `settle_timeout_s` and
`drain_timeout_s` at most.

What is judged, and how:

* every webhook answered within 2 s: the emulator's own timing of each webhook of the burst (IVR
  steps, the queue's waitUrl, connect), from sending it to its answer; p50, p99 and max are printed;
* every caller queued: each placed caller has a live queue entry, and `checks.audit_calls` finds
  nothing lost, duplicated, unfinished, taken twice or stranded;
* positions right: the emulator records every `<Say>` a call hears (its transcript's `say` events).
  Each "You are number N in line" is set against the caller's true position, worked out from the
  service's records alone: each queue entry's place in order (`priority`, `placed_at`, id) and the
  stretches it spent in line - from `placed_at` to its `accepted` event (a handler took it: it left
  the line), back in its place at a `connect_failed`, or at the head of the line (a lower priority
  from then on) at an `offer_missed` after an accept (the handler's phone never answered), and out at
  `left_at` (answered or abandoned). The true position at a moment is one more than the entries
  ahead of it in line then. The places the service recorded telling callers (its `wait_estimate`
  events) are set against the same records too: not a target, but it says whether a wrong
  announcement was worked out wrong or heard other than it was worked out. The service works the position out while answering the waitUrl, and the
  caller hears it a moment later: an announcement is right when N was the true position at some
  moment from the waitUrl request to the start of the `<Say>`, widened by `window_s` (250 ms) either
  side for a change in the line that close to it. Any other is a mismatch; the target is none.
  How many said a position no longer true by the time it was heard is reported beside it;
* wait estimates plausible: every announcement with a position must also give a wait ("the wait is
  likely to be ...") while handlers are on duty; the wait is read back into seconds (the longest the
  phrase allows: "about 3 minutes" is 180 s, "less than a minute" 59 s) and is plausible when it is
  not negative and not absurd: at most an hour, or a minute for each caller ahead if that is longer
  (as if one handler took a call a minute: no real line is slower). A missing, unreadable, negative
  or longer wait is counted as implausible.

Who limits the burst: the CPU share of each process (CPU seconds over wall seconds, on average and
in its busiest five seconds) while the callers ring in. A Python process cannot use much more than
one core (its interpreter lock): a process near 1.0 is the one the burst waits for.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any, Iterable
from urllib.parse import urlsplit

from sqlalchemy import select

from ..emulator.client import EmulatorClient
from ..models import Call, CallEvent, QueueEntry
from ..wait_estimate import TOLD
from .checks import audit_calls
from .handlers import Handler, Pace
from .paced import (RssSampler, Scripts, create_users, event_time, place_calls, reaches_line, seed_services,
                    start_handlers, wait_until_ended, wait_until_recorded)
from .report import summary
from .stack import Stack

#: Callers in a burst: most type ahead, some listen to each menu; every one of them reaches the line.
BURST_SCRIPTS: Scripts = (
    (0.60, ("barge:111",)),    # my own health, eligible, mental health: typed ahead
    (0.15, ("barge:112",)),    # addiction, typed ahead
    (0.10, ("barge:110",)),    # speak to someone now, typed ahead
    (0.15, ("1", "1", "1")),   # listening to each menu before answering it
)
assert all(reaches_line(keys) for _, keys in BURST_SCRIPTS)

#: The longest a webhook may take in a burst.
WEBHOOK_LIMIT_MS = 2000.0
#: A change in the line this close to an announcement excuses it.
WINDOW_S = 0.25

POSITION = re.compile(r"You are number (\d+) in line")
WAIT = re.compile(r"the wait is likely to be (.+?)\.")


@dataclass
class BurstOptions:
    """The burst: how many callers over how long, and the few handlers answering them."""

    callers: int = 1000
    handlers: int = 20
    ramp_s: float = 60.0
    pace: Pace = field(default_factory=Pace)
    seed: int = 8
    #: Longest to wait, after the last caller rang, for every caller to be queued and hear an announcement.
    settle_timeout_s: float = 120.0
    #: Longest to wait for the calls to end once the callers still waiting have hung up.
    drain_timeout_s: float = 120.0
    window_s: float = WINDOW_S


# -- the records: the line as the service kept it ------------------------------------------------------------

#: The priority every caller joins the line at: the column's default (a supervisor may move a call
#: up; nobody does in a benchmark run).
JOINING_PRIORITY: int = QueueEntry.__table__.c.priority.default.arg  # type: ignore[attr-defined]


@dataclass
class InLine:
    """One queue entry: its place in order when it joined, the stretches (from, to) it spent in line,
    and when it was put back at the head of the line, with the priority that gave it, if it was."""

    call_id: int
    key: tuple[int, float, int]
    stretches: list[tuple[float, float]] = field(default_factory=list)
    moved_up: tuple[float, int] | None = None

    def key_at(self, moment: float) -> tuple[int, float, int]:
        """Its place in order at `moment`: (priority, placed_at, id), lower first."""
        if self.moved_up is not None and moment >= self.moved_up[0]:
            return (self.moved_up[1], *self.key[1:])
        return self.key


def history(placed: float, not_before: float | None, left: float | None,
            moves: Iterable[tuple[str, float]]) -> tuple[list[tuple[float, float]], float | None]:
    """The stretches an entry spent in line, and when it was first put back at the head of the line.

    Read from its placing, its moves and its `left_at`: `accepted` takes it out of the line (a
    handler has it); `connect_failed` puts it back in its place, and `offer_missed` while out of the
    line (the handler's phone never answered) puts it back at the head of the line. An `offer_missed`
    while in line (an offer not taken in time) moves nothing.
    """
    result: list[tuple[float, float]] = []
    since: float | None = max(placed, not_before or placed)
    moved: float | None = None
    for kind, at in moves:
        if kind == "accepted" and since is not None:
            result.append((since, at))
            since = None
        elif kind in ("connect_failed", "offer_missed") and since is None:
            since = at
            if kind == "offer_missed" and moved is None:
                moved = at
    if since is not None:
        result.append((since, left if left is not None else math.inf))
    return result, moved


def line_from_records(engine: Any) -> dict[int, InLine]:
    """Every live queue entry of the run, by call id, read from queue_entries and call_events.

    An entry put back at the head of the line more than once is given its final priority from the
    first time (the records keep no earlier one); every other entry joined at JOINING_PRIORITY.
    """
    with engine.connect() as connection:
        entries = connection.execute(select(QueueEntry.id, QueueEntry.call_id, QueueEntry.priority, QueueEntry.placed_at,
                                            QueueEntry.not_before, QueueEntry.left_at)
                                     .where(QueueEntry.kind == "live")).all()
        events = connection.execute(select(CallEvent.call_id, CallEvent.kind, CallEvent.at)
                                    .where(CallEvent.kind.in_(("accepted", "connect_failed", "offer_missed")))
                                    .order_by(CallEvent.id)).all()
    moves: dict[int, list[tuple[str, float]]] = {}
    for call_id, kind, at in events:
        moves.setdefault(call_id, []).append((kind, at.timestamp()))
    line = {}
    for entry_id, call_id, priority, placed_at, not_before, left_at in entries:
        placed = placed_at.timestamp()
        spent, moved = history(placed, not_before.timestamp() if not_before else None,
                               left_at.timestamp() if left_at else None,
                               sorted(moves.get(call_id, []), key=lambda move: move[1]))
        joined = priority if moved is None else JOINING_PRIORITY
        line[call_id] = InLine(call_id, (joined, placed, entry_id), spent, None if moved is None else (moved, priority))
    return line


# -- the transcripts: what each caller heard ---------------------------------------------------------------------

@dataclass
class Announcement:
    """A position announcement as the caller heard it."""

    call_id: int
    #: When the emulator asked the queue's waitUrl, and when it began to speak the answer (time.time()).
    asked: float
    heard: float
    position: int
    #: The wait as spoken ("about 3 minutes"), or None when none was given.
    wait: str | None = None


def _iso(moment: float) -> str:
    return dt.datetime.fromtimestamp(moment, dt.timezone.utc).isoformat(timespec="milliseconds")


def announcements(events: list[dict[str, Any]], call_id: int) -> list[Announcement]:
    """The position announcements in a call's emulator transcript, each with the waitUrl request that fetched it."""
    heard = []
    asked: float | None = None
    for event in events:
        if event["kind"] == "webhook" and urlsplit(event.get("url", "")).path.endswith("/queue/wait"):
            asked = event_time(event)
        elif event["kind"] == "say" and asked is not None:
            place = POSITION.search(event.get("text", ""))
            if place:
                wait = WAIT.search(event["text"])
                heard.append(Announcement(call_id, asked, event_time(event), int(place.group(1)), wait.group(1) if wait else None))
    return heard


# -- the comparison ------------------------------------------------------------------------------------------------

@dataclass
class PositionCheck:
    """Announced positions against the true ones."""

    announced: int = 0
    #: True when the caller began to hear it.
    exact: int = 0
    #: True at some moment from the waitUrl request to the Say, but changed by the time it was heard.
    changed_meanwhile: int = 0
    #: Wrong only by a change in the line within the window.
    within_window: int = 0
    #: Each mismatch, with the true positions in its window.
    wrong: list[tuple[Announcement, list[int]]] = field(default_factory=list)
    #: Announcements to calls with no queue entry in the records.
    unknown: int = 0

    @property
    def ok(self) -> bool:
        """No announcement wrong beyond the window, and none to a caller the records do not place in line."""
        return self.announced > 0 and not self.wrong and not self.unknown

    def as_dict(self) -> dict[str, Any]:
        """As plain data (the mismatches cut to the first few)."""
        return {"announced": self.announced, "ok": self.ok, "exact": self.exact, "changed_meanwhile": self.changed_meanwhile,
                "within_window": self.within_window, "mismatches": len(self.wrong), "unknown": self.unknown,
                "examples": [{"call_id": said.call_id, "said": said.position, "true": true,
                              "asked": _iso(said.asked), "heard": _iso(said.heard)} for said, true in self.wrong[:5]]}


class Line:
    """The line over time, ready to say anyone's true position at any moment."""

    def __init__(self, entries: dict[int, InLine]):
        self.entries = entries
        self._ahead: dict[int, list[tuple[float, float]]] = {}

    def ahead(self, call_id: int) -> list[tuple[float, float]]:
        """The stretches in which each other entry was in line ahead of this one."""
        if call_id in self._ahead:
            return self._ahead[call_id]
        me = self.entries[call_id]
        found = []
        for other in self.entries.values():
            if other is me:
                continue
            if me.moved_up is None and other.moved_up is None:
                if other.key < me.key:
                    found += other.stretches
                continue
            # One of the two changed its place in order: compare them piece by piece.
            cuts = sorted({moved[0] for moved in (me.moved_up, other.moved_up) if moved is not None})
            bounds = [-math.inf, *cuts, math.inf]
            for low, high in zip(bounds, bounds[1:]):
                probe = low if low > -math.inf else high - 1
                if other.key_at(probe) < me.key_at(probe):
                    found += [(max(start, low), min(end, high)) for start, end in other.stretches
                              if max(start, low) < min(end, high)]
        self._ahead[call_id] = found
        return found

    def positions(self, call_id: int, since: float, until: float) -> list[int]:
        """The caller's true position at `since` and after every change in the line up to `until`."""
        ahead = self.ahead(call_id)
        count = sum(1 for start, end in ahead if start <= since < end)
        changes: list[tuple[float, int]] = []
        for start, end in ahead:
            if since < start <= until:
                changes.append((start, 1))
            if since < end <= until:
                changes.append((end, -1))
        found = [count + 1]
        for _moment, step in sorted(changes):
            count += step
            found.append(count + 1)
        return found

    def position(self, call_id: int, moment: float) -> int:
        """The caller's true position at `moment`."""
        return self.positions(call_id, moment, moment)[0]


def check_positions(entries: dict[int, InLine], heard: Iterable[Announcement], window_s: float = WINDOW_S) -> PositionCheck:
    """Set every announced position against the true one (see the module's docstring)."""
    line = Line(entries)
    check = PositionCheck()
    for said in heard:
        check.announced += 1
        if said.call_id not in entries:
            check.unknown += 1
            continue
        if said.position == line.position(said.call_id, said.heard):
            check.exact += 1
        elif said.position in line.positions(said.call_id, said.asked, said.heard):
            check.changed_meanwhile += 1
        else:
            true = line.positions(said.call_id, said.asked - window_s, said.heard + window_s)
            if said.position in true:
                check.within_window += 1
            else:
                check.wrong.append((said, sorted(set(true))))
    return check


def told_against_records(entries: dict[int, InLine], told: Iterable[tuple[int, float, int]],
                         window_s: float = WINDOW_S) -> dict[str, Any]:
    """The places the service recorded telling callers (its `wait_estimate` events: call id, when,
    place) against the records' true position within `window_s` of that moment. Not a target: when
    announcements are wrong, it says whether the service worked the place out wrong (these disagree
    too) or the caller heard something other than what it worked out."""
    line = Line(entries)
    checked, disagree = 0, []
    for call_id, moment, place in told:
        if call_id not in entries:
            continue
        checked += 1
        true = line.positions(call_id, moment - window_s, moment + window_s)
        if place not in true:
            disagree.append({"call_id": call_id, "told": place, "true": sorted(set(true)), "at": _iso(moment)})
    return {"told": checked, "disagree": len(disagree), "examples": disagree[:5]}


def wait_seconds(spoken: str | None) -> int | None:
    """A spoken wait (line.spoken_wait) back in seconds, the longest it allows; None if unreadable."""
    if spoken is None:
        return None
    if spoken == "less than a minute":
        return 59
    if spoken == "about a minute":
        return 60
    if spoken == "about an hour":
        return 3600
    match = re.fullmatch(r"about (-?\d+) minutes", spoken) or re.fullmatch(r"about (-?[\d.]+) hours", spoken)
    if match is None:
        return None
    number = float(match.group(1))
    return int(number * (3600 if spoken.endswith("hours") else 60))


def plausible_wait(said: Announcement) -> bool:
    """Whether an announcement's wait is there, not negative and not absurd (see the module's docstring)."""
    seconds = wait_seconds(said.wait)
    return seconds is not None and 0 <= seconds <= max(3600, 60 * (said.position - 1))


# -- the run -------------------------------------------------------------------------------------------------------

def wait_until_heard(emulator: EmulatorClient, sids: list[str], timeout: float) -> list[str]:
    """Wait until every caller has heard a position announcement, been taken by a handler or ended;
    returns those who had not at the timeout. Each call's transcript is read on from where it was left."""
    seen = {sid: 0 for sid in sids}
    deadline = time.monotonic() + timeout
    while seen and time.monotonic() < deadline:
        for sid in list(seen):
            events = emulator.events(sid, after=seen[sid])
            if any(event["kind"] == "ended" or event["kind"] == "redirected" and event.get("by") == "api"
                   or event["kind"] == "say" and POSITION.search(event.get("text", "")) for event in events):
                del seen[sid]
            elif events:
                seen[sid] = events[-1]["seq"]
        if seen:
            time.sleep(1)
    return sorted(seen)


def hang_up_waiting(emulator: EmulatorClient, sids: list[str]) -> int:
    """The callers still waiting in line hang up (those with a handler finish their call); returns how many."""
    count = 0
    for sid in sids:
        call = emulator.call(sid)
        if not call["finished"] and call.get("queue"):
            emulator.hangup(sid)
            count += 1
    return count


def measure(stack: Stack, emulator: EmulatorClient, sids: list[str], window_s: float) -> dict[str, Any]:
    """The burst's figures: webhook timings, the queue check, the announcements against the records."""
    engine = stack.sql_engine()
    try:
        audit = audit_calls(engine, sids)
        entries = line_from_records(engine)
        with engine.connect() as connection:
            ids = dict(connection.execute(select(Call.call_sid, Call.id)).all())
            told = [(call_id, at.timestamp(), (detail or {}).get("place")) for call_id, at, detail in connection.execute(
                select(CallEvent.call_id, CallEvent.at, CallEvent.detail).where(CallEvent.kind == TOLD))]
    finally:
        engine.dispose()
    webhooks: dict[str, list[float]] = {"every": [], "ivr": [], "wait": [], "connect": []}
    heard: list[Announcement] = []
    for sid in sids:
        events = emulator.call(sid)["events"]
        call_id = ids.get(sid, -1)
        for kind, ms in webhook_times(events):
            webhooks["every"].append(ms)
            webhooks[kind].append(ms)
        heard += announcements(events, call_id)
    not_queued = [sid for sid in sids if ids.get(sid) not in entries]
    check = check_positions(entries, heard, window_s)
    heard_by = {said.call_id for said in heard}
    implausible = [said for said in heard if not plausible_wait(said)]
    return {
        "calls": audit.as_dict(),
        "latency_ms": {"every_webhook": summary(webhooks["every"]), "ivr_webhook": summary(webhooks["ivr"]),
                       "queue_wait_webhook": summary(webhooks["wait"]), "connect_webhook": summary(webhooks["connect"])},
        "burst": {
            "webhooks_over_2s": sum(1 for ms in webhooks["every"] if ms > WEBHOOK_LIMIT_MS),
            "queued": {"placed": len(sids), "queued": len(sids) - len(not_queued), "not_queued": not_queued[:5],
                       "ok": not not_queued and audit.ok},
            "positions": {**check.as_dict(), "window_ms": round(window_s * 1000),
                          "callers_who_heard_one": len(heard_by),
                          "service_told_vs_records": told_against_records(entries, told, window_s)},
            "wait_estimates": {"told": len(heard), "implausible": len(implausible), "ok": bool(heard) and not implausible,
                               "without_a_wait": sum(1 for said in heard if said.wait is None),
                               "examples": [{"position": said.position, "wait": said.wait} for said in implausible[:5]]},
        },
    }


def webhook_times(events: list[dict[str, Any]]) -> list[tuple[str, float]]:
    """(kind, milliseconds) of each answered webhook in a call's transcript, from the emulator sending
    it to its answer; kind is "wait" (the queue's waitUrl), "connect" or "ivr" (every other step)."""
    found: list[tuple[str, float]] = []
    asked: tuple[str, float] | None = None
    for event in events:
        if event["kind"] == "webhook" and not event.get("response_ignored"):
            path = urlsplit(event.get("url", "")).path
            kind = "wait" if path.endswith("/queue/wait") else "connect" if path.startswith("/voice/connect") else "ivr"
            asked = (kind, event_time(event))
        elif event["kind"] in ("webhook.response", "webhook.failed") and asked is not None:
            found.append((asked[0], (event_time(event) - asked[1]) * 1000))
            asked = None
    return found


def run_burst(stack: Stack, options: BurstOptions) -> dict[str, Any]:
    """Run the burst against a started stack and return the figures."""
    rng = random.Random(options.seed)
    emulator = EmulatorClient(stack.emulator_url, timeout=30)
    handlers: list[Handler] = []
    notes = []
    try:
        notes.append(seed_services(stack))
        handlers = start_handlers(stack, create_users(stack, options.handlers), emulator, options.pace, rng)
        notes.append(f"{options.callers} callers rang in over {options.ramp_s:g}s to {options.handlers} handlers")
        sampler = RssSampler(stack).start()
        try:
            began = time.time()
            sids = place_calls(stack, emulator, options.callers, options.ramp_s, rng, BURST_SCRIPTS)
            rang = time.time()
            unheard = wait_until_heard(emulator, sids, options.settle_timeout_s)
            settled = time.time()
            hung_up = hang_up_waiting(emulator, sids)
            still_going = wait_until_ended(emulator, sids, options.drain_timeout_s)
        finally:
            sampler.stop()
        notes.append(f"the last caller rang {rang - began:.1f}s after the first; every caller queued and told "
                     f"a position {settled - began:.1f}s after the first rang; then {hung_up} still waiting hung up")
        if unheard:
            notes.append(f"{len(unheard)} callers had heard no position {options.settle_timeout_s:g}s after the last rang")
        if still_going:
            notes.append(f"{len(still_going)} calls were still going {options.drain_timeout_s:g}s after the waiting hung up")
        wait_until_recorded(stack, sids)
        memory = stack.memory()
        results = measure(stack, emulator, sids, options.window_s)
        results["burst"]["unheard"] = len(unheard)
        results["burst"]["cpu_share"] = sampler.cpu_share(began, settled)
        results["burst"]["seconds"] = {"ringing": round(rang - began, 1), "until_all_told": round(settled - began, 1)}
        results["handlers"] = {"calls_taken": sum(handler.calls_taken for handler in handlers),
                               "errors": [error for handler in handlers for error in handler.log.errors][:20]}
        results["memory"] = memory
        results["rss_under_load_mb"] = sampler.peaks_mb()
        results["notes"] = notes
        return results
    finally:
        for handler in handlers:
            handler.stop()
        emulator.close()
