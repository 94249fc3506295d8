"""The Voice JavaScript SDK's signalling, as Twilio speaks it, so that `client:<identity>` legs ring a
real SDK in a browser with no Twilio account.

The SDK opens `wss://<chunderw>/signal` and exchanges JSON frames `{"type", "version": "1.6",
"payload"}` (read from twilio-voice.js: `lib/twilio/pstream.ts`, `device.ts`, `call.ts`):

    SDK -> us   listen {token}            us -> SDK   connected {token: {identity, ttl}}
                register {media: {audio}}             ready | offline
                answer {callsid, sdp}                 invite {callsid, sdp, parameters}
                reject | hangup {callsid}             cancel {callsid} (before answer)
                dtmf {callsid, dtmf}                  hangup {callsid} (after answer)
                invite {callsid, reconnect}           answer {callsid, reconnect}
                "\\n" (echo of our heartbeat)          "\\n" every HEARTBEAT_S
                                                      error {callsid?, error: {code, message}}

Access tokens are checked as Twilio checks them: HS256, signed with an API key's secret (or, as
Twilio also allows, the account's auth token), for this account, not expired, with a voice grant.
A frame about a call that was not offered to the sender's identity is refused and changes nothing.

Every SDK leg's media terminates here (`media.MediaServer`): the invite's SDP is the emulator's own
offer, so a leg rings and talks whoever is on the other end of the call.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jwt

from .loop import LoopThread
from .media import MediaServer

if TYPE_CHECKING:
    from aiohttp import web

    from .call import Call
    from .config import EmulatorConfig
    from .engine import Emulator
    from .models import Endpoint

log = logging.getLogger(__name__)

PSTREAM_VERSION = "1.6"
#: Seconds between our heartbeats; the SDK reconnects after 15 s without a message.
HEARTBEAT_S = 5.0
#: Seconds an answered call waits for its softphone to come back after the socket drops.
RECONNECT_GRACE_S = 10.0
#: Twilio's error codes, as the SDK turns them into its own errors.
TOKEN_INVALID, TOKEN_EXPIRED, BAD_REQUEST, NOT_FOUND, FORBIDDEN = 31204, 31205, 31400, 31404, 31403


class TokenRefused(Exception):
    """An access token the emulator will not accept: `code` is Twilio's."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Grant:
    """What a valid access token allows."""

    identity: str
    incoming: bool
    expires_at: float
    token_id: str


def verify_token(token: Any, config: "EmulatorConfig", now: float | None = None) -> Grant:
    """The grant in a Voice access token, or TokenRefused saying why not."""
    if not isinstance(token, str) or token.count(".") != 2:
        raise TokenRefused(TOKEN_INVALID, "The access token is not a JWT")
    try:
        header = jwt.get_unverified_header(token)
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise TokenRefused(TOKEN_INVALID, "The access token cannot be read") from None
    if header.get("alg") != "HS256":
        raise TokenRefused(TOKEN_INVALID, "The access token must be signed with HS256")
    issuer = unverified.get("iss")
    keys = dict(config.api_keys)
    keys[config.account_sid] = config.auth_token
    secret = keys.get(issuer) if isinstance(issuer, str) else None
    if secret is None:
        raise TokenRefused(TOKEN_INVALID, "The access token is signed by an unknown API key")
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], options={"verify_exp": False, "verify_nbf": False})
    except jwt.PyJWTError:
        raise TokenRefused(TOKEN_INVALID, "The access token's signature is not valid") from None
    if claims.get("sub") != config.account_sid:
        raise TokenRefused(TOKEN_INVALID, "The access token is for another account")
    moment = time.time() if now is None else now
    expires = claims.get("exp")
    if not isinstance(expires, (int, float)):
        raise TokenRefused(TOKEN_INVALID, "The access token has no expiry")
    if expires <= moment:
        raise TokenRefused(TOKEN_EXPIRED, "The access token has expired")
    grants = claims.get("grants") or {}
    identity = grants.get("identity") if isinstance(grants, dict) else None
    voice = grants.get("voice") if isinstance(grants, dict) else None
    if not isinstance(identity, str) or not identity or not isinstance(voice, dict):
        raise TokenRefused(TOKEN_INVALID, "The access token has no identity or no voice grant")
    incoming = bool((voice.get("incoming") or {}).get("allow"))
    return Grant(identity=identity, incoming=incoming, expires_at=float(expires), token_id=str(claims.get("jti", "")))


# ---------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Session:
    """One SDK's websocket."""

    hub: "SignallingHub"
    socket: "web.WebSocketResponse"
    grant: Grant | None = None
    registered: bool = False
    closed: bool = False
    awaiting_echo: bool = False
    listens: int = 0

    @property
    def identity(self) -> str | None:
        return self.grant.identity if self.grant else None

    async def send(self, kind: str, payload: dict[str, Any]) -> None:
        """One frame to the SDK; a socket that has gone is simply skipped."""
        if self.closed:
            return
        try:
            await self.socket.send_str(json.dumps({"type": kind, "version": PSTREAM_VERSION, "payload": payload}))
        except (ConnectionError, RuntimeError):
            self.closed = True

    async def refuse(self, code: int, message: str, callsid: str | None = None) -> None:
        """An error frame, as Twilio sends one; nothing else changes."""
        payload: dict[str, Any] = {"error": {"code": code, "message": message}}
        if callsid:
            payload["callsid"] = callsid
        await self.send("error", payload)


@dataclass(eq=False)
class Ring:
    """An SDK leg: rung, then perhaps answered by one of its identity's sessions."""

    leg: "Call"
    identity: str
    invited: set = field(default_factory=set)
    answered_by: Session | None = None
    reconnect_token: str = ""
    grace: asyncio.TimerHandle | None = None


class SignallingHub:
    """The SDK sessions, by identity, and the SDK legs they were offered."""

    def __init__(self, emulator: "Emulator", loop: LoopThread, media: MediaServer):
        """Sessions arrive through `handle_socket`; the engine tells us of rings and ends."""
        self.emulator = emulator
        self.loop = loop
        self.media = media
        self.sessions: set[Session] = set()
        self.rings: dict[str, Ring] = {}
        # Calls that ended lately, by the identity they rang: an SDK's hangup for one of its own that
        # crossed our hangup on the wire is nothing to complain about.
        self.ended: dict[str, str] = {}
        self.log: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ from the engine's threads

    def handles(self, endpoint: "Endpoint") -> bool:
        """True when an SDK is registered for this client endpoint."""
        identity = _identity(endpoint.key)
        return identity is not None and any(s.registered and s.identity == identity for s in list(self.sessions))

    def ring(self, endpoint: "Endpoint", leg: "Call") -> None:
        """Offer the leg to every SDK registered for the endpoint's identity."""
        self.loop.submit(self._ring(endpoint, leg))

    def leg_ended(self, leg: "Call") -> None:
        """A leg that an SDK was offered has ended: tell the SDKs."""
        if leg.sid in self.rings or self.media.has(leg.sid):
            self.loop.submit(self._ended(leg.sid))

    def drop(self, identity: str) -> int:
        """Close every socket of `identity` (a network fault, for tests); the SDK reconnects by itself."""
        return self.loop.run(self._drop(identity))

    def describe(self) -> list[dict[str, Any]]:
        """The sessions, for the control API."""
        return [{"identity": s.identity, "registered": s.registered, "listens": s.listens} for s in list(self.sessions)
                if not s.closed]

    # ------------------------------------------------------------------ on the loop

    def _note(self, kind: str, **data: Any) -> None:
        self.log.append({"at": time.time(), "kind": kind, **data})
        del self.log[:-500]

    def _registered(self, identity: str) -> list[Session]:
        return [s for s in self.sessions if s.registered and not s.closed and s.identity == identity]

    async def _ring(self, endpoint: "Endpoint", leg: "Call") -> None:
        identity = _identity(endpoint.key)
        if leg.finished or identity is None:
            return
        sdp = await self.media.aoffer(leg.sid)
        # Read who is registered only now: a device may have gone while the offer was made (a page
        # reloading), and one that has gone is never invited.
        sessions = self._registered(identity)
        if leg.finished or not sessions:
            await self.media.aclose(leg.sid)
            if not leg.finished:  # nobody is left to ring: as at Twilio, the call ends unanswered at once
                self._note("nobody", callsid=leg.sid, identity=identity)
                leg.request_hangup("device-gone", final_status="no-answer")
            return
        ring = self.rings[leg.sid] = Ring(leg, identity)
        parameters = {"CallSid": leg.sid, "AccountSid": leg.account_sid, "From": leg.from_, "To": leg.to,
                      "ApiVersion": "2010-04-01"}
        for session in sessions:
            ring.invited.add(session)
            await session.send("invite", {"callsid": leg.sid, "sdp": sdp, "parameters": parameters})
        self._note("invite", callsid=leg.sid, identity=identity, sessions=len(sessions))

    async def _ended(self, sid: str) -> None:
        ring = self.rings.pop(sid, None)
        if ring is not None:
            self.ended[sid] = ring.identity
            while len(self.ended) > 500:
                self.ended.pop(next(iter(self.ended)))
            if ring.grace is not None:
                ring.grace.cancel()
            kind = "hangup" if ring.answered_by is not None else "cancel"
            for session in ring.invited:
                await session.send(kind, {"callsid": sid})
            self._note(kind, callsid=sid)
        await self.media.aclose(sid)

    async def _drop(self, identity: str) -> int:
        dropped = [s for s in self.sessions if s.identity == identity and not s.closed]
        for session in dropped:
            await session.socket.close()
        return len(dropped)

    # ------------------------------------------------------------------ a socket

    async def handle_socket(self, socket: "web.WebSocketResponse") -> None:
        """Serve one SDK connection until it closes."""
        from aiohttp import WSMsgType

        session = Session(self, socket)
        self.sessions.add(session)
        beat = asyncio.ensure_future(self._heartbeat(session))
        try:
            async for message in socket:
                if message.type != WSMsgType.TEXT:
                    if message.type == WSMsgType.BINARY:
                        await session.refuse(BAD_REQUEST, "Frames must be text")
                    continue
                await self._receive(session, message.data)
        finally:
            beat.cancel()
            await self._gone(session)

    async def _heartbeat(self, session: Session) -> None:
        while not session.closed:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                session.awaiting_echo = True
                await session.socket.send_str("\n")
            except (ConnectionError, RuntimeError):
                return

    async def _receive(self, session: Session, text: str) -> None:
        if text == "\n":
            # The SDK only echoes ours; echo anything else so that a client's own heartbeat is answered.
            if session.awaiting_echo:
                session.awaiting_echo = False
            else:
                await session.socket.send_str("\n")
            return
        try:
            frame = json.loads(text)
        except ValueError:
            await session.refuse(BAD_REQUEST, "Frames must be JSON")
            return
        if not isinstance(frame, dict) or not isinstance(frame.get("type"), str) or not isinstance(frame.get("payload", {}), dict):
            await session.refuse(BAD_REQUEST, "A frame needs a type and an object payload")
            return
        kind, payload = frame["type"], frame.get("payload") or {}
        if kind == "listen":
            await self._listen(session, payload)
            return
        if session.grant is None:
            await session.refuse(TOKEN_INVALID, "Send listen with a valid access token first")
            return
        if session.grant.expires_at <= time.time():
            await session.refuse(TOKEN_EXPIRED, "The access token has expired")
            return
        handler = {"register": self._register, "answer": self._answer, "reject": self._reject,
                   "hangup": self._hangup, "dtmf": self._dtmf, "invite": self._invite}.get(kind)
        if handler is None:
            await session.refuse(BAD_REQUEST, f"Unknown frame type {kind!r}")
            return
        await handler(session, payload)

    async def _listen(self, session: Session, payload: dict[str, Any]) -> None:
        try:
            grant = verify_token(payload.get("token"), self.emulator.config)
        except TokenRefused as refused:
            self._note("refused", code=refused.code, reason=refused.message)
            await session.refuse(refused.code, refused.message)
            return
        if session.grant is not None and grant.identity != session.grant.identity:
            self._note("refused", code=TOKEN_INVALID, reason="identity changed")
            await session.refuse(TOKEN_INVALID, "A connection keeps the identity it started with")
            return
        session.grant = grant
        session.listens += 1
        self._note("listen", identity=grant.identity, token_id=grant.token_id, listens=session.listens)
        await session.send("connected", {"token": {"identity": grant.identity, "ttl": int(grant.expires_at - time.time())},
                                         "region": "gll", "edge": "emulator"})

    async def _register(self, session: Session, payload: dict[str, Any]) -> None:
        media = payload.get("media")
        audio = bool(media.get("audio")) if isinstance(media, dict) else False
        assert session.grant is not None
        key = "client:" + session.grant.identity
        if audio and not session.grant.incoming:
            await session.refuse(FORBIDDEN, "The access token does not allow incoming calls")
            return
        session.registered = audio
        if audio:
            self.emulator.register(key)
            await session.send("ready", {})
        else:
            if not self._registered(session.grant.identity):
                self.emulator.unregister(key)
            await session.send("offline", {})
        self._note("register" if audio else "unregister", identity=session.grant.identity)

    def _ring_for(self, session: Session, payload: dict[str, Any]) -> Ring | None:
        ring = self.rings.get(payload.get("callsid")) if isinstance(payload.get("callsid"), str) else None
        if ring is None or ring.identity != session.identity:
            return None
        return ring

    async def _answer(self, session: Session, payload: dict[str, Any]) -> None:
        ring = self._ring_for(session, payload)
        sdp = payload.get("sdp")
        if ring is None:
            await session.refuse(NOT_FOUND, "No such call for this identity", payload.get("callsid"))
            return
        if ring.answered_by is not None or ring.leg.finished:
            await session.refuse(NOT_FOUND, "The call is no longer ringing", ring.leg.sid)
            return
        if not isinstance(sdp, str) or "v=0" not in sdp:
            await session.refuse(BAD_REQUEST, "answer needs an SDP", ring.leg.sid)
            return
        try:
            await self.media.aaccept_answer(ring.leg.sid, sdp)
        except Exception as exc:  # a browser's SDP we cannot use: the call rings on
            await session.refuse(BAD_REQUEST, f"The answer's SDP was not accepted: {exc}", ring.leg.sid)
            return
        ring.answered_by = session
        ring.reconnect_token = f"{ring.leg.sid}:{time.monotonic_ns()}"
        ring.leg.answer()
        if ring.leg.endpoint is not None:
            ring.leg.endpoint.log.append("answered", call_sid=ring.leg.sid, by="sdk")
        await session.send("answer", {"callsid": ring.leg.sid, "reconnect": ring.reconnect_token})
        for other in ring.invited - {session}:
            await other.send("cancel", {"callsid": ring.leg.sid})
        ring.invited = {session}
        self._note("answer", callsid=ring.leg.sid, identity=ring.identity)

    def _already_over(self, session: Session, payload: dict[str, Any]) -> bool:
        """True for a call of this identity that has just ended: a frame about it crossed ours."""
        return self.ended.get(payload.get("callsid")) == session.identity  # type: ignore[arg-type]

    async def _reject(self, session: Session, payload: dict[str, Any]) -> None:
        if self._already_over(session, payload):
            return
        ring = self._ring_for(session, payload)
        if ring is None or ring.answered_by is not None:
            await session.refuse(NOT_FOUND, "No such ringing call for this identity", payload.get("callsid"))
            return
        self._note("reject", callsid=ring.leg.sid, identity=ring.identity)
        ring.leg.request_hangup("rejected", final_status="busy")

    async def _hangup(self, session: Session, payload: dict[str, Any]) -> None:
        if self._already_over(session, payload):
            return
        ring = self._ring_for(session, payload)
        if ring is None:
            await session.refuse(NOT_FOUND, "No such call for this identity", payload.get("callsid"))
            return
        self._note("client-hangup", callsid=ring.leg.sid, identity=ring.identity)
        if ring.answered_by is None:
            ring.leg.request_hangup("rejected", final_status="busy")
        elif ring.answered_by is session:
            ring.leg.request_hangup("callee-hung-up")
        else:
            await session.refuse(FORBIDDEN, "Another device has this call", ring.leg.sid)

    async def _dtmf(self, session: Session, payload: dict[str, Any]) -> None:
        ring = self._ring_for(session, payload)
        digits = payload.get("dtmf")
        if ring is None or ring.answered_by is not session:
            await session.refuse(NOT_FOUND, "No such call for this device", payload.get("callsid"))
            return
        if not isinstance(digits, str) or not digits or set(digits) - set("0123456789*#w"):
            await session.refuse(BAD_REQUEST, "dtmf must be keys 0-9, * and #", ring.leg.sid)
            return
        ring.leg.event("digits", digits=digits.replace("w", ""), heard_by=None)

    async def _invite(self, session: Session, payload: dict[str, Any]) -> None:
        """An SDK whose socket dropped mid-call takes its call back (`reconnect`); it places no calls here."""
        ring = self._ring_for(session, payload)
        token = payload.get("reconnect")
        if ring is None or not token or token != ring.reconnect_token or ring.leg.finished:
            await session.refuse(NOT_FOUND, "There is no call to reconnect to", payload.get("callsid"))
            return
        if ring.grace is not None:
            ring.grace.cancel()
            ring.grace = None
        ring.answered_by = session
        ring.invited = {session}
        await session.send("answer", {"callsid": ring.leg.sid, "reconnect": ring.reconnect_token})
        self._note("reconnect", callsid=ring.leg.sid, identity=ring.identity)

    async def _gone(self, session: Session) -> None:
        session.closed = True
        self.sessions.discard(session)
        identity = session.identity
        if identity is None:
            return
        self._note("closed", identity=identity)
        if session.registered and not self._registered(identity):
            self.emulator.unregister("client:" + identity)
        for ring in list(self.rings.values()):
            ring.invited.discard(session)
            if ring.answered_by is session:
                # Twilio keeps the media up while the SDK reconnects its signalling; if it does not
                # come back, the leg ends as a dropped call.
                ring.grace = asyncio.get_running_loop().call_later(RECONNECT_GRACE_S, self._lost, ring)
            elif ring.answered_by is None and not ring.invited and not self._registered(identity):
                ring.leg.request_hangup("device-gone", final_status="no-answer")

    def _lost(self, ring: Ring) -> None:
        if ring.answered_by is not None and ring.answered_by.closed and not ring.leg.finished:
            self._note("lost", callsid=ring.leg.sid, identity=ring.identity)
            ring.leg.request_hangup("signalling-lost")


def _identity(key: str) -> str | None:
    """"client:alice" -> "alice"; None for a phone number."""
    key = key.strip()
    return key.split(":", 1)[1].strip() if key.lower().startswith("client:") else None


# ---------------------------------------------------------------------------------------------------


PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Twilio emulator signalling</title></head>
<body><main><h1>Twilio emulator: signalling</h1>
<p>Your browser now trusts this emulator's certificate, so the console's softphone can connect to
<code>wss://{host}/signal</code>. You can close this tab.</p></main></body></html>"""


async def start_signalling(hub: SignallingHub, host: str, port: int, cert: str, key: str) -> tuple[Any, int]:
    """Serve `wss://host:port/signal` (and a page at / for accepting the certificate); returns the runner and port."""
    import ssl

    from aiohttp import web

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def signal(request: "web.Request") -> "web.StreamResponse":
        socket = web.WebSocketResponse(autoping=True, heartbeat=None, max_msg_size=1 << 20)
        if not socket.can_prepare(request).ok:
            return web.json_response({"error": "websocket_required", "detail": "connect with a WebSocket"}, status=400)
        await socket.prepare(request)
        await hub.handle_socket(socket)
        return socket

    async def page(request: "web.Request") -> "web.Response":
        return web.Response(text=PAGE.format(host=request.host), content_type="text/html")

    app = web.Application()
    app.router.add_get("/signal", signal)
    app.router.add_get("/", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=context)
    await site.start()
    server = site._server  # aiohttp keeps the listening sockets here; port 0 needs the one chosen
    bound = server.sockets[0].getsockname()[1] if server is not None and server.sockets else port
    return runner, bound
