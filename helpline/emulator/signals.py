"""Exceptions that unwind a call's TwiML execution when something outside it happens."""

from __future__ import annotations


class Signal(Exception):
    """Base of the control-flow signals raised inside a call's thread."""


class CallEnded(Signal):
    """The call is over (caller hung up, `<Hangup>`, REST `Status=completed`...)."""

    def __init__(self, reason: str):
        """Remember why the call ended."""
        super().__init__(reason)
        self.reason = reason


class Redirected(Signal):
    """The REST API (or a queue-member dequeue) sent the call to a new document."""

    def __init__(self, url: str | None, method: str = "POST", twiml: str | None = None,
                 queue_result: str = "redirected"):
        """Keep where to go next; `queue_result` is what a waiting caller's Enqueue action reports."""
        super().__init__(url or "inline TwiML")
        self.url = url
        self.method = method
        self.twiml = twiml
        self.queue_result = queue_result


class Dequeued(Signal):
    """A `<Dial><Queue>` picked this waiting caller; carries the bridge to join."""

    def __init__(self, bridge, url: str | None, method: str):
        """Keep the bridge and the optional `<Queue url>` document to play first."""
        super().__init__("dequeued")
        self.bridge = bridge
        self.url = url
        self.method = method


class LeaveQueue(Signal):
    """`<Leave>` ran inside a waitUrl document."""


class ConferenceStarted(Signal):
    """The conference this caller waits in has started; stop the wait music."""


class ConferenceExit(Signal):
    """This participant is out of the conference (kicked, or the conference ended)."""

    def __init__(self, reason: str):
        """Remember why the participant left."""
        super().__init__(reason)
        self.reason = reason


class AppError(Exception):
    """A webhook or document failed the way that makes Twilio play its application-error message."""

    def __init__(self, code: int, detail: str):
        """Keep the debugger code and detail already recorded as an alert."""
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
