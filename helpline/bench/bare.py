"""The yardstick for the saturated benchmark: a bare Flask app that checks Twilio's signature and
returns fixed TwiML, served exactly as `helpline serve` serves the helpline (gunicorn's threaded
worker, one worker per process). Whatever the helpline does beyond this - its database, the IVR,
routing - is the difference between the two figures.

    python -m helpline.bench.bare --port 5099 --auth-token TOKEN --public-url http://127.0.0.1:5099
"""

from __future__ import annotations

import click
from flask import Flask, Response, request
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Gather, VoiceResponse


def fixed_twiml() -> str:
    """One menu: a prompt in a Gather that posts the key back to the same URL, then goodbye."""
    response = VoiceResponse()
    gather = Gather(action="/voice/incoming", method="POST", num_digits=1, timeout=5)
    gather.say("Thank you for calling. Press 1 to continue.", voice="Polly.Amy", language="en-GB")
    response.append(gather)
    response.say("Goodbye.", voice="Polly.Amy", language="en-GB")
    response.hangup()
    return str(response)


def create_bare_app(auth_token: str, public_url: str) -> Flask:
    """A Flask app answering every POST under /voice/ with `fixed_twiml()` once the signature checks out."""
    app = Flask(__name__)
    validator = RequestValidator(auth_token)
    body = fixed_twiml()
    base = public_url.rstrip("/")

    @app.post("/voice/<path:_rest>")
    def answer(_rest: str) -> Response:
        query = request.query_string.decode("latin-1")
        url = f"{base}{request.path}" + (f"?{query}" if query else "")
        if not validator.validate(url, request.form, request.headers.get("X-Twilio-Signature", "")):
            return Response("invalid signature", status=403)
        return Response(body, mimetype="text/xml")

    return app


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", required=True, type=int)
@click.option("--auth-token", required=True)
@click.option("--public-url", required=True)
@click.option("--threads", default=64, show_default=True, type=int)
@click.option("--worker", default="gthread", show_default=True, type=click.Choice(["gthread", "gevent"]),
              help="The gunicorn worker class (the one `helpline serve` uses on the database being compared).")
def main(host: str, port: int, auth_token: str, public_url: str, threads: int, worker: str) -> None:
    """Serve the bare app the way `helpline serve` serves the helpline."""
    from ..server import serve

    serve(lambda: create_bare_app(auth_token, public_url), host, port, worker, threads)


if __name__ == "__main__":
    main()
