"""The emulator's mail catcher: a small SMTP server (aiosmtpd) that keeps every message it is sent.

With no HELPLINE_SMTP_URL the service sends its mail here (helpline/mail.py finds the port through
/emulator/health), and the dev phone lists what was caught, as it lists texts. Nothing leaves the
machine.
"""

from __future__ import annotations

import socket
from email import message_from_bytes, policy
from typing import Any

from aiosmtpd.controller import Controller

from .events import EventLog


class _Catcher:
    """aiosmtpd's handler: each message accepted goes into the log (sender, recipients, subject, text)."""

    def __init__(self, log: EventLog):
        self.log = log

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        parsed = message_from_bytes(envelope.original_content or envelope.content, policy=policy.default)
        part = parsed.get_body(preferencelist=("plain",)) if parsed.is_multipart() else parsed
        text = part.get_content() if part is not None else ""
        self.log.append("mail", to=list(envelope.rcpt_tos), **{"from": envelope.mail_from},
                        subject=str(parsed.get("Subject", "")), body=text.replace("\r\n", "\n"))
        return "250 Message accepted for delivery"


def free_port(host: str) -> int:
    """A port nobody listens on now (aiosmtpd's controller cannot bind port 0 itself)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class MailCatcher:
    """The running SMTP server and the log of what it caught."""

    def __init__(self, log: EventLog, host: str = "127.0.0.1", port: int = 0):
        self.log = log
        self.controller = Controller(_Catcher(log), hostname=host, port=port or free_port(host))
        self.controller.start()
        self.address = f"{host}:{self.controller.port}"

    def stop(self) -> None:
        try:
            self.controller.stop()
        except Exception:  # noqa: BLE001 - closing down anyway
            pass
