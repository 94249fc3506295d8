"""The dev phone page: a caller's phone and a handler's softphone in one browser tab."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template

bp = Blueprint("devphone", __name__, static_folder="static", static_url_path="/devphone-static",
               template_folder="templates")


@bp.get("/")
def page() -> str:
    """Serve the page; all behaviour lives in static/devphone.js and talks to /emulator/."""
    engine = current_app.extensions["emulator"]
    config = engine.config
    return render_template("devphone.html", phone_number=config.phone_number, voice_url=config.voice_url or "",
                           time_scale=config.time_scale, signal_url=engine.signal_url)
