"""The self-referral and call-back request form, one question per page (the GOV.UK and NHS pattern),
with a check-your-answers page. Plain HTML forms posting back to the server: it all works without
JavaScript.

The answers so far travel in the visitor's own session cookie, encrypted with the service's key
(the cookie is only signed otherwise, and could be read on a shared computer). Nothing is written to
the database until they send the request from the check-your-answers page, and then only through
`referrals.submit`, exactly as `POST /api/self-referrals` does. A request about someone else, or from
someone the service cannot see, ends the form and forgets every answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

from flask import abort, current_app, redirect, render_template, request, session, url_for
from pydantic import ValidationError
from werkzeug.wrappers import Response

from ..db import db
from ..models import utcnow
from ..phone import normalise
from ..security import client_address
from ..api import Routes
from .pages import service_facts
from . import referrals

#: The form's pages, added to the public pages' blueprint by `add_to` (public/__init__.py).
routes = Routes()

#: Where the answers so far are kept (encrypted) in the session, and the reference once sent.
ANSWERS = "self_referral"
SENT = "self_referral_sent"

NEED_LABELS = {
    "mental_health": "My mental health (for example stress, anxiety, low mood, burnout)",
    "addiction": "Alcohol, drugs or another addiction",
    "return_to_work": "Support returning to work",
    "other": "Something else, or I am not sure",
}
WINDOW_LABELS = {
    "morning": "Mornings (8am to 12 noon)",
    "afternoon": "Afternoons (12 noon to 5pm)",
    "evening": "Evenings (5pm to 8pm)",
}


def _load() -> dict[str, Any]:
    vault = current_app.extensions["helpline.vault"]
    token = session.get(ANSWERS)
    if not token:
        return {}
    try:
        return json.loads(vault.decrypt(token) or "{}")
    except Exception:  # noqa: BLE001 - a cookie from before a key change: start again
        return {}


def _save(answers: dict[str, Any]) -> None:
    vault = current_app.extensions["helpline.vault"]
    session[ANSWERS] = vault.encrypt(json.dumps(answers))


def _forget() -> None:
    session.pop(ANSWERS, None)


@dataclass
class Step:
    """One page of the form: its question, how to read its answer, and where it goes next."""

    name: str
    template: str
    #: Reads the posted form into `answers`; returns {field: problem} for anything wrong.
    read: Callable[[dict[str, Any], Any], dict[str, str]]
    #: The next page's name, from the answers (or a branch page's endpoint, prefixed "!").
    after: Callable[[dict[str, Any]], str]
    #: Whether the page is asked at all, given the earlier answers.
    asked: Callable[[dict[str, Any]], bool] = field(default=lambda answers: True)


def _choice(name: str, allowed: tuple[str, ...], problem: str) -> Callable[[dict[str, Any], Any], dict[str, str]]:
    def read(answers: dict[str, Any], form: Any) -> dict[str, str]:
        value = form.get(name, "")
        if value not in allowed:
            return {name: problem}
        answers[name] = value
        return {}
    return read


def _read_contact(answers: dict[str, Any], form: Any) -> dict[str, str]:
    how = form.get("contact_by", "")
    if how not in ("phone", "email"):
        return {"contact_by": "Choose how we should contact you"}
    answers["contact_by"] = how
    if how == "phone":
        phone = form.get("phone", "").strip()
        try:
            normalise(phone)
        except ValueError:
            return {"phone": "Enter a phone number we can call, like a mobile number starting 07 or a landline number starting 01 or 02"}
        answers["phone"], answers["email"] = phone, ""
    else:
        email = form.get("email", "").strip()
        if not referrals._email_ok(email) or len(email) > 254:
            return {"email": "Enter an email address in the correct format, like name@example.com"}
        answers["email"], answers["phone"] = email, ""
    return {}


def _read_times(answers: dict[str, Any], form: Any) -> dict[str, str]:
    chosen = [value for value in form.getlist("safe_times") if value in referrals.SAFE_WINDOWS or value == "any"]
    if not chosen:
        return {"safe_times": "Choose when it is safe for us to call you, or 'Any time you are open'"}
    answers["safe_times"] = [] if "any" in chosen else [value for value in referrals.SAFE_WINDOWS if value in chosen]
    return {}


def _read_messages(answers: dict[str, Any], form: Any) -> dict[str, str]:
    problems = {}
    for name, problem in (("safe_for_voicemail", "Say whether we may leave a voicemail"),
                          ("safe_to_text", "Say whether we may send you a text message")):
        value = form.get(name, "")
        if value not in ("yes", "no"):
            problems[name] = problem
        else:
            answers[name] = value
    return problems


def _read_text(name: str, limit: int, label: str) -> Callable[[dict[str, Any], Any], dict[str, str]]:
    def read(answers: dict[str, Any], form: Any) -> dict[str, str]:
        value = form.get(name, "").strip()
        if len(value) > limit:
            return {name: f"{label} must be {limit} characters or fewer"}
        from ..api import _CONTROL, _MARKUP

        if _CONTROL.search(value):
            return {name: f"{label} has a hidden or control character in it (pasted text can bring one): type it again"}
        if _MARKUP.search(value):
            return {name: f"{label} cannot have a word between < and >, like <this>: use other brackets, like (this)"}
        answers[name] = value
        return {}
    return read


def _read_consent(answers: dict[str, Any], form: Any) -> dict[str, str]:
    if form.get("consent") != "yes":
        return {"consent": "Tick the box to agree, so that we can keep your details and contact you"}
    answers["consent"] = "yes"
    return {}


#: The fields a person types into: after an error each comes back as they typed it.
TYPED = ("phone", "email", "preferred_name", "message")


def _by_phone(answers: dict[str, Any]) -> bool:
    return answers.get("contact_by") == "phone"


STEPS: list[Step] = [
    Step("about-whom", "about_whom.html", _choice("about", ("self", "someone_else"), "Choose who you are asking about"),
         lambda a: "!public.someone_else" if a["about"] == "someone_else" else "eligibility"),
    Step("eligibility", "eligibility.html", _choice("eligible", ("yes", "no"), "Say whether this describes you"),
         lambda a: "!public.not_eligible" if a["eligible"] == "no" else "need"),
    Step("need", "need.html", _choice("need", tuple(NEED_LABELS), "Choose what you would like help with"), lambda a: "safe-now"),
    Step("safe-now", "safe_now.html", _choice("safe_now", ("yes", "no"), "Tell us whether you are safe right now"),
         lambda a: "!public.urgent_help" if a["safe_now"] == "no" else "contact"),
    Step("contact", "contact_method.html", _read_contact, lambda a: "safe-times" if _by_phone(a) else "name"),
    Step("safe-times", "safe_times.html", _read_times, lambda a: "messages", asked=_by_phone),
    Step("messages", "messages.html", _read_messages, lambda a: "name", asked=_by_phone),
    Step("name", "name.html", _read_text("preferred_name", 60, "Your name"), lambda a: "message"),
    Step("message", "message.html", _read_text("message", 1000, "Your message"), lambda a: "consent"),
    Step("consent", "consent.html", _read_consent, lambda a: "check-answers"),
]
BY_NAME = {step.name: step for step in STEPS}


def _first_unanswered(answers: dict[str, Any]) -> str | None:
    """The first page still to answer (the check-answers page only shows once all are)."""
    needed = {"about-whom": "about", "eligibility": "eligible", "need": "need", "safe-now": "safe_now",
              "contact": "contact_by", "safe-times": "safe_times", "messages": "safe_to_text",
              "name": "preferred_name", "message": "message", "consent": "consent"}
    for step in STEPS:
        if step.asked(answers) and needed[step.name] not in answers:
            return step.name
    return None


def _url(step: str) -> str:
    return url_for("public.start") if step == "about-whom" else url_for("public.question", step=step)


def _page(step: Step, answers: dict[str, Any], errors: dict[str, str], status: int = 200) -> tuple[str, int]:
    previous = None
    index = STEPS.index(step)
    for earlier in reversed(STEPS[:index]):
        if earlier.asked(answers):
            previous = _url(earlier.name)
            break
    return render_template(f"public/form/{step.template}", facts=service_facts(), answers=answers, errors=errors,
                           step=step.name, back=previous, need_labels=NEED_LABELS, window_labels=WINDOW_LABELS,
                           checking=request.args.get("change") == "1",
                           eligibility=referrals.gate_text("eligibility_rule", utcnow())), status


def _handle(name: str) -> Response | tuple[str, int]:
    step = BY_NAME.get(name)
    if step is None:
        abort(404)
    answers = _load()
    if request.method == "GET":
        return _page(step, answers, {})
    errors = step.read(answers, request.form)
    if errors:
        # Shown as typed, with the error beside it, so that nobody has to type it again; saved only once right.
        typed = {name: request.form.get(name, "") for name in TYPED if name in request.form}
        return _page(step, {**answers, **typed}, errors, status=400)
    _save(answers)
    target = step.after(answers)
    if target.startswith("!"):
        if target in ("!public.someone_else", "!public.not_eligible"):
            _forget()  # nothing of anyone is kept, even in their own cookie
        return redirect(url_for(target[1:]))
    if request.args.get("change") == "1" and _first_unanswered(answers) is None:
        return redirect(url_for("public.check_answers"))
    return redirect(_url(target))


@routes.route("/self-referral", methods=["GET", "POST"])
def start() -> Response | tuple[str, int]:
    """The form's first question (who the request is about), with what happens next."""
    return _handle("about-whom")


@routes.route("/self-referral/<step>", methods=["GET", "POST"])
def question(step: str) -> Response | tuple[str, int]:
    """One question of the form."""
    if step == "about-whom":
        return redirect(url_for("public.start"))
    return _handle(step)


@routes.get("/self-referral/someone-else")
def someone_else() -> str:
    """About someone else: the kind explanation, in the phone line's words; nothing was kept."""
    return render_template("public/form/someone_else.html", facts=service_facts(),
                           text=referrals.gate_text("someone_else", utcnow()))


@routes.get("/self-referral/not-eligible")
def not_eligible() -> str:
    """Not someone the service can see: where else to go, in the phone line's words; nothing was kept."""
    return render_template("public/form/not_eligible.html", facts=service_facts(),
                           text=referrals.gate_text("signposting", utcnow()))


@routes.get("/self-referral/urgent-help")
def urgent_help() -> str:
    """Not safe right now: the emergency advice at once, then the way on to ask for a call-back."""
    return render_template("public/form/urgent_help.html", facts=service_facts())


def _referral(answers: dict[str, Any]) -> referrals.Referral:
    """The gathered answers as the same request the JSON API takes."""
    by_phone = _by_phone(answers)
    return referrals.Referral(
        about=answers.get("about", "self"), eligible=answers.get("eligible") == "yes", need=answers.get("need"),
        safe_now=answers.get("safe_now") != "no",
        contact=referrals.Contact(
            phone=answers.get("phone") or None, email=answers.get("email") or None, contact_by=answers.get("contact_by"),
            safe_to_text=by_phone and answers.get("safe_to_text") == "yes",
            safe_for_voicemail=by_phone and answers.get("safe_for_voicemail") == "yes",
            safe_times=", ".join(answers.get("safe_times") or []) if by_phone else ""),
        preferred_name=answers.get("preferred_name", ""), message=answers.get("message", ""),
        consent=answers.get("consent") == "yes", website=request.form.get("website", ""),
    )


@routes.route("/self-referral/check-answers", methods=["GET", "POST"])
def check_answers() -> Response | tuple[str, int]:
    """Check your answers, then send the request: it joins the line as a call-back request."""
    answers = _load()
    missing = _first_unanswered(answers)
    if missing is not None:
        return redirect(_url(missing))
    if request.method == "GET":
        return render_template("public/form/check_answers.html", facts=service_facts(), answers=answers,
                               need_labels=NEED_LABELS, back=_url("consent"), url=_url,
                               times_text=", ".join(WINDOW_LABELS[w] for w in answers.get("safe_times") or [])
                               or "Any time you are open"), 200
    now = utcnow()
    db_session = db.session
    try:
        referral = _referral(answers)
        referrals.validate(referral)
    except (ValidationError, referrals.Refused):
        return redirect(_url("about-whom"))
    if referrals.rate_limited(db_session, client_address(), now):
        db_session.commit()
        return render_template("public/form/too_many.html", facts=service_facts()), 429
    outcome = referrals.submit(db_session, referral, now)
    db_session.commit()
    _forget()
    session[SENT] = {"reference": outcome.reference, "at_risk": outcome.at_risk,
                     "by_email": referral.contact is not None and referral.contact.contact_by == "email",
                     "earliest": outcome.earliest}
    if referral.contact is not None and referral.contact.contact_by == "email" and not referral.website:
        from .. import mail

        mail.send_confirmation(referral.contact.email or "", outcome.reference)
    return redirect(url_for("public.confirmation"))


@routes.get("/self-referral/confirmation")
def confirmation() -> Response | str:
    """The reference, what happens next, and nothing personal."""
    sent = session.pop(SENT, None)
    if not sent:
        return redirect(url_for("public.start"))
    return render_template("public/form/confirmation.html", facts=service_facts(), sent=sent)


def add_to(bp: Any) -> None:
    """Put the form's pages on the public pages' blueprint (once: the blueprint is shared by every app)."""
    if not getattr(bp, "_self_referral_form", False):
        routes.add_to(bp)
        bp._self_referral_form = True
