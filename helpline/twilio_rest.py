"""Every call the service makes to Twilio's REST API, in one module.

The official `twilio` client is pointed at `TWILIO_API_BASE_URL` (Twilio itself by default, the local
emulator in the demo and the tests), with Twilio's own paths, so nothing else changes between them.
Failures become `TwilioUnavailable`, which callers handle by keeping the caller where they are.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from .config import Settings

log = logging.getLogger(__name__)

#: Seconds to wait for Twilio before treating a request as failed (a caller is waiting meanwhile).
TIMEOUT_S = 8


#: Twilio's error code for a resource that does not exist (a call, a conference, a participant).
NOT_FOUND = 20404


class TwilioUnavailable(Exception):
    """Twilio refused or did not answer; the message is safe to show a handler.

    `code` is Twilio's error code when it refused (20404: no such resource), None when it did not answer.
    """

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.code = code


@dataclass
class TwilioGateway:
    """A configured Twilio REST client for one app."""

    settings: Settings

    def __post_init__(self) -> None:
        twilio = self.settings.twilio
        self.configured = bool(twilio.account_sid and twilio.auth_token)
        self._client: Client | None = None
        if self.configured:
            client = Client(twilio.account_sid, twilio.auth_token, http_client=TwilioHttpClient(timeout=TIMEOUT_S))
            # The Api domain serves Calls, Queues, Conferences and Messages; its base is the only
            # thing that differs between Twilio and the emulator.
            client.api.base_url = twilio.api_base_url
            self._client = client

    @property
    def client(self) -> Client:
        """The twilio client; TwilioUnavailable when no credentials are configured."""
        if self._client is None:
            raise TwilioUnavailable("Twilio is not configured (TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN)")
        return self._client

    def _run(self, what: str, action: Any) -> Any:
        try:
            return action()
        except TwilioRestException as exc:
            log.warning("Twilio refused to %s: %s %s", what, exc.status, exc.code)
            raise TwilioUnavailable(f"Twilio refused to {what} (error {exc.code or exc.status})",
                                    code=exc.code or exc.status) from None
        except (TwilioException, OSError) as exc:
            log.warning("Twilio did not answer a request to %s: %s", what, type(exc).__name__)
            raise TwilioUnavailable(f"Twilio did not answer a request to {what}") from None

    def absolute(self, path: str) -> str:
        """A URL Twilio can reach for one of our paths."""
        return path if path.startswith(("http://", "https://")) else self.settings.public_url + path

    def redirect_call(self, call_sid: str, path: str) -> None:
        """Make a live call fetch new TwiML from `path` (leaving any queue it is waiting in)."""
        self._run("redirect the call", lambda: self.client.calls(call_sid).update(url=self.absolute(path), method="POST"))

    def hang_up(self, call_sid: str) -> None:
        """End a call."""
        self._run("end the call", lambda: self.client.calls(call_sid).update(status="completed"))

    def create_call(self, to: str, path: str, status_path: str | None = None, timeout_s: int = 30,
                    caller_id: str | None = None, machine_detection: bool = False) -> str:
        """Ring `to` (a number or client:identity) and run TwiML from `path` when answered; returns its CallSid.

        `caller_id` is the number shown to the person called (the helpline's own by default);
        `machine_detection` asks Twilio to say in `AnsweredBy` whether a person or a machine answered.
        """
        extra: dict[str, Any] = {}
        if status_path:
            extra.update(status_callback=self.absolute(status_path), status_callback_method="POST",
                         status_callback_event=["initiated", "ringing", "answered", "completed"])
        if machine_detection:
            extra["machine_detection"] = "Enable"
        call = self._run("place the call", lambda: self.client.calls.create(
            to=to, from_=caller_id or self.settings.twilio.phone_number or "", url=self.absolute(path), method="POST",
            timeout=timeout_s, **extra))
        return str(call.sid)

    def fetch_call(self, call_sid: str) -> dict[str, Any]:
        """A call's status and duration as Twilio knows them."""
        call = self._run("look up the call", lambda: self.client.calls(call_sid).fetch())
        return {"status": call.status, "duration": call.duration, "end_time": call.end_time}

    def live_calls(self) -> dict[str, dict[str, Any]]:
        """The calls to the helpline's number that Twilio has live now (queued, ringing or in progress),
        by SID: their status, who is calling and when the call began. Every page is read."""
        number = self.settings.twilio.phone_number
        found: dict[str, dict[str, Any]] = {}
        for status in ("queued", "ringing", "in-progress"):
            filters: dict[str, Any] = {"status": status, "page_size": 1000}
            if number:
                filters["to"] = number
            calls = self._run("list the live calls", lambda: self.client.calls.list(**filters))
            for call in calls:
                if number or call.direction == "inbound":
                    found[str(call.sid)] = {"status": call.status, "from": call._from, "start_time": call.start_time,
                                            "direction": call.direction}
        return found

    def queue_members(self, queue_name: str) -> list[tuple[str, Any]]:
        """The callers waiting in the Twilio queue named `queue_name`, front first: (CallSid, date_enqueued)."""
        queues = self._run("list the queues", lambda: self.client.queues.list(page_size=1000))
        for queue in queues:
            if queue.friendly_name == queue_name:
                members = self._run("list the queue's callers",
                                    lambda: self.client.queues(queue.sid).members.list(page_size=1000))
                return [(str(member.call_sid), member.date_enqueued) for member in members]
        return []

    def add_participant(self, conference: str, to: str, **options: Any) -> str:
        """Ring `to` into the conference named `conference`; returns the new participant's CallSid."""
        participant = self._run("add the participant", lambda: self.client.conferences(conference).participants.create(
            from_=self.settings.twilio.phone_number or "", to=to, **options))
        return str(participant.call_sid)

    def update_participant(self, conference_sid: str, call_sid: str, **changes: Any) -> None:
        """Hold, mute or coach a conference participant."""
        self._run("update the participant", lambda: self.client.conferences(conference_sid).participants(call_sid).update(**changes))

    def remove_participant(self, conference_sid: str, call_sid: str) -> None:
        """Take a participant out of the conference (their call carries on after its <Dial>, or ends)."""
        self._run("remove the participant", lambda: self.client.conferences(conference_sid).participants(call_sid).delete())

    def participant_status(self, conference_sid: str, call_sid: str) -> str | None:
        """A participant's status ("connected", ...), or None when the call is not in the conference."""
        try:
            participant = self._run("look up the participant",
                                    lambda: self.client.conferences(conference_sid).participants(call_sid).fetch())
        except TwilioUnavailable as exc:
            if exc.code == NOT_FOUND:
                return None
            raise
        return str(participant.status)

    def find_conference(self, friendly_name: str) -> str | None:
        """The SID of the live conference named `friendly_name` (in progress, or still waiting to start)."""
        for status in ("in-progress", "init"):
            found = self._run("look up the conference", lambda: self.client.conferences.list(
                friendly_name=friendly_name, status=status, limit=1))
            if found:
                return str(found[0].sid)
        return None

    def end_conference(self, conference_sid: str) -> None:
        """End a conference: every participant leaves it."""
        self._run("end the conference", lambda: self.client.conferences(conference_sid).update(status="completed"))

    def send_sms(self, to: str, body: str) -> str:
        """Send a text message; returns its Twilio SID."""
        message = self._run("send the text", lambda: self.client.messages.create(
            to=to, from_=self.settings.twilio.phone_number or "", body=body))
        return str(message.sid)


def init_app(app: Flask) -> None:
    """Give the app its gateway."""
    app.extensions["helpline.twilio"] = TwilioGateway(app.config["HELPLINE"])


def gateway() -> TwilioGateway:
    """The current app's Twilio gateway."""
    return current_app.extensions["helpline.twilio"]
