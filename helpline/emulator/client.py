"""A small Python client for the emulator's control API, for end-to-end tests and scripts.

    with EmulatorClient("http://127.0.0.1:5050") as phone:
        sid = phone.place_call(from_="+447911123456")
        phone.wait_for(sid, "gather.started")
        phone.press(sid, "1")
        phone.wait_for(sid, "say", text_contains="queue")
        phone.hangup(sid)
        print("\\n".join(phone.transcript(sid)))
"""

from __future__ import annotations

import time
from typing import Any, Callable

import requests

from . import transcript as transcript_lines

Event = dict[str, Any]
Matcher = str | Callable[[Event], bool]


class EmulatorError(Exception):
    """The emulator refused a request or could not be reached."""

    def __init__(self, message: str, status: int | None = None, payload: Any = None):
        """Keep the HTTP status and JSON body when there was one."""
        super().__init__(message)
        self.status = status
        self.payload = payload


def _matches(event: Event, matcher: Matcher, fields: dict[str, Any]) -> bool:
    """Does `event` satisfy the kind-or-predicate `matcher` and the `fields` filters?"""
    if callable(matcher):
        if not matcher(event):
            return False
    elif event.get("kind") != matcher:
        return False
    for name, wanted in fields.items():
        if name.endswith("_contains"):
            value = event.get(name[: -len("_contains")])
            if value is None or str(wanted).lower() not in str(value).lower():
                return False
        elif event.get(name) != wanted:
            return False
    return True


class EmulatorClient:
    """Place calls, press keys, talk, hang up, act as softphones and read the outbox and alerts."""

    def __init__(self, base_url: str = "http://127.0.0.1:5050", timeout: float = 10.0):
        """Talk to the emulator at `base_url`; `timeout` bounds each plain HTTP request."""
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()
        self._session.trust_env = False  # never route a local emulator through a proxy

    # ------------------------------------------------------------------ plumbing

    def close(self) -> None:
        """Release the HTTP connection pool."""
        self._session.close()

    def __enter__(self) -> "EmulatorClient":
        """Use as a context manager."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close on leaving the block."""
        self.close()

    def _request(self, method: str, path: str, *, json: Any = None, params: dict | None = None,
                 timeout: float | None = None) -> Any:
        """Send one request and return its JSON, raising `EmulatorError` on failure."""
        url = f"{self.base_url}{path}"
        try:
            response = self._session.request(method, url, json=json, params=params, timeout=timeout or self.timeout)
        except requests.RequestException as exc:
            raise EmulatorError(f"Cannot reach the emulator at {self.base_url}: {exc}") from None
        with response:
            try:
                payload = response.json()
            except ValueError:
                payload = response.text
            if response.status_code >= 400:
                detail = payload.get("detail") if isinstance(payload, dict) else payload
                error = payload.get("error") if isinstance(payload, dict) else response.reason
                raise EmulatorError(f"{method} {path} -> {response.status_code} {error}: {detail}",
                                    response.status_code, payload)
            return payload

    def _poll(self, path: str, after: int, wait: float) -> dict[str, Any]:
        """One long-poll request."""
        return self._request("GET", path, params={"after": after, "wait": wait}, timeout=wait + self.timeout)

    def _wait_for(self, path: str, matcher: Matcher, timeout: float, after: int, fields: dict[str, Any],
                  key: str = "events") -> Event:
        """Long-poll `path` until an event matches; raise TimeoutError with what was seen."""
        deadline = time.monotonic() + timeout
        seen: list[Event] = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                tail = "\n  ".join(transcript_lines.lines(seen[-15:]))
                raise TimeoutError(f"No {matcher if isinstance(matcher, str) else 'matching'} event {fields or ''} "
                                   f"within {timeout:g} s at {path}; last events:\n  {tail}")
            page = self._poll(path, after, min(remaining, 5.0))
            for event in page.get(key, []):
                seen.append(event)
                after = max(after, event["seq"])
                if _matches(event, matcher, fields):
                    return event

    # ------------------------------------------------------------------ emulator

    def health(self) -> dict[str, Any]:
        """The emulator's health document (raises EmulatorError if unreachable)."""
        return self._request("GET", "/emulator/health")

    def wait_until_up(self, timeout: float = 10.0) -> dict[str, Any]:
        """Poll /emulator/health until it answers."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.health()
            except EmulatorError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def config(self) -> dict[str, Any]:
        """The emulator's public configuration (phone number, Voice URL, time scale...)."""
        return self._request("GET", "/emulator/config")

    # ------------------------------------------------------------------ calls

    def place_call(self, from_: str = "+447911123456", to: str | None = None, *, url: str | None = None,
                   keys: list[str] | None = None, status_callback: str | None = None) -> str:
        """Dial the helpline as `from_` ("anonymous" withholds the number); returns the CallSid.

        `keys` are pressed one entry per Gather, after its prompt ("" stays silent at that Gather).
        `url` and `status_callback` replace the emulator's configured ones for this call.
        """
        payload: dict[str, Any] = {"from": from_}
        if to:
            payload["to"] = to
        if url:
            payload["url"] = url
        if status_callback:
            payload["status_callback"] = status_callback
        if keys:
            payload["script"] = list(keys)
        return self._request("POST", "/emulator/calls", json=payload)["sid"]

    def press(self, sid: str, digits: str, *, at_next_gather: bool = False) -> bool:
        """Press keys now (True if a Gather heard them) or queue them for the next Gather."""
        body = {"digits": digits, "when": "next-gather" if at_next_gather else "now"}
        return self._request("POST", f"/emulator/calls/{sid}/digits", json=body)["accepted"]

    def hangup(self, sid: str) -> dict[str, Any]:
        """The caller hangs up."""
        return self._request("POST", f"/emulator/calls/{sid}/hangup")

    def say(self, sid: str, text: str) -> list[str]:
        """The caller talks; returns the SIDs of the legs that heard it."""
        return self._request("POST", f"/emulator/calls/{sid}/say", json={"text": text})["heard_by"]

    def call(self, sid: str) -> dict[str, Any]:
        """The call's state and all its events."""
        return self._request("GET", f"/emulator/calls/{sid}")

    def calls(self, live: bool = False) -> list[dict[str, Any]]:
        """Recent calls, newest first."""
        return self._request("GET", "/emulator/calls", params={"live": "1" if live else "0"})["calls"]

    def events(self, sid: str, after: int = 0, wait: float = 0) -> list[Event]:
        """The call's events after `after`, waiting up to `wait` seconds for one."""
        return self._poll(f"/emulator/calls/{sid}/events", after, wait)["events"]

    def wait_for(self, sid: str, kind_or_predicate: Matcher, timeout: float = 10.0, *, after: int = 0,
                 **fields: Any) -> Event:
        """Wait for the call's first event after `after` of that kind (or passing the predicate).

        Keyword filters must equal the event's fields; `<field>_contains` matches a substring,
        e.g. `wait_for(sid, "say", text_contains="press 1")` or `wait_for(sid, "status", status="completed")`.
        """
        return self._wait_for(f"/emulator/calls/{sid}/events", kind_or_predicate, timeout, after, fields)

    def wait_until_ended(self, sid: str, timeout: float = 10.0) -> dict[str, Any]:
        """Wait for the call to end and return its final state."""
        self.wait_for(sid, "ended", timeout)
        return self.call(sid)

    def transcript(self, sid: str) -> list[str]:
        """The call as readable lines."""
        return transcript_lines.lines(self.call(sid)["events"])

    # ------------------------------------------------------------------ softphones (clients) and phones

    def _device(self, identity: str, kind: str) -> str:
        """The control-API path of a device."""
        name = identity.split(":", 1)[1] if identity.startswith("client:") else identity
        return f"/emulator/{kind}/{requests.utils.quote(name, safe='')}"

    def register_client(self, identity: str, auto_answer: bool = False) -> dict[str, Any]:
        """Be the browser client `identity` (what `<Dial><Client>identity</Client>` rings)."""
        return self._request("POST", self._device(identity, "clients") + "/register", json={"auto_answer": auto_answer})

    def unregister_client(self, identity: str) -> dict[str, Any]:
        """Take the client offline."""
        return self._request("POST", self._device(identity, "clients") + "/unregister")

    def client_events(self, identity: str, after: int = 0, wait: float = 0) -> list[Event]:
        """The client's events (incoming, answered, say, heard, hangup...)."""
        return self._poll(self._device(identity, "clients") + "/events", after, wait)["events"]

    def client_wait_for(self, identity: str, kind_or_predicate: Matcher, timeout: float = 10.0, *, after: int = 0,
                        **fields: Any) -> Event:
        """Wait for one of the client's events, like `wait_for`."""
        return self._wait_for(self._device(identity, "clients") + "/events", kind_or_predicate, timeout, after,
                              fields)

    def answer_client(self, identity: str) -> str:
        """Answer the client's ringing call; returns that leg's CallSid."""
        return self._request("POST", self._device(identity, "clients") + "/answer")["call_sid"]

    def reject_client(self, identity: str) -> str:
        """Decline the client's ringing call."""
        return self._request("POST", self._device(identity, "clients") + "/reject")["call_sid"]

    def hangup_client(self, identity: str) -> str:
        """Hang up the client's call."""
        return self._request("POST", self._device(identity, "clients") + "/hangup")["call_sid"]

    def client_say(self, identity: str, text: str) -> list[str]:
        """The client's user talks on the connected call."""
        return self._request("POST", self._device(identity, "clients") + "/say", json={"text": text})["heard_by"]

    def client_press(self, identity: str, digits: str) -> bool:
        """The client's user presses keys on the connected call."""
        return self._request("POST", self._device(identity, "clients") + "/digits", json={"digits": digits})["accepted"]

    def register_phone(self, number: str, auto_answer: bool = False, answered_by: str | None = None) -> dict[str, Any]:
        """Be the phone `number` (what `<Dial><Number>` or a REST call to it rings).

        `answered_by` ("machine_start", ...) makes it voicemail to calls placed with MachineDetection.
        """
        payload: dict[str, Any] = {"auto_answer": auto_answer}
        if answered_by is not None:
            payload["answered_by"] = answered_by
        return self._request("POST", self._device(number, "phones") + "/register", json=payload)

    def phone_wait_for(self, number: str, kind_or_predicate: Matcher, timeout: float = 10.0, *, after: int = 0,
                       **fields: Any) -> Event:
        """Wait for one of the phone's events."""
        return self._wait_for(self._device(number, "phones") + "/events", kind_or_predicate, timeout, after, fields)

    def answer_phone(self, number: str) -> str:
        """Answer the phone's ringing call."""
        return self._request("POST", self._device(number, "phones") + "/answer")["call_sid"]

    def reject_phone(self, number: str) -> str:
        """Decline the phone's ringing call."""
        return self._request("POST", self._device(number, "phones") + "/reject")["call_sid"]

    def hangup_phone(self, number: str) -> str:
        """Hang up the phone's call."""
        return self._request("POST", self._device(number, "phones") + "/hangup")["call_sid"]

    def phone_say(self, number: str, text: str) -> list[str]:
        """The phone's user talks."""
        return self._request("POST", self._device(number, "phones") + "/say", json={"text": text})["heard_by"]

    # ------------------------------------------------------------------ outbox, alerts, rooms

    def messages(self, after: int = 0, wait: float = 0) -> list[Event]:
        """SMS sent through the Messages API (each with sid, to, from, body, status)."""
        return self._poll("/emulator/messages", after, wait)["messages"]

    def wait_for_message(self, predicate: Callable[[Event], bool] | None = None, timeout: float = 10.0, *,
                         after: int = 0, **fields: Any) -> Event:
        """Wait for an SMS, e.g. `wait_for_message(to="+4477...", body_contains="call you back")`."""
        return self._wait_for("/emulator/messages", predicate or (lambda e: True), timeout, after, fields,
                              key="messages")

    def wait_for_mail(self, predicate: Callable[[Event], bool] | None = None, timeout: float = 10.0, *,
                      after: int = 0) -> Event:
        """Wait for an email the mail catcher caught (each with to, from, subject, body)."""
        return self._wait_for("/emulator/mail", predicate or (lambda e: True), timeout, after, {}, key="mail")

    def alerts(self, after: int = 0, wait: float = 0, call_sid: str | None = None) -> list[Event]:
        """Debugger alerts (code, message, detail, level, call_sid, url...)."""
        params: dict[str, Any] = {"after": after, "wait": wait}
        if call_sid:
            params["call_sid"] = call_sid
        return self._request("GET", "/emulator/alerts", params=params, timeout=wait + self.timeout)["alerts"]

    def wait_for_alert(self, predicate: Callable[[Event], bool] | None = None, timeout: float = 10.0, *,
                       after: int = 0, **fields: Any) -> Event:
        """Wait for a debugger alert, e.g. `wait_for_alert(code=11200)`."""
        return self._wait_for("/emulator/alerts", predicate or (lambda e: True), timeout, after, fields,
                              key="alerts")

    def queues(self) -> list[dict[str, Any]]:
        """Queues and their waiting callers."""
        return self._request("GET", "/emulator/queues")["queues"]

    def conferences(self) -> list[dict[str, Any]]:
        """Conferences and their participants."""
        return self._request("GET", "/emulator/conferences")["conferences"]

    def media(self, sid: str) -> dict[str, Any] | None:
        """A leg's audio: frames in and out and whom it hears; None when no browser carries its audio."""
        try:
            return self._request("GET", f"/emulator/calls/{sid}/media")
        except EmulatorError as exc:
            if exc.status == 404:
                return None
            raise

    def signalling(self) -> dict[str, Any]:
        """The Voice SDK connections and what was said over them."""
        return self._request("GET", "/emulator/signalling")

    def drop_signalling(self, identity: str) -> int:
        """Close every SDK socket of `identity`, as a network fault would; returns how many."""
        return self._request("POST", f"/emulator/signalling/{identity}/drop")["dropped"]
