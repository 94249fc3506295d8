"""Reference data: England's localities (the 42 ICB areas), and the demo's sites and clinicians.

Both come from YAML files in `helpline/reference/`. Localities are real and loaded idempotently (new
ones added, names kept up to date); the demo services are invented and loaded once, into a database
that has no sites yet.
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .config import parse_span
from .models import AvailabilityException, AvailabilityRule, Clinician, Locality, Site, User

REFERENCE = Path(__file__).resolve().parent / "reference"


@dataclass(frozen=True)
class LocalityRow:
    """One locality as the reference file gives it."""

    code: str
    name: str
    region: str
    towns: tuple[str, ...]


def _read(name: str) -> Any:
    return yaml.safe_load((REFERENCE / name).read_text(encoding="utf-8"))


def localities() -> list[LocalityRow]:
    """Every locality in the reference file, in the file's order."""
    data = _read("localities.yaml")
    return [
        LocalityRow(entry["code"], entry["name"], region, tuple(entry["towns"]))
        for region, entries in data["regions"].items()
        for entry in entries
    ]


def load_localities(session: Session) -> int:
    """Add missing localities and refresh the names of existing ones; returns how many were added."""
    existing = {locality.code: locality for locality in session.scalars(select(Locality))}
    added = 0
    for row in localities():
        locality = existing.get(row.code)
        if locality is None:
            session.add(Locality(code=row.code, name=row.name, region=row.region))
            added += 1
        else:
            locality.name, locality.region = row.name, row.region
    session.flush()
    return added


def _rule(clinician: Clinician, spec: dict[str, Any], sites: list[Site], slot_minutes: int) -> AvailabilityRule:
    start, end = parse_span(spec["hours"])
    site = sites[spec["site"] - 1] if spec["modality"] == "face_to_face" else None
    return AvailabilityRule(clinician=clinician, weekday=spec["weekday"], start_minute=start, end_minute=end,
                            slot_minutes=slot_minutes, modality=spec["modality"], site=site)


def load_demo_services(session: Session, today: dt.date, clinician_username: str | None = None) -> str:
    """Load the demo sites, clinicians and availability (once); link `clinician_username` to a clinician.

    Returns a line saying what was loaded.
    """
    load_localities(session)
    if session.scalar(select(func.count(Site.id))):
        return "demo services already loaded"
    demo = _read("demo_services.yaml")
    names = itertools.cycle(itertools.product(demo["surnames"], demo["first_names"]))
    professions = itertools.cycle(demo["professions"])
    patterns = itertools.cycle(demo["patterns"])
    sites_by_locality: dict[str, list[Site]] = {}
    clinicians = 0
    for row in localities():
        sites = []
        for index in range(demo["sites_per_locality"]):
            town = row.towns[index % len(row.towns)]
            building = demo["site_buildings"][index % len(demo["site_buildings"])]
            street = demo["site_streets"][index % len(demo["site_streets"])]
            site = Site(code=f"demo-{row.code.lower()}-{index + 1}", locality_code=row.code, name=f"{town} {building}",
                        address=[building, f"{index + 1 + len(town)} {street}"], town=town)
            session.add(site)
            sites.append(site)
        sites_by_locality[row.code] = sites
        for _ in range(demo["clinicians_per_locality"]):
            surname, first = next(names)
            profession = next(professions)
            title = "" if profession == "therapist" else "Dr "
            clinicians += 1
            clinician = Clinician(code=f"demo-{clinicians:03d}", display_name=f"{title}{first} {surname}",
                                  profession=profession, locality_code=row.code)
            session.add(clinician)
            for spec in next(patterns):
                session.add(_rule(clinician, spec, sites, demo["slot_minutes"]))
            if clinicians % demo["leave_every"] == 0:
                starts = today + dt.timedelta(days=demo["leave_starts_in_days"])
                session.add(AvailabilityException(clinician=clinician, starts_on=starts, kind="leave",
                                                  ends_on=starts + dt.timedelta(days=demo["leave_days"] - 1)))
    linked = demo["linked_clinician"]
    clinician = Clinician(code=linked["code"], display_name=linked["name"], profession=linked["profession"],
                          locality_code=linked["locality"])
    if clinician_username:
        clinician.user = session.scalar(select(User).where(User.username == clinician_username))
    session.add(clinician)
    for spec in linked["rules"]:
        session.add(_rule(clinician, spec, sites_by_locality[linked["locality"]], demo["slot_minutes"]))
    session.flush()
    return f"demo services: {len(sites_by_locality) * demo['sites_per_locality']} sites, {clinicians + 1} clinicians"
