"""Correlation policies (traceflux.policy/v1): check one and compile its matchers, templates, rules and routes.

schemas/policy.schema.json is the contract and docs/policy.md documents every field and default. `load_policy` runs
jsonschema once per policy, then the checks a schema cannot express, and compiles everything the stages call per
signal (matchers, fingerprint keys, templates, routes) so no regex is compiled and no schema is consulted per signal.
"""

from __future__ import annotations

import copy
import re
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from jsonschema.exceptions import best_match

from .canonical import CanonicalJSONError, spec_hash
from .errors import Invalid
from .formats import _describe, json_type, parse_timestamp, validator
from .signals import Signal

POLICY_SCHEMA = "traceflux.policy/v1"
DEFAULT_SEVERITY_ORDER = ("debug", "info", "warning", "minor", "error", "major", "critical")
DEFAULT_WINDOW_S = 300.0
DEFAULT_GROUP_BY = ("service", "region", "pop")
DEFAULT_FINGERPRINT = ("source", "name", "labels")
DEFAULT_TITLE = "{name}"
DEFAULT_RECEIVER = "default"
DEFAULT_TARGET_LABELS = {"pops": "pop", "regions": "region", "services": "service"}
ALL_LABELS = "..."
MATCH_OPS = ("=", "!=", "=~", "!~")

SignalTest = Callable[[Signal], bool]
LabelsTest = Callable[[Mapping[str, str]], bool]


# --- the labels a matcher sees ------------------------------------------------------------------------------------


def exposed_labels(signal: Signal) -> dict[str, str]:
    """The label set matchers, group_by and templates see: the signal's labels, then `alertname` (its name) and
    `source`, and `severity` when the signal has one. The three fields win over labels of the same name."""
    labels = dict(signal.labels)
    labels["alertname"] = signal.name
    labels["source"] = signal.source
    if signal.severity is not None:
        labels["severity"] = signal.severity
    return labels


def label_getter(label: str) -> Callable[[Signal], str]:
    """A fast reader of one exposed label; a missing label reads as "" (Alertmanager's rule)."""
    if label == "alertname":
        return lambda s: s.name
    if label == "source":
        return lambda s: s.source
    if label == "severity":
        return lambda s: s.severity if s.severity is not None else s.labels.get("severity", "")
    return lambda s: s.labels.get(label, "")


# --- matchers -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Matcher:
    """{"label", "op", "value"}; `=~` and `!~` are fully anchored like Alertmanager's ^(?:value)$, and `.` does not
    match a line feed (Go's default too)."""

    label: str
    op: str
    value: str

    def as_dict(self) -> dict[str, str]:
        return {"label": self.label, "op": self.op, "value": self.value}


def _value_test(matcher: Matcher) -> Callable[[str], bool]:
    value = matcher.value
    if matcher.op == "=":
        return value.__eq__
    if matcher.op == "!=":
        return value.__ne__
    # fullmatch is Go's ^(?:value)$: Python's $ would also match before a final line feed, Go's does not.
    pattern = re.compile(f"(?:{value})").fullmatch
    if matcher.op == "=~":
        return lambda text: pattern(text) is not None
    return lambda text: pattern(text) is None


def compile_signal_test(matchers: Sequence[Matcher]) -> SignalTest:
    """One callable testing every matcher against a signal's exposed labels (all must match; none: always true)."""
    tests = []
    for matcher in matchers:
        get = label_getter(matcher.label)
        check = _value_test(matcher)
        if matcher.op == "=" and matcher.label not in ("alertname", "source", "severity"):
            # The common case, folded into one lambda: this runs once per signal per rule.
            label, value = matcher.label, matcher.value
            tests.append(lambda s, label=label, value=value: s.labels.get(label, "") == value)
        else:
            tests.append(lambda s, get=get, check=check: check(get(s)))
    if not tests:
        return lambda s: True
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        first, second = tests
        return lambda s: first(s) and second(s)
    return lambda s: all(test(s) for test in tests)


def compile_labels_test(matchers: Sequence[Matcher]) -> LabelsTest:
    """The same test against a plain mapping of exposed labels (an incident's common labels)."""
    tests = [(matcher.label, _value_test(matcher)) for matcher in matchers]
    return lambda labels: all(check(labels.get(label, "")) for label, check in tests)


# --- templates ----------------------------------------------------------------------------------------------------

_FORMATTER = string.Formatter()


@dataclass(frozen=True)
class Template:
    """A `{name}`/`{labels.pop}` template split once into literal text and placeholder names."""

    text: str
    parts: tuple[tuple[str, str | None], ...]  # (literal, placeholder or None)

    def render(self, lookup: Callable[[str], Any]) -> str:
        out = []
        for literal, placeholder in self.parts:
            out.append(literal)
            if placeholder is not None:
                value = lookup(placeholder)
                out.append("" if value is None else str(value))
        return "".join(out)


def parse_template(text: str, allowed: Sequence[str], path: str) -> Template:
    """Split a template; a placeholder must be one of `allowed` or `labels.<key>`. `{{` and `}}` are literal."""
    try:
        pieces = list(_FORMATTER.parse(text))
    except ValueError as exc:
        raise _invalid(path, f"is not a valid template: {exc}") from None
    parts = []
    for literal, name, spec, conversion in pieces:
        if name is not None:
            if spec or conversion:
                raise _invalid(path, f"{{{name}}}: format specs and conversions are not supported")
            if name not in allowed and not (name.startswith("labels.") and len(name) > len("labels.")):
                choices = ", ".join(f"{{{a}}}" for a in allowed)
                raise _invalid(path, f"unknown placeholder {{{name}}} (use {choices} or {{labels.<key>}})")
        parts.append((literal, name))
    return Template(text, tuple(parts))


# --- the compiled policy ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceMapping:
    """One normalize mapping (a source's own, or the global one)."""

    rename_labels: dict[str, str] = field(default_factory=dict)
    drop_labels: tuple[str, ...] = ()
    set_labels: dict[str, str] = field(default_factory=dict)
    rename_names: dict[str, str] = field(default_factory=dict)
    severity_map: dict[str, str] = field(default_factory=dict)
    default_severity: str | None = None

    @property
    def empty(self) -> bool:
        return not (
            self.rename_labels
            or self.drop_labels
            or self.set_labels
            or self.rename_names
            or self.severity_map
            or self.default_severity
        )


@dataclass(frozen=True)
class FingerprintRule:
    name: str
    matchers: tuple[Matcher, ...]
    fields: tuple[str, ...] | None
    template: Template | None
    test: SignalTest = field(compare=False, repr=False)


@dataclass(frozen=True)
class Silence:
    name: str
    matchers: tuple[Matcher, ...]
    starts_at: datetime | None
    ends_at: datetime | None
    test: SignalTest = field(compare=False, repr=False)


@dataclass(frozen=True)
class Threshold:
    name: str
    matchers: tuple[Matcher, ...]
    below: float | None
    min_severity: str | None
    by: tuple[str, ...]
    baselines: dict[tuple[str, ...], float]
    test: SignalTest = field(compare=False, repr=False)


@dataclass(frozen=True)
class InhibitRule:
    name: str
    source_matchers: tuple[Matcher, ...]
    target_matchers: tuple[Matcher, ...]
    equal: tuple[str, ...]
    window_s: float
    source_test: SignalTest = field(compare=False, repr=False)
    target_test: SignalTest = field(compare=False, repr=False)


@dataclass(frozen=True)
class Join:
    name: str
    sources: tuple[str, ...]
    on: tuple[str, ...]
    within_s: float


@dataclass(frozen=True)
class Route:
    """A node of the Alertmanager-style route tree. `path` is "root", then ".<child index>" per level."""

    path: str
    receiver: str
    matchers: tuple[Matcher, ...]
    group_by: tuple[str, ...]  # ("...",) groups by every exposed label
    cont: bool
    routes: tuple[Route, ...]
    test: SignalTest = field(compare=False, repr=False)

    def match(self, signal: Signal) -> list[Route]:
        """The routes `signal` lands in under this one, depth first, as Alertmanager's Route.Match does: the first
        matching child wins unless it has continue; a signal no child takes stays here. [] when this one does not
        match."""
        if not self.test(signal):
            return []
        found: list[Route] = []
        for child in self.routes:
            matched = child.match(signal)
            found.extend(matched)
            if matched and not child.cont:
                break
        return found or [self]

    def walk(self) -> list[Route]:
        nodes = [self]
        for child in self.routes:
            nodes.extend(child.walk())
        return nodes


@dataclass(frozen=True)
class ActionRule:
    name: str
    capability: str
    when: tuple[Matcher, ...]
    on: str  # "common": the incident's common labels must match; "any": some member must match
    bounds: dict[str, int]
    signal_test: SignalTest = field(compare=False, repr=False)
    labels_test: LabelsTest = field(compare=False, repr=False)


@dataclass(frozen=True)
class Policy:
    """A checked, compiled policy. `spec` is a deep copy of the document as given; `spec_hash` its spec hash."""

    spec: dict[str, Any]
    spec_hash: str
    name: str = ""
    severity_order: tuple[str, ...] = DEFAULT_SEVERITY_ORDER
    normalize: SourceMapping = field(default_factory=SourceMapping)
    normalize_sources: dict[str, SourceMapping] = field(default_factory=dict)
    fingerprint_rules: tuple[FingerprintRule, ...] = ()
    fingerprint_default: tuple[str, ...] = DEFAULT_FINGERPRINT
    dedup_window_s: float = 0.0
    dedup_fields: tuple[str, ...] | None = None  # None: duplicates are signals with equal fingerprints
    silences: tuple[Silence, ...] = ()
    thresholds: tuple[Threshold, ...] = ()
    inhibit: tuple[InhibitRule, ...] = ()
    group_by: tuple[str, ...] = DEFAULT_GROUP_BY
    window_s: float = DEFAULT_WINDOW_S
    joins: tuple[Join, ...] = ()
    routes: Route | None = None  # None: no routing, one implicit route grouping by group_by
    min_signals: int = 1
    min_severity: str | None = None
    title: Template = field(default_factory=lambda: Template(DEFAULT_TITLE, (("", "name"),)))
    target_labels: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_TARGET_LABELS))
    actions: tuple[ActionRule, ...] = ()

    def severity_rank(self) -> dict[str, int]:
        return {name: rank for rank, name in enumerate(self.severity_order)}


# --- loading ------------------------------------------------------------------------------------------------------


def _field(path: str) -> str:
    return "policy" + path[1:]


def _invalid(path: str, message: str) -> Invalid:
    return Invalid(f"policy: {path}: {message}", field=_field(path))


def _alternatives(error: Any) -> list[str] | None:
    """For a oneOf/anyOf of bare `required` alternatives, the field names it asks for; else None."""
    options = error.validator_value if error.validator in ("oneOf", "anyOf") else None
    if not options or not all(isinstance(o, dict) and o.keys() == {"required"} for o in options):
        return None
    return [name for option in options for name in option["required"]]


def _explain(error: Any) -> tuple[str, str]:
    names = _alternatives(error)
    if names is not None:
        if not isinstance(error.instance, dict):  # `required` passes on a non-object, so every alternative did
            return error.json_path, f"must be an object, got {json_type(error.instance)}"
        if error.validator == "oneOf" and all(name in error.instance for name in names):
            return error.json_path, f"takes only one of {', '.join(names)}"
        return error.json_path, f"needs {'exactly ' if error.validator == 'oneOf' else ''}one of {', '.join(names)}"
    if error.validator == "dependentRequired" and isinstance(error.instance, dict):
        needing = next(key for key in error.validator_value if key in error.instance)
        return error.json_path, f"{needing} needs {', '.join(error.validator_value[needing])}"
    # Any other oneOf/anyOf failure says little; the deepest sub-error names the real field.
    while error.context:
        error = best_match(error.context)
    return _describe(error)


def _schema_error(obj: Any) -> Invalid | None:
    errors = list(validator("policy").iter_errors(obj))
    if not errors:
        return None
    path, message = _explain(best_match(errors))
    others = len({_explain(other) for other in errors} - {(path, message)})
    more = f" (and {others} more problem{'s' if others > 1 else ''})" if others else ""
    return _invalid(path, message + more)


class _Loader:
    """Turns a schema-valid document into a Policy, raising Invalid at the first rule the schema cannot express."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        order = spec.get("severity_order")
        self.order = tuple(order) if order else DEFAULT_SEVERITY_ORDER

    def severity(self, value: str | None, path: str) -> str | None:
        if value is not None and value not in self.order:
            raise _invalid(path, f"{value!r} is not in severity_order ({', '.join(self.order)})")
        return value

    def matchers(self, items: list[dict[str, str]] | None, path: str) -> tuple[Matcher, ...]:
        out = []
        for index, item in enumerate(items or ()):
            matcher = Matcher(item["label"], item["op"], item["value"])
            if matcher.op in ("=~", "!~"):
                try:
                    re.compile(matcher.value)  # first alone, so an error's position is within the value
                    re.compile(f"(?:{matcher.value})")
                except re.error as exc:
                    raise _invalid(f"{path}[{index}].value", f"is not a valid regular expression: {exc}") from None
            out.append(matcher)
        return tuple(out)

    def group_by(self, items: list[str], path: str) -> tuple[str, ...]:
        if ALL_LABELS in items and len(items) > 1:
            raise _invalid(path, '"..." groups by every label and must stand alone')
        return tuple(items)

    def mapping(self, data: dict[str, Any], path: str) -> SourceMapping:
        severity_map = dict(data.get("severity_map", {}))
        for key, value in severity_map.items():
            self.severity(value, f"{path}.severity_map.{key}")
        return SourceMapping(
            rename_labels=dict(data.get("rename_labels", {})),
            drop_labels=tuple(data.get("drop_labels", ())),
            set_labels=dict(data.get("set_labels", {})),
            rename_names=dict(data.get("rename_names", {})),
            severity_map=severity_map,
            default_severity=self.severity(data.get("default_severity"), f"{path}.default_severity"),
        )

    def route(self, data: dict[str, Any], path: str, node: str, parent: Route | None) -> Route:
        if parent is None:
            if data.get("matchers"):
                raise _invalid(f"{path}.matchers", "the root route matches every signal and takes no matchers")
            if data.get("continue"):
                raise _invalid(f"{path}.continue", "the root route cannot continue")
        matchers = self.matchers(data.get("matchers"), f"{path}.matchers")
        if "group_by" in data:
            group_by = self.group_by(data["group_by"], f"{path}.group_by")
        else:
            group_by = parent.group_by if parent else self.default_group_by
        receiver = data.get("receiver") or (parent.receiver if parent else DEFAULT_RECEIVER)
        shell = Route(node, receiver, matchers, group_by, bool(data.get("continue")), (), compile_signal_test(matchers))
        children = tuple(
            self.route(child, f"{path}.routes[{index}]", f"{node}.{index}", shell)
            for index, child in enumerate(data.get("routes", ()))
        )
        return Route(node, receiver, matchers, group_by, shell.cont, children, shell.test)

    def load(self, digest: str) -> Policy:
        spec = self.spec
        normalize = spec.get("normalize", {})
        sources = {
            name: self.mapping(data, f"$.normalize.sources.{name}")
            for name, data in sorted(normalize.get("sources", {}).items())
        }

        fingerprint = spec.get("fingerprint", {})
        rules = []
        for index, rule in enumerate(fingerprint.get("rules", ())):
            path = f"$.fingerprint.rules[{index}]"
            matchers = self.matchers(rule.get("matchers"), f"{path}.matchers")
            template = (
                parse_template(rule["template"], ("source", "name", "severity"), f"{path}.template")
                if "template" in rule
                else None
            )
            fields = tuple(rule["fields"]) if "fields" in rule else None
            rules.append(FingerprintRule(rule["name"], matchers, fields, template, compile_signal_test(matchers)))

        suppression = spec.get("suppression", {})
        silences = []
        for index, item in enumerate(suppression.get("silences", ())):
            path = f"$.suppression.silences[{index}]"
            matchers = self.matchers(item["matchers"], f"{path}.matchers")
            starts = parse_timestamp(item["starts_at"]) if "starts_at" in item else None
            ends = parse_timestamp(item["ends_at"]) if "ends_at" in item else None
            if starts is not None and ends is not None and ends <= starts:
                raise _invalid(f"{path}.ends_at", "must be after starts_at")
            silences.append(Silence(item["name"], matchers, starts, ends, compile_signal_test(matchers)))

        thresholds = []
        for index, item in enumerate(suppression.get("thresholds", ())):
            path = f"$.suppression.thresholds[{index}]"
            matchers = self.matchers(item.get("matchers"), f"{path}.matchers")
            by = tuple(item.get("by", ()))
            baselines: dict[tuple[str, ...], float] = {}
            for position, baseline in enumerate(item.get("baselines", ())):
                where = f"{path}.baselines[{position}].labels"
                if set(baseline["labels"]) != set(by):
                    raise _invalid(where, f"must name exactly the labels in by ({', '.join(by)})")
                key = tuple(baseline["labels"][label] for label in by)
                if key in baselines:
                    raise _invalid(where, "repeats an earlier baseline's labels")
                baselines[key] = baseline["below"]
            thresholds.append(
                Threshold(
                    item["name"],
                    matchers,
                    item.get("below"),
                    self.severity(item.get("min_severity"), f"{path}.min_severity"),
                    by,
                    baselines,
                    compile_signal_test(matchers),
                )
            )

        correlation = spec.get("correlation", {})
        window_s = float(correlation.get("window_s", DEFAULT_WINDOW_S))
        inhibit = []
        for index, item in enumerate(suppression.get("inhibit", ())):
            path = f"$.suppression.inhibit[{index}]"
            source = self.matchers(item["source_matchers"], f"{path}.source_matchers")
            target = self.matchers(item["target_matchers"], f"{path}.target_matchers")
            inhibit.append(
                InhibitRule(
                    item["name"],
                    source,
                    target,
                    tuple(item.get("equal", ())),
                    float(item.get("window_s", window_s)),
                    compile_signal_test(source),
                    compile_signal_test(target),
                )
            )

        self.default_group_by = self.group_by(
            correlation.get("group_by", list(DEFAULT_GROUP_BY)), "$.correlation.group_by"
        )
        joins = tuple(
            Join(item["name"], tuple(item["sources"]), tuple(item["on"]), float(item["within_s"]))
            for item in correlation.get("joins", ())
        )
        routes = (
            self.route(correlation["routes"], "$.correlation.routes", "root", None) if "routes" in correlation else None
        )

        incidents = spec.get("incidents", {})
        title = parse_template(
            incidents.get("title", DEFAULT_TITLE),
            ("name", "source", "severity", "receiver", "count", "first_ts", "last_ts"),
            "$.incidents.title",
        )
        actions = []
        for index, item in enumerate(incidents.get("actions", ())):
            path = f"$.incidents.actions[{index}]"
            when = self.matchers(item.get("when"), f"{path}.when")
            actions.append(
                ActionRule(
                    item["name"],
                    item["capability"],
                    when,
                    item.get("on", "common"),
                    dict(item.get("bounds", {})),
                    compile_signal_test(when),
                    compile_labels_test(when),
                )
            )
        return Policy(
            spec=spec,
            spec_hash=digest,
            name=spec.get("name", ""),
            severity_order=self.order,
            normalize=self.mapping({k: v for k, v in normalize.items() if k != "sources"}, "$.normalize"),
            normalize_sources=sources,
            fingerprint_rules=tuple(rules),
            fingerprint_default=tuple(fingerprint.get("default", DEFAULT_FINGERPRINT)),
            dedup_window_s=float(spec.get("dedup", {}).get("window_s", 0)),
            dedup_fields=tuple(spec["dedup"]["fields"]) if "fields" in spec.get("dedup", {}) else None,
            silences=tuple(silences),
            thresholds=tuple(thresholds),
            inhibit=tuple(inhibit),
            group_by=self.default_group_by,
            window_s=window_s,
            joins=joins,
            routes=routes,
            min_signals=int(incidents.get("min_signals", 1)),
            min_severity=self.severity(incidents.get("min_severity"), "$.incidents.min_severity"),
            title=title,
            target_labels={**DEFAULT_TARGET_LABELS, **incidents.get("target_labels", {})},
            actions=tuple(actions),
        )


MAX_DEPTH = 64  # JSON nesting levels; the deepest demo or imported policy uses about 12


def _too_deep(obj: Any) -> str | None:
    """The JSON path of the first value nested more than MAX_DEPTH levels down, else None. Iterative: the schema
    check and the loader recurse, and a document nested thousands deep would exhaust the stack there."""
    pending: list[tuple[Any, str, int]] = [(obj, "$", 0)]
    while pending:
        value, path, depth = pending.pop()
        if depth > MAX_DEPTH:
            return path
        if isinstance(value, dict):
            pending.extend((child, f"{path}.{key}", depth + 1) for key, child in value.items())
        elif isinstance(value, list):
            pending.extend((child, f"{path}[{index}]", depth + 1) for index, child in enumerate(value))
    return None


def load_policy(obj: Any) -> Policy:
    """Check `obj` (a parsed JSON document, or a Policy, returned as is) against the policy schema and the rules it
    cannot express; compile it. Raises errors.Invalid whose `field` is the JSON path (`policy.correlation.window_s`).
    """
    if isinstance(obj, Policy):
        return obj
    if not isinstance(obj, dict):
        raise _invalid("$", f"must be an object, got {json_type(obj)}")
    deep = _too_deep(obj)
    if deep is not None:
        raise _invalid(deep, f"nested more than {MAX_DEPTH} levels deep")
    problem = _schema_error(obj)
    if problem is not None:
        raise problem
    spec = copy.deepcopy(obj)
    try:
        digest = spec_hash(spec)
    except (CanonicalJSONError, RecursionError) as exc:
        raise _invalid("$", f"has no canonical form ({exc})") from None
    return _Loader(spec).load(digest)
