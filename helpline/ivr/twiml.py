"""TwiML for each kind of IVR moment, built with `twilio.twiml.voice_response` by small pure functions.

Nothing here reads the database or the request: the interpreter decides, these functions speak.
"""

from __future__ import annotations

from dataclasses import dataclass

from twilio.twiml.voice_response import Enqueue, Gather, VoiceResponse


@dataclass(frozen=True)
class Voice:
    """How prompts are spoken."""

    voice: str = "Polly.Amy"
    language: str = "en-GB"

    def say(self, target: VoiceResponse | Gather, text: str) -> None:
        """Add a Say of `text` in this voice."""
        target.say(text, voice=self.voice, language=self.language)


def speak_then_redirect(voice: Voice, text: str, next_url: str) -> VoiceResponse:
    """Say something, then fetch the next step (so each step's time is when the caller reached it)."""
    response = VoiceResponse()
    voice.say(response, text)
    response.redirect(next_url, method="POST")
    return response


def menu(voice: Voice, text: str, keys_url: str, timeout_s: int = 6) -> VoiceResponse:
    """Ask for one key; no key falls through to the same URL with no Digits, counted as an attempt."""
    response = VoiceResponse()
    gather = Gather(num_digits=1, action=keys_url, method="POST", timeout=timeout_s, action_on_empty_result=False)
    voice.say(gather, text)
    response.append(gather)
    response.redirect(keys_url, method="POST")
    return response


def speak_and_hang_up(voice: Voice, text: str) -> VoiceResponse:
    """Say a last message and end the call."""
    response = VoiceResponse()
    voice.say(response, text)
    response.hangup()
    return response


def enqueue(voice: Voice, text: str, queue_name: str, wait_url: str | None, action_url: str | None) -> VoiceResponse:
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
    return response


def hold(
    voice: Voice,
    announcement: str,
    music_url: str,
    music_loops: int,
    callback_key_url: str | None,
) -> VoiceResponse:
    """One stretch of waiting: the announcement, then hold music; with a callback offer, a key stops it."""
    response = VoiceResponse()
    if callback_key_url:
        target = Gather(num_digits=1, action=callback_key_url, method="POST", timeout=1, action_on_empty_result=False)
        response.append(target)
    else:
        target = response
    voice.say(target, announcement)
    target.play(music_url, loop=music_loops)
    return response


def leave_queue() -> VoiceResponse:
    """Take the caller out of the queue; Twilio then asks the Enqueue action what comes next."""
    response = VoiceResponse()
    response.leave()
    return response


def retry_later(voice: Voice, text: str, url: str, pause_s: int = 2) -> VoiceResponse:
    """Apologise, pause, and ask again: used when the service cannot answer properly right now."""
    response = VoiceResponse()
    voice.say(response, text)
    response.pause(length=pause_s)
    response.redirect(url, method="POST")
    return response


def empty() -> VoiceResponse:
    """A reply with nothing to do (Twilio acknowledges and carries on)."""
    return VoiceResponse()
