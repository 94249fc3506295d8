"""The IVR flow file: the shipped one is sound, and every kind of mistake stops start-up clearly."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from helpline.config import PROJECT_ROOT
from helpline.ivr.flow import FlowError, load_flow, parse_flow

FLOW = PROJECT_ROOT / "ivr_flows" / "practitioner_health.yaml"


def shipped() -> dict:
    """The shipped flow as plain data, to break in tests."""
    return yaml.safe_load(FLOW.read_text())


def problems_of(data: dict, tmp_path: Path) -> list[str]:
    """Write `data` as a flow file and return what loading it reports."""
    path = tmp_path / "flow.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(FlowError) as caught:
        load_flow(path)
    return caught.value.problems


def test_the_shipped_flow_is_sound():
    flow = load_flow(FLOW)
    assert flow.start == "greeting"
    assert {step.type for step in flow.steps.values()} == {"say", "hours", "menu", "hangup", "callback", "queue"}


def test_wording_changes_need_no_code(tmp_path, app_factory):
    data = shipped()
    data["steps"]["greeting"]["say"] = "Hello from a reworded greeting. {emergency}"
    path = tmp_path / "reworded.yaml"
    path.write_text(yaml.safe_dump(data))
    app = app_factory(service={"flow": str(path)})
    from .conftest import Twilio
    from .walker import CallWalker

    walker = CallWalker(Twilio(app.test_client()))
    walker.start()
    assert walker.heard[0].startswith("Hello from a reworded greeting.")


def break_flow(change):  # type: ignore[no-untyped-def]
    data = shipped()
    change(data)
    return data


CASES = [
    ("unknown step", lambda d: d["steps"]["need"]["keys"]["1"].update(goto="queueue"), "step need: goes to unknown step 'queueue'"),
    ("unreachable", lambda d: d["steps"].update(orphan={"type": "hangup", "say": "bye", "outcome": "x"}), "step orphan: unreachable from greeting"),
    ("missing prompt", lambda d: d["steps"]["eligibility"].pop("prompt"), "step eligibility: missing prompt"),
    ("empty say", lambda d: d["steps"]["greeting"].update(say=""), "step greeting: missing prompt"),
    ("unknown placeholder", lambda d: d["steps"]["greeting"].update(say="Hi {sevice_name}"), "step greeting: say: unknown placeholder {sevice_name}"),
    ("bad type", lambda d: d["steps"]["greeting"].update(type="speak"), "step greeting: type must be one of"),
    ("bad key", lambda d: d["steps"]["need"]["keys"].update({"x": {"goto": "queue"}}), "step need: key 'x' is not a keypad key"),
    ("unknown need", lambda d: d["steps"]["need"]["keys"]["1"].update(need="sadness"), "step need: key 1: need must be one of"),
    ("unknown start", lambda d: d.update(start="hello"), "start: unknown step 'hello'"),
    ("no steps", lambda d: d.update(steps={}), "steps: the flow has no steps"),
    ("a menu shadowing 0", lambda d: d["steps"]["eligibility"]["keys"].update({"0": {"goto": "queue"}}),
     "step eligibility: key '0' is the speak_now key of every menu"),
    ("a menu shadowing *", lambda d: d["steps"]["need"]["keys"].update({"*": {"goto": "queue"}}),
     "step need: key '*' is the repeat key of every menu"),
    ("menu keys the same", lambda d: d["menu_keys"].update(repeat="0"), "menu_keys: repeat and speak_now cannot be the same key"),
    ("speak-now key not a key", lambda d: d["menu_keys"]["speak_now"].update(key="x"), "menu_keys: speak_now needs key"),
    ("loop", lambda d: (d["steps"]["about_service"].update(next="need"),
                        d["steps"]["need"].update(keys={"4": {"goto": "about_service"}}, no_input={"goto": "about_service"})),
     "step need: a loop with no way out"),
]


@pytest.mark.parametrize("label,change,expected", CASES, ids=[case[0] for case in CASES])
def test_a_bad_flow_names_the_file_the_step_and_the_problem(tmp_path, label, change, expected):
    problems = problems_of(break_flow(change), tmp_path)
    assert any(expected in line for line in problems), problems
    assert all(line.startswith(str(tmp_path / "flow.yaml")) for line in problems)


def test_a_duplicate_key_is_caught_not_silently_overwritten(tmp_path):
    text = FLOW.read_text().replace('"4": {goto: about_service}', '"1": {goto: about_service}')
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    with pytest.raises(FlowError) as caught:
        load_flow(path)
    assert "duplicate key '1'" in caught.value.problems[0] and str(path) in caught.value.problems[0]


def test_a_duplicate_step_is_caught(tmp_path):
    text = FLOW.read_text() + "\n  greeting:\n    type: say\n    say: again\n    next: need\n"
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    with pytest.raises(FlowError) as caught:
        load_flow(path)
    assert "duplicate key 'greeting'" in caught.value.problems[0]


def test_a_bad_flow_stops_the_service_starting(tmp_path, app_factory):
    data = break_flow(lambda d: d["steps"]["need"]["keys"]["1"].update(goto="nowhere"))
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(FlowError):
        app_factory(service={"flow": str(path)})
