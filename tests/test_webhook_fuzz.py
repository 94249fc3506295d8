"""Hostile webhooks, generated: odd, missing, oversized and repeated parameters, unicode and control
characters, forged and replayed signatures. Every answer is a clear 4xx or valid TwiML, never a 5xx,
and a refused request writes nothing."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from urllib.parse import quote, urlencode

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from werkzeug.datastructures import MultiDict

from helpline.db import db
from helpline.models import AuditEntry, Call, CallEvent, QueueEntry, WebhookReply

from .conftest import PUBLIC_URL

FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

KNOWN_SID = "CA" + "ab" * 16
TWILIO_NAMES = ["CallSid", "From", "To", "CallStatus", "Digits", "QueueResult", "QueueTime", "SequenceNumber",
                "CallDuration", "AccountSid", "Direction", "ApiVersion", "Caller", "ParentCallSid", "DialCallStatus"]
STEP_NAMES = ["greeting", "about", "eligibility", "need", "about_service", "queue", "out_of_hours", "nowhere", "x" * 300]

# Text the way an attacker writes it: controls, NULs, right-to-left marks, astral characters, markup.
hostile_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x1F), max_size=10),
    st.sampled_from(["", " ", "\x00", "<script>alert(1)</script>", "\u202e1#", "🙂" * 5, "%00", "' OR 1=1 --",
                     "+447911123456", "anonymous", "-1", "99999999999999999999", "1e309", "NaN", "\r\nX-Injected: 1"]),
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
    st.just("9" * 5000),
)
call_sids = st.one_of(st.just(KNOWN_SID), st.binary(min_size=16, max_size=16).map(lambda b: "CA" + b.hex()), hostile_text)
statuses = st.sampled_from(["queued", "initiated", "ringing", "in-progress", "answered", "completed", "busy", "failed",
                            "no-answer", "canceled", "exploded"])
values = {"CallSid": call_sids, "CallStatus": st.one_of(statuses, hostile_text), "Digits": st.one_of(st.sampled_from("0123456789*#"), hostile_text),
          "QueueResult": st.one_of(st.sampled_from(["hangup", "bridged", "redirected", "leave", "error"]), hostile_text)}


@st.composite
def parameters(draw: st.DrawFn) -> list[tuple[str, str]]:
    """A form body: Twilio's names and strangers, values plausible or hostile, sometimes repeated."""
    pairs: list[tuple[str, str]] = []
    for name in draw(st.lists(st.one_of(st.sampled_from(TWILIO_NAMES), hostile_text), max_size=8)):
        pairs.append((name, draw(values.get(name, hostile_text))))
    if draw(st.booleans()):
        pairs.append(("CallSid", draw(call_sids)))
    return pairs


paths = st.one_of(
    st.sampled_from(["/voice/incoming", "/voice/status", "/voice/queue/wait", "/voice/queue/key", "/voice/queue/left",
                     "/voice/connect/1", "/voice/connect/1/conference", "/voice/connect/1/handler",
                     "/voice/connect/1/caller", "/voice/nowhere", "/sms/incoming"]),
    st.sampled_from(STEP_NAMES).map(lambda name: f"/voice/step/{quote(name)}"),
    st.sampled_from(STEP_NAMES).map(lambda name: f"/voice/step/{quote(name)}/keys"),
)
queries = st.one_of(st.just(""), st.dictionaries(st.sampled_from(["attempt", "retry", "n", "x"]), hostile_text, max_size=3).map(urlencode))
signing = st.sampled_from(["valid", "valid", "valid", "missing", "forged", "other_url", "other_params", "garbage"])


def table_counts() -> tuple[int, ...]:
    """Rows in every table a webhook may write."""
    db.session.expire_all()
    counts = tuple(db.session.scalar(select(func.count()).select_from(model)) for model in (Call, CallEvent, QueueEntry, WebhookReply, AuditEntry))
    db.session.rollback()  # SQLite: do not hold the write lock between requests
    return counts


@FUZZ
@given(path=paths, query=queries, pairs=parameters(), how=signing)
def test_hostile_webhooks_get_a_clear_answer_and_refusals_write_nothing(app, client, twilio, path, query, pairs, how):
    url = path + (f"?{query}" if query else "")
    body = MultiDict(pairs)
    headers = {}
    if how == "valid":
        headers["X-Twilio-Signature"] = twilio.validator.compute_signature(PUBLIC_URL + url, body)
    elif how == "forged":
        headers["X-Twilio-Signature"] = twilio.validator.compute_signature(PUBLIC_URL + url, body)[:-4] + "AAA="
    elif how == "other_url":
        headers["X-Twilio-Signature"] = twilio.validator.compute_signature(PUBLIC_URL + "/voice/incoming?replayed=1", body)
    elif how == "other_params":
        headers["X-Twilio-Signature"] = twilio.validator.compute_signature(PUBLIC_URL + url, MultiDict([*pairs, ("Tampered", "1")]))
    elif how == "garbage":
        headers["X-Twilio-Signature"] = "\u00e9not base64!"
    with app.app_context():
        before = table_counts()
        response = client.post(url, data=body, headers=headers)
        after = table_counts()
    status = response.status_code
    assert status < 500, (status, url, pairs, response.get_data(as_text=True)[:500])
    if how != "valid":
        assert status in (403, 404, 405, 413), (status, how, url)
    if status >= 400:
        assert after == before, (status, url, pairs)
        assert response.mimetype == "application/json" and "error" in response.get_json(), response.get_data(as_text=True)[:200]
        assert "Traceback" not in response.get_data(as_text=True)
    elif status == 200:
        assert response.mimetype == "text/xml"
        assert ET.fromstring(response.data).tag == "Response"
    else:
        assert status == 204 and not response.data


@FUZZ
@given(pairs=parameters(), size=st.sampled_from([4097, 20_000, 300 * 1024]))
def test_oversized_bodies_are_refused(app, client, twilio, pairs, size):
    body = MultiDict([*pairs, ("CallSid", KNOWN_SID), ("From", "1" * size)])
    signature = twilio.validator.compute_signature(PUBLIC_URL + "/voice/incoming", body)
    with app.app_context():
        before = table_counts()
        response = client.post("/voice/incoming", data=body, headers={"X-Twilio-Signature": signature})
        assert table_counts() == before
    assert response.status_code in (400, 413)
