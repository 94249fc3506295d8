"""Outgoing email, for real: SMTP through `smtplib` to the server `HELPLINE_SMTP_URL` names.

    HELPLINE_SMTP_URL=smtp://user:password@mail.example.org:587   (STARTTLS when the server offers it)
    HELPLINE_SMTP_URL=smtps://user:password@mail.example.org:465  (TLS from the start)
    HELPLINE_MAIL_FROM="Helpline <no-reply@example.org>"          (default: no-reply@ the public URL's host)

With none configured and the local Twilio emulator standing in for Twilio (the demo and the tests),
mail goes to the small SMTP server the emulator runs beside itself (aiosmtpd), and its dev phone
shows what it caught, as it shows texts. With neither, nothing is sent and the log says so.

Emails are discreet: their subject and first lines never name a mental health or addiction service,
since a shared inbox or a lock screen may show them.
"""

from __future__ import annotations

import logging
import os
import smtplib
import ssl
import time
from email.message import EmailMessage
from email.utils import make_msgid
from typing import NamedTuple
from urllib.parse import unquote, urlsplit

import requests
from flask import current_app

log = logging.getLogger(__name__)

#: Seconds an SMTP conversation may take before the send is given up (and logged).
SMTP_TIMEOUT_S = 10
#: How long what the emulator reported about its SMTP server is trusted.
DISCOVERY_TTL_S = 60
_discovered: dict[str, tuple[float, str | None]] = {}


class MailUnavailable(Exception):
    """Mail could not be sent; the message says why (fit for a handler to read)."""


class Server(NamedTuple):
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None


def parse_smtp_url(url: str) -> Server:
    """`smtp://[user:pass@]host[:port]` or `smtps://...` as a Server; ValueError naming the problem."""
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ValueError("must look like smtp://user:password@host:587 or smtps://host:465")
    tls = parts.scheme == "smtps"
    return Server(parts.hostname, parts.port or (465 if tls else 587 if parts.username else 25), tls,
                  unquote(parts.username) if parts.username else None,
                  unquote(parts.password) if parts.password else None)


def _emulator_catcher() -> str | None:
    """`host:port` of the emulator's mail catcher, when the service talks to a local emulator."""
    from .security import _emulator_origins

    twilio = current_app.config["HELPLINE"].twilio
    if not _emulator_origins(twilio.api_base_url):
        return None
    base = twilio.api_base_url.rstrip("/")
    now = time.monotonic()
    known = _discovered.get(base)
    if known is not None and now - known[0] < DISCOVERY_TTL_S:
        return known[1]
    found = None
    try:
        answer = requests.get(f"{base}/emulator/health", timeout=2)
        if answer.ok:
            reported = answer.json().get("smtp")
            found = reported if isinstance(reported, str) and reported else None
    except (requests.RequestException, ValueError):
        log.warning("could not ask the Twilio emulator at %s where its mail catcher is", base)
    _discovered[base] = (now, found)
    return found


def check_configuration() -> None:
    """Refuse to start with a HELPLINE_SMTP_URL that cannot be used (one clear line, as for any setting)."""
    from .config import ConfigError

    url = os.environ.get("HELPLINE_SMTP_URL", "").strip()
    if url:
        try:
            parse_smtp_url(url)
        except ValueError as exc:
            raise ConfigError([f"config: HELPLINE_SMTP_URL: {exc}"]) from None


def server() -> Server | None:
    """Where mail goes: HELPLINE_SMTP_URL, else the emulator's catcher, else None."""
    url = os.environ.get("HELPLINE_SMTP_URL", "").strip()
    if url:
        try:
            return parse_smtp_url(url)
        except ValueError as exc:
            raise MailUnavailable(str(exc)) from None
    catcher = _emulator_catcher()
    if catcher:
        host, _, port = catcher.rpartition(":")
        return Server(host, int(port), False, None, None)
    return None


def sender() -> str:
    """The From address: HELPLINE_MAIL_FROM, else no-reply at the public URL's host."""
    configured = os.environ.get("HELPLINE_MAIL_FROM", "").strip()
    if configured:
        return configured
    host = urlsplit(current_app.config["HELPLINE"].public_url).hostname or "localhost"
    return f"no-reply@{host if '.' in host else host + '.localdomain'}"


def send(to: str, subject: str, body: str, reply_to: str | None = None) -> str:
    """Send a plain-text email; returns its Message-ID. Raises MailUnavailable when it cannot be sent."""
    target = server()
    if target is None:
        raise MailUnavailable("no mail server is configured (HELPLINE_SMTP_URL)")
    message = EmailMessage()
    message["From"] = sender()
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = make_msgid(domain=sender().rpartition("@")[2].strip(">") or None)
    if reply_to:
        message["Reply-To"] = reply_to
    message.set_content(body)
    try:
        if target.tls:
            client: smtplib.SMTP = smtplib.SMTP_SSL(target.host, target.port, timeout=SMTP_TIMEOUT_S,
                                                    context=ssl.create_default_context())
        else:
            client = smtplib.SMTP(target.host, target.port, timeout=SMTP_TIMEOUT_S)
        with client:
            client.ehlo()
            if not target.tls and client.has_extn("starttls"):
                client.starttls(context=ssl.create_default_context())
                client.ehlo()
            if target.username:
                client.login(target.username, target.password or "")
            client.send_message(message)
    except (OSError, smtplib.SMTPException) as exc:
        raise MailUnavailable(f"the mail server did not take the message ({exc.__class__.__name__})") from None
    return str(message["Message-ID"])


def send_confirmation(to: str, reference: str) -> bool:
    """The discreet confirmation of a web request answered by email; False (logged) if it could not go."""
    body = (
        "Hello,\n\n"
        f"Thank you for getting in touch. We have your request (reference {reference}) and will reply to this "
        "address while we are open.\n\n"
        "If you need help urgently, call 999, or Samaritans free on 116 123 at any hour.\n"
    )
    try:
        send(to, f"Your request {reference}", body)
        return True
    except MailUnavailable as exc:
        log.warning("confirmation email for a web request not sent: %s", exc)
        return False
