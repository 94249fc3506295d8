"""Background delivery of callbacks, in order per call, without holding up the call."""

from __future__ import annotations

import logging
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

log = logging.getLogger(__name__)


class OrderedDispatcher:
    """Runs jobs on a small thread pool; jobs sharing a key run one at a time, in submission order.

    Twilio sends status callbacks asynchronously; keeping each call's callbacks in order makes the
    emulator's behaviour reproducible while a slow callback endpoint still never stalls a call.
    """

    def __init__(self, workers: int = 16):
        """Create the pool."""
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="callbacks")
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._queues: dict[str, deque] = {}
        self._closed = False

    def submit(self, key: str, job: Callable[[], None]) -> None:
        """Queue `job` behind any earlier job with the same `key`."""
        with self._lock:
            if self._closed:
                return
            queue = self._queues.get(key)
            if queue is not None:
                queue.append(job)
                return
            self._queues[key] = deque([job])
        self._pool.submit(self._drain, key)

    def _drain(self, key: str) -> None:
        """Run the jobs queued under `key` until none are left."""
        while True:
            with self._lock:
                queue = self._queues[key]
                if not queue:
                    del self._queues[key]
                    self._idle.notify_all()
                    return
                job = queue[0]
            try:
                job()
            except Exception:  # one broken callback must not stop the others
                log.exception("callback job failed")
            with self._lock:
                queue.popleft()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued job has run; False on timeout."""
        with self._lock:
            return self._idle.wait_for(lambda: not self._queues, timeout)

    def close(self) -> None:
        """Stop accepting jobs and let running ones finish."""
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
