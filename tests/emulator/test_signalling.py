"""The emulator's Voice SDK signalling, spoken to over TLS as the SDK speaks it (frames from
twilio-voice.js's pstream), with aiortc standing in for the browser's WebRTC.

Tokens are checked as Twilio checks them; a frame about another identity's call is refused and
changes nothing; a ring goes to every registered device of the identity and the first answer wins.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
import pytest
from twilio.jwt.access_token import AccessToken
from twilio.jwt.access_token.grants import VoiceGrant
from twilio.twiml.voice_response import VoiceResponse

from conftest import ACCOUNT_SID, AUTH_TOKEN

TLS = ssl.create_default_context()
TLS.check_hostname = False
TLS.verify_mode = ssl.CERT_NONE  # the emulator's own self-signed certificate
WAIT = 10.0


def token(identity: str, *, ttl: int = 600, secret: str = AUTH_TOKEN, account: str = ACCOUNT_SID,
          key: str = ACCOUNT_SID, incoming: bool = True) -> str:
    made = AccessToken(account, key, secret, identity=identity, ttl=ttl)
    made.add_grant(VoiceGrant(incoming_allow=incoming))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the test account's auth token is shorter than a real one
        return made.to_jwt()


class Sdk:
    """One SDK connection: send frames, read frames (heartbeats answered as the SDK answers them)."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse):
        self.socket = socket

    async def send(self, kind: str, payload: dict[str, Any]) -> None:
        await self.socket.send_str(json.dumps({"type": kind, "version": "1.6", "payload": payload}))

    async def read(self, kind: str | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT
        while True:
            message = await asyncio.wait_for(self.socket.receive(), max(0.1, deadline - time.monotonic()))
            assert message.type == aiohttp.WSMsgType.TEXT, message
            if message.data == "\n":
                await self.socket.send_str("\n")
                continue
            frame = json.loads(message.data)
            assert frame["version"] == "1.6"
            if kind is None or frame["type"] == kind:
                return frame

    async def register(self, jwt: str) -> None:
        await self.send("listen", {"token": jwt, "browserinfo": {}, "reconnectTimeout": 0})
        assert (await self.read())["type"] == "connected"
        await self.send("register", {"media": {"audio": True}})
        assert (await self.read())["type"] == "ready"


async def connect(session: aiohttp.ClientSession, address: str) -> Sdk:
    return Sdk(await session.ws_connect(f"wss://{address}/signal", ssl=TLS))


@pytest.fixture
def address(emu) -> str:
    found = emu.health()["signalling"]
    assert found, "the emulator reports no signalling address"
    return found


def ring(twilio, identity: str) -> str:
    """Ring `client:identity` through the REST API, as the service rings a handler."""
    twiml = VoiceResponse()
    twiml.pause(length=30)
    return twilio.calls.create(to=f"client:{identity}", from_="+441134960123", twiml=str(twiml), timeout=30).sid


async def browser_answer(offer: str) -> tuple[Any, str]:
    """What Chrome does with an invite: answer the emulator's offer with real WebRTC."""
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import AudioStreamTrack

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
    pc.addTrack(AudioStreamTrack())
    await pc.setLocalDescription(await pc.createAnswer())
    return pc, pc.localDescription.sdp


def run(coroutine: Any) -> Any:
    """Run a scenario on a loop of its own thread (the browser tests' Playwright may own this one's)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


# Each token is made when its test runs, not when tests are collected: a token
# carries the time it was issued, and parallel workers must collect the same ids.
BAD_TOKENS = [
    ("not a token", lambda: "not-a-jwt", 31204),
    ("another account's token", lambda: token("alice", account="AC" + "9" * 32), 31204),
    ("a forged signature", lambda: token("alice", secret="not-the-auth-token-at-all"), 31204),
    ("an unknown API key", lambda: token("alice", key="SK" + "5" * 32), 31204),
    ("an expired token", lambda: token("alice", ttl=-60), 31205),
]


@pytest.mark.parametrize(("case", "make_jwt", "code"), BAD_TOKENS, ids=[case for case, _, _ in BAD_TOKENS])
def test_a_bad_token_is_refused(address, case, make_jwt, code):
    jwt = make_jwt()

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            sdk = await connect(session, address)
            await sdk.send("listen", {"token": jwt})
            refused = await sdk.read()
            assert refused["type"] == "error" and refused["payload"]["error"]["code"] == code, case
            # Nothing else is allowed on a connection that has not listened with a good token.
            await sdk.send("register", {"media": {"audio": True}})
            assert (await sdk.read())["payload"]["error"]["code"] == 31204

    run(scenario())


def test_bad_frames_get_an_error_and_change_nothing(address, emu):
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            sdk = await connect(session, address)
            for text in ("{not json", json.dumps(["a", "list"]), json.dumps({"type": "listen", "payload": "x"})):
                await sdk.socket.send_str(text)
                assert (await sdk.read())["payload"]["error"]["code"] == 31400
            await sdk.register(token("bram"))
            await sdk.send("warp", {})
            assert (await sdk.read())["payload"]["error"]["code"] == 31400
            assert any(s["identity"] == "bram" and s["registered"] for s in emu.signalling()["sessions"])

    run(scenario())


def test_a_token_for_another_identity_cannot_take_over_a_connection(address):
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            sdk = await connect(session, address)
            await sdk.register(token("carla"))
            await sdk.send("listen", {"token": token("dmitri")})
            assert (await sdk.read("error"))["payload"]["error"]["code"] == 31204
            # A renewed token for the same identity is taken, as the SDK's updateToken sends it.
            await sdk.send("listen", {"token": token("carla", ttl=900)})
            renewed = await sdk.read("connected")
            assert renewed["payload"]["token"]["identity"] == "carla" and 880 < renewed["payload"]["token"]["ttl"] <= 900

    run(scenario())


def test_a_ring_reaches_every_device_and_the_first_answer_wins(address, twilio, emu):
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            first, second = await connect(session, address), await connect(session, address)
            await first.register(token("erin"))
            await second.register(token("erin"))
            sid = await asyncio.to_thread(ring, twilio, "erin")
            invites = [await first.read("invite"), await second.read("invite")]
            for invite in invites:
                assert invite["payload"]["callsid"] == sid and invite["payload"]["sdp"].startswith("v=0")
                assert invite["payload"]["parameters"]["To"] == "client:erin"
            pc, answer = await browser_answer(invites[0]["payload"]["sdp"])
            try:
                await first.send("answer", {"callsid": sid, "sdp": answer})
                answered = await first.read("answer")
                assert answered["payload"]["callsid"] == sid and answered["payload"]["reconnect"]
                assert (await second.read("cancel"))["payload"]["callsid"] == sid
                # The second device cannot answer or hang up a call the first has.
                await second.send("hangup", {"callsid": sid})
                assert (await second.read("error"))["payload"]["error"]["code"] in (31403, 31404)
                await asyncio.to_thread(emu.wait_for, sid, lambda e: e["kind"] == "status" and e.get("status") == "in-progress", 10)
                # Keys from the softphone reach the call, and the first device hangs up.
                await first.send("dtmf", {"callsid": sid, "dtmf": "5"})
                await first.send("hangup", {"callsid": sid})
                ended = await asyncio.to_thread(emu.wait_until_ended, sid, 10)
                assert ended["status"] == "completed"
            finally:
                await pc.close()

    run(scenario())


def test_a_frame_for_another_identitys_call_is_refused_and_changes_nothing(address, twilio, emu):
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            owner, stranger = await connect(session, address), await connect(session, address)
            await owner.register(token("farah"))
            await stranger.register(token("gus"))
            sid = await asyncio.to_thread(ring, twilio, "farah")
            invite = await owner.read("invite")
            pc, answer = await browser_answer(invite["payload"]["sdp"])
            try:
                for kind, payload in (("answer", {"callsid": sid, "sdp": answer}), ("reject", {"callsid": sid}),
                                      ("hangup", {"callsid": sid}), ("dtmf", {"callsid": sid, "dtmf": "1"})):
                    await stranger.send(kind, payload)
                    assert (await stranger.read("error"))["payload"]["error"]["code"] == 31404, kind
                assert emu.call(sid)["status"] == "ringing"
                await owner.send("reject", {"callsid": sid})
                assert (await asyncio.to_thread(emu.wait_until_ended, sid, 10))["status"] == "busy"
            finally:
                await pc.close()

    run(scenario())


def test_a_ring_nobody_answers_is_cancelled(address, twilio, emu):
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            sdk = await connect(session, address)
            await sdk.register(token("hal"))
            sid = await asyncio.to_thread(ring, twilio, "hal")
            await sdk.read("invite")
            await asyncio.to_thread(twilio.calls(sid).update, status="canceled")
            assert (await sdk.read("cancel"))["payload"]["callsid"] == sid

    run(scenario())


def test_a_ring_whose_only_device_goes_as_it_rings_ends_unanswered_at_once(address, twilio, emu):
    """The device's socket closes just as the ring reaches it (a page reloading): with nobody left to
    ring, the call ends no-answer straight away, as at Twilio, rather than ringing out."""
    async def scenario() -> str:
        async with aiohttp.ClientSession() as session:
            sdk = await connect(session, address)
            await sdk.register(token("kai"))
            sid = await asyncio.to_thread(ring, twilio, "kai")
            await sdk.socket.close()
            return sid

    sid = run(scenario())
    started = time.monotonic()
    ended = emu.wait_until_ended(sid, 10)
    assert ended["status"] == "no-answer" and time.monotonic() - started < 5


def test_the_certificate_page_is_served_over_tls(address):
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"https://{address}/", ssl=TLS) as page:
                assert page.status == 200 and "signal" in await page.text()
            async with session.get(f"https://{address}/signal", ssl=TLS) as plain:
                assert plain.status == 400 and (await plain.json())["error"] == "websocket_required"

    run(scenario())


def test_a_hangup_that_crosses_ours_is_not_an_error(address, twilio):
    """The service ends the call while the softphone hangs up too: Twilio says nothing of it."""
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            sdk, other = await connect(session, address), await connect(session, address)
            await sdk.register(token("ines"))
            await other.register(token("jon"))
            sid = await asyncio.to_thread(ring, twilio, "ines")
            invite = await sdk.read("invite")
            pc, answer = await browser_answer(invite["payload"]["sdp"])
            try:
                await sdk.send("answer", {"callsid": sid, "sdp": answer})
                await sdk.read("answer")
                await asyncio.to_thread(twilio.calls(sid).update, status="completed")
                assert (await sdk.read("hangup"))["payload"]["callsid"] == sid
                await sdk.send("hangup", {"callsid": sid})
                await sdk.send("register", {"media": {"audio": True}})
                assert (await sdk.read())["type"] == "ready"  # no error came first
                # Another identity's frame about it is still refused.
                await other.send("hangup", {"callsid": sid})
                assert (await other.read("error"))["payload"]["error"]["code"] == 31404
            finally:
                await pc.close()

    run(scenario())
