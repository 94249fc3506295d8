"""The console's JSON API (the console's own browser code uses it too).

Each area declares its routes in a module of this package, on its own `Routes`; importing a module
adds nothing anywhere. `blueprint(...)` puts the areas create_app names on one blueprint, under
/api/. Bodies are validated with pydantic; every error is JSON `{"error", "detail"}` with a 4xx
status, never a stack trace (errors.py):

- 400: the request breaks the OpenAPI document (/api/openapi.json): not JSON, a wrong type, too long,
  not one of the listed values, a field it does not have.
- 422: it keeps to the document, but a value is refused on grounds the document cannot state: a phone
  number that is not one, a locality or id that does not exist, a period that ends before it starts.
- 403 / 404 / 409: not yours, not there, or not now (the record's state forbids it).
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, TypeVar, get_args

from flask import Blueprint, request
from pydantic import BaseModel, ValidationError
from pydantic_core.core_schema import ErrorType

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
CONTROL_CHARACTERS = "\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff"
_CONTROL = re.compile(f"[{CONTROL_CHARACTERS}]")


def _any_case(word: str) -> str:
    """`word` as a pattern matching it in any case, written out so that JSON Schema (which has no flags) can use it."""
    return "".join(f"[{char.lower()}{char.upper()}]" if char.isalpha() else char for char in word)


#: Markup: an HTML tag, or the start of a script or a javascript: URL. Pages show text as text, but
#: what is stored may one day be pasted, mailed or exported somewhere that does not.
#: ("x<y and y>z" is text: a tag is a bare <name>, </name> or <name/>, or a name with an attribute.)
#: Written without flags, so that the OpenAPI document (api/openapi.py) states the very same rule.
MARKUP = (r"<\s*/?\s*[a-zA-Z][a-zA-Z0-9-]*\s*/?\s*>|<\s*[a-zA-Z][a-zA-Z0-9-]*\s+[^<>]*=|<\s*("
          + "|".join(_any_case(tag) for tag in ("script", "iframe", "object", "embed", "svg", "img", "style", "link", "meta"))
          + r")\b|" + _any_case("javascript") + r"\s*:")
_MARKUP = re.compile(MARKUP)
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


#: pydantic's own error types: a request that breaks the document's schema. The rest come from the
#: service's validators (a phone number, a time of day), whose rules a JSON Schema cannot state.
_SCHEMA_ERRORS = frozenset(get_args(ErrorType)) - {"value_error", "assertion_error"}


def refusal(exc: ValidationError) -> BadRequest:
    """A pydantic refusal as the API's: 400 when the schema was broken, 422 when only our own rules were."""
    problems = exc.errors()
    detail = [{"field": ".".join(str(part) for part in problem["loc"]) or "body", "problem": problem["msg"]} for problem in problems]
    status = 400 if any(problem["type"] in _SCHEMA_ERRORS for problem in problems) else 422
    return BadRequest("invalid", detail, status=status)


def _whole(value: Any) -> Any:
    """`value` with floats that are whole numbers (JSON Schema's integers, such as 3.0) as ints."""
    if isinstance(value, dict):
        return {key: _whole(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_whole(item) for item in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


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
        return model.model_validate(_whole(data))
    except ValidationError as exc:
        raise refusal(exc) from None


def query_problems() -> list[dict[str, str]]:
    """Query parameters holding control characters (NUL among them, which PostgreSQL's text refuses):
    the rule every body's strings keep to, for the parameters too."""
    return [{"field": key[:40], "problem": "contains control or invisible formatting characters"}
            for key, value in request.args.items(multi=True) if _CONTROL.search(key) or _CONTROL.search(value)][:20]


def plain_query() -> None:
    """Refuse a query string with control characters before any view reads it."""
    problems = query_problems()
    if problems:
        raise BadRequest("invalid", problems)



def blueprint(*areas: Routes) -> Blueprint:
    """The API for one app: `areas`' routes under /api/, every error rendered as JSON."""
    bp = Blueprint("api", __name__, url_prefix=URL_PREFIX)
    register_api_errors(bp)
    bp.before_request(plain_query)
    for area in areas:
        area.add_to(bp)
    return bp
