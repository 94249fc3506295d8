"""The IVR flow as data: load `ivr_flows/*.yaml`, check it thoroughly, and hand back typed steps.

Each step's shape (its type, the keys it may and must have, keypad keys, needs, flags) is declared
as pydantic models, the same way as the configuration (config.py); what no one step can say (a step
that names an unknown step, one nobody can reach, a key a menu may not use, a placeholder the
service cannot fill, a loop a caller could never leave) is checked across the flow here. Any of it
stops start-up with one line naming the file, the step and the problem.
"""

from __future__ import annotations

import functools

import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, Union

import yaml
from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt, StrictStr,
                      TypeAdapter, ValidationError, model_validator)

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
    #: What a caller may say instead of pressing the key, at a menu that listens for speech.
    words: tuple[str, ...] = ()


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
    intro: str | None = None
    attempts: int = 3
    type_ahead: bool = True
    input: str = "dtmf"
    keys: Mapping[str, Action] = field(default_factory=dict)
    no_input: Action | None = None
    outcome: str | None = None
    forget_caller: bool = False
    keep_place: bool = False
    no_number: str | None = None
    announce: Mapping[str, str] = field(default_factory=dict)
    callback_key: str | None = None
    callback: str | None = None

    @property
    def speech(self) -> bool:
        """Whether this menu listens for words as well as keys."""
        return "speech" in self.input.split()

    def spoken(self) -> list[tuple[str, str]]:
        """Each word or phrase this menu's keys listen for, with its key."""
        return [(word, key) for key, action in self.keys.items() for word in action.words]

    def hints(self) -> list[str]:
        """Every word or phrase this menu's keys listen for, to help the speech recogniser."""
        return [word for word, _key in self.spoken()]

    def key_for(self, speech: str) -> str | None:
        """The key whose words the caller said, or None (see `best_key`)."""
        return best_key(self.spoken(), speech)

    def targets(self) -> list[str]:
        """Every step this one can lead to."""
        found = [self.next, self.open, self.closed, self.no_number, self.callback]
        found += [action.goto for action in self.keys.values()]
        if self.no_input:
            found.append(self.no_input.goto)
        return [target for target in found if target]


def best_key(words: list[tuple[str, str]], speech: str) -> str | None:
    """The key of the (word, key) pairs whose word the caller said, or None: the longest phrase
    heard wins, so "someone else" is not taken for a key listening for "someone"."""
    said = _spoken(speech)
    best: tuple[int, str] | None = None
    for word, key in words:
        phrase = _spoken(word)
        if phrase in said and (best is None or len(phrase) > best[0]):
            best = (len(phrase), key)
    return best[1] if best else None


def _spoken(text: str) -> str:
    """Words as compared: lower case, punctuation as spaces ("That's me." and "that s me" match),
    padded with spaces so that a phrase matches whole words only."""
    return " " + " ".join("".join(c if c.isalnum() else " " for c in text.lower()).split()) + " "


@dataclass(frozen=True)
class SpeakNow:
    """The key that reaches a person from any menu: the caller joins the line, flagged (`unconfirmed`
    maps an answer the menus ask for to the flag set when it has not been given) and with `need`."""

    key: str
    need: str | None = None
    unconfirmed: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MenuKeys:
    """Keys that mean the same at every menu: `repeat` hears it again; `back` goes back to the menu
    before; `speak_now` reaches a person (at menus from which the line can be reached). No menu may
    use them for anything else."""

    repeat: str | None = None
    speak_now: SpeakNow | None = None
    back: str | None = None
    #: What a caller may say instead of each of these keys (by meaning), at menus that listen for speech.
    words: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def spoken(self) -> list[tuple[str, str]]:
        """(word, key) for every word that stands for one of these keys."""
        return [(word, key) for key, meaning in self.reserved().items() for word in self.words.get(meaning, ())]

    def reserved(self) -> dict[str, str]:
        """The keys taken, by what they do."""
        taken = {}
        if self.repeat:
            taken[self.repeat] = "repeat"
        if self.back:
            taken[self.back] = "back"
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

    def key_for(self, step: Step, speech: str) -> str | None:
        """The key the caller's words stand for at menu `step`: one of its keys' words, or the words
        of a key that means the same at every menu ("go back"); None when nothing matched."""
        return best_key(step.spoken() + self.menu_keys.spoken(), speech)

    def hints(self, step: Step) -> list[str]:
        """Every word or phrase menu `step` listens for, to help the speech recogniser."""
        return step.hints() + [word for word, _key in self.menu_keys.spoken()]

    def keys_ahead(self, name: str) -> int:
        """How many keys menu `name` takes at once: its own, and one for each menu after it that a
        caller who knows the flow can answer before hearing it (menus reached by a key, through
        `hours` steps, that take `type_ahead`). Twilio's Gather hears keys only while it listens, so
        a caller typing ahead must press them all into this menu's Gather (numDigits); the
        interpreter then answers the menus one key at a time."""
        return self._keys_ahead.get(name, 0)

    @functools.cached_property
    def _keys_ahead(self) -> dict[str, int]:
        """`keys_ahead` of every step, worked out once: the flow never changes once loaded, and every
        menu the IVR speaks asks for it."""
        return {name: self._depth(name, frozenset()) for name in self.steps}

    def _depth(self, name: str, seen: frozenset[str]) -> int:
        step = self.steps.get(name)
        if step is None or name in seen:
            return 0
        if step.type == "hours":
            return max(self._depth(step.open or "", seen | {name}), self._depth(step.closed or "", seen | {name}))
        if step.type != "menu" or (seen and not step.type_ahead):
            return 0
        return 1 + max((self._depth(action.goto, seen | {name}) for action in step.keys.values()), default=0)


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
    try:
        _FlowFile.model_validate(data)
    except ValidationError as exc:
        unknown_top = sorted(str(error["loc"][0]) for error in exc.errors() if error["type"] == "extra_forbidden")
        problems += [f"{where}: unknown top-level key {key!r}" for key in unknown_top]
    try:
        texts = dict(_TEXTS.validate_python(data.get("texts")) or {})
    except ValidationError:
        problems.append(f"{where}: texts: must map names to text")
        texts = {}
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, dict) or not raw_steps:
        raise FlowError(problems + [f"{where}: steps: the flow has no steps"])
    known_names = set(PLACEHOLDERS) | set(texts)
    for name, value in texts.items():
        if name in PLACEHOLDERS:
            problems.append(f"{where}: texts.{name}: {{{name}}} is the service's own placeholder; give the text another name")
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
        if step.speech:
            own = {" ".join(word.lower().split()) for word in step.hints()}
            shared = sorted(word for word, _key in menu_keys.spoken() if " ".join(word.lower().split()) in own)
            if shared:
                problems.append(f"{where}: step {step.name}: the words {', '.join(map(repr, shared))} are given for a "
                                "key of this menu and for a key of every menu (menu_keys.words)")
    for step in steps.values():
        for text_field in ("say", "prompt", "retry", "intro"):
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


# -- the flow file's shape, as pydantic models --------------------------------------------------------
#
# The models say what a flow file may hold; `_problem` turns the first of pydantic's errors for a part
# into the one line the flow's author reads (pydantic's own wording names types, not flow steps).


def _as_text_key(value: Any) -> Any:
    """YAML reads the key 1 as a number: a keypad key (or a mapping's keys) is its text."""
    if isinstance(value, dict):
        return {str(key): item for key, item in value.items()}
    return value if value is None else str(value)


def _word(value: str) -> str:
    if not value.isidentifier():
        raise ValueError("not a word")
    return value


Keypad = Annotated[Literal[KEYS], BeforeValidator(_as_text_key)]  # type: ignore[valid-type]
Need = Literal[NEEDS]  # type: ignore[valid-type]
Word = Annotated[StrictStr, AfterValidator(_word)]
#: Text a step cannot do without: present, and not empty.
Prompt = Annotated[StrictStr, Field(min_length=1)]
TextMap = Annotated[dict[str, StrictStr], BeforeValidator(_as_text_key)]


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Action(_Part):
    goto: StrictStr
    need: Need | None = None
    flag: Word | None = None
    answer: TextMap | None = None
    words: Annotated[list[Annotated[StrictStr, Field(min_length=1)]], Field(min_length=1)] | None = None


class _Say(_Part):
    type: Literal["say"]
    say: Prompt
    next: Prompt


class _Hours(_Part):
    type: Literal["hours"]
    open: Prompt
    closed: Prompt


class _Menu(_Part):
    type: Literal["menu"]
    prompt: Prompt
    retry: StrictStr = None  # type: ignore[assignment] - may be left out, but not given as null
    intro: StrictStr = None  # type: ignore[assignment] - may be left out, but not given as null
    attempts: Annotated[StrictInt, Field(ge=1, le=5)] = 3
    type_ahead: StrictBool = True
    input: Literal["dtmf", "dtmf speech"] = "dtmf"
    keys: Annotated[dict[Keypad, _Action], Field(min_length=1), BeforeValidator(_as_text_key)]
    no_input: _Action

    @model_validator(mode="after")
    def _words(self) -> "_Menu":
        heard = [word.lower() for action in self.keys.values() for word in action.words or []]
        if self.input == "dtmf" and heard:
            raise ValueError("keys have words but the menu does not listen for them (input: dtmf speech)")
        if self.input != "dtmf" and not heard:
            raise ValueError("the menu listens for speech (input: dtmf speech) but no key has words")
        twice = sorted({word for word in heard if heard.count(word) > 1})
        if twice:
            raise ValueError(f"the words {', '.join(map(repr, twice))} are given for more than one key")
        if self.no_input.words:
            raise ValueError("no_input cannot have words")
        return self


class _Hangup(_Part):
    type: Literal["hangup"]
    say: Prompt
    outcome: Prompt
    forget_caller: StrictBool = False


class _Callback(_Part):
    type: Literal["callback"]
    say: Prompt
    outcome: Prompt
    keep_place: StrictBool = False
    no_number: Prompt


class _Queue(_Part):
    type: Literal["queue"]
    say: Prompt
    announce: Annotated[TextMap, Field(min_length=1)]
    callback_key: Keypad | None = None
    callback: StrictStr = None  # type: ignore[assignment] - may be left out, but not given as null

    @model_validator(mode="after")
    def _callback_offer(self) -> "_Queue":
        if "position" not in self.announce:
            raise ValueError("announce must have a position prompt")
        if bool(self.callback_key) != bool(self.callback):
            raise ValueError("callback_key and callback go together")
        if self.callback_key is not None and "callback_offer" not in self.announce:
            raise ValueError("announce needs a callback_offer prompt when callback_key is set")
        return self


_STEP = TypeAdapter(Annotated[Union[_Say, _Hours, _Menu, _Hangup, _Callback, _Queue], Field(discriminator="type")])


class _SpeakNow(_Part):
    key: Keypad
    need: Need | None = None
    unconfirmed: Annotated[dict[str, Word], BeforeValidator(_as_text_key)] | None = None


class _MenuKeys(_Part):
    repeat: Keypad | None = None
    back: Keypad | None = None
    speak_now: _SpeakNow | None = None
    words: dict[Literal["repeat", "back", "speak_now"],
                Annotated[list[Annotated[StrictStr, Field(min_length=1)]], Field(min_length=1)]] | None = None

    @model_validator(mode="after")
    def _distinct(self) -> "_MenuKeys":
        named = [("repeat", self.repeat), ("back", self.back), ("speak_now", self.speak_now.key if self.speak_now else None)]
        given = [(meaning, key) for meaning, key in named if key is not None]
        for index, (meaning, key) in enumerate(given):
            for other, other_key in given[index + 1:]:
                if key == other_key:
                    raise ValueError(f"{meaning} and {other} cannot be the same key")
        for meaning in self.words or {}:
            if meaning not in dict(given):
                raise ValueError(f"words for {meaning}, which has no key")
        return self


class _FlowFile(BaseModel):
    """The file's top level; texts, steps and menu_keys are checked on their own, each problem on its own line."""

    model_config = ConfigDict(extra="forbid")
    flow: Any = None
    start: Any = None
    texts: Any = None
    steps: Any = None
    menu_keys: Any = None


_TEXTS = TypeAdapter(Union[TextMap, None])


#: The steps' texts, in the order their problems are reported.
_TEXT_FIELDS = ("say", "prompt", "retry", "intro", "next", "open", "closed", "outcome", "no_number", "callback")
#: Fields a step type requires, in the order a missing one is reported.
_REQUIRED = {
    "say": ("say", "next"),
    "hours": ("open", "closed"),
    "menu": ("prompt", "keys", "no_input"),
    "hangup": ("say", "outcome"),
    "callback": ("say", "outcome", "no_number"),
    "queue": ("say", "announce"),
}
_NEEDS_ARE = f"need must be one of {', '.join(NEEDS)}"


def _validator_message(error: Mapping[str, Any]) -> str:
    """What a model's own validator said (without pydantic's "Value error, " prefix)."""
    cause = (error.get("ctx") or {}).get("error")
    return str(cause) if cause is not None else str(error["msg"])


def _action_problem(label: str, loc: tuple[Any, ...], error: Mapping[str, Any]) -> tuple[int, str]:
    """(rank, line) for an error inside an action (`loc` relative to it)."""
    field_name = loc[0] if loc else None
    if not loc or error["type"] in ("model_type", "model_attributes_type") or field_name == "goto":
        return 0, f"{label}: an action needs goto: <step>"
    if error["type"] == "extra_forbidden":
        return 1, f"{label}: unknown key {field_name!r}"
    if field_name == "need":
        return 2, f"{label}: {_NEEDS_ARE}"
    if field_name == "answer":
        return 3, f"{label}: answer must map names to text"
    if field_name == "words":
        return 3.5, f"{label}: words must be a list of words or phrases"
    return 4, f"{label}: flag must be a word such as self_referral_unconfirmed"


def _step_problem(raw: Any, error: Mapping[str, Any]) -> tuple[int, str]:
    """(rank, line) for one of pydantic's errors about a step: the lowest rank is what today's author
    most needs to hear first (the type, then unknown keys, then what is missing, then each field)."""
    kind = raw.get("type") if isinstance(raw, dict) else None
    kind_error = error["type"] in ("union_tag_invalid", "union_tag_not_found")
    if not isinstance(raw, dict) or error["type"] == "model_attributes_type" and not error["loc"]:
        return 0, "must be a mapping"
    if kind_error or kind not in STEP_TYPES:
        return 1, f"type must be one of {', '.join(STEP_TYPES)} (got {kind!r})"
    loc = tuple(error["loc"][1:])  # past the step type pydantic chose by
    field_name = loc[0] if loc else None
    if not loc:
        return 90, _validator_message(error)  # a step type's own checks (menu words, queue prompts)
    if error["type"] == "extra_forbidden" and len(loc) == 1:
        return 2, f"unknown key {field_name!r} for a {kind} step"
    if field_name in _REQUIRED[kind] and (len(loc) == 1 and error["type"] == "missing" or raw.get(field_name) in (None, "", {})):
        label = "prompt" if field_name in ("say", "prompt") else field_name
        return 3 + _REQUIRED[kind].index(field_name) / 10, f"missing {label}"
    if field_name in _TEXT_FIELDS:
        return 4, f"{field_name} must be text"
    if field_name == "attempts":
        return 5, "attempts must be a whole number from 1 to 5"
    if field_name == "input":
        return 5.5, "input must be dtmf or dtmf speech"
    if field_name == "keys":
        if len(loc) == 1:
            return 6, "keys must map keypad keys to actions"
        key = loc[1]
        if len(loc) > 2 and loc[2] == "[key]":
            return 6, f"key {key!r} is not a keypad key"
        return 6.5, _action_problem(f"key {key}", loc[2:], error)[1]
    if field_name == "no_input":
        return 7, _action_problem("no_input", loc[1:], error)[1]
    if field_name == "announce":
        if len(loc) == 1 and error["type"] == "dict_type":
            return 8, "announce must have a position prompt"
        return 8, "announce prompts must be text"
    if field_name == "callback_key":
        return 9, "callback_key is not a keypad key"
    return 10, f"{field_name} must be true or false"


def _menu_keys_problem(error: Mapping[str, Any]) -> tuple[int, str]:
    """(rank, line) for one of pydantic's errors about `menu_keys`."""
    loc = tuple(error["loc"])
    if not loc:
        if error["type"] == "value_error":
            return 9, _validator_message(error)
        return 0, "must be a mapping with repeat, back and speak_now"
    if error["type"] == "extra_forbidden" and len(loc) == 1:
        return 1, f"unknown key {loc[0]!r}"
    if loc[0] in ("repeat", "back"):
        return 2, f"{loc[0]} is not a keypad key"
    if loc[0] == "words":
        return 2.5, "words must map repeat, back or speak_now to a list of words or phrases"
    if len(loc) == 1 or loc[1] == "key":
        return 3, "speak_now needs key: <a keypad key>"
    if error["type"] == "extra_forbidden":
        return 4, f"speak_now: unknown key {loc[1]!r}"
    if loc[1] == "need":
        return 5, f"speak_now: {_NEEDS_ARE}"
    return 6, "speak_now: unconfirmed must map answers to flags"


def _first(problems: list[tuple[float, str]]) -> str:
    return min(problems, key=lambda problem: problem[0])[1]


def _parse_menu_keys(raw: Any) -> MenuKeys:
    """The flow's `menu_keys`, or ValueError saying what is wrong."""
    if raw is None:
        return MenuKeys()
    try:
        keys = _MenuKeys.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(_first([_menu_keys_problem(error) for error in exc.errors()])) from None
    speak_now = None
    if keys.speak_now is not None:
        speak_now = SpeakNow(keys.speak_now.key, keys.speak_now.need, dict(keys.speak_now.unconfirmed or {}))
    words = {meaning: tuple(spoken) for meaning, spoken in (keys.words or {}).items()}
    return MenuKeys(keys.repeat, speak_now, keys.back, words)


def _action(action: _Action) -> Action:
    return Action(goto=action.goto, need=action.need, flag=action.flag, answer=dict(action.answer or {}),
                  words=tuple(action.words or ()))


def _parse_step(name: str, raw: Any) -> Step:
    """Turn one step's mapping into a Step, or raise ValueError saying (on one line) what is wrong with it."""
    try:
        step = _STEP.validate_python(raw)
    except ValidationError as exc:
        raise ValueError(_first([_step_problem(raw, error) for error in exc.errors()])) from None
    fields = {key: getattr(step, key) for key in step.model_fields_set if key not in ("type", "keys", "no_input", "announce")}
    if isinstance(step, _Menu):
        fields["keys"] = {key: _action(action) for key, action in step.keys.items()}
        fields["no_input"] = _action(step.no_input)
    if isinstance(step, _Queue):
        fields["announce"] = dict(step.announce)
    return Step(name=name, type=step.type, **fields)


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
