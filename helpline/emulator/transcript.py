"""Readable one-line descriptions of transcript events (for simulate-call and the Python client)."""

from __future__ import annotations

from typing import Any, Iterable

#: Events that only add noise to a human-readable transcript.
QUIET = {"webhook.response", "twiml", "digits.queued", "status_callback", "call.started"}


def describe(event: dict[str, Any]) -> str | None:
    """One line for `event`, or None when it is not worth showing."""
    kind = event.get("kind")
    if kind in QUIET:
        return None
    if kind == "say":
        loop = event.get("loop", 1)
        suffix = " (repeating)" if loop == 0 else f" (x{loop})" if loop and loop > 1 else ""
        return f'IVR says: "{event.get("text", "")}"{suffix}'
    if kind == "play":
        if event.get("digits"):
            return f"IVR plays tones {event['digits']}"
        return "IVR plays hold music" if event.get("hold_music") else f"IVR plays {event.get('url')}"
    if kind == "pause":
        return f"(pause {event.get('length')} s)"
    if kind == "gather.started":
        limit = f", up to {event['num_digits']} key(s)" if event.get("num_digits") else ""
        what = "keys or words" if "speech" in (event.get("input") or "") else "keys"
        return f"... waiting for {what} (timeout {event.get('timeout'):g} s{limit})"
    if kind == "gather.ended":
        if event.get("speech"):
            return f'... words heard: "{event["speech"]}"'
        if event.get("digits"):
            return f"... keys received: {event['digits']}"
        return "... no keys pressed" if event.get("reason") == "timeout" else f"... gather ended ({event.get('reason')})"
    if kind == "digits":
        where = "" if event.get("heard_by") else " (nothing was listening)"
        return f"Caller presses {event.get('digits')}{where}"
    if kind == "webhook":
        ignored = " (answer ignored)" if event.get("response_ignored") else ""
        return f"-> {event.get('method')} {event.get('url')} [{event.get('purpose')}]{ignored}"
    if kind == "webhook.failed":
        return f"!! request to {event.get('url')} failed ({event.get('code')})"
    if kind == "alert":
        return f"!! ALERT {event.get('code')} {event.get('message')}: {event.get('detail')}"
    if kind == "redirected":
        return f"Redirected to {event.get('url')} (by {event.get('by')})"
    if kind == "enqueued":
        return f"Queued in '{event.get('queue')}' at position {event.get('position')}"
    if kind == "queue.wait":
        return f"Waiting in queue: position {event.get('position')} of {event.get('size')}, " \
               f"waited {event.get('queue_time')} s"
    if kind == "queue.left":
        return f"Left queue '{event.get('queue')}': {event.get('result')} after {event.get('queue_time')} s"
    if kind == "dial.started":
        target = event.get("queue") or ", ".join(event.get("to") or [])
        return f"Dialling {target}"
    if kind == "dial.ended":
        return f"Dial finished: {event.get('DialCallStatus')}"
    if kind == "bridged":
        return f"Connected to {event.get('party')} ({event.get('with_sid')})"
    if kind == "unbridged":
        return "Disconnected from the other party"
    if kind == "heard":
        return f'Other party says: "{event.get("text")}"'
    if kind == "spoke":
        return f'Caller says: "{event.get("text")}"'
    if kind == "conference.joined":
        return f"Joined conference '{event.get('conference')}' ({event.get('status')})"
    if kind == "conference.left":
        return f"Left conference '{event.get('conference')}' ({event.get('reason')})"
    if kind == "status":
        return f"[status: {event.get('status')}]"
    if kind == "rejected":
        return f"Call rejected ({event.get('reason')})"
    if kind == "hangup":
        return f"Hang-up: {event.get('reason')}"
    if kind == "ended":
        return f"Call ended: {event.get('status')} after {event.get('duration')} s ({event.get('reason')})"
    rest = {k: v for k, v in event.items() if k not in {"seq", "at", "kind"}}
    return f"{kind}: {rest}" if rest else str(kind)


def lines(events: Iterable[dict[str, Any]]) -> list[str]:
    """Readable lines for a sequence of events."""
    return [line for line in (describe(e) for e in events) if line]
