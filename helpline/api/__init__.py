"""The console's JSON API (the console's own browser code uses it too).

Each area declares its routes in a module of this package, on its own `Routes`; importing a module
adds nothing anywhere. `blueprint(...)` puts the areas create_app names on one blueprint, under
/api/. Bodies are validated with pydantic; every error is JSON `{"error", "detail"}` with a 4xx
status, never a stack trace (errors.py).
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, TypeVar

from flask import Blueprint, request
from pydantic import BaseModel, ValidationError

from ..errors import ServiceError, register_api_errors

#: Where every API route lives.
URL_PREFIX = "/api"

M = TypeVar("M", bound=BaseModel)
V = TypeVar("V", bound=Callable[..., Any])


class Routes:
    """One area's API views and error handlers, declared as on a Blueprint and added by `blueprint()`.

    Kept apart from the blueprint so that an area is part of the API because create_app says so,
    not because some module happened to import it; and so that each app gets a blueprint of its own.
    """

    def __init__(self) -> None:
        self.rules: list[tuple[str, Callable[..., Any], dict[str, Any]]] = []
        self.error_handlers: list[tuple[type[Exception], Callable[..., Any]]] = []

    def route(self, rule: str, **options: Any) -> Callable[[V], V]:
        """Declare `rule` (relative to /api) for the decorated view, with Flask's route options."""

        def add(view: V) -> V:
            self.rules.append((rule, view, options))
            return view

        return add

    def get(self, rule: str, **options: Any) -> Callable[[V], V]:
        return self.route(rule, methods=["GET"], **options)

    def post(self, rule: str, **options: Any) -> Callable[[V], V]:
        return self.route(rule, methods=["POST"], **options)

    def put(self, rule: str, **options: Any) -> Callable[[V], V]:
        return self.route(rule, methods=["PUT"], **options)

    def patch(self, rule: str, **options: Any) -> Callable[[V], V]:
        return self.route(rule, methods=["PATCH"], **options)

    def delete(self, rule: str, **options: Any) -> Callable[[V], V]:
        return self.route(rule, methods=["DELETE"], **options)

    def errorhandler(self, exc: type[Exception]) -> Callable[[V], V]:
        """Answer `exc` raised by any API view with the decorated function."""

        def add(handler: V) -> V:
            self.error_handlers.append((exc, handler))
            return handler

        return add

    def add_to(self, bp: Blueprint) -> None:
        """Put this area's views and error handlers on `bp`."""
        for rule, view, options in self.rules:
            bp.add_url_rule(rule, view_func=view, **options)
        for exc, handler in self.error_handlers:
            bp.register_error_handler(exc, handler)


class BadRequest(ServiceError):
    """A request the API refuses; becomes a 4xx JSON error (errors.py renders it)."""


#: Characters no field of any body may hold: C0 controls other than tab and line breaks, DEL, C1
#: controls, zero-width characters and bidirectional overrides (they disguise what a name or note says).
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")
#: Markup: an HTML tag, or the start of a script or a javascript: URL. Pages show text as text, but
#: what is stored may one day be pasted, mailed or exported somewhere that does not.
#: ("x<y and y>z" is text: a tag is a bare <name>, </name> or <name/>, or a name with an attribute.)
_MARKUP = re.compile(r"<\s*/?\s*[a-zA-Z][a-zA-Z0-9-]*\s*/?\s*>|<\s*[a-zA-Z][a-zA-Z0-9-]*\s+[^<>]*=|"
                     r"<\s*(script|iframe|object|embed|svg|img|style|link|meta)\b|javascript\s*:", re.IGNORECASE)
#: Deepest nesting any body needs (the contact form's lists are one level down).
MAX_DEPTH = 6
#: The largest number any body holds: ids are PostgreSQL `integer`s, and a bigger one would fail in
#: the database (a 500) instead of being refused here.
MAX_INT = 2**31 - 1


def _hostile(value: object, where: str, depth: int = 0) -> list[dict[str, str]]:
    """Problems with strings in a JSON value that no API body accepts, by field; [] when there are none."""
    if depth > MAX_DEPTH:
        return [{"field": where or "body", "problem": "nested too deeply"}]
    if isinstance(value, dict):
        return [problem for key, item in value.items() for problem in
                (_hostile(key, where or "body", depth + 1) + _hostile(item, f"{where}.{key}" if where else str(key), depth + 1))]
    if isinstance(value, list):
        return [problem for index, item in enumerate(value) for problem in _hostile(item, f"{where}.{index}", depth + 1)]
    if isinstance(value, float) and not math.isfinite(value):  # Python's json reads NaN and Infinity
        return [{"field": where or "body", "problem": "not a finite number"}]
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        return [{"field": where or "body", "problem": f"numbers are at most {MAX_INT}"}]
    if isinstance(value, str):
        if _CONTROL.search(value):
            return [{"field": where or "body", "problem": "contains control or invisible formatting characters"}]
        if _MARKUP.search(value):
            return [{"field": where or "body", "problem": "contains markup (HTML tags or script): send plain text"}]
    return []


def body(model: type[M]) -> M:
    """The request's JSON body, validated against `model`; raises BadRequest saying what is wrong.

    Before the model sees it, every string in it is checked for control characters and markup, and
    every number for its range, which no field of any body accepts: one rule for the whole API
    rather than one per field.
    """
    try:
        data = request.get_json(silent=True)
    except RecursionError:  # a body nested thousands deep: refuse it like any other bad JSON
        data = None
    if not isinstance(data, dict):
        raise BadRequest("bad_json", "send a JSON object with Content-Type: application/json")
    problems = _hostile(data, "")
    if problems:
        raise BadRequest("invalid", problems[:20])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        detail = [{"field": ".".join(str(part) for part in problem["loc"]), "problem": problem["msg"]} for problem in exc.errors()]
        raise BadRequest("invalid", detail) from None



def blueprint(*areas: Routes) -> Blueprint:
    """The API for one app: `areas`' routes under /api/, every error rendered as JSON."""
    bp = Blueprint("api", __name__, url_prefix=URL_PREFIX)
    register_api_errors(bp)
    for area in areas:
        area.add_to(bp)
    return bp
