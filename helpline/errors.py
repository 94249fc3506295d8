"""The service's one error policy: what a refused request is, and how each kind of client is told.

A view (or anything it calls) that refuses a request raises `ServiceError` with a code, a detail and
an HTTP status; it never builds an error response itself. The error is then rendered in one of two
ways, chosen by who asked:

- the JSON API (`/api/...`, and the console's other JSON answers): `{"error": code, "detail": ...}`
  with the status, the one shape every 4xx of the service takes (`api_response`);
- Twilio's webhooks (`/voice/...`, connect, supervision): the same JSON shape for a request that is
  Twilio's fault (a bad signature, a malformed parameter), which Twilio logs and does not retry; a
  fault of ours is answered with TwiML by the webhook blueprint itself, so that no caller loses
  their call to it (`register_webhook_errors`).

Errors raised by Flask and werkzeug (404, 405, 413...) take the same shape (`http_error`), and
nothing unexpected ever reaches a client as a stack trace.
"""

from __future__ import annotations

import logging
from typing import Callable

from flask import Blueprint, Response, jsonify, request
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class ServiceError(Exception):
    """A request the service refuses: `code` names the problem, `detail` says more, `status` is the HTTP status.

    `message` is the code under the name the API's callers have always used for it.
    """

    def __init__(self, message: str, detail: object = None, status: int = 400):
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.status = status

    @property
    def code(self) -> str:
        """The machine-readable name of the problem: the body's `error`."""
        return self.message


def error(status: int, message: str, detail: object = None) -> Response:
    """A JSON error body, the one shape every 4xx of the service takes."""
    response = jsonify({"error": message, "detail": detail})
    response.status_code = status
    return response


def api_response(exc: ServiceError) -> Response:
    """A ServiceError as the JSON API answers it."""
    return error(exc.status, exc.message, exc.detail)


def http_error(exc: HTTPException) -> Response:
    """An error werkzeug raised (404, 405, 413, a bad form...) in the service's JSON shape, not an HTML page."""
    return error(exc.code or 400, (exc.name or "error").lower().replace(" ", "_"), exc.description)


def internal_error() -> Response:
    """The answer to a fault of ours: a 500 that says nothing was changed, never a stack trace."""
    return error(500, "internal_error", "something went wrong on our side; nothing was changed")


def _register_refusals(bp: Blueprint) -> None:
    """A refused request (ours, or werkzeug's) under `bp` as `{"error", "detail"}` with its 4xx status."""
    bp.register_error_handler(ServiceError, api_response)
    bp.register_error_handler(HTTPException, http_error)


def register_api_errors(bp: Blueprint) -> None:
    """Render every error raised under the JSON API blueprint `bp` as `{"error", "detail"}`."""
    _register_refusals(bp)

    @bp.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("API %s %s failed", request.method, request.path)
        return internal_error()


def register_webhook_errors(bp: Blueprint, unexpected: Callable[[Exception], Response]) -> None:
    """Render errors under a Twilio webhook blueprint `bp`: Twilio's mistakes as JSON 4xx, ours by `unexpected`.

    `unexpected` is the blueprint's own answer to a fault of ours (TwiML that keeps the caller on
    the line, or a 204 for a status callback kept for replay): what a caller hears is the webhook's
    business, not this module's.
    """

    _register_refusals(bp)
    bp.register_error_handler(Exception, unexpected)
