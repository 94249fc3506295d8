"""Twilio's side of the door: signature checks, bad-request answers, and replaying retried webhooks.

Every request under /voice/ and /sms/ must carry a valid `X-Twilio-Signature` for the public URL plus
path and query; anything else is refused with 403 before a single row is read or written. A webhook's
TwiML reply is stored in the same transaction as the changes the webhook made, so when Twilio retries
it the caller hears the same thing and nothing happens twice.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import re
from typing import Callable

from flask import Response, current_app, request
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from .db import append, db
from .errors import error
from .models import WebhookReply

log = logging.getLogger(__name__)

CALL_SID = re.compile(r"^CA[0-9a-fA-F]{32}$")
#: Twilio's own limit on parameter values is far below this; anything longer is not from Twilio.
MAX_VALUE_LENGTH = 4096


def public_request_url() -> str:
    """The URL Twilio signed: the configured public base, then this request's path and query."""
    base = current_app.config["HELPLINE"].public_url
    query = request.query_string.decode("latin-1")
    return f"{base}{request.path}" + (f"?{query}" if query else "")


def signature_is_valid() -> bool:
    """Whether the request carries Twilio's signature for our public URL and auth token."""
    signature = request.headers.get("X-Twilio-Signature", "")
    token = current_app.config["HELPLINE_TWILIO_AUTH_TOKEN"]
    if not signature or not token:
        return False
    params = request.form if request.method == "POST" else {}
    validator, url = RequestValidator(token), public_request_url()
    # Twilio signs the URL as configured, which is ours exactly: one HMAC settles nearly every
    # request. The library's check, which also tries the URL with and without its port (two more
    # HMACs on every webhook), is the fallback.
    if hmac.compare_digest(validator.compute_signature(url, params).encode(), signature.encode()):
        return True
    return validator.validate(url, params, signature)


def check_twilio_request() -> Response | None:
    """Refuse unsigned or malformed Twilio requests; None lets the request through.

    Registered as a `before_request` on the voice and SMS blueprints, so no view can forget it.
    """
    if not signature_is_valid():
        log.warning("refused a request to %s without a valid Twilio signature", request.path)
        return error(403, "invalid_signature", "the request is not signed by Twilio for this URL")
    for key, values in request.form.lists():
        if len(values) > 1:
            return error(400, "repeated_parameter", key)
        if len(values[0]) > MAX_VALUE_LENGTH or "\x00" in values[0]:
            return error(400, "bad_parameter", key)
    return None


def require_call_sid() -> str | Response:
    """The request's CallSid, or a 400 response when it is missing or not a Twilio call SID."""
    sid = request.form.get("CallSid", "")
    if not CALL_SID.match(sid):
        return error(400, "bad_call_sid", "CallSid must be a Twilio call SID")
    return sid


def _request_key(call_sid: str) -> str:
    digest = hashlib.sha256()
    digest.update(request.method.encode())
    digest.update(b"\0" + request.full_path.encode())
    for key, value in sorted(request.form.items()):  # one value a key: check_twilio_request refuses more
        digest.update(b"\0" + key.encode() + b"=" + value.encode())
    digest.update(b"\0" + call_sid.encode())
    return digest.hexdigest()


def idempotent_twiml(view: Callable[..., str]) -> Callable[..., Response]:
    """Run a TwiML view once per distinct request; a retried request gets the stored reply.

    The view returns TwiML text and leaves committing to this wrapper, which stores the reply and
    commits both together (on PostgreSQL the reply's INSERT, the call's new timeline lines and the
    call's changes go with the COMMIT: one round trip, see db.ServiceSession). The reply's key is
    unique, so the wrapper does not look for a stored reply first (a query on every webhook, for
    the rare retry): it runs the view, and if the commit finds the key taken, or the view fails,
    it rolls the view's changes back and answers with the reply stored for the first of the two,
    if there is one. Views change nothing outside the transaction (announcements wait for the
    commit), so a retry run and rolled back leaves no trace.
    """

    @functools.wraps(view)
    def wrapper(*args: object, **kwargs: object) -> Response:
        sid = require_call_sid()
        if isinstance(sid, Response):
            return sid
        key = _request_key(sid)
        session = db.session()
        try:
            body = view(*args, call_sid=sid, **kwargs)
            append(session, WebhookReply, call_sid=sid, request_key=key, body=body)
            session.commit()
        except Exception:
            # A retry (or the same request racing us) whose first run committed: its reply is the
            # one the caller got. Anything else is a real failure, for the blueprint's error handler.
            session.rollback()
            stored = session.scalar(select(WebhookReply).where(WebhookReply.request_key == key))
            if stored is None:
                raise
            return Response(stored.body, status=stored.status, mimetype="text/xml")
        return Response(body, mimetype="text/xml")

    return wrapper
