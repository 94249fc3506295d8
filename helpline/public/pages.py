"""The public pages themselves (the blueprint, the page views, self-help, the app's manifest and
service worker); forms.py adds the self-referral form's pages to the same blueprint."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import yaml
from flask import Blueprint, Flask, Response, current_app, render_template, request, send_from_directory
from werkzeug.exceptions import HTTPException

from ..errors import http_error
from ..models import utcnow
from ..phone import display

bp = Blueprint("public", __name__, template_folder="templates", static_folder="static",
               static_url_path="/public/static")

HERE = Path(__file__).parent
SELF_HELP = HERE / "self_help.yaml"


class SelfHelpError(ValueError):
    """The self-help file cannot be shown; the message says where it is wrong."""


def load_self_help(path: Path = SELF_HELP) -> list[dict[str, Any]]:
    """The self-help sections, checked: a mistake in the file stops start-up with one clear line."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise SelfHelpError(f"{path.name}: not valid YAML ({exc})") from None
    sections = data.get("sections") if isinstance(data, dict) else None
    if not isinstance(sections, list) or not sections:
        raise SelfHelpError(f"{path.name}: needs a list of `sections`")
    for number, section in enumerate(sections, start=1):
        where = f"{path.name}: section {number}"
        if not isinstance(section, dict) or not isinstance(section.get("title"), str):
            raise SelfHelpError(f"{where}: needs a `title`")
        resources = section.get("resources")
        if not isinstance(resources, list) or not resources:
            raise SelfHelpError(f"{where} ({section['title']}): needs a list of `resources`")
        for item_number, item in enumerate(resources, start=1):
            if not isinstance(item, dict) or not isinstance(item.get("title"), str) or not isinstance(item.get("text"), str):
                raise SelfHelpError(f"{where}, resource {item_number}: needs a `title` and a `text`")
            link = item.get("link")
            if link is not None and not (isinstance(link, str) and link.startswith("https://")):
                raise SelfHelpError(f"{where}, resource {item_number}: `link` must be a full https:// address")
    return sections


def service_facts(now: dt.datetime | None = None) -> dict[str, Any]:
    """What every page may show: the service's name, number, hours, whether it is open, the emergency advice."""
    settings = current_app.config["HELPLINE"]
    interpreter = current_app.extensions["helpline.ivr"]
    now = now or utcnow()
    number = settings.twilio.phone_number
    name = settings.service.name
    return {
        "service_name": name[4:] if name.lower().startswith("the ") else name,
        "helpline_number": display(number) if number else None,
        "helpline_tel": number,
        "opening_hours": interpreter.hours.spoken_summary(),
        "open_now": interpreter.hours.is_open(now),
        "emergency_text": interpreter.render("{emergency}", now),
    }


#: The public pages' policy: this origin only, for everything. Stricter than the console's, which
#: names Twilio's (or the emulator's) origins for the softphone; nothing here talks to anyone else.
PUBLIC_POLICY = "; ".join((
    "default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:", "connect-src 'self'",
    "font-src 'self'", "media-src 'none'", "object-src 'none'", "frame-ancestors 'none'", "base-uri 'none'",
    "form-action 'self'", "manifest-src 'self'", "worker-src 'self'",
))


@bp.after_request
def _public_policy(response: Response) -> Response:
    """No third-party scripts, styles, fonts or analytics on any public page: the policy says so."""
    response.headers["Content-Security-Policy"] = PUBLIC_POLICY
    # No microphone or camera on the public side at all.
    response.headers["Permissions-Policy"] = "microphone=(), camera=(), geolocation=(), payment=(), usb=(), display-capture=()"
    return response


@bp.app_context_processor
def _facts() -> dict[str, Any]:
    return {"public": service_facts}


@bp.get("/")
def home() -> str:
    """The public home page: who the service is for, how to reach it, and the emergency advice."""
    return render_template("public/home.html", facts=service_facts())


@bp.get("/what-we-offer")
def offer() -> str:
    """Who the service is for and what help there is."""
    from .referrals import gate_text

    return render_template("public/offer.html", facts=service_facts(),
                           eligibility=gate_text("eligibility_rule", utcnow()))


@bp.get("/confidentiality")
def confidentiality() -> str:
    """How confidentiality works: who sees what, and what is never shared."""
    return render_template("public/confidentiality.html", facts=service_facts())


@bp.get("/contact-us")
def contact() -> str:
    """Opening hours, the number, and the ways in."""
    return render_template("public/contact.html", facts=service_facts())


@bp.get("/self-help")
def self_help() -> str:
    """Self-help resources, from self_help.yaml."""
    return render_template("public/self_help.html", facts=service_facts(),
                           sections=current_app.extensions["helpline.self_help"])


@bp.get("/offline")
def offline() -> str:
    """What the app shows when a page is not kept for offline reading and there is no connection."""
    return render_template("public/offline.html", facts=service_facts())


@bp.get("/manifest.webmanifest")
def manifest() -> Response:
    """The installable app's manifest."""
    facts = service_facts()
    body = {
        "name": facts["service_name"],
        "short_name": "Helpline",
        "description": "Confidential help for doctors and dentists",
        "start_url": "/",
        "scope": "/",
        "display": "standalone",
        "background_color": "#ffffff",
        "theme_color": "#005eb8",
        "icons": [
            {"src": "/public/static/icons/icon-192.png", "sizes": "192x192", "type": "image/png"},
            {"src": "/public/static/icons/icon-512.png", "sizes": "512x512", "type": "image/png"},
            {"src": "/public/static/icons/icon-maskable-512.png", "sizes": "512x512", "type": "image/png",
             "purpose": "maskable"},
        ],
    }
    response = current_app.response_class(
        current_app.json.dumps(body), mimetype="application/manifest+json")
    return response


@bp.get("/service-worker.js")
def service_worker() -> Response:
    """The app's service worker, served from the root so that it may look after every public page."""
    response = send_from_directory(HERE / "static", "service-worker.js", mimetype="text/javascript", max_age=0)
    response.headers["Service-Worker-Allowed"] = "/"
    return response


#: An @font-face whose files are on another site (the NHS's Frutiger, licensed to be served from there).
_REMOTE_FONT = re.compile(r"@font-face\{[^}]*url\(https?://[^}]*\}")
_stylesheet: dict[str, bytes] = {}


@bp.get("/public/design-system.css")
def design_system_css() -> Response:
    """The vendored NHS stylesheet, less its @font-face rules that fetch fonts from assets.nhs.uk.

    These pages load nothing from another site (their policy blocks it); unremoved, the browser still
    tries, and logs the refusal. The file itself stays byte for byte as vendored (scripts/vendor
    --check); the design system falls back to Arial, as it does wherever Frutiger is not licensed.
    """
    if "css" not in _stylesheet:
        text = (HERE / "static" / "vendor" / "nhsuk-frontend.min.css").read_text(encoding="utf-8")
        _stylesheet["css"] = _REMOTE_FONT.sub("", text).encode()
    return current_app.response_class(_stylesheet["css"], mimetype="text/css")


@bp.get("/assets/images/<name>")
def design_system_image(name: str) -> Response:
    """The few icons the NHS stylesheet asks for at /assets/images (vendored with it)."""
    return send_from_directory(HERE / "static" / "vendor" / "assets" / "images", name, max_age=86400)


def not_found(exc: HTTPException) -> Response | tuple[str, int]:
    """An address nothing answers: in a browser a page of the site's own, with the way home and the
    emergency advice (a person looking for help may have mistyped it); to anything else the service's
    JSON error, as the API answers."""
    if request.accept_mimetypes.best_match(["application/json", "text/html"]) != "text/html":
        return http_error(exc)
    return render_template("public/not_found.html", facts=service_facts()), 404
