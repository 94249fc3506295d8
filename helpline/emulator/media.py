"""Real audio for the emulator's calls: every browser leg is a WebRTC peer of the emulator, as every
Voice SDK leg is a peer of Twilio's media servers, and the emulator mixes what each leg hears.

Who hears whom follows the calls' state in the engine (`Emulator.hearing`): the two legs of a
`<Dial>` hear each other; in a conference each participant hears the others except those muted or
on hold, a coach is heard only by the participant they coach, and a participant on hold hears a soft
hold tone. A leg with no browser behind it (a scripted caller) is simply silent.

aiortc runs on the emulator's asyncio loop (`loop.LoopThread`); threads call the plain methods,
code on the loop awaits the `a`-prefixed ones. The mixer reads the engine's state (taking its lock)
from the loop.
"""

from __future__ import annotations

import asyncio
import fractions
import functools
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .loop import LoopThread

log = logging.getLogger(__name__)

RATE = 48000
#: Samples in one 20 ms frame, the packet time every WebRTC audio codec here uses.
FRAME = 960
#: Frames a source keeps for its listeners; a listener further behind skips to the newest.
KEEP = 25
#: A listener starts this many frames behind the newest, a little jitter buffer.
LEAD = 2
#: How often (in frames) the mixer asks the engine again who a leg hears.
REFRESH = 5


@dataclass(frozen=True)
class Hearing:
    """What one leg hears: the legs in `sources`, or the hold tone."""

    sources: tuple[str, ...] = ()
    hold: bool = False


SILENT = Hearing()


def _hold_tone(tick: int) -> np.ndarray:
    """A quiet two-note phrase, 0.4 s of sound in every 2 s, so a held caller knows the line is open."""
    position = tick % 100
    if position >= 20:
        return np.zeros(FRAME, dtype=np.int16)
    frequency = 523.25 if position < 10 else 659.25
    t = (np.arange(FRAME) + tick * FRAME) / RATE
    return (np.sin(2 * np.pi * frequency * t) * 2500).astype(np.int16)


@dataclass
class _Source:
    """The decoded audio arriving from one leg's browser."""

    frames: deque = field(default_factory=lambda: deque(maxlen=KEEP))
    total: int = 0

    def add(self, pcm: np.ndarray) -> None:
        self.frames.append(pcm)
        self.total += 1

    def read(self, cursor: int | None) -> tuple[np.ndarray | None, int | None]:
        """The frame at `cursor` (or near the newest, for a new or lagging listener) and the next cursor."""
        oldest = self.total - len(self.frames)
        if not self.frames:
            return None, cursor
        if cursor is None or cursor < oldest:
            cursor = max(oldest, self.total - LEAD)
        if cursor >= self.total:
            return None, cursor
        return self.frames[cursor - oldest], cursor + 1


@dataclass
class _Leg:
    """One leg's peer connection, what arrives from it and where each of its listeners has got to."""

    sid: str
    pc: Any
    source: _Source = field(default_factory=_Source)
    cursors: dict[str, int | None] = field(default_factory=dict)
    hearing: Hearing = SILENT
    tasks: list[asyncio.Task] = field(default_factory=list)
    frames_in: int = 0
    frames_out: int = 0
    connected: bool = False


class MediaServer:
    """The emulator's media side: one WebRTC peer per browser leg, and a mixer per listener."""

    def __init__(self, loop: LoopThread, hearing: Callable[[str], Hearing]):
        """`hearing(sid)` says, from the engine's state, what the leg `sid` should hear now."""
        self._loop = loop
        self._hearing = hearing
        self._legs: dict[str, _Leg] = {}
        for noisy in ("aioice", "aiortc"):
            logging.getLogger(noisy).setLevel(logging.WARNING)

    # ------------------------------------------------------------------ from threads

    @staticmethod
    def warm_up() -> None:
        """Import aiortc and PyAV (about half a second), ahead of the first call that needs them."""
        import aiortc  # noqa: F401
        import av  # noqa: F401

        _mix_track_class()

    def has(self, sid: str) -> bool:
        """True when the leg `sid` has a browser behind it."""
        return sid in self._legs

    def answer(self, sid: str, sdp: str) -> str:
        """A browser that offers first (the dev phone): a new peer for leg `sid`, and our SDP answer."""
        return self._loop.run(self.aanswer(sid, sdp))

    def close(self, sid: str) -> None:
        """Hang up leg `sid`'s media (idempotent, never waits)."""
        if sid in self._legs:
            self._loop.submit(self.aclose(sid))

    def stats(self, sid: str) -> dict[str, Any] | None:
        """Frames in and out of leg `sid`, for the control API and the tests."""
        leg = self._legs.get(sid)
        if leg is None:
            return None
        return {"frames_in": leg.frames_in, "frames_out": leg.frames_out, "connected": leg.connected,
                "hears": list(leg.hearing.sources), "hold": leg.hearing.hold}

    def shutdown(self) -> None:
        """Close every peer."""
        if self._loop.started and self._legs:
            try:
                self._loop.run(self._close_all(), timeout=5)
            except Exception:  # closing down anyway
                log.warning("media did not close cleanly")

    async def _close_all(self) -> None:
        for sid in list(self._legs):
            await self.aclose(sid)

    # ------------------------------------------------------------------ on the loop

    def _new_leg(self, sid: str) -> _Leg:
        from aiortc import RTCConfiguration, RTCPeerConnection

        # No STUN or TURN server: every peer is on this machine or its network, and nothing may
        # reach outside it.
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        leg = _Leg(sid, pc)
        old = self._legs.pop(sid, None)
        if old is not None:
            asyncio.ensure_future(self._close_leg(old))
        self._legs[sid] = leg

        @pc.on("track")
        def on_track(track: Any) -> None:
            if track.kind == "audio":
                leg.tasks.append(asyncio.ensure_future(self._pull(leg, track)))

        @pc.on("connectionstatechange")
        def on_state() -> None:
            leg.connected = pc.connectionState == "connected"

        return leg

    async def aoffer(self, sid: str) -> str:
        """A new peer for leg `sid` that offers first (the SDK answers an invite): its SDP offer."""
        leg = self._new_leg(sid)
        leg.pc.addTransceiver(_mix_track_class()(self, leg), direction="sendrecv")
        await leg.pc.setLocalDescription(await leg.pc.createOffer())
        return leg.pc.localDescription.sdp

    async def aaccept_answer(self, sid: str, sdp: str) -> None:
        """The browser's answer to our offer for leg `sid`."""
        from aiortc import RTCSessionDescription

        leg = self._legs.get(sid)
        if leg is None:
            raise KeyError(sid)
        await leg.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))

    async def aanswer(self, sid: str, sdp: str) -> str:
        """A new peer for leg `sid` answering the browser's offer: our SDP answer."""
        from aiortc import RTCSessionDescription

        leg = self._new_leg(sid)
        await leg.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        leg.pc.addTrack(_mix_track_class()(self, leg))
        await leg.pc.setLocalDescription(await leg.pc.createAnswer())
        return leg.pc.localDescription.sdp

    async def aclose(self, sid: str) -> None:
        """Close leg `sid`'s peer (idempotent)."""
        leg = self._legs.pop(sid, None)
        if leg is not None:
            await self._close_leg(leg)

    async def _close_leg(self, leg: _Leg) -> None:
        for task in leg.tasks:
            task.cancel()
        await leg.pc.close()

    async def _pull(self, leg: _Leg, track: Any) -> None:
        """Decode what the browser sends, as mono 48 kHz frames for the mixer."""
        import av

        resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        pending = np.zeros(0, dtype=np.int16)
        while True:
            try:
                frame = await track.recv()
            except Exception:  # the track ended: the leg hung up or its browser went away
                return
            for mono in resampler.resample(frame):
                pending = np.concatenate([pending, mono.to_ndarray().reshape(-1).astype(np.int16)])
            while len(pending) >= FRAME:
                leg.source.add(pending[:FRAME])
                leg.frames_in += 1
                pending = pending[FRAME:]

    def _mix(self, leg: _Leg, tick: int) -> np.ndarray:
        """The next 20 ms that `leg` hears."""
        if tick % REFRESH == 0:
            try:
                leg.hearing = self._hearing(leg.sid)
            except Exception:  # the engine is closing; hear nothing rather than fail the track
                leg.hearing = SILENT
        if leg.hearing.hold:
            return _hold_tone(tick)
        total = np.zeros(FRAME, dtype=np.int32)
        for source_sid in leg.hearing.sources:
            source = self._legs.get(source_sid)
            if source is None or source is leg:
                continue
            pcm, leg.cursors[source_sid] = source.source.read(leg.cursors.get(source_sid))
            if pcm is not None:
                total += pcm
        return np.clip(total, -32768, 32767).astype(np.int16)


@functools.cache
def _mix_track_class() -> type:
    """aiortc's track class for what one leg hears, built on first use so that importing the emulator
    never loads aiortc."""
    from aiortc import MediaStreamTrack

    class MixTrack(MediaStreamTrack):
        """What one leg hears, made 20 ms at a time in real time."""

        kind = "audio"

        def __init__(self, server: MediaServer, leg: _Leg):
            super().__init__()
            self._server, self._leg = server, leg
            self._started: float | None = None
            self._tick = 0

        async def recv(self) -> Any:
            from av import AudioFrame

            if self._started is None:
                self._started = time.monotonic()
            delay = self._started + self._tick * FRAME / RATE - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            pcm = self._server._mix(self._leg, self._tick)
            frame = AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = RATE
            frame.pts = self._tick * FRAME
            frame.time_base = fractions.Fraction(1, RATE)
            self._tick += 1
            self._leg.frames_out += 1
            return frame

    return MixTrack
