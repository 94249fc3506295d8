"""The practitioner helpline: a confidential self-referral line for doctors and dentists in England.

`create_app` builds the Flask app; importing the package does nothing else. The start-up sequence
reads top to bottom in `create_app`: configuration, flow, keys, database, then each area's routes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from flask import Flask

    from .config import Settings


def create_app(overrides: Mapping[str, Any] | None = None, settings: Settings | None = None) -> Flask:
    """Build the service. Raises ConfigError or FlowError, with one line per problem, if it cannot start."""
    # Imported here, not at the top: `helpline serve`'s gunicorn master imports this package but
    # never builds the app (its worker does, see server.py), and should not carry what the app needs.
    import handler_console
    from flask import Flask

    from . import (api, auth, connect, health, oidc, permissions, public, realtime, risk, routing, scheduler, security,
                   security_keys, staff_sessions, supervision, twilio_rest, voice, voice_client)
    from .api import (audit as api_audit, bookings, calls, clinician, contacts, localities, me, openapi,
                      questionnaires, queue, reports, self_referrals, signposting, supervisor, users)
    from .config import load_settings
    from .crypto import Vault
    from .db import db
    from .hours import OpeningHours
    from .instance import demo_secret, random_token
    from .ivr.engine import Interpreter
    from .ivr.flow import load_flow

    settings = settings or load_settings(overrides)
    flow = load_flow(settings.flow_path)
    app = Flask(__name__, instance_path=settings.instance_path)
    # Before any route is added: every <int:id> is bounded to what the database holds (security.py).
    app.url_map.converters["int"] = security.DatabaseId
    secret_key = settings.secret_key or demo_secret(settings.instance_path, "secret.key", random_token)
    encryption_key = settings.encryption_key or demo_secret(settings.instance_path, "encryption.key", Vault.generate_key)
    app.config.update(
        HELPLINE=settings,
        HELPLINE_TWILIO_AUTH_TOKEN=settings.twilio.auth_token,
        SECRET_KEY=secret_key,
        MAX_CONTENT_LENGTH=256 * 1024,
        JSON_SORT_KEYS=False,
    )
    vault = Vault(encryption_key)
    app.extensions["helpline.vault"] = vault
    app.extensions["helpline.ivr"] = Interpreter(flow, settings, OpeningHours.from_settings(settings.opening_hours), vault)

    db.init_app(app)
    twilio_rest.init_app(app)
    app.register_blueprint(voice.bp)
    # Request hooks run in the order they are added: the request's id first, then the session check
    # (an ended session is nobody), then the role matrix's gate (nobody gets 401, the wrong role 403),
    # and only then the CSRF check, so that a write without a log-in is told to log in rather than
    # "CSRF failed".
    security.init_app(app)
    staff_sessions.init_app(app)
    permissions.init_app(app)
    auth.init_app(app)
    auth.csrf.exempt(voice.bp)  # Twilio signs its requests instead
    oidc.init_app(app)  # sign-in through an identity provider: its routes, and its client when configured
    security_keys.init_app(app)  # security keys as the second factor
    voice_client.init_app(app)  # POST /voice/client, the Voice URL of the softphones' TwiML App
    connect.init_app(app)
    app.register_blueprint(api.blueprint(
        openapi.routes, me.routes, security_keys.api_routes, localities.routes, queue.routes, calls.routes,
        contacts.routes, signposting.routes, bookings.routes, clinician.routes, questionnaires.routes,
        supervisor.routes, reports.routes, users.routes, api_audit.routes, self_referrals.routes,
    ))
    routing.init_app(app)
    realtime.init_app(app)
    risk.init_app(app)
    supervision.init_app(app)
    scheduler.init_scheduler(app)
    health.init_app(app)
    handler_console.init_app(app)
    public.init_app(app)  # the public pages, and `/`
    return app
