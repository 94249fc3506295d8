"""The emulator's mail catcher: a real SMTP server beside it that keeps what it is sent, for the dev phone."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage

import requests


def test_mail_sent_to_the_catcher_is_listed_for_the_dev_phone(emu, emulator_url):
    address = emu.health()["smtp"]
    assert address, "the emulator started without its mail catcher"
    host, _, port = address.rpartition(":")
    message = EmailMessage()
    message["From"] = "no-reply@helpline.test"
    message["To"] = "quinn@example.org"
    message["Subject"] = "Your request PH-ABCDEFGH"
    message.set_content("We will reply to this address.\nTake care.")
    with smtplib.SMTP(host, int(port), timeout=5) as smtp:
        smtp.send_message(message)
    with requests.Session() as http:
        caught = http.get(emulator_url + "/emulator/mail", timeout=5).json()["mail"]
        [mail] = [item for item in caught if item["subject"] == "Your request PH-ABCDEFGH"]
        assert mail["to"] == ["quinn@example.org"] and mail["from"] == "no-reply@helpline.test"
        assert mail["body"] == "We will reply to this address.\nTake care.\n"
        after = http.get(emulator_url + f"/emulator/mail?after={mail['seq']}", timeout=5).json()
        assert after["mail"] == [] and after["last_seq"] == mail["seq"]
        page = http.get(emulator_url + "/", timeout=5).text
        assert 'id="mailbox"' in page
        script = http.get(emulator_url + "/devphone-static/devphone.js", timeout=5).text
        assert '"/emulator/mail"' in script
