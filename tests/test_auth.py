"""Logging in: the form and its CSRF token, wrong passwords, and the session."""

from __future__ import annotations

import re

from helpline.db import db
from helpline.users import create_user


def csrf_from(html: str) -> str:
    """The hidden csrf_token of a form page."""
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html) or re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def make_user(app, username="jo", role="handler", password="a long password"):  # type: ignore[no-untyped-def]
    with app.app_context():
        create_user(db.session, username, role, password)
        db.session.commit()


def test_login_form_has_fields_and_csrf(client):
    page = client.get("/login").get_data(as_text=True)
    assert 'name="username"' in page and 'name="password"' in page
    assert csrf_from(page)
    assert '<meta name="csrf-token"' in page
    # A caller who followed "Staff sign in" by mistake has a way back to the public site.
    assert '<a id="to-public-site" href="/">' in page


def test_login_without_csrf_is_refused(app, client):
    make_user(app)
    response = client.post("/login", data={"username": "jo", "password": "a long password"})
    assert response.status_code == 400 and response.get_json()["error"] == "csrf_failed"


def test_wrong_password_is_refused_without_saying_which_part(app, client):
    make_user(app)
    token = csrf_from(client.get("/login").get_data(as_text=True))
    response = client.post("/login", data={"username": "jo", "password": "wrong password", "csrf_token": token})
    assert response.status_code == 401
    assert "do not match" in response.get_data(as_text=True)
    response = client.post("/login", data={"username": "nobody", "password": "wrong password", "csrf_token": token})
    assert response.status_code == 401


def test_login_then_logout(app, client):
    make_user(app)
    token = csrf_from(client.get("/login").get_data(as_text=True))
    response = client.post("/login", data={"username": "JO", "password": "a long password", "csrf_token": token})
    assert response.status_code == 302
    page = client.get("/account").get_data(as_text=True)
    assert "jo" in page and "handler" in page
    client.post("/logout", data={"csrf_token": csrf_from(page)})
    assert client.get("/account").status_code == 302


def test_an_open_redirect_is_not_followed(app, client):
    make_user(app)
    token = csrf_from(client.get("/login").get_data(as_text=True))
    response = client.post("/login?next=//evil.example/", data={"username": "jo", "password": "a long password", "csrf_token": token})
    assert response.status_code == 302 and "evil" not in response.headers["Location"]
