"""The consoles' browser softphone: who it is to Twilio, its access token, and where it signals.

Every handler and supervisor page runs Twilio's Voice JavaScript SDK (vendored under
handler_console/static/vendor). Its access token comes from the twilio library (AccessToken with a
VoiceGrant), for the signed-in user's own identity and nobody else's. With real Twilio the token is
signed with an API key; with the local emulator (any other TWILIO_API_BASE_URL) an API key is used
if configured, else the account's auth token, which the emulator accepts as Twilio does, and the
SDK is pointed at the emulator's signalling (`chunderw`) instead of Twilio's edge.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from twilio.jwt.access_token import AccessToken
from twilio.jwt.access_token.grants import VoiceGrant

from .config import Settings, TwilioSettings

log = logging.getLogger(__name__)

#: Seconds a discovered signalling address is trusted before the emulator is asked again.
DISCOVERY_TTL_S = 60.0
#: Seconds to wait for the emulator's answer.
DISCOVERY_TIMEOUT_S = 2.0


def handler_identity(handler_id: int) -> str:
    """The Twilio client identity of a handler's browser softphone."""
    return f"handler-{handler_id}"


def supervisor_identity(user_id: int) -> str:
    """The Twilio client identity of a supervisor's browser softphone."""
    return f"supervisor-{user_id}"


class SoftphoneUnavailable(Exception):
    """No token can be made: `reason` says, in words an operator can act on, what is missing."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def uses_twilio(twilio: TwilioSettings) -> bool:
    """True when the service talks to Twilio itself rather than a stand-in."""
    host = urlsplit(twilio.api_base_url).hostname or ""
    return host == "twilio.com" or host.endswith(".twilio.com")


@dataclass(frozen=True)
class Credentials:
    """What the console's SDK needs: the token, how long it lasts, and where to signal (None: Twilio's edge)."""

    identity: str
    token: str
    ttl_s: int
    signalling_host: str | None


_discovered: dict[str, tuple[float, str | None]] = {}
_discovery_lock = threading.Lock()


def signalling_host(twilio: TwilioSettings) -> str | None:
    """Where the SDK signals: the configured host, Twilio's own (None), or what the emulator reports."""
    if twilio.signalling_host or uses_twilio(twilio):
        return twilio.signalling_host
    base = twilio.api_base_url.rstrip("/")
    now = time.monotonic()
    with _discovery_lock:
        known = _discovered.get(base)
        if known is not None and now - known[0] < DISCOVERY_TTL_S:
            return known[1]
    found: str | None = None
    try:
        answer = requests.get(f"{base}/emulator/health", timeout=DISCOVERY_TIMEOUT_S)
        if answer.ok:
            reported = answer.json().get("signalling")
            found = reported if isinstance(reported, str) and reported else None
    except (requests.RequestException, ValueError):
        log.warning("could not ask the Twilio emulator at %s where its signalling is", base)
    with _discovery_lock:
        _discovered[base] = (now, found)
    return found


def credentials(settings: Settings, identity: str) -> Credentials:
    """A fresh access token for `identity`, or SoftphoneUnavailable saying why there cannot be one."""
    twilio = settings.twilio
    if not twilio.account_sid:
        raise SoftphoneUnavailable("no Twilio account is configured (TWILIO_ACCOUNT_SID)")
    if twilio.api_key_sid and twilio.api_key_secret:
        key, secret = twilio.api_key_sid, twilio.api_key_secret
    elif uses_twilio(twilio):
        raise SoftphoneUnavailable("softphones need a Twilio API key (TWILIO_API_KEY_SID and TWILIO_API_KEY_SECRET); "
                                   "`helpline twilio check` says what else is missing")
    elif twilio.auth_token:
        key, secret = twilio.account_sid, twilio.auth_token
    else:
        raise SoftphoneUnavailable("no Twilio auth token is configured (TWILIO_AUTH_TOKEN)")
    host = signalling_host(twilio)
    if host is None and not uses_twilio(twilio):
        raise SoftphoneUnavailable("the Twilio emulator at TWILIO_API_BASE_URL does not answer, or speaks no "
                                   "softphone signalling; start it with `helpline emulator`")
    ttl = settings.twilio.token_ttl_s
    token = AccessToken(twilio.account_sid, key, secret, identity=identity, ttl=ttl)
    token.add_grant(VoiceGrant(outgoing_application_sid=twilio.twiml_app_sid, incoming_allow=True))
    return Credentials(identity=identity, token=token.to_jwt(), ttl_s=ttl, signalling_host=host)
