"""The IVR flow as data: load `ivr_flows/*.yaml`, check it thoroughly, and hand back typed steps.

A flow that names an unknown step, has a step nobody can reach, lacks a prompt, repeats a key, uses
an unknown placeholder, or has a loop a caller could never leave stops start-up with one line naming
the file, the step and the problem.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

STEP_TYPES = ("say", "hours", "menu", "hangup", "callback", "queue")
#: Steps at which a call leaves the IVR: a way out of any loop.
EXITS = ("hangup", "callback", "queue")
NEEDS = ("mental_health", "addiction", "return_to_work", "speak_now")
KEYS = tuple("0123456789*#")
#: Placeholders the service fills in, besides the flow's own `texts`.
PLACEHOLDERS = ("service_name", "opening_hours", "next_opening", "position", "wait", "callback_number")


class FlowError(Exception):
    """The flow file cannot be used; `problems` holds one `file: step: problem` line each."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Action:
    """What happens on a key (or on no valid key): record answers, a need or a flag, then go on."""

    goto: str
    need: str | None = None
    flag: str | None = None
    answer: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    """One step of the flow; which fields matter depends on `type` (see the flow file's header)."""

    name: str
    type: str
    say: str | None = None
    next: str | None = None
    open: str | None = None
    closed: str | None = None
    prompt: str | None = None
    retry: str | None = None
    attempts: int = 3
    keys: Mapping[str, Action] = field(default_factory=dict)
    no_input: Action | None = None
    outcome: str | None = None
    forget_caller: bool = False
    keep_place: bool = False
    no_number: str | None = None
    announce: Mapping[str, str] = field(default_factory=dict)
    callback_key: str | None = None
    callback: str | None = None

    def targets(self) -> list[str]:
        """Every step this one can lead to."""
        found = [self.next, self.open, self.closed, self.no_number, self.callback]
        found += [action.goto for action in self.keys.values()]
        if self.no_input:
            found.append(self.no_input.goto)
        return [target for target in found if target]


@dataclass(frozen=True)
class SpeakNow:
    """The key that reaches a person from any menu: the caller joins the line, flagged (`unconfirmed`
    maps an answer the menus ask for to the flag set when it has not been given) and with `need`."""

    key: str
    need: str | None = None
    unconfirmed: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MenuKeys:
    """Keys that mean the same at every menu: `repeat` hears it again; `speak_now` reaches a person
    (at menus from which the line can be reached). No menu may use them for anything else."""

    repeat: str | None = None
    speak_now: SpeakNow | None = None

    def reserved(self) -> dict[str, str]:
        """The keys taken, by what they do."""
        taken = {}
        if self.repeat:
            taken[self.repeat] = "repeat"
        if self.speak_now:
            taken[self.speak_now.key] = "speak_now"
        return taken


@dataclass(frozen=True)
class Flow:
    """A checked flow: its name, first step, shared texts, steps by name and the keys of every menu."""

    name: str
    start: str
    texts: Mapping[str, str]
    steps: Mapping[str, Step]
    path: Path
    menu_keys: MenuKeys = MenuKeys()

    def step(self, name: str) -> Step:
        """The step called `name`; KeyError if the flow has none (a stale or forged URL)."""
        return self.steps[name]


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses a mapping with the same key twice, instead of keeping the last."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            key = str(key) if isinstance(key, int) else key
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def load_flow(path: Path) -> Flow:
    """Read and check the flow at `path`; raises FlowError listing every problem found."""
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FlowError([f"{where}: cannot read the flow: {exc.strerror}"]) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise FlowError([f"{where}: {line}{problem}"]) from None
    return parse_flow(data, path)


def parse_flow(data: Any, path: Path) -> Flow:
    """Check already-parsed flow data; raises FlowError listing every problem found."""
    where = str(path)
    problems: list[str] = []
    if not isinstance(data, dict):
        raise FlowError([f"{where}: the flow must be a mapping with flow, start, texts and steps"])
    unknown_top = sorted(set(data) - {"flow", "start", "texts", "steps", "menu_keys"})
    problems += [f"{where}: unknown top-level key {key!r}" for key in unknown_top]
    texts = data.get("texts") or {}
    if not isinstance(texts, dict) or not all(isinstance(v, str) for v in texts.values()):
        problems.append(f"{where}: texts: must map names to text")
        texts = {}
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, dict) or not raw_steps:
        raise FlowError(problems + [f"{where}: steps: the flow has no steps"])
    known_names = set(PLACEHOLDERS) | set(texts)
    for name, value in texts.items():
        problems += _check_text(value, known_names - {name}, f"{where}: texts.{name}")

    try:
        menu_keys = _parse_menu_keys(data.get("menu_keys"))
    except ValueError as exc:
        problems.append(f"{where}: menu_keys: {exc}")
        menu_keys = MenuKeys()
    steps: dict[str, Step] = {}
    for name, raw in raw_steps.items():
        try:
            steps[name] = _parse_step(str(name), raw)
        except ValueError as exc:
            problems.append(f"{where}: step {name}: {exc}")
    for step in steps.values():
        for key, meaning in menu_keys.reserved().items():
            if key in step.keys:
                problems.append(f"{where}: step {step.name}: key {key!r} is the {meaning} key of every menu "
                                "(menu_keys); a menu may not use it for anything else")
    for step in steps.values():
        for text_field in ("say", "prompt", "retry"):
            value = getattr(step, text_field)
            if value is not None:
                problems += _check_text(value, known_names, f"{where}: step {step.name}: {text_field}")
        for key, value in step.announce.items():
            problems += _check_text(value, known_names, f"{where}: step {step.name}: announce.{key}")
        for target in step.targets():
            if target not in raw_steps:
                problems.append(f"{where}: step {step.name}: goes to unknown step {target!r}")

    start = data.get("start")
    if start not in raw_steps:
        problems.append(f"{where}: start: unknown step {start!r}")
    elif not problems:
        problems += _check_graph(steps, str(start), where)
    if problems:
        raise FlowError(problems)
    return Flow(str(data.get("flow") or path.stem), str(start), dict(texts), steps, path, menu_keys)


def _parse_menu_keys(raw: Any) -> MenuKeys:
    """The flow's `menu_keys`, or ValueError saying what is wrong."""
    if raw is None:
        return MenuKeys()
    if not isinstance(raw, dict):
        raise ValueError("must be a mapping with repeat and speak_now")
    unknown = sorted(set(raw) - {"repeat", "speak_now"})
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}")
    repeat = raw.get("repeat")
    if repeat is not None and str(repeat) not in KEYS:
        raise ValueError("repeat is not a keypad key")
    speak_now = None
    if raw.get("speak_now") is not None:
        spec = raw["speak_now"]
        if not isinstance(spec, dict) or str(spec.get("key")) not in KEYS:
            raise ValueError("speak_now needs key: <a keypad key>")
        unknown = sorted(set(spec) - {"key", "need", "unconfirmed"})
        if unknown:
            raise ValueError(f"speak_now: unknown key {unknown[0]!r}")
        if spec.get("need") is not None and spec["need"] not in NEEDS:
            raise ValueError(f"speak_now: need must be one of {', '.join(NEEDS)}")
        unconfirmed = spec.get("unconfirmed") or {}
        if not isinstance(unconfirmed, dict) or not all(
                isinstance(flag, str) and flag.isidentifier() for flag in unconfirmed.values()):
            raise ValueError("speak_now: unconfirmed must map answers to flags")
        speak_now = SpeakNow(str(spec["key"]), spec.get("need"), {str(k): v for k, v in unconfirmed.items()})
    if repeat is not None and speak_now is not None and str(repeat) == speak_now.key:
        raise ValueError("repeat and speak_now cannot be the same key")
    return MenuKeys(str(repeat) if repeat is not None else None, speak_now)


_ALLOWED = {
    "say": {"say", "next"},
    "hours": {"open", "closed"},
    "menu": {"prompt", "retry", "attempts", "keys", "no_input"},
    "hangup": {"say", "outcome", "forget_caller"},
    "callback": {"say", "outcome", "keep_place", "no_number"},
    "queue": {"say", "announce", "callback_key", "callback"},
}
_REQUIRED = {
    "say": ("say", "next"),
    "hours": ("open", "closed"),
    "menu": ("prompt", "keys", "no_input"),
    "hangup": ("say", "outcome"),
    "callback": ("say", "outcome", "no_number"),
    "queue": ("say", "announce"),
}


def _parse_step(name: str, raw: Any) -> Step:
    """Turn one step's mapping into a Step, or raise ValueError saying what is wrong with it."""
    if not isinstance(raw, dict):
        raise ValueError("must be a mapping")
    kind = raw.get("type")
    if kind not in STEP_TYPES:
        raise ValueError(f"type must be one of {', '.join(STEP_TYPES)} (got {kind!r})")
    unknown = sorted(set(raw) - _ALLOWED[kind] - {"type"})
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} for a {kind} step")
    for required in _REQUIRED[kind]:
        if raw.get(required) in (None, "", {}):
            label = "prompt" if required in ("say", "prompt") else required
            raise ValueError(f"missing {label}")
    fields: dict[str, Any] = {key: raw[key] for key in raw if key not in ("type", "keys", "no_input", "announce")}
    for text_key in ("say", "prompt", "retry", "next", "open", "closed", "outcome", "no_number", "callback"):
        if text_key in fields and not isinstance(fields[text_key], str):
            raise ValueError(f"{text_key} must be text")
    if kind == "menu":
        attempts = raw.get("attempts", 3)
        if not isinstance(attempts, int) or isinstance(attempts, bool) or not 1 <= attempts <= 5:
            raise ValueError("attempts must be a whole number from 1 to 5")
        keys = raw["keys"]
        if not isinstance(keys, dict):
            raise ValueError("keys must map keypad keys to actions")
        parsed_keys = {}
        for key, action in keys.items():
            key = str(key)
            if key not in KEYS:
                raise ValueError(f"key {key!r} is not a keypad key")
            parsed_keys[key] = _parse_action(action, f"key {key}")
        fields["keys"] = parsed_keys
        fields["no_input"] = _parse_action(raw["no_input"], "no_input")
    if kind == "queue":
        announce = raw["announce"]
        if not isinstance(announce, dict) or "position" not in announce:
            raise ValueError("announce must have a position prompt")
        if not all(isinstance(value, str) for value in announce.values()):
            raise ValueError("announce prompts must be text")
        fields["announce"] = dict(announce)
        if bool(raw.get("callback_key")) != bool(raw.get("callback")):
            raise ValueError("callback_key and callback go together")
        if raw.get("callback_key") is not None and str(raw["callback_key"]) not in KEYS:
            raise ValueError("callback_key is not a keypad key")
        if raw.get("callback_key") is not None:
            fields["callback_key"] = str(raw["callback_key"])
            if "callback_offer" not in announce:
                raise ValueError("announce needs a callback_offer prompt when callback_key is set")
    for flag_key in ("forget_caller", "keep_place"):
        if flag_key in fields and not isinstance(fields[flag_key], bool):
            raise ValueError(f"{flag_key} must be true or false")
    return Step(name=name, type=kind, **fields)


def _parse_action(raw: Any, label: str) -> Action:
    """Turn an action mapping into an Action, or raise ValueError."""
    if not isinstance(raw, dict) or not isinstance(raw.get("goto"), str):
        raise ValueError(f"{label}: an action needs goto: <step>")
    unknown = sorted(set(raw) - {"goto", "need", "flag", "answer"})
    if unknown:
        raise ValueError(f"{label}: unknown key {unknown[0]!r}")
    need = raw.get("need")
    if need is not None and need not in NEEDS:
        raise ValueError(f"{label}: need must be one of {', '.join(NEEDS)}")
    answer = raw.get("answer") or {}
    if not isinstance(answer, dict) or not all(isinstance(v, str) for v in answer.values()):
        raise ValueError(f"{label}: answer must map names to text")
    flag = raw.get("flag")
    if flag is not None and (not isinstance(flag, str) or not flag.isidentifier()):
        raise ValueError(f"{label}: flag must be a word such as self_referral_unconfirmed")
    return Action(goto=raw["goto"], need=need, flag=flag, answer={str(k): v for k, v in answer.items()})


def _check_text(text: str, known: set[str], label: str) -> list[str]:
    """Placeholders in `text` that the service cannot fill, as problem lines."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]
    except ValueError:
        return [f"{label}: unbalanced braces"]
    return [f"{label}: unknown placeholder {{{name}}}" for name in names if name not in known]


def _check_graph(steps: Mapping[str, Step], start: str, where: str) -> list[str]:
    """Unreachable steps, and steps from which a caller could never reach an exit."""
    problems = []
    reachable = {start}
    frontier = [start]
    while frontier:
        for target in steps[frontier.pop()].targets():
            if target not in reachable:
                reachable.add(target)
                frontier.append(target)
    problems += [f"{where}: step {name}: unreachable from {start}" for name in steps if name not in reachable]
    # Work backwards from the exits: a step that cannot reach one traps the caller in a loop.
    can_leave = {name for name, step in steps.items() if step.type in EXITS}
    changed = True
    while changed:
        changed = False
        for name, step in steps.items():
            if name not in can_leave and any(target in can_leave for target in step.targets()):
                can_leave.add(name)
                changed = True
    problems += [
        f"{where}: step {name}: a loop with no way out (no path to a hangup, callback or queue)"
        for name in steps
        if name in reachable and name not in can_leave
    ]
    return problems
