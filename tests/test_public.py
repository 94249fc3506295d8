"""The public pages and the web self-referral, through HTTP: every page, every gate and branch of the
form, the JSON request, and what is (and is not) stored."""

from __future__ import annotations

import datetime as dt
import json
import re
import zoneinfo
from pathlib import Path
from typing import Any, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from helpline import mail, public, reports, router
from helpline.db import db
from helpline.hours import OpeningHours
from helpline.models import AuditEntry, Call, CallEvent, PublicSubmission, QueueEntry, utcnow
from helpline.public import referrals

from . import routing_factories
from .test_console_api import Console, presence_of, service, state
from .twilio_recorder import Recorder, twilio_api  # noqa: F401 - fixture

PAGES = ["/", "/what-we-offer", "/confidentiality", "/self-help", "/contact-us", "/offline", "/self-referral",
         "/self-referral/eligibility", "/self-referral/need", "/self-referral/safe-now", "/self-referral/contact",
         "/self-referral/safe-times", "/self-referral/messages", "/self-referral/name", "/self-referral/message",
         "/self-referral/consent", "/self-referral/someone-else", "/self-referral/not-eligible",
         "/self-referral/urgent-help"]
NUMBER = "07911 123456"
E164 = "+447911123456"


def token_of(client: FlaskClient, path: str = "/self-referral") -> str:
    page = client.get(path).get_data(as_text=True)
    match = re.search(r'<meta name="csrf-token" content="([^"]+)">', page)
    assert match, page
    return match.group(1)


class Visitor:
    """Someone on the public pages, without JavaScript: plain form posts with the page's CSRF token."""

    def __init__(self, app: Flask, address: str = "203.0.113.7"):
        self.client = app.test_client()
        self.address = address
        self.token = token_of(self.client)

    def get(self, path: str):  # type: ignore[no-untyped-def]
        return self.client.get(path, environ_base={"REMOTE_ADDR": self.address})

    def answer(self, path: str, **fields: Any):  # type: ignore[no-untyped-def]
        return self.client.post(path, data={"csrf_token": self.token, **fields}, environ_base={"REMOTE_ADDR": self.address})

    def api(self, payload: Any, token: str | None = "page"):  # type: ignore[no-untyped-def]
        headers = {"X-CSRFToken": self.token} if token == "page" else ({"X-CSRFToken": token} if token else {})
        return self.client.post("/api/self-referrals", json=payload, headers=headers, environ_base={"REMOTE_ADDR": self.address})

    def through_to_check_answers(self, contact_by: str = "phone", safe_now: str = "yes", times: tuple[str, ...] = ("any",),
                                 message: str = "Struggling since the inquest.") -> None:
        """Answer every question, each on its own page, following the redirects the server gives."""
        steps: list[tuple[str, dict[str, Any]]] = [
            ("/self-referral", {"about": "self"}),
            ("/self-referral/eligibility", {"eligible": "yes"}),
            ("/self-referral/need", {"need": "addiction"}),
            ("/self-referral/safe-now", {"safe_now": safe_now}),
        ]
        for path, fields in steps:
            response = self.answer(path, **fields)
            assert response.status_code == 302, (path, response.get_data(as_text=True)[:500])
        if safe_now == "no":
            assert response.headers["Location"].endswith("/self-referral/urgent-help")
        contact = {"contact_by": contact_by, "phone": NUMBER} if contact_by == "phone" else {"contact_by": "email", "email": "sam@example.org"}
        assert self.answer("/self-referral/contact", **contact).headers["Location"].endswith(
            "/self-referral/safe-times" if contact_by == "phone" else "/self-referral/name")
        if contact_by == "phone":
            assert self.answer("/self-referral/safe-times", safe_times=list(times)).status_code == 302
            assert self.answer("/self-referral/messages", safe_for_voicemail="no", safe_to_text="yes").status_code == 302
        assert self.answer("/self-referral/name", preferred_name="Quinn").status_code == 302
        assert self.answer("/self-referral/message", message=message).status_code == 302
        response = self.answer("/self-referral/consent", consent="yes")
        assert response.headers["Location"].endswith("/self-referral/check-answers")


def counts(app: Flask) -> dict[str, int]:
    with app.app_context():
        return {"calls": db.session.scalar(select(func.count()).select_from(Call)) or 0,
                "entries": db.session.scalar(select(func.count()).select_from(QueueEntry)) or 0,
                "events": db.session.scalar(select(func.count()).select_from(CallEvent)) or 0,
                "marks": db.session.scalar(select(func.count()).select_from(PublicSubmission)) or 0}


def valid_request(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"about": "self", "eligible": True, "need": "mental_health",
                            "contact": {"phone": NUMBER, "email": "", "safe_to_text": False, "safe_for_voicemail": True,
                                        "safe_times": ""},
                            "preferred_name": "Quinn", "message": "Please ring after clinic.", "consent": True}
    body.update(changes)
    return body


# -- the pages ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", PAGES)
def test_every_public_page_is_open_to_all_with_the_emergency_advice(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "999" in page and "116 123" in page and "NHS 111" in page and "option 2" in page
    # Nothing from another site: every stylesheet, script, image and icon is the service's own.
    assert not re.findall(r'<(?:script|link|img)\b[^>]*(?:src|href)="(?:https?:)?//', page)
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "script-src 'self';" in policy and "font-src 'self'" in policy
    assert "http" not in policy and "*" not in policy  # no other origin for anything


def test_the_home_page_is_public_and_staff_sign_in_elsewhere(client: FlaskClient) -> None:
    page = client.get("/").get_data(as_text=True)
    assert "doctors and dentists" in page and 'href="/login"' in page and 'href="/self-referral"' in page
    assert client.get("/staff").headers["Location"].endswith("/login")


def test_the_design_system_is_served_from_here(client: FlaskClient) -> None:
    page = client.get("/").get_data(as_text=True)
    for asset in re.findall(r'(?:href|src)="(/public/static/[^"]+)"', page):
        with client.get(asset) as response:
            assert response.status_code == 200, asset
    with client.get("/assets/images/nhsuk-icon-cross.svg") as icon:
        assert icon.status_code == 200
    licence = Path(public.__file__).parent / "static" / "vendor" / "nhsuk-frontend.README.md"
    assert "MIT" in licence.read_text()


def test_self_help_comes_from_the_yaml_file(client: FlaskClient) -> None:
    page = client.get("/self-help").get_data(as_text=True)
    for section in public.load_self_help():
        assert section["title"] in page
        for item in section["resources"]:
            assert item["title"] in page


@pytest.mark.parametrize(("text", "problem"), [
    ("sections: []", "needs a list of `sections`"),
    ("sections: [{title: A}]", "needs a list of `resources`"),
    ("sections: [{title: A, resources: [{title: B}]}]", "needs a `title` and a `text`"),
    ("sections: [{title: A, resources: [{title: B, text: C, link: 'http://x'}]}]", "full https://"),
    ("sections: [", "not valid YAML"),
])
def test_a_broken_self_help_file_is_named_clearly(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "self_help.yaml"
    path.write_text(text)
    with pytest.raises(public.SelfHelpError, match=re.escape(problem)):
        public.load_self_help(path)


def test_the_app_manifest_and_service_worker(client: FlaskClient) -> None:
    manifest = client.get("/manifest.webmanifest")
    assert manifest.mimetype == "application/manifest+json"
    body = manifest.get_json(force=True)
    assert body["start_url"] == "/" and body["display"] == "standalone"
    for icon in body["icons"]:
        with client.get(icon["src"]) as image:
            assert image.status_code == 200 and image.mimetype == "image/png"
    with client.get("/service-worker.js") as worker:
        assert worker.headers["Service-Worker-Allowed"] == "/"
        script = worker.get_data(as_text=True)
    kept = re.search(r"const PAGES = \[([^\]]*)\]", script)
    assert kept is not None
    pages = json.loads("[" + kept.group(1) + "]")
    assert "/self-help" in pages and not any("referral" in page or page.startswith("/api") for page in pages)


# -- the form, without JavaScript ---------------------------------------------------------------------------

def test_the_whole_form_joins_the_line_as_a_web_call_back(app: Flask) -> None:
    visitor = Visitor(app)
    assert counts(app)["calls"] == 0
    visitor.through_to_check_answers()
    check = visitor.get("/self-referral/check-answers").get_data(as_text=True)
    assert "Check your answers" in check and NUMBER in check and "Struggling since the inquest." in check
    assert counts(app)["calls"] == 0  # nothing stored before they send it
    sent = visitor.answer("/self-referral/check-answers")
    assert sent.headers["Location"].endswith("/self-referral/confirmation")
    confirmation = visitor.get("/self-referral/confirmation").get_data(as_text=True)
    reference = re.search(r'id="reference">(PH-[A-Z0-9]{8})<', confirmation).group(1)  # type: ignore[union-attr]
    assert NUMBER not in confirmation and "Quinn" not in confirmation and "inquest" not in confirmation
    assert "Your request is in line now" in confirmation  # any time, and the line always open here
    with app.app_context():
        call = db.session.scalar(select(Call))
        assert call.channel == "web" and call.call_sid == f"web-{reference}" and call.need == "addiction"
        assert call.caller_number_status == "valid" and E164 not in (call.caller_number_enc or "")
        assert call.answers == {"about": "self", "eligible": "yes", "safe_to_text": True, "safe_for_voicemail": False,
                                "contact_by": "phone", "safe_now": True}
        assert "inquest" not in (call.request_enc or "")  # encrypted
        assert referrals.request_details(call)["message"] == "Struggling since the inquest."
        entry = db.session.scalar(select(QueueEntry))
        assert entry.kind == "callback" and entry.state == "waiting" and entry.not_before is None
    # The visitor's answers are forgotten: the form starts again, and the confirmation shows once.
    assert visitor.get("/self-referral/check-answers").headers["Location"].endswith("/self-referral")
    assert visitor.get("/self-referral/confirmation").status_code == 302


def test_a_web_request_is_in_the_queue_with_its_channel(app: Flask) -> None:
    Visitor(app).api(valid_request())
    ann = Console(app, "ann")
    [item] = ann.get("/api/queue").get_json()["calls"]
    assert item["channel"] == "web" and item["need"] == "mental_health"
    assert set(item) == {"id", "position", "waiting_s", "need", "flags", "channel"}


def test_requests_take_their_place_by_when_they_were_made(app: Flask) -> None:
    visitor = Visitor(app)
    first = visitor.api(valid_request(need="return_to_work")).get_json()["reference"]
    second = visitor.api(valid_request(need="addiction")).get_json()["reference"]
    ann = Console(app, "ann")
    calls = ann.get("/api/queue").get_json()["calls"]
    with app.app_context():
        sids = [db.session.get(Call, item["id"]).call_sid for item in calls]
    assert sids == [f"web-{first}", f"web-{second}"]


def test_about_someone_else_on_the_form_keeps_nothing_and_says_the_ivr_words(app: Flask) -> None:
    visitor = Visitor(app)
    response = visitor.answer("/self-referral", about="someone_else")
    assert response.headers["Location"].endswith("/self-referral/someone-else")
    page = visitor.get("/self-referral/someone-else").get_data(as_text=True)
    with app.test_request_context():
        shared = referrals.gate_text("someone_else", utcnow())
    assert shared.replace("'", "&#39;") in page
    # The IVR says the same words at the same gate.
    flow = app.extensions["helpline.ivr"].flow
    assert "{someone_else}" in flow.step("third_party_check").prompt
    assert counts(app) == {"calls": 0, "entries": 0, "events": 0, "marks": 0}
    assert visitor.get("/self-referral/eligibility").status_code == 200
    with visitor.client.session_transaction() as cookie:
        assert "self_referral" not in cookie


def test_not_eligible_on_the_form_signposts_and_keeps_nothing(app: Flask) -> None:
    visitor = Visitor(app)
    visitor.answer("/self-referral", about="self")
    response = visitor.answer("/self-referral/eligibility", eligible="no")
    assert response.headers["Location"].endswith("/self-referral/not-eligible")
    page = visitor.get("/self-referral/not-eligible").get_data(as_text=True)
    assert "Workforce Specialist Service" in page and "0330 123 1245" in page
    assert "{signposting}" in app.extensions["helpline.ivr"].flow.step("ineligible_check").prompt
    assert counts(app) == {"calls": 0, "entries": 0, "events": 0, "marks": 0}
    with visitor.client.session_transaction() as cookie:
        assert "self_referral" not in cookie


@pytest.mark.parametrize(("path", "fields", "problem"), [
    ("/self-referral", {}, "Choose who you are asking about"),
    ("/self-referral", {"about": "everyone"}, "Choose who you are asking about"),
    ("/self-referral/eligibility", {}, "Say whether this describes you"),
    ("/self-referral/need", {"need": "shopping"}, "Choose what you would like help with"),
    ("/self-referral/safe-now", {}, "Tell us whether you are safe right now"),
    ("/self-referral/contact", {}, "Choose how we should contact you"),
    ("/self-referral/contact", {"contact_by": "phone", "phone": "12"}, "Enter a phone number"),
    ("/self-referral/contact", {"contact_by": "email", "email": "not an address"}, "Enter an email address"),
    ("/self-referral/safe-times", {}, "Choose when it is safe"),
    ("/self-referral/messages", {"safe_to_text": "yes"}, "Say whether we may leave a voicemail"),
    ("/self-referral/name", {"preferred_name": "x" * 61}, "60 characters or fewer"),
    ("/self-referral/message", {"message": "<script>alert(1)</script>"}, "cannot have a word between &lt; and &gt;"),
    ("/self-referral/message", {"message": "I feel\u202e low"}, "hidden or control character"),
    ("/self-referral/consent", {}, "Tick the box to agree"),
])
def test_each_question_says_what_is_wrong(app: Flask, path: str, fields: dict[str, str], problem: str) -> None:
    visitor = Visitor(app)
    response = visitor.answer(path, **fields)
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert "There is a problem" in page and problem in page and "<title>Error:" in page
    assert counts(app)["calls"] == 0


@pytest.mark.parametrize(("path", "fields", "kept"), [
    ("/self-referral/message", {"message": "I feel <really> low, and " + "x" * 1000}, "I feel &lt;really&gt; low, and xxx"),
    ("/self-referral/name", {"preferred_name": "Sam <b>"}, 'value="Sam &lt;b&gt;"'),
    ("/self-referral/contact", {"contact_by": "email", "email": "not-an-email"}, 'value="not-an-email"'),
    ("/self-referral/contact", {"contact_by": "phone", "phone": "07700 9"}, 'value="07700 9"'),
])
def test_what_was_typed_comes_back_with_its_error(app: Flask, path: str, fields: dict[str, str], kept: str) -> None:
    """Nobody types a message twice: the page with the error shows it as it was typed (escaped), and
    the error is tied to its field."""
    visitor = Visitor(app)
    page = visitor.answer(path, **fields).get_data(as_text=True)
    assert "There is a problem" in page and kept in page
    field = next(iter(name for name in fields if name != "contact_by"))
    assert re.search(rf'id="{field}"[^>]*aria-describedby="[^"]*{field}-error', page) or \
        re.search(rf'aria-describedby="[^"]*{field}-error[^"]*"[^>]*id="{field}"', page), page


def test_the_phone_error_gives_no_example_it_would_refuse(app: Flask) -> None:
    page = Visitor(app).answer("/self-referral/contact", contact_by="phone", phone="12").get_data(as_text=True)
    assert "a mobile number starting 07 or a landline number starting 01 or 02" in page and "07700 900 982" not in page


def test_an_address_nothing_answers_is_a_page_of_the_site_in_a_browser_and_json_elsewhere(client: FlaskClient) -> None:
    browser = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
    for path in ("/accessibilty", "/self-referral/no-such-step", "/console/nowhere"):
        response = client.get(path, headers=browser)
        page = response.get_data(as_text=True)
        assert response.status_code == 404 and response.mimetype == "text/html", path
        assert "Page not found" in page and 'href="/"' in page and "116 123" in page, path
    refused = client.get("/api/nowhere", headers={"Accept": "application/json"})
    assert refused.status_code == 404 and refused.get_json()["error"] == "not_found"
    assert client.get("/nowhere").get_json()["error"] == "not_found"  # no Accept header: a program, not a person


def test_the_form_needs_its_csrf_token(app: Flask) -> None:
    visitor = Visitor(app)
    response = visitor.client.post("/self-referral", data={"about": "self"})
    # A person whose form outlived its session gets a page, with how to reach us, never JSON.
    page = response.get_data(as_text=True)
    assert response.status_code == 400 and response.mimetype == "text/html"
    assert "Sorry, your request could not be sent" in page and "116 123" in page and 'href="/self-referral"' in page
    assert counts(app)["calls"] == 0


def test_check_answers_sends_back_to_the_first_unanswered_question(app: Flask) -> None:
    visitor = Visitor(app)
    visitor.answer("/self-referral", about="self")
    visitor.answer("/self-referral/eligibility", eligible="yes")
    assert visitor.get("/self-referral/check-answers").headers["Location"].endswith("/self-referral/need")


def test_changing_an_answer_returns_to_check_answers(app: Flask) -> None:
    visitor = Visitor(app)
    visitor.through_to_check_answers()
    response = visitor.answer("/self-referral/need?change=1", need="return_to_work")
    assert response.headers["Location"].endswith("/self-referral/check-answers")
    assert "Support returning to work" in visitor.get("/self-referral/check-answers").get_data(as_text=True)


def test_an_email_request_skips_the_phone_questions(app: Flask) -> None:
    visitor = Visitor(app)
    visitor.through_to_check_answers(contact_by="email")
    page = visitor.get("/self-referral/check-answers").get_data(as_text=True)
    assert "sam@example.org" in page and "Safe times" not in page
    visitor.answer("/self-referral/check-answers")
    with app.app_context():
        entry = db.session.scalar(select(QueueEntry))
        call = db.session.get(Call, entry.call_id)
        assert entry.kind == "email" and call.caller_number_enc is None and call.caller_number_status == "withheld"


def test_the_honeypot_gets_a_reference_and_nothing_is_kept(app: Flask) -> None:
    visitor = Visitor(app)
    visitor.through_to_check_answers()
    response = visitor.answer("/self-referral/check-answers", website="http://spam.example")
    assert response.headers["Location"].endswith("/self-referral/confirmation")
    assert re.search(r'id="reference">PH-', visitor.get("/self-referral/confirmation").get_data(as_text=True))
    assert counts(app)["calls"] == 0
    assert Visitor(app).api(valid_request(website="x")).status_code == 201
    assert counts(app)["calls"] == 0


def test_not_safe_now_shows_the_emergency_advice_at_once_and_alerts_supervisors(app: Flask) -> None:
    alerts: list[dict[str, Any]] = []
    db.bus.subscribe("risk_alert", lambda **alert: alerts.append(alert))
    visitor = Visitor(app)
    visitor.answer("/self-referral", about="self")
    visitor.answer("/self-referral/eligibility", eligible="yes")
    visitor.answer("/self-referral/need", need="mental_health")
    response = visitor.answer("/self-referral/safe-now", safe_now="no")
    assert response.headers["Location"].endswith("/self-referral/urgent-help")
    page = visitor.get("/self-referral/urgent-help").get_data(as_text=True)
    assert page.index("999") < page.index("Continue with my request")
    assert alerts == [] and counts(app)["calls"] == 0
    visitor.through_to_check_answers(safe_now="no")
    visitor.answer("/self-referral/check-answers")
    confirmation = visitor.get("/self-referral/confirmation").get_data(as_text=True)
    assert "You told us you do not feel safe" in confirmation and "116 123" in confirmation
    with app.app_context():
        call = db.session.scalar(select(Call))
        entry = db.session.scalar(select(QueueEntry))
        assert referrals.AT_RISK_FLAG in call.flags and entry.priority < 100
    [alert] = alerts
    assert alert["call_id"] == call.id and alert["level"] == "immediate" and alert["source"] == "web_form"
    assert "Quinn" not in json.dumps(alert) and "7911" not in json.dumps(alert)
    # It stays on the wallboard's list of the day's alerts, as a risk screen's does.
    with app.app_context():
        [kept] = reports.alerts(db.session, dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1))
    assert kept["call_id"] == call.id and kept["source"] == "web_form" and kept["handler"]["id"] is None


# -- POST /api/self-referrals ---------------------------------------------------------------------------------

def test_the_api_takes_a_request_as_the_contract_gives_it(app: Flask) -> None:
    response = Visitor(app).api(valid_request())
    assert response.status_code == 201
    body = response.get_json()
    assert re.fullmatch(r"PH-[A-Z0-9]{8}", body["reference"]) and "Quinn" not in json.dumps(body)
    with app.app_context():
        call = db.session.scalar(select(Call))
        assert call.answers["safe_for_voicemail"] is True and call.channel == "web"


@pytest.mark.parametrize(("payload", "outcome", "words"), [
    ({"about": "someone_else"}, "third_party", "contact us themselves"),
    ({"about": "someone_else", "eligible": True, "contact": {"phone": NUMBER}, "preferred_name": "Their name",
      "message": "my colleague drinks", "consent": True}, "third_party", "contact us themselves"),
    ({"about": "self", "eligible": False, "contact": {"email": "x@example.org"}, "consent": True}, "ineligible",
     "Workforce Specialist Service"),
])
def test_the_api_keeps_nothing_for_someone_else_or_the_ineligible(app: Flask, payload: dict[str, Any], outcome: str,
                                                                    words: str) -> None:
    response = Visitor(app).api(payload)
    assert response.status_code == 200
    assert response.get_json()["outcome"] == outcome and words in response.get_json()["message"]
    assert counts(app) == {"calls": 0, "entries": 0, "events": 0, "marks": 0}
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(AuditEntry)) == 0


@pytest.mark.parametrize(("payload", "field"), [
    (valid_request(consent=False), "consent"),
    (valid_request(need=None), "need"),
    (valid_request(contact=None), "contact"),
    (valid_request(contact={"phone": "123"}), "contact.phone"),
    (valid_request(contact={"email": "nope"}), "contact.email"),
    (valid_request(contact={"email": "a@example.org", "contact_by": "phone"}), "contact.phone"),
    (valid_request(eligible="yes"), "eligible"),
    (valid_request(about="colleague"), "about"),
    (valid_request(need="shopping"), "need"),
    (valid_request(message="x" * 1001), "message"),
    (valid_request(surprise=True), "surprise"),
    (valid_request(message="<img src=x onerror=alert(1)>"), "message"),
])
def test_the_api_refuses_bad_input_and_stores_nothing(app: Flask, payload: dict[str, Any], field: str) -> None:
    response = Visitor(app).api(payload)
    assert response.status_code == 400
    body = response.get_json()
    assert set(body) == {"error", "detail"} and any(problem["field"].startswith(field) for problem in body["detail"])
    assert counts(app) == {"calls": 0, "entries": 0, "events": 0, "marks": 0}


def test_the_api_needs_the_pages_csrf_token(app: Flask) -> None:
    visitor = Visitor(app)
    assert visitor.api(valid_request(), token=None).status_code == 400
    assert visitor.api(valid_request(), token="forged").get_json()["error"] == "csrf_failed"
    assert visitor.client.post("/api/self-referrals", data="not json", headers={"X-CSRFToken": visitor.token}).status_code == 400
    assert counts(app)["calls"] == 0


def test_one_address_may_send_only_so_many_requests(app: Flask) -> None:
    visitor = Visitor(app, address="198.51.100.9")
    for _ in range(referrals.RATE_LIMIT):
        assert visitor.api(valid_request()).status_code == 201
    refused = visitor.api(valid_request())
    assert refused.status_code == 429 and refused.get_json()["error"] == "rate_limited"
    assert counts(app)["calls"] == referrals.RATE_LIMIT
    # The form says so in a page, and another address is not held back.
    visitor.through_to_check_answers()
    assert visitor.answer("/self-referral/check-answers").status_code == 429
    assert Visitor(app, address="198.51.100.10").api(valid_request()).status_code == 201
    with app.app_context():
        marks = db.session.scalars(select(PublicSubmission.address_hash)).all()
        assert all("198.51" not in mark for mark in marks)


def test_retention_forgets_what_a_web_request_said_and_the_address_marks(app: Flask) -> None:
    from helpline import retention

    Visitor(app).api(valid_request())
    with app.app_context():
        with db.transaction() as session:
            call = session.scalar(select(Call))
            assert call.request_enc and call.caller_number_enc
            retention.anonymise_calls(session, [call.id])
        with db.transaction() as session:
            call = session.scalar(select(Call))
            assert call.request_enc is None and call.caller_number_enc is None and not call.call_sid.startswith("web-")
            later = utcnow() + dt.timedelta(days=2)
            assert retention.purge(session, now=later, only=["public_submissions"])["public_submissions"] == 1
            assert session.scalar(select(func.count()).select_from(PublicSubmission)) == 0


# -- safe times ------------------------------------------------------------------------------------------

LONDON = zoneinfo.ZoneInfo("Europe/London")
WEEKDAYS = OpeningHours(LONDON, tuple(((8 * 60, 20 * 60),) for _ in range(5)) + ((), ()), frozenset())


def at(day: int, hour: int, minute: int = 0) -> dt.datetime:
    """An instant in December 2026 (the 7th is a Monday), London time."""
    return dt.datetime(2026, 12, day, hour, minute, tzinfo=LONDON)


@pytest.mark.parametrize(("text", "spans"), [
    ("", []), ("morning", [(480, 720)]), ("morning, evening", [(480, 720), (1020, 1200)]),
    ("18:30-20:00", [(1110, 1200)]), ("weekday evenings after 6", []), ("Evening and morning", [(480, 720), (1020, 1200)]),
])
def test_safe_times_are_read_from_names_or_spans(text: str, spans: list[tuple[int, int]]) -> None:
    assert referrals.parse_safe_times(text) == spans


@pytest.mark.parametrize(("now", "text", "expected"), [
    (at(7, 9), "", None),                    # open, any time: now
    (at(7, 9), "morning", None),             # inside the window now
    (at(7, 9), "evening", at(7, 17)),        # later today
    (at(7, 21), "morning", at(8, 8)),        # tomorrow morning
    (at(7, 18, 14), "morning", at(8, 8)),    # on the hour, not 8:04 (from a request at 18:14)
    (at(11, 19), "morning", at(14, 8)),      # Friday evening: Monday morning (closed at the weekend)
    (at(12, 10), "", at(14, 8)),             # Saturday: when the line opens
])
def test_a_call_back_waits_for_the_first_safe_open_moment(now: dt.datetime, text: str, expected: dt.datetime | None) -> None:
    found = referrals.first_safe_moment(WEEKDAYS, referrals.parse_safe_times(text), now.astimezone(dt.timezone.utc))
    assert found == (expected.astimezone(dt.timezone.utc) if expected else None)


def test_the_confirmation_says_when_the_earliest_call_can_come(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nobody waits without knowing why: a request held until a safe time is told that time."""
    wednesday_nine = at(9, 9).astimezone(dt.timezone.utc)
    monkeypatch.setattr(referrals, "first_safe_moment", lambda hours, spans, now: wednesday_nine)
    visitor = Visitor(app)
    visitor.through_to_check_answers(times=("morning",))
    visitor.answer("/self-referral/check-answers")
    confirmation = visitor.get("/self-referral/confirmation").get_data(as_text=True)
    assert "The earliest we can call you is <strong>on Wednesday 9 December at 9 a.m.</strong>" in confirmation, confirmation


def test_a_moment_is_said_as_the_phone_line_says_it() -> None:
    """The confirmation's earliest call and the IVR's next opening are said by one function."""
    hours = WEEKDAYS
    now = at(7, 18, 14)
    assert hours.say_when(at(7, 19, 30), now) == "today at 7:30 p.m."
    assert hours.say_when(at(8, 8), now) == "tomorrow at 8 a.m."
    assert hours.say_when(at(14, 12).astimezone(dt.timezone.utc), now) == "on Monday 14 December at 12 p.m."


def test_a_request_waits_out_of_line_until_its_safe_time(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    wednesday_nine = at(9, 9).astimezone(dt.timezone.utc)
    monkeypatch.setattr(referrals, "first_safe_moment", lambda hours, spans, now: wednesday_nine if spans else None)
    Visitor(app).api(valid_request(contact={"phone": NUMBER, "safe_times": "morning"}))
    ann = Console(app, "ann")
    assert ann.get("/api/queue").get_json()["calls"] == []  # held back until it is safe
    with app.app_context():
        assert db.session.scalar(select(QueueEntry.not_before)) == wednesday_nine


# -- the handler's side ---------------------------------------------------------------------------------------

def test_a_web_call_back_is_rung_through_the_callback_path(app_factory: Any, twilio_api: Recorder) -> None:
    app = service(app_factory, twilio_api.url)
    Visitor(app).api(valid_request())
    ann = Console(app, "ann")
    ann.post("/api/me/status", {"status": "available"})
    [item] = ann.get("/api/queue").get_json()["calls"]
    assert ann.post(f"/api/calls/{item['id']}/accept").status_code == 200
    [ring_back] = [request for request in twilio_api.find("/Calls.json") if request.method == "POST"]
    assert ring_back.value("To") == E164 and ring_back.value("MachineDetection")
    record = ann.get(f"/api/calls/{item['id']}/contact").get_json()
    assert record["web_request"]["message"] == "Please ring after clinic."
    assert record["web_request"]["preferred_name"] == "Quinn"
    assert record["suggested"]["phone"] == E164 and record["suggested"]["preferred_name"] == "Quinn"
    assert record["suggested"]["ok_to_leave_voicemail"] is True
    # Another handler cannot read it.
    bob = Console(app, "bob")
    assert bob.get(f"/api/calls/{item['id']}/contact").status_code == 403


def test_a_web_call_back_is_never_rung_outside_its_safe_times(app_factory: Any, twilio_api: Recorder,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    app = service(app_factory, twilio_api.url)
    # A window that does not hold the present moment, as if the request was made inside it earlier
    # and nobody was free before it closed.
    hour = dt.datetime.now(LONDON).hour
    window = f"{(hour + 2) % 24:02d}:00-{(hour + 3) % 24:02d}:00" if hour < 21 else "01:00-02:00"
    first_safe = referrals.first_safe_moment
    monkeypatch.setattr(referrals, "first_safe_moment", lambda hours, spans, now: None)
    Visitor(app).api(valid_request(contact={"phone": NUMBER, "safe_times": window}))
    monkeypatch.setattr(referrals, "first_safe_moment", first_safe)
    ann = Console(app, "ann")
    ann.post("/api/me/status", {"status": "available"})  # offered at once: it is in line
    [item] = ann.get("/api/queue").get_json()["calls"]
    refused = ann.post(f"/api/calls/{item['id']}/accept")
    assert refused.status_code == 409 and refused.get_json()["error"] == "outside_safe_times"
    assert not [request for request in twilio_api.find("/Calls.json") if request.method == "POST"]
    entry, _ = state(app, item["id"])
    assert entry.state == "waiting" and entry.not_before is not None
    assert dt.datetime.now(LONDON) < entry.not_before.astimezone(LONDON)
    assert entry.not_before.astimezone(LONDON).hour == int(window[:2])
    assert presence_of(app, ann.handler_id) == "available"
    assert ann.get("/api/queue").get_json()["calls"] == []


def test_a_web_call_back_whose_safe_window_closes_in_line_leaves_it_until_the_next(
        app_factory: Any, twilio_api: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nobody was free while it was safe to ring: within a minute the request leaves the line, its
    offer is taken back, and it waits for its next safe moment. A request with no windows stays."""
    app = service(app_factory, twilio_api.url)
    hour = dt.datetime.now(LONDON).hour
    window = f"{(hour + 2) % 24:02d}:00-{(hour + 3) % 24:02d}:00" if hour < 21 else "01:00-02:00"
    first_safe = referrals.first_safe_moment
    monkeypatch.setattr(referrals, "first_safe_moment", lambda hours, spans, now: None)  # made inside it, earlier
    Visitor(app).api(valid_request(contact={"phone": NUMBER, "safe_times": window}))
    monkeypatch.setattr(referrals, "first_safe_moment", first_safe)
    ann = Console(app, "ann")
    [item] = ann.get("/api/queue").get_json()["calls"]
    with app.app_context():
        dee = routing_factories.handler(db.session, name="dee").id  # with a console open
        db.session.commit()
        router.route_now(app)
    assert presence_of(app, dee) == "offered"  # it was in line
    Visitor(app).api(valid_request(contact={"phone": "07700 900456", "safe_times": ""}))  # any time: stays
    with app.app_context():
        assert referrals.hold_closed_windows() == 1
        assert referrals.hold_closed_windows() == 0  # held already: nothing more
        logged = db.session.scalars(select(CallEvent.kind).where(CallEvent.call_id == item["id"])).all()
    assert "held_until_safe" in logged
    assert presence_of(app, dee) == "available"  # the offer taken back
    entry, _ = state(app, item["id"])
    assert entry.state == "waiting" and entry.not_before.astimezone(LONDON).hour == int(window[:2])
    assert item["id"] not in [call["id"] for call in ann.get("/api/queue").get_json()["calls"]]
    assert not [request for request in twilio_api.find("/Calls.json") if request.method == "POST"]


def test_an_email_request_is_confirmed_discreetly_and_answered_by_email(app: Flask, smtp_catcher: Any) -> None:
    visitor = Visitor(app)
    visitor.through_to_check_answers(contact_by="email")
    visitor.answer("/self-referral/check-answers")
    [confirmation] = list(smtp_catcher)
    assert confirmation["to"] == ["sam@example.org"] and confirmation["subject"].startswith("Your request PH-")
    for word in ("mental", "addiction", "alcohol", "helpline", "doctor"):
        assert word not in (confirmation["subject"] + confirmation["body"]).lower()
    ann = Console(app, "ann")
    ann.post("/api/me/status", {"status": "available"})
    [item] = ann.get("/api/queue").get_json()["calls"]
    assert ann.post(f"/api/calls/{item['id']}/accept").status_code == 200  # nothing to ring
    assert presence_of(app, ann.handler_id) == "on_call"
    reply = ann.post(f"/api/calls/{item['id']}/email", {"body": "Hello Sam, we can talk on Thursday."})
    assert reply.status_code == 200 and reply.get_json()["sent"] is True
    answer = list(smtp_catcher)[-1]
    assert answer["to"] == ["sam@example.org"] and "Thursday" in answer["body"] and "116 123" in answer["body"]
    with app.app_context():
        kinds = [event.kind for event in db.session.scalars(select(CallEvent).where(CallEvent.call_id == item["id"]))]
        assert "email_sent" in kinds
    wrapped = ann.post(f"/api/calls/{item['id']}/wrap-up", {"outcome": "advice_given"})
    assert wrapped.status_code == 200 and presence_of(app, ann.handler_id) == "available"
    entry, _ = state(app, item["id"])
    assert entry.state == "answered"


def test_an_email_reply_is_only_for_the_handlers_own_web_request(app: Flask, smtp_catcher: Any) -> None:
    Visitor(app).api(valid_request())
    ann = Console(app, "ann")
    with app.app_context():
        call_id = db.session.scalar(select(Call.id))
    assert ann.post(f"/api/calls/{call_id}/email", {"body": "hi"}).status_code == 403
    assert ann.post("/api/calls/999999/email", {"body": "hi"}).status_code == 404
    assert len(smtp_catcher) == 0


def test_without_a_mail_server_the_reply_fails_clearly(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HELPLINE_SMTP_URL", raising=False)
    with app.test_request_context():
        with pytest.raises(mail.MailUnavailable, match="no mail server"):
            mail.send("a@example.org", "s", "b")


@pytest.mark.parametrize(("url", "expected"), [
    ("smtp://mail.example.org", mail.Server("mail.example.org", 25, False, None, None)),
    ("smtp://u%40x:p%20w@mail.example.org", mail.Server("mail.example.org", 587, False, "u@x", "p w")),
    ("smtps://mail.example.org", mail.Server("mail.example.org", 465, True, None, None)),
    ("smtp://mail.example.org:2525", mail.Server("mail.example.org", 2525, False, None, None)),
])
def test_the_smtp_url_is_read(url: str, expected: mail.Server) -> None:
    assert mail.parse_smtp_url(url) == expected


def test_a_bad_smtp_url_is_refused() -> None:
    with pytest.raises(ValueError, match="must look like smtp://"):
        mail.parse_smtp_url("http://mail.example.org")


def test_a_bad_smtp_url_stops_start_up_with_one_line(app_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from helpline.config import ConfigError

    monkeypatch.setenv("HELPLINE_SMTP_URL", "mail.example.org")
    with pytest.raises(ConfigError, match="^config: HELPLINE_SMTP_URL: must look like"):
        app_factory()
