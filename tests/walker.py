"""A small Twilio stand-in for unit tests: follows the service's TwiML through Flask's test client.

(The end-to-end tests use the real emulator over HTTP; this one keeps unit tests quick and exact.)
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from urllib.parse import urljoin

from .conftest import PUBLIC_URL, Twilio, new_call_sid


class CallWalker:
    """One caller's call, driven step by step."""

    def __init__(self, twilio: Twilio, caller: str = "+447911123456", sid: str | None = None):
        self.twilio = twilio
        self.sid = sid or new_call_sid()
        self.caller = caller
        self.url = PUBLIC_URL + "/voice/incoming"
        self.xml: ET.Element | None = None
        self.heard: list[str] = []
        #: The waitUrl and action of the last Enqueue, absolute.
        self.queue: dict[str, str] = {}

    def params(self, **extra: str) -> dict[str, str]:
        """The parameters Twilio sends with every voice webhook."""
        return {"CallSid": self.sid, "AccountSid": "AC" + "1" * 32, "From": self.caller, "To": "+443000000000",
                "CallStatus": "in-progress", "Direction": "inbound", "ApiVersion": "2010-04-01", **extra}

    def request(self, url: str, **extra: str) -> ET.Element:
        """POST to `url` (resolved against the last document, as Twilio does) and parse the reply."""
        absolute = urljoin(self.url, url)
        response = self.twilio.post(absolute, self.params(**extra))
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.mimetype == "text/xml"
        self.url = absolute
        self.xml = ET.fromstring(response.data)
        self.heard += [say.text or "" for say in self.xml.iter("Say")]
        queue = self.xml.find("Enqueue")
        if queue is not None:
            self.queue = {"wait": urljoin(absolute, queue.get("waitUrl", "")), "action": urljoin(absolute, queue.get("action", ""))}
        return self.xml

    def start(self) -> ET.Element:
        """Ring the helpline."""
        return self.request(self.url)

    def follow(self) -> ET.Element:
        """Follow the document's trailing Redirect (a say step, or silence at a menu)."""
        assert self.xml is not None
        redirect = self.xml.find("Redirect")
        assert redirect is not None, ET.tostring(self.xml)
        return self.request(redirect.text or "")

    def until_menu(self) -> ET.Element:
        """Follow redirects until the caller is asked for a key (or the call ends or queues)."""
        assert self.xml is not None
        while self.xml.find("Gather") is None and self.xml.find("Redirect") is not None:
            self.follow()
        return self.xml

    def press(self, key: str) -> ET.Element:
        """Press a key at the current menu, then walk on to the next menu, queue or hang-up."""
        self.until_menu()
        assert self.xml is not None
        gather = self.xml.find("Gather")
        assert gather is not None, ET.tostring(self.xml)
        self.request(gather.get("action", ""), Digits=key)
        return self.until_menu()

    def silence(self) -> ET.Element:
        """Say nothing at the current menu: Twilio falls through to the Redirect."""
        self.until_menu()
        self.follow()
        return self.until_menu()

    @property
    def text(self) -> str:
        """Everything the caller has heard, as one string."""
        return " ".join(self.heard)

    def enqueue(self) -> ET.Element | None:
        """The Enqueue element of the current document, if the caller is being queued."""
        assert self.xml is not None
        return self.xml.find("Enqueue")

    def hung_up(self) -> bool:
        """Whether the current document ends the call."""
        assert self.xml is not None
        return self.xml.find("Hangup") is not None

    def say(self, words: str) -> ET.Element:
        """Say `words` at the current menu (Twilio's SpeechResult), then walk on like `press`."""
        self.until_menu()
        assert self.xml is not None
        gather = self.xml.find("Gather")
        assert gather is not None and "speech" in (gather.get("input") or ""), ET.tostring(self.xml)
        self.request(gather.get("action", ""), SpeechResult=words, Confidence="0.9")
        return self.until_menu()
