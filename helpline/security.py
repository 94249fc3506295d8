"""The service's defences that sit around every request: headers, sessions, log-in throttling, log masking.

- Strict security headers and a content security policy on every response; `Cache-Control: no-store`
  on everything but static files, so no page or API answer with personal data lingers in a cache.
- Every request of a logged-in user must find its server-side session record open (staff_sessions.py):
  log-out, a password change, an admin's "sign out everywhere" and the idle and absolute limits end
  it, and every copy of the cookie with it. The cookie is also permanent with the idle lifetime and
  re-signed on each request, so a browser forgets it on its own too. Twilio's requests, which act
  for nobody, open no session at all (`StaffSessionInterface`).
- Log-in lockout per account (`max_failed_logins` wrong passwords or codes in a row pause it for
  `lockout_minutes`), and a throttle per client address counted in the database. Neither holds back a
  browser that has logged in as that user before (a device cookie, after OWASP): 20 guesses from behind
  an office's NAT, or at a colleague's username, must not lock the office out. The database rather
  than Flask-Limiter: Flask-Limiter's in-memory storage gives each process its own count, so with
  several processes it needs Redis, which this service only has when Socket.IO is scaled out; the
  database is shared by every process already, failed log-ins are rare writes, and one less
  dependency is one less thing to patch. Every failure gets the same message, so neither the lockout
  nor the throttle says whether a username exists.
- Every log record is masked of anything that looks like a phone number or an email address before
  any handler sees it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, g, has_request_context, request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from sqlalchemy import func, select, update
from werkzeug.routing import IntegerConverter
from sqlalchemy.orm import Session

from . import audit, softphone
from .db import db
from .errors import http_error
from .masking import mask_personal
from .models import LoginFailure, User, utcnow
from .users import hash_password, password_matches
from .webhooks import check_twilio_request

log = logging.getLogger(__name__)

# -- masking personal data in logs -----------------------------------------------------------------

def _mask_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a malformed record is logging's problem to report, not ours
        return
    masked = mask_personal(message)
    if masked != message:
        record.msg, record.args = masked, None
    if record.exc_info and record.exc_info[0] is not None:
        formatted = logging.Formatter().formatException(record.exc_info)
        masked_exc = mask_personal(formatted)
        if masked_exc != formatted:
            # Formatters use exc_text when it is set, so tracebacks are written masked too.
            record.exc_text = masked_exc
    if has_request_context() and getattr(g, "request_id", None):
        record.request_id = g.request_id


def install_log_masking() -> None:
    """Mask every log record of the process, whichever logger or handler it goes through.

    A record factory rather than a logging.Filter: filters on a logger do not see records propagated
    from child loggers, and handlers added later (gunicorn's, pytest's) would not have one.
    """
    current = logging.getLogRecordFactory()
    if getattr(current, "helpline_masking", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = current(*args, **kwargs)
        _mask_record(record)
        return record

    factory.helpline_masking = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


# -- headers ---------------------------------------------------------------------------------------

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}


def _emulator_origins(api_base_url: str) -> list[str]:
    """The local Twilio emulator's origins, when the service talks to one (the demo)."""
    parts = urlsplit(api_base_url)
    if parts.scheme != "http" or parts.hostname not in LOCAL_HOSTS:
        return []
    return [f"http://{parts.netloc}", f"ws://{parts.netloc}"]


def content_security_policy(app: Flask, page: bool = True) -> str:
    """The policy for a response: this origin only, plus what the softphone needs.

    The WebSocket origins come from the configured public URL, never from the request's Host header,
    which the client chooses: echoed back, it let any caller widen `connect-src` for its own page.

    Only a `page` (HTML) runs the softphone, so only a page's policy names the emulator's signalling
    (which may take a request to the emulator to learn, once a minute); webhooks never wait on it.
    """
    settings = app.config["HELPLINE"]
    public = urlsplit(settings.public_url)
    # Served over https, the socket is wss only; the demo on http may use either.
    connect = ["'self'", f"wss://{public.netloc}"] + ([f"ws://{public.netloc}"] if public.scheme == "http" else [])
    media = ["'self'"]
    emulator = _emulator_origins(settings.twilio.api_base_url)
    connect += emulator
    signalling = None
    if page and (emulator or settings.twilio.signalling_host):
        signalling = softphone.signalling_host(settings.twilio)
    if signalling:
        connect.append(f"wss://{signalling}")
    media += [origin for origin in emulator if origin.startswith("http")]
    if not emulator and settings.twilio.account_sid:
        # Twilio's Voice JS SDK signals over wss to *.twilio.com, reports to eventgw.twilio.com and
        # plays its ringing tones from sdk.twilio.com.
        connect += ["https://*.twilio.com", "wss://*.twilio.com"]
        media += ["https://sdk.twilio.com"]
    directives = {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "media-src": media,
        "connect-src": connect,
        "object-src": ["'none'"],
        "frame-ancestors": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
    }
    return "; ".join(f"{name} {' '.join(values)}" for name, values in directives.items())


def _fixed_headers(app: Flask) -> tuple[str, tuple[tuple[str, str, str], ...]]:
    """The policy of a response that is not a page (a webhook's TwiML, the API's JSON), and the
    headers every response carries (name, value, name in lower case): they depend on the settings
    alone, and are worked out once for them."""
    settings = app.config["HELPLINE"]
    cached = app.extensions.get("helpline.fixed_headers")
    if cached is None or cached[0] is not settings:
        fixed = [
            ("X-Content-Type-Options", "nosniff"),
            ("X-Frame-Options", "DENY"),
            ("Referrer-Policy", "no-referrer"),
            ("Permissions-Policy", "microphone=(self), camera=(), geolocation=(), payment=(), usb=(), display-capture=()"),
            ("Cross-Origin-Opener-Policy", "same-origin"),
            # same-site, not same-origin: the local emulator's dev phone (another port) plays our hold music.
            ("Cross-Origin-Resource-Policy", "same-site"),
        ]
        if settings.public_url.startswith("https://"):
            # No includeSubDomains: the organisation's other hosts are not ours to commit to HTTPS.
            fixed.append(("Strict-Transport-Security", "max-age=31536000"))
        cached = app.extensions["helpline.fixed_headers"] = (
            settings, content_security_policy(app, page=False), tuple((name, value, name.lower()) for name, value in fixed))
    return cached[1], cached[2]


def _set_headers(response: Response) -> Response:
    """Every response's security headers, where the view has not set its own."""
    app = current_app
    headers = response.headers
    policy, fixed = _fixed_headers(app)
    # One pass over the response's headers, not one per header added (werkzeug's setdefault).
    present = {name.lower() for name in headers.keys()}
    if "content-security-policy" not in present:
        page = response.mimetype == "text/html"
        headers.add("Content-Security-Policy", content_security_policy(app, page=True) if page else policy)
    headers.extend([(name, value) for name, value, lower in fixed if lower not in present])
    if not (request.endpoint or "").endswith("static"):
        headers["Cache-Control"] = "no-store"
        if "etag" in present:
            del headers["ETag"]
        if "last-modified" in present:
            del headers["Last-Modified"]
    if getattr(g, "request_id", None):
        headers["X-Request-ID"] = g.request_id
    return response


# -- ids in URLs ----------------------------------------------------------------------------------------


class DatabaseId(IntegerConverter):
    """`<int:...>` in every route, bounded to what the database's integer ids can hold.

    Werkzeug's own accepts any number of digits; /api/calls/99999999999999999999 then fails inside
    the database driver (OverflowError on SQLite, "integer out of range" on PostgreSQL) as a 500.
    Bounded, such a URL matches no route and is a 404 like any other unknown id.
    """

    def __init__(self, map: Any, fixed_digits: int = 0, min: int | None = None, max: int | None = None,  # noqa: A002 - werkzeug's names
                 signed: bool = False) -> None:
        super().__init__(map, fixed_digits=fixed_digits, min=min, max=2**31 - 1 if max is None else max, signed=signed)


# -- request ids and idle sessions -------------------------------------------------------------------

REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


def now() -> float:
    """Seconds since the epoch; tests move it to make a session idle."""
    return time.time()


def _start_request() -> Response | None:
    settings = current_app.config["HELPLINE"]
    # Trust a proxy's request id only when a proxy is configured; otherwise it is the client's word.
    offered = request.headers.get("X-Request-ID", "") if settings.security.proxy_hops else ""
    g.request_id = offered if REQUEST_ID.match(offered) else secrets.token_hex(16)
    return None


def idle_limit_s() -> int:
    """Seconds a console session may go unused before it must log in again."""
    return current_app.config["HELPLINE"].security.session_idle_minutes * 60


# -- log-in lockout and throttle --------------------------------------------------------------------

FAILED_MESSAGE = (
    "That username and password do not match. After {max} failed attempts in a row an account is "
    "paused for {minutes} minutes."
)
THROTTLED_MESSAGE = "Too many failed log-ins from this address. Please wait {minutes} minutes and try again."
#: The cookie that marks a browser that has logged in as someone before (see `trusted_device`).
DEVICE_COOKIE = "helpline_device"
#: How long a device stays trusted after its last log-in.
DEVICE_DAYS = 90


@dataclass(frozen=True)
class LoginOutcome:
    """The result of a log-in attempt: the user on success; otherwise the status and message to show."""

    user: User | None
    status: int = 200
    message: str | None = None


_dummy_hash: str | None = None


def _spend_time_like_a_password_check(password: str) -> None:
    """Check against a throwaway hash, so an unknown username takes as long as a wrong password."""
    global _dummy_hash
    from argon2 import PasswordHasher
    from argon2.exceptions import VerificationError

    if _dummy_hash is None:
        _dummy_hash = hash_password(secrets.token_urlsafe(16))
    try:
        PasswordHasher().verify(_dummy_hash, password)
    except VerificationError:
        pass


def client_address() -> str:
    """The client's address (as ProxyFix rewrote it when proxies are configured)."""
    return request.remote_addr or "unknown"


def address_hash(address: str) -> str:
    """A keyed hash of a client address: enough to count failures from it, useless to identify it."""
    key = str(current_app.config["SECRET_KEY"]).encode()
    return hmac.new(key, b"login address\0" + address.encode(), hashlib.sha256).hexdigest()


def _failure_key(label: str, value: str) -> str:
    key = str(current_app.config["SECRET_KEY"]).encode()
    return hmac.new(key, label.encode() + b"\0" + value.encode(), hashlib.sha256).hexdigest()


def device_key(nonce: str) -> str:
    """The key a trusted device's failed log-ins are counted under (never the address's)."""
    return _failure_key("login device", nonce)


def _device_serializer() -> Any:
    from itsdangerous import URLSafeTimedSerializer

    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt="helpline login device")


def device_cookie_value(user_id: int) -> str:
    """A new device cookie for a browser that has just logged in as `user_id` (signed, not secret)."""
    return _device_serializer().dumps({"u": user_id, "n": secrets.token_urlsafe(16)})


def trusted_device(user: User | None) -> str | None:
    """The nonce of this browser's device cookie when it is valid for `user`, else None.

    OWASP's device cookies: a browser that has logged in as someone is not held back by the throttle
    on its address nor by the pause on the account, both of which an attacker can trigger on purpose
    (from behind the same NAT as a whole office, or by guessing at a colleague's username). The
    cookie's own failures are counted, so a stolen one buys `max_failed_logins` guesses, no more.
    """
    from itsdangerous import BadSignature

    raw = request.cookies.get(DEVICE_COOKIE)
    if user is None or not raw:
        return None
    settings = current_app.config["HELPLINE"].security
    try:
        data = _device_serializer().loads(raw, max_age=DEVICE_DAYS * 86400)
    except BadSignature:
        return None
    if not isinstance(data, dict) or data.get("u") != user.id or not isinstance(data.get("n"), str):
        return None
    moment = utcnow() - dt.timedelta(minutes=settings.lockout_minutes)
    failures = current_session().scalar(select(func.count(LoginFailure.id)).where(
        LoginFailure.address_hash == device_key(data["n"]), LoginFailure.at > moment))
    return data["n"] if failures < settings.max_failed_logins else None


def current_session() -> Session:
    return db.session  # type: ignore[return-value]


def remember_device(response: Response, user_id: int) -> Response:
    """Set the device cookie on the response to a completed log-in (only /login ever reads it)."""
    settings = current_app.config["HELPLINE"]
    response.set_cookie(DEVICE_COOKIE, device_cookie_value(user_id), max_age=DEVICE_DAYS * 86400, path="/login",
                        secure=settings.public_url.startswith("https://"), httponly=True, samesite="Strict")
    return response


def authenticate(session_: Session, username: str, password: str) -> LoginOutcome:
    """Check a username and password, applying the address throttle and the account pause, and audit
    a failure. A success is not yet a log-in (a second factor may follow): the caller audits that.

    Changes (failure counts, pauses, audit entries) are left in `session_` for the caller to commit,
    whatever the outcome. Every refusal but the throttle gets the same 401 and the same words.
    """
    settings = current_app.config["HELPLINE"].security
    moment = utcnow()
    window = dt.timedelta(minutes=settings.lockout_minutes)
    address = client_address()
    hashed_address = address_hash(address)
    failed = LoginOutcome(None, 401, FAILED_MESSAGE.format(max=settings.max_failed_logins, minutes=settings.lockout_minutes))

    username = username.strip().lower()[:64]
    user = session_.scalar(select(User).where(User.username == username))
    device = trusted_device(user)

    if device is None:
        recent = session_.scalar(
            select(func.count(LoginFailure.id)).where(LoginFailure.address_hash == hashed_address, LoginFailure.at > moment - window)
        )
        if recent >= settings.max_failed_logins_per_address:
            audit.record(session_, audit.Actor.anonymous(), "auth.address_throttled", address=address)
            return LoginOutcome(None, 429, THROTTLED_MESSAGE.format(minutes=settings.lockout_minutes))

    def fail(cause: str, who: Any) -> LoginOutcome:
        # A trusted device's failures count against that device alone, not its (shared) address.
        session_.add(LoginFailure(address_hash=device_key(device) if device else hashed_address, at=moment))
        audit.record(session_, who, "auth.login_failed", "user" if user is not None else None,
                     user.id if user is not None else None, cause=cause, address=address, trusted_device=bool(device))
        return failed

    if user is None or not user.active:
        _spend_time_like_a_password_check(password)
        who = audit.Actor.anonymous() if user is None else audit.Actor(user.id, user.role)
        return fail("unknown_user" if user is None else "inactive", who)
    actor = audit.Actor(user.id, user.role)
    if device is None and user.locked_until is not None and user.locked_until > moment:
        _spend_time_like_a_password_check(password)
        return fail("locked", actor)
    if not password_matches(user, password):
        if device is None:
            count_failure(session_, user, actor)
        return fail("password", actor)
    return LoginOutcome(user)


def count_failure(session_: Session, user: User, actor: Any) -> None:
    """One more failure in a row for the account (a wrong password or second-factor code); pause it
    at `max_failed_logins`. One UPDATE, so that concurrent wrong guesses are all counted."""
    settings = current_app.config["HELPLINE"].security
    session_.execute(update(User).where(User.id == user.id).values(failed_logins=User.failed_logins + 1))
    session_.refresh(user, ["failed_logins"])
    if user.failed_logins >= settings.max_failed_logins:
        user.locked_until = utcnow() + dt.timedelta(minutes=settings.lockout_minutes)
        user.failed_logins = 0
        audit.record(session_, actor, "auth.account_locked", "user", user.id, minutes=settings.lockout_minutes)


# -- Twilio's paths ------------------------------------------------------------------------------------

TWILIO_PREFIXES = ("/voice/", "/sms/")


def _guard_unrouted_twilio_paths() -> Response | None:
    """Under /voice/ and /sms/ every request must be signed, even one for a path with no route: an
    unsigned probe gets 403 like any other, never a hint of which paths exist."""
    if request.url_rule is None and request.path.startswith(TWILIO_PREFIXES):
        return check_twilio_request()
    return None


class StaffSessionInterface(SecureCookieSessionInterface):
    """Flask's signed session cookie, for staff in browsers; none is opened for Twilio's requests.

    Under /voice/ and /sms/ a request acts for nobody (its signature is its credential) and Twilio
    sends no cookie: it gets Flask's null session, which holds nothing and sets no cookie, instead
    of a serializer built to find no cookie, and a cookie's settings worked out to set none.
    """

    def open_session(self, app: Flask, request: Any) -> SecureCookieSession | None:
        if request.path.startswith(TWILIO_PREFIXES) and app.config["SESSION_COOKIE_NAME"] not in request.cookies:
            return None
        return super().open_session(app, request)


def _json_errors_for_machines(exc: Any) -> Response | Any:
    """4xx under /voice/, /sms/ and /api/ in the service's JSON error shape, not Flask's HTML page."""
    from werkzeug.exceptions import HTTPException

    if isinstance(exc, HTTPException) and request.path.startswith((*TWILIO_PREFIXES, "/api/")):
        response = http_error(exc)
        allowed = getattr(exc, "valid_methods", None)
        if allowed:
            # RFC 9110: a 405 says which methods the resource does take.
            response.headers["Allow"] = ", ".join(sorted(allowed))
        return response
    return exc


# -- wiring -------------------------------------------------------------------------------------------


def init_app(app: Flask) -> None:
    """Headers, request ids, idle sessions, proxies and log masking for `app`."""
    settings = app.config["HELPLINE"].security
    app.config.update(
        PERMANENT_SESSION_LIFETIME=dt.timedelta(minutes=settings.session_idle_minutes),
        SESSION_REFRESH_EACH_REQUEST=True,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
    )
    if settings.proxy_hops:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.proxy_hops, x_proto=settings.proxy_hops)  # type: ignore[method-assign]
    app.session_interface = StaffSessionInterface()
    install_log_masking()
    app.before_request(_start_request)
    app.before_request(_guard_unrouted_twilio_paths)
    app.after_request(_set_headers)
    for code in (404, 405):
        # Only for requests no blueprint handled: a blueprint's own handlers run first.
        app.register_error_handler(code, _json_errors_for_machines)
