"""`helpline bench --fault`: one fault injected in the middle of the paced load, on servers the
benchmark started itself, and the verdict on what it did to the callers and the handlers.

* `redis`: the run's own Redis is killed, and started again `for_s` seconds later;
* `postgresql`: the run's own PostgreSQL is stopped as a crash would (every connection cut), then
  started again;
* `kill`: the last serving process is SIGKILLed with its worker, and started again. Twilio's
  webhooks then reach the processes through a proxy that fails over to a live one (failover.py,
  as deploy/nginx/helpline.conf does), since without one a dead process's callers are simply lost.

The verdict is read once the load has drained and the reconciliation with Twilio (every minute) has
had its turn: calls lost (never recorded), unfinished (no end recorded), duplicated; callers the
emulator still holds in a queue that the service has no place in line for (`checks.held_unknown`);
calls still going at the emulator; and the handlers not back in service (not available again, or
their console not connected).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from .servers import OwnPostgres, OwnRedis
from .stack import Stack

KINDS = ("redis", "postgresql", "kill")
#: Seconds allowed after the last call ended for reconciliation to settle what the outage left:
#: its job runs every minute, plus a margin for a loaded machine.
RECONCILE_WAIT_S = 90.0


@dataclass
class FaultPlan:
    """Which fault, when (seconds after the first caller rings) and for how long."""

    kind: str
    at_s: float
    for_s: float


@dataclass
class FaultServers:
    """The run's own PostgreSQL and Redis, which the fault may stop."""

    postgres: OwnPostgres
    redis: OwnRedis


class FaultInjector:
    """Injects the planned fault on a thread of its own, once, and undoes it."""

    def __init__(self, plan: FaultPlan, stack: Stack, servers: FaultServers):
        if plan.kind not in KINDS:
            raise ValueError(f"unknown fault {plan.kind!r}")
        self.plan = plan
        self.stack = stack
        self.servers = servers
        self.began: float | None = None
        self.ended: float | None = None
        self.error: str | None = None
        self._started = 0.0
        self._thread = threading.Thread(target=self._run, name="bench-fault", daemon=True)

    def start(self) -> "FaultInjector":
        """Start counting `at_s` from now."""
        self._started = time.monotonic()
        self._thread.start()
        return self

    def wait(self) -> None:
        """Wait until the fault has been undone."""
        self._thread.join()

    def _run(self) -> None:
        try:
            time.sleep(max(0.0, self._started + self.plan.at_s - time.monotonic()))
            self.began = time.monotonic() - self._started
            self._inject()
            time.sleep(max(0.0, self._started + self.began + self.plan.for_s - time.monotonic()))
            self._undo()
            self.ended = time.monotonic() - self._started
        except Exception as exc:  # noqa: BLE001 - reported with the figures, which then say it failed
            self.error = f"{exc.__class__.__name__}: {exc}"

    def _victim(self) -> int:
        return len(self.stack.ports) - 1

    def _inject(self) -> None:
        if self.plan.kind == "redis":
            self.servers.redis.stop()
        elif self.plan.kind == "postgresql":
            self.servers.postgres.stop("immediate")
        else:
            self.stack.service(self._victim()).kill()

    def _undo(self) -> None:
        if self.plan.kind == "redis":
            self.servers.redis.start()
        elif self.plan.kind == "postgresql":
            self.servers.postgres.start()
        else:
            self.stack.start_service(self._victim())

    def summary(self) -> dict[str, Any]:
        """What was done, and when (seconds after the first caller rang)."""
        what = {"redis": "the run's own Redis killed", "postgresql": "the run's own PostgreSQL stopped (immediate)",
                "kill": f"serving process {self._victim()} SIGKILLed, webhooks through a failover proxy"}[self.plan.kind]
        return {"kind": self.plan.kind, "what": what, "at_s": self.plan.at_s, "for_s": self.plan.for_s,
                "began_s": None if self.began is None else round(self.began, 1),
                "ended_s": None if self.ended is None else round(self.ended, 1), "error": self.error}


@dataclass
class Verdict:
    """What a fault left behind."""

    lost: int = 0
    unfinished: int = 0
    duplicated: int = 0
    held_unknown: list[str] = field(default_factory=list)
    still_going: list[str] = field(default_factory=list)
    not_back: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Nothing lost, unfinished, duplicated, held unknown or still going, and every handler back."""
        return not (self.lost or self.unfinished or self.duplicated or self.held_unknown or self.still_going or self.not_back)

    def as_dict(self) -> dict[str, Any]:
        """As plain data."""
        return {"ok": self.ok, "lost": self.lost, "unfinished": self.unfinished, "duplicated": self.duplicated,
                "held_unknown": len(self.held_unknown), "still_going": len(self.still_going),
                "handlers_back_in_service": not self.not_back, "handlers_not_back": self.not_back,
                "examples": {"held_unknown": self.held_unknown[:5], "still_going": self.still_going[:5]}}


def handlers_not_back(stack: Stack, handlers: list[Any], timeout: float = 30.0) -> list[str]:
    """The emulated handlers that are not available with a connected console (waiting up to
    `timeout` for those still finishing a wrap-up or reconnecting)."""
    from ..models import Handler as HandlerRow
    from ..models import User

    engine = stack.sql_engine()
    try:
        deadline = time.monotonic() + timeout
        while True:
            with engine.connect() as connection:
                presence = dict(connection.execute(select(User.username, HandlerRow.presence)
                                                   .join(HandlerRow, HandlerRow.user_id == User.id)).all())
            missing = [handler.username for handler in handlers
                       if presence.get(handler.username) != "available" or not handler.socket.connected]
            if not missing or time.monotonic() > deadline:
                return missing
            time.sleep(1)
    finally:
        engine.dispose()
