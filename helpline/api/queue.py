"""`GET /api/queue`: the live line and the handlers, as every console sees them."""

from __future__ import annotations

from flask import Response, jsonify

from .. import routing
from ..auth import roles_required
from ..db import db
from ..models import utcnow
from . import Routes
from .openapi import documented
from .schemas import QueueView

routes = Routes()


@routes.get("/queue")
@documented(responses={200: QueueView}, roles=("handler", "supervisor"))
@roles_required("handler", "supervisor")
def queue() -> Response:
    """The calls in line (position, wait, need, flags) and every handler's presence: no personal data."""
    return jsonify(routing.queue_view(db.session, utcnow()))
