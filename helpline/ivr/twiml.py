"""Every TwiML the service answers with, built with `twilio.twiml.voice_response` by small pure functions.

The IVR's moments, the caller's way into a handler's conference (connect.py) and the softphones'
refused outgoing calls (voice_client.py): no other module writes TwiML. Nothing here reads the
database or the request: the webhooks decide, these functions speak. Each returns the document's
text, as the webhook answers it.

The IVR says the same things at the same places to every caller: a menu's prompt and the URL its
keys go to differ only by the step, the attempt and how far into the flow the caller is. So the
builders it calls on every step (`IVR_BUILDERS`) keep what they built for the same arguments, and
building the elements and writing them out as XML, which cost a menu step more than the rest of
its TwiML work, happens once for each. Nothing in their arguments says who a caller is: the
service's own words and URLs, a place in line, a wait.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from twilio.twiml.voice_response import Conference, Dial, Enqueue, Gather, VoiceResponse


#: Seconds of silence after a caller's words before Twilio sends them.
SPEECH_PAUSE_S = 2
#: Documents each IVR builder keeps (a few hundred bytes each): every step of the flow, at every
#: depth and attempt a caller reaches it, and the places in line announced.
KEPT = 2048


@dataclass(frozen=True)
class Voice:
    """How prompts are spoken."""

    voice: str = "Polly.Amy"
    language: str = "en-GB"

    def say(self, target: VoiceResponse | Gather, text: str) -> None:
        """Add a Say of `text` in this voice."""
        target.say(text, voice=self.voice, language=self.language)


@functools.lru_cache(maxsize=KEPT)
def speak_then_redirect(voice: Voice, text: str, next_url: str) -> str:
    """Say something, then fetch the next step (so each step's time is when the caller reached it)."""
    response = VoiceResponse()
    voice.say(response, text)
    response.redirect(next_url, method="POST")
    return str(response)


@functools.lru_cache(maxsize=KEPT)
def menu(voice: Voice, text: str, keys_url: str, timeout_s: int = 4, num_digits: int = 1,
         hints: tuple[str, ...] | None = None) -> str:
    """Ask for a key (or, with `hints`, words too) while the prompt plays: a key interrupts it.

    `num_digits` lets a caller who knows the menus type the keys for the menus ahead into this one
    Gather (Twilio hears keys only while a Gather listens); `timeout_s` is both the silence after
    the prompt and the pause between keys that ends them. No finishing key: every key is a menu
    key. No key falls through to the same URL with no Digits, counted as an attempt.
    """
    response = VoiceResponse()
    listen: dict[str, object] = {}
    if hints:
        # A pause of SPEECH_PAUSE_S ends the words: "auto" is not allowed with Twilio's default speech model.
        listen = {"input": "dtmf speech", "hints": ", ".join(hints), "language": voice.language,
                  "speech_timeout": SPEECH_PAUSE_S}
    gather = Gather(num_digits=num_digits, action=keys_url, method="POST", timeout=timeout_s, finish_on_key="",
                    action_on_empty_result=False, **listen)
    voice.say(gather, text)
    response.append(gather)
    response.redirect(keys_url, method="POST")
    return str(response)


@functools.lru_cache(maxsize=KEPT)
def speak_and_hang_up(voice: Voice, text: str) -> str:
    """Say a last message and end the call."""
    response = VoiceResponse()
    voice.say(response, text)
    response.hangup()
    return str(response)


@functools.lru_cache(maxsize=KEPT)
def enqueue(voice: Voice, text: str, queue_name: str, wait_url: str | None, action_url: str | None) -> str:
    """Say a word of welcome and put the caller in the Twilio queue, polling `wait_url` while they wait.

    Without URLs the caller hears Twilio's own hold music: the last resort when the service is failing.
    """
    response = VoiceResponse()
    voice.say(response, text)
    urls = {}
    if wait_url:
        urls.update(wait_url=wait_url, wait_url_method="POST")
    if action_url:
        urls.update(action=action_url, method="POST")
    queue = Enqueue(**urls)
    queue.value = queue_name
    response.append(queue)
    return str(response)


@functools.lru_cache(maxsize=KEPT)
def hold(
    voice: Voice,
    announcement: str,
    music_url: str,
    music_loops: int,
    callback_key_url: str | None,
) -> str:
    """One stretch of waiting: the announcement, then hold music; with a callback offer, a key stops it."""
    response = VoiceResponse()
    if callback_key_url:
        target = Gather(num_digits=1, action=callback_key_url, method="POST", timeout=1, action_on_empty_result=False)
        response.append(target)
    else:
        target = response
    voice.say(target, announcement)
    target.play(music_url, loop=music_loops)
    return str(response)


def leave_queue() -> str:
    """Take the caller out of the queue; Twilio then asks the Enqueue action what comes next."""
    response = VoiceResponse()
    response.leave()
    return str(response)


def retry_later(voice: Voice, text: str, url: str, pause_s: int = 2) -> str:
    """Apologise, pause, and ask again: used when the service cannot answer properly right now."""
    response = VoiceResponse()
    voice.say(response, text)
    response.pause(length=pause_s)
    response.redirect(url, method="POST")
    return str(response)


def empty() -> str:
    """A reply with nothing to do (Twilio acknowledges and carries on)."""
    return str(VoiceResponse())


def hang_up() -> str:
    """End the call without a word."""
    response = VoiceResponse()
    response.hangup()
    return str(response)


def redirect(url: str) -> str:
    """Fetch the next TwiML from `url` (POST), saying nothing."""
    response = VoiceResponse()
    response.redirect(url, method="POST")
    return str(response)


def music_then_redirect(music_url: str, url: str) -> str:
    """Play the hold music once, then fetch `url` again: waiting out an outage without apologising each time."""
    response = VoiceResponse()
    response.play(music_url)
    response.redirect(url, method="POST")
    return str(response)


def join_conference(voice: Voice, greeting: str | None, name: str, music_url: str, status_callback_url: str) -> str:
    """Put the caller in conference `name` with their handler, after `greeting` if any.

    The caller waits with music until the handler's leg is in (they do not start it), and their
    leaving ends it; the conference's start, end, joins and leaves go to `status_callback_url`.
    """
    response = VoiceResponse()
    if greeting:
        voice.say(response, greeting)
    dial = Dial()
    dial.append(Conference(
        name, start_conference_on_enter=False, end_conference_on_exit=True, beep=False,
        wait_url=music_url, wait_method="GET",
        status_callback=status_callback_url, status_callback_method="POST",
        status_callback_event="start end join leave",
    ))
    response.append(dial)
    return str(response)


#: The builders the IVR calls on every step, each keeping what it built (see the module's docstring).
IVR_BUILDERS = (menu, speak_then_redirect, speak_and_hang_up, enqueue, hold)
