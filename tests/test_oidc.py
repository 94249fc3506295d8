"""Sign-in through an OpenID Connect provider, against a real one: panva's certified oidc-provider
(tests/oidc_provider/), run by Node.js on a free port, with the service on another, driven over HTTP
by a requests session that follows redirects as a browser does.

The provider's own log-in form takes any name; what it asserts (amr, the subject) is chosen per test.
Its one test-only switch re-signs the next ID token with changed claims (another audience, another
nonce), with its own key, as a substituted token would arrive."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import pyotp
import pytest
import requests
from flask import Flask
from sqlalchemy import select
from werkzeug.serving import make_server

from helpline import security
from helpline.config import ConfigError, load_settings
from helpline.db import db
from helpline.models import AuditEntry, StaffSession, User, utcnow
from helpline.scheduler import shutdown

from .processes import free_port
from .test_auth import csrf_from, make_user

PROVIDER_DIR = Path(__file__).resolve().parent / "oidc_provider"
CLIENT_ID, CLIENT_SECRET = "helpline", "test-client-secret-" + "x" * 24
OTHER_CLIENT = "other-app"
PROVIDER_NAME = "Test Trust ID"


@pytest.fixture(autouse=True)
def _cheap_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    from argon2 import PasswordHasher

    from helpline import users

    monkeypatch.setattr(users, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


class Provider:
    """The running provider, and the port the service under test must listen on (its redirect URI)."""

    def __init__(self, issuer: str, app_port: int):
        self.issuer, self.app_port = issuer, app_port

    def tamper_next_id_token(self, **claims: Any) -> None:
        """The next token response's ID token carries these claims instead (signed with the provider's key)."""
        requests.post(self.issuer + "/_test/tamper", json={"claims": claims}, timeout=5).raise_for_status()


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.skip("Node.js and npm are needed to run the test identity provider (tests/oidc_provider)")
    if not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        installed = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=PROVIDER_DIR, capture_output=True,
                                   text=True, timeout=300)
        assert installed.returncode == 0, f"npm ci in {PROVIDER_DIR} failed:\n{installed.stderr}"
    port, app_port = free_port(), free_port()
    clients = [
        {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "grant_types": ["authorization_code"],
         "response_types": ["code"], "redirect_uris": [f"http://127.0.0.1:{app_port}/login/oidc/callback"]},
        {"client_id": OTHER_CLIENT, "client_secret": "another-client-secret-" + "y" * 24, "grant_types": ["authorization_code"],
         "response_types": ["code"], "redirect_uris": ["http://127.0.0.1:1/elsewhere"]},
    ]
    log = (tmp_path_factory.mktemp("oidc") / "provider.log").open("wb")
    process = subprocess.Popen([node, "provider.mjs"], cwd=PROVIDER_DIR, stdout=log, stderr=subprocess.STDOUT,
                               env={"PATH": "/usr/bin:/bin", "PORT": str(port), "CLIENTS": json.dumps(clients)})
    issuer = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(issuer + "/.well-known/openid-configuration", timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "the test identity provider did not start"
            time.sleep(0.1)
        yield Provider(issuer, app_port)
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


@pytest.fixture
def serve(app_factory: Callable[..., Flask], provider: Provider) -> Iterator[Callable[..., str]]:
    """Start the service over HTTP on the provider's registered port, configured for it; returns its URL."""
    running: list[tuple[Any, threading.Thread, Flask]] = []

    def start(require_mfa: bool = False, **oidc: Any) -> str:
        app = app_factory(public_url=f"http://127.0.0.1:{provider.app_port}", security={"require_mfa": require_mfa},
                          oidc={"issuer": provider.issuer, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                                "provider_name": PROVIDER_NAME, **oidc})
        server = make_server("127.0.0.1", provider.app_port, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        running.append((server, thread, app))
        start.app = app  # type: ignore[attr-defined]
        return f"http://127.0.0.1:{provider.app_port}"

    yield start
    for server, thread, app in running:
        server.shutdown()
        thread.join(timeout=10)
        shutdown(app)


def app_of(serve: Any) -> Flask:
    return serve.app  # type: ignore[no-any-return]


def to_callback(browser: requests.Session, base: str, login: str, *, mfa: bool = False, sub: str = "",
                start: str = "/login/oidc") -> str:
    """Start a sign-in at the service, sign in at the provider as `login`, and return the callback URL
    the provider sends the browser back to (not yet followed)."""
    page = browser.get(base + start, timeout=10)
    assert page.status_code == 200 and 'name="login"' in page.text, (page.status_code, page.text[:300])
    action = urljoin(page.url, re.search(r'action="([^"]+)"', page.text).group(1))
    response = browser.post(action, data={"login": login, "sub": sub, "mfa": "1" if mfa else ""}, allow_redirects=False,
                            timeout=10)
    for _ in range(10):
        assert response.is_redirect, (response.status_code, response.text[:300])
        location = urljoin(response.url, response.headers["Location"])
        if location.startswith(base):
            return location
        response = browser.get(location, allow_redirects=False, timeout=10)
    raise AssertionError("the provider never sent the browser back")


def sign_in(browser: requests.Session, base: str, login: str, **kwargs: Any) -> requests.Response:
    """The whole sign-in: to the provider and back, following every redirect."""
    return browser.get(to_callback(browser, base, login, **kwargs), timeout=10)


def audited(app: Flask, action: str) -> list[AuditEntry]:
    with app.app_context():
        db.session.expire_all()
        entries = list(db.session.scalars(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.seq)))
        db.session.expunge_all()
        return entries


def users(app: Flask) -> list[str]:
    with app.app_context():
        return sorted(db.session.scalars(select(User.username)))


# -- signing in ------------------------------------------------------------------------------------

def test_the_log_in_page_offers_the_provider_only_when_one_is_configured(app: Flask, client: Any) -> None:
    assert "Sign in with" not in client.get("/login").get_data(as_text=True)
    assert client.get("/login/oidc").status_code == 404
    assert client.get("/login/oidc/callback?code=x&state=y").status_code == 404


def test_a_known_user_signs_in_through_the_provider_into_a_fresh_session(serve: Any) -> None:
    base = serve()
    app = app_of(serve)
    make_user(app, "jo")
    browser = requests.Session()
    login_page = browser.get(base + "/login", timeout=10).text
    assert f"Sign in with {PROVIDER_NAME}" in login_page
    anonymous_token = csrf_from(login_page)

    landed = sign_in(browser, base, "jo", start="/login/oidc?next=/account")
    assert landed.status_code == 200 and landed.url == base + "/account", landed.url
    assert browser.get(base + "/api/me", timeout=10).json()["username"] == "jo"
    # A fresh session: the anonymous page's CSRF token is refused, the new page's accepted.
    stale = browser.post(base + "/api/me/status", json={"status": "available"}, headers={"X-CSRFToken": anonymous_token})
    assert stale.status_code == 400 and stale.json()["error"] == "csrf_failed"
    fresh = re.search(r'<meta name="csrf-token" content="([^"]+)"', landed.text).group(1)
    assert fresh != anonymous_token
    assert browser.post(base + "/api/me/status", json={"status": "available"}, headers={"X-CSRFToken": fresh}).status_code == 200
    with app.app_context():
        [record] = db.session.scalars(select(StaffSession)).all()
        assert record.method == "oidc"
        user = db.session.scalar(select(User).where(User.username == "jo"))
        assert (user.oidc_issuer, user.oidc_subject) == (serve_issuer(app), "sub-jo")
    [entry] = audited(app, "auth.login")
    assert entry.detail["method"] == "oidc" and entry.detail["provider_mfa"] is False
    assert audited(app, "auth.oidc_linked")
    # Log-out ends it like any other session.
    browser.post(base + "/logout", data={"csrf_token": fresh}, timeout=10)
    assert browser.get(base + "/api/me", timeout=10).status_code == 401


def serve_issuer(app: Flask) -> str:
    return app.config["HELPLINE"].oidc.issuer  # type: ignore[no-any-return]


def test_the_providers_second_factor_counts_and_without_it_the_helplines_own_follows(serve: Any) -> None:
    base = serve(require_mfa=True)
    app = app_of(serve)
    make_user(app, "jo")
    make_user(app, "sam")
    # The provider says it used a second factor: that is enough.
    with_mfa = requests.Session()
    landed = sign_in(with_mfa, base, "jo", mfa=True)
    assert landed.url == base + "/console" and with_mfa.get(base + "/api/me", timeout=10).status_code == 200
    assert audited(app, "auth.login")[-1].detail == {"address": "127.0.0.1", "method": "oidc", "provider_mfa": True}

    # It does not: the helpline's own second factor is required, so sam sets it up first.
    without = requests.Session()
    enrol_page = sign_in(without, base, "sam")
    assert enrol_page.url == base + "/login/enrol" and without.get(base + "/api/me", timeout=10).status_code == 401
    secret = re.search(r'<code id="totp-secret">([^<]+)</code>', enrol_page.text).group(1).replace(" ", "")
    done = without.post(base + "/login/enrol", data={"csrf_token": csrf_from(enrol_page.text),
                                                    "code": pyotp.TOTP(secret).at(security.now())}, timeout=10)
    assert done.status_code == 200 and "recovery codes" in done.text
    assert without.get(base + "/api/me", timeout=10).status_code == 200
    assert audited(app, "auth.login")[-1].detail["method"] == "oidc+totp"

    # Next time, sam (enrolled now) is asked for a code after the provider; the code's step was used.
    again = requests.Session()
    verify_page = sign_in(again, base, "sam")
    assert verify_page.url == base + "/login/verify"
    code = pyotp.TOTP(secret).at(security.now() + 30)
    assert again.post(base + "/login/verify", data={"csrf_token": csrf_from(verify_page.text), "code": code},
                      timeout=10).url == base + "/console"
    with app.app_context():
        methods = sorted(db.session.scalars(select(StaffSession.method)))
    assert methods == ["oidc", "oidc+totp", "oidc+totp"]


def test_an_enrolled_user_is_asked_for_their_code_even_where_it_is_not_required(serve: Any) -> None:
    base = serve(require_mfa=False)
    app = app_of(serve)
    make_user(app, "jo")
    with app.app_context():
        user = db.session.scalar(select(User).where(User.username == "jo"))
        user.totp_secret_enc = app.extensions["helpline.vault"].encrypt(pyotp.random_base32())
        user.totp_confirmed_at = utcnow()
        db.session.commit()
    browser = requests.Session()
    assert sign_in(browser, base, "jo").url == base + "/login/verify"
    assert browser.get(base + "/api/me", timeout=10).status_code == 401


# -- refusals --------------------------------------------------------------------------------------

def test_an_unknown_user_is_refused_with_a_clear_page_and_no_account_is_made(serve: Any) -> None:
    base = serve()
    app = app_of(serve)
    make_user(app, "jo")
    browser = requests.Session()
    refused = sign_in(browser, base, "stranger", mfa=True)
    assert refused.status_code == 403
    assert "no account on this helpline" in refused.text and "never creates one" in refused.text
    assert browser.get(base + "/api/me", timeout=10).status_code == 401
    assert users(app) == ["jo"]
    [entry] = audited(app, "auth.login_failed")
    assert entry.actor_role == "anonymous" and entry.detail["method"] == "oidc" and entry.detail["cause"] == "unknown_user"
    assert not audited(app, "auth.login")


def test_a_deactivated_user_is_refused(serve: Any) -> None:
    base = serve()
    app = app_of(serve)
    make_user(app, "jo")
    with app.app_context():
        db.session.scalar(select(User).where(User.username == "jo")).active = False
        db.session.commit()
    browser = requests.Session()
    assert sign_in(browser, base, "jo").status_code == 403
    assert browser.get(base + "/api/me", timeout=10).status_code == 401
    assert audited(app, "auth.login_failed")[-1].detail["cause"] == "inactive"


def test_a_username_given_to_someone_else_at_the_provider_is_refused(serve: Any) -> None:
    base = serve()
    app = app_of(serve)
    make_user(app, "jo")
    assert sign_in(requests.Session(), base, "jo", sub="original-jo").url == base + "/console"
    newcomer = requests.Session()
    refused = sign_in(newcomer, base, "jo", sub="another-person")
    assert refused.status_code == 403 and newcomer.get(base + "/api/me", timeout=10).status_code == 401
    entry = audited(app, "auth.login_failed")[-1]
    assert entry.detail["cause"] == "subject_mismatch" and entry.object_type == "user"


def test_an_administrator_unlinks_a_sign_in_so_the_next_one_links_afresh(serve: Any) -> None:
    from .processes import run_cli

    base = serve()
    app = app_of(serve)
    make_user(app, "jo")
    first = requests.Session()
    assert sign_in(first, base, "jo", sub="old-account").url == base + "/console"
    env = {"HELPLINE_DATABASE_URL": app.config["HELPLINE"].resolved_database_url, "HELPLINE_INSTANCE_PATH": app.instance_path}
    done = run_cli(["unlink-sign-in", "jo"], env)
    assert done.returncode == 0 and "unlinked" in done.stdout, done.stderr
    # The old account's session ended with the link, and the new account now signs in as jo.
    assert first.get(base + "/api/me", timeout=10).status_code == 401
    second = requests.Session()
    assert sign_in(second, base, "jo", sub="new-account").url == base + "/console"
    with app.app_context():
        assert db.session.scalar(select(User.oidc_subject).where(User.username == "jo")) == "new-account"
    [entry] = audited(app, "auth.oidc_unlinked")
    assert entry.object_type == "user" and "old-account" not in str(entry.detail)
    # Asked again with nothing linked, or for nobody, it says so and changes nothing.
    assert run_cli(["unlink-sign-in", "nobody"], env).returncode != 0


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


def test_a_bad_state_is_refused_and_changes_nothing(serve: Any) -> None:
    base = serve()
    app = app_of(serve)
    make_user(app, "jo")
    browser = requests.Session()
    callback = to_callback(browser, base, "jo")
    refused = browser.get(with_query(callback, state="forged-state-value"), timeout=10)
    assert refused.status_code == 400 and "not started in this browser" in refused.text
    assert browser.get(base + "/api/me", timeout=10).status_code == 401
    # The genuine answer delivered to another browser (one that never started a sign-in) is refused too.
    other = requests.Session()
    assert other.get(callback, timeout=10).status_code == 400
    assert other.get(base + "/api/me", timeout=10).status_code == 401
    assert [entry.detail["cause"] for entry in audited(app, "auth.login_failed")] == ["state", "state"]
    with app.app_context():
        assert not db.session.scalars(select(StaffSession)).all()
        assert db.session.scalar(select(User.oidc_subject).where(User.username == "jo")) is None


@pytest.mark.parametrize("claims", [
    {"aud": OTHER_CLIENT},
    # With azp naming us, authlib alone would accept it: the audience must be checked as such.
    {"aud": OTHER_CLIENT, "azp": CLIENT_ID},
    {"nonce": "a-nonce-from-another-sign-in"},
    {"iss": "http://127.0.0.1:1"},
], ids=["another-audience", "another-audience-azp-us", "another-nonce", "another-issuer"])
def test_an_id_token_not_meant_for_this_sign_in_is_refused(serve: Any, provider: Provider, claims: dict[str, str]) -> None:
    base = serve()
    app = app_of(serve)
    make_user(app, "jo")
    browser = requests.Session()
    callback = to_callback(browser, base, "jo", mfa=True)
    provider.tamper_next_id_token(**claims)
    refused = browser.get(callback, timeout=10)
    assert refused.status_code == 401 and "could not be trusted" in refused.text
    assert browser.get(base + "/api/me", timeout=10).status_code == 401
    [entry] = audited(app, "auth.login_failed")
    assert entry.detail["cause"] == "id_token" and entry.detail["method"] == "oidc"
    with app.app_context():
        assert not db.session.scalars(select(StaffSession)).all()


def test_a_user_who_cancels_at_the_provider_is_told_so(serve: Any) -> None:
    base = serve()
    app = app_of(serve)
    browser = requests.Session()
    browser.get(base + "/login/oidc", timeout=10)
    refused = browser.get(base + "/login/oidc/callback?error=access_denied&error_description=%3Cb%3Eno%3C/b%3E", timeout=10)
    assert refused.status_code == 401 and "did not sign you in" in refused.text and "<b>" not in refused.text
    assert audited(app, "auth.login_failed")[-1].detail == {"address": "127.0.0.1", "method": "oidc",
                                                             "cause": "provider_error", "error": "access_denied"}


# -- configuration ---------------------------------------------------------------------------------

def test_the_provider_is_configured_from_the_environment_and_mistakes_are_named(tmp_path: Path) -> None:
    environ = {"HELPLINE_OIDC_ISSUER": "https://login.example.org/tenant/v2.0", "HELPLINE_OIDC_CLIENT_ID": "helpline",
               "HELPLINE_OIDC_CLIENT_SECRET": "s" * 32}
    settings = load_settings({"instance_path": str(tmp_path)}, environ=environ).oidc
    assert settings.enabled and settings.client_secret == "s" * 32 and settings.username_claim == "preferred_username"
    assert not load_settings({"instance_path": str(tmp_path)}, environ={}).oidc.enabled
    for environ_, says in (
        ({"HELPLINE_OIDC_ISSUER": "https://login.example.org"}, "issuer needs client_id and client_secret"),
        ({**environ, "HELPLINE_OIDC_ISSUER": "http://login.example.org"}, "must be https"),
        ({"HELPLINE_OIDC_CLIENT_ID": "helpline"}, "need an issuer"),
    ):
        with pytest.raises(ConfigError) as raised:
            load_settings({"instance_path": str(tmp_path)}, environ=environ_)
        assert any(line.startswith("config: oidc") and says in line for line in raised.value.problems), raised.value.problems
    with pytest.raises(ConfigError, match="oidc.scopes: must include openid"):
        load_settings({"instance_path": str(tmp_path), "oidc": {"scopes": "profile email"}}, environ={})


def test_a_username_domain_is_taken_off_the_claim(serve: Any) -> None:
    base = serve(username_claim="email", username_domain="trust.example")
    make_user(app_of(serve), "jo")
    assert sign_in(requests.Session(), base, "jo").url == base + "/console"  # the provider says jo@trust.example


def test_an_address_in_another_domain_matches_nobody(serve: Any) -> None:
    base = serve(username_claim="email", username_domain="nhs.example")
    app = app_of(serve)
    make_user(app, "jo")
    assert sign_in(requests.Session(), base, "jo").status_code == 403  # jo@trust.example is not jo@nhs.example
    assert audited(app, "auth.login_failed")[-1].detail["cause"] == "unknown_user"
