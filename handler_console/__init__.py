"""The call handler's console: pages, templates and browser code. Its data comes from `helpline.api`."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Flask

HERE = Path(__file__).resolve().parent

bp = Blueprint("console", __name__, template_folder="templates", static_folder="static", static_url_path="/console/static")


def init_app(app: Flask) -> None:
    """Register the console's pages."""
    from . import pages  # noqa: F401 - registers the routes on bp
    from . import clinician_pages  # noqa: F401 - the clinician's page, on bp too
    from . import supervisor_pages  # noqa: F401 - the wallboard, call review and reports pages

    app.register_blueprint(bp)
