"""The one error policy (helpline/errors.py): a ServiceError becomes the same JSON for the API and for
Twilio's webhooks, werkzeug's errors take that shape too, and a fault of ours is never a stack trace."""

from __future__ import annotations

from flask import Blueprint, Flask, Response
from werkzeug.exceptions import NotFound

from helpline.errors import ServiceError, register_api_errors, register_webhook_errors


def _app() -> Flask:
    app = Flask(__name__)
    api = Blueprint("api", __name__, url_prefix="/api")
    hooks = Blueprint("hooks", __name__, url_prefix="/voice")

    @api.get("/refused")
    def refused() -> Response:
        raise ServiceError("taken", {"slot": 3}, status=409)

    @api.get("/missing")
    def missing() -> Response:
        raise NotFound("no such thing")

    @api.get("/broken")
    def broken() -> Response:
        raise RuntimeError("a secret stack trace")

    @hooks.post("/refused")
    def hook_refused() -> Response:
        raise ServiceError("bad_parameter", "Digits")

    @hooks.post("/broken")
    def hook_broken() -> Response:
        raise RuntimeError("database away")

    register_api_errors(api)
    register_webhook_errors(hooks, lambda exc: Response("<Response><Pause/></Response>", mimetype="text/xml"))
    app.register_blueprint(api)
    app.register_blueprint(hooks)
    return app


def test_api_renders_a_service_error_as_json_with_its_status() -> None:
    client = _app().test_client()
    response = client.get("/api/refused")
    assert response.status_code == 409
    assert response.get_json() == {"error": "taken", "detail": {"slot": 3}}


def test_api_renders_werkzeug_errors_and_faults_in_the_same_shape() -> None:
    client = _app().test_client()
    missing = client.get("/api/missing")
    assert missing.status_code == 404 and missing.get_json() == {"error": "not_found", "detail": "no such thing"}
    broken = client.get("/api/broken")
    assert broken.status_code == 500
    assert broken.get_json()["error"] == "internal_error"
    assert "secret" not in broken.get_data(as_text=True)


def test_webhooks_render_twilio_mistakes_as_json_and_our_faults_their_own_way() -> None:
    client = _app().test_client()
    refused = client.post("/voice/refused")
    assert refused.status_code == 400 and refused.get_json() == {"error": "bad_parameter", "detail": "Digits"}
    broken = client.post("/voice/broken")
    assert broken.status_code == 200 and broken.mimetype == "text/xml"
    assert "database" not in broken.get_data(as_text=True)


def test_code_is_the_message() -> None:
    assert ServiceError("invalid", status=422).code == "invalid"
