"""Scored questionnaires: PHQ-9, GAD-7 and AUDIT-C scored and banded as published; bad answers refused
by field with nothing kept; PHQ-9 item 9 above 0 alerting supervisors; the results seen by the booked
clinician and by the handler who recorded them while the call is theirs, and by nobody else."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import func, select

from helpline import questionnaires
from helpline.db import db
from helpline.models import AuditEntry, CallEvent, Clinician, Handler, Questionnaire
from helpline.questionnaires import AUDITC, GAD7, PHQ9, QuestionnaireAnswers, score
from helpline.realtime import NAMESPACE, socketio
from helpline.scheduler import shutdown
from tests.booking_support import accepted_call, log_in, ready_contact, seed_services


@pytest.fixture(autouse=True)
def _stop_scheduler(app):  # type: ignore[no-untyped-def]
    yield
    shutdown(app)


def answers(kind: str, *values: int) -> dict:
    """A body: the questionnaire and its answers q1, q2, ... in order."""
    return {"kind": kind, "answers": {f"q{number}": value for number, value in enumerate(values, start=1)}}


@pytest.mark.parametrize("kind, values, total, band", [
    ("phq9", [0] * 9, 0, "minimal"),
    ("phq9", [1, 1, 1, 1, 0, 0, 0, 0, 0], 4, "minimal"),
    ("phq9", [1, 1, 1, 1, 1, 0, 0, 0, 0], 5, "mild"),
    ("phq9", [1] * 9, 9, "mild"),
    ("phq9", [2, 2, 2, 2, 2, 0, 0, 0, 0], 10, "moderate"),
    ("phq9", [2, 2, 2, 2, 2, 2, 2, 0, 0], 14, "moderate"),
    ("phq9", [3, 3, 3, 3, 3, 0, 0, 0, 0], 15, "moderately_severe"),
    ("phq9", [3, 3, 3, 3, 3, 3, 1, 0, 0], 19, "moderately_severe"),
    ("phq9", [3, 3, 3, 3, 3, 3, 2, 0, 0], 20, "severe"),
    ("phq9", [3] * 9, 27, "severe"),
    ("gad7", [0] * 7, 0, "minimal"),
    ("gad7", [1, 1, 1, 1, 1, 0, 0], 5, "mild"),
    ("gad7", [2, 2, 2, 2, 2, 0, 0], 10, "moderate"),
    ("gad7", [3, 3, 3, 3, 3, 0, 0], 15, "severe"),
    ("gad7", [3] * 7, 21, "severe"),
    ("auditc", [0, 0, 0], 0, "lower_risk"),
    ("auditc", [2, 1, 1], 4, "lower_risk"),
    ("auditc", [2, 2, 1], 5, "increasing_or_higher_risk"),
    ("auditc", [4, 4, 4], 12, "increasing_or_higher_risk"),
])
def test_scores_and_bands_as_published(kind, values, total, band):
    found, found_band = score(QuestionnaireAnswers(**answers(kind, *values)))
    assert (found, found_band.code) == (total, band)


def test_the_definitions_cover_every_score():
    for definition, items, top in ((PHQ9, 9, 27), (GAD7, 7, 21), (AUDITC, 3, 12)):
        assert len(definition.items) == items and definition.max_score == top
        assert [band.low for band in definition.bands][0] == 0 and definition.bands[-1].high == top
        assert all(later.low == earlier.high + 1 for earlier, later in zip(definition.bands, definition.bands[1:]))
    assert "better off dead" in PHQ9.items[8].text


@pytest.fixture
def world(app):  # type: ignore[no-untyped-def]
    """A handler on a call with a record booked with 'our' clinician; another clinician; a supervisor."""
    handler, clinician, other = log_in(app, "handler"), log_in(app, "clinician"), log_in(app, "clinician")
    seed_services(app, linked_user_id=clinician.user_id)
    call_id = accepted_call(app, handler)
    contact = ready_contact(handler, call_id, name="Caller Q", phone="07911 123456")
    day = (dt.date.today() + dt.timedelta(days=3)).isoformat()
    slot = handler.get(f"/api/clinicians/slots?from={day}&to={day}&profession=psychiatrist").get_json()["slots"][0]
    assert handler.post("/api/bookings", {"call_id": call_id, "slot_id": slot["id"]}).status_code == 201
    with app.app_context():
        row = db.session.scalar(select(Handler).where(Handler.user_id == handler.user_id))
        row.current_call_id, row.presence = call_id, "on_call"
        db.session.commit()
    return {"handler": handler, "clinician": clinician, "other": other, "supervisor": log_in(app, "supervisor"),
            "call_id": call_id, "contact_id": contact["id"]}


def kept(app) -> int:  # type: ignore[no-untyped-def]
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Questionnaire))


def test_bad_answers_are_refused_by_field_and_nothing_is_kept(app, world):
    path = f"/api/calls/{world['call_id']}/questionnaires"
    handler = world["handler"]
    missing = handler.post(path, {"kind": "gad7", "answers": {"q1": 1, "q2": 1, "q4": 0, "q5": 0, "q6": 0, "q7": 0}})
    assert missing.status_code == 400
    assert missing.get_json()["detail"] == [{"field": "answers.q3", "problem": "question 3 needs an answer"}]
    high = handler.post(path, answers("phq9", 0, 0, 0, 0, 4, 0, 0, 0, 0))
    assert high.get_json()["detail"] == [{"field": "answers.q5", "problem": "question 5's answer must be from 0 to 3"}]
    negative = handler.post(path, answers("auditc", 0, -1, 0))
    assert negative.status_code == 400 and negative.get_json()["detail"][0]["field"] == "answers.q2"
    unknown = handler.post(path, {"kind": "auditc", "answers": {"q1": 0, "q2": 0, "q3": 0, "q4": 1}})
    assert unknown.get_json()["detail"] == [{"field": "answers.q4", "problem": "AUDIT-C has no item q4"}]
    for bad in ({"kind": "phq9", "answers": {"q1": "2"}}, {"kind": "beck", "answers": {}}, {"answers": {}}):
        assert handler.post(path, bad).status_code == 400
    assert kept(app) == 0


def test_the_handler_runs_one_and_sees_it_while_the_call_is_theirs(app, world):
    handler, path = world["handler"], f"/api/calls/{world['call_id']}/questionnaires"
    done = handler.post(path, answers("gad7", 2, 2, 2, 2, 2, 0, 0))
    assert done.status_code == 201
    result = done.get_json()
    assert (result["score"], result["band"], result["band_label"], result["risk_raised"]) == (10, "moderate", "Moderate", False)
    listed = handler.get(path).get_json()["questionnaires"]
    assert [item["id"] for item in listed] == [result["id"]]
    # Once the call is no longer theirs, the handler no longer sees it; other handlers never do.
    assert log_in(app, "handler").get(path).status_code == 403
    with app.app_context():
        db.session.scalar(select(Handler).where(Handler.user_id == handler.user_id)).current_call_id = None
        db.session.commit()
    assert handler.get(path).status_code == 403
    assert handler.post(path, answers("gad7", *[0] * 7)).status_code == 403
    with app.app_context():
        actions = db.session.scalars(select(AuditEntry.action).where(AuditEntry.action.like("questionnaire.%")).order_by(AuditEntry.seq)).all()
        assert actions == ["questionnaire.record", "questionnaire.read"]


def test_only_the_booked_clinician_sees_the_results(app, world):
    world["handler"].post(f"/api/calls/{world['call_id']}/questionnaires", answers("auditc", 3, 2, 1))
    path = f"/api/contacts/{world['contact_id']}/questionnaires"
    clinician = world["clinician"]
    mine = clinician.post(path, answers("phq9", 1, 1, 1, 1, 1, 1, 1, 1, 0))
    assert mine.status_code == 201 and mine.get_json()["recorded_by_role"] == "clinician"
    seen = clinician.get(path)
    assert seen.status_code == 200
    assert [(item["name"], item["score"], item["band"]) for item in seen.get_json()["questionnaires"]] == [
        ("AUDIT-C", 6, "increasing_or_higher_risk"), ("PHQ-9", 8, "mild")]
    for outsider in (world["other"], world["supervisor"]):
        refused = outsider.get(path)
        assert refused.status_code == 403 and "AUDIT-C" not in refused.get_data(as_text=True)
    assert world["other"].post(path, answers("gad7", *[0] * 7)).status_code == 403
    # A cancelled booking ends the clinician's right to see them, as for the record itself.
    with app.app_context():
        db.session.execute(Clinician.__table__.update().values(user_id=None))
        db.session.commit()
    assert clinician.get(path).status_code == 403


def test_phq9_item_9_above_0_raises_the_risk_screen_and_alerts_supervisors(app, world):
    supervisor_socket = socketio.test_client(app, namespace=NAMESPACE, flask_test_client=world["supervisor"].client)
    try:
        supervisor_socket.get_received(NAMESPACE)
        calm = world["handler"].post(f"/api/calls/{world['call_id']}/questionnaires", answers("phq9", 2, 2, 2, 2, 2, 2, 2, 2, 0))
        assert calm.get_json()["risk_raised"] is False
        assert not [event for event in supervisor_socket.get_received(NAMESPACE) if event["name"] == "alert"]
        raised = world["handler"].post(f"/api/calls/{world['call_id']}/questionnaires", answers("phq9", 0, 0, 0, 0, 0, 0, 0, 0, 1))
        assert raised.status_code == 201 and raised.get_json()["risk_raised"] is True
        [alert] = [event["args"][0] for event in supervisor_socket.get_received(NAMESPACE) if event["name"] == "alert"]
        assert (alert["call_id"], alert["source"], alert["level"]) == (world["call_id"], "phq9", "immediate")
        assert alert["handler"]["id"] == world["handler"].user_id
        assert "Caller Q" not in json.dumps(alert) and "answers" not in alert
    finally:
        supervisor_socket.disconnect(NAMESPACE)
    board = world["supervisor"].get("/api/supervisor/wallboard").get_json()
    assert [(item["call_id"], item["source"]) for item in board["alerts"]] == [(world["call_id"], "phq9")]
    with app.app_context():
        events = db.session.scalars(select(CallEvent.detail).where(CallEvent.kind == "questionnaire")).all()
        assert [event["risk_raised"] for event in events] == [False, True]
        assert all("answers" not in event and "score" not in event for event in events)


def test_the_answers_are_kept_encrypted(app, world):
    world["handler"].post(f"/api/calls/{world['call_id']}/questionnaires", answers("auditc", 4, 4, 4))
    with app.app_context():
        row = db.session.scalars(select(Questionnaire)).one()
        # Fernet's token is base64: it may hold "12" by chance, but never the JSON the result is written as.
        assert '"score"' not in row.result_enc and '"q1"' not in row.result_enc and row.result_enc.startswith("gAAAAA")
        assert questionnaires.as_json(row, app.extensions["helpline.vault"])["score"] == 12
