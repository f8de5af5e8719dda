"""Import an Alertmanager configuration, and optionally its silences, as a policy spec.

`import_alertmanager(config_yaml_text, silences=..., name=...)` returns a `traceflux.policy/v1` spec dict whose replay
of a set of alerts that are all active at one instant gives Alertmanager 0.25's own answer for them: the same
aggregation groups (receiver, group labels, member alerts), the same inhibited alerts and the same silenced alerts.
docs/alertmanager.md explains why, and what is refused.

What is imported: the route tree (`receiver`, `matchers` in Alertmanager's string syntax, the older `match` and
`match_re` maps, `group_by` with `...`, `continue`, nested `routes`), `inhibit_rules` (`source_matchers`,
`target_matchers`, `equal`, and the older `source_match`, `source_match_re`, `target_match`, `target_match_re`) and
silences in Alertmanager's own JSON (`GET /api/v2/silences`, or the body of `POST /api/v2/silences`). Notification
settings (`global`, `templates`, the integrations inside `receivers`, `group_wait`, `group_interval`,
`repeat_interval`) only shape when and how Alertmanager notifies, never which groups exist, so they are read for
validity and otherwise ignored. Time intervals (`mute_time_intervals`, `active_time_intervals` on a route) are
refused: they depend on the wall clock, and a replay has none.

Every problem raises `errors.Invalid` whose `field` is the YAML path of the offending value
(`route.routes[1].matchers[0]`) and whose message starts with it.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import yaml

from .errors import Invalid
from .formats import format_timestamp, parse_timestamp, short_repr
from .policy import POLICY_SCHEMA, load_policy

# --- matchers in Alertmanager's string syntax ------------------------------------------------------------------------

EQUAL, NOT_EQUAL, REGEX, NOT_REGEX = "=", "!=", "=~", "!~"
OPS = (EQUAL, NOT_EQUAL, REGEX, NOT_REGEX)

# pkg/labels/parse.go: '=~' is tried before '=' so that '~' never ends up in the value. Go's \s is [\t\n\f\r ].
_MATCHER = re.compile(
    r"[\t\n\f\r ]*([a-zA-Z_:][a-zA-Z0-9_:]*)[\t\n\f\r ]*(=~|=|!=|!~)[\t\n\f\r ]*(.*?)[\t\n\f\r ]*", re.DOTALL
)
# model.LabelName.IsValid: the names `match`, `match_re`, `group_by` and `equal` may use (matched with fullmatch).
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# Go's unicode.IsSpace, which strings.TrimSpace uses: not quite Python's str.isspace.
_GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"


@dataclass(frozen=True)
class Matcher:
    """One label matcher: `label op value`. A regex value is a Go (RE2) regex, anchored at both ends when matched."""

    label: str
    op: str
    value: str

    def as_json(self) -> dict[str, str]:
        return {"label": self.label, "op": self.op, "value": self.value}

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'{self.label}{self.op}"{escaped}"'


class MatcherSyntaxError(ValueError):
    """A matcher string that Alertmanager would refuse; the message is Alertmanager's own."""


def parse_matcher(text: str) -> Matcher:
    """One matcher, exactly as Alertmanager 0.25's `labels.ParseMatcher` reads it.

    `name op value` with op one of `=`, `!=`, `=~`, `!~`; white space around each token is dropped. The value may be
    in double quotes; inside it `\\"` is a quote, `\\n` a line feed and `\\\\` a backslash, and any other backslash is
    literal. An unescaped `"` anywhere but at both ends is an error, as is an opening quote with no closing one.
    """
    found = _MATCHER.fullmatch(text)
    if not found:
        raise MatcherSyntaxError(f"bad matcher format: {text}")
    label, op, raw = found.group(1), found.group(2), found.group(3)
    original = raw
    expect_trailing_quote = raw.startswith('"')
    if expect_trailing_quote:
        raw = raw[1:]
    value: list[str] = []
    escaped = False
    for index, char in enumerate(raw):
        if escaped:
            escaped = False
            if char == "n":
                value.append("\n")
            elif char in '"\\':
                value.append(char)
            else:  # a spurious escape: the backslash is literal
                value.append("\\" + char)
            continue
        if char == "\\":
            if index < len(raw) - 1:
                escaped = True
                continue
            value.append("\\")  # a backslash as the last character is literal
        elif char == '"':
            if not expect_trailing_quote or index < len(raw) - 1:
                raise MatcherSyntaxError(f"matcher value contains unescaped double quote: {original}")
            expect_trailing_quote = False
        else:
            value.append(char)
    if expect_trailing_quote:
        raise MatcherSyntaxError(f"matcher value contains unescaped double quote: {original}")
    return Matcher(label, op, "".join(value))


def parse_matchers(text: str) -> list[Matcher]:
    """A comma-separated list of matchers, optionally in braces, as Alertmanager 0.25's `labels.ParseMatchers`.

    Commas inside double quotes do not separate; a trailing comma is allowed; an empty string (or `{}`) is no matcher.
    """
    if text.startswith("{"):
        text = text[1:]
    if text.endswith("}"):
        text = text[:-1]
    tokens: list[str] = []
    token: list[str] = []
    inside_quotes = escaped = False
    for char in text:
        if char == ",":
            if not inside_quotes:
                tokens.append("".join(token))
                token = []
                continue
            # Go's `case ','` does nothing else inside quotes: a backslash before the comma still escapes what
            # follows it (`a="\,",a=` is one token, refused for its unescaped quote).
        elif char == '"':
            if not escaped:
                inside_quotes = not inside_quotes
            else:
                escaped = False
        elif char == "\\":
            escaped = not escaped
        else:
            escaped = False
        token.append(char)
    last = "".join(token).strip(_GO_SPACE)
    if last:
        tokens.append(last)
    return [parse_matcher(item) for item in tokens]


# --- Go regexes as the engine's regexes ------------------------------------------------------------------------------

# Go (RE2) and Python read most regexes alike. Where they differ, the importer either rewrites the regex into a Python
# one that matches the same strings, or refuses it, naming what differs: it never guesses.
_ESCAPES_PYTHON_ONLY = {"Z": "\\Z", "u": "\\u", "U": "\\U", "N": "\\N"}
_ESCAPES_GO_ONLY = {
    "p": "Unicode classes such as \\pL or \\p{Greek}",
    "P": "Unicode classes such as \\PL",
    "z": "\\z",
    "Q": "\\Q...\\E quoting",
    "E": "\\Q...\\E quoting",
    "C": "\\C",
}
_FLAGS = re.compile(r"\(\?([a-zA-Z]*)(?:-([a-zA-Z]*))?([:)])")
_POSIX_CLASS = re.compile(r"\[:\^?[a-z]+:\]")


# Go's Perl classes are ASCII-only; Python's are Unicode-aware. Each becomes an explicit ASCII class, which keeps
# Go's behaviour under (?i) too (Go folds K, the Kelvin sign, into \w; Python does the same for [0-9A-Za-z_]).
_CLASS_OUTSIDE = {
    "d": "[0-9]",
    "D": "[^0-9]",
    "w": "[0-9A-Za-z_]",
    "W": "[^0-9A-Za-z_]",
    "s": "[\\t\\n\\f\\r ]",
    "S": "[^\\t\\n\\f\\r ]",
    "b": "(?a:\\b)",
    "B": "(?:\\A\\Z|(?a:\\B))",  # Python's \B never matches in an empty string; Go's does
}
_CLASS_INSIDE = {"d": "0-9", "w": "0-9A-Za-z_", "s": "\\t\\n\\f\\r "}
# Go's POSIX classes (ASCII, as in RE2), written out for use inside [...]; a negated one ([:^alpha:]) is refused.
_POSIX_CLASSES = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "ascii": "\\x00-\\x7f",
    "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\v\\f\\r ",
    "upper": "A-Z",
    "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}


class _RegexProblem(ValueError):
    pass


def _translate(pattern: str) -> str:
    """`pattern` (Go) rewritten for Python's re; _RegexProblem saying what cannot be carried over."""
    out: list[str] = []
    index = 0
    in_class = False
    leading = _FLAGS.match(pattern)
    multiline = bool(leading and leading.group(3) == ")" and "m" in leading.group(1))
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            escape = pattern[index + 1 : index + 2]
            if escape in _ESCAPES_GO_ONLY:
                raise _RegexProblem(f"uses {_ESCAPES_GO_ONLY[escape]}, which Python's re does not have")
            if escape in _ESCAPES_PYTHON_ONLY:
                raise _RegexProblem(f"uses {_ESCAPES_PYTHON_ONLY[escape]}, which Go's regexp does not have")
            if escape == "x" and pattern[index + 2 : index + 3] == "{":
                raise _RegexProblem("uses \\x{...}, which Python's re does not have")
            if escape.isdigit():
                raise _RegexProblem("uses a back reference or octal escape (\\1, \\012): the dialects differ")
            if in_class and escape and escape in "DWS":
                raise _RegexProblem(f"uses \\{escape} inside [...]; write the class out instead")
            if in_class and escape in _CLASS_INSIDE:
                out.append(_CLASS_INSIDE[escape])
            elif not in_class and escape in _CLASS_OUTSIDE:
                out.append(_CLASS_OUTSIDE[escape])
            else:
                out.append(pattern[index : index + 2])
            index += 2
            continue
        if in_class:
            posix = _POSIX_CLASS.match(pattern, index) if pattern.startswith("[:", index) else None
            if posix:
                name = posix.group(0)[2:-2]
                if name not in _POSIX_CLASSES:
                    raise _RegexProblem(f"uses the POSIX class [:{name}:], which has no Python equivalent here")
                out.append(_POSIX_CLASSES[name])
                index = posix.end()
                continue
            if char == "]":
                in_class = False
            out.append(char)
            index += 1
            continue
        if char == "[":
            # A `]` right after `[` or `[^` is a literal member, in both dialects.
            opening = 2 if pattern.startswith("[^", index) else 1
            if pattern[index + opening : index + opening + 1] == "]":
                opening += 1
            out.append(pattern[index : index + opening])
            index += opening
            in_class = True
            continue
        if pattern.startswith("(?", index):
            flags = _FLAGS.match(pattern, index)
            if not flags:
                if not pattern.startswith("(?P<", index):
                    raise _RegexProblem("uses a lookaround, conditional or comment group, which Go's regexp lacks")
            else:
                letters = flags.group(1) + (flags.group(2) or "")
                if "U" in letters:
                    raise _RegexProblem("uses the ungreedy flag (?U), which Python's re does not have")
                if set(letters) - set("ims"):
                    raise _RegexProblem("uses a flag other than i, m and s")
                if flags.group(3) == ")" and index != 0:
                    raise _RegexProblem("sets flags such as (?i) after its start; write (?i:...) around the part")
                if "m" in letters and index != 0:
                    raise _RegexProblem("sets the m flag on a part only; set (?m) at the start or not at all")
        if pattern.startswith("{,", index):
            raise _RegexProblem("uses {,n}, which Python reads as a repetition and Go as literal text")
        if char == "$" and not multiline:
            out.append("\\Z")  # Go's $ is the end of the text; Python's also matches before a final line feed
            index += 1
            continue
        out.append(char)
        index += 1
    translated = "".join(out)
    leading = _FLAGS.match(translated)  # the same flags as the pattern's: nothing before them was rewritten
    if leading and leading.group(3) == ")":
        # Python takes global flags only at the very start, and the engine wraps the regex: make them a group.
        turn_off = f"-{leading.group(2)}" if leading.group(2) else ""
        translated = f"(?{leading.group(1)}{turn_off}:{translated[leading.end() :]})"
    return translated


def go_regex(pattern: str, *, where: str) -> str:
    """A Python regex matching exactly the strings Go's regexp matches with `pattern`, or Invalid naming `where`.

    Alertmanager anchors a regex at both ends (`^(?:pattern)$`), as the engine does. Go's `\\d`, `\\w`, `\\s` and
    `\\b` are ASCII-only: they become `[0-9]`, `[0-9A-Za-z_]`, `[\\t\\n\\f\\r ]` and `(?a:\\b)`. Go's `$` is the end of
    the text (Python's `$` also matches before a final line feed): it becomes `\\Z`, unless (?m) is on. Leading flags
    `(?i)` become a group `(?i:...)`. What the two dialects read differently, and cannot be rewritten, is refused.
    """
    try:
        translated = _translate(pattern)
    except _RegexProblem as exc:
        raise Invalid(f"{where}: regex {short_repr(pattern)} {exc}", field=where) from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "possible nested set": Go reads `[[` the same way
        try:
            re.compile(translated)
        except re.error as exc:
            raise Invalid(
                f"{where}: regex {short_repr(pattern)} cannot be carried over to Python's re: {exc}", field=where
            ) from exc
    return translated


def _matches_empty(op: str, value: str) -> bool:
    """Alertmanager's `matchesEmpty` for a silence matcher: only `=` and `=~` count (silence.go, validateSilence)."""
    if op == EQUAL:
        return value == ""
    if op == REGEX:
        return re.search(value, "") is not None
    return False


# --- YAML as Go's yaml.v2 reads it into Alertmanager's config structs ------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps every scalar as its text, as yaml.v2 does when the target field is a string.

    PyYAML's implicit types would read `pop: yes` as True, `pop: 010` as 8 and `pop: 1.50` as 1.5, where
    Alertmanager sees the strings "yes", "010" and "1.50". Nulls stay None; booleans are parsed where a bool is due.
    """


for _tag in ("bool", "int", "float", "timestamp"):
    _Loader.add_constructor(f"tag:yaml.org,2002:{_tag}", _Loader.construct_yaml_str)

# yaml.v2's resolve table: the words it reads as booleans.
_TRUE = {"y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"}
_FALSE = {"n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"}

_TOP_KEYS = {"global", "route", "inhibit_rules", "receivers", "templates", "mute_time_intervals", "time_intervals"}
_ROUTE_KEYS = {
    "receiver",
    "group_by",
    "continue",
    "matchers",
    "match",
    "match_re",
    "routes",
    "group_wait",
    "group_interval",
    "repeat_interval",
    "mute_time_intervals",
    "active_time_intervals",
}
_INHIBIT_KEYS = {
    "source_match",
    "source_match_re",
    "source_matchers",
    "target_match",
    "target_match_re",
    "target_matchers",
    "equal",
}
_SILENCE_KEYS = {"id", "matchers", "startsAt", "endsAt", "createdBy", "comment", "status", "updatedAt"}
_SILENCE_MATCHER_KEYS = {"name", "value", "isRegex", "isEqual"}
_DURATION = re.compile(r"(?:[0-9]+y)?(?:[0-9]+w)?(?:[0-9]+d)?(?:[0-9]+h)?(?:[0-9]+m)?(?:[0-9]+s)?(?:[0-9]+ms)?|0")


def _fail(where: str, message: str) -> Invalid:
    return Invalid(f"{where}: {message}", field=where)


def _mapping(value: Any, where: str, allowed: set[str]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _fail(where, f"must be a mapping, not {_kind(value)}")
    unknown = sorted(str(key) for key in value if key not in allowed)
    if unknown:
        raise _fail(
            unknown[0] if where == "$" else f"{where}.{unknown[0]}", "is not a field Alertmanager 0.25 knows here"
        )
    return dict(value)


def _sequence(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _fail(where, f"must be a list, not {_kind(value)}")
    return value


def _string(value: Any, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _fail(where, f"must be a string, not {_kind(value)}")
    return value


def _boolean(value: Any, where: str) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value in _TRUE | _FALSE:
        return value in _TRUE
    raise _fail(where, f"must be true or false, not {short_repr(value)}")


def _kind(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the string {short_repr(value)}"
    return f"{short_repr(value)}"


def _label_name(value: Any, where: str) -> str:
    name = _string(value, where)
    if not _LABEL_NAME.fullmatch(name):
        raise _fail(where, f"{short_repr(name)} is not a valid label name")
    return name


def _regex_matcher(label: str, op: str, value: str, where: str) -> Matcher:
    if op in (REGEX, NOT_REGEX):
        value = go_regex(value, where=where)
    return Matcher(label, op, value)


def _string_matchers(value: Any, where: str) -> list[Matcher]:
    """A `matchers:` list; each item is a string holding one or more matchers (config.Matchers)."""
    found: list[Matcher] = []
    for index, item in enumerate(_sequence(value, where)):
        item_where = f"{where}[{index}]"
        text = _string(item, item_where)
        try:
            parsed = parse_matchers(text)
        except MatcherSyntaxError as exc:
            raise _fail(item_where, str(exc)) from exc
        found.extend(_regex_matcher(m.label, m.op, m.value, item_where) for m in parsed)
    return found


def _map_matchers(value: Any, where: str, op: str) -> list[Matcher]:
    """The older `match` (op "=") and `match_re` (op "=~") maps of label name to value."""
    if value is None:
        return []
    if not isinstance(value, Mapping):
        raise _fail(where, f"must be a mapping of label name to value, not {_kind(value)}")
    found = []
    for key in sorted(value, key=str):
        item_where = f"{where}.{key}"
        label = _label_name(key, item_where)
        found.append(_regex_matcher(label, op, _string(value[key], item_where), item_where))
    return found


def _duration(value: Any, where: str, *, nonzero: bool = False) -> None:
    if value is None:
        return
    text = _string(value, where)
    if not text or not _DURATION.fullmatch(text):  # Prometheus's model.ParseDuration
        raise _fail(where, f"{short_repr(text)} is not a duration such as 30s, 5m or 4h")
    if nonzero and not re.search(r"[1-9]", text):
        raise _fail(where, "cannot be zero")


# --- the configuration -----------------------------------------------------------------------------------------------


@dataclass
class _Counts:
    routes: int = 0


def _route(raw: Any, where: str, *, receivers: set[str], root: bool, counts: _Counts) -> dict[str, Any]:
    fields = _mapping(raw, where, _ROUTE_KEYS)
    counts.routes += 1
    route: dict[str, Any] = {}
    receiver = _string(fields.get("receiver"), f"{where}.receiver")
    if receiver:
        if receiver not in receivers:
            raise _fail(f"{where}.receiver", f"undefined receiver {receiver!r} used in route")
        route["receiver"] = receiver
    elif root:
        raise _fail(where, "the root route must name a default receiver")
    matchers = [
        *_map_matchers(fields.get("match"), f"{where}.match", EQUAL),
        *_map_matchers(fields.get("match_re"), f"{where}.match_re", REGEX),
        *_string_matchers(fields.get("matchers"), f"{where}.matchers"),
    ]
    if root and matchers:
        raise _fail(where, "the root route must not have any matchers: it receives every alert")
    if matchers:
        route["matchers"] = [m.as_json() for m in matchers]
    group_by = _group_by(fields.get("group_by"), f"{where}.group_by")
    if group_by is not None:
        route["group_by"] = group_by
    elif root:
        route["group_by"] = []  # Alertmanager's root groups by nothing unless told: one group per receiver
    if _boolean(fields.get("continue"), f"{where}.continue"):
        if root:
            raise _fail(f"{where}.continue", "the root route cannot have continue")
        route["continue"] = True
    for key in ("mute_time_intervals", "active_time_intervals"):
        if _sequence(fields.get(key), f"{where}.{key}"):
            raise _fail(
                f"{where}.{key}",
                "time intervals are not supported: they mute notifications by the wall clock, and a replay "
                "has no wall clock; remove them before importing",
            )
    _duration(fields.get("group_wait"), f"{where}.group_wait")
    _duration(fields.get("group_interval"), f"{where}.group_interval", nonzero=True)
    _duration(fields.get("repeat_interval"), f"{where}.repeat_interval", nonzero=True)
    children = [
        _route(child, f"{where}.routes[{index}]", receivers=receivers, root=False, counts=counts)
        for index, child in enumerate(_sequence(fields.get("routes"), f"{where}.routes"))
    ]
    if children:
        route["routes"] = children
    return route


def _group_by(value: Any, where: str) -> list[str] | None:
    """The engine's group_by for a route, or None to inherit the parent's, as Alertmanager decides.

    Alertmanager ignores an empty `group_by: []`: the route inherits its parent's grouping, as when the key is absent.
    """
    names = _sequence(value, where)
    if not names:
        return None
    texts = [_string(name, f"{where}[{index}]") for index, name in enumerate(names)]
    if "..." in texts:
        if len(texts) > 1:
            raise _fail(where, "cannot have the wildcard `...` and other labels at the same time")
        return ["..."]
    for index, text in enumerate(texts):
        _label_name(text, f"{where}[{index}]")
    # Alertmanager keeps group_by as a set: a repeated name counts once.
    return sorted(set(texts))


def _inhibit_rule(raw: Any, where: str) -> dict[str, Any]:
    fields = _mapping(raw, where, _INHIBIT_KEYS)
    sides = {}
    for side in ("source", "target"):
        sides[side] = [
            m.as_json()
            for m in (
                *_map_matchers(fields.get(f"{side}_match"), f"{where}.{side}_match", EQUAL),
                *_map_matchers(fields.get(f"{side}_match_re"), f"{where}.{side}_match_re", REGEX),
                *_string_matchers(fields.get(f"{side}_matchers"), f"{where}.{side}_matchers"),
            )
        ]
    equal = [
        _label_name(name, f"{where}.equal[{index}]")
        for index, name in enumerate(_sequence(fields.get("equal"), f"{where}.equal"))
    ]
    rule: dict[str, Any] = {
        "name": where,
        "source_matchers": sides["source"],
        "target_matchers": sides["target"],
    }
    if equal:
        rule["equal"] = sorted(set(equal))
    return rule


def _receivers(value: Any, where: str) -> set[str]:
    names: set[str] = set()
    for index, raw in enumerate(_sequence(value, where)):
        item_where = f"{where}[{index}]"
        if not isinstance(raw, Mapping):
            raise _fail(item_where, f"must be a mapping, not {_kind(raw)}")
        name = _string(raw.get("name"), f"{item_where}.name")
        if not name:
            raise _fail(f"{item_where}.name", "a receiver needs a name")
        if name in names:
            raise _fail(f"{item_where}.name", f"receiver name {name!r} is not unique")
        names.add(name)
    return names


# --- silences in Alertmanager's JSON ---------------------------------------------------------------------------------


def _silence(raw: Any, where: str) -> dict[str, Any]:
    fields = _mapping(raw, where, _SILENCE_KEYS)
    matchers: list[Matcher] = []
    raw_matchers = _sequence(fields.get("matchers"), f"{where}.matchers")
    if not raw_matchers:
        raise _fail(f"{where}.matchers", "a silence needs at least one matcher")
    for index, item in enumerate(raw_matchers):
        item_where = f"{where}.matchers[{index}]"
        matcher = _mapping(item, item_where, _SILENCE_MATCHER_KEYS)
        label = _label_name(matcher.get("name"), f"{item_where}.name")
        value = _string(matcher.get("value"), f"{item_where}.value")
        if "isRegex" not in matcher:  # required by POST /api/v2/silences; isEqual is optional
            raise _fail(f"{item_where}.isRegex", "is required")
        is_regex = _json_boolean(matcher["isRegex"], f"{item_where}.isRegex")
        is_equal = _json_boolean(matcher.get("isEqual", True), f"{item_where}.isEqual")
        op = (REGEX if is_equal else NOT_REGEX) if is_regex else (EQUAL if is_equal else NOT_EQUAL)
        matchers.append(_regex_matcher(label, op, value, f"{item_where}.value"))
    if all(_matches_empty(m.op, m.value) for m in matchers):
        raise _fail(f"{where}.matchers", "at least one matcher must not match the empty string")
    starts_at = _silence_time(fields.get("startsAt"), f"{where}.startsAt")
    ends_at = _silence_time(fields.get("endsAt"), f"{where}.endsAt")
    if ends_at <= starts_at:
        raise _fail(f"{where}.endsAt", "a silence must end after it starts")
    silence_id = _string(fields.get("id"), f"{where}.id")
    comment = _string(fields.get("comment"), f"{where}.comment")
    created_by = _string(fields.get("createdBy"), f"{where}.createdBy")
    if created_by:
        comment = f"{comment} (by {created_by})" if comment else f"by {created_by}"
    silence: dict[str, Any] = {
        "name": silence_id or where,
        "matchers": [m.as_json() for m in matchers],
        "starts_at": format_timestamp(starts_at),
        "ends_at": format_timestamp(ends_at),
    }
    if comment:
        silence["comment"] = comment[:1000]
    return silence


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _json_boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(where, f"must be true or false, not {_kind(value)}")
    return value


def _silence_time(value: Any, where: str) -> datetime:
    if value is None:
        raise _fail(where, "is required")
    try:
        return parse_timestamp(value)
    except ValueError as exc:
        raise _fail(where, f"{short_repr(value)} is not an RFC 3339 timestamp") from exc


# --- the document's shape: depth, and what YAML aliases make of it -------------------------------------------------

MAX_DEPTH = 48  # nested mappings and lists; a route adds two levels, so routes may nest 20 deep and more
MAX_EXPANDED = 100_000  # values, once every alias is replaced by what it refers to


def _children(value: Any, where: str) -> list[tuple[Any, str]]:
    if isinstance(value, Mapping):
        return [(child, str(key) if where == "$" else f"{where}.{key}") for key, child in value.items()]
    return [(child, f"{where}[{index}]") for index, child in enumerate(value)]


def _check_shape(document: Any, where: str) -> None:
    """Refuse a document nested more than MAX_DEPTH deep, one where a YAML alias refers to a value containing it
    (PyYAML builds a cycle, yaml.v2 refuses it), and one whose aliases expand it past MAX_EXPANDED values (a
    "billion laughs": yaml.v2 refuses it as excessive aliasing). Iterative, and each shared value is walked once, so
    the check costs the size of the text, not of the expansion."""
    if not isinstance(document, Mapping | list):
        return
    done: dict[int, tuple[int, int]] = {}  # id of a mapping or list -> (values once expanded, levels below)
    open_ids = {id(document)}
    shared = False
    # Each frame: [value, where, children, next child, values so far, deepest child's levels]
    stack: list[list[Any]] = [[document, where, _children(document, where), 0, 1, 0]]
    while stack:
        frame = stack[-1]
        value, _, children, index = frame[0], frame[1], frame[2], frame[3]
        if index == len(children):
            stack.pop()
            open_ids.discard(id(value))
            done[id(value)] = (frame[4], frame[5] + 1)
            if stack:
                stack[-1][4] += frame[4]
                stack[-1][5] = max(stack[-1][5], frame[5] + 1)
                if shared and stack[-1][4] > MAX_EXPANDED:
                    raise _excessive_aliasing()
            continue
        frame[3] += 1
        child, child_where = children[index]
        if not isinstance(child, Mapping | list):
            frame[4] += 1
            continue
        if id(child) in open_ids:
            raise _fail(child_where, "a YAML alias here refers to a value that contains it, so it never ends")
        if id(child) in done:
            shared = True
            values, levels = done[id(child)]
            if len(stack) + levels > MAX_DEPTH:
                raise _fail(child_where, f"nested more than {MAX_DEPTH} levels deep (through a YAML alias)")
            frame[4] += values
            frame[5] = max(frame[5], levels)
            if frame[4] > MAX_EXPANDED:
                raise _excessive_aliasing()
            continue
        if len(stack) >= MAX_DEPTH:
            raise _fail(child_where, f"nested more than {MAX_DEPTH} levels deep")
        open_ids.add(id(child))
        stack.append([child, child_where, _children(child, child_where), 0, 1, 0])


def _excessive_aliasing() -> Invalid:
    return _fail(
        "$",
        f"YAML aliases expand the document to more than {MAX_EXPANDED:,} values; Alertmanager refuses such a "
        "document too (excessive aliasing)",
    )


# --- the policy ------------------------------------------------------------------------------------------------------


def import_alertmanager(
    config_yaml_text: str, *, silences: list[Any] | None = None, name: str = "Imported Alertmanager configuration"
) -> dict[str, Any]:
    """A traceflux.policy/v1 spec that groups, inhibits and silences alerts as Alertmanager 0.25 does.

    `config_yaml_text` is an alertmanager.yml; `silences` a list of silences in Alertmanager's JSON. Raises
    errors.Invalid naming the YAML path (or `silences[2].matchers[0]`) of the first problem.
    """
    try:
        document = yaml.load(config_yaml_text, Loader=_Loader)  # noqa: S506 - a SafeLoader that keeps scalars as text
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "the document"
        problem = getattr(exc, "problem", None) or str(exc)
        raise Invalid(f"{where}: not valid YAML: {problem}", field="$") from exc
    except RecursionError:
        raise Invalid(f"the document: nested more than {MAX_DEPTH} levels deep", field="$") from None
    _check_shape(document, "$")
    if silences is not None:
        _check_shape(silences, "silences")
    if not isinstance(document, Mapping):
        raise Invalid("the document must be a YAML mapping with at least `route` and `receivers`", field="$")
    config = _mapping(document, "$", _TOP_KEYS)
    receivers = _receivers(config.get("receivers"), "receivers")
    if config.get("route") is None:
        raise _fail("route", "is required: Alertmanager needs a root route")
    counts = _Counts()
    route = _route(config["route"], "route", receivers=receivers, root=True, counts=counts)
    inhibit = [
        _inhibit_rule(rule, f"inhibit_rules[{index}]")
        for index, rule in enumerate(_sequence(config.get("inhibit_rules"), "inhibit_rules"))
    ]
    if silences is not None and not isinstance(silences, list):
        raise _fail("silences", f"must be a list of Alertmanager silences, not {_kind(silences)}")
    imported_silences = [_silence(raw, f"silences[{index}]") for index, raw in enumerate(silences or [])]
    suppression: dict[str, Any] = {}
    if imported_silences:
        suppression["silences"] = imported_silences
    if inhibit:
        suppression["inhibit"] = inhibit
    spec: dict[str, Any] = {
        "schema": POLICY_SCHEMA,
        "name": name,
        "description": (
            f"Imported from an Alertmanager configuration: {_count(counts.routes, 'route')}, "
            f"{_count(len(inhibit), 'inhibit rule')}, {_count(len(imported_silences), 'silence')}. "
            "Groups, inhibits and silences as Alertmanager 0.25 does (docs/alertmanager.md)."
        ),
        **_ALERTMANAGER_SEMANTICS,
        "correlation": {**_ALERTMANAGER_CORRELATION, "routes": route},
    }
    if suppression:
        spec["suppression"] = suppression
    try:
        load_policy(spec)
    except Invalid as exc:  # a limit of the policy format (a value over 1,024 characters, over 64 matchers...)
        raise Invalid(f"the imported policy would not be valid: {exc.detail}", field=exc.field) from exc
    return spec


# An alert's identity is its whole label set (name, source and severity are labels to Alertmanager too): copies of one
# label set at one instant are one alert, as posting the same alert twice is to Alertmanager. Every group becomes an
# incident, whatever its size or severity. A group splits into episodes only at a gap of over five minutes:
# Alertmanager's default resolve_timeout, after which an alert that is not sent again has resolved.
_ALERTMANAGER_SEMANTICS: dict[str, Any] = {
    "fingerprint": {"default": ["name", "source", "severity", "labels"]},
    "dedup": {"window_s": 0},
    "incidents": {"min_signals": 1},
}
_ALERTMANAGER_CORRELATION: dict[str, Any] = {"window_s": 300}
