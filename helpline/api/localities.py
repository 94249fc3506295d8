"""Localities, sites, clinicians and free slots: what a handler chooses from when booking."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Literal, Optional, TypeVar

from flask import Response, current_app, jsonify, request
from flask_login import current_user
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from .. import booking as slots_service
from .. import contacts
from ..auth import roles_required
from ..db import db
from ..models import PROFESSIONS, AvailabilityException, Call, Clinician, Locality, Site
from . import BadRequest, Routes, refusal
from .contacts import vault
from .openapi import date, documented, one_of, whole_number

routes = Routes()

M = TypeVar("M", bound=BaseModel)


def query_args(model: type[M]) -> M:
    """The request's query string, validated against `model`; raises BadRequest saying what is wrong."""
    try:
        return model.model_validate(request.args.to_dict())
    except ValidationError as exc:
        raise refusal(exc) from None


#: An ICB code as England's reference data writes them (QWO, QOP, ...).
_CODE = re.compile(r"^[A-Z0-9]{2,8}$")


def locality_codes() -> dict[str, Any]:
    """The schema of a locality parameter: one of England's ICB codes, as GET /api/localities lists them
    (or empty, which is the same as leaving it out)."""
    return {"type": "string", "enum": ["", *sorted(db.session.scalars(select(Locality.code)))]}


def check_localities(**codes: Optional[str]) -> None:
    """422 naming each parameter whose locality code is not one of England's."""
    given = {name: code for name, code in codes.items() if code}
    # Only a well-formed code is looked up: PostgreSQL refuses text holding NUL, for one.
    wanted = {code for code in given.values() if _CODE.match(code)}
    known = set(db.session.scalars(select(Locality.code).where(Locality.code.in_(wanted)))) if wanted else set()
    problems = [{"field": name, "problem": f"unknown locality {code}"} for name, code in given.items() if code not in known]
    if problems:
        raise BadRequest("invalid", problems, status=422)


class SlotParams(BaseModel):
    """GET /api/clinicians/slots: what, where and when; dates are Europe/London and inclusive."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    start_date: Optional[dt.date] = Field(default=None, alias="from")
    end_date: Optional[dt.date] = Field(default=None, alias="to")
    locality: Optional[str] = None
    modality: Optional[Literal["face_to_face", "video"]] = None
    profession: Optional[Literal["psychiatrist", "psychologist", "addiction_specialist", "therapist"]] = None
    workplace_locality: Optional[str] = None
    include_workplace: bool = False
    limit: int = Field(default=slots_service.DEFAULT_LIMIT, ge=1, le=slots_service.MAX_LIMIT)
    after: Optional[str] = None
    call_id: Optional[int] = Field(default=None, ge=1, le=2**31 - 1)

    @field_validator("start_date", "end_date", mode="before")
    @classmethod
    def _date_part(cls, value: Any) -> Any:
        # A full timestamp is accepted too: its Europe/London date is what counts.
        if isinstance(value, str) and "T" in value:
            try:
                return slots_service.local_date(dt.datetime.fromisoformat(value.replace("Z", "+00:00")))
            except ValueError:
                return value
        return value

    @model_validator(mode="after")
    def _defaults(self) -> "SlotParams":
        today = slots_service.local_date(dt.datetime.now(dt.timezone.utc))
        self.start_date = self.start_date or today
        self.end_date = self.end_date or self.start_date + dt.timedelta(days=slots_service.DEFAULT_RANGE_DAYS - 1)
        return self

    def check_range(self) -> None:
        """422 for two dates that make no search: each is a date, but not a period of at most MAX_RANGE_DAYS."""
        assert self.start_date is not None and self.end_date is not None
        if self.end_date < self.start_date:
            raise BadRequest("invalid", [{"field": "to", "problem": "`to` is before `from`"}], status=422)
        if (self.end_date - self.start_date).days + 1 > slots_service.MAX_RANGE_DAYS:
            raise BadRequest("invalid", [{"field": "to", "problem": f"search at most {slots_service.MAX_RANGE_DAYS} days at a time"}],
                             status=422)


def caller_fields(call_id: int) -> dict[str, Any]:
    """The first-contact fields of a call the signed-in handler took; 403 for anyone else's call."""
    call = db.session.get(Call, call_id)
    contact = contacts.contact_for_call(db.session, call_id) if call else None
    if call is None or current_user.role != "handler" or not contacts.may_write(db.session, call, contact, current_user.id):
        raise BadRequest("forbidden", "only the handler who took this call can search for it", 403)
    return contacts.details(vault(), contact) if contact else {}


@routes.get("/localities")
@documented(responses={200: "{localities: [{code, name}]}: England's 42 ICB areas, by name"},
            roles=("handler", "supervisor", "clinician", "admin"))
@roles_required("handler", "supervisor", "clinician", "admin")
def list_localities() -> Response:
    """England's localities (ICB areas), by name."""
    rows = db.session.scalars(select(Locality).order_by(Locality.name))
    return jsonify({"localities": [{"code": row.code, "name": row.name} for row in rows]})


@routes.get("/sites")
@documented(responses={200: "{sites: [{id, code, name, address, town, locality}]}"}, roles=("handler", "supervisor", "admin"),
            query={"locality": ("an ICB code, to list one locality's sites", locality_codes)})
@roles_required("handler", "supervisor", "admin")
def list_sites() -> Response:
    """Sites with their addresses, optionally in one locality."""
    locality = request.args.get("locality") or None
    check_localities(locality=locality)
    query = select(Site).where(Site.active.is_(True)).order_by(Site.locality_code, Site.name)
    if locality:
        query = query.where(Site.locality_code == locality)
    return jsonify({"sites": [slots_service.site_json(site) for site in db.session.scalars(query)]})


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


@routes.get("/clinicians")
@documented(responses={200: "{clinicians: [{id, name, profession, locality, sites, availability, exceptions}]}"},
            roles=("handler", "supervisor", "admin"),
            query={"locality": ("the clinician's base locality", locality_codes), "profession": one_of("what they do", PROFESSIONS)})
@roles_required("handler", "supervisor", "admin")
def list_clinicians() -> Response:
    """Clinicians with their sites, profession, weekly availability and coming exceptions."""
    locality = request.args.get("locality") or None
    profession = request.args.get("profession") or None
    if profession and profession not in PROFESSIONS:
        raise BadRequest("invalid", [{"field": "profession", "problem": f"one of {', '.join(PROFESSIONS)}"}])
    check_localities(locality=locality)
    query = select(Clinician).where(Clinician.active.is_(True)).options(selectinload(Clinician.rules)).order_by(Clinician.display_name)
    if locality:
        query = query.where(Clinician.locality_code == locality)
    if profession:
        query = query.where(Clinician.profession == profession)
    clinicians = list(db.session.scalars(query))
    today = slots_service.local_date(dt.datetime.now(dt.timezone.utc))
    leave: dict[int, list[dict[str, str]]] = {}
    for exception in db.session.scalars(select(AvailabilityException).where(
            AvailabilityException.ends_on >= today, AvailabilityException.clinician_id.in_([c.id for c in clinicians]))):
        leave.setdefault(exception.clinician_id or 0, []).append(
            {"starts_on": exception.starts_on.isoformat(), "ends_on": exception.ends_on.isoformat(), "kind": exception.kind})
    result = []
    for clinician in clinicians:
        sites = {rule.site.id: rule.site for rule in clinician.rules if rule.site}
        result.append({
            **slots_service.clinician_json(clinician),
            "sites": [slots_service.site_json(site) for site in sites.values()],
            "availability": [{"weekday": rule.weekday, "start": _hhmm(rule.start_minute), "end": _hhmm(rule.end_minute),
                              "modality": rule.modality, "site_id": rule.site_id, "slot_minutes": rule.slot_minutes}
                             for rule in sorted(clinician.rules, key=lambda r: (r.weekday, r.start_minute))],
            "exceptions": leave.get(clinician.id, []),
        })
    return jsonify({"clinicians": result})


@routes.get("/clinicians/slots")
@documented(responses={200: "{slots: [{id, start, end, modality, locality, site, clinician}], excluded_workplace_locality, next_after, "
                            "urgent_until, from, to}"},
            roles=("handler", "supervisor"), query={
                "from": date("first date (Europe/London; default today)"),
                "to": date(f"last date, inclusive (default from + {slots_service.DEFAULT_RANGE_DAYS - 1} days; at most "
                           f"{slots_service.MAX_RANGE_DAYS} days in all)"),
                "locality": ("ICB code of the site (face to face) or of the clinician (video)", locality_codes),
                "modality": one_of("how the appointment is held", ("face_to_face", "video")),
                "profession": one_of("what the clinician does", PROFESSIONS),
                "workplace_locality": ("the caller's workplace locality: its sites are left out", locality_codes),
                "include_workplace": ("include sites in the workplace locality", {"type": "boolean"}),
                "limit": whole_number("page size", 1, slots_service.MAX_LIMIT),
                "after": ("next_after of the previous page", {"type": "string", "pattern": slots_service.SLOT_ID_PATTERN}),
                "call_id": whole_number("the handler's call: its record's workplace locality (unless the caller agreed to "
                                        "it), declared conflicts (never shown) and an urgent triage's time limit apply too")})
@roles_required("handler", "supervisor")
def find_slots() -> Response:
    """Free slots in start order. Sites in the caller's workplace locality, and clinicians based there, are
    left out unless include_workplace; with call_id, so are the clinicians and sites the caller asked to avoid."""
    params = query_args(SlotParams)
    params.check_range()
    check_localities(locality=params.locality, workplace_locality=params.workplace_locality)
    query = slots_service.SlotQuery(
        start_date=params.start_date, end_date=params.end_date, locality=params.locality,  # type: ignore[arg-type]
        modality=params.modality, profession=params.profession, workplace_locality=params.workplace_locality,
        include_workplace=params.include_workplace, limit=params.limit, after=params.after)
    if params.call_id is not None:
        urgent = dt.timedelta(hours=current_app.config["HELPLINE"].triage.urgent_within_hours)
        query = slots_service.for_caller(query, caller_fields(params.call_id), urgent_within=urgent)
    try:
        page = slots_service.search(db.session, query)
    except slots_service.SlotNotFound:
        raise BadRequest("invalid", [{"field": "after", "problem": "not a slot id from an earlier page"}], status=422) from None
    return jsonify({
        "slots": slots_service.slots_json(page.slots),
        "excluded_workplace_locality": page.excluded_workplace_locality,
        "next_after": page.next_after,
        "urgent_until": slots_service.iso_local(query.latest_start) if query.latest_start else None,
        "from": params.start_date.isoformat() if params.start_date else None,
        "to": params.end_date.isoformat() if params.end_date else None,
    })
