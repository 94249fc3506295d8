"""`GET /healthz`: whether this process can serve, for the proxy's health checks and the operator.

It answers 200 `{"status": "ok", ...}` when the process can reach its database and, when Socket.IO
events travel through Redis, holds a live subscription to its Redis channel (not merely a ping: a
process whose subscription is still coming back after an outage would miss other processes' offers
meanwhile, while Redis itself answers); 503 `{"status": "degraded", ...}` naming the part that is
down otherwise, so that a load balancer takes the process out of rotation until it recovers (the
connection pool replaces dead connections and the Redis client reconnects by themselves; nothing
has to be restarted).

The page carries no personal data and needs no log-in: a proxy must be able to ask it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify
from sqlalchemy import text

from .db import db
from .realtime import subscription_state

log = logging.getLogger(__name__)

bp = Blueprint("health", __name__)

#: Seconds a Redis check may take before Redis counts as down (the proxy's own timeout is longer).
REDIS_TIMEOUT_S = 1.0


def _database() -> str:
    """'ok', or why the database cannot be used."""
    try:
        with db.transaction() as session:
            session.execute(text("SELECT 1"))
        return "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready", and is reported, not raised
        log.warning("health check: database unavailable: %s", exc.__class__.__name__)
        return f"unavailable ({exc.__class__.__name__})"


def _redis(url: str) -> str:
    """'ok', or why Redis cannot be used; a client of its own, so that a check never blocks the message queue's."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S)
    try:
        client.ping()
        return "ok"
    except redis.RedisError as exc:
        log.warning("health check: redis unavailable: %s", exc.__class__.__name__)
        return f"unavailable ({exc.__class__.__name__})"
    finally:
        client.close()


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    """200 when the database (and Redis, if configured) answer; 503 naming what does not."""
    started = time.perf_counter()
    checks: dict[str, Any] = {"database": _database()}
    redis_url = current_app.config["HELPLINE"].redis_url
    if redis_url:
        # The live subscription once this process listens (`helpline serve` does from start-up).
        checks["redis"] = subscription_state() or _redis(redis_url)
    healthy = all(value == "ok" for value in checks.values())
    body = {"status": "ok" if healthy else "degraded", **checks,
            "process": current_app.extensions.get("helpline.process"),
            "ms": round((time.perf_counter() - started) * 1000, 2)}
    response = jsonify(body)
    response.headers["Cache-Control"] = "no-store"
    return response, 200 if healthy else 503


def init_app(app: Flask) -> None:
    """Register /healthz."""
    app.register_blueprint(bp)
