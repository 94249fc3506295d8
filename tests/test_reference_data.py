"""England's localities (every ICB area, named correctly) and the demo's sites, clinicians and availability."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select

from helpline.db import db
from helpline.demo import seed_demo
from helpline.models import AvailabilityException, AvailabilityRule, Clinician, Locality, Site, User
from helpline.reference_data import load_demo_services, load_localities, localities


def test_there_are_the_42_icbs_of_england():
    rows = localities()
    assert len(rows) == 42 and len({row.code for row in rows}) == 42
    assert all(row.name.startswith("NHS ") and row.name.endswith(" ICB") for row in rows)
    assert {row.region for row in rows} == {"North East and Yorkshire", "North West", "Midlands", "East of England",
                                            "London", "South East", "South West"}
    by_code = {row.code: row.name for row in rows}
    assert by_code["QWO"] == "NHS West Yorkshire ICB"
    assert by_code["QT6"] == "NHS Cornwall and the Isles of Scilly ICB"
    assert by_code["QOX"] == "NHS Bath and North East Somerset, Swindon and Wiltshire ICB"
    assert sum(row.region == "London" for row in rows) == 5
    assert all(len(row.towns) >= 3 for row in rows)


def test_loading_localities_twice_changes_nothing(app):
    with app.app_context():
        assert load_localities(db.session) == 42
        assert load_localities(db.session) == 0
        db.session.commit()
        assert db.session.scalar(select(func.count(Locality.code))) == 42


def test_the_demo_has_sites_and_clinicians_everywhere(app):
    with app.app_context():
        session = db.session
        line = load_demo_services(session, dt.date(2027, 1, 4))
        session.commit()
        assert "126 sites" in line
        for code in session.scalars(select(Locality.code)):
            assert session.scalar(select(func.count(Site.id)).where(Site.locality_code == code)) >= 3
            assert session.scalar(select(func.count(Clinician.id)).where(Clinician.locality_code == code)) >= 2
        professions = set(session.scalars(select(Clinician.profession)))
        assert professions == {"psychiatrist", "psychologist", "addiction_specialist", "therapist"}
        assert session.scalar(select(func.count(AvailabilityRule.id))) > 100
        assert session.scalar(select(func.count(AvailabilityException.id))) > 0
        # Invented people, and no postcodes that could be someone's real address.
        names = list(session.scalars(select(Clinician.display_name)))
        fictional = ("Example", "Sample", "Placeholder", "Specimen", "Fictional", "Madeup", "Dummy", "Pretend", "(demo)")
        assert all(any(word in name for word in fictional) for name in names)
        assert load_demo_services(session, dt.date(2027, 1, 4)) == "demo services already loaded"


def test_seed_demo_links_the_demo_clinician_log_in(database_url, tmp_path):
    from helpline.config import load_settings
    from tests.conftest import test_overrides

    settings = load_settings(test_overrides(database_url, tmp_path), environ={})
    lines = seed_demo(settings)
    assert "126 sites" in lines[0]
    from helpline.db import Database

    database = Database()
    database.configure(database_url)
    try:
        with database.transaction() as session:
            user = session.scalar(select(User).where(User.username == "clinician"))
            clinician = session.scalar(select(Clinician).where(Clinician.user_id == user.id))
            assert clinician is not None and clinician.rules
    finally:
        database.dispose()
