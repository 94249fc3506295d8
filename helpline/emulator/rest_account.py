"""The account's own resources in Twilio's 2010-04-01 REST API: the Account, its TwiML Apps and its numbers.

`helpline twilio setup` and `helpline twilio check` configure a real Twilio account through these
resources, so the emulator serves them at Twilio's paths, with Twilio's form fields, JSON shapes,
paging and 404 bodies, and both commands can be run and tested with no account at all:

- `GET /Accounts/{Sid}.json`: the account (what `check` fetches to learn that the credentials work);
- `/Accounts/{Sid}/Applications.json` (list, `FriendlyName` filter; create) and
  `/Applications/{Sid}.json` (fetch, update, delete): TwiML Apps, the softphones' outgoing-call target;
- `/Accounts/{Sid}/IncomingPhoneNumbers.json` (list, `PhoneNumber` and `FriendlyName` filters) and
  `/IncomingPhoneNumbers/{Sid}.json` (fetch, update): the one number the emulator answers, its
  configured `phone_number`.

Updating the number is not bookkeeping: its Voice URL and status callback are the emulator's
`EmulatorConfig.voice_url` and `status_callback`, so after an update calls to the number go where the
number now points. As on Twilio, a number with a `VoiceApplicationSid` takes its voice URL and status
callback from that TwiML App instead of its own, and follows later changes to the app.
"""

from __future__ import annotations

import re
import threading
from urllib.parse import urlencode
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from .config import EmulatorConfig
from .rest import API, account_uri, authenticate, emulator, form_bool, not_found, twilio_error
from .sids import new_sid, rfc2822, utcnow

bp = Blueprint("twilio_rest_account", __name__, url_prefix=f"{API}/Accounts")
# The same HTTP Basic check (and "the URL's account must be ours") as the rest of the REST API.
bp.before_request(authenticate)

METHODS = ("GET", "POST")
_URL = re.compile(r"^https?://[^\s/]+\S*$")


# ---------------------------------------------------------------------- state

@dataclass
class Application:
    """A TwiML App: a set of URLs a call can be pointed at by its SID (softphones name it in their tokens)."""

    sid: str
    account_sid: str
    friendly_name: str | None = None
    voice_url: str | None = None
    voice_method: str = "POST"
    voice_fallback_url: str | None = None
    voice_fallback_method: str = "POST"
    status_callback: str | None = None
    status_callback_method: str = "POST"
    voice_caller_id_lookup: bool = False
    sms_url: str | None = None
    sms_method: str = "POST"
    sms_fallback_url: str | None = None
    sms_fallback_method: str = "POST"
    sms_status_callback: str | None = None
    message_status_callback: str | None = None
    public_application_connect_enabled: bool = True
    date_created: datetime = field(default_factory=utcnow)
    date_updated: datetime = field(default_factory=utcnow)


@dataclass
class IncomingNumber:
    """The emulator's phone number as an IncomingPhoneNumber resource.

    `voice_url` and `status_callback` are the number's own settings; what the emulator acts on is
    written to its configuration by `AccountState.apply` (the app's, when the number names one).
    """

    sid: str
    account_sid: str
    phone_number: str
    voice_url: str | None
    voice_method: str
    status_callback: str | None
    status_callback_method: str
    friendly_name: str | None = None
    voice_application_sid: str | None = None
    voice_fallback_url: str | None = None
    voice_fallback_method: str = "POST"
    voice_caller_id_lookup: bool = False
    sms_url: str | None = None
    sms_method: str = "POST"
    sms_fallback_url: str | None = None
    sms_fallback_method: str = "POST"
    sms_application_sid: str | None = None
    date_created: datetime = field(default_factory=utcnow)
    date_updated: datetime = field(default_factory=utcnow)


class AccountState:
    """The account's TwiML Apps and its number, kept beside the engine (one per emulator app)."""

    def __init__(self, config: EmulatorConfig):
        self.config = config
        self.lock = threading.RLock()
        self.created = utcnow()
        self.applications: dict[str, Application] = {}
        self.number = IncomingNumber(
            sid=new_sid("PN"), account_sid=config.account_sid, phone_number=config.phone_number,
            friendly_name=config.phone_number, voice_url=config.voice_url, voice_method=config.voice_method,
            status_callback=config.status_callback, status_callback_method=config.status_callback_method)

    def apply(self) -> None:
        """Make the emulator send calls where the number now points (its app's URLs, or its own).

        Called with `self.lock` held after any change to the number or to an app it may name.
        """
        number = self.number
        app = self.applications.get(number.voice_application_sid or "")
        source: Application | IncomingNumber = app if app is not None else number
        with emulator().lock:
            self.config.voice_url = source.voice_url
            self.config.voice_method = source.voice_method
            self.config.status_callback = source.status_callback
            self.config.status_callback_method = source.status_callback_method


def state() -> AccountState:
    """The running app's account state, made on first use from the engine's configuration."""
    extensions = current_app.extensions
    found = extensions.get("emulator.account")
    if found is None:
        with emulator().lock:
            found = extensions.setdefault("emulator.account", AccountState(emulator().config))
    return found


# ---------------------------------------------------------------------- form fields

class BadField(Exception):
    """A form field Twilio would refuse; carries the Twilio error to answer with."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


#: Form field -> (attribute, kind) for the fields the two resources share.
_URL_FIELDS = {"VoiceUrl": "voice_url", "VoiceFallbackUrl": "voice_fallback_url", "StatusCallback": "status_callback",
               "SmsUrl": "sms_url", "SmsFallbackUrl": "sms_fallback_url"}
_METHOD_FIELDS = {"VoiceMethod": "voice_method", "VoiceFallbackMethod": "voice_fallback_method",
                  "StatusCallbackMethod": "status_callback_method", "SmsMethod": "sms_method",
                  "SmsFallbackMethod": "sms_fallback_method"}
_APP_ONLY_URLS = {"SmsStatusCallback": "sms_status_callback", "MessageStatusCallback": "message_status_callback"}


def _changes(form: Any, urls: dict[str, str], bools: dict[str, str]) -> dict[str, Any]:
    """The attribute changes a create or update asks for; BadField for a value Twilio refuses.

    An empty URL clears it, as on Twilio; a method must be GET or POST.
    """
    changes: dict[str, Any] = {}
    for name, attribute in urls.items():
        if name in form:
            value = form[name].strip()
            if value and not _URL.match(value):
                raise BadField(21502, f"{name} is not a valid URL: {value}")
            changes[attribute] = value or None
    for name, attribute in _METHOD_FIELDS.items():
        if form.get(name):
            method = form[name].strip().upper()
            if method not in METHODS:
                raise BadField(21209, f"{name} must be GET or POST")
            changes[attribute] = method
    for name, attribute in bools.items():
        value = form_bool(name)
        if value is not None:
            changes[attribute] = value
    if "FriendlyName" in form:
        name = form["FriendlyName"]
        if len(name) > 64:
            raise BadField(20001, "FriendlyName must be at most 64 characters")
        changes["friendly_name"] = name or None
    return changes


def _update(target: Application | IncomingNumber, changes: dict[str, Any]) -> None:
    """Apply attribute changes and stamp the resource as updated."""
    for attribute, value in changes.items():
        setattr(target, attribute, value)
    target.date_updated = utcnow()


def page(items: list[dict[str, Any]], key: str) -> Response:
    """A Twilio 2010-style page of rendered resources, honouring Page and PageSize.

    The page URIs carry the list's filters URL-encoded, so a `PhoneNumber=+44...` filter survives
    the twilio library following `next_page_uri` (a bare `+` would come back as a space).
    """
    try:
        size = max(1, min(1000, int(request.args.get("PageSize", 50))))
        number = max(0, int(request.args.get("Page", 0)))
    except ValueError:
        return twilio_error(400, 20001, "Invalid paging parameters")
    chunk = items[number * size:(number + 1) * size]
    filters = [(k, v) for k, v in request.args.items(multi=True) if k not in {"Page", "PageSize", "PageToken"}]

    def uri(page_number: int) -> str:
        return f"{request.path}?" + urlencode([("PageSize", size), ("Page", page_number), *filters])

    return jsonify({
        key: chunk, "page": number, "page_size": size, "start": number * size,
        "end": number * size + max(0, len(chunk) - 1), "uri": request.full_path.rstrip("?"),
        "first_page_uri": uri(0), "next_page_uri": uri(number + 1) if len(items) > (number + 1) * size else None,
        "previous_page_uri": uri(number - 1) if number > 0 else None,
    })


def _created(body: dict[str, Any]) -> Response:
    """201 with the new resource."""
    response = jsonify(body)
    response.status_code = 201
    return response


# ---------------------------------------------------------------------- account

@bp.get("/<account_sid>.json")
def fetch_account(account_sid: str) -> Response:
    """The account itself: what a client fetches to learn that its credentials work.

    Twilio includes the auth token in this resource; so does the emulator, for the same shape.
    """
    config, created = emulator().config, state().created
    uri = account_uri(config.account_sid) + ".json"
    base = account_uri(config.account_sid)
    return jsonify({
        "sid": config.account_sid, "owner_account_sid": config.account_sid, "friendly_name": "Emulated account",
        "status": "active", "type": "Full", "auth_token": config.auth_token,
        "date_created": rfc2822(created), "date_updated": rfc2822(created), "uri": uri,
        "subresource_uris": {name.lower(): f"{base}/{name}.json" for name in
                             ("Applications", "Calls", "Conferences", "IncomingPhoneNumbers", "Messages", "Queues")},
    })


# ---------------------------------------------------------------------- applications

def application_json(app: Application) -> dict[str, Any]:
    """An Application resource as Twilio returns it."""
    return {
        "account_sid": app.account_sid, "api_version": "2010-04-01", "date_created": rfc2822(app.date_created),
        "date_updated": rfc2822(app.date_updated), "friendly_name": app.friendly_name,
        "message_status_callback": app.message_status_callback, "sid": app.sid,
        "sms_fallback_method": app.sms_fallback_method, "sms_fallback_url": app.sms_fallback_url,
        "sms_method": app.sms_method, "sms_status_callback": app.sms_status_callback, "sms_url": app.sms_url,
        "status_callback": app.status_callback, "status_callback_method": app.status_callback_method,
        "uri": f"{account_uri(app.account_sid)}/Applications/{app.sid}.json",
        "voice_caller_id_lookup": app.voice_caller_id_lookup, "voice_fallback_method": app.voice_fallback_method,
        "voice_fallback_url": app.voice_fallback_url, "voice_method": app.voice_method, "voice_url": app.voice_url,
        "public_application_connect_enabled": app.public_application_connect_enabled,
    }


_APP_BOOLS = {"VoiceCallerIdLookup": "voice_caller_id_lookup",
              "PublicApplicationConnectEnabled": "public_application_connect_enabled"}


@bp.get("/<account_sid>/Applications.json")
def list_applications(account_sid: str) -> Response:
    """The account's TwiML Apps, oldest first (filter: FriendlyName, matched exactly as Twilio does)."""
    accounts = state()
    name = request.args.get("FriendlyName")
    with accounts.lock:
        apps = [app for app in accounts.applications.values() if name is None or app.friendly_name == name]
        rendered = [application_json(app) for app in apps]
    return page(rendered, "applications")


@bp.post("/<account_sid>/Applications.json")
def create_application(account_sid: str) -> Response:
    """Create a TwiML App (FriendlyName, VoiceUrl, VoiceMethod, StatusCallback, ... as Twilio takes them)."""
    accounts = state()
    try:
        changes = _changes(request.values, {**_URL_FIELDS, **_APP_ONLY_URLS}, _APP_BOOLS)
    except BadField as exc:
        return twilio_error(400, exc.code, exc.message)
    with accounts.lock:
        app = Application(sid=new_sid("AP"), account_sid=accounts.config.account_sid)
        _update(app, changes)
        accounts.applications[app.sid] = app
        return _created(application_json(app))


@bp.get("/<account_sid>/Applications/<application_sid>.json")
def fetch_application(account_sid: str, application_sid: str) -> Response:
    """One TwiML App."""
    accounts = state()
    with accounts.lock:
        app = accounts.applications.get(application_sid)
        return jsonify(application_json(app)) if app else not_found("application")


@bp.post("/<account_sid>/Applications/<application_sid>.json")
def update_application(account_sid: str, application_sid: str) -> Response:
    """Change a TwiML App; a number that names it follows the change at once."""
    accounts = state()
    try:
        changes = _changes(request.values, {**_URL_FIELDS, **_APP_ONLY_URLS}, _APP_BOOLS)
    except BadField as exc:
        return twilio_error(400, exc.code, exc.message)
    with accounts.lock:
        app = accounts.applications.get(application_sid)
        if app is None:
            return not_found("application")
        _update(app, changes)
        accounts.apply()
        return jsonify(application_json(app))


@bp.delete("/<account_sid>/Applications/<application_sid>.json")
def delete_application(account_sid: str, application_sid: str) -> Response:
    """Delete a TwiML App; a number that named it falls back to its own Voice URL, as on Twilio."""
    accounts = state()
    with accounts.lock:
        if accounts.applications.pop(application_sid, None) is None:
            return not_found("application")
        if accounts.number.voice_application_sid == application_sid:
            accounts.number.voice_application_sid = None
            accounts.apply()
    return Response(status=204)


# ---------------------------------------------------------------------- incoming phone numbers

def number_json(number: IncomingNumber) -> dict[str, Any]:
    """An IncomingPhoneNumber resource as Twilio returns it."""
    return {
        "account_sid": number.account_sid, "address_requirements": "none", "address_sid": None,
        "api_version": "2010-04-01", "beta": False,
        "capabilities": {"voice": True, "sms": True, "mms": False, "fax": False},
        "date_created": rfc2822(number.date_created), "date_updated": rfc2822(number.date_updated),
        "emergency_status": "Inactive", "emergency_address_sid": None, "emergency_address_status": "unregistered",
        "friendly_name": number.friendly_name, "identity_sid": None, "origin": "twilio",
        "phone_number": number.phone_number, "sid": number.sid,
        "sms_application_sid": number.sms_application_sid, "sms_fallback_method": number.sms_fallback_method,
        "sms_fallback_url": number.sms_fallback_url, "sms_method": number.sms_method, "sms_url": number.sms_url,
        "status_callback": number.status_callback, "status_callback_method": number.status_callback_method,
        "trunk_sid": None, "uri": f"{account_uri(number.account_sid)}/IncomingPhoneNumbers/{number.sid}.json",
        "voice_receive_mode": "voice", "voice_application_sid": number.voice_application_sid,
        "voice_caller_id_lookup": number.voice_caller_id_lookup, "voice_fallback_method": number.voice_fallback_method,
        "voice_fallback_url": number.voice_fallback_url, "voice_method": number.voice_method,
        "voice_url": number.voice_url, "bundle_sid": None, "status": "in-use",
        "subresource_uris": {"assigned_add_ons": f"{account_uri(number.account_sid)}/IncomingPhoneNumbers/"
                                                 f"{number.sid}/AssignedAddOns.json"},
    }


def _number_matches(pattern: str, phone_number: str) -> bool:
    """Twilio's PhoneNumber filter: the digits given appear in the number, `*` standing for any digit."""
    wanted = re.escape(pattern.strip()).replace(r"\*", r"\d")
    return re.search(wanted, phone_number) is not None


@bp.get("/<account_sid>/IncomingPhoneNumbers.json")
def list_numbers(account_sid: str) -> Response:
    """The account's numbers: the emulator's one (filters: PhoneNumber, FriendlyName)."""
    accounts = state()
    phone_number, name = request.args.get("PhoneNumber"), request.args.get("FriendlyName")
    with accounts.lock:
        number = accounts.number
        numbers = [number] if ((not phone_number or _number_matches(phone_number, number.phone_number))
                               and (not name or name == number.friendly_name)) else []
        rendered = [number_json(n) for n in numbers]
    return page(rendered, "incoming_phone_numbers")


@bp.get("/<account_sid>/IncomingPhoneNumbers/<number_sid>.json")
def fetch_number(account_sid: str, number_sid: str) -> Response:
    """The number, by its PN SID."""
    accounts = state()
    with accounts.lock:
        if number_sid != accounts.number.sid:
            return not_found("incoming phone number")
        return jsonify(number_json(accounts.number))


@bp.post("/<account_sid>/IncomingPhoneNumbers/<number_sid>.json")
def update_number(account_sid: str, number_sid: str) -> Response:
    """Point the number somewhere else (VoiceUrl, VoiceMethod, StatusCallback, StatusCallbackMethod,
    VoiceApplicationSid, ...): calls to it go there from now on."""
    accounts = state()
    try:
        changes = _changes(request.values, _URL_FIELDS, {"VoiceCallerIdLookup": "voice_caller_id_lookup"})
    except BadField as exc:
        return twilio_error(400, exc.code, exc.message)
    with accounts.lock:
        if number_sid != accounts.number.sid:
            return not_found("incoming phone number")
        if "VoiceApplicationSid" in request.values:
            app_sid = request.values["VoiceApplicationSid"].strip()
            if app_sid and app_sid not in accounts.applications:
                return twilio_error(400, 22108, f"VoiceApplicationSid {app_sid} is not a TwiML App of this account")
            changes["voice_application_sid"] = app_sid or None
        if "SmsApplicationSid" in request.values:
            changes["sms_application_sid"] = request.values["SmsApplicationSid"].strip() or None
        _update(accounts.number, changes)
        accounts.apply()
        return jsonify(number_json(accounts.number))

