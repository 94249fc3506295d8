"""`/api/audit`: admins search the audit log (helpline/audit.py keeps it); the search is itself audited.

Who may search is the role matrix's business (helpline/permissions.py: admins only), as for every
other API route.
"""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, request
from flask_login import current_user
from sqlalchemy.orm import Session

from .. import audit
from ..auth import roles_required
from ..db import db
from . import MAX_INT, BadRequest, Routes
from .openapi import documented, whole_number

routes = Routes()

#: The query parameters the search takes.
PARAMETERS = ("user", "action", "from", "to", "object", "before", "limit")
#: A day or an instant.
WHEN = {"anyOf": [{"type": "string", "format": "date"}, {"type": "string", "format": "date-time"}]}


@routes.get("/audit")
@documented(responses={200: "{entries: [{seq, at, actor, action, object, reason, request_id, detail}], next_before}"},
            query={"user": "username or user id", "action": ("an action, or a prefix ending in '.'", {
                       "type": "string", "maxLength": 64, "pattern": r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*\.?$"}),
                   "from": ("YYYY-MM-DD or ISO 8601 instant", WHEN), "to": ("YYYY-MM-DD (inclusive) or ISO 8601 instant", WHEN),
                   "object": "type or type:id", "before": whole_number("next_before of the previous page", 0, MAX_INT),
                   "limit": whole_number("entries, 1 to 500 (default 100)", 1, 500)},
            roles=("admin",))
@roles_required("admin")
def audit_search() -> Response:
    """Search the audit log (admins): ?user=&action=&from=&to=&object=type[:id]&before=&limit=."""
    args = request.args
    try:
        filters = filters_from(db.session, args)
    except ValueError as exc:
        raise BadRequest("invalid", str(exc)) from None
    entries = audit.search(db.session, filters)
    audit.record(db.session, current_user, "audit.search", filters={key: args[key][:64] for key in sorted(args)})
    db.session.commit()
    next_before = entries[-1].seq if len(entries) == filters.limit else None
    return jsonify({"entries": [audit.as_dict(entry) for entry in entries], "next_before": next_before})


def filters_from(session: Session, args: Any) -> audit.Filters:
    """Parse the API's query string into audit.Filters; ValueError says what is wrong."""
    unknown = sorted(set(args) - set(PARAMETERS))
    if unknown:
        raise ValueError(f"unknown parameter {unknown[0][:40]!r}")
    user_id = None
    if args.get("user"):
        user_id = audit.user_id_for(session, args["user"][:64])
        if user_id is None:
            user_id = -1  # no such user: matches nothing, and says nothing about who exists
    action = args.get("action") or None
    if action is not None and (len(action) > 64 or not audit.ACTION.match(action.rstrip("."))):
        raise ValueError("action must be dotted lower-case words (end with '.' to match a prefix)")
    object_type = object_id = None
    if args.get("object"):
        object_type, _, object_id = args["object"][:100].partition(":")
        object_id = object_id or None
    limit = _int(args.get("limit"), "limit", 100)
    if not 1 <= limit <= 500:
        raise ValueError("limit must be between 1 and 500")
    before = _int(args.get("before"), "before", None) if args.get("before") else None
    return audit.Filters(
        user_id=user_id,
        action=action,
        since=audit.parse_when(args["from"]) if args.get("from") else None,
        until=audit.parse_when(args["to"], end_of_day=True) if args.get("to") else None,
        object_type=object_type or None,
        object_id=object_id,
        before_seq=before,
        limit=limit,
    )


def _int(value: str | None, name: str, default: int | None) -> Any:
    if value is None or value == "":
        return default
    # The log's sequence numbers are the database's integers: a larger one would fail there (a 500).
    if not value.isdigit() or len(value) > 10 or int(value) > MAX_INT:
        raise ValueError(f"{name} must be a whole number up to {MAX_INT}")
    return int(value)
