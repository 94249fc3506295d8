"""The role matrix: who may use every route and Socket.IO event, written down once and enforced here.

Least privilege, as the service promises callers:
- a handler sees the contact they are working on and what routing needs;
- a clinician sees only their own patients;
- a supervisor sees call flow and figures, and a person's details only with a recorded reason;
- an admin manages users and settings (and searches the audit log), never records.

`ROUTES` maps every Flask endpoint and method to the principals that pass the role check, each with
the object-level rule the view applies on top (None: no further rule). `SOCKET_EVENTS` does the same
for what a client may send on `/console`, and `SOCKET_EMITS` says who receives what the server sends.

`init_app` installs a gate in front of every view: a request whose endpoint and method are not in
the matrix is refused (fail closed), so a new route cannot be reachable before someone has decided
who may use it. The views keep their own `roles_required` and object checks as a second line; the
role-matrix test (tests/test_role_matrix.py) tries every route and event as every principal and
fails when either this table or the code drifts. `markdown()` renders the table for the README.
"""

from __future__ import annotations

import logging
from typing import Mapping

from flask import Flask, Response, render_template, request
from flask_login import current_user

from . import audit
from .auth import home_url, login_manager
from .errors import error

log = logging.getLogger(__name__)

#: The console's roles, in the order the matrix lists them.
ROLES = ("handler", "supervisor", "clinician", "admin")
#: Nobody logged in.
ANONYMOUS = "anonymous"
#: Twilio, recognised by a valid X-Twilio-Signature (checked by the webhook blueprints), not by a log-in.
TWILIO = "twilio"
#: A display-only wall screen, recognised by its display token (helpline/display.py), not by a log-in.
DISPLAY = "display"
PRINCIPALS = (*ROLES, ANONYMOUS, TWILIO, DISPLAY)

#: Minimum length of the reason a supervisor gives to see a person's details (audited with it).
MIN_REASON = 10
#: ... and the most that is kept: a reason is a sentence, not a document.
MAX_REASON = 500
#: Where the reason may come instead of `?reason=` (keeps it out of proxies' access logs).
REASON_HEADER = "X-Access-Reason"
#: The audit action of a supervisor's read of a person's details; `audit.record` refuses it without a reason.
READ_WITH_REASON = "contact.read_with_reason"

# Object-level rules, as the matrix states them. The views (and helpline/contacts.py) enforce them.
ANY = None
OWN_CALL = "own call (accepted by them, on it or wrapping up)"
OFFERED_OR_WAITING = "a call offered to them, or waiting"
OFFERED = "only the call offered to them"
OWN_CONTACT = "own call's record (the contact they are working on)"
OWN_PATIENTS = "own patients (a live booking with them)"
OWN_BOOKING = "own bookings (the call's handler, or the booked clinician)"
WITH_REASON = f"with a recorded reason (?reason= or {REASON_HEADER}, at least {MIN_REASON} characters; audited)"
SELF = "themselves only"
SIGNED = "a valid X-Twilio-Signature"
DISPLAY_TOKEN = "a valid, unrevoked display token (Authorization: Bearer); figures only"

Access = Mapping[str, "str | None"]


def _all(*roles: str, scope: str | None = ANY) -> dict[str, str | None]:
    return {role: scope for role in roles}


EVERYONE: Access = _all(*ROLES, ANONYMOUS)
CONSOLE_USERS: Access = _all(*ROLES)
WEBHOOK: Access = {TWILIO: SIGNED}

#: (endpoint, method) -> {principal: object-level rule or None}. HEAD follows GET.
ROUTES: dict[tuple[str, str], Access] = {
    # -- log-in, pages and static files: the pages are shells, their data comes from the API below
    ("auth.login", "GET"): EVERYONE,
    ("auth.login", "POST"): EVERYONE,
    ("auth.logout", "POST"): EVERYONE,
    # the second step of a log-in: for whoever passed the password step in this browser
    ("auth.verify", "GET"): EVERYONE,
    ("auth.verify", "POST"): EVERYONE,
    ("auth.enrol", "GET"): EVERYONE,
    ("auth.enrol", "POST"): EVERYONE,
    # sign-in through the organisation's identity provider (404 where none is configured)
    ("oidc.start", "GET"): EVERYONE,
    ("oidc.callback", "GET"): EVERYONE,
    # a security key instead of a code, at the second step of a log-in (the pending user's own keys)
    ("security_keys.login_options", "POST"): EVERYONE,
    ("security_keys.log_in_with_key", "POST"): EVERYONE,
    ("security_keys.remove_key", "POST"): _all(*ROLES, scope=SELF),
    ("auth.change_password", "POST"): _all(*ROLES, scope=SELF),
    ("auth.renew_recovery_codes", "POST"): _all(*ROLES, scope=SELF),
    ("auth.end_other_sessions", "POST"): _all(*ROLES, scope=SELF),
    ("console.index", "GET"): EVERYONE,
    # -- the public pages (no log-in): information, self-help, the app, and the self-referral form
    ("public.home", "GET"): EVERYONE,
    ("public.offer", "GET"): EVERYONE,
    ("public.confidentiality", "GET"): EVERYONE,
    ("public.contact", "GET"): EVERYONE,
    ("public.self_help", "GET"): EVERYONE,
    ("public.offline", "GET"): EVERYONE,
    ("public.manifest", "GET"): EVERYONE,
    ("public.service_worker", "GET"): EVERYONE,
    ("public.design_system_image", "GET"): EVERYONE,
    ("public.design_system_css", "GET"): EVERYONE,
    ("public.static", "GET"): EVERYONE,
    ("public.start", "GET"): EVERYONE,
    ("public.start", "POST"): EVERYONE,
    ("public.question", "GET"): EVERYONE,
    ("public.question", "POST"): EVERYONE,
    ("public.someone_else", "GET"): EVERYONE,
    ("public.not_eligible", "GET"): EVERYONE,
    ("public.urgent_help", "GET"): EVERYONE,
    ("public.check_answers", "GET"): EVERYONE,
    ("public.check_answers", "POST"): EVERYONE,
    ("public.confirmation", "GET"): EVERYONE,
    ("api.self_referrals", "POST"): EVERYONE,
    ("api.email_reply", "POST"): {"handler": OWN_CALL},
    ("console.static", "GET"): EVERYONE,
    ("static", "GET"): EVERYONE,
    ("health.healthz", "GET"): EVERYONE,
    ("console.account", "GET"): CONSOLE_USERS,
    ("console.handler", "GET"): {"handler": ANY},
    ("console.clinician", "GET"): {"clinician": ANY},
    ("console.supervisor", "GET"): {"supervisor": ANY},
    ("console.wallboard", "GET"): {"supervisor": ANY},
    ("console.review", "GET"): {"supervisor": ANY},
    ("console.reports", "GET"): {"supervisor": ANY},
    # the wall screen's shell; its figures need the screen's display token
    ("console.display", "GET"): EVERYONE,
    # -- who am I, and reference data nothing personal is in
    ("api.openapi", "GET"): EVERYONE,
    ("api.me", "GET"): CONSOLE_USERS,
    ("api.enrol_options", "POST"): _all(*ROLES, scope=SELF),
    ("api.add_key", "POST"): _all(*ROLES, scope=SELF),
    ("api.set_status", "POST"): {"handler": SELF},
    ("api.voice_token", "GET"): {"handler": SELF, "supervisor": SELF},
    ("api.list_localities", "GET"): CONSOLE_USERS,
    ("api.list_sites", "GET"): _all("handler", "supervisor", "admin"),
    ("api.list_clinicians", "GET"): _all("handler", "supervisor", "admin"),
    ("api.find_slots", "GET"): _all("handler", "supervisor"),
    ("api.partner_services", "GET"): _all("handler", "supervisor", "clinician"),
    # -- the live queue and a handler's calls
    ("api.queue", "GET"): _all("handler", "supervisor"),
    ("api.accept", "POST"): {"handler": OFFERED_OR_WAITING},
    ("api.decline", "POST"): {"handler": OFFERED},
    ("api.hold", "POST"): {"handler": OWN_CALL},
    ("api.hangup", "POST"): {"handler": OWN_CALL},
    ("api.consult", "POST"): {"handler": OWN_CALL},
    ("api.consult_join", "POST"): {"handler": OWN_CALL},
    ("api.consult_return", "POST"): {"handler": OWN_CALL},
    ("api.available_supervisors", "GET"): {"handler": ANY},
    ("api.wrap_up", "POST"): {"handler": OWN_CALL},
    ("api.ivr", "GET"): {"handler": OWN_CALL},
    # -- first contact, risk and records
    ("api.get_call_contact", "GET"): {"handler": OWN_CONTACT},
    ("api.put_call_contact", "PUT"): {"handler": OWN_CONTACT},
    ("api.post_risk", "POST"): {"handler": OWN_CALL, "supervisor": "any call (escalating; the answers are not shown back)"},
    ("api.get_contact", "GET"): {"handler": OWN_CONTACT, "clinician": OWN_PATIENTS, "supervisor": WITH_REASON},
    ("api.send_signposts", "POST"): {"handler": OWN_CALL},
    # -- bookings
    ("api.create_booking", "POST"): {"handler": OWN_CALL},
    ("api.get_booking", "GET"): _all("handler", "clinician", scope=OWN_BOOKING),
    ("api.cancel_booking", "DELETE"): _all("handler", "clinician", scope=OWN_BOOKING),
    ("api.reschedule_booking", "PATCH"): _all("handler", "clinician", scope=OWN_BOOKING),
    ("api.reschedule_booking", "POST"): _all("handler", "clinician", scope=OWN_BOOKING),
    ("api.booking_calendar", "GET"): {"clinician": OWN_PATIENTS},
    ("api.clinician_bookings", "GET"): {"clinician": OWN_PATIENTS},
    # -- the clinician's side: their patients, attendance, discharge
    ("api.clinician_patients", "GET"): {"clinician": OWN_PATIENTS},
    ("api.booking_attendance", "PUT"): {"clinician": OWN_PATIENTS},
    ("api.discharge_contact", "PUT"): {"clinician": OWN_PATIENTS},
    # -- scored questionnaires: the handler on the call, the clinician treating the caller
    ("api.questionnaire_definitions", "GET"): _all("handler", "clinician"),
    ("api.post_call_questionnaire", "POST"): {"handler": OWN_CALL},
    ("api.get_call_questionnaires", "GET"): {"handler": OWN_CALL},
    ("api.post_contact_questionnaire", "POST"): {"clinician": OWN_PATIENTS},
    ("api.get_contact_questionnaires", "GET"): {"clinician": OWN_PATIENTS},
    # -- supervisors: call flow and figures, never the caller
    ("api.wallboard", "GET"): {"supervisor": ANY},
    ("api.move_up", "POST"): {"supervisor": ANY},
    ("api.offer", "POST"): {"supervisor": ANY},
    ("api.listen", "POST"): {"supervisor": ANY},
    ("api.listening", "GET"): {"supervisor": "own leg on the call"},
    ("api.stop_listening", "DELETE"): {"supervisor": "own leg on the call"},
    ("api.handler_presence", "POST"): {"supervisor": ANY},
    ("api.calls", "GET"): {"supervisor": ANY},
    ("api.call_timeline", "GET"): {"supervisor": ANY},
    ("api.summary", "GET"): {"supervisor": ANY},
    ("api.calls_csv", "GET"): {"supervisor": "any period (the export is audited)"},
    ("api.summary_csv", "GET"): {"supervisor": ANY},
    # -- display-only wall screens: the wallboard's figures, nothing personal, no log-in to time out
    ("api.display_wallboard", "GET"): {DISPLAY: DISPLAY_TOKEN},
    # -- admins: the audit log (users and keys are managed with the `helpline` command on the server)
    ("api.audit_search", "GET"): {"admin": "the search itself is audited"},
    ("api.end_user_sessions", "POST"): {"admin": "any user (audited)"},
    # -- Twilio's webhooks: signed, never a console user
    ("voice.incoming", "POST"): WEBHOOK,
    ("voice.status", "POST"): WEBHOOK,
    ("voice.step", "POST"): WEBHOOK,
    ("voice.step_keys", "POST"): WEBHOOK,
    ("voice.queue_wait", "POST"): WEBHOOK,
    ("voice.queue_key", "POST"): WEBHOOK,
    ("voice.queue_left", "POST"): WEBHOOK,
    ("connect.join", "POST"): WEBHOOK,
    ("connect.caller_leg", "POST"): WEBHOOK,
    ("connect.handler_leg", "POST"): WEBHOOK,
    ("connect.conference", "POST"): WEBHOOK,
    ("supervise.leg", "POST"): WEBHOOK,
}

#: Events a client may send on `/console` -> who may send them.
SOCKET_EVENTS: dict[str, Access] = {
    "connect": {"handler": "with a handler record", "supervisor": ANY},
    "heartbeat": {"handler": "own connection (keeps it past the idle limit while on duty)",
                  "supervisor": "own connection"},
    "disconnect": {"handler": ANY, "supervisor": ANY},
}

#: Events the server sends on `/console` -> who receives them. None of them carries personal data.
SOCKET_EMITS: dict[str, Access] = {
    "queue": {"handler": ANY, "supervisor": ANY},
    "presence": {"handler": SELF},
    "offer": {"handler": SELF},
    "offer_withdrawn": {"handler": SELF},
    "connect_failed": {"handler": SELF},
    "consult": {"handler": "own call only (the supervisor they asked in answered, was brought in, sent back, or left)",
                "supervisor": "only the supervisor asked into the call"},
    "wallboard": {"supervisor": ANY},
    "alert": {"supervisor": ANY},
    "session_expired": {"handler": SELF, "supervisor": SELF},
}


def access_for(endpoint: str | None, method: str) -> Access | None:
    """Who may use `endpoint` with `method`, or None when the matrix does not list it."""
    if endpoint is None:
        return None
    return ROUTES.get((endpoint, "GET" if method == "HEAD" else method))


def roles_for(endpoint: str, method: str) -> tuple[str, ...]:
    """The console roles allowed on a route, in matrix order (for /api/openapi.json's x-roles)."""
    access = access_for(endpoint, method) or {}
    return tuple(role for role in ROLES if role in access)


def principal() -> str:
    """The current request's principal for the role check: a role, or anonymous."""
    return current_user.role if current_user.is_authenticated else ANONYMOUS


def _forbidden(detail: str) -> Response | tuple[str, int]:
    """403 in the form the asker reads: JSON for the API, the "not your page" page for a browser."""
    if request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json":
        return error(403, "forbidden", detail)
    return render_template("forbidden.html", home=home_url()), 403


def gate() -> Response | tuple[str, int] | None:
    """Refuse a request the matrix does not allow; None lets it on to the view and its object checks."""
    if request.url_rule is None or request.method == "OPTIONS":
        return None  # 404 and 405 are answered by Flask; OPTIONS only lists the methods
    access = access_for(request.endpoint, request.method)
    if access is None:
        # Fail closed: a route nobody has placed in the matrix is reachable by nobody.
        log.error("refused %s %s: endpoint %s is not in the role matrix", request.method, request.path, request.endpoint)
        return error(403, "forbidden", "this route is not in the role matrix")
    if TWILIO in access or ANONYMOUS in access or DISPLAY in access:
        # open to all, signed by Twilio (the webhook blueprints check the signature), or a display
        # screen's token (the view checks it, and answers 401 to anyone without one)
        return None
    if not current_user.is_authenticated:
        return login_manager.unauthorized()
    if current_user.role not in access:
        return _forbidden(f"this needs the role {' or '.join(role for role in ROLES if role in access)}")
    return None


def markdown() -> str:
    """The matrix as Markdown tables, for the README (inside an app context, so that paths are shown)."""
    columns = (*ROLES, ANONYMOUS)
    mark = {None: "✓"}

    def cell(access: Access, who: str) -> str:
        if who not in access:
            return "–"
        return mark.get(access[who], f"✓ {access[who]}")

    lines = ["| Method | Path | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 2)]
    routes = _routes()
    for path, method, endpoint in routes:
        access = ROUTES.get((endpoint, method), {})
        if TWILIO in access or DISPLAY in access:
            continue
        lines.append(f"| {method} | `{path}` | " + " | ".join(cell(access, who) for who in columns) + " |")
    webhooks = sorted(path for path, method, endpoint in routes if TWILIO in ROUTES.get((endpoint, method), {}))
    lines += ["", "Twilio's webhooks (" + ", ".join(f"`{path}`" for path in webhooks) + ") take no log-in: every request "
              "must carry a valid `X-Twilio-Signature`, or it gets 403 and changes nothing. Console users get 403 too.", ""]
    screens = sorted(path for path, method, endpoint in routes if DISPLAY in ROUTES.get((endpoint, method), {}))
    lines += ["Display-only wall screens (" + ", ".join(f"`{path}`" for path in screens) + ") take no log-in either: "
              "each request carries the screen's display token (`helpline display create`; revoked with `helpline "
              "display revoke`) as `Authorization: Bearer`, or gets 401. They read figures, never a person.", ""]
    lines += ["| Socket.IO `/console` | " + " | ".join(ROLES) + " |", "|" + "---|" * (len(ROLES) + 1)]
    for name, access in SOCKET_EVENTS.items():
        lines.append(f"| client sends `{name}` | " + " | ".join(cell(access, who) for who in ROLES) + " |")
    for name, access in SOCKET_EMITS.items():
        lines.append(f"| server sends `{name}` | " + " | ".join(cell(access, who) for who in ROLES) + " |")
    return "\n".join(lines) + "\n"


def _routes() -> list[tuple[str, str, str]]:
    """(path, method, endpoint) of every route: from the app's URL map inside an app context, else endpoints only."""
    from flask import current_app, has_app_context

    if not has_app_context():
        return sorted((endpoint, method, endpoint) for endpoint, method in ROUTES)
    return sorted((rule.rule, method, rule.endpoint) for rule in current_app.url_map.iter_rules()
                  for method in (rule.methods or set()) - {"HEAD", "OPTIONS"})


def init_app(app: Flask) -> None:
    """Put the matrix's gate in front of every view (after the session check, so an ended session is
    nobody, and before the CSRF check, so nobody gets 401 whatever their token)."""
    audit.require_reason(READ_WITH_REASON)
    app.before_request(gate)
