"""A local Twilio stand-in: signed voice webhooks, TwiML execution, Twilio's REST API and a dev phone.

Run it with `helpline emulator` or `python -m helpline.emulator`; drive it with
`helpline.emulator.client.EmulatorClient` or the dev phone page at its root URL.
"""

from .client import EmulatorClient, EmulatorError
from .config import EmulatorConfig
from .server import EmulatorServer, start_emulator_in_thread

__all__ = ["EmulatorClient", "EmulatorConfig", "EmulatorError", "EmulatorServer", "start_emulator_in_thread"]
