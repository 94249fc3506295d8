"""`helpline twilio setup` and `helpline twilio check`: a Twilio account made ready by one command.

A deployment needs three things at Twilio besides its credentials: the helpline number pointing its
Voice URL and status callback at the service, an API key for the softphones' access tokens, and a
TwiML App the tokens name (the Voice SDK will not register without one). Set by hand in Twilio's
console, any of them is easy to get subtly wrong, and the symptom is a number that rings out or a
softphone that never rings. So `setup` makes the account match the configuration through the REST
API, idempotently, and `check` says in plain words what is missing or wrong, one line per item.

Both use the same REST client as the service (`twilio_rest.TwilioGateway`: the `twilio` library with
its base URL from TWILIO_API_BASE_URL), so against the local emulator they run, and are tested,
with no Twilio account. Neither ever prints a secret (auth token, API key secret).
"""

from __future__ import annotations

import ipaddress
import json
import sys
from dataclasses import dataclass
from typing import Any, Callable, TypeVar
from urllib.parse import urlsplit

import click

from .config import Settings, load_settings
from .twilio_rest import TIMEOUT_S, TwilioGateway

#: How the TwiML App for the console softphones is named at Twilio; `setup` finds it again by this name.
FRIENDLY_NAME = "Helpline console softphones"
#: Twilio's own API; anything else (the emulator) keeps no API keys to look up.
TWILIO_API = "https://api.twilio.com"
#: Seconds the public URL's /healthz may take to answer.
HEALTH_TIMEOUT_S = 5.0

T = TypeVar("T")


@dataclass(frozen=True)
class Targets:
    """Where Twilio should send requests, from HELPLINE_PUBLIC_URL."""

    incoming: str
    status: str
    client: str

    @classmethod
    def from_settings(cls, settings: Settings) -> "Targets":
        base = settings.public_url
        return cls(incoming=f"{base}/voice/incoming", status=f"{base}/voice/status", client=f"{base}/voice/client")


class Refused(Exception):
    """Twilio refused a request or could not be reached; the message is one line, safe to print."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def _is_real_twilio(settings: Settings) -> bool:
    return settings.twilio.api_base_url.rstrip("/") == TWILIO_API


def _client(settings: Settings) -> Any:
    """The service's own Twilio REST client (same base URL, same timeout)."""
    return TwilioGateway(settings).client


def _call(settings: Settings, what: str, action: Callable[[], T]) -> T:
    """Run one REST request; a refusal or a network failure becomes `Refused` with a plain line."""
    from twilio.base.exceptions import TwilioException, TwilioRestException

    try:
        return action()
    except TwilioRestException as exc:
        raise _refused(settings, what, exc.status, exc.code, exc.msg) from None
    except TwilioException as exc:
        # A list whose page is refused raises a bare TwilioException carrying the HTTP response.
        response = exc.args[1] if len(exc.args) > 1 else None
        status = getattr(response, "status_code", None)
        if status is None:
            raise Refused(f"could not reach Twilio's API at {settings.twilio.api_base_url} to {what} "
                          f"({type(exc).__name__})") from None
        try:
            body = json.loads(getattr(response, "text", "") or "{}")
        except ValueError:
            body = {}
        body = body if isinstance(body, dict) else {}
        raise _refused(settings, what, status, body.get("code"), body.get("message")) from None
    except OSError as exc:
        raise Refused(f"could not reach Twilio's API at {settings.twilio.api_base_url} to {what} "
                      f"({type(exc).__name__})") from None


def _refused(settings: Settings, what: str, status: int, code: int | None, message: str | None) -> Refused:
    """One plain line for a request Twilio answered with an error (401 names the credentials to check)."""
    if status == 401:
        return Refused(f"Twilio refused account {settings.twilio.account_sid} with this auth token "
                       f"(error {code or 401}): check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN", 401)
    detail = str(message).strip().splitlines()[0] if message else f"HTTP {status}"
    return Refused(f"Twilio refused to {what}: {detail} (error {code or status})", status)


def _local_address(url: str) -> bool:
    """Whether `url` names this machine or a private network, which Twilio cannot reach."""
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_private or address.is_loopback or address.is_link_local


def _shown(value: str | None) -> str:
    return value if value else "(none)"


# ---------------------------------------------------------------------- finding things

def find_app(settings: Settings, client: Any) -> Any | None:
    """The softphones' TwiML App: the one TWILIO_TWIML_APP_SID names, else the first by friendly name."""
    sid = settings.twilio.twiml_app_sid
    if sid:
        try:
            return _call(settings, "fetch the TwiML App", lambda: client.applications(sid).fetch())
        except Refused as exc:
            if exc.status != 404:
                raise
    apps = _call(settings, "list the TwiML Apps",
                 lambda: client.applications.list(friendly_name=FRIENDLY_NAME, limit=20))
    return apps[0] if apps else None


def find_number(settings: Settings, client: Any) -> Any | None:
    """The account's IncomingPhoneNumber for TWILIO_PHONE_NUMBER, or None when the account has no such number."""
    wanted = settings.twilio.phone_number or ""
    numbers = _call(settings, "list the account's numbers",
                    lambda: client.incoming_phone_numbers.list(phone_number=wanted, limit=50))
    return next((number for number in numbers if number.phone_number == wanted), None)


def number_changes(number: Any, targets: Targets) -> dict[str, tuple[str, Any, str]]:
    """What the number needs changed: REST field -> (plain name, what it is now, what it must be).

    A number that names a TwiML App ignores its own Voice URL at Twilio, so such a link is undone.
    """
    wanted = {
        "voice_url": ("Voice URL", number.voice_url, targets.incoming),
        "voice_method": ("Voice URL method", number.voice_method, "POST"),
        "status_callback": ("status callback", number.status_callback, targets.status),
        "status_callback_method": ("status callback method", number.status_callback_method, "POST"),
        "voice_application_sid": ("TwiML App answering instead of its Voice URL", number.voice_application_sid, ""),
    }
    return {field: change for field, change in wanted.items() if (change[1] or "") != change[2]}


def app_changes(app: Any, targets: Targets) -> dict[str, tuple[str, Any, str]]:
    """What the TwiML App needs changed, in the same shape as `number_changes`."""
    wanted = {
        "voice_url": ("Voice URL", app.voice_url, targets.client),
        "voice_method": ("Voice URL method", app.voice_method, "POST"),
    }
    return {field: change for field, change in wanted.items() if (change[1] or "") != change[2]}


def _require_credentials(settings: Settings) -> None:
    twilio = settings.twilio
    missing = [name for name, value in (("TWILIO_ACCOUNT_SID", twilio.account_sid),
                                        ("TWILIO_AUTH_TOKEN", twilio.auth_token),
                                        ("TWILIO_PHONE_NUMBER", twilio.phone_number)) if not value]
    if missing:
        named = missing[0] if len(missing) == 1 else f"{', '.join(missing[:-1])} and {missing[-1]}"
        raise click.ClickException(f"{named} {'is' if len(missing) == 1 else 'are'} not set: "
                                   "set the Twilio account's credentials and the helpline number first")


# ---------------------------------------------------------------------- setup

def run_setup(settings: Settings) -> list[str]:
    """Make the account match the configuration; returns the lines to print. Raises Refused."""
    _require_credentials(settings)
    targets = Targets.from_settings(settings)
    if _is_real_twilio(settings) and _local_address(settings.public_url):
        raise click.ClickException(f"HELPLINE_PUBLIC_URL is {settings.public_url}, an address Twilio cannot reach: "
                                   "set it to the service's public https address first")
    client = _client(settings)
    phone = settings.twilio.phone_number
    # The number first: if the account does not have it, nothing is changed at all.
    number = find_number(settings, client)
    if number is None:
        raise Refused(f"{phone} is not a number on Twilio account {settings.twilio.account_sid}: "
                      "check TWILIO_PHONE_NUMBER (E.164, e.g. +441134960000), or buy or port the number there")
    lines: list[str] = []

    app = find_app(settings, client)
    if app is None:
        app = _call(settings, "create the TwiML App", lambda: client.applications.create(
            friendly_name=FRIENDLY_NAME, voice_url=targets.client, voice_method="POST"))
        lines.append(f"created the TwiML App \"{FRIENDLY_NAME}\" ({app.sid}), Voice URL POST {targets.client}")
    else:
        changes = app_changes(app, targets)
        if changes:
            _call(settings, "update the TwiML App", lambda: client.applications(app.sid).update(
                **{field: new for field, (_, _, new) in changes.items()}))
            lines += [f"changed the TwiML App {app.sid}'s {name} from {_shown(old)} to {new}"
                      for name, old, new in changes.values()]

    changes = number_changes(number, targets)
    if changes:
        _call(settings, f"update the number {phone}", lambda: client.incoming_phone_numbers(number.sid).update(
            **{field: new for field, (_, _, new) in changes.items()}))
        lines += [f"changed the number {phone}'s {name} from {_shown(old)} to {_shown(new)}"
                  for name, old, new in changes.values()]

    if not lines:
        lines.append(f"nothing to change: the TwiML App {app.sid} and the number {phone} already point at "
                     f"{settings.public_url}")
    if settings.twilio.twiml_app_sid == app.sid:
        lines.append(f"TWILIO_TWIML_APP_SID is already {app.sid}")
    else:
        lines.append(f"now set TWILIO_TWIML_APP_SID={app.sid} in the service's environment "
                     "(the softphones' access tokens name it), and restart the service")
    return lines


# ---------------------------------------------------------------------- check

@dataclass
class Finding:
    """One line of `check`: an item, whether it is right (None: could not be checked), and why."""

    item: str
    ok: bool | None
    text: str

    def line(self) -> str:
        mark = {True: "ok", False: "PROBLEM", None: "skipped"}[self.ok]
        return f"{mark:<8} {self.item}: {self.text}"


def _check_credentials(settings: Settings) -> tuple[Finding, Any | None]:
    twilio = settings.twilio
    if not (twilio.account_sid and twilio.auth_token):
        return Finding("credentials", False, "TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN are not set"), None
    client = _client(settings)
    try:
        account = _call(settings, "fetch the account", lambda: client.api.v2010.accounts(twilio.account_sid).fetch())
    except Refused as exc:
        return Finding("credentials", False, str(exc)), None
    if account.status != "active":
        return Finding("credentials", False, f"account {twilio.account_sid} is {account.status}, not active"), None
    return Finding("credentials", True, f"Twilio accepts account {twilio.account_sid} and its auth token"), client


def _check_api_key(settings: Settings, client: Any | None) -> Finding:
    twilio = settings.twilio
    if not (twilio.api_key_sid and twilio.api_key_secret):
        return Finding("API key", False, "TWILIO_API_KEY_SID and TWILIO_API_KEY_SECRET are not set: the console "
                                          "softphones cannot get access tokens (create a key in Twilio's console)")
    if not _is_real_twilio(settings):
        return Finding("API key", True,
                       f"{twilio.api_key_sid} is set (the emulator keeps no API keys to look it up in)")
    if client is None:
        return Finding("API key", None, f"{twilio.api_key_sid} is set; not looked up until the credentials work")
    from twilio.http.http_client import TwilioHttpClient
    from twilio.rest import Client

    # Authenticating with the key itself shows both that it exists and that the secret is its own.
    as_key = Client(twilio.api_key_sid, twilio.api_key_secret, twilio.account_sid,
                    http_client=TwilioHttpClient(timeout=TIMEOUT_S))
    as_key.api.base_url = twilio.api_base_url
    try:
        _call(settings, "fetch the account with the API key",
              lambda: as_key.api.v2010.accounts(twilio.account_sid).fetch())
    except Refused as exc:
        if exc.status == 401:
            return Finding("API key", False,
                           f"Twilio refused API key {twilio.api_key_sid} with this secret: the key does not "
                           "exist on the account, or TWILIO_API_KEY_SECRET is not its secret")
        return Finding("API key", False, str(exc))
    return Finding("API key", True, f"Twilio accepts API key {twilio.api_key_sid} and its secret")


def _check_app(settings: Settings, client: Any | None, targets: Targets) -> Finding:
    configured = settings.twilio.twiml_app_sid
    if client is None:
        return Finding("TwiML App", None, "not checked until the credentials work")
    try:
        app = find_app(settings, client)
    except Refused as exc:
        return Finding("TwiML App", False, str(exc))
    if app is None:
        missing = f"TWILIO_TWIML_APP_SID {configured} is not a TwiML App on the account" if configured else \
            f"there is no TwiML App \"{FRIENDLY_NAME}\""
        return Finding("TwiML App", False, f"{missing}: run `helpline twilio setup`")
    problems = [f"its {name} is {_shown(old)}, not {new}" for name, old, new in app_changes(app, targets).values()]
    if not configured:
        problems.append(f"TWILIO_TWIML_APP_SID is not set: set it to {app.sid}")
    elif configured != app.sid:
        problems.append(f"TWILIO_TWIML_APP_SID {configured} is not a TwiML App on the account: set it to {app.sid}")
    if problems:
        return Finding("TwiML App", False, f"{app.sid}: " + "; ".join(problems))
    return Finding("TwiML App", True, f"{app.sid} sends the softphones' calls to {targets.client}")


def _check_number(settings: Settings, client: Any | None, targets: Targets) -> Finding:
    phone = settings.twilio.phone_number
    if not phone:
        return Finding("number", False, "TWILIO_PHONE_NUMBER is not set")
    if client is None:
        return Finding(f"number {phone}", None, "not checked until the credentials work")
    try:
        number = find_number(settings, client)
    except Refused as exc:
        return Finding(f"number {phone}", False, str(exc))
    if number is None:
        return Finding(f"number {phone}", False, f"not a number on account {settings.twilio.account_sid}")
    changes = number_changes(number, targets)
    if not changes:
        return Finding(f"number {phone}", True, f"calls go to {targets.incoming}, statuses to {targets.status}")
    problems = []
    for field, (name, old, new) in changes.items():
        if field == "voice_application_sid":
            problems.append(f"TwiML App {old} answers its calls instead of its Voice URL")
        else:
            problems.append(f"{name} is {_shown(old)}, not {new}")
    return Finding(f"number {phone}", False, "; ".join(problems) + " (run `helpline twilio setup`)")


def _check_public_url(settings: Settings) -> Finding:
    import requests

    url = f"{settings.public_url}/healthz"
    if _is_real_twilio(settings) and _local_address(settings.public_url):
        return Finding("public URL", False, f"{settings.public_url} is a local address that Twilio cannot reach: "
                                             "set HELPLINE_PUBLIC_URL to the service's public https address")
    try:
        response = requests.get(url, timeout=HEALTH_TIMEOUT_S, allow_redirects=False)
    except requests.RequestException as exc:
        return Finding("public URL", False, f"GET {url} did not answer ({type(exc).__name__}): is the service "
                                             "running, and reachable at HELPLINE_PUBLIC_URL?")
    with response:
        if response.status_code != 200:
            return Finding("public URL", False, f"GET {url} answered {response.status_code}, not 200")
    return Finding("public URL", True, f"GET {url} answers 200")


def run_check(settings: Settings) -> list[Finding]:
    """Every item `check` reports, in order."""
    targets = Targets.from_settings(settings)
    credentials, client = _check_credentials(settings)
    return [credentials, _check_api_key(settings, client), _check_app(settings, client, targets),
            _check_number(settings, client, targets), _check_public_url(settings)]


# ---------------------------------------------------------------------- commands

@click.group("twilio")
def twilio_group() -> None:
    """Set up and check a real Twilio account for the helpline.

    \b
    setup  makes the account match the configuration: creates or updates the TwiML App
           for the console softphones (Voice URL HELPLINE_PUBLIC_URL/voice/client), and
           points TWILIO_PHONE_NUMBER's Voice URL at HELPLINE_PUBLIC_URL/voice/incoming
           and its status callback at HELPLINE_PUBLIC_URL/voice/status. Safe to run again:
           it changes only what differs, and says what it changed.
    check  reports, one line per item, what is missing or wrong: credentials, API key,
           TwiML App, number, and whether HELPLINE_PUBLIC_URL/healthz answers. Exits 1
           if anything is.

    Both use TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and TWILIO_API_BASE_URL, so they work
    against the local emulator too. Neither prints a secret.
    """


@twilio_group.command("setup", short_help="Create or update the TwiML App; point the number at the service.")
def setup_command() -> None:
    """Create or update the softphones' TwiML App and point the number at HELPLINE_PUBLIC_URL."""
    settings = load_settings()
    try:
        lines = run_setup(settings)
    except Refused as exc:
        raise click.ClickException(str(exc)) from None
    for line in lines:
        click.echo(line)


@twilio_group.command("check", short_help="Say what is missing or wrong at Twilio; exit 1 if anything is.")
def check_command() -> None:
    """Say what is missing or wrong at Twilio, one line per item; exit 1 if anything is."""
    settings = load_settings()
    findings = run_check(settings)
    for finding in findings:
        click.echo(finding.line())
    if any(finding.ok is not True for finding in findings):
        wrong = sum(finding.ok is False for finding in findings)
        click.echo(f"{wrong} of {len(findings)} items {'is' if wrong == 1 else 'are'} missing or wrong")
        sys.exit(1)
    click.echo(f"all {len(findings)} items are ready")
