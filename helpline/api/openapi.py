"""`GET /api/openapi.json`: an OpenAPI 3.1 description of every route under `/api/`.

It is built from the app's URL map when asked, so a route added by any module appears without being
listed here. A view may say more with `@documented(...)`: its request body and responses as pydantic
models (their JSON Schemas go under components). The roles that may call it (`x-roles`) come from
the role matrix in helpline/permissions.py. Undecorated views are described by their docstring and path.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping, TypeVar, Union

from flask import Response, current_app, jsonify
from pydantic import BaseModel

from .. import permissions
from . import CONTROL_CHARACTERS, MARKUP, MAX_INT, URL_PREFIX, Routes

routes = Routes()

F = TypeVar("F", bound=Callable[..., object])

#: The error body every 4xx and 5xx takes.
ERROR_SCHEMA = {
    "type": "object",
    "required": ["error", "detail"],
    "properties": {"error": {"type": "string"}, "detail": {}},
}


#: What every string in every body is held to before a model sees it (api/__init__.py `_hostile`):
#: no control or invisible formatting characters, and no markup.
PLAIN_TEXT: dict[str, Any] = {"pattern": f"^[^{CONTROL_CHARACTERS}]*$", "not": {"pattern": MARKUP}}

#: A query parameter: its description, and the JSON Schema of the values the view accepts (or a
#: function that gives it, when it depends on the data).
QueryParameter = Union[str, tuple[str, Union[dict[str, Any], Callable[[], dict[str, Any]]]]]


def documented(
    body: type[BaseModel] | None = None,
    responses: Mapping[int, type[BaseModel] | str] | None = None,
    roles: tuple[str, ...] = (),
    query: Mapping[str, QueryParameter] | type[BaseModel] | None = None,
) -> Callable[[F], F]:
    """Describe a view for /api/openapi.json: its JSON body, its responses, who may call it, its query.

    `query` is the pydantic model that validates the query string, or each parameter's description
    and, where the view accepts less than any text, the schema of what it accepts."""

    def mark(view: F) -> F:
        view.__dict__["openapi"] = {"body": body, "responses": dict(responses or {}), "roles": roles, "query": query or {}}
        return view

    return mark


def text(description: str, max_length: int = 200, **schema: Any) -> tuple[str, dict[str, Any]]:
    """A free-text query parameter: plain text of at most `max_length` characters."""
    return description, {"type": "string", "maxLength": max_length, "pattern": PLAIN_TEXT["pattern"], **schema}


def whole_number(description: str, minimum: int = 1, maximum: int = MAX_INT) -> tuple[str, dict[str, Any]]:
    """A query parameter that is a whole number in a range."""
    return description, {"type": "integer", "minimum": minimum, "maximum": maximum}


def one_of(description: str, values: Any) -> tuple[str, dict[str, Any]]:
    """A query parameter that is one of a fixed set of words."""
    return description, {"type": "string", "enum": list(values)}


def date(description: str) -> tuple[str, dict[str, Any]]:
    """A query parameter that is a calendar date, YYYY-MM-DD."""
    return description, {"type": "string", "format": "date"}


def enforced(schema: Any) -> Any:
    """`schema` with the rules every body obeys written into it: plain text in every free string, and
    integers within what the database holds. The document then says what the server refuses."""
    if isinstance(schema, list):
        return [enforced(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {key: enforced(value) for key, value in schema.items()}
    kind = schema.get("type")
    if kind == "string" and not {"enum", "const", "format"} & set(schema):
        for key, value in PLAIN_TEXT.items():
            result.setdefault(key, value)
    if kind == "integer":
        result.setdefault("minimum", -MAX_INT)
        result.setdefault("maximum", MAX_INT)
    if kind == "object" and "additionalProperties" in schema:
        # A mapping's keys are strings of the body too.
        result.setdefault("propertyNames", {"type": "string", **PLAIN_TEXT})
    return result


def _query_parameters(query: Mapping[str, QueryParameter] | type[BaseModel]) -> list[dict[str, Any]]:
    """OpenAPI query parameters from a view's `query`."""
    if isinstance(query, type) and issubclass(query, BaseModel):
        schema = query.model_json_schema(by_alias=True)
        required = set(schema.get("required", []))
        return [{"name": name, "in": "query", "required": name in required,
                 "description": field.pop("description", field.pop("title", name)),
                 "schema": _nullable_dropped(field)}
                for name, field in schema.get("properties", {}).items()]
    parameters = []
    for name, given in query.items():
        description, schema = (given, {"type": "string", "pattern": PLAIN_TEXT["pattern"]}) if isinstance(given, str) else given
        if callable(schema):  # a schema that depends on the data (England's locality codes)
            schema = schema()
        parameters.append({"name": name, "in": "query", "required": False, "description": description, "schema": schema})
    return parameters


def _nullable_dropped(field: dict[str, Any]) -> dict[str, Any]:
    """A model field's schema without pydantic's `null` alternative (a query string cannot send null)."""
    options = [option for option in field.get("anyOf", []) if option.get("type") != "null"]
    if len(options) == 1:
        rest = {key: value for key, value in field.items() if key not in ("anyOf", "default")}
        return {**options[0], **rest}
    return {key: value for key, value in field.items() if key != "default"}


def _schema(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    """A $ref to the model's schema, adding it (and the models it uses) to `components`."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in schema.pop("$defs", {}).items():
        components[name] = enforced(definition)
    components[model.__name__] = enforced(schema)
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _path(rule: str) -> tuple[str, list[dict[str, Any]]]:
    """Flask's `/calls/<int:call_id>` as OpenAPI's `/calls/{call_id}`, with its path parameters."""
    parameters = []
    for converter, name in re.findall(r"<(?:(\w+):)?(\w+)>", rule):
        kind = {"int": "integer", "float": "number"}.get(converter or "", "string")
        schema: dict[str, Any] = {"type": kind}
        if kind == "integer":
            # Every <int:...> is a DatabaseId (security.py): an id outside these bounds matches no route.
            schema.update(minimum=0, maximum=2**31 - 1)
        parameters.append({"name": name, "in": "path", "required": True, "schema": schema})
    return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule), parameters


def describe(app: Any) -> dict[str, Any]:
    """The OpenAPI document for the app's API routes."""
    components: dict[str, Any] = {"Error": ERROR_SCHEMA}
    paths: dict[str, dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda item: item.rule):
        # Every route under /api/, whichever blueprint holds it.
        if not rule.rule.startswith(URL_PREFIX):
            continue
        view = app.view_functions[rule.endpoint]
        info = getattr(view, "openapi", None) or {}
        path, parameters = _path(rule.rule)
        doc = (view.__doc__ or "").strip()
        summary, _, description = doc.partition("\n")
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            operation: dict[str, Any] = {"operationId": rule.endpoint.split(".", 1)[-1] + ("" if method == "GET" else f"_{method.lower()}"),
                                         "summary": summary.strip() or rule.endpoint}
            if description.strip():
                operation["description"] = " ".join(description.split())
            params = list(parameters) + _query_parameters(info.get("query") or {})
            if params:
                operation["parameters"] = params
            if info.get("body") is not None:
                operation["requestBody"] = {"required": True,
                                            "content": {"application/json": {"schema": _schema(info["body"], components)}}}
            responses: dict[str, Any] = {}
            for status, model in (info.get("responses") or {200: "OK"}).items():
                if isinstance(model, str):
                    responses[str(status)] = {"description": model}
                else:
                    responses[str(status)] = {"description": model.__doc__.strip().split("\n")[0] if model.__doc__ else "OK",
                                              "content": {"application/json": {"schema": _schema(model, components)}}}
            standard = [(400, "Invalid request: a value the document does not allow"), (401, "Not logged in"),
                        (403, "Not allowed for this role"), (405, "Method not allowed on this path (see the Allow header)")]
            if info.get("body") is not None:
                standard.append((413, "Body too large"))
            if info.get("body") is not None or info.get("query"):
                standard.append((422, "Keeps to this document, but a value is refused on grounds it cannot state "
                                      "(a phone number that is not one, an unknown locality or id, a period that ends "
                                      "before it starts)"))
            if parameters:
                # An id that names nothing (or nothing this user may know of) is a 404.
                standard.append((404, "No such object"))
            for status, text in standard:
                responses.setdefault(str(status), {"description": text, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
            operation["responses"] = responses
            # Who may call it comes from the one role matrix (helpline/permissions.py), not the decorator.
            roles = permissions.roles_for(rule.endpoint, method)
            if roles:
                operation["x-roles"] = list(roles)
            if permissions.ANONYMOUS in (permissions.access_for(rule.endpoint, method) or {}):
                operation["security"] = []  # open to anyone (the public pages' own API; this document)
            if method not in ("GET",):
                operation["parameters"] = operation.get("parameters", []) + [
                    {"name": "X-CSRFToken", "in": "header", "required": True, "schema": {"type": "string"},
                     "description": "the page's csrf-token meta value"}]
            paths.setdefault(path, {})[method.lower()] = operation
    settings = app.config["HELPLINE"]
    return {
        "openapi": "3.1.0",
        "info": {"title": f"{settings.service.name} console API", "version": "1"},
        "servers": [{"url": settings.public_url}],
        "paths": paths,
        "components": {"schemas": components,
                       "securitySchemes": {"session": {"type": "apiKey", "in": "cookie", "name": app.config.get("SESSION_COOKIE_NAME", "session")}}},
        "security": [{"session": []}],
    }


@routes.get("/openapi.json")
@documented(responses={200: "The OpenAPI document"})
def openapi() -> Response:
    """This description of the console's JSON API (OpenAPI 3.1)."""
    return jsonify(describe(current_app))

