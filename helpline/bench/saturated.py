"""The saturated benchmark: callers back to back, the helpline beside a bare Flask app.

A small, lean Twilio stands in for the emulator here (the emulator plays prompts; this must not):
each of a few driver threads places a call, follows the TwiML - a Redirect is fetched, a Gather is
answered at once with the caller's next key - until the call is queued or hung up, then sends the
final status callback and starts the next call. Every request is signed as Twilio signs it. The
same driver then runs against the bare app (`bare.py`), which checks the signature and returns a
fixed one-menu TwiML, served the same way. Webhooks per second, side by side, show what the
helpline's own work (database, IVR, routing, Socket.IO) costs.

The driver shares the machine's cores with the servers, as the emulator does in the paced run;
both apps are measured with the same driver, so the comparison holds.
"""

from __future__ import annotations

import secrets
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urljoin

import requests
from twilio.request_validator import RequestValidator

from ..server import WORKER_CLASSES
from .report import summary
from .stack import Child, Stack, StackOptions, free_port

#: Driver threads per serving process: enough to keep every process busy, few enough not to starve it.
THREADS_PER_PROCESS = 8
#: Keys each caller presses, one per menu: my own health, eligible, mental health.
KEYS = ("1", "1", "1")


class Driver:
    """Callers back to back against `urls` (one per serving process) for `seconds`."""

    def __init__(self, urls: list[str], auth_token: str, account_sid: str, seconds: float,
                 serving_cpu_ms: Callable[[], int]):
        self.urls = urls
        #: CPU the serving processes have used so far, in ms (read at both ends of the measured time).
        self.serving_cpu_ms = serving_cpu_ms
        self.validator = RequestValidator(auth_token)
        self.account_sid = account_sid
        self.seconds = seconds
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.calls = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def _post(self, http: requests.Session, url: str, params: dict[str, str]) -> str:
        signature = self.validator.compute_signature(url, params)
        started = time.perf_counter()
        response = http.post(url, data=params, headers={"X-Twilio-Signature": signature}, timeout=30)
        elapsed = (time.perf_counter() - started) * 1000
        with self._lock:
            self.latencies.append(elapsed)
            if response.status_code >= 400:
                self.errors.append(f"{response.status_code} {url}")
        return response.text if response.headers.get("Content-Type", "").startswith("text/xml") else ""

    def _call(self, http: requests.Session, base: str) -> None:
        """One caller, from ringing in to the final status callback."""
        sid = "CA" + secrets.token_hex(16)
        params = {"CallSid": sid, "AccountSid": self.account_sid, "From": f"+4477009{secrets.randbelow(10**5):05d}",
                  "To": "+443300000000", "Direction": "inbound", "ApiVersion": "2010-04-01"}
        url: str | None = f"{base}/voice/incoming"
        keys = list(KEYS)
        hops = 0
        while url is not None and hops < 20 and not self._stop.is_set():
            hops += 1
            sent = {**params, "CallStatus": "in-progress"}
            if "Digits" in params:
                sent["Digits"] = params.pop("Digits")
            body = self._post(http, url, sent)
            url = None
            try:
                document = ET.fromstring(body) if body else None
            except ET.ParseError:
                document = None
            if document is None:
                break
            for verb in document:
                if verb.tag == "Redirect" and verb.text:
                    url = urljoin(base + "/", verb.text.strip())
                    break
                if verb.tag == "Gather" and keys:
                    params["Digits"] = keys.pop(0)
                    url = urljoin(base + "/", verb.get("action") or "/voice/incoming")
                    break
                if verb.tag in ("Enqueue", "Hangup", "Dial"):
                    break
        # The caller hangs up: the final status callback (which also takes the call out of line).
        self._post(http, f"{base}/voice/status", {**params, "CallStatus": "completed", "CallDuration": "30",
                                                  "SequenceNumber": "9"})
        with self._lock:
            self.calls += 1

    def _loop(self, base: str) -> None:
        http = requests.Session()
        http.trust_env = False
        try:
            while not self._stop.is_set():
                try:
                    self._call(http, base)
                except requests.RequestException as exc:
                    with self._lock:
                        self.errors.append(exc.__class__.__name__)
        finally:
            http.close()

    def run(self) -> dict[str, Any]:
        """Drive every process with THREADS_PER_PROCESS threads for `seconds`; returns the figures."""
        threads = [threading.Thread(target=self._loop, args=(url,), daemon=True)
                   for url in self.urls for _ in range(THREADS_PER_PROCESS)]
        # A short warm-up, not counted: connection pools, caches and the first queries.
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        time.sleep(min(2.0, self.seconds / 4))
        with self._lock:
            self.latencies.clear()
            warm_calls = self.calls
            cpu_from = self.serving_cpu_ms()
        measured_from = time.perf_counter()
        time.sleep(self.seconds)
        with self._lock:
            count, latencies, calls = len(self.latencies), list(self.latencies), self.calls - warm_calls
            cpu_ms = self.serving_cpu_ms() - cpu_from
        elapsed = time.perf_counter() - measured_from
        self._stop.set()
        for thread in threads:
            thread.join(timeout=35)
        return {"webhooks_per_s": round(count / elapsed, 1), "calls_per_s": round(calls / elapsed, 2),
                "cpu_ms_per_webhook": round(cpu_ms / count, 2) if count else None,
                "latency_ms": summary(latencies), "errors": len(self.errors), "error_examples": self.errors[:5],
                "wall_s": round(time.perf_counter() - started, 1)}


def worker_cpu_ms(children: list[Child]) -> int:
    """CPU used so far by the serving workers of `children` (gunicorn's workers, not their supervisors)."""
    return sum(figures.get("cpu_ms", 0) for child in children
               for role, figures in child.memory().items() if role.startswith("worker"))


def _bare_processes(workdir: Path, processes: int, auth_token: str, worker: str) -> list[Child]:
    children = []
    for index in range(processes):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        child = Child(f"bare-{index}", [sys.executable, "-m", "helpline.bench.bare", "--port", str(port),
                                         "--auth-token", auth_token, "--public-url", url, "--worker", worker],
                      {}, workdir / f"bare-{index}.log", url)
        children.append(child)
    try:
        for child in children:
            child.wait_ready("/")
    except BaseException:
        for child in children:
            child.stop()
        raise
    return children


def run_saturated(options: StackOptions, seconds: float) -> dict[str, Any]:
    """Saturate the helpline, then the bare app, with the same driver; returns both figures and memory."""
    results: dict[str, Any] = {"saturated": {}, "memory": {}}
    with Stack(options) as stack:
        env = stack.base_env
        urls = [stack.service_url(index) for index in range(options.processes)]
        services = [stack.service(index) for index in range(options.processes)]
        helpline = Driver(urls, env["TWILIO_AUTH_TOKEN"], env["TWILIO_ACCOUNT_SID"], seconds,
                          lambda: worker_cpu_ms(services)).run()
        results["memory"] = stack.memory()
        engine = stack.sql_engine()
        try:
            from sqlalchemy import text

            with engine.connect() as connection:
                recorded = connection.execute(text("SELECT COUNT(*) FROM calls")).scalar_one()
        finally:
            engine.dispose()
    token = secrets.token_hex(16)
    # Served as `helpline serve` serves the helpline on this database, so that only the app differs.
    bare_children = _bare_processes(options.workdir, options.processes, token, WORKER_CLASSES[options.database])
    try:
        bare = Driver([child.url or "" for child in bare_children], token, "AC" + "0" * 32, seconds,
                      lambda: worker_cpu_ms(bare_children)).run()
        for child in bare_children:
            results["memory"][child.name] = child.memory()
    finally:
        for child in bare_children:
            child.stop()
    results["saturated"] = {
        "helpline_webhooks_per_s": helpline["webhooks_per_s"],
        "bare_flask_webhooks_per_s": bare["webhooks_per_s"],
        "helpline_share_of_bare": round(helpline["webhooks_per_s"] / bare["webhooks_per_s"], 2) if bare["webhooks_per_s"] else None,
        "helpline_calls_per_s": helpline["calls_per_s"],
        "helpline_worker_cpu_ms_per_webhook": helpline["cpu_ms_per_webhook"],
        "bare_flask_worker_cpu_ms_per_webhook": bare["cpu_ms_per_webhook"],
        "helpline_latency_ms": helpline["latency_ms"],
        "bare_flask_latency_ms": bare["latency_ms"],
        "helpline_errors": helpline["errors"],
        "bare_flask_errors": bare["errors"],
        "helpline_calls_recorded": recorded,
        "driver_threads_per_process": THREADS_PER_PROCESS,
    }
    if helpline["error_examples"] or bare["error_examples"]:
        results.setdefault("notes", []).append(f"errors: helpline {helpline['error_examples']}, bare {bare['error_examples']}")
    return results
