"""Signed webhook requests, sent the way Twilio sends them, with Twilio's failure codes."""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import urlencode, urljoin, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from twilio.request_validator import RequestValidator

HTTP_RETRIEVAL_FAILURE = 11200
TCP_CONNECTION_REFUSED = 11202
HTTP_CONNECTION_FAILURE = 11205
HTTP_BAD_HOST_NAME = 11210
INVALID_CONTENT_TYPE = 12300

#: Content types Twilio reads as TwiML.
TWIML_TYPES = {"text/xml", "application/xml", "text/html"}

ERROR_MESSAGES = {
    HTTP_RETRIEVAL_FAILURE: "HTTP retrieval failure",
    TCP_CONNECTION_REFUSED: "TCP connection refused",
    HTTP_CONNECTION_FAILURE: "HTTP connection failure",
    HTTP_BAD_HOST_NAME: "HTTP bad host name",
    INVALID_CONTENT_TYPE: "Invalid Content-Type",
    12100: "Document parse failure",
    12200: "Schema validation warning",
}


def resolve(base: str | None, url: str | None) -> str | None:
    """Resolve a TwiML URL against the document that contained it, as a browser would."""
    if url is None:
        return None
    url = url.strip()
    if not base:
        return url
    return urljoin(base, url)


def with_query(url: str, params: dict[str, str]) -> str:
    """Append `params` to `url`'s query string (how Twilio sends a GET webhook)."""
    if not params:
        return url
    parts = urlsplit(url)
    extra = urlencode(params)
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


@dataclass
class WebhookResponse:
    """What the application answered: status, body, content type, time taken and URL asked."""

    url: str
    method: str
    status_code: int
    body: str
    content_type: str
    elapsed: float


class WebhookError(Exception):
    """A webhook Twilio would count as failed; `code` is the debugger error code."""

    def __init__(self, code: int, detail: str, *, url: str, method: str, status_code: int | None = None,
                 body: str = "", elapsed: float = 0.0):
        """Keep what the debugger shows about the failed request."""
        super().__init__(f"{code} {ERROR_MESSAGES.get(code, '')}: {detail}")
        self.code = code
        self.message = ERROR_MESSAGES.get(code, "Error")
        self.detail = detail
        self.url = url
        self.method = method
        self.status_code = status_code
        self.body = body
        self.elapsed = elapsed


class WebhookSender:
    """Sends form-encoded, `X-Twilio-Signature`-signed requests to the application."""

    def __init__(self, auth_token: str, timeout: float):
        """Sign with `auth_token`; give up after `timeout` seconds like Twilio's 15 s limit."""
        self.validator = RequestValidator(auth_token)
        self.timeout = timeout
        self._session = requests.Session()
        # Calls run on many threads; a wide pool stops them queueing behind each other.
        adapter = HTTPAdapter(pool_connections=8, pool_maxsize=256)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.trust_env = False  # a local app must never be reached through a proxy

    def close(self) -> None:
        """Release pooled connections."""
        self._session.close()

    def sign(self, url: str, params: dict[str, str]) -> str:
        """Return the signature Twilio would send for a request to `url` with POST `params`."""
        return self.validator.compute_signature(url, params)

    def send(self, url: str, method: str, params: dict[str, str], *, expect_twiml: bool = True,
             audio_ok: bool = False) -> WebhookResponse:
        """Send one webhook and return the answer; raise `WebhookError` when Twilio would fail it.

        `audio_ok`: an audio file is a good answer too (a conference's waitUrl may name an MP3 or WAV).
        """
        method = (method or "POST").upper()
        params = {k: str(v) for k, v in params.items() if v is not None}
        if method == "GET":
            # Twilio puts GET parameters in the query string and signs the full URL alone.
            target, body = with_query(url, params), None
            signature = self.sign(target, {})
        else:
            target, body = url, params
            signature = self.sign(url, params)
        headers = {
            "X-Twilio-Signature": signature,
            "User-Agent": "TwilioProxy/1.1",
            "Accept": "*/*",
            "Cache-Control": "max-age=259200",
        }
        if urlsplit(target).scheme not in {"http", "https"}:
            raise WebhookError(HTTP_BAD_HOST_NAME, f"Not an HTTP URL: {target!r}", url=target, method=method)
        started = time.monotonic()
        try:
            response = self._session.request(method, target, data=body, headers=headers,
                                             timeout=(min(10.0, self.timeout), self.timeout),
                                             allow_redirects=True)
        except requests.exceptions.ConnectionError as exc:
            elapsed = time.monotonic() - started
            text = str(exc)
            if isinstance(exc, requests.exceptions.ConnectTimeout):
                raise WebhookError(HTTP_CONNECTION_FAILURE, f"Connection timed out: {text}", url=target,
                                   method=method, elapsed=elapsed) from None
            if "Name or service not known" in text or "getaddrinfo" in text:
                raise WebhookError(HTTP_BAD_HOST_NAME, text, url=target, method=method, elapsed=elapsed) from None
            if "refused" in text.lower():
                raise WebhookError(TCP_CONNECTION_REFUSED, text, url=target, method=method,
                                   elapsed=elapsed) from None
            raise WebhookError(HTTP_CONNECTION_FAILURE, text, url=target, method=method, elapsed=elapsed) from None
        except requests.exceptions.Timeout:
            elapsed = time.monotonic() - started
            raise WebhookError(HTTP_CONNECTION_FAILURE,
                               f"No HTTP response within {self.timeout:g} seconds", url=target,
                               method=method, elapsed=elapsed) from None
        except requests.exceptions.RequestException as exc:
            raise WebhookError(HTTP_CONNECTION_FAILURE, str(exc), url=target, method=method,
                               elapsed=time.monotonic() - started) from None
        with response:
            elapsed = time.monotonic() - started
            text = response.text
            content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
            status = response.status_code
        if elapsed > self.timeout:
            # The server trickled its answer past the deadline: Twilio would have hung up on it.
            raise WebhookError(HTTP_CONNECTION_FAILURE, f"No complete HTTP response within {self.timeout:g} "
                               "seconds", url=target, method=method, status_code=status, elapsed=elapsed)
        if not 200 <= status < 300:
            raise WebhookError(HTTP_RETRIEVAL_FAILURE, f"Got HTTP {status} response to {target}", url=target,
                               method=method, status_code=status, body=text[:2000], elapsed=elapsed)
        audio = audio_ok and content_type.startswith("audio/")
        if expect_twiml and status != 204 and content_type not in TWIML_TYPES and not audio:
            raise WebhookError(INVALID_CONTENT_TYPE, f"Content-Type {content_type or '(none)'} is not TwiML",
                               url=target, method=method, status_code=status, body=text[:2000],
                               elapsed=elapsed)
        return WebhookResponse(target, method, status, text, content_type, elapsed)
