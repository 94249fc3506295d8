"""The console's pages: who may open which, and what every page carries for its browser code."""

from __future__ import annotations

import re

import pytest

from helpline.db import db
from helpline.users import create_user

from .test_auth import csrf_from

PASSWORD = "a long password"


def log_in(app, client, role: str) -> None:  # type: ignore[no-untyped-def]
    """Create a user with `role` and log the test client in as them."""
    with app.app_context():
        create_user(db.session, f"{role}1", role, PASSWORD)
        db.session.commit()
    token = csrf_from(client.get("/login").get_data(as_text=True))
    response = client.post("/login", data={"username": f"{role}1", "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 302


def served(client, path: str) -> bool:  # type: ignore[no-untyped-def]
    """Whether a static file is served; the response is closed, since it holds the file open."""
    with client.get(path) as response:
        return response.status_code == 200 and bool(response.get_data())


@pytest.mark.parametrize(("role", "home"), [("handler", "/console"), ("supervisor", "/supervisor")])
def test_logging_in_lands_on_the_roles_own_page(app, client, role, home):
    log_in(app, client, role)
    assert client.get("/staff").headers["Location"].endswith(home)


@pytest.mark.parametrize(("path", "role"), [("/console", "handler"), ("/supervisor", "supervisor")])
def test_page_renders_for_its_role(app, client, path, role):
    log_in(app, client, role)
    response = client.get(path)
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    meta = re.search(r'<meta name="csrf-token" content="([^"]+)">', page)
    assert meta and meta.group(1)
    assert 'src="/console/static/vendor/socket.io.min.js"' in page
    assert served(client, "/console/static/vendor/socket.io.min.js")


@pytest.mark.parametrize(
    ("path", "role"),
    [("/console", "supervisor"), ("/console", "clinician"), ("/console", "admin"),
     ("/supervisor", "handler"), ("/supervisor", "clinician"), ("/supervisor", "admin")],
)
def test_page_is_refused_to_other_roles(app, client, path, role):
    log_in(app, client, role)
    response = client.get(path)
    assert response.status_code == 403
    assert "not for your role" in response.get_data(as_text=True)


@pytest.mark.parametrize("path", ["/console", "/supervisor"])
def test_page_sends_strangers_to_log_in(client, path):
    response = client.get(path)
    assert response.status_code == 302
    assert "/login" in response.headers["Location"]


def test_handler_page_keeps_scripts_out_of_the_markup(app, client):
    """A later strict CSP (script-src 'self') must not break the console: no inline code at all."""
    log_in(app, client, "handler")
    page = client.get("/console").get_data(as_text=True)
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", page, flags=re.S)
    assert scripts and all('src="/console/static/' in attributes and not body.strip() for attributes, body in scripts)
    assert not re.search(r"\son[a-z]+=", page), "inline event handler"
    assert not re.search(r"\sstyle=", page), "inline style"
    assert 'type="module" src="/console/static/console.js"' in page
    assert 'id="first-contact"' in page


@pytest.mark.parametrize(("path", "role"), [("/console", "handler"), ("/supervisor", "supervisor")])
def test_softphone_pages_load_the_vendored_voice_sdk(app, client, path, role):
    log_in(app, client, role)
    page = client.get(path).get_data(as_text=True)
    assert 'src="/console/static/vendor/twilio.min.js"' in page
    assert served(client, "/console/static/vendor/twilio.min.js")
    assert served(client, "/console/static/vendor/twilio.LICENSE.md")
    assert served(client, "/console/static/softphone.js")
    assert served(client, "/console/static/sounds/ended.wav")


def test_handler_page_offers_every_wrap_up_outcome(app, client):
    from handler_console.pages import OUTCOMES

    log_in(app, client, "handler")
    page = client.get("/console").get_data(as_text=True)
    for code, _label in OUTCOMES:
        assert f'name="outcome" value="{code}"' in page


def test_static_scripts_are_served(client):
    for name in ("console.js", "supervisor.js", "common.js", "console.css"):
        assert served(client, f"/console/static/{name}")
