"""Security keys without a browser: what the enrolment and log-in routes refuse, and that a refusal
changes nothing. (Enrolling and using a key in chromium's virtual authenticator is in
tests/browser/test_security_keys.py.)"""

from __future__ import annotations

import pyotp
from sqlalchemy import select

from helpline.db import db
from helpline.models import SecurityKey, User, utcnow

from .booking_support import log_in


def test_a_key_needs_two_step_verification_first(app):
    console = log_in(app, "handler")
    refused = console.post("/api/me/security-keys/options", {})
    assert refused.status_code == 409 and refused.get_json()["error"] == "mfa_not_set_up"


def enrolled(app, console):  # type: ignore[no-untyped-def]
    with app.app_context():
        user = db.session.get(User, console.user_id)
        user.totp_secret_enc = app.extensions["helpline.vault"].encrypt(pyotp.random_base32())
        user.totp_confirmed_at = utcnow()
        db.session.commit()


def test_options_name_the_public_host_and_a_bad_answer_stores_nothing(app_factory):
    app = app_factory(public_url="https://helpline.example.org")
    console = log_in(app, "handler")
    enrolled(app, console)
    options = console.post("/api/me/security-keys/options", {})
    assert options.status_code == 200
    public_key = options.get_json()["publicKey"]
    assert public_key["rp"]["id"] == "helpline.example.org" and len(public_key["challenge"]) >= 40
    for bad in ({"name": "Key", "credential": {"id": "x", "rawId": "x", "type": "public-key",
                                               "response": {"clientDataJSON": "e30", "attestationObject": "oA"}}},
                {"name": "", "credential": {}}, {"name": "Key"}, {"name": "<b>Key</b>", "credential": {}}):
        response = console.post("/api/me/security-keys", bad)
        assert response.status_code in (400, 409, 422), (bad, response.get_json())
    # The challenge was spent by the first attempt: a second answer to it is refused as well.
    well_formed = {"name": "Key", "credential": {"id": "x", "rawId": "x", "type": "public-key",
                                                 "response": {"clientDataJSON": "e30", "attestationObject": "oA"}}}
    again = console.post("/api/me/security-keys", well_formed)
    assert again.status_code == 409 and again.get_json()["error"] == "challenge_expired"
    with app.app_context():
        assert not db.session.scalars(select(SecurityKey)).all()


def test_an_ip_address_cannot_be_a_relying_party(app_factory):
    app = app_factory(public_url="http://127.0.0.1:5000")
    console = log_in(app, "handler")
    enrolled(app, console)
    refused = console.post("/api/me/security-keys/options", {})
    assert refused.status_code == 409 and "host name" in refused.get_json()["detail"]


def test_the_log_in_routes_need_a_log_in_in_progress(client):
    from .test_auth import csrf_from

    token = csrf_from(client.get("/login").get_data(as_text=True))
    for path in ("/login/verify/key/options", "/login/verify/key"):
        response = client.post(path, json={"credential": {"id": "x"}}, headers={"X-CSRFToken": token})
        assert response.status_code == 409 and response.get_json()["error"] == "no_login_in_progress"


def test_someone_elses_key_cannot_be_removed(app):
    owner, other = log_in(app, "handler"), log_in(app, "handler")
    with app.app_context():
        key = SecurityKey(user_id=owner.user_id, credential_id="abc", public_key=b"k", name="Mine")
        db.session.add(key)
        db.session.commit()
        key_id = key.id
    response = other.client.post(f"/account/security-keys/{key_id}/remove", data={"csrf_token": other.token})
    assert response.status_code == 404
    with app.app_context():
        assert db.session.get(SecurityKey, key_id) is not None
