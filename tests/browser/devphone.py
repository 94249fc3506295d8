"""The dev phone (the emulator's root page) in chromium: a caller whose microphone and speaker are real
WebRTC to the emulator, and the audio figures the softphone tests read on both sides."""

from __future__ import annotations

import time
from typing import Any

from helpline.emulator.client import EmulatorClient

#: Bytes this tab has received and sent on the caller's peer connection (null before it exists).
CALLER_STATS = """async () => {
  const audio = window.devphone && window.devphone.caller.audio;
  if (!audio) return null;
  const totals = { bytesReceived: 0, bytesSent: 0 };
  (await audio.pc.getStats()).forEach((r) => {
    if (r.type === "inbound-rtp" && r.kind === "audio") totals.bytesReceived += r.bytesReceived || 0;
    if (r.type === "outbound-rtp" && r.kind === "audio") totals.bytesSent += r.bytesSent || 0;
  });
  return totals;
}"""
#: The sound energy the caller's tab has received so far (Chrome's inbound-rtp totalAudioEnergy).
CALLER_ENERGY = """async () => {
  const audio = window.devphone && window.devphone.caller.audio;
  let energy = 0;
  if (audio) (await audio.pc.getStats()).forEach((r) => {
    if (r.type === "inbound-rtp" && r.kind === "audio") energy += r.totalAudioEnergy || 0;
  });
  return energy;
}"""
#: The same for the console's softphone (softphone.js exposes it for its audio indicator).
SOFTPHONE_STATS = "() => window.helplineSoftphone ? window.helplineSoftphone.audioStats() : null"


class DevPhone:
    """The caller's tab."""

    def __init__(self, browser: Any, emulator_url: str):
        self.context = browser.new_context(viewport={"width": 1280, "height": 800}, ignore_https_errors=True)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        self.page.goto(emulator_url + "/")

    def dial(self, emulator: EmulatorClient, keys: list[str]) -> str:
        """Call the helpline from this tab and have `keys` pressed at its menus; returns the CallSid."""
        self.page.click("#dial")
        deadline = time.monotonic() + 10
        while not (sid := self.page.evaluate("window.devphone.caller.sid")):
            assert time.monotonic() < deadline, "the dev phone placed no call"
            time.sleep(0.05)
        for key in keys:
            emulator.press(sid, key, at_next_gather=True)
        return sid

    def stats(self) -> dict[str, int] | None:
        """Bytes received and sent on the caller's audio."""
        return self.page.evaluate(CALLER_STATS)

    def heard_energy(self, seconds: float = 2.5) -> float:
        """How much sound reached the caller's speaker over `seconds` (the fake microphone beeps)."""
        before = self.page.evaluate(CALLER_ENERGY)
        time.sleep(seconds)
        return self.page.evaluate(CALLER_ENERGY) - before

    def close(self) -> None:
        """Close the tab (once)."""
        if self.context is not None:
            self.context.close()
            self.context = None


def wait_for_audio(*reads: Any, timeout: float = 15.0, explain: Any = None) -> float:
    """Wait until every `read()` has received and sent audio; returns the seconds it took.

    `explain()`, if given, adds what else a failure should show (the softphone's words, the signalling).
    """
    started = time.monotonic()
    while True:
        seen = [read() for read in reads]
        if all(now and now["bytesReceived"] > 0 and now["bytesSent"] > 0 for now in seen):
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"audio did not flow both ways within {timeout} s: {seen}"
                                 + (f"\n{explain()}" if explain else ""))
        time.sleep(0.02)


def assert_rising(read: Any, seconds: float = 1.0) -> None:
    """Bytes received and sent both grow over `seconds`: the audio is still flowing both ways."""
    before = read()
    time.sleep(seconds)
    after = read()
    assert before and after, (before, after)
    assert after["bytesReceived"] > before["bytesReceived"], (before, after)
    assert after["bytesSent"] > before["bytesSent"], (before, after)
