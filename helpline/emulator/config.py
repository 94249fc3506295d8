"""Settings of one emulator instance."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

#: Twilio's documented limit for a webhook answer (error 11205 beyond it).
TWILIO_WEBHOOK_TIMEOUT_S = 15.0

#: Seconds a <Play> clip lasts; hold music has no length we can read, so assume one.
DEFAULT_CLIP_SECONDS = 10.0

#: Example credentials used when nothing is configured (the emulator never talks to Twilio).
DEFAULT_ACCOUNT_SID = "AC" + "0" * 32
DEFAULT_AUTH_TOKEN = "emulator-auth-token"
DEFAULT_PHONE_NUMBER = "+441134960000"


@dataclass
class EmulatorConfig:
    """Everything one emulator needs to know about the account it pretends to be."""

    account_sid: str = DEFAULT_ACCOUNT_SID
    auth_token: str = DEFAULT_AUTH_TOKEN
    phone_number: str = DEFAULT_PHONE_NUMBER
    voice_url: str | None = None
    voice_method: str = "POST"
    status_callback: str | None = None
    status_callback_method: str = "POST"
    # A number's status callback only hears "completed" on real Twilio; more can be asked for.
    status_callback_events: tuple[str, ...] = ("completed",)
    time_scale: float = 1.0
    webhook_timeout: float = TWILIO_WEBHOOK_TIMEOUT_S
    clip_seconds: float = DEFAULT_CLIP_SECONDS
    # Phone numbers or client identities that pick up by themselves ("*" = every number).
    auto_answer: tuple[str, ...] = ()
    # How long a phone or client rings before an auto-answer, in unscaled seconds.
    auto_answer_after: float = 1.0
    # Numbers answered by a machine, and what answering machine detection reports for each
    # (AnsweredBy, e.g. "machine_start"); every other number is answered by a person ("human").
    answered_by: dict[str, str] = field(default_factory=dict)
    # API keys (SID, secret) that may sign Voice SDK access tokens, besides the account's auth token.
    api_keys: tuple[tuple[str, str], ...] = ()

    def scaled(self, seconds: float) -> float:
        """Return `seconds` of call time as wall-clock seconds under the time scale."""
        return max(0.0, float(seconds)) * self.time_scale

    @classmethod
    def from_env(cls, environ: dict | None = None, **overrides) -> "EmulatorConfig":
        """Build a configuration from the helpline's environment variables, then `overrides`."""
        env = os.environ if environ is None else environ
        public = (env.get("HELPLINE_PUBLIC_URL") or "").rstrip("/")
        values = {
            "account_sid": env.get("TWILIO_ACCOUNT_SID") or DEFAULT_ACCOUNT_SID,
            "auth_token": env.get("TWILIO_AUTH_TOKEN") or DEFAULT_AUTH_TOKEN,
            "phone_number": env.get("TWILIO_PHONE_NUMBER") or DEFAULT_PHONE_NUMBER,
            "voice_url": public + "/voice/incoming" if public else None,
            "status_callback": public + "/voice/status" if public else None,
        }
        if env.get("TWILIO_API_KEY_SID") and env.get("TWILIO_API_KEY_SECRET"):
            values["api_keys"] = ((env["TWILIO_API_KEY_SID"], env["TWILIO_API_KEY_SECRET"]),)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)
