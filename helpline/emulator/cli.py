"""Click commands: `emulator` (serve the Twilio stand-in) and `simulate-call` (place a scripted call).

They are plain commands; the `helpline` CLI group registers them, and `python -m helpline.emulator`
runs them without it.
"""

from __future__ import annotations

import os
import sys
import time

import click

from . import transcript
from .client import EmulatorClient, EmulatorError
from .config import TWILIO_WEBHOOK_TIMEOUT_S, EmulatorConfig

def default_emulator_url() -> str:
    """The emulator `scripts/run` starts: HELPLINE_EMULATOR_PORT, as that script reads it, or 5050."""
    port = os.environ.get("HELPLINE_EMULATOR_PORT", "").strip() or "5050"
    return f"http://127.0.0.1:{port}"


@click.command("emulator")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=5050, show_default=True, type=int, help="Port to listen on (0 = any free port).")
@click.option("--voice-url", help="The number's Voice URL [default: $HELPLINE_PUBLIC_URL/voice/incoming].")
@click.option("--voice-method", default="POST", show_default=True, type=click.Choice(["GET", "POST"]))
@click.option("--status-callback", help="The number's status callback [default: $HELPLINE_PUBLIC_URL/voice/status].")
@click.option("--status-callback-event", "status_events", multiple=True,
              type=click.Choice(["initiated", "ringing", "answered", "completed"]),
              help="Events the number's status callback receives; real Twilio sends only 'completed' "
                   "for a phone number (repeat the option for more).")
@click.option("--phone-number", envvar="TWILIO_PHONE_NUMBER", help="The helpline's number (E.164).")
@click.option("--account-sid", envvar="TWILIO_ACCOUNT_SID", help="Account SID the REST API accepts.")
@click.option("--auth-token", envvar="TWILIO_AUTH_TOKEN", help="Auth token: REST password and webhook signing key.")
@click.option("--time-scale", default=1.0, show_default=True, type=float,
              help="Multiplier for call time (Say, Play, Pause, Gather and Dial timeouts); 0.02 = fifty times faster.")
@click.option("--webhook-timeout", default=TWILIO_WEBHOOK_TIMEOUT_S, show_default=True, type=float,
              help="Seconds before a webhook counts as failed (Twilio: 15, never scaled).")
@click.option("--clip-seconds", default=10.0, show_default=True, type=float, help="Assumed length of a <Play> clip.")
@click.option("--auto-answer", multiple=True,
              help="Phone number or client:identity that answers by itself ('*' = every phone number).")
@click.option("--signal-port", type=int, default=None,
              help="Port for the Voice SDK's signalling, wss://HOST:PORT/signal [default: --port + 1; "
                   "any free port when --port is 0; -1 turns it off].")
@click.option("--tls-dir", type=click.Path(file_okay=False), default=None,
              help="Folder for the signalling's self-signed certificate [default: $HELPLINE_INSTANCE_PATH or ./instance].")
@click.option("--smtp-port", type=int, default=0, show_default=True,
              help="Port of the mail catcher, the SMTP server that keeps the service's email for the dev phone "
                   "(0 = any free port; -1 turns it off).")
@click.option("--verbose", is_flag=True, help="Log every HTTP request.")
def emulator(host: str, port: int, voice_url: str | None, voice_method: str, status_callback: str | None,
             status_events: tuple[str, ...], phone_number: str | None, account_sid: str | None,
             auth_token: str | None, time_scale: float, webhook_timeout: float, clip_seconds: float,
             auto_answer: tuple[str, ...], signal_port: int | None, tls_dir: str | None, smtp_port: int,
             verbose: bool) -> None:
    """Run the local Twilio emulator and dev phone.

    Besides Twilio's REST API and the dev phone (http://HOST:PORT/), it speaks the Voice JavaScript
    SDK's signalling over TLS (wss://HOST:SIGNAL-PORT/signal) with its own certificate, so that the
    console's softphone rings and talks with no Twilio account.
    """
    from .server import build_server, run_until_interrupted

    if time_scale <= 0:
        raise click.BadParameter("must be positive", param_hint="--time-scale")
    config = EmulatorConfig.from_env(
        voice_url=voice_url, voice_method=voice_method, status_callback=status_callback,
        status_callback_events=status_events or None, phone_number=phone_number, account_sid=account_sid,
        auth_token=auth_token, time_scale=time_scale, webhook_timeout=webhook_timeout, clip_seconds=clip_seconds,
        auto_answer=auto_answer or None)
    if not verbose:
        import logging
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    if signal_port is None:
        signal_port = port + 1 if port else 0
    if signal_port > 65535 or signal_port < -1:
        raise click.BadParameter("must be a port number, 0 for any free port, or -1 for none", param_hint="--signal-port")
    try:
        running = build_server(config, host, port, signal_port=None if signal_port == -1 else signal_port,
                               tls_dir=tls_dir, smtp_port=None if smtp_port == -1 else smtp_port)
    except OSError as exc:
        raise click.ClickException(f"Cannot listen on {host}:{port} (signalling {signal_port}): {exc}")
    click.echo(f"Twilio emulator listening on {running.url}", err=True)
    click.echo(f"  dev phone:            {running.url}/", err=True)
    click.echo(f"  TWILIO_API_BASE_URL = {running.url}", err=True)
    click.echo(f"  number {config.phone_number} -> Voice URL {config.voice_url or '(none: set --voice-url)'}",
               err=True)
    if running.emulator.signal_url:
        click.echo(f"  Voice SDK signalling: wss://{running.emulator.signal_url}/signal "
                   f"(self-signed: open https://{running.emulator.signal_url}/ once to trust it)", err=True)
    if running.emulator.mail_catcher is not None:
        click.echo(f"  mail catcher (SMTP):  {running.emulator.mail_catcher.address} (shown on the dev phone)", err=True)
    click.echo(f"  time scale {config.time_scale:g}, webhook timeout {config.webhook_timeout:g} s", err=True)
    sys.stderr.flush()
    run_until_interrupted(running)


def parse_keys(spec: str) -> list[str]:
    """"1,1,2" -> ["1", "1", "2"]; an empty entry or "-" means stay silent at that Gather.

    "barge:111" presses the keys as soon as that Gather listens (typing ahead, over its prompt);
    "say:my own health" speaks the words instead of pressing a key.
    """
    if not spec:
        return []
    keys = []
    for item in spec.split(","):
        item = item.strip()
        keys.append("" if item == "-" else item)
    for item in keys:
        if item.startswith("say:") and item[4:].strip():
            continue
        if set(item.removeprefix("barge:")) - set("0123456789*#"):
            raise click.BadParameter(f"{item!r} is not a key sequence (use 0-9, * and #, barge:<keys> to type "
                                     "ahead, or say:<words>)", param_hint="--keys")
    return keys


@click.command("simulate-call")
@click.option("--keys", default="", help="Keys for successive Gathers, comma-separated ('-' or '' = silent; "
              "barge:111 types ahead over the prompt; say:myself speaks).")
@click.option("--from", "from_", default="+447911123456", show_default=True,
              help="Caller ID, or 'anonymous' for a withheld number.")
@click.option("--to", default=None, help="Number dialled [default: the emulator's helpline number].")
@click.option("--hangup-after", type=float, default=None, help="Hang up after this many (wall-clock) seconds.")
@click.option("--emulator", "emulator_url", envvar="HELPLINE_EMULATOR_URL", default=default_emulator_url,
              show_default="$HELPLINE_EMULATOR_URL, or http://127.0.0.1:$HELPLINE_EMULATOR_PORT (5050)",
              help="Base URL of a running emulator.")
@click.option("--timeout", type=float, default=600.0, show_default=True,
              help="Give up waiting for the call to end after this many seconds.")
def simulate_call(keys: str, from_: str, to: str | None, hangup_after: float | None, emulator_url: str,
                  timeout: float) -> None:
    """Place a call through a running emulator, press keys at each Gather and print the transcript."""
    key_list = parse_keys(keys)
    with EmulatorClient(emulator_url) as client:
        try:
            client.health()
        except EmulatorError as exc:
            click.echo(f"Error: the emulator is not reachable at {emulator_url} ({exc}). "
                       "Start it with `helpline emulator` or pass --emulator URL.", err=True)
            sys.exit(2)
        try:
            sid = client.place_call(from_=from_, to=to, keys=key_list)
        except EmulatorError as exc:
            click.echo(f"Error: could not place the call: {exc}", err=True)
            sys.exit(2)
        click.echo(f"Calling from {from_} (CallSid {sid}); keys: {', '.join(k or '(silent)' for k in key_list) or 'none'}")
        started = time.monotonic()
        hung_up = False
        after = 0
        final = None
        while final is None:
            elapsed = time.monotonic() - started
            if hangup_after is not None and not hung_up and elapsed >= hangup_after:
                click.echo(f"  {elapsed:6.1f}s  (hanging up after {hangup_after:g} s)")
                client.hangup(sid)
                hung_up = True
            if elapsed > timeout:
                click.echo(f"Error: the call did not end within {timeout:g} s; hanging up.", err=True)
                client.hangup(sid)
                sys.exit(3)
            wait = 2.0
            if hangup_after is not None and not hung_up:
                wait = max(0.05, min(wait, hangup_after - elapsed))
            for event in client.events(sid, after=after, wait=wait):
                after = event["seq"]
                line = transcript.describe(event)
                if line:
                    click.echo(f"  {time.monotonic() - started:6.1f}s  {line}")
                if event["kind"] == "ended":
                    final = event
        state = client.call(sid)
        events = state["events"]
        queue_results = [e["result"] for e in events if e["kind"] == "queue.left"]
        alerts = [e for e in events if e["kind"] == "alert"]
        unused = sum(1 for e in events if e["kind"] == "digits.queued") - sum(
            1 for e in events if e["kind"] == "gather.started")
        click.echo("")
        click.echo(f"Outcome: {final['status']} after {final['duration']} s of call time; "
                   f"ended by {final['reason']}.")
        if queue_results:
            click.echo(f"Queue: {', '.join(queue_results)}")
        if unused > 0:
            click.echo(f"Note: {unused} scripted key entr{'y was' if unused == 1 else 'ies were'} never used "
                       "(no Gather asked for them).")
        if alerts:
            click.echo(f"Alerts: {len(alerts)} (see {emulator_url}/emulator/alerts)")
            for alert in alerts:
                click.echo(f"  {alert['code']} {alert['message']}: {alert['detail']}")


def main(argv: list[str] | None = None) -> None:
    """`python -m helpline.emulator [options]` serves; `... simulate-call [options]` places a call."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "simulate-call":
        simulate_call.main(args=args[1:], prog_name="python -m helpline.emulator simulate-call")
    else:
        if args and args[0] == "emulator":
            args = args[1:]
        emulator.main(args=args, prog_name="python -m helpline.emulator")


if __name__ == "__main__":  # pragma: no cover
    main()
