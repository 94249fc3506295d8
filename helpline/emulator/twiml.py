"""Parse and validate TwiML voice documents against the subset of Twilio's schema we run."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

#: Twilio's debugger codes for document problems.
PARSE_FAILURE = 12100  # "Document parse failure"
SCHEMA_WARNING = 12200  # "Schema validation warning"

_SSML = {"break", "emphasis", "lang", "p", "phoneme", "prosody", "s", "say-as", "sub", "w", "amazon:effect",
         "amazon:domain"}

#: Verb -> attributes Twilio documents for it. Unknown attributes only warn, as on Twilio.
VERB_ATTRIBUTES: dict[str, set[str]] = {
    "Say": {"voice", "language", "loop"},
    "Play": {"loop", "digits"},
    "Pause": {"length"},
    "Gather": {"action", "method", "timeout", "finishOnKey", "numDigits", "input", "language", "hints",
               "partialResultCallback", "partialResultCallbackMethod", "profanityFilter", "speechTimeout",
               "speechModel", "enhanced", "actionOnEmptyResult", "bargeIn", "debug", "maxSpeechTime"},
    "Redirect": {"method"},
    "Hangup": set(),
    "Reject": {"reason"},
    "Enqueue": {"action", "method", "waitUrl", "waitUrlMethod", "workflowSid", "maxQueueSize"},
    "Leave": set(),
    "Dial": {"action", "method", "timeout", "hangupOnStar", "timeLimit", "callerId", "record", "trim",
             "recordingStatusCallback", "recordingStatusCallbackMethod", "recordingStatusCallbackEvent",
             "answerOnBridge", "ringTone", "recordingTrack", "sequential", "referUrl", "referMethod", "events"},
}

#: Dial noun -> documented attributes.
NOUN_ATTRIBUTES: dict[str, set[str]] = {
    "Number": {"sendDigits", "url", "method", "statusCallbackEvent", "statusCallback", "statusCallbackMethod",
               "byoc", "machineDetection", "amdStatusCallback", "amdStatusCallbackMethod"},
    "Client": {"url", "method", "statusCallbackEvent", "statusCallback", "statusCallbackMethod"},
    "Conference": {"muted", "beep", "startConferenceOnEnter", "endConferenceOnExit", "waitUrl", "waitMethod",
                   "maxParticipants", "record", "region", "coach", "trim", "statusCallbackEvent",
                   "statusCallback", "statusCallbackMethod", "recordingStatusCallback",
                   "recordingStatusCallbackMethod", "recordingStatusCallbackEvent", "eventCallbackUrl",
                   "jitterBufferSize", "participantLabel"},
    "Queue": {"url", "method", "reservationSid", "postWorkActivitySid"},
}

#: Real Twilio verbs this emulator does not perform; they are reported, never silently skipped.
UNSUPPORTED_VERBS = {"Record", "Connect", "Start", "Stop", "Pay", "Prompt", "Refer", "Sms", "Echo"}

#: Which verbs may appear in which kind of document (Twilio's nesting and waitUrl rules).
CONTEXT_VERBS: dict[str, set[str]] = {
    "call": set(VERB_ATTRIBUTES),
    # Enqueue's waitUrl: "Play, Say, Pause, Hangup, Redirect, Leave, Gather".
    "queue-wait": {"Play", "Say", "Pause", "Hangup", "Redirect", "Leave", "Gather"},
    # Conference waitUrl and <Queue url>: "Play, Say, Pause, Redirect".
    "conference-wait": {"Play", "Say", "Pause", "Redirect"},
    "queue-announce": {"Play", "Say", "Pause", "Redirect"},
    # A <Dial><Number url> whisper runs on the called party before bridging.
    "whisper": {"Play", "Say", "Pause", "Gather", "Hangup", "Redirect"},
}

GATHER_CHILDREN = {"Say", "Play", "Pause"}
METHODS = {"GET", "POST"}


class TwimlError(Exception):
    """A document Twilio would refuse; carries the debugger `code` and a `detail` line."""

    def __init__(self, code: int, detail: str):
        """Remember the Twilio error `code` and a human-readable `detail`."""
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


@dataclass
class Verb:
    """One TwiML element: its tag, attributes, text and nested elements."""

    name: str
    attrs: dict[str, str] = field(default_factory=dict)
    text: str = ""
    children: list["Verb"] = field(default_factory=list)

    def get(self, attr: str, default: str | None = None) -> str | None:
        """Return attribute `attr`, or `default` when it is absent."""
        return self.attrs.get(attr, default)

    def flag(self, attr: str, default: bool) -> bool:
        """Read a boolean attribute the way Twilio does ("true"/"false", case-insensitive)."""
        value = self.attrs.get(attr)
        if value is None:
            return default
        return value.strip().lower() == "true"

    def number(self, attr: str, default: float) -> float:
        """Read a numeric attribute, raising a schema error for a value Twilio would reject."""
        value = self.attrs.get(attr)
        if value is None or value.strip() == "":
            return default
        try:
            result = float(value)
        except ValueError:
            raise TwimlError(SCHEMA_WARNING, f"Attribute '{attr}' of <{self.name}> is not a number: {value!r}")
        if result < 0:
            raise TwimlError(SCHEMA_WARNING, f"Attribute '{attr}' of <{self.name}> must not be negative")
        return result

    def method(self, attr: str = "method", default: str = "POST") -> str:
        """Read an HTTP method attribute; only GET and POST are valid TwiML."""
        value = (self.attrs.get(attr) or default).upper()
        if value not in METHODS:
            raise TwimlError(SCHEMA_WARNING, f"Attribute '{attr}' of <{self.name}> must be GET or POST")
        return value


@dataclass
class Document:
    """A parsed TwiML document: the verbs in order and any non-fatal schema warnings."""

    verbs: list[Verb]
    warnings: list[str] = field(default_factory=list)


def _text(element: ET.Element) -> str:
    """Return the element's text content, SSML children included, with whitespace collapsed."""
    return " ".join("".join(element.itertext()).split())


def _check_attributes(element: ET.Element, allowed: set[str], warnings: list[str]) -> dict[str, str]:
    """Collect attributes, warning (12200) about ones the schema does not know."""
    for name in element.attrib:
        if name not in allowed:
            warnings.append(f"Attribute '{name}' is not allowed to appear in element '{element.tag}'")
    return dict(element.attrib)


def _convert_dial(element: ET.Element, warnings: list[str]) -> Verb:
    """Convert a <Dial>, checking its nouns."""
    attrs = _check_attributes(element, VERB_ATTRIBUTES["Dial"], warnings)
    nouns = []
    for child in element:
        if child.tag not in NOUN_ATTRIBUTES:
            if child.tag in {"Sip", "Sim", "Application", "WhatsApp"}:
                raise TwimlError(SCHEMA_WARNING, f"<Dial><{child.tag}> is not supported by the emulator")
            raise TwimlError(SCHEMA_WARNING, f"Invalid content was found starting with element '{child.tag}' "
                                             "in element 'Dial'")
        noun_attrs = _check_attributes(child, NOUN_ATTRIBUTES[child.tag], warnings)
        if child.tag == "Client" and child.find("Identity") is not None:
            identity = _text(child.find("Identity"))
        else:
            identity = (child.text or "").strip()
        nouns.append(Verb(child.tag, noun_attrs, identity))
    text = (element.text or "").strip()
    if not nouns and not text:
        raise TwimlError(SCHEMA_WARNING, "<Dial> needs a number or a noun to dial")
    if text and not nouns:
        nouns.append(Verb("Number", {}, text))
    return Verb("Dial", attrs, text, nouns)


def _convert(element: ET.Element, warnings: list[str], parent: str) -> Verb:
    """Convert one verb element (and its nested verbs) after checking the schema."""
    tag = element.tag
    if tag in UNSUPPORTED_VERBS:
        return Verb(tag, dict(element.attrib), _text(element))
    if tag not in VERB_ATTRIBUTES:
        raise TwimlError(SCHEMA_WARNING, f"Invalid content was found starting with element '{tag}' "
                                         f"in element '{parent}'")
    if tag == "Dial":
        return _convert_dial(element, warnings)
    attrs = _check_attributes(element, VERB_ATTRIBUTES[tag], warnings)
    children: list[Verb] = []
    if tag == "Gather":
        for child in element:
            if child.tag not in GATHER_CHILDREN:
                raise TwimlError(SCHEMA_WARNING, f"<{child.tag}> cannot be nested in <Gather> "
                                                 "(only Say, Play and Pause)")
            children.append(_convert(child, warnings, "Gather"))
    elif tag == "Say":
        for child in element:
            if child.tag not in _SSML:
                raise TwimlError(SCHEMA_WARNING, f"<{child.tag}> cannot be nested in <Say>")
    elif len(element):
        raise TwimlError(SCHEMA_WARNING, f"<{element[0].tag}> cannot be nested in <{tag}>")
    if tag == "Reject" and attrs.get("reason", "rejected") not in {"rejected", "busy"}:
        raise TwimlError(SCHEMA_WARNING, "Reject reason must be 'rejected' or 'busy'")
    return Verb(tag, attrs, _text(element), children)


def parse(body: str | bytes) -> Document:
    """Parse a TwiML voice document; raise `TwimlError` with Twilio's code when it is unusable."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    if not body or not body.strip():
        raise TwimlError(PARSE_FAILURE, "Empty document")
    if body[0].isspace() and body.lstrip().startswith("<?xml"):
        # Twilio's parser rejects anything before the XML declaration.
        raise TwimlError(PARSE_FAILURE, "Content is not allowed in prolog")
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise TwimlError(PARSE_FAILURE, f"XML is not well-formed: {exc}") from None
    if root.tag != "Response":
        raise TwimlError(PARSE_FAILURE, f"The root element must be <Response>, not <{root.tag}>")
    warnings: list[str] = []
    verbs = [_convert(element, warnings, "Response") for element in root]
    return Document(verbs, warnings)
