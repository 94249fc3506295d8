"""`POST /voice/client`: the Voice URL of the console softphones' TwiML App.

Twilio's Voice SDK needs a TwiML App before it will register a browser softphone, and sends an
outgoing call from the browser to the app's Voice URL. The helpline never places calls from the
browser (handlers and supervisors are rung by the service; callbacks are placed through the REST
API), so a call that arrives here was not meant to happen: it hears one sentence saying so and is
hung up, and nothing is written. `helpline twilio setup` points the app here.

Like every webhook under /voice/, it takes no log-in but must carry a valid X-Twilio-Signature:
the blueprint runs the same check as voice.py's before any view, and is exempt from CSRF because
Twilio signs its requests instead.
"""

from __future__ import annotations

from flask import Blueprint, Flask, Response, current_app

from .ivr import twiml
from .webhooks import check_twilio_request
from . import permissions
from .auth import csrf

bp = Blueprint("voice_client", __name__, url_prefix="/voice")
bp.before_request(check_twilio_request)

#: What an outgoing call from a console softphone hears before it is hung up.
NOT_FROM_THE_CONSOLE = "The helpline console cannot place calls. Goodbye."


@bp.post("/client")
def client() -> Response:
    """An outgoing call from a softphone: say that the console cannot place calls, and hang up."""
    twilio = current_app.config["HELPLINE"].twilio
    return Response(twiml.speak_and_hang_up(twiml.Voice(twilio.voice, twilio.language), NOT_FROM_THE_CONSOLE),
                    mimetype="text/xml")


def init_app(app: Flask) -> None:
    """Serve the webhook, exempt it from CSRF, and give it its line in the role matrix.

    The role matrix refuses any endpoint it does not list (fail closed); this route's line is added
    here, beside the route, as Twilio's (signed, no console user), the same access every webhook has.
    """
    app.register_blueprint(bp)
    csrf.exempt(bp)
    permissions.ROUTES.setdefault((f"{bp.name}.client", "POST"), permissions.WEBHOOK)
