"""The risk screen: levels from the answers, escalation steps, the record kept, and the supervisors'
alert, which reaches every supervisor at once and carries nothing about the caller."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from helpline.db import db
from helpline.models import CallEvent, RiskScreen
from helpline.realtime import NAMESPACE, socketio
from helpline.risk import RiskAnswers, assess
from tests.booking_support import accepted_call, log_in, ready_contact
from tests.conftest import shows_number

CALM = {"thoughts_of_suicide_or_self_harm": False, "plan_or_means": False, "immediate_danger": False,
        "intoxicated_now": False, "recent_self_harm": False, "protective_factors": True}


@pytest.mark.parametrize("changes, level", [
    ({}, "none"),
    ({"recent_self_harm": True}, "low"),
    ({"intoxicated_now": True}, "low"),
    ({"thoughts_of_suicide_or_self_harm": True}, "low"),
    ({"thoughts_of_suicide_or_self_harm": True, "plan_or_means": True}, "moderate"),
    ({"thoughts_of_suicide_or_self_harm": True, "protective_factors": False}, "moderate"),
    ({"thoughts_of_suicide_or_self_harm": True, "recent_self_harm": True}, "moderate"),
    ({"thoughts_of_suicide_or_self_harm": True, "plan_or_means": True, "protective_factors": False}, "immediate"),
    ({"thoughts_of_suicide_or_self_harm": True, "plan_or_means": True, "intoxicated_now": True}, "immediate"),
    ({"immediate_danger": True}, "immediate"),
    ({"handler_concern": "moderate"}, "moderate"),
    ({"immediate_danger": True, "handler_concern": "low"}, "immediate"),  # judgement raises, never lowers
])
def test_levels(changes, level):
    assert assess(RiskAnswers(**{**CALM, **changes})) == level


@pytest.fixture
def handler(app):
    return log_in(app, "handler")


def test_the_screen_must_be_complete_and_well_formed(app, handler):
    call_id = accepted_call(app, handler)
    incomplete = {key: value for key, value in CALM.items() if key != "plan_or_means"}
    response = handler.post(f"/api/calls/{call_id}/risk", incomplete)
    assert response.status_code == 400 and response.get_json()["detail"][0]["field"] == "plan_or_means"
    response = handler.post(f"/api/calls/{call_id}/risk", {**CALM, "immediate_danger": "maybe"})
    assert response.status_code == 400
    response = handler.post(f"/api/calls/{call_id}/risk", {**CALM, "handler_concern": "extreme"})
    assert response.status_code == 400
    assert log_in(app, "handler").post(f"/api/calls/{call_id}/risk", CALM).status_code == 403


def test_immediate_risk_alerts_every_supervisor_with_no_personal_data(app, handler):
    call_id = accepted_call(app, handler)
    ready_contact(handler, call_id, phone="07911 123456", notes="Says tonight is the night")
    supervisors = [log_in(app, "supervisor") for _ in range(2)]
    sockets = [socketio.test_client(app, namespace=NAMESPACE, flask_test_client=s.client) for s in supervisors]
    handler_socket = socketio.test_client(app, namespace=NAMESPACE, flask_test_client=handler.client)
    try:
        for socket in sockets + [handler_socket]:
            assert socket.is_connected(NAMESPACE)
            socket.get_received(NAMESPACE)
        response = handler.post(f"/api/calls/{call_id}/risk", {**CALM, "thoughts_of_suicide_or_self_harm": True,
                                                               "plan_or_means": True, "protective_factors": False})
        assert response.status_code == 201
        body = response.get_json()
        assert body["level"] == "immediate" and body["supervisors_alerted"] is True
        steps = " ".join(body["escalation"])
        assert "999" in steps and "crisis" in steps and "on the line" in steps and "supervisor" in steps
        for socket in sockets:
            alerts = [event for event in socket.get_received(NAMESPACE) if event["name"] == "alert"]
            assert len(alerts) == 1
            alert = alerts[0]["args"][0]
            assert alert["call_id"] == call_id and alert["level"] == "immediate"
            assert alert["handler"]["id"] == handler.user_id and alert["at"]
            text = json.dumps(alert)
            for personal in ("Test Caller", "tonight", "plan_or_means"):
                assert personal not in text
            assert not shows_number(text)
        assert not [event for event in handler_socket.get_received(NAMESPACE) if event["name"] == "alert"]
    finally:
        for socket in sockets + [handler_socket]:
            if socket.is_connected(NAMESPACE):
                socket.disconnect(NAMESPACE)


def test_lower_levels_raise_no_alert_and_every_screen_is_recorded(app, handler):
    call_id = accepted_call(app, handler)
    supervisor = log_in(app, "supervisor")
    socket = socketio.test_client(app, namespace=NAMESPACE, flask_test_client=supervisor.client)
    try:
        socket.get_received(NAMESPACE)
        response = handler.post(f"/api/calls/{call_id}/risk", {**CALM, "thoughts_of_suicide_or_self_harm": True})
        assert response.get_json()["level"] == "low" and response.get_json()["supervisors_alerted"] is False
        assert not [event for event in socket.get_received(NAMESPACE) if event["name"] == "alert"]
    finally:
        socket.disconnect(NAMESPACE)
    with app.app_context():
        screen = db.session.scalar(select(RiskScreen).where(RiskScreen.call_id == call_id))
        assert screen.level == "low" and "thoughts" not in screen.answers_enc  # answers are encrypted
        event = db.session.scalar(select(CallEvent).where(CallEvent.call_id == call_id, CallEvent.kind == "risk"))
        assert event.detail["level"] == "low" and event.detail["screen_id"] == screen.id
    record = handler.get(f"/api/calls/{call_id}/contact").get_json()
    assert record["contact"] is None  # the screen does not start a first-contact record
