"""The console's JSON API (the console's own browser code uses it too).

Each area adds its routes in a module of this package, on this blueprint. Bodies are validated with
pydantic; every error is JSON `{"error", "detail"}` with a 4xx status, never a stack trace.
"""

from __future__ import annotations

import logging
from typing import TypeVar

from flask import Blueprint, Response, request
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import HTTPException

from ..webhooks import error

log = logging.getLogger(__name__)

bp = Blueprint("api", __name__, url_prefix="/api")

M = TypeVar("M", bound=BaseModel)


class BadRequest(Exception):
    """A request the API refuses; becomes a 4xx JSON error."""

    def __init__(self, message: str, detail: object = None, status: int = 400):
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.status = status


def body(model: type[M]) -> M:
    """The request's JSON body, validated against `model`; raises BadRequest saying what is wrong."""
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise BadRequest("bad_json", "send a JSON object with Content-Type: application/json")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        detail = [{"field": ".".join(str(part) for part in problem["loc"]), "problem": problem["msg"]} for problem in exc.errors()]
        raise BadRequest("invalid", detail) from None


@bp.errorhandler(BadRequest)
def _bad_request(exc: BadRequest) -> Response:
    return error(exc.status, exc.message, exc.detail)


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> Response:
    return error(exc.code or 400, exc.name.lower().replace(" ", "_"), exc.description)


@bp.errorhandler(Exception)
def _unexpected(exc: Exception) -> Response:
    log.exception("API %s %s failed", request.method, request.path)
    return error(500, "internal_error", "something went wrong on our side; nothing was changed")
