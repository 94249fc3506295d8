"""The emulator's one asyncio loop, on its own thread: the Voice SDK's signalling and the calls' media.

The rest of the emulator is threaded. Threads hand work to the loop with `submit` (fire and forget)
or `run` (wait for the result); code already on the loop awaits directly. No thread may wait on the
loop while holding the emulator's lock, since the loop takes that lock to read the calls' state.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, Coroutine

log = logging.getLogger(__name__)

#: Seconds a thread waits for the loop before giving up.
WAIT_S = 10.0


class LoopThread:
    """An asyncio loop started on first use and stopped by `stop`."""

    def __init__(self, name: str = "emulator-realtime"):
        """Nothing starts until the loop is first needed: most emulator runs never need it."""
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop, started if need be."""
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=loop.run_forever, name=self._name, daemon=True)
                self._thread.start()
                self._loop = loop
            return self._loop

    @property
    def started(self) -> bool:
        """True once the loop runs."""
        return self._loop is not None

    def on_loop(self) -> bool:
        """True when called from the loop's own thread."""
        return self._thread is not None and threading.current_thread() is self._thread

    def run(self, coroutine: Coroutine[Any, Any, Any], timeout: float = WAIT_S) -> Any:
        """Run `coroutine` on the loop and wait for its result (never from the loop itself)."""
        if self.on_loop():
            coroutine.close()
            raise RuntimeError("LoopThread.run called from the loop; await instead")
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def submit(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Start `coroutine` on the loop without waiting; a failure is logged, never lost silently."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)

        def report(done: Any) -> None:
            if not done.cancelled() and done.exception() is not None:
                log.error("emulator background task failed", exc_info=done.exception())

        future.add_done_callback(report)

    def stop(self) -> None:
        """Stop the loop (idempotent)."""
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=5)
