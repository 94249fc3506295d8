"""The partner services callers are signposted to (reference data in helpline/reference/partner_services.yaml),
searching them, and the discreet text that sends a caller the ones they chose.

A signpost text names only the services chosen, with their numbers and websites: it never names the
helpline unless the caller allowed it, because a phone may be seen by someone else.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Optional

import yaml

from .reference_data import REFERENCE

#: What a service may help with, in the words the console shows.
TOPICS = {
    "wellbeing": "Wellbeing and counselling",
    "peer_support": "Support from other doctors",
    "crisis": "Someone to talk to now",
    "money": "Money worries",
    "regulatory": "Regulatory or performance concerns",
    "legal": "Legal and indemnity advice",
    "addiction": "Alcohol, drugs or other addiction",
    "dentists": "For dentists",
}
AUDIENCES = ("doctors", "dentists", "both")
#: A text message of up to this many characters (ten segments) is sent; more services, fewer words.
MAX_TEXT = 1530


@dataclass(frozen=True)
class PartnerService:
    """One partner service as the reference file gives it."""

    code: str
    name: str
    web: str
    hours: str
    helps_with: tuple[str, ...]
    audience: str
    about: str
    phone: Optional[str] = None

    def json(self) -> dict[str, Any]:
        """As the API shows it."""
        return {"code": self.code, "name": self.name, "phone": self.phone, "web": self.web, "hours": self.hours,
                "helps_with": list(self.helps_with), "for": self.audience, "about": self.about}


@lru_cache(maxsize=1)
def services() -> tuple[PartnerService, ...]:
    """Every partner service, in the file's order; a malformed file fails loudly, naming the entry."""
    data = yaml.safe_load((REFERENCE / "partner_services.yaml").read_text(encoding="utf-8"))
    found = []
    for index, entry in enumerate(data["services"]):
        where = f"partner_services.yaml entry {index + 1} ({entry.get('code', '?')})"
        unknown = set(entry.get("helps_with", [])) - set(TOPICS)
        if unknown or entry.get("for") not in AUDIENCES or not all(entry.get(key) for key in ("code", "name", "web", "hours", "about")):
            raise ValueError(f"{where}: needs code, name, web, hours, about, `for` in {AUDIENCES} and known topics "
                             f"(unknown: {sorted(unknown)})")
        found.append(PartnerService(code=entry["code"], name=entry["name"], web=entry["web"], hours=entry["hours"],
                                    helps_with=tuple(entry["helps_with"]), audience=entry["for"],
                                    about=" ".join(entry["about"].split()), phone=entry.get("phone")))
    if len({service.code for service in found}) != len(found):
        raise ValueError("partner_services.yaml: two services share a code")
    return tuple(found)


def by_code() -> dict[str, PartnerService]:
    """The services by their code."""
    return {service.code: service for service in services()}


def search(words: str = "", topic: Optional[str] = None, audience: Optional[str] = None) -> list[PartnerService]:
    """Services whose name, description or topics contain every word typed, optionally for one topic and
    one audience (doctors or dentists; services for both always match)."""
    terms = words.lower().split()
    found = []
    for service in services():
        if topic and topic not in service.helps_with:
            continue
        if audience and service.audience not in (audience, "both"):
            continue
        text = " ".join([service.name, service.about, *service.helps_with, *(TOPICS[t] for t in service.helps_with)]).lower()
        if all(term in text for term in terms):
            found.append(service)
    return found


def signpost_text(chosen: list[PartnerService], service_name: Optional[str] = None) -> str:
    """The text sent to the caller: each service's name, number and website, and nothing that says where
    it came from unless `service_name` (the caller allowed it to be named)."""
    opening = f"From {service_name}: the details you asked for." if service_name else "The details you asked for:"
    lines = [opening]
    for service in chosen:
        lines.append(" ".join(part for part in (service.name, service.phone, service.web) if part))
    return "\n".join(lines)
