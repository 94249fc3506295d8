"""When routing runs: the routing pass, the periodic sweep, and the router thread of a serving worker.

A pass reads who is free and each need's first takeable call (line_store.py), lets the decision
(decision.py) say who gets what, and makes the offers, until one side runs out. Passes run on a
thread of their own in each serving worker, woken by committed changes (`init_app`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Flask
from sqlalchemy.orm import Session

from . import line_store, lifecycle, presence
from .config import RoutingSettings
from .decision import NEED_CLASSES, Offer, Waiting, pick, takeable
from .events import Coalescer, announce
from .models import utcnow

#: A need whose candidate has not been looked for yet in this round.
_UNKNOWN: Any = object()


def route(session: Session, settings: RoutingSettings, now: dt.datetime) -> list[Offer]:
    """Offer waiting calls to free handlers until one side runs out; returns the offers made."""
    # Each need's first takeable entry is looked for again only when its line moves or the handlers
    # who could take it are gone.
    cutoff = now - dt.timedelta(seconds=settings.skill_fallback_after_s)
    first = line_store.free_and_heads(session, now, cutoff)
    free, fresh_heads = first.free, first.heads
    read_ahead: dict[str | None, Any] | None = first.read_ahead
    if not free:
        return []
    candidates: dict[str | None, Waiting | None] = {}
    offers: list[Offer] = []
    # Entries whose offer failed: another transaction holds them (a claim, a hang-up) and they read
    # as waiting until it commits. Trying them again in this pass would only spin until then; the
    # next pass (the holder's commit, or the sweep within a second) sees them as they are.
    held: set[int] = set()
    while free:
        heads = {}
        for need in NEED_CLASSES:
            known = candidates.get(need, _UNKNOWN)
            if known is _UNKNOWN or (known is not None and not takeable(known, free, cutoff)):
                heads[need] = fresh_heads.pop(need) if need in fresh_heads else line_store.head(session, need, now)
        candidates.update(line_store.candidates(session, heads, free, now, cutoff, held, read_ahead))
        read_ahead = None  # only the pass's first look is the one read ahead
        chosen = pick(candidates.values(), free, cutoff)
        if chosen is None:
            break
        entry, handler = chosen
        del candidates[entry.need]
        free.remove(handler)
        offer = line_store.make_offer(session, entry, handler.id, settings, now)
        if offer is not None:
            offers.append(offer)
        else:
            held.add(entry.id)  # the call went elsewhere, or is held: the handler is still free
            free.append(handler)
            free.sort(key=lambda item: item.rank)
    return offers


def sweep(session: Session, settings: RoutingSettings, now: dt.datetime) -> list[Offer]:
    """The periodic pass: expire offers and wrap-ups, then route (callbacks whose time has come included)."""
    lifecycle.expire_offers(session, settings, now)
    presence.end_wrap_ups(session, settings, now)
    return route(session, settings, now)


#: Where the app keeps its router thread, when `helpline serve` started one.
ROUTER = "helpline.router"


#: Pause before a failed routing pass is tried again.
RETRY_AFTER_S = 0.5


def route_now(app: Flask) -> list[Offer]:
    """One routing pass in a transaction of its own, on the router's own connection (db.own_connection).

    Consoles are told the line has changed after every pass, offers or none (realtime.py).
    """
    from .db import db

    if line_store.nobody_free(db):
        db.bus.publish("console_changed")
        return []
    with db.transaction(db.own_connection(line_store.ROUTER_CONNECTION)) as session:
        offers = route(session, app.config["HELPLINE"].routing, utcnow())
        announce(session, "console_changed")
    return offers


def start_router(app: Flask) -> Coalescer:
    """Called by `helpline serve`: route on a thread of the serving worker (without it, in each request).

    The request that changed something (a caller joining the line, a handler becoming free) commits
    and returns; routing follows at once on this thread. A burst of changes costs a pass or two, not
    one pass per change inside each request, and no webhook waits for a routing decision. A pass
    that fails (the database away) is tried again after RETRY_AFTER_S.
    """
    router = Coalescer("helpline-router", lambda: route_now(app), retry_after_s=RETRY_AFTER_S)
    router.thread.start()
    app.extensions[ROUTER] = router
    return router


def init_app(app: Flask) -> None:
    """Route whenever something committed could let a call through: a caller joined or left the line,
    a call ended, or a handler became free. (The periodic sweep covers timeouts; see realtime.py.)"""
    from .db import db

    def wanted() -> None:
        router: Coalescer | None = app.extensions.get(ROUTER)
        if router is not None:
            router.request()
        else:
            route_now(app)

    def ended(call_id: int, settled: bool = False) -> None:
        # `settled`: the status callback's own transaction has already settled who held the call.
        if not settled and lifecycle.held_by_anyone(db, call_id):
            with db.transaction() as session:
                lifecycle.call_ended(session, call_id, utcnow())
        wanted()

    db.bus.subscribe("queue_changed", lambda: wanted())
    db.bus.subscribe("call_ended", ended)
    db.bus.subscribe("handler_free", lambda handler_id: wanted())
