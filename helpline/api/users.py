"""`/api/users/<id>/sessions/revoke`: an admin signs a user out everywhere (a lost laptop, someone
leaving, a suspected compromise). Their browsers and console sockets are logged out at once."""

from __future__ import annotations

from flask import Response, jsonify
from flask_login import current_user
from pydantic import BaseModel

from .. import staff_sessions
from ..auth import roles_required
from ..db import db
from ..models import User
from ..errors import error
from . import Routes
from .openapi import documented

routes = Routes()


class SessionsEnded(BaseModel):
    """How many of the user's sessions were ended."""

    user_id: int
    ended: int


@routes.post("/users/<int:user_id>/sessions/revoke")
@documented(responses={200: SessionsEnded, 404: "No such user"}, roles=("admin",))
@roles_required("admin")
def end_user_sessions(user_id: int) -> Response | tuple[Response, int]:
    """Sign a user out everywhere: every session of theirs ends, and is audited as ended by you."""
    user = db.session.get(User, user_id)
    if user is None:
        return error(404, "not_found", f"no user {user_id}")
    ended = staff_sessions.revoke_all(db.session, user.id, "signed_out_everywhere", actor=current_user)
    db.session.commit()
    return jsonify(SessionsEnded(user_id=user.id, ended=ended).model_dump())
