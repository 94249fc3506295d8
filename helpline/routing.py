"""Routing, by the name its callers import: the map of where each part lives, and the names they use.

* the line - its order, a caller's position, the wait to expect, the line as consoles see it: line.py
* the decision - given the free handlers and each need's first call, who is offered what: decision.py
* the store - the SQL that reads the line and the free handlers, and writes an offer: line_store.py
* a handler's presence - their state, and which consoles they have open: presence.py
* when routing runs - the routing pass, the sweep, the router thread: router.py
* what happens to a call from then on - accepted, connected, back in line, hang-up, wrap-up:
  lifecycle.py, with the states and their allowed moves in states.py
"""

from __future__ import annotations

from .decision import NEED_CLASSES, SKILLED_NEEDS, Free, Offer, Waiting, choose_handler, fits, pick, requirements
from .lifecycle import change_status, expire_offers, handler_gone
from .line import IN_LINE, due, estimated_wait_s, position, queue_view, spoken_wait
from .line_store import ROUTING_LOCK, constant, current_offer, lock_entry, make_offer
from .presence import PRESENCES, SETTABLE, end_wrap_ups, lock, set_presence
from .router import RETRY_AFTER_S, ROUTER, init_app, route, route_now, start_router, sweep
from .states import CALLBACK_ATTEMPTS, CALLBACK_RETRY, WRAP_UP_OUTCOMES, RoutingError

__all__ = [
    "CALLBACK_ATTEMPTS", "CALLBACK_RETRY", "IN_LINE", "NEED_CLASSES", "PRESENCES", "RETRY_AFTER_S",
    "ROUTER", "ROUTING_LOCK", "SETTABLE", "SKILLED_NEEDS", "WRAP_UP_OUTCOMES", "Free", "Offer", "RoutingError",
    "Waiting", "change_status", "choose_handler", "constant", "current_offer", "due", "end_wrap_ups",
    "estimated_wait_s", "expire_offers", "fits", "handler_gone", "init_app", "lock", "lock_entry", "make_offer",
    "pick", "position", "queue_view", "requirements", "route", "route_now", "set_presence", "spoken_wait",
    "start_router", "sweep",
]
