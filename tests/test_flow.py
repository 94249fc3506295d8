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
    ("a text named as the service's own", lambda d: d["texts"].update(opening_hours="Always."),
     "texts.opening_hours: {opening_hours} is the service's own placeholder"),
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
    ("a menu shadowing the back key", lambda d: d["steps"]["need"]["keys"].update({"9": {"goto": "queue"}}),
     "step need: key '9' is the back key of every menu"),
    ("a confirmation shadowing the back key", lambda d: d["steps"]["third_party_check"]["keys"].update({"9": {"goto": "about_whom"}}),
     "step third_party_check: key '9' is the back key of every menu"),
    ("back the same as repeat", lambda d: d["menu_keys"].update(back="*"), "menu_keys: repeat and back cannot be the same key"),
    ("back the same as speak_now", lambda d: d["menu_keys"].update(back="0"), "menu_keys: back and speak_now cannot be the same key"),
    ("words at a menu that hears only keys", lambda d: d["steps"]["eligibility"].update(input="dtmf"),
     "step eligibility: keys have words but the menu does not listen for them (input: dtmf speech)"),
    ("a speech menu without words", lambda d: [action.pop("words") for action in d["steps"]["need"]["keys"].values()],
     "step need: the menu listens for speech (input: dtmf speech) but no key has words"),
    ("the same words for two keys", lambda d: d["steps"]["about_whom"]["keys"]["2"]["words"].append("Myself"),
     "step about_whom: the words 'myself' are given for more than one key"),
    ("a menu's words shadowing the words of every menu", lambda d: d["steps"]["need"]["keys"]["1"]["words"].append("Go back"),
     "step need: the words 'go back' are given for a key of this menu and for a key of every menu (menu_keys.words)"),
    ("words for a key not given", lambda d: d["menu_keys"].pop("back"), "menu_keys: words for back, which has no key"),
    ("menu words not a list", lambda d: d["menu_keys"]["words"].update(back="go back"),
     "menu_keys: words must map repeat, back or speak_now to a list of words or phrases"),
    ("speak-now key not a key", lambda d: d["menu_keys"]["speak_now"].update(key="x"), "menu_keys: speak_now needs key"),
    ("loop", lambda d: (d["steps"]["about_service"].update(next="need"),
                        d["steps"]["need"].update(keys={"4": {"goto": "about_service"}}, no_input={"goto": "about_service"},
                                                  input="dtmf")),
     "step need: a loop with no way out"),
]


@pytest.mark.parametrize("label,change,expected", CASES, ids=[case[0] for case in CASES])
def test_a_bad_flow_names_the_file_the_step_and_the_problem(tmp_path, label, change, expected):
    problems = problems_of(break_flow(change), tmp_path)
    assert any(expected in line for line in problems), problems
    assert all(line.startswith(str(tmp_path / "flow.yaml")) for line in problems)


def test_a_duplicate_key_is_caught_not_silently_overwritten(tmp_path):
    text = FLOW.read_text().replace('"4": {goto: about_service,', '"1": {goto: about_service,')
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


#: Every other check, each with the line it gives (the flow's shape is pydantic models; these lines are
#: what the author reads instead of pydantic's wording).
MORE_CASES = [
    ("step not a mapping", lambda d: d["steps"].update(orphan="hangup"), "step orphan: must be a mapping"),
    ("no type", lambda d: d["steps"]["greeting"].pop("type"), "step greeting: type must be one of say, hours, menu, hangup, callback, queue (got None)"),
    ("unknown step key", lambda d: d["steps"]["need"].update(colour="red"), "step need: unknown key 'colour' for a menu step"),
    ("text not text", lambda d: d["steps"]["about_service"].update(next=3), "step about_service: next must be text"),
    ("attempts", lambda d: d["steps"]["need"].update(attempts=9), "step need: attempts must be a whole number from 1 to 5"),
    ("attempts not a number", lambda d: d["steps"]["need"].update(attempts="3"), "step need: attempts must be a whole number from 1 to 5"),
    ("keys not a mapping", lambda d: d["steps"]["need"].update(keys=["1"]), "step need: keys must map keypad keys to actions"),
    ("no keys", lambda d: d["steps"]["need"].update(keys={}), "step need: missing keys"),
    ("action without goto", lambda d: d["steps"]["need"]["keys"].update({"5": {"need": "addiction"}}), "step need: key 5: an action needs goto: <step>"),
    ("action not a mapping", lambda d: d["steps"]["need"]["keys"].update({"5": "queue"}), "step need: key 5: an action needs goto: <step>"),
    ("unknown action key", lambda d: d["steps"]["need"]["keys"]["1"].update(colour="red"), "step need: key 1: unknown key 'colour'"),
    ("answer not text", lambda d: d["steps"]["need"]["keys"]["1"].update(answer={"need": 1}), "step need: key 1: answer must map names to text"),
    ("flag not a word", lambda d: d["steps"]["need"]["keys"]["1"].update(flag="not a word"), "step need: key 1: flag must be a word such as"),
    ("no_input's need", lambda d: d["steps"]["need"]["no_input"].update(need="sadness"), "step need: no_input: need must be one of"),
    ("no position prompt", lambda d: d["steps"]["queue"]["announce"].pop("position"), "step queue: announce must have a position prompt"),
    ("announce not text", lambda d: d["steps"]["queue"]["announce"].update(position=5), "step queue: announce prompts must be text"),
    ("callback without key", lambda d: d["steps"]["queue"].pop("callback_key"), "step queue: callback_key and callback go together"),
    ("callback key not a key", lambda d: d["steps"]["queue"].update(callback_key="x"), "step queue: callback_key is not a keypad key"),
    ("no callback offer", lambda d: d["steps"]["queue"]["announce"].pop("callback_offer"),
     "step queue: announce needs a callback_offer prompt when callback_key is set"),
    ("flag not true or false", lambda d: d["steps"]["closed_no_number"].update(forget_caller="yes"), "step closed_no_number: forget_caller must be true or false"),
    ("menu_keys not a mapping", lambda d: d.update(menu_keys="*"), "menu_keys: must be a mapping with repeat, back and speak_now"),
    ("unknown menu_keys key", lambda d: d["menu_keys"].update(forward="#"), "menu_keys: unknown key 'forward'"),
    ("back not a key", lambda d: d["menu_keys"].update(back="b"), "menu_keys: back is not a keypad key"),
    ("input not known", lambda d: d["steps"]["need"].update(input="voice"), "step need: input must be dtmf or dtmf speech"),
    ("words not a list", lambda d: d["steps"]["need"]["keys"]["1"].update(words="stress"),
     "step need: key 1: words must be a list of words or phrases"),
    ("type_ahead not true or false", lambda d: d["steps"]["need"].update(type_ahead="no"), "step need: type_ahead must be true or false"),
    ("repeat not a key", lambda d: d["menu_keys"].update(repeat="x"), "menu_keys: repeat is not a keypad key"),
    ("unknown speak_now key", lambda d: d["menu_keys"]["speak_now"].update(colour="red"), "menu_keys: speak_now: unknown key 'colour'"),
    ("speak_now's need", lambda d: d["menu_keys"]["speak_now"].update(need="sadness"), "menu_keys: speak_now: need must be one of"),
    ("unconfirmed not flags", lambda d: d["menu_keys"]["speak_now"].update(unconfirmed={"eligible": "not a flag"}),
     "menu_keys: speak_now: unconfirmed must map answers to flags"),
    ("texts not text", lambda d: d.update(texts={"emergency": 5}), "texts: must map names to text"),
    ("unknown top-level key", lambda d: d.update(colour="red"), "unknown top-level key 'colour'"),
]


@pytest.mark.parametrize("label,change,expected", MORE_CASES, ids=[case[0] for case in MORE_CASES])
def test_every_check_says_what_is_wrong_on_one_line(tmp_path, label, change, expected):
    problems = problems_of(break_flow(change), tmp_path)
    assert any(expected in line for line in problems), problems
    assert all("\n" not in line and line.startswith(str(tmp_path / "flow.yaml")) for line in problems)


def test_keypad_keys_written_as_numbers_are_keys(tmp_path):
    data = shipped()
    data["steps"]["need"]["keys"] = {int(key) if key.isdigit() else key: action for key, action in data["steps"]["need"]["keys"].items()}
    data["steps"]["queue"]["callback_key"] = 2
    path = tmp_path / "numbers.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    flow = load_flow(path)
    assert set(flow.step("need").keys) == set(load_flow(FLOW).step("need").keys)
    assert flow.step("queue").callback_key == "2"
    assert flow.menu_keys.speak_now is not None and flow.menu_keys.speak_now.key == "0" and flow.menu_keys.repeat == "*"


def test_keys_ahead_count_the_menus_a_caller_can_answer_before_hearing_them():
    flow = load_flow(FLOW)
    # About whom, eligibility, need: a caller who knows the menus presses 1, 1, 1 at the first.
    assert [flow.keys_ahead(name) for name in ("about_whom", "eligibility", "need")] == [3, 2, 1]
    # A confirmation before the call ends is heard first: keys typed ahead do not reach it.
    assert flow.keys_ahead("third_party_check") == 1 and not flow.step("third_party_check").type_ahead


def test_spoken_words_stand_for_keys_the_longest_phrase_winning():
    about = load_flow(FLOW).step("about_whom")
    assert about.key_for("It's about MY OWN HEALTH, please") == "1"
    assert about.key_for("someone else") == "2"
    assert about.key_for("a colleague of mine, not me") == "2"  # "a colleague" is longer than "me"
    assert about.key_for("hello") is None
    assert load_flow(FLOW).step("eligibility").key_for("Yes, that's me.") == "1"
    assert load_flow(FLOW).step("eligibility").key_for("I'm not, sorry") == "2"
