"""The paced benchmark: callers at a realistic pace through the IVR into the queue, handlers taking them.

Callers ring in evenly over a ramp, each pressing keys only after the prompt has played (the
emulator speaks every prompt at its time scale, so a 0.4 scale plays a 20-second greeting in eight
seconds). The default ramp keeps the handlers about two-thirds busy: the latencies then measure the
service, not callers piling up for want of handlers, and most calls are in progress at once (in the
IVR, waiting or talking), the concurrency the service is sized for. A small share of callers take
the IVR's other branches (about someone else, not eligible, "about the service" first).

The per-step latencies are measured where a caller or handler would notice them:

* IVR webhook: from the emulator sending a webhook to its answer (the emulator's own timestamps);
* queue to offer: from the service putting the call in line (its queue entry's `placed_at`) - or,
  when every handler was busy then, from the moment the offered handler became free - to the
  `offer` event reaching that handler's Socket.IO client. The time spent waiting for a free handler is reported
  apart, as "wait for a free handler": it measures the staffing, not the service;
* accept to redirect: from the handler sending POST /api/calls/<id>/accept to the emulator taking
  the caller out of the queue on the service's REST redirect;
* booking: POST /api/bookings, as the handler's client sees it.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import wait_estimate
from ..emulator.client import EmulatorClient
from ..models import Call, QueueEntry
from .checks import audit_calls, held_unknown
from .faults import RECONCILE_WAIT_S, FaultInjector, FaultPlan, FaultServers, Verdict, handlers_not_back
from .handlers import Handler, Pace
from .report import is_service_process, summary
from .stack import Stack

PASSWORD = "bench handler password, long enough"
#: The share of callers on each path through the IVR: (weight, keys). Keys are pressed one per menu,
#: once its prompt has played; "barge:111" presses them all as soon as the first menu listens (a
#: caller who knows the menus and types ahead).
SCRIPTS: tuple[tuple[float, tuple[str, ...]], ...] = (
    (0.30, ("1", "1", "1")),       # my own health, eligible, mental health
    (0.10, ("barge:111",)),        # the same, typed ahead
    (0.15, ("1", "1", "2")),       # addiction
    (0.10, ("1", "1", "3")),       # returning to work
    (0.13, ("1", "1", "0")),       # speak to someone now
    (0.07, ("1", "1", "4", "1")),  # about the service first, then mental health
    (0.08, ("2",)),                # about someone else: explained, no key to confirm, then goodbye
    (0.07, ("1", "2")),            # not eligible: signposted, no key to confirm, then goodbye
)


def keys_pressed(script: tuple[str, ...]) -> int:
    """How many keys a script presses in all (a typed-ahead entry holds several)."""
    return sum(len(entry.removeprefix("barge:")) for entry in script)


def reaches_line(script: tuple[str, ...]) -> bool:
    """Whether a script's caller joins the line (three menus answered, or more after "about the service")."""
    return keys_pressed(script) >= 3


@dataclass
class PacedOptions:
    """The load: how many callers and handlers, and how fast callers arrive."""

    callers: int = 200
    handlers: int = 50
    #: Seconds over which the callers ring in; None = keep the handlers about two-thirds busy.
    ramp_s: float | None = None
    pace: Pace = field(default_factory=Pace)
    seed: int = 8
    #: Longest the run may take after the last caller rang, before it is called off.
    drain_timeout_s: float = 180.0


def default_ramp_s(options: PacedOptions) -> float:
    """A ramp at which the handlers are about two-thirds busy (queued calls x handling time / handlers)."""
    pace = options.pace
    handling_s = sum(pace.talk_s) / 2 + sum(pace.wrap_up_s) / 2 + 1.5  # ring, connect and wrap-up notice
    queued_share = sum(weight for weight, keys in SCRIPTS if reaches_line(keys))
    return max(5.0, options.callers * queued_share * handling_s / (options.handlers * 0.65))


def create_users(stack: Stack, count: int, password: str = PASSWORD) -> list[str]:
    """Create `count` handler users with `helpline create-user` (run in this process, as the CLI runs it)."""
    from click.testing import CliRunner

    from ..cli import cli
    from ..config import ENVIRONMENT_KEYS

    # The command reads its configuration from the environment: this stack's, and nothing from the shell.
    env: dict[str, str | None] = {name: None for name in (*ENVIRONMENT_KEYS, "HELPLINE_CONFIG", "HELPLINE_INSTANCE_PATH")}
    env.update(stack.base_env)
    runner = CliRunner()
    names = []
    for index in range(count):
        name = f"bench{index + 1:03d}"
        result = runner.invoke(cli, ["create-user", name, "--role", "handler", "--password-stdin",
                                     "--display-name", f"Bench handler {index + 1}"], input=password + "\n", env=env)
        if result.exit_code != 0:
            raise RuntimeError(f"helpline create-user {name} failed: {result.output}")
        names.append(name)
    return names


def seed_services(stack: Stack) -> str:
    """Sites, clinicians and their availability, so that handlers can book (the demo's services)."""
    from ..db import Database
    from ..reference_data import load_demo_services

    database = Database()
    database.configure(stack.database_url)
    try:
        with database.transaction() as session:
            return load_demo_services(session, dt.date.today())
    finally:
        database.dispose()


def start_handlers(stack: Stack, usernames: list[str], emulator: EmulatorClient, pace: Pace, rng: random.Random,
                   password: str = PASSWORD) -> list[Handler]:
    """Log every handler in (spread over the serving processes, as a sticky proxy would) and make them available."""
    handlers = [Handler(name, password, stack.service_url(index % len(stack.ports)), emulator, pace,
                        random.Random(rng.random()), api_url=stack.proxy_url) for index, name in enumerate(usernames)]
    # Two log-ins at a time: each password check (Argon2) briefly takes tens of MB in the server.
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda handler: handler.start(), handlers))
    return handlers


def caller_number(index: int) -> str:
    """A distinct UK mobile number per caller (in the range Ofcom keeps for drama)."""
    return f"+447700{900000 + index:06d}"


Scripts = tuple[tuple[float, tuple[str, ...]], ...]


def choose_script(rng: random.Random, scripts: Scripts = SCRIPTS) -> list[str]:
    """One caller's keys, drawn from `scripts` (SCRIPTS unless told) by their weights."""
    weights = [weight for weight, _ in scripts]
    return list(rng.choices([keys for _, keys in scripts], weights)[0])


def place_calls(stack: Stack, emulator: EmulatorClient, count: int, ramp_s: float, rng: random.Random,
                scripts: Scripts = SCRIPTS) -> list[str]:
    """Ring in `count` callers evenly over `ramp_s` seconds, each to the next serving process in turn
    (its Voice URL and its status callbacks, which a proxy would spread over the processes too), each
    caller's keys drawn from `scripts`."""
    sids = []
    started = time.monotonic()
    for index in range(count):
        due = started + ramp_s * index / max(1, count)
        time.sleep(max(0.0, due - time.monotonic()))
        service = stack.webhook_url(index % len(stack.ports))
        sids.append(emulator.place_call(caller_number(index), url=f"{service}/voice/incoming",
                                        keys=choose_script(rng, scripts), status_callback=f"{service}/voice/status"))
    return sids


def wait_until_ended(emulator: EmulatorClient, sids: list[str], timeout: float) -> list[str]:
    """Wait for every call to end at the emulator; returns those still going at the timeout."""
    deadline = time.monotonic() + timeout
    pending = set(sids)
    while pending and time.monotonic() < deadline:
        live = {call["sid"] for call in emulator.calls(live=True)}
        pending &= live
        if len(live) >= 200:
            # The list is cut at 200: ask about the remaining ones one by one.
            pending = {sid for sid in pending if emulator.call(sid)["status"] not in ("completed", "busy", "failed", "no-answer", "canceled")}
        if pending:
            time.sleep(1)
    return sorted(pending)


def wait_until_recorded(stack: Stack, sids: list[str], timeout: float = 30) -> None:
    """Status callbacks arrive a moment after a call ends: wait until every row is final (or the timeout)."""
    engine = stack.sql_engine()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if audit_calls(engine, sids).ok:
                return
            time.sleep(0.5)
    finally:
        engine.dispose()


def event_time(event: dict[str, Any]) -> float:
    """When an event of the emulator's call transcript happened, in seconds since the epoch."""
    return dt.datetime.fromisoformat(event["at"]).timestamp()


@dataclass
class CallTrace:
    """One call as the emulator saw it."""

    sid: str
    started: float
    ended: float | None = None
    joined: float | None = None
    redirected: float | None = None
    #: (path kind, milliseconds) of each webhook the call's TwiML made the emulator fetch.
    webhooks: list[tuple[str, float]] = field(default_factory=list)
    #: Call time (prompts at their spoken length) from the answer to the service's answer that put the
    #: caller in line (the reply to their last menu's keys); None if never in line.
    answer_to_queue_s: float | None = None
    #: The keys each menu's Gather took before the caller was queued.
    gathered: list[str] = field(default_factory=list)

    @property
    def typed_ahead(self) -> bool:
        """Whether the caller pressed the keys for several menus into one."""
        return any(len(digits) > 1 for digits in self.gathered)

    @property
    def listened_straight_through(self) -> bool:
        """Whether the caller heard each of the three menus and answered it (no detour, no silence)."""
        return len(self.gathered) == 3 and all(len(digits) == 1 for digits in self.gathered)


def trace(events: list[dict[str, Any]], sid: str, joined: float | None) -> CallTrace:
    """Read a call's emulator transcript: webhook times, when the service redirected it to a handler, when it ended.

    `joined` is when the service put the call in line (its queue entry's `placed_at`): the caller
    may still be hearing the step's last prompt then, before the emulator reaches <Enqueue>, and
    the service may route and redirect the call before it ever does.
    """
    call = CallTrace(sid, event_time(events[0]) if events else time.time(), joined=joined)
    requested: tuple[str, float] | None = None
    # The reply to the latest menu's keys: the one that put the caller in line, once they are in
    # Twilio's queue or redirected to a handler (which may happen before they reach <Enqueue>).
    after_keys, replied_s = False, None
    for event in events:
        kind = event["kind"]
        if kind == "webhook" and not event.get("response_ignored"):
            path = urlsplit(event["url"]).path
            requested = ("connect" if path.startswith("/voice/connect") else "ivr", event_time(event))
        elif kind in ("webhook.response", "webhook.failed") and requested is not None:
            call.webhooks.append((requested[0], (event_time(event) - requested[1]) * 1000))
            requested = None
            if after_keys:
                after_keys, replied_s = False, event.get("call_s")
        if kind == "redirected" and event.get("by") == "api" and call.redirected is None:
            call.redirected = event_time(event)
        if kind == "gather.ended" and call.answer_to_queue_s is None:
            call.gathered.append(event.get("digits") or "")
            after_keys = bool(event.get("digits") or event.get("speech"))
        if call.answer_to_queue_s is None and (kind == "enqueued" or kind == "redirected" and event.get("by") == "api"):
            call.answer_to_queue_s = replied_s if replied_s is not None else event.get("call_s")
        if kind == "ended":
            call.ended = event_time(event)
    return call


def answer_to_queue(traces: list[CallTrace]) -> dict[str, dict[str, Any]]:
    """Call time from the answer to the queue, in seconds, for callers who typed ahead and for
    callers who listened to each menu before answering it. The emulator counts each prompt at its
    spoken length (whatever the time scale) and each webhook at its real time."""
    typed = [call.answer_to_queue_s * 1000 for call in traces if call.answer_to_queue_s is not None and call.typed_ahead]
    listened = [call.answer_to_queue_s * 1000 for call in traces
                if call.answer_to_queue_s is not None and call.listened_straight_through]
    return {name: {key: (value / 1000 if isinstance(value, float) else value) for key, value in summary(values).items()}
            for name, values in (("typed_ahead", typed), ("listened", listened))}


def timeline(traces: list[CallTrace], step_s: float = 0.5) -> dict[str, list[float]]:
    """Calls in progress over time: in the IVR, waiting in line, with a handler."""
    if not traces:
        return {}
    origin = min(call.started for call in traces)
    horizon = max((call.ended or call.started) for call in traces)
    series: dict[str, list[float]] = {"t": [], "in_call": [], "in_ivr": [], "waiting": [], "with_handler": []}
    moment = origin
    while moment <= horizon + step_s:
        counts = {"in_call": 0, "in_ivr": 0, "waiting": 0, "with_handler": 0}
        for call in traces:
            end = call.ended or horizon
            if not call.started <= moment < end:
                continue
            counts["in_call"] += 1
            if call.joined is None or moment < call.joined:
                counts["in_ivr"] += 1
            elif call.redirected is None or moment < call.redirected:
                counts["waiting"] += 1
            else:
                counts["with_handler"] += 1
        series["t"].append(round(moment - origin, 2))
        for name, value in counts.items():
            series[name].append(value)
        moment += step_s
    return series


def measure(stack: Stack, emulator: EmulatorClient, sids: list[str], handlers: list[Handler]) -> dict[str, Any]:
    """Set the handlers' logs against the emulator's transcripts and the database."""
    engine = stack.sql_engine()
    try:
        with engine.connect() as connection:
            ids = dict(connection.execute(select(Call.call_sid, Call.id)).all())
            placed = dict(connection.execute(select(QueueEntry.call_id, QueueEntry.placed_at)
                                             .where(QueueEntry.kind == "live")).all())
        audit = audit_calls(engine, sids)
        with Session(engine) as session:
            # Every wait told to a caller who was then answered, against the wait that followed.
            estimates = wait_estimate.errors(wait_estimate.told_and_answered(session))
    finally:
        engine.dispose()
    traces = []
    for sid in sids:
        joined = placed.get(ids.get(sid, -1))
        traces.append(trace(emulator.call(sid)["events"], sid, joined.timestamp() if joined is not None else None))
    offers: dict[int, tuple[float, Handler]] = {}
    for handler in handlers:
        for call_id, stamp in handler.log.offers.items():
            if call_id not in offers or stamp < offers[call_id][0]:
                offers[call_id] = (stamp, handler)
    accepts = {call_id: sent for handler in handlers for call_id, sent, _done, status in handler.log.accepts if status == 200}
    queue_to_offer, staffing_wait, accept_to_redirect, ivr, connect = [], [], [], [], []
    # The share of queue-to-offer after the service made its decision: Socket.IO (and Redis) delivery.
    delivery = [(stamp - handler.log.offers_made[call_id]) * 1000 for call_id, (stamp, handler) in offers.items()
                if call_id in handler.log.offers_made]
    for call in traces:
        ivr += [ms for kind, ms in call.webhooks if kind == "ivr"]
        connect += [ms for kind, ms in call.webhooks if kind == "connect"]
        call_id = ids.get(call.sid)
        if call_id is None or call.joined is None:
            continue
        if call_id in offers:
            received, handler = offers[call_id]
            free = max((stamp for stamp in handler.log.free_at if stamp <= received), default=call.joined)
            routable = max(call.joined, free)
            queue_to_offer.append((received - routable) * 1000)
            staffing_wait.append(max(0.0, routable - call.joined) * 1000)
        if call_id in accepts and call.redirected is not None:
            accept_to_redirect.append((call.redirected - accepts[call_id]) * 1000)
    bookings = [seconds * 1000 for handler in handlers for _call, seconds, status in handler.log.bookings if status == 201]
    started = min(call.started for call in traces)
    finished = max((call.ended or call.started) for call in traces)
    duration = max(0.001, finished - started)
    series = timeline(traces)
    webhooks = sum(len(call.webhooks) for call in traces)
    return {
        "calls": audit.as_dict(),
        "duration_s": round(duration, 1),
        "peak_concurrent_calls": max(series.get("in_call", [0])),
        "calls_per_s": round(len(traces) / duration, 2),
        "webhooks_per_s": round(webhooks / duration, 1),
        "latency_ms": {
            "ivr_webhook": summary(ivr),
            "connect_webhook": summary(connect),
            "queue_to_offer": summary(queue_to_offer),
            "offer_delivery": summary(delivery),
            "wait_for_a_free_handler": summary(staffing_wait),
            "accept_to_redirect": summary(accept_to_redirect),
            "booking": summary(bookings),
        },
        "answer_to_queue_s": answer_to_queue(traces),
        "wait_estimate": estimates,
        "handlers": {
            "calls_taken": sum(handler.calls_taken for handler in handlers),
            "accept_conflicts": sum(1 for handler in handlers for *_rest, status in handler.log.accepts if status != 200),
            "missed_offers": sum(handler.log.missed_offers for handler in handlers),
            "queue_events_received": sum(handler.log.queue_events for handler in handlers),
            "errors": [error for handler in handlers for error in handler.log.errors][:20],
        },
        "timeline": series,
    }


class RssSampler:
    """The largest resident set of each of the service's processes while the calls run (VmHWM also
    counts the log-ins before them, whose password hashing briefly takes tens of MB), and the CPU
    time every process of the run (the emulator's and the benchmark's too) has used at each sample."""

    def __init__(self, stack: Stack, every_s: float = 0.5):
        self.stack = stack
        self.every_s = every_s
        self.peaks: dict[str, int] = {}
        #: process/role -> (time.time(), CPU milliseconds used so far) at each sample.
        self.cpu: dict[str, list[tuple[float, int]]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-rss", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            stamp = time.time()
            for name, roles in self.stack.memory().items():
                for role, figures in roles.items():
                    key = f"{name}/{role}"
                    if "cpu_ms" in figures:
                        self.cpu.setdefault(key, []).append((stamp, figures["cpu_ms"]))
                    if is_service_process(name):
                        self.peaks[key] = max(self.peaks.get(key, 0), figures.get("VmRSS", 0))

    def start(self) -> "RssSampler":
        """Start sampling."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sampling."""
        self._stop.set()
        self._thread.join(timeout=5)

    def peaks_mb(self) -> dict[str, float]:
        """The peaks, in MB."""
        return {key: round(kb / 1024, 1) for key, kb in sorted(self.peaks.items())}

    def cpu_share(self, since: float, until: float, window_s: float = 5.0) -> dict[str, dict[str, float]]:
        """How busy each process was between `since` and `until` (time.time()): its CPU time over
        the wall time, on average and in its busiest `window_s` (1.0 = one core all the time; a
        Python process is held near one core by its interpreter lock)."""
        shares = {}
        for key, samples in sorted(self.cpu.items()):
            inside = [(stamp, ms) for stamp, ms in samples if since <= stamp <= until]
            if len(inside) < 2:
                continue
            mean = (inside[-1][1] - inside[0][1]) / 1000 / max(0.001, inside[-1][0] - inside[0][0])
            busiest = 0.0
            first = 0
            for last in range(1, len(inside)):
                while inside[last][0] - inside[first][0] > window_s and first < last - 1:
                    first += 1
                elapsed = inside[last][0] - inside[first][0]
                if elapsed >= window_s * 0.8:
                    busiest = max(busiest, (inside[last][1] - inside[first][1]) / 1000 / elapsed)
            shares[key] = {"mean": round(mean, 2), "busiest": round(max(busiest, mean), 2)}
        return shares


def judge_fault(stack: Stack, emulator: EmulatorClient, sids: list[str], handlers: list[Handler]) -> Verdict:
    """What the fault left once the load drained and reconciliation had its turn."""
    wait_until_recorded(stack, sids, timeout=RECONCILE_WAIT_S)
    engine = stack.sql_engine()
    try:
        audit = audit_calls(engine, sids)
        unknown = held_unknown(emulator, engine)
    finally:
        engine.dispose()
    live = {call["sid"] for call in emulator.calls(live=True)}
    return Verdict(lost=len(audit.lost), unfinished=len(audit.unfinished), duplicated=len(audit.duplicated),
                   held_unknown=unknown, still_going=sorted(set(sids) & live),
                   not_back=handlers_not_back(stack, handlers))


def run_paced(stack: Stack, options: PacedOptions, fault: tuple[FaultPlan, FaultServers] | None = None) -> dict[str, Any]:
    """Run the paced load against a started stack and return the figures; with `fault`, inject it
    (counting from the first caller) and judge what it left."""
    rng = random.Random(options.seed)
    emulator = EmulatorClient(stack.emulator_url, timeout=30)
    handlers: list[Handler] = []
    notes = []
    try:
        notes.append(seed_services(stack))
        usernames = create_users(stack, options.handlers)
        handlers = start_handlers(stack, usernames, emulator, options.pace, rng)
        ramp_s = options.ramp_s if options.ramp_s is not None else default_ramp_s(options)
        notes.append(f"{options.callers} callers rang in over {ramp_s:.1f}s")
        sampler = RssSampler(stack).start()
        injector = FaultInjector(fault[0], stack, fault[1]) if fault else None
        try:
            if injector is not None:
                injector.start()
            sids = place_calls(stack, emulator, options.callers, ramp_s, rng)
            if injector is not None:
                injector.wait()
            still_going = wait_until_ended(emulator, sids, options.drain_timeout_s)
        finally:
            sampler.stop()
        if still_going:
            notes.append(f"{len(still_going)} calls were still going {options.drain_timeout_s:g}s after the last caller rang")
        verdict = judge_fault(stack, emulator, sids, handlers) if injector is not None else None
        wait_until_recorded(stack, sids)
        memory = stack.memory()
        results = measure(stack, emulator, sids, handlers)
        if injector is not None and verdict is not None:
            results["fault"] = {**injector.summary(), **verdict.as_dict()}
            results["fault"]["ok"] = verdict.ok and injector.error is None
        results["memory"] = memory
        results["rss_under_load_mb"] = sampler.peaks_mb()
        results["notes"] = notes
        return results
    finally:
        for handler in handlers:
            handler.stop()
        emulator.close()
