"""In-process notifications that fire only once a transaction has committed.

Code that changes the queue or a call says so with `announce(session, "queue_changed")`; subscribers
(routing, the Socket.IO broadcaster) hear about it after the commit succeeds, never about changes that
were rolled back.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from typing import Any, Callable

from sqlalchemy import event
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

Subscriber = Callable[..., None]


class Bus:
    """Named topics and their subscribers for one app."""

    def __init__(self) -> None:
        self._subscribers: dict[str, list[Subscriber]] = defaultdict(list)

    def subscribe(self, topic: str, subscriber: Subscriber) -> None:
        """Call `subscriber(**data)` after each committed announcement of `topic`."""
        self._subscribers[topic].append(subscriber)

    def publish(self, topic: str, **data: Any) -> None:
        """Deliver now; a failing subscriber is logged and does not stop the others."""
        for subscriber in list(self._subscribers.get(topic, ())):
            try:
                subscriber(**data)
            except Exception:  # noqa: BLE001 - one broken listener must not break the webhook
                log.exception("subscriber to %s failed", topic)


def announce(session: Session, topic: str, **data: Any) -> None:
    """Queue a notification to be published when `session` commits."""
    pending = session.info.setdefault("pending_announcements", [])
    if (topic, data) not in pending:
        pending.append((topic, data))


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    session.info.setdefault("committed_announcements", []).extend(session.info.pop("pending_announcements", []))


@event.listens_for(Session, "after_transaction_end")
def _publish_after_commit(session: Session, transaction: Any) -> None:
    # Published only once the outermost transaction has ended, when the session has given its
    # connection back to the pool: subscribers open sessions of their own, and if each level kept
    # its connection, a burst of requests would use up the pool and wait on each other for good.
    if transaction.parent is not None:
        return
    committed = session.info.pop("committed_announcements", [])
    bus: Bus | None = session.info.get("bus")
    if bus is None:
        return
    for topic, data in committed:
        bus.publish(topic, **data)


@event.listens_for(Session, "after_soft_rollback")
def _drop_after_rollback(session: Session, previous_transaction: Any) -> None:
    # "soft": fires even when the transaction never reached the database, so nothing announced in
    # a rolled-back unit of work lingers to be published by the session's next commit.
    session.info.pop("pending_announcements", None)
    if previous_transaction.nested:
        return  # a savepoint rolled back; what the outer transaction committed before it still stands
    # The whole transaction rolled back: what its savepoints had committed never happened either.
    session.info.pop("committed_announcements", None)


class Coalescer:
    """Runs `work()` on a daemon thread soon after each `request()`, folding the requests that
    arrive while it runs (or during the `min_gap_s` after it) into one more run.

    For work that must follow changes but need not follow each one: a burst of fifty changes costs
    a run or two. A failed run is logged; with `retry_after_s` it is run again after that pause
    (for work that must not be lost to a passing fault), otherwise the next request runs it.
    """

    def __init__(self, name: str, work: Callable[[], object], min_gap_s: float = 0.0,
                 retry_after_s: float | None = None):
        self.name = name
        self.work = work
        self.min_gap_s = min_gap_s
        self.retry_after_s = retry_after_s
        self.wanted = threading.Event()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def request(self) -> None:
        """Something changed: run soon."""
        self.wanted.set()

    def _run(self) -> None:
        while not self.stopped.is_set():
            self.wanted.wait()
            if self.stopped.is_set():
                return
            self.wanted.clear()
            try:
                self.work()
            except Exception:  # noqa: BLE001 - logged; run again after a pause, or on the next request
                log.exception("%s failed", self.name)
                if self.retry_after_s is not None:
                    self.stopped.wait(self.retry_after_s)
                    self.wanted.set()
            if self.min_gap_s:
                self.stopped.wait(self.min_gap_s)

    def stop(self) -> None:
        """Stop the thread (a run under way finishes)."""
        self.stopped.set()
        self.wanted.set()
        self.thread.join(timeout=10)
