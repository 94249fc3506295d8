"""No personal data in Socket.IO broadcasts: a call with a known caller number and name is driven
through the API from the queue to wrap-up, and nothing the server emits carries either."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask

from helpline import permissions
from helpline.realtime import NAMESPACE, socketio
from helpline.scheduler import shutdown

from .test_console_api import Console, queued_call, service
from .twilio_recorder import Recorder, twilio_api  # noqa: F401 - fixture

NUMBER = "+447912345678"
#: The number as it might leak: whole, national, or the subscriber digits alone.
NUMBER_FORMS = ("+447912345678", "447912345678", "07912345678", "7912345678", "7912 345678", "345678")
NAME = "Zebedee Quillfeather"


@pytest.fixture
def emitted(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every event the server emits on any path (broadcasts, rooms, replies on connect), recorded."""
    sent: list[dict[str, Any]] = []
    original = socketio.emit

    def record(event: str, *args: Any, **kwargs: Any) -> Any:
        sent.append({"event": event, "payload": args[0] if args else None, "to": kwargs.get("to") or kwargs.get("room")})
        return original(event, *args, **kwargs)

    monkeypatch.setattr(socketio, "emit", record)
    return sent


def test_a_call_with_a_known_caller_broadcasts_nothing_personal(app_factory: Any, twilio_api: Recorder,
                                                                 emitted: list[dict[str, Any]]) -> None:
    app: Flask = service(app_factory, twilio_api.url)
    try:
        handler, supervisor = Console(app, "ann"), Console(app, "sue", "supervisor")
        handler_socket = socketio.test_client(app, namespace=NAMESPACE, flask_test_client=handler.client)
        supervisor_socket = socketio.test_client(app, namespace=NAMESPACE, flask_test_client=supervisor.client)
        assert handler.post("/api/me/status", {"status": "available"}).status_code == 200

        _, call_id = queued_call(app, caller=NUMBER)
        assert handler.post(f"/api/calls/{call_id}/accept").status_code == 200
        saved = handler.client.put(f"/api/calls/{call_id}/contact", headers={"X-CSRFToken": handler.token}, json={
            "about_self": True, "consent_to_keep": True, "name": NAME, "phone": NUMBER, "notes": f"{NAME} rang from {NUMBER}"})
        assert saved.status_code == 200, saved.get_json()
        risk = handler.post(f"/api/calls/{call_id}/risk", {
            "thoughts_of_suicide_or_self_harm": True, "plan_or_means": True, "immediate_danger": True,
            "intoxicated_now": False, "recent_self_harm": False, "protective_factors": False})
        assert risk.status_code == 201 and risk.get_json()["supervisors_alerted"]
        assert handler.post(f"/api/calls/{call_id}/wrap-up", {"outcome": "advice_given"}).status_code == 200

        names = {item["event"] for item in emitted}
        assert {"queue", "offer", "wallboard", "alert", "presence"} <= names, names
        for item in emitted:
            text = json.dumps(item["payload"])
            assert NAME not in text and "Quillfeather" not in text, item
            assert not any(form in text for form in NUMBER_FORMS), item
            # ... and each went only where the matrix says: supervisors' events to their room, a handler's
            # to their room (or, on connect, to that one connection), never to everyone.
            audience = permissions.SOCKET_EMITS[item["event"]]
            if "handler" not in audience:
                assert item["to"] == "supervisors", item
            elif "supervisor" not in audience:
                assert item["to"] not in (None, "supervisors"), item

        received = [event["name"] for event in handler_socket.get_received(NAMESPACE)]
        assert "offer" in received and "alert" not in received and "wallboard" not in received
        received = [event["name"] for event in supervisor_socket.get_received(NAMESPACE)]
        assert "alert" in received and "offer" not in received
    finally:
        shutdown(app)
