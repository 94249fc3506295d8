"""The softphone's access token, renewed before it runs out, with no reload: a stack of its own whose
tokens last half a minute."""

from __future__ import annotations

import time
from typing import Iterator

import pytest

from ..stack import Stack, start_stack
from .conftest import ROUTING
from .console import DESKTOP
from .test_softphone import registered, until

pytestmark = [pytest.mark.browser, pytest.mark.slow]

#: A short token, so that its renewal happens within the test.
TOKEN_TTL_S = 30


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The service and emulator, with softphone tokens that last TOKEN_TTL_S seconds."""
    tmp = tmp_path_factory.mktemp("softphone-token")
    yield from start_stack(tmp, f"sqlite:///{tmp / 'helpline.db'}",
                           {"routing": ROUTING, "twilio": {"token_ttl_s": TOKEN_TTL_S}})


def test_the_token_is_renewed_without_a_reload(stack, console, make_user):
    make_user("kit", display_name="Kit Lee")
    tab = console(DESKTOP)
    tab.log_in("kit")
    started = time.monotonic()
    identity = tab.softphone_ready()
    first = [e for e in stack.emulator.signalling()["log"] if e["kind"] == "listen" and e["identity"] == identity]
    # The SDK warns ten seconds before the token runs out; the console fetches a new one and sends it.
    until(lambda: len({e["token_id"] for e in stack.emulator.signalling()["log"]
                        if e["kind"] == "listen" and e["identity"] == identity}) > len({e["token_id"] for e in first}),
           "the softphone never sent a renewed token", timeout=TOKEN_TTL_S + 10)
    renewed_at = max(e["at"] for e in stack.emulator.signalling()["log"] if e["kind"] == "listen" and e["identity"] == identity)
    # Past the first token's life, the SDK registers again (every 30 s) on the new one, and is accepted:
    # a frame on an expired token would be refused, and the console would log the error.
    time.sleep(max(0.0, started + TOKEN_TTL_S + 8 - time.monotonic()))
    until(lambda: any(e["kind"] == "register" and e["identity"] == identity and e["at"] > renewed_at
                      for e in stack.emulator.signalling()["log"]), "the softphone did not register on its new token")
    registered(stack, identity)
    assert "Softphone ready" in tab.page.locator("#softphone-text").inner_text()
