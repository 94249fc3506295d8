"""Scored questionnaires a handler or clinician may run with the caller: PHQ-9 (depression), GAD-7
(anxiety) and AUDIT-C (alcohol). All three are free to use; the items, scoring and severity bands are
the published ones (PHQ-9 and GAD-7: Kroenke, Spitzer and Williams; AUDIT-C: the UK's version, where
5 or more is a positive screen).

Answers, score and band are kept encrypted; what is in the clear is only which questionnaire, when,
by whom, and whether it raised the risk screen (for supervisors' alerts). Any answer above 0 to PHQ-9
item 9 (thoughts of being better off dead or of self-harm) raises it: supervisors are alerted as for
an immediate risk screen, and the handler is told to run the risk screen now.

Who sees the results: the clinician the record is booked with, and the handler who recorded one, while
the call is theirs (on it or wrapping up). Nobody else, supervisors included.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, StrictInt
from sqlalchemy import select
from sqlalchemy.orm import Session

from .crypto import Vault
from .db import append
from .events import announce
from .models import Call, CallEvent, Questionnaire, utcnow
from .risk import ALERT_TOPIC, alert_payload

#: Over the last 2 weeks, how often have you been bothered by ...
FREQUENCY = ("Not at all", "Several days", "More than half the days", "Nearly every day")


@dataclass(frozen=True)
class Item:
    """One question, and the words of each answer (the answer's score is its position)."""

    name: str
    text: str
    options: tuple[str, ...]


@dataclass(frozen=True)
class Band:
    """A range of total scores and what it means."""

    low: int
    high: int
    code: str
    label: str


@dataclass(frozen=True)
class Definition:
    """A questionnaire: its items, how it is introduced, and its severity bands."""

    code: str
    name: str
    about: str
    preamble: str
    items: tuple[Item, ...]
    bands: tuple[Band, ...]

    @property
    def max_score(self) -> int:
        return sum(len(item.options) - 1 for item in self.items)

    def band(self, score: int) -> Band:
        return next(band for band in self.bands if band.low <= score <= band.high)

    def json(self) -> dict[str, Any]:
        return {"code": self.code, "name": self.name, "about": self.about, "preamble": self.preamble,
                "max_score": self.max_score,
                "items": [{"name": item.name, "text": item.text,
                           "options": [{"value": value, "label": label} for value, label in enumerate(item.options)]}
                          for item in self.items],
                "bands": [{"low": band.low, "high": band.high, "code": band.code, "label": band.label} for band in self.bands]}


def _frequency(*texts: str) -> tuple[Item, ...]:
    return tuple(Item(f"q{number}", text, FREQUENCY) for number, text in enumerate(texts, start=1))


PHQ9 = Definition(
    "phq9", "PHQ-9", "Depression",
    "Over the last 2 weeks, how often have you been bothered by any of the following problems?",
    _frequency(
        "Little interest or pleasure in doing things",
        "Feeling down, depressed, or hopeless",
        "Trouble falling or staying asleep, or sleeping too much",
        "Feeling tired or having little energy",
        "Poor appetite or overeating",
        "Feeling bad about yourself, or that you are a failure or have let yourself or your family down",
        "Trouble concentrating on things, such as reading the newspaper or watching television",
        "Moving or speaking so slowly that other people could have noticed; or the opposite, being so "
        "fidgety or restless that you have been moving around a lot more than usual",
        "Thoughts that you would be better off dead, or of hurting yourself in some way"),
    (Band(0, 4, "minimal", "Minimal"), Band(5, 9, "mild", "Mild"), Band(10, 14, "moderate", "Moderate"),
     Band(15, 19, "moderately_severe", "Moderately severe"), Band(20, 27, "severe", "Severe")),
)

GAD7 = Definition(
    "gad7", "GAD-7", "Anxiety",
    "Over the last 2 weeks, how often have you been bothered by the following problems?",
    _frequency(
        "Feeling nervous, anxious or on edge",
        "Not being able to stop or control worrying",
        "Worrying too much about different things",
        "Trouble relaxing",
        "Being so restless that it is hard to sit still",
        "Becoming easily annoyed or irritable",
        "Feeling afraid as if something awful might happen"),
    (Band(0, 4, "minimal", "Minimal"), Band(5, 9, "mild", "Mild"), Band(10, 14, "moderate", "Moderate"),
     Band(15, 21, "severe", "Severe")),
)

AUDITC = Definition(
    "auditc", "AUDIT-C", "Alcohol",
    "About drinking alcohol. One unit is half a pint of ordinary-strength beer, lager or cider, a single "
    "measure of spirits, or half a standard (175 ml) glass of wine.",
    (
        Item("q1", "How often do you have a drink containing alcohol?",
             ("Never", "Monthly or less", "2 to 4 times a month", "2 to 3 times a week", "4 or more times a week")),
        Item("q2", "How many units of alcohol do you drink on a typical day when you are drinking?",
             ("0 to 2", "3 to 4", "5 to 6", "7 to 9", "10 or more")),
        Item("q3", "How often have you had 6 or more units if female, or 8 or more if male, on a single occasion "
                       "in the last year?",
             ("Never", "Less than monthly", "Monthly", "Weekly", "Daily or almost daily")),
    ),
    (Band(0, 4, "lower_risk", "Lower risk"),
     Band(5, 12, "increasing_or_higher_risk", "Increasing or higher risk: a positive screen (the full AUDIT is advised)")),
)

DEFINITIONS: dict[str, Definition] = {definition.code: definition for definition in (PHQ9, GAD7, AUDITC)}
#: PHQ-9's item on thoughts of death or self-harm: any answer above 0 raises the risk screen.
SELF_HARM_ITEM = ("phq9", "q9")


class QuestionnaireAnswers(BaseModel):
    """POST .../questionnaires: which questionnaire, and every item's answer (its score)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["phq9", "gad7", "auditc"]
    answers: dict[str, StrictInt] = Field(max_length=20)


class AnswerProblems(Exception):
    """Answers missing or out of range, by field (400; nothing is kept)."""

    def __init__(self, problems: list[dict[str, str]]):
        super().__init__("; ".join(problem["problem"] for problem in problems))
        self.problems = problems


def score(submitted: QuestionnaireAnswers) -> tuple[int, Band]:
    """The total and its band; raises AnswerProblems naming each missing, unknown or out-of-range item."""
    definition = DEFINITIONS[submitted.kind]
    names = {item.name for item in definition.items}
    problems = [{"field": f"answers.{name}", "problem": f"{definition.name} has no item {name}"}
                for name in submitted.answers if name not in names]
    for number, item in enumerate(definition.items, start=1):
        value = submitted.answers.get(item.name)
        if value is None:
            problems.append({"field": f"answers.{item.name}", "problem": f"question {number} needs an answer"})
        elif not 0 <= value < len(item.options):
            problems.append({"field": f"answers.{item.name}",
                             "problem": f"question {number}'s answer must be from 0 to {len(item.options) - 1}"})
    if problems:
        raise AnswerProblems(problems)
    total = sum(submitted.answers[item.name] for item in definition.items)
    return total, definition.band(total)


def raises_risk(submitted: QuestionnaireAnswers) -> bool:
    """Whether the answers raise the risk screen: PHQ-9 item 9 answered above 0."""
    kind, item = SELF_HARM_ITEM
    return submitted.kind == kind and submitted.answers.get(item, 0) > 0


def record(session: Session, vault: Vault, call: Call, contact_id: Optional[int], user_id: int, user_name: str,
           role: str, submitted: QuestionnaireAnswers) -> tuple[Questionnaire, dict[str, Any]]:
    """Score and keep a questionnaire; alert supervisors if it raises the risk screen. The caller commits."""
    total, band = score(submitted)
    now = utcnow()
    risk_raised = raises_risk(submitted)
    result = {"answers": {item.name: submitted.answers[item.name] for item in DEFINITIONS[submitted.kind].items},
              "score": total, "band": band.code}
    row = Questionnaire(call_id=call.id, contact_id=contact_id, kind=submitted.kind, at=now, recorded_by_id=user_id,
                        recorded_by_role=role, risk_raised=risk_raised,
                        result_enc=vault.encrypt(json.dumps(result, sort_keys=True)) or "")
    session.add(row)
    session.flush()
    append(session, CallEvent, call_id=call.id, at=now, kind="questionnaire",
           detail={"questionnaire_id": row.id, "kind": submitted.kind, "risk_raised": risk_raised})
    if risk_raised:
        announce(session, ALERT_TOPIC, **alert_payload(call.id, user_id, user_name, "immediate", now.isoformat(),
                                                      source="phq9"))
    return row, result


def as_json(row: Questionnaire, vault: Vault) -> dict[str, Any]:
    """One questionnaire's results, for those who may see them."""
    definition = DEFINITIONS[row.kind]
    result = json.loads(vault.decrypt(row.result_enc) or "{}")
    band = definition.band(result["score"])
    return {"id": row.id, "kind": row.kind, "name": definition.name, "at": row.at.isoformat(),
            "recorded_by_role": row.recorded_by_role, "score": result["score"], "max_score": definition.max_score,
            "band": band.code, "band_label": band.label, "answers": result["answers"], "risk_raised": row.risk_raised}


def for_call(session: Session, vault: Vault, call_id: int, recorded_by_id: Optional[int] = None) -> list[dict[str, Any]]:
    """The call's questionnaires, oldest first (only those `recorded_by_id` recorded, if given)."""
    query = select(Questionnaire).where(Questionnaire.call_id == call_id)
    if recorded_by_id is not None:
        query = query.where(Questionnaire.recorded_by_id == recorded_by_id)
    return [as_json(row, vault) for row in session.scalars(query.order_by(Questionnaire.id))]
