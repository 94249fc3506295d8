"""Hostile input to the console's JSON API.

- schemathesis generates requests from /api/openapi.json, within the document and outside it, and sends
  them in-process to the WSGI app, logged in as each role and as nobody: no check of any kind fails,
  so the document describes what the server enforces.
- hypothesis sends the write routes bodies with wrong types, huge strings, control characters and
  script tags: each gets a clear 4xx, and nothing in the database changes.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.auths import AuthStorage
from schemathesis.core.failures import FailureGroup
from flask import Flask
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text

from helpline import permissions
from helpline.db import db
from helpline.models import Clinician, Handler
from helpline.scheduler import shutdown
from tests.booking_support import Console, accepted_call, log_in, ready_contact, seed_services

#: Examples per operation and principal: enough to reach each route's validation and error paths,
#: few enough that the whole run stays well under a minute.
EXAMPLES = 6
#: Tables whose rows must not change when a hostile body is refused (the audit log may grow: refusals
#: are not audited, but a read in between could be).
WATCHED = ("contacts", "bookings", "handlers", "queue_entries", "risk_screens", "calls", "call_events")


@pytest.fixture(autouse=True)
def _cheap_argon2_and_scheduler(app: Flask, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """argon2id at its smallest cost (these tests log in several users); the scheduler stopped after."""
    from argon2 import PasswordHasher

    from helpline import users

    monkeypatch.setattr(users, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    yield
    shutdown(app)


@pytest.fixture
def scene(app: Flask) -> dict[str, Any]:
    """A handler on a call with a record and a booking, and one user of every other role."""
    consoles = {role: log_in(app, role) for role in permissions.ROLES}
    services = seed_services(app, linked_user_id=consoles["clinician"].user_id)
    handler = consoles["handler"]
    call_id = accepted_call(app, handler)
    contact = ready_contact(handler, call_id, name="Fuzz Caller", notes="a note")
    day = (dt.date.today() + dt.timedelta(days=3)).isoformat()
    slot = handler.get(f"/api/clinicians/slots?from={day}&to={day}&profession=psychiatrist").get_json()["slots"][0]
    booking = handler.post("/api/bookings", {"call_id": call_id, "slot_id": slot["id"]}).get_json()
    with app.app_context():
        row = db.session.scalar(select(Handler).where(Handler.user_id == handler.user_id))
        row.current_call_id, row.presence = call_id, "on_call"
        handler_id = row.id
        assert db.session.get(Clinician, services.psychiatrist).user_id == consoles["clinician"].user_id
        db.session.commit()
    return {"consoles": consoles, "call_id": call_id, "contact_id": contact["id"], "booking_id": booking["id"],
            "handler_id": handler_id}


def snapshot(app: Flask) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the watched tables, in order."""
    with app.app_context():
        return {table: [tuple(row) for row in db.session.execute(text(f"SELECT * FROM {table} ORDER BY 1"))]  # noqa: S608 - fixed names
                for table in WATCHED}


# -- schemathesis ---------------------------------------------------------------------------------------

def _phone_numbers() -> st.SearchStrategy[str]:
    """`format: phone` as the document means it: numbers phonenumbers takes as valid, written as people do."""
    import phonenumbers

    styles = (phonenumbers.PhoneNumberFormat.INTERNATIONAL, phonenumbers.PhoneNumberFormat.E164)
    numbers = [phonenumbers.example_number_for_type(region, kind)
               for region in ("GB", "IE", "FR", "DE", "US", "IN", "AU")
               for kind in (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE)]
    written = [phonenumbers.format_number(number, style) for number in numbers if number for style in styles]
    written += [phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
                for number in numbers if number and number.country_code == 44]
    return st.sampled_from(sorted(set(written)))


schemathesis.openapi.format("phone", _phone_numbers())


class _Principal:
    """A logged-in user's session cookie and CSRF token, as a schemathesis auth provider: the checks
    then know the request carries real credentials, and probe each operation without them too."""

    def __init__(self, cookie: str, token: str) -> None:
        self.cookie, self.token = cookie, token

    def get(self, case: Any, context: Any) -> tuple[str, str]:
        return self.cookie, self.token

    def set(self, case: Any, data: tuple[str, str], context: Any) -> None:
        cookie, token = data
        case.cookies = {**(case.cookies or {}), "session": cookie}
        # The generated CSRF header is noise: send the real one, so requests reach the views.
        case.headers = {**(case.headers or {}), "X-CSRFToken": token}


def test_schemathesis_finds_no_failure_of_any_check_for_any_role(app: Flask, scene: dict[str, Any]) -> None:
    """Every check schemathesis has (server errors, status codes and bodies as documented, schema-valid
    data accepted, schema-violating data refused, authentication enforced, ...) on data it generates
    both within and outside the document, as each role and as nobody."""
    # 422 is the API's answer to a request that keeps to the document but breaks a rule the document cannot
    # state (a phone number that is no number, a period that ends before it starts): see helpline/api/__init__.py.
    config = schemathesis.Config.from_dict({"checks": {"positive_data_acceptance": {
        "expected-statuses": ["2xx", "3xx", "401", "403", "404", "409", "422", "429"]}}})
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app, config=config)
    # Nobody logged in is still a visitor of the public pages, with their cookie and CSRF token: the
    # public API (self-referrals) takes those, and every other route must refuse them.
    visitor = app.test_client()
    page = visitor.get("/self-referral")
    token = re.search(r'<meta name="csrf-token" content="([^"]+)"', page.get_data(as_text=True))
    visitor_cookie = visitor.get_cookie("session")
    assert token and visitor_cookie is not None
    principals: dict[str, AuthStorage | None] = {
        permissions.ANONYMOUS: AuthStorage(providers=[_Principal(visitor_cookie.value, token.group(1))])}
    for role, console in scene["consoles"].items():
        cookie = console.client.get_cookie("session")
        assert cookie is not None
        principals[role] = AuthStorage(providers=[_Principal(cookie.value, console.token)])
    failures: dict[str, str] = {}
    statuses: dict[str, list[int]] = {principal: [] for principal in principals}
    answered: dict[str, set[int]] = {}
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        for principal, auth in principals.items():
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

                @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                          phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
                @given(case=operation.as_strategy(generation_mode=mode, auth_storage=auth))
                def probe(case: Any) -> None:
                    response = case.call()
                    statuses[principal].append(response.status_code)
                    answered.setdefault(operation.label, set()).add(response.status_code)
                    try:
                        case.validate_response(response)
                    except FailureGroup as group:
                        for failure in group.exceptions:
                            key = f"{principal} {mode.value} {operation.label}: {failure.title}"
                            failures.setdefault(key, f"{failure.message.strip()[:300]}\n    {case.method} {case.formatted_path} "
                                                     f"query={case.query} body={str(case.body)[:200]} -> {response.status_code} "
                                                     f"{response.text[:200]}")

                probe()
    assert operations >= 30
    # The log-ins took: every role got somewhere (a 2xx), so the fuzzing reached the views, not just the gate.
    assert all(any(200 <= status < 300 for status in statuses[role]) for role in permissions.ROLES), statuses
    # The public API's three answers were all reached: someone else or not eligible (200), and in line (201).
    assert {200, 201} <= answered["POST /api/self-referrals"], answered["POST /api/self-referrals"]
    assert not failures, "\n".join(f"{key}\n    {detail}" for key, detail in sorted(failures.items()))


# -- hostile bodies --------------------------------------------------------------------------------------

def _strings_no_field_accepts() -> st.SearchStrategy[str]:
    """Control characters, invisible formatting, markup, and strings far longer than any field allows."""
    control = st.sampled_from(["\x00", "\x07", "\x1b", "\x7f", "\u202e", "\u200b", "\ufeff"])
    return st.one_of(
        st.tuples(st.text(max_size=20), control, st.text(max_size=20)).map("".join),
        st.sampled_from(["<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "</textarea><b>",
                         "javascript:alert(1)", "<svg/onload=alert(1)>", "<iframe src=//evil>"]),
        st.integers(min_value=5_000, max_value=60_000).map(lambda size: "A" * size),
    )


def _wrong_types(expected: str) -> st.SearchStrategy[Any]:
    """JSON values of any type but `expected` (never null, which means "clear" for some fields)."""
    kinds = {
        "str": st.one_of(st.integers(), st.floats(allow_nan=False), st.booleans(), st.lists(st.integers(), max_size=3),
                         st.dictionaries(st.text(max_size=5), st.integers(), max_size=2)),
        "bool": st.one_of(st.integers(), st.text(max_size=10), st.lists(st.booleans(), max_size=3), st.just({})),
        "int": st.one_of(st.text(max_size=10), st.booleans(), st.floats(allow_nan=False), st.lists(st.integers(), max_size=2)),
        "list": st.one_of(st.text(max_size=10), st.integers(), st.booleans(), st.just({})),
    }
    return kinds[expected]


#: The write routes a handler or supervisor uses, each with its body's fields and their JSON types.
WRITES: list[tuple[str, str, str, dict[str, str]]] = [
    ("handler", "PUT", "/api/calls/{call_id}/contact",
     {"name": "str", "notes": "str", "phone": "str", "email": "str", "gmc_number": "str", "about_self": "bool",
      "needs": "list", "home_locality": "str", "contact_times": "str", "accessibility_needs": "str"}),
    ("handler", "POST", "/api/me/status", {"status": "str"}),
    ("handler", "POST", "/api/calls/{call_id}/wrap-up", {"outcome": "str"}),
    ("handler", "POST", "/api/calls/{call_id}/hold", {"hold": "bool"}),
    ("handler", "POST", "/api/calls/{call_id}/risk", {"thoughts_of_suicide_or_self_harm": "bool", "immediate_danger": "bool"}),
    ("handler", "POST", "/api/bookings", {"call_id": "int", "slot_id": "str"}),
    ("handler", "PATCH", "/api/bookings/{booking_id}", {"slot_id": "str"}),
    ("supervisor", "POST", "/api/handlers/{handler_id}/presence", {"status": "str"}),
    ("supervisor", "POST", "/api/calls/{call_id}/offer", {"handler_id": "int"}),
    ("supervisor", "POST", "/api/calls/{call_id}/listen", {"mode": "str"}),
]


@st.composite
def hostile_body(draw: st.DrawFn, fields: dict[str, str]) -> dict[str, Any]:
    """A body in which at least one known field holds a value of the wrong type or a string nothing accepts."""
    chosen = draw(st.lists(st.sampled_from(sorted(fields)), min_size=1, max_size=3, unique=True))
    result: dict[str, Any] = {}
    for name in chosen:
        if fields[name] == "str":
            result[name] = draw(st.one_of(_wrong_types("str"), _strings_no_field_accepts()))
        else:
            result[name] = draw(_wrong_types(fields[name]))
    return result


@pytest.mark.parametrize("role, method, path, fields", WRITES, ids=[f"{method} {path}" for _, method, path, _ in WRITES])
def test_hostile_bodies_get_a_clear_4xx_and_change_nothing(app: Flask, scene: dict[str, Any], role: str, method: str,
                                                           path: str, fields: dict[str, str]) -> None:
    console: Console = scene["consoles"][role]
    target = path.format(**scene)
    before = snapshot(app)

    @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(payload=hostile_body(fields))
    def attempt(payload: dict[str, Any]) -> None:
        response = console.client.open(target, method=method, json=payload, headers={"X-CSRFToken": console.token})
        assert 400 <= response.status_code < 500, (payload, response.status_code, response.get_data(as_text=True)[:300])
        answer = response.get_json()
        assert answer and set(answer) == {"error", "detail"} and answer["error"], answer
        assert "Traceback" not in response.get_data(as_text=True)

    attempt()
    assert snapshot(app) == before


@pytest.mark.parametrize("raw", [b"{", b"[]", b'"text"', b"null", b"{}" * 2, b"[" * 5000 + b"]" * 5000,
                                 b'{"a":' * 2000 + b"1" + b"}" * 2000, b"\xff\xfe", b'{"status": "available"' + b" " * 300_000 + b"}"])
def test_malformed_json_gets_a_clear_4xx(app: Flask, scene: dict[str, Any], raw: bytes) -> None:
    console: Console = scene["consoles"]["handler"]
    before = snapshot(app)
    response = console.client.post("/api/me/status", data=raw, content_type="application/json",
                                   headers={"X-CSRFToken": console.token})
    assert response.status_code in (400, 413), response.get_data(as_text=True)[:300]
    assert set(response.get_json()) == {"error", "detail"}
    assert snapshot(app) == before
