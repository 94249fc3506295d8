"""`GET /api/openapi.json`: an OpenAPI 3.1 description of every route under `/api/`.

It is built from the app's URL map when asked, so a route added by any module appears without being
listed here. A view may say more with `@documented(...)`: its request body and responses as pydantic
models (their JSON Schemas go under components). The roles that may call it (`x-roles`) come from
the role matrix in helpline/permissions.py. Undecorated views are described by their docstring and path.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping, TypeVar

from flask import Response, current_app, jsonify
from pydantic import BaseModel

from .. import permissions
from . import URL_PREFIX, Routes

routes = Routes()

F = TypeVar("F", bound=Callable[..., object])

#: The error body every 4xx and 5xx takes.
ERROR_SCHEMA = {
    "type": "object",
    "required": ["error", "detail"],
    "properties": {"error": {"type": "string"}, "detail": {}},
}


def documented(
    body: type[BaseModel] | None = None,
    responses: Mapping[int, type[BaseModel] | str] | None = None,
    roles: tuple[str, ...] = (),
    query: Mapping[str, str] | None = None,
) -> Callable[[F], F]:
    """Describe a view for /api/openapi.json: its JSON body, its responses, who may call it, its query."""

    def mark(view: F) -> F:
        view.__dict__["openapi"] = {"body": body, "responses": dict(responses or {}), "roles": roles, "query": dict(query or {})}
        return view

    return mark


def _schema(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    """A $ref to the model's schema, adding it (and the models it uses) to `components`."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in schema.pop("$defs", {}).items():
        components[name] = definition
    components[model.__name__] = schema
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
            params = list(parameters) + [
                {"name": name, "in": "query", "required": False, "description": text, "schema": {"type": "string"}}
                for name, text in info.get("query", {}).items()
            ]
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
            standard = [(400, "Invalid request"), (401, "Not logged in"), (403, "Not allowed for this role")]
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

