"""A small failover proxy in front of the serving processes, for `helpline bench --fault kill`: what
deploy/nginx/helpline.conf does in production, reduced to what a killed process tests.

Requests go to the serving processes in turn. One whose process refuses the connection (it is dead)
goes to the next process, whatever its method: it never reached a process. Twilio's webhooks
(/voice/, /sms/) also go to the next process when the first one reset the connection, gave no
answer or answered 502/503, as nginx's `proxy_next_upstream error timeout http_502 http_503
non_idempotent` does: two tries in all. Any other request that reached a process is never sent
again. A process that refused a connection is passed over for a few seconds (nginx's `max_fails`,
`fail_timeout`).

Run as its own process: `python -m helpline.bench.failover --port P URL [URL ...]`.
"""

from __future__ import annotations

import http.client
import itertools
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

#: Seconds a process that refused a connection is passed over.
FAIL_TIMEOUT_S = 5.0
#: Seconds to connect to a process, and to wait for its answer (nginx: proxy_connect_timeout, proxy_read_timeout).
CONNECT_TIMEOUT_S = 2.0
READ_TIMEOUT_S = 10.0
#: Tries in all for one request (nginx: proxy_next_upstream_tries).
TRIES = 2
#: Paths whose requests may be sent again after a process had them: Twilio's webhooks.
WEBHOOKS = ("/voice/", "/sms/")
#: Headers that belong to one connection, not to the request.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer"}


class Upstreams:
    """The serving processes, taken in turn, those that refused a connection lately passed over."""

    def __init__(self, urls: list[str]):
        self.addresses = [(urlsplit(url).hostname or "127.0.0.1", urlsplit(url).port or 80) for url in urls]
        self._turn = itertools.cycle(range(len(self.addresses)))
        self._down_until = [0.0] * len(self.addresses)
        self._lock = threading.Lock()

    def order(self) -> list[int]:
        """Every process, the next in turn first, those marked down after the rest."""
        with self._lock:
            first = next(self._turn)
            now = time.monotonic()
            ring = [(first + step) % len(self.addresses) for step in range(len(self.addresses))]
            return [index for index in ring if self._down_until[index] <= now] + \
                   [index for index in ring if self._down_until[index] > now]

    def failed(self, index: int) -> None:
        """The process refused a connection: pass it over for a while."""
        with self._lock:
            self._down_until[index] = time.monotonic() + FAIL_TIMEOUT_S


class Proxy(BaseHTTPRequestHandler):
    """Forwards one request, failing over as the module says."""

    protocol_version = "HTTP/1.1"
    upstreams: Upstreams

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass  # quiet: the serving processes log what matters

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {name: value for name, value in self.headers.items() if name.lower() not in HOP_BY_HOP}
        resendable = self.path.startswith(WEBHOOKS) or self.command in ("GET", "HEAD")
        tries = 0
        for index in self.upstreams.order():
            if tries >= TRIES:
                break
            tries += 1
            host, port = self.upstreams.addresses[index]
            connection = http.client.HTTPConnection(host, port, timeout=CONNECT_TIMEOUT_S)
            try:
                connection.connect()
            except OSError:
                # Never reached the process: any request may go to the next one.
                self.upstreams.failed(index)
                connection.close()
                continue
            try:
                connection.sock.settimeout(READ_TIMEOUT_S)
                connection.request(self.command, self.path, body=body, headers=headers)
                response = connection.getresponse()
                payload = response.read()
            except OSError:
                connection.close()
                if resendable:
                    continue
                self._answer(502, [], b"the process failed while it had the request")
                return
            connection.close()
            if response.status in (502, 503) and resendable and tries < TRIES:
                continue
            self._answer(response.status, response.getheaders(), payload)
            return
        self._answer(502, [], b"no serving process answered")

    def _answer(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
        self.send_response_only(status)
        for name, value in headers:
            if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _forward


def serve(port: int, urls: list[str]) -> None:
    """Proxy 127.0.0.1:`port` to `urls` until killed."""
    handler = type("BoundProxy", (Proxy,), {"upstreams": Upstreams(urls)})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    print(f"failover proxy on http://127.0.0.1:{port} for {', '.join(urls)}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    serve(int(sys.argv[sys.argv.index("--port") + 1]), [arg for arg in sys.argv[1:] if arg.startswith("http")])
