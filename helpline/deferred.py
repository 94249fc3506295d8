"""Twilio's status callbacks that the database could not take, replayed as soon as it can.

Twilio never retries a status callback: answering one with a 500 only puts an error in Twilio's
debugger, and the event is gone. So a status callback that still fails after its view's own brief
retries (a database outage, not a passing fault) is answered 204 and kept here, in the process that
received it, with the moment it arrived. Every couple of seconds the process replays it - the same
view with the same parameters, as if it had just arrived, except that a call's end is recorded at
the moment the callback came - until the database takes it; a handler on the call then moves to
wrap-up within seconds of the database coming back, not at the next reconciliation.

If the process stops first, nothing is lost that Twilio does not know: reconciliation with Twilio
(reconcile.py), every minute, settles every call Twilio has ended from Twilio's own record, with
its real end time. Held here for ten minutes at most, by then long settled that way.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app, request
from werkzeug.datastructures import MultiDict
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from .models import utcnow
from .db import db

log = logging.getLogger(__name__)

#: Seconds between replays of what is pending.
RETRY_EVERY_S = 2.0
#: Seconds a callback is kept before reconciliation alone is left to settle its call.
KEEP_FOR_S = 600.0
#: Callbacks kept at most (a long outage at a busy helpline); the oldest give way.
MAX_PENDING = 10_000
#: What the database being away raises (a connection refused or cut, no connection to be had).
DATABASE_AWAY = (OperationalError, InterfaceError, DisconnectionError, PoolTimeout)
#: The request environ key carrying when a replayed callback first arrived.
RECEIVED_AT = "helpline.received_at"


def received_at() -> dt.datetime:
    """When this request's callback arrived: now, or for a replay the moment it first came."""
    stamp = request.environ.get(RECEIVED_AT)
    return stamp if isinstance(stamp, dt.datetime) else utcnow()


@dataclass
class Pending:
    """One callback waiting for the database."""

    endpoint: str
    path: str
    query: str
    view_args: dict[str, Any]
    form: list[tuple[str, str]]
    received: dt.datetime
    kept_since: float


class Deferred:
    """The process's pending status callbacks and the thread that replays them."""

    def __init__(self, app: Flask):
        self.app = app
        self._pending: list[Pending] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)

    def keep(self) -> None:
        """Keep the current request's callback for replay (call from its error handler)."""
        item = Pending(request.endpoint or "", request.path, request.query_string.decode("latin-1"),
                       dict(request.view_args or {}), list(request.form.items(multi=True)), received_at(),
                       time.monotonic())
        with self._lock:
            self._pending.append(item)
            del self._pending[:-MAX_PENDING]
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="helpline-deferred-callbacks", daemon=True)
                self._thread.start()
        log.warning("kept a status callback (%s) until the database answers", item.endpoint)

    def _run(self) -> None:
        while True:
            time.sleep(RETRY_EVERY_S)
            with self._lock:
                batch = list(self._pending)
            if not batch:
                with self._lock:
                    if not self._pending:
                        self._thread = None
                        return
                continue
            for item in batch:
                try:
                    replayed = self.replay(item)
                except Exception:  # noqa: BLE001 - the thread must outlive any one callback
                    log.exception("could not replay a status callback (%s)", item.endpoint)
                    replayed = False
                if not replayed:
                    if time.monotonic() - item.kept_since <= KEEP_FOR_S:
                        break  # the database is still away: the rest wait for the next round
                    log.warning("gave up replaying a status callback (%s): reconciliation settles its call", item.endpoint)
                with self._lock:
                    if item in self._pending:
                        self._pending.remove(item)

    def replay(self, item: Pending) -> bool:
        """Run the callback's view again; True when it went through (or failed for another reason than
        the database, which a replay would not mend), False while the database is still away."""
        view = self.app.view_functions.get(item.endpoint)
        if view is None:
            return True
        path = f"{item.path}?{item.query}" if item.query else item.path
        with self.app.test_request_context(path, method="POST", data=MultiDict(item.form),
                                           environ_overrides={RECEIVED_AT: item.received}):
            try:
                view(**item.view_args)
            except DATABASE_AWAY:
                _rollback(db)
                return False
            except Exception:  # noqa: BLE001 - not the database: replaying again would not help
                _rollback(db)
                log.exception("a replayed status callback (%s) failed", item.endpoint)
        log.info("recorded a status callback (%s) kept through a database outage", item.endpoint)
        return True


def _rollback(db: Any) -> None:
    try:
        db.session.rollback()
    except Exception:  # noqa: BLE001 - the database is away; the session is discarded at teardown
        pass


def keep_for_replay() -> None:
    """Keep the current request (a status callback that the database could not take) for replay."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    deferred = app.extensions.get("helpline.deferred")
    if deferred is None:
        deferred = app.extensions.setdefault("helpline.deferred", Deferred(app))
    deferred.keep()
