"""The emulator's Flask application factory."""

from __future__ import annotations

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from .config import EmulatorConfig
from .engine import Emulator


def create_app(config: EmulatorConfig | None = None, emulator: Emulator | None = None) -> Flask:
    """Build the app serving Twilio's REST API, the control API and the dev phone page."""
    from . import control, devphone, rest

    app = Flask(__name__)
    app.config["JSON_SORT_KEYS"] = False
    engine = emulator or Emulator(config or EmulatorConfig())
    app.extensions["emulator"] = engine
    app.register_blueprint(rest.bp)
    from . import rest_account  # the account, its TwiML Apps and its number (helpline twilio setup/check)
    app.register_blueprint(rest_account.bp)
    app.register_blueprint(control.bp)
    app.register_blueprint(devphone.bp)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        """JSON errors for the APIs (Twilio's shape under /2010-04-01), never an HTML page."""
        if request.path.startswith("/2010-04-01"):
            return rest.twilio_error(exc.code or 500, 20000 + (exc.code or 500), exc.description or exc.name)
        response = jsonify({"error": exc.name.lower().replace(" ", "_"), "detail": exc.description})
        response.status_code = exc.code or 500
        return response

    return app
