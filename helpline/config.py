"""Configuration: `config.yaml` defaults, a `HELPLINE_CONFIG` file merged over them, environment last.

The result is validated once, at start-up, into typed settings. A mistake stops start-up with one line
per problem naming the key, so an operator never has to read a stack trace to fix a typo.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import zoneinfo
from pathlib import Path
from typing import Annotated, Any, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator, model_validator

#: The repository root in a checkout (or an editable install); `config.yaml` lives here.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
#: The package itself: an install that is not a checkout (`pip install .`) carries copies of
#: `config.yaml` and `ivr_flows/` here (package data), as nothing outside the package is installed.
PACKAGE_DIR = Path(__file__).resolve().parent


def shipped(relative: str | Path) -> Path:
    """A file the project ships, `relative` to the repository root: the checkout's own when there is
    one (so an edit there takes effect), else the copy installed inside the package."""
    in_checkout = PROJECT_ROOT / relative
    return in_checkout if in_checkout.exists() else PACKAGE_DIR / relative


def _default_instance_path() -> Path:
    """Where the embedded database and generated keys live: `instance/` in a checkout; for an install
    that is not one, `instance/` in the working directory (never inside site-packages)."""
    if (PROJECT_ROOT / "config.yaml").exists() and (PROJECT_ROOT / "helpline").is_dir():
        return PROJECT_ROOT / "instance"
    return Path.cwd() / "instance"

#: Environment variables and the configuration key each one overrides.
ENVIRONMENT_KEYS: dict[str, tuple[str, ...]] = {
    "HELPLINE_DATABASE_URL": ("database_url",),
    "HELPLINE_PUBLIC_URL": ("public_url",),
    "HELPLINE_SECRET_KEY": ("secret_key",),
    "HELPLINE_ENCRYPTION_KEY": ("encryption_key",),
    "HELPLINE_REDIS_URL": ("redis_url",),
    "TWILIO_ACCOUNT_SID": ("twilio", "account_sid"),
    "TWILIO_AUTH_TOKEN": ("twilio", "auth_token"),
    "TWILIO_API_BASE_URL": ("twilio", "api_base_url"),
    "TWILIO_PHONE_NUMBER": ("twilio", "phone_number"),
    "TWILIO_API_KEY_SID": ("twilio", "api_key_sid"),
    "TWILIO_API_KEY_SECRET": ("twilio", "api_key_secret"),
    "TWILIO_TWIML_APP_SID": ("twilio", "twiml_app_sid"),
    "TWILIO_SIGNALLING_HOST": ("twilio", "signalling_host"),
    "TWILIO_CALLBACK_CALLER_ID": ("twilio", "callback_caller_id"),
    "HELPLINE_REQUIRE_MFA": ("security", "require_mfa"),
    "HELPLINE_ALWAYS_OPEN": ("opening_hours", "always_open"),
    "HELPLINE_OIDC_ISSUER": ("oidc", "issuer"),
    "HELPLINE_OIDC_CLIENT_ID": ("oidc", "client_id"),
    "HELPLINE_OIDC_CLIENT_SECRET": ("oidc", "client_secret"),
}
#: Environment variables that hold a yes or no, and the words each may be.
BOOLEAN_VARIABLES = {"HELPLINE_REQUIRE_MFA", "HELPLINE_ALWAYS_OPEN"}
_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SPAN = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")
#: A telephone number in E.164: a plus, a country code, at most 15 digits in all.
E164 = re.compile(r"^\+[1-9]\d{6,14}$")


class ConfigError(Exception):
    """The configuration cannot be used; `problems` holds one human line per mistake."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServiceSettings(_Strict):
    name: str = Field(min_length=1)
    flow: str = Field(min_length=1)


class TwilioSettings(_Strict):
    account_sid: str | None = None
    auth_token: str | None = None
    api_base_url: str = "https://api.twilio.com"
    phone_number: str | None = None
    voice: str = "Polly.Amy"
    language: str = "en-GB"
    #: An API key and TwiML App for the handlers' browser softphones (Voice JS SDK access tokens).
    api_key_sid: str | None = None
    api_key_secret: str | None = None
    twiml_app_sid: str | None = None
    #: Where the softphones' Voice SDK signals (host:port, its `chunderw`); unset, Twilio's own edge,
    #: or with the local emulator, the address the emulator reports.
    signalling_host: str | None = None
    #: Seconds a softphone's access token lasts; the console renews it before it runs out.
    token_ttl_s: int = Field(default=3600, ge=30, le=86400)
    #: The number a callback presents to the person called back (E.164); unset, the helpline's own.
    #: Callers are told this number (see `callback_number`), so it must be one the service answers.
    callback_caller_id: str | None = None

    @field_validator("callback_caller_id")
    @classmethod
    def _e164(cls, value: str | None) -> str | None:
        if value and not E164.match(value):
            raise ValueError("must be a phone number in E.164 form, such as +443300000000")
        return value or None

    @property
    def callback_number(self) -> str | None:
        """The caller ID every callback presents: the configured one, or the helpline's own number."""
        return self.callback_caller_id or self.phone_number

    @field_validator("api_key_sid")
    @classmethod
    def _api_key_sid(cls, value: str | None) -> str | None:
        if value and not re.match(r"^SK[0-9a-fA-F]{32}$", value):
            raise ValueError("must be an API key SID (SK followed by 32 hex digits)")
        return value or None

    @field_validator("api_key_secret")
    @classmethod
    def _api_key_secret(cls, value: str | None) -> str | None:
        if value and len(value) < 32:
            raise ValueError("must be the API key's 32-character secret")
        return value or None

    @field_validator("signalling_host")
    @classmethod
    def _signalling_host(cls, value: str | None) -> str | None:
        if value and not re.match(r"^(\[[0-9A-Fa-f:]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?$", value):
            raise ValueError("must be host or host:port, with no scheme or path")
        return value or None

    @field_validator("twiml_app_sid")
    @classmethod
    def _twiml_app_sid(cls, value: str | None) -> str | None:
        if value and not re.match(r"^AP[0-9a-fA-F]{32}$", value):
            raise ValueError("must be a TwiML App SID (AP followed by 32 hex digits)")
        return value or None

    @model_validator(mode="after")
    def _api_key_pair(self) -> "TwilioSettings":
        if bool(self.api_key_sid) != bool(self.api_key_secret):
            raise ValueError("api_key_sid and api_key_secret must be set together")
        return self

    @field_validator("api_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/")


class OpeningHoursSettings(_Strict):
    timezone: str
    weekly: dict[str, list[str]]
    closed_dates: list[dt.date] = []
    #: Answer around the clock whatever `weekly` says (the demo; HELPLINE_ALWAYS_OPEN).
    always_open: bool = False

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @field_validator("weekly")
    @classmethod
    def _spans(cls, weekly: dict[str, list[str]]) -> dict[str, list[str]]:
        unknown = sorted(set(weekly) - set(DAYS))
        if unknown:
            raise ValueError(f"unknown day {unknown[0]!r} (use {', '.join(DAYS)})")
        for day, spans in weekly.items():
            parsed = [parse_span(span, day) for span in spans]
            parsed.sort()
            for (_, end), (start, _) in zip(parsed, parsed[1:]):
                if start < end:
                    raise ValueError(f"{day}: opening spans overlap")
        return {day: list(weekly.get(day, [])) for day in DAYS}


def parse_span(span: str, day: str = "") -> tuple[int, int]:
    """Turn "08:00-20:00" into minutes since midnight, (480, 1200); "00:00-24:00" is the whole day."""
    match = _SPAN.match(str(span))
    where = f"{day}: " if day else ""
    if not match:
        raise ValueError(f"{where}{span!r} is not HH:MM-HH:MM")
    h1, m1, h2, m2 = (int(group) for group in match.groups())
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if h1 > 23 or m1 > 59 or m2 > 59 or end > 24 * 60:
        raise ValueError(f"{where}{span!r} is not a time of day")
    if end <= start:
        raise ValueError(f"{where}{span!r} ends before it starts")
    return start, end


class QueueSettings(_Strict):
    name: str = Field(min_length=1, max_length=64)
    offer_callback_after_s: int = Field(ge=0)
    announce_every_s: int = Field(ge=10, le=60)
    default_wait_estimate_s: int = Field(ge=0)
    hold_music_url: str | None = None


class IvrSettings(_Strict):
    """How long the phone menus wait for a caller, and whom they wait longer for.

    `gather_timeout_s` is Twilio's Gather timeout: the silence after a menu's prompt before it counts
    as no answer, and the pause between keys typed ahead before they are taken. A caller whose
    number starts with one of `relay_prefixes` comes through a text relay service (Relay UK's are
    18001 and 18002), where an assistant types what the menu says and the caller's answer: they get
    `relay_gather_timeout_s` instead.
    """

    gather_timeout_s: int = Field(default=4, strict=True, ge=2, le=30)
    relay_prefixes: list[Annotated[str, Field(pattern=r"^[0-9]{3,8}$")]] = ["18001", "18002"]
    relay_gather_timeout_s: int = Field(default=20, strict=True, ge=2, le=60)

    @model_validator(mode="after")
    def _relay_waits_longer(self) -> "IvrSettings":
        if self.relay_gather_timeout_s < self.gather_timeout_s:
            raise ValueError("relay_gather_timeout_s must be at least gather_timeout_s")
        return self


class RoutingSettings(_Strict):
    offer_timeout_s: int = Field(ge=1)
    wrap_up_s: int = Field(ge=0)
    skill_fallback_after_s: int = Field(ge=0)


class ServerSettings(_Strict):
    threads: int = Field(ge=1, le=1000)
    #: glibc malloc arenas for `helpline serve` (0 = glibc's default of eight per core); see server.py.
    malloc_arenas: int = Field(default=2, strict=True, ge=0, le=64)
    #: Allocations from this size (KiB) get pages of their own, returned when freed (0 = glibc's
    #: default, which rises with the blocks freed); see server.py. glibc takes at most 32 MiB.
    malloc_mmap_threshold_kib: int = Field(default=1024, strict=True, ge=0, le=32 * 1024)


class SchedulerSettings(_Strict):
    embedded: StrictBool


class SecuritySettings(_Strict):
    """Sessions, log-in throttling, and proxies (see security.py)."""

    #: A session unused for this long is over; the next request must log in again.
    session_idle_minutes: int = Field(default=30, strict=True, ge=1, le=24 * 60)
    #: A session ends this long after log-in however busy it is; the user logs in again.
    session_absolute_hours: int = Field(default=12, strict=True, ge=1, le=7 * 24)
    #: Every staff log-in needs a second factor (TOTP, or a recovery code); a user without one is
    #: taken to enrol at log-in. False (HELPLINE_REQUIRE_MFA=false) for a deployment that signs in
    #: through its own identity provider, the demo and acceptance tests. A user who has enrolled is
    #: asked for their code either way.
    require_mfa: StrictBool = True
    #: Wrong passwords in a row before an account is paused ...
    max_failed_logins: int = Field(default=5, strict=True, ge=1, le=100)
    #: ... for this long.
    lockout_minutes: int = Field(default=15, strict=True, ge=1, le=24 * 60)
    #: Failed log-ins from one client address within `lockout_minutes` before it is refused (429).
    max_failed_logins_per_address: int = Field(default=20, strict=True, ge=1, le=10_000)
    #: Reverse proxies in front of the service whose X-Forwarded-For/-Proto are trusted (0 = none).
    proxy_hops: int = Field(default=0, strict=True, ge=0, le=5)


class OidcSettings(_Strict):
    """Sign-in through an OpenID Connect provider (oidc.py), beside passwords; off while `issuer` is unset."""

    #: The provider's issuer, exactly as its discovery document says it (its metadata is read from
    #: `<issuer>/.well-known/openid-configuration`).
    issuer: str | None = None
    client_id: str | None = None
    #: Best given in the environment (HELPLINE_OIDC_CLIENT_SECRET), never in a file under version control.
    client_secret: str | None = None
    #: The log-in page's button says "Sign in with <provider_name>".
    provider_name: str = Field(default="your organisation's account", min_length=1, max_length=60)
    #: The claim (from the ID token, else the userinfo endpoint) whose value is a helpline username.
    username_claim: str = Field(default="preferred_username", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    #: When set, the claim must end in "@<username_domain>", which is taken off (jo.bloggs@nhs.net ->
    #: jo.bloggs); a value from any other domain matches nobody.
    username_domain: str | None = Field(default=None, pattern=r"^[A-Za-z0-9.-]+\.[A-Za-z]{2,}$")
    scopes: str = Field(default="openid profile email", min_length=6, max_length=500)
    #: `acr` values that mean the provider used a second factor (amr mfa, otp or hwk always do).
    mfa_acr_values: list[str] = []
    #: Seconds to wait for the provider's server (discovery, keys, the token exchange).
    timeout_s: int = Field(default=10, strict=True, ge=1, le=60)

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = re.match(r"^(https?)://([^\s/?#:]+)(:\d+)?(/[^\s?#]*)?$", value)
        if not parts:
            raise ValueError("must be the provider's issuer URL, such as https://login.example.org/tenant/v2.0")
        if parts.group(1) == "http" and parts.group(2) not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("must be https (http only for a provider on this machine)")
        return value

    @field_validator("scopes")
    @classmethod
    def _openid_scope(cls, value: str) -> str:
        if "openid" not in value.split():
            raise ValueError("must include openid")
        return value

    @model_validator(mode="after")
    def _complete(self) -> "OidcSettings":
        if self.issuer and not (self.client_id and self.client_secret):
            raise ValueError("issuer needs client_id and client_secret (HELPLINE_OIDC_CLIENT_ID, HELPLINE_OIDC_CLIENT_SECRET)")
        if not self.issuer and (self.client_id or self.client_secret):
            raise ValueError("client_id and client_secret need an issuer (HELPLINE_OIDC_ISSUER)")
        return self

    @property
    def enabled(self) -> bool:
        """Whether staff may sign in through the provider."""
        return bool(self.issuer)


class RetentionSettings(_Strict):
    """How long each kind of record is kept before the scheduler's purge removes or anonymises it."""

    third_party_days: int = Field(default=30, strict=True, ge=1, le=36_500)
    ineligible_days: int = Field(default=30, strict=True, ge=1, le=36_500)
    abandoned_days: int = Field(default=30, strict=True, ge=1, le=36_500)
    #: First-contact records, counted from the episode's discharge, or from the last sign of care of one
    #: never discharged (episodes.py). 20 years: the NHS Records Management Code keeps mental-health
    #: records 20 years after treatment ends.
    discharged_record_days: int = Field(default=7305, strict=True, ge=1, le=36_500)
    webhook_replies_days: int = Field(default=2, strict=True, ge=1, le=365)


class TriageSettings(_Strict):
    """The first call's triage: how soon an urgent appointment must be."""

    urgent_within_hours: int = Field(default=48, strict=True, ge=1, le=336)


class ServiceLevelSettings(_Strict):
    """The service levels the helpline is held to (NHS 111's, by default), on the wallboard and in reports.

    A figure at or better than its target is green; within `amber_margin` of it, amber; further off, red.
    """

    #: Calls answered within this many seconds count as answered in time ...
    answer_within_s: int = Field(default=60, strict=True, ge=1, le=3600)
    #: ... and at least this share of them should be.
    answer_target: float = Field(default=0.95, ge=0, le=1)
    #: A caller who hangs up after waiting longer than this counts against the abandonment target ...
    abandon_after_s: int = Field(default=30, strict=True, ge=0, le=3600)
    #: ... and at most this share of the calls that reached the line should.
    abandon_target: float = Field(default=0.05, ge=0, le=1)
    #: A call-back is promised within this many seconds of being asked for (or of the line opening) ...
    callback_within_s: int = Field(default=600, strict=True, ge=1, le=7 * 24 * 3600)
    #: ... and at least this share should be rung within it.
    callback_target: float = Field(default=0.95, ge=0, le=1)
    #: How far on the wrong side of a target a figure is amber rather than red.
    amber_margin: float = Field(default=0.05, ge=0, le=1)


class Settings(_Strict):
    """Everything the service reads from its configuration, validated."""

    service: ServiceSettings
    public_url: str
    database_url: str | None = None
    secret_key: str | None = None
    encryption_key: str | None = None
    redis_url: str | None = None
    twilio: TwilioSettings
    opening_hours: OpeningHoursSettings
    queue: QueueSettings
    ivr: IvrSettings = IvrSettings()
    routing: RoutingSettings
    server: ServerSettings
    security: SecuritySettings = SecuritySettings()
    oidc: OidcSettings = OidcSettings()
    retention: RetentionSettings = RetentionSettings()
    triage: TriageSettings = TriageSettings()
    service_levels: ServiceLevelSettings = ServiceLevelSettings()
    scheduler: SchedulerSettings
    #: Where the embedded database and generated demo keys live.
    instance_path: str = Field(default_factory=lambda: str(_default_instance_path()))

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value) or "?" in value or "#" in value:
            raise ValueError("must be an http(s) base URL such as https://helpline.example.org")
        return value.rstrip("/")

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value and not re.match(r"^rediss?://", value):
            raise ValueError("must start with redis:// or rediss://")
        return value or None

    @model_validator(mode="after")
    def _twilio_pair(self) -> "Settings":
        if bool(self.twilio.account_sid) != bool(self.twilio.auth_token):
            raise ValueError("twilio.account_sid and twilio.auth_token must be set together")
        return self

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to the embedded SQLite file under the instance folder."""
        return self.database_url or f"sqlite:///{Path(self.instance_path) / 'helpline.db'}"

    @property
    def flow_path(self) -> Path:
        """The IVR flow file, relative paths being relative to the project root (or the installed copy)."""
        path = Path(self.service.flow)
        return path if path.is_absolute() else shipped(path)


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Merge `over` into a copy of `base`, key by key, descending into mappings."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"config: cannot read {path}: {exc.strerror}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError([f"config: {path}{where}: not valid YAML"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"config: {path}: the top level must be a mapping of keys"])
    return data


def _describe(error: Mapping[str, Any]) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    elif error["type"] == "missing":
        message = "required key is missing"
    return f"config: {key}: {message}"


def load_settings(
    overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read and validate the configuration: defaults, then `HELPLINE_CONFIG`, then `overrides`, then env."""
    environ = os.environ if environ is None else environ
    data = _read_yaml(shipped("config.yaml"))
    extra = environ.get("HELPLINE_CONFIG")
    if extra:
        data = _merge(data, _read_yaml(Path(extra)))
    if overrides:
        data = _merge(data, overrides)
    for variable, path in ENVIRONMENT_KEYS.items():
        value: Any = environ.get(variable)
        if value and variable in BOOLEAN_VARIABLES:
            word = value.strip().lower()
            if word not in _TRUE | _FALSE:
                raise ConfigError([f"config: {variable}: must be true or false, not {value!r}"])
            value = word in _TRUE
        if value is not None and value != "":
            target = data
            for part in path[:-1]:
                target = target.setdefault(part, {})
                if not isinstance(target, dict):
                    raise ConfigError([f"config: {'.'.join(path[:-1])}: must be a mapping"])
            target[path[-1]] = value
    if environ.get("HELPLINE_INSTANCE_PATH"):
        data["instance_path"] = environ["HELPLINE_INSTANCE_PATH"]
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([_describe(error) for error in exc.errors()]) from None
