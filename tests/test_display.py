"""Display-only wall screens: a token reads the wallboard's figures and nothing personal, with no
log-in to time out; a revoked or wrong token reads nothing; the operator's commands make, list and
revoke screens; and a token opens no other route."""

from __future__ import annotations

import datetime as dt
import json

from click.testing import CliRunner
from sqlalchemy import select

from helpline import display
from helpline.db import db
from helpline.models import AuditEntry, DisplayToken

from .supervision_factories import known_day


def screen(app, name: str = "Leeds wall") -> tuple[int, str]:  # type: ignore[no-untyped-def]
    with app.app_context():
        made, token = display.create(db.session, name)
        db.session.commit()
        return made.id, token


def read(client, token: str | None):  # type: ignore[no-untyped-def]
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return client.get("/api/display/wallboard", headers=headers)


def test_a_display_token_reads_the_figures_and_nothing_personal(app):
    with app.app_context():
        day = known_day(db.session)
        db.session.commit()
        ann = day.handlers["ann"].user.display_name
    screen_id, token = screen(app)
    client = app.test_client()
    response = read(client, token)
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    board = response.get_json()
    assert {"waiting", "longest_wait_s", "handlers", "today", "service_levels", "alerts"} <= set(board)
    assert set(board["service_levels"]) == {"now", "today", "definitions"}
    assert "on_calls" not in board
    text = response.get_data(as_text=True)
    assert ann not in text and "call_id" not in text and "handler" not in json.dumps(board["alerts"])
    with app.app_context():
        assert db.session.get(DisplayToken, screen_id).last_seen_at is not None
    # No session cookie is set or needed: nothing here can time out.
    assert "Set-Cookie" not in response.headers or "session" not in response.headers["Set-Cookie"]


def test_a_wrong_missing_or_revoked_token_reads_nothing(app):
    screen_id, token = screen(app)
    client = app.test_client()
    for bad in (None, "", "not-a-token", token + "x", "x" * 500):
        response = read(client, bad)
        assert response.status_code == 401, bad
        assert response.get_json()["error"] == "display_token"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    # "Bearer" in another case is still a bearer token; another scheme is not.
    assert client.get("/api/display/wallboard", headers={"Authorization": f"bearer {token}"}).status_code == 200
    assert client.get("/api/display/wallboard", headers={"Authorization": f"Basic {token}"}).status_code == 401
    with app.app_context():
        display.revoke(db.session, screen_id, dt.datetime.now(dt.timezone.utc))
        db.session.commit()
    assert read(client, token).status_code == 401


def test_a_display_token_opens_no_other_route(app):
    _, token = screen(app)
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    for path in ("/api/supervisor/wallboard", "/api/reports/summary", "/api/queue", "/api/calls", "/api/reports/calls.csv"):
        assert client.get(path, headers=headers).status_code == 401, path
    # The page itself is a shell open to all; it loads the display script, not the supervisors' one.
    page = client.get("/display").get_data(as_text=True)
    assert "display.js" in page and "supervisor.js" not in page and "socket.io" not in page


def test_the_operator_creates_lists_and_revokes_screens(app, database_url, tmp_path):
    from helpline.cli import cli

    from .test_audit import cli_env

    env = cli_env(database_url, tmp_path)
    runner = CliRunner(env=env)
    made = runner.invoke(cli, ["display", "create", "Front office"])
    assert made.exit_code == 0, made.output
    assert "/display#token=" in made.output
    token = made.output.split("#token=")[1].split()[0]
    client = app.test_client()
    assert read(client, token).status_code == 200
    listed = runner.invoke(cli, ["display", "list"])
    assert "Front office" in listed.output and "active" in listed.output
    with app.app_context():
        screen_id = db.session.scalar(select(DisplayToken.id).where(DisplayToken.name == "Front office"))
    revoked = runner.invoke(cli, ["display", "revoke", str(screen_id)])
    assert revoked.exit_code == 0, revoked.output
    assert read(client, token).status_code == 401
    assert "revoked" in runner.invoke(cli, ["display", "list"]).output
    missing = runner.invoke(cli, ["display", "revoke", "999999"])
    assert missing.exit_code != 0 and "no screen" in missing.output
    with app.app_context():
        actions = set(db.session.scalars(select(AuditEntry.action).where(AuditEntry.action.like("display.%"))))
    assert actions == {"display.create", "display.revoke"}
