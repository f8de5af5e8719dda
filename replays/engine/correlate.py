"""The replay stages 1-3: ingest & normalize, deterministic correlation, incident aggregation.

Each stage is a function from data to data (`ingest`, `correlate`, `aggregate`); `replay` chains them and reports
each stage's start and finish to an `on_progress` callback. The result types below are the contract the report,
diff and evidence code read: frozen, and `as_dict()` gives plain JSON. docs/policy.md describes the semantics.

Determinism: signals are sorted by (ts, id) before anything looks at them, every set or dict that reaches the output
is sorted first, and all times are aware UTC datetimes. Speed: every stage is a linear pass or a sort; matchers,
templates and fingerprints are compiled or memoized once per policy, never per signal.
"""

from __future__ import annotations

import bisect
import hashlib
import operator
import os
from array import array
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import compress, count, repeat
from typing import Any, NamedTuple

import orjson

from .archive import detect_kind
from .bundles import BUNDLE_KINDS, open_bundle
from .canonical import canonical_json, canonical_text_json, sha256_hex
from .formats import DEFAULT_LIMITS, Limits, format_timestamp
from .gcpause import paused_gc
from .lazymap import LazyMap
from .policy import (
    ALL_LABELS,
    ActionRule,
    Join,
    Policy,
    Route,
    Silence,
    SourceMapping,
    Template,
    Threshold,
    exposed_labels,
    label_getter,
    load_policy,
)
from .signals import Signal, SignalPool, iter_signals

STAGES = ("ingest", "correlate", "aggregate")
REASONS = ("dedup", "silence", "threshold", "inhibit")

# on_progress(stage, status, counts): status is "started" or "finished"; counts are plain ints keyed by name.
ProgressCallback = Callable[[str, str, Mapping[str, int]], None]


@dataclass(frozen=True, slots=True)
class Action:
    """An action an incident plans. `targets` holds the sorted distinct pops, regions and services its members touch.

    status is "planned", or "blocked" when the targets exceed the action's blast-radius bounds (`reason` says which).
    """

    name: str
    capability: str
    targets: dict[str, list[str]]
    status: str
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "capability": self.capability,
            "targets": {key: list(values) for key, values in sorted(self.targets.items())},
            "status": self.status,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class Incident:
    """An episode that met the incident thresholds.

    key          readable and unique in a result: "<route path>|<group labels>|<first ts>" of its earliest episode
    fingerprint  hex sha256 of the canonical JSON of its group keys and its sorted distinct member fingerprints:
                 independent of input order and of the window's position in time
    receiver     the route's receiver (None when the policy has no routes)
    group_labels the group_by label values (for a joined episode: those its groups agree on)
    signals      member signal ids, sorted
    sources      member count per source
    """

    key: str
    fingerprint: str
    receiver: str | None
    group_labels: dict[str, str]
    signals: tuple[str, ...]
    severity: str | None
    title: str
    first_ts: datetime
    last_ts: datetime
    sources: dict[str, int]
    actions: tuple[Action, ...] = ()
    joined_by: tuple[str, ...] = ()  # names of the joins that merged episodes into this one

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "fingerprint": self.fingerprint,
            "receiver": self.receiver,
            "group_labels": dict(sorted(self.group_labels.items())),
            "signals": list(self.signals),
            "severity": self.severity,
            "title": self.title,
            "first_ts": format_timestamp(self.first_ts),
            "last_ts": format_timestamp(self.last_ts),
            "sources": dict(sorted(self.sources.items())),
            "actions": [action.as_dict() for action in self.actions],
            "joined_by": list(self.joined_by),
        }


class Suppressed(NamedTuple):
    """A signal kept out of correlation: `reason` is dedup, silence, threshold or inhibit; `rule` the rule's name.

    `by` is the signal id that caused it, when there is one: the kept original of a duplicate, the inhibiting source.
    A NamedTuple rather than a frozen dataclass: a window suppresses most of its million signals, and this is half
    the cost to build.
    """

    signal: str
    reason: str
    rule: str
    by: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"signal": self.signal, "reason": self.reason, "rule": self.rule, "by": self.by}


@dataclass(frozen=True, slots=True)
class Basis:
    """The signals a replay selected, as read (before normalization) and in (ts, id) order, with the position in that
    list of each of its `suppressed`: so the report can count them per second without a lookup by id."""

    signals: list[Signal]
    suppressed_at: Sequence[int]  # an array of machine ints: a list would keep a million int objects alive


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """What a replay formed. Every list is in a deterministic order: incidents by (first_ts, key), suppressed by the
    signals' (ts, id).

    stats          signals_in, signals_selected, signals_suppressed, suppressed_<reason>, signals_correlated,
                   episodes, episodes_joined, incidents_formed, actions_planned, actions_blocked
    signals_digest hex sha256 over the selected signals in (ts, id) order (docs/policy.md says the exact form)
    window         (start, end) of the sub-window filter, or None
    scope          the label-equality scope filter, or None
    fingerprints   signal id -> signal fingerprint for every selected signal (suppressed ones too)
    """

    incidents: list[Incident]
    suppressed: list[Suppressed]
    stats: dict[str, int]
    signals_digest: str
    window: tuple[datetime, datetime] | None
    scope: dict[str, str] | None
    spec_hash: str
    fingerprints: Mapping[str, str] = field(default_factory=dict)
    # What the report's timeline reads (timeline.SignalProfile.collect_replayed); None for a result built by hand.
    basis: Basis | None = field(default=None, compare=False, repr=False)

    def as_dict(self, *, fingerprints: bool = False) -> dict[str, Any]:
        """Plain JSON. The per-signal fingerprints can be large (one per signal), so they are opt-in."""
        data: dict[str, Any] = {
            "incidents": [incident.as_dict() for incident in self.incidents],
            "suppressed": [item.as_dict() for item in self.suppressed],
            "stats": dict(sorted(self.stats.items())),
            "signals_digest": self.signals_digest,
            "window": (
                {"start": format_timestamp(self.window[0]), "end": format_timestamp(self.window[1])}
                if self.window
                else None
            ),
            "scope": dict(sorted(self.scope.items())) if self.scope is not None else None,
            "spec_hash": self.spec_hash,
        }
        if fingerprints:
            data["fingerprints"] = dict(sorted(self.fingerprints.items()))
        return data


# --- stage 1: ingest & normalize ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ingested:
    """Stage 1's output: the selected signals, normalized, in (ts, id) order."""

    signals: list[Signal]
    signals_in: int
    digest: str
    raw: list[Signal]  # the same signals as read, before normalization
    # Per signal, the number of its content as read (content_numbers), or None when contents were mostly distinct.
    # Normalization maps equal contents to equal contents, so these numbers hold for the normalized signals too.
    contents: list[int] | None = None


_TS_ID = operator.itemgetter(1, 0)  # Signal fields ts, id: the one sort order of every stage
_TS, _VALUE, _LINE = operator.itemgetter(1), operator.itemgetter(6), operator.itemgetter(7)


def _map_labels(mapping: SourceMapping, labels: dict[str, str]) -> dict[str, str]:
    labels = dict(labels)
    # All renames read the original labels, so {a: b, b: c} moves both rather than chaining a into c.
    moved = [(new, labels.pop(old)) for old, new in mapping.rename_labels.items() if old in labels]
    labels.update(moved)
    for key in mapping.drop_labels:
        labels.pop(key, None)
    labels.update(mapping.set_labels)
    return labels


Mapped = tuple[str, dict[str, str], str | None]


def _compile_mapping(mapping: SourceMapping) -> Callable[[str, dict[str, str], str | None], Mapped] | None:
    """(name, labels, severity) -> the same after one normalize mapping; labels are copied only when a rename, drop
    or set touches them, which for most signals is never."""
    if mapping.empty:
        return None
    touched = frozenset(mapping.rename_labels) | frozenset(mapping.drop_labels)
    always = bool(mapping.set_labels)
    renames = mapping.rename_names
    severities = mapping.severity_map
    default = mapping.default_severity

    def apply(name: str, labels: dict[str, str], severity: str | None) -> Mapped:
        if always or not touched.isdisjoint(labels):
            labels = _map_labels(mapping, labels)
        if renames:
            name = renames.get(name, name)
        if severity is None:
            severity = default
        elif severities:
            severity = severities.get(severity, severity)
        return name, labels, severity

    return apply


def _normalizer(policy: Policy) -> Callable[[Signal], Signal]:
    """signal -> normalized signal: labels with an empty value dropped (Alertmanager's rule: an empty label is no
    label), then the source's own mapping, then the global one. An unchanged signal is returned as is."""
    general = _compile_mapping(policy.normalize)
    compiled = {source: _compile_mapping(mapping) for source, mapping in policy.normalize_sources.items()}
    own = {source: apply for source, apply in compiled.items() if apply is not None}
    own_get = own.get

    def normalize(signal: Signal) -> Signal:
        name, labels, severity = signal.name, signal.labels, signal.severity
        if "" in labels.values():
            labels = {key: value for key, value in labels.items() if value}
        apply = own_get(signal.source)
        if apply is not None:
            name, labels, severity = apply(name, labels, severity)
        if general is not None:
            name, labels, severity = general(name, labels, severity)
        if name is signal.name and labels is signal.labels and severity is signal.severity:
            return signal
        return Signal(signal.id, signal.ts, signal.source, name, labels, severity, signal.value, signal.line)

    if general is None and not own:
        # Only the empty-label rule: test for it inline, and call the full normalizer for the rare signal it hits.
        return lambda s: normalize(s) if "" in s.labels.values() else s
    return normalize


def _normalize_all(
    normalize: Callable[[Signal], Signal], signals: list[Signal], contents: list[int] | None
) -> list[Signal]:
    """[normalize(s) for s in signals], each distinct content normalized once (per_content), and only the signals
    whose content changes rebuilt.

    That matters downstream more than here: signals with equal labels come out sharing one normalized dict (never
    changed afterwards), where each renamed or dropped label used to give every signal a dict of its own, which cost
    memory and defeated the fingerprint's memo of sorted label sets.
    """
    def changes(signal: Signal) -> tuple[str, str, dict[str, str], str | None] | None:
        normal = normalize(signal)
        return None if normal is signal else normal[2:6]  # source, name, labels, severity

    parts = per_content(changes, signals, contents)
    out = list(signals)
    # Only the changed signals are rebuilt, in C: a window's contents mostly come through unchanged.
    changed = list(compress(range(len(parts)), map(operator.is_not, parts, repeat(None))))
    if changed:
        olds = list(map(signals.__getitem__, changed))
        news = list(map(parts.__getitem__, changed))
        fields = zip(
            map(_ID, olds), map(_TS, olds), *zip(*news, strict=True), map(_VALUE, olds), map(_LINE, olds), strict=True
        )
        deque(map(out.__setitem__, changed, map(tuple.__new__, repeat(Signal), fields)), maxlen=0)
    return out


_DIGEST_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z
_DIGEST_CHUNK = 16384


def signals_digest(signals: list[Signal]) -> str:
    """Hex sha256 of one JSON array holding, per signal in the given order, [id, ts, source, name, labels, severity,
    value] as orjson writes it: no whitespace, label keys sorted, ts in RFC 3339 UTC with Z (microseconds only when
    there are any), null for a missing severity or value. Written in chunks; the bytes are those of one array."""
    digest = hashlib.sha256(b"[")
    for start in range(0, len(signals), _DIGEST_CHUNK):
        # A Signal's first seven fields are exactly the array: s[:7] is a plain tuple, the line number left out.
        body = orjson.dumps([s[:7] for s in signals[start : start + _DIGEST_CHUNK]], option=_DIGEST_OPTIONS)
        if start:
            digest.update(b",")
        digest.update(body[1:-1])
    digest.update(b"]")
    return digest.hexdigest()


class Pooled(list):
    """Signals already shared through a SignalPool (a reader's `pool`): replay() takes them as they are, so one parse
    can feed a replay, a compare replay and the report."""


def ingest(
    policy: Policy,
    signals: Iterable[Signal],
    *,
    scope: Mapping[str, str] | None = None,
    window: tuple[datetime, datetime] | None = None,
) -> Ingested:
    """Stage 1. Keep the signals inside `window` (both ends included), sort them by (ts, id), normalize them as the
    policy says, then keep those whose labels equal every `scope` value. The digest covers the selected signals as
    they came in, before normalization: two policies replayed over the same evidence report the same digest."""
    # A Pooled list was already shared (one parse feeding several replays): copy it, since ingest sorts.
    raw = list(signals) if isinstance(signals, Pooled) else SignalPool().share_all(signals)
    count = len(raw)
    raw.sort(key=_TS_ID)
    if window is not None:
        # In time order, the sub-window is one slice: its ends are found by bisection, not by testing every signal.
        start, end = window
        raw = raw[bisect.bisect_left(raw, start, key=_TS) : bisect.bisect_right(raw, end, key=_TS)]
    contents = content_numbers(raw)
    normal = _normalize_all(_normalizer(policy), raw, contents)
    if scope:
        items = tuple(sorted(scope.items()))
        chosen = [i for i, signal in enumerate(normal) if all(signal.labels.get(k) == v for k, v in items)]
        raw = [raw[i] for i in chosen]
        normal = [normal[i] for i in chosen]
        if contents is not None:
            contents = content_numbers(raw)  # numbered afresh: a number is a position in the list
    digest = signals_digest(raw)
    return Ingested(normal, count, digest, raw, contents)


# --- stage 2: deterministic correlation ---------------------------------------------------------------------------


_PLAIN_FIELDS = ("source", "name", "severity", "value")


class _LabelKeys:
    """labels dict -> its items sorted, as one shared tuple per distinct label set.

    Memoized by the dict's id(): ingest shares equal label dicts, so a million signals hold a few thousand, and the
    sort runs once per dict. Safe because every dict passed in belongs to a signal alive for the whole stage, so no id
    is reused while the memo lives."""

    def __init__(self) -> None:
        self.by_id: dict[int, tuple[tuple[str, str], ...]] = {}
        self.shared: dict[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]] = {}

    def __call__(self, labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
        key = self.by_id.get(id(labels))
        if key is None:
            items = tuple(sorted(labels.items()))
            key = self.by_id[id(labels)] = self.shared.setdefault(items, items)
        return key


def _key_function(fields: tuple[str, ...], label_keys: _LabelKeys) -> Callable[[Signal], tuple[Any, ...]]:
    """signal -> a small hashable key of `fields`: (plain field values, sorted label items or None, values of the
    labels.<key> fields). Made of attrgetter, map and shared tuples: it runs once per signal and may be kept for many
    (dedup keeps one per kept signal), so it must be cheap to build and to hold."""
    plain = [name for name in fields if name in _PLAIN_FIELDS]
    keys = [name[len("labels.") :] for name in fields if name.startswith("labels.")]
    every = "labels" in fields
    get = operator.attrgetter(*plain) if plain else (lambda s: ())
    if len(plain) == 1:
        one = get
        get = lambda s: (one(s),)  # noqa: E731 - attrgetter of one name gives the value, not a tuple
    if not keys:
        if every:
            return lambda s: (get(s), label_keys(s.labels), ())
        return lambda s: (get(s), None, ())
    if every:
        return lambda s: (get(s), label_keys(s.labels), tuple(map(s.labels.get, keys)))
    return lambda s: (get(s), None, tuple(map(s.labels.get, keys)))


def _identity(fields: tuple[str, ...], key: tuple[Any, ...]) -> dict[str, Any]:
    """The JSON object a fields fingerprint hashes: shaped like the signal, absent values left out. With source,
    name and some labels.<key> it is exactly samples.fingerprint's object, so sample baselines compare directly."""
    plain_values, every, label_values = key
    obj: dict[str, Any] = {
        name: value
        for name, value in zip([n for n in fields if n in _PLAIN_FIELDS], plain_values, strict=True)
        if value is not None
    }
    keys = [name[len("labels.") :] for name in fields if name.startswith("labels.")]
    if every is not None or keys:
        labels = dict(every) if every is not None else {}
        labels.update((k, v) for k, v in zip(keys, label_values, strict=True) if v is not None)
        obj["labels"] = labels
    return obj


def _fingerprint_hash(obj: Any) -> str:
    return "fp:" + sha256_hex(canonical_json(obj))[:16]


def _text_fingerprint_hash(obj: str | dict[str, Any]) -> str:
    """_fingerprint_hash of an identity made of strings only (see canonical_text_json)."""
    return "fp:" + sha256_hex(canonical_text_json(obj))[:16]


class _Memo(dict[Any, str]):
    """A dict that computes a missing value once: lookups stay C-level subscripts, the hash runs once per identity."""

    def __init__(self, compute: Callable[[Any], str]) -> None:
        super().__init__()
        self.compute = compute

    def __missing__(self, key: Any) -> str:
        value = self[key] = self.compute(key)
        return value


_FIRST, _SECOND, _THIRD = operator.itemgetter(0), operator.itemgetter(1), operator.itemgetter(2)
_REASON, _ID = operator.attrgetter("reason"), operator.attrgetter("id")
_CONTENT_PROBE = 50_000  # signals numbered before judging whether working per content pays
_LABELS, _SOURCE_NAME_SEVERITY = operator.itemgetter(4), operator.itemgetter(2, 3, 5)


def _content_keys(signals: list[Signal]) -> Iterator[tuple[int, tuple[str, str, str | None]]]:
    """Per signal, (id of its labels dict, (source, name, severity)): built in C."""
    return zip(map(id, map(_LABELS, signals)), map(_SOURCE_NAME_SEVERITY, signals), strict=True)


def content_numbers(signals: list[Signal]) -> list[int] | None:
    """Per signal, the number of its content: (labels, source, name, severity), numbered by the position of the first
    signal with that content.

    Everything normalization, fingerprints and content-only thresholds decide follows from a signal's content, and a
    window repeats its contents: a busy 1M window holds 80k. So those are decided once per content (per_content) and
    looked up by number. Pooled signals share equal label dicts (SignalPool), so the labels are keyed by the dict's
    id(), safe because `signals` keeps every dict alive meanwhile. Unpooled signals (every dict its own) would only
    fill the table: when three in four of the first _CONTENT_PROBE signals are new contents, this gives None and
    callers decide signal by signal.
    """
    first: dict[tuple[int, tuple[str, str, str | None]], int] = {}
    number = first.setdefault  # with the running position as default: a new content gets its first position
    head = list(map(number, _content_keys(signals[:_CONTENT_PROBE]), count()))
    if len(signals) > _CONTENT_PROBE and len(first) > _CONTENT_PROBE * 3 // 4:
        return None
    return head + list(map(number, _content_keys(signals[_CONTENT_PROBE:]), count(_CONTENT_PROBE)))


def per_content(compute: Callable[[Signal], Any], signals: list[Signal], contents: list[int] | None) -> list[Any]:
    """[compute(s) for s in signals] for a `compute` that reads only a signal's content, computed once per content
    number (content_numbers) on its first signal; signal by signal when `contents` is None."""
    if contents is None:
        return list(map(compute, signals))
    # A content's number is the position of its first signal (content_numbers).
    decided = {content: compute(signals[content]) for content in dict.fromkeys(contents)}
    return list(map(decided.__getitem__, contents))


class Fingerprinter:
    """signal -> (fingerprint, rule name). The first rule whose matchers match decides, else the default fields.
    Fingerprints are memoized by identity key: a window holds far fewer identities than signals."""

    def __init__(self, policy: Policy) -> None:
        self.label_keys = _LabelKeys()
        self.rules: list[tuple[Callable[[Signal], bool], Callable[[Signal], Any], int]] = []
        self.names: list[str] = []
        self.fields: list[tuple[str, ...] | None] = []
        for index, rule in enumerate(policy.fingerprint_rules):
            if rule.template is not None:
                template = rule.template
                key = self._template_key(template)
            else:
                assert rule.fields is not None
                key = _key_function(rule.fields, self.label_keys)
            self.rules.append((rule.test, key, index))
            self.names.append(rule.name)
            self.fields.append(rule.fields)
        self.default = _key_function(policy.fingerprint_default, self.label_keys)
        self.default_index = len(self.names)
        self.names.append("default")
        self.fields.append(policy.fingerprint_default)
        self.memo = _Memo(self._hash)
        # Templates may only name source, name, severity and labels; so only a `value` field reads beyond content.
        self.reads_value = any(fields is not None and "value" in fields for fields in self.fields)

    @staticmethod
    def _template_key(template: Template) -> Callable[[Signal], str]:
        def render(signal: Signal) -> str:
            def lookup(placeholder: str) -> Any:
                if placeholder.startswith("labels."):
                    return signal.labels.get(placeholder[len("labels.") :], "")
                return getattr(signal, placeholder)

            return template.render(lookup)

        return render

    def _hash(self, cache_key: tuple[int, Any]) -> str:
        index, values = cache_key
        fields = self.fields[index]
        if fields is None:
            return _text_fingerprint_hash(values)  # a rendered template: a str
        identity = _identity(fields, values)
        # Labels, source, name and severity are strs; only a `value` field holds a number, spelt by canonical_json.
        if all(type(value) is str or value is None for value in values[0]):
            return _text_fingerprint_hash(identity)
        return _fingerprint_hash(identity)

    def __call__(self, signal: Signal) -> tuple[str, int]:
        for test, key, rule_index in self.rules:
            if test(signal):
                return self.memo[(rule_index, key(signal))], rule_index
        return self.memo[(self.default_index, self.default(signal))], self.default_index

    def assign(self, signals: list[Signal]) -> tuple[list[str], list[int]]:
        """Every signal's fingerprint and rule index, in bulk: without rules, two comprehensions and no calls."""
        memo = self.memo
        rule_of = [self.default_index] * len(signals)
        fps: list[str] = [""] * len(signals)
        todo = range(len(signals))
        for test, key, index in self.rules:
            # Rule by rule over the signals no earlier rule took: the first match wins, as in Sentry.
            taken = [position for position in todo if test(signals[position])]
            if not taken:
                continue
            for position in taken:
                fps[position] = memo[(index, key(signals[position]))]
                rule_of[position] = index
            taken_set = set(taken)
            todo = [position for position in todo if position not in taken_set]
        index, key = self.default_index, self.default
        if len(todo) == len(signals):
            return [memo[(index, key(s))] for s in signals], rule_of
        for position in todo:
            fps[position] = memo[(index, key(signals[position]))]
        return fps, rule_of


def fingerprint_of(policy: Policy, signal: Signal) -> str:
    """One signal's fingerprint under `policy` (the signal as normalized)."""
    return Fingerprinter(policy)(signal)[0]


def _threshold_check(threshold: Threshold, rank: Mapping[str, int]) -> Callable[[Signal], bool]:
    """signal -> True when `threshold` drops it: its matchers match and its severity is below min_severity (no
    severity counts as lowest), or it carries a value below the floor (the baseline for its `by` labels, else
    `below`). Signals without a value pass value floors."""
    test = threshold.test
    rank_get = rank.get
    floor_rank = rank[threshold.min_severity] if threshold.min_severity is not None else None
    if floor_rank is not None and threshold.below is None and not threshold.baselines:
        if not threshold.matchers:
            return lambda s: rank_get(s.severity, -1) < floor_rank  # type: ignore[arg-type]
        return lambda s: test(s) and rank_get(s.severity, -1) < floor_rank  # type: ignore[arg-type]
    by = [label_getter(label) for label in threshold.by]
    baselines = threshold.baselines
    below = threshold.below

    def drops(signal: Signal) -> bool:
        if not test(signal):
            return False
        if floor_rank is not None and rank_get(signal.severity, -1) < floor_rank:  # type: ignore[arg-type]
            return True
        value = signal.value
        if value is None:
            return False
        floor = baselines.get(tuple([get(signal) for get in by]), below) if baselines else below
        return floor is not None and value < floor

    return drops


def _first_rule(rules: list[tuple[str, Callable[[Signal], bool]]], signal: Signal) -> str | None:
    """The name of the first of `rules` ((name, test) pairs, in policy order) whose test holds for `signal`."""
    return next((name for name, test in rules if test(signal)), None)


def _silence_check(silence: Silence) -> Callable[[Signal], bool]:
    """signal -> True when `silence` mutes it: starts_at <= ts < ends_at (Alertmanager's range) and matchers match."""
    starts, ends, test = silence.starts_at, silence.ends_at, silence.test
    return lambda s: (starts is None or starts <= s.ts) and (ends is None or s.ts < ends) and test(s)


@dataclass(slots=True)
class _Episode:
    group: int
    members: list[int]
    last: datetime


@dataclass(frozen=True, slots=True)
class _Group:
    route: Route | None
    labels: tuple[tuple[str, str], ...]  # the group_by values, "" (missing) left out


@dataclass(frozen=True, slots=True)
class Correlated:
    """Stage 2's output: episodes (lists of signal positions) after joins, and everything suppressed."""

    signals: list[Signal]
    fingerprints: list[str]
    groups: list[_Group]
    episodes: list[list[_Episode]]  # each entry: the episodes a join merged, earliest first
    joined_by: list[tuple[str, ...]]
    suppressed: list[tuple[int, Suppressed]]
    stats: dict[str, int]


def _group_function(group_by: tuple[str, ...]) -> Callable[[Signal], tuple[tuple[str, str], ...]]:
    if group_by == (ALL_LABELS,):
        return lambda s: tuple(sorted(exposed_labels(s).items()))
    getters = [(name, label_getter(name)) for name in group_by]
    return lambda s: tuple([(name, value) for name, get in getters if (value := get(s))])


class _Unions:
    """Union-find over episode numbers; the smaller number is the root, so merges do not depend on order."""

    def __init__(self, size: int) -> None:
        self.parent = list(range(size))

    def find(self, item: int) -> int:
        parent = self.parent
        root = item
        while parent[root] != root:
            root = parent[root]
        while parent[item] != root:
            parent[item], item = root, parent[item]
        return root

    def union(self, a: int, b: int) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        if rb < ra:
            ra, rb = rb, ra
        self.parent[rb] = ra
        return True


def _inhibit(
    policy: Policy,
    signals: list[Signal],
    firing: list[int],
    kept: list[int],
    suppressed: list[tuple[int, Suppressed]],
) -> list[int]:
    """Alertmanager inhibition: which of the `kept` signals (past silences, thresholds and dedup) are muted.

    A target is inhibited when another signal matching the source matchers, with the same exposed values (missing
    = "") for the `equal` labels, is active: its ts lies within window_s of the target's, before or after
    (Alertmanager holds a new alert for group_wait, so a source arriving just after still mutes it). Sources are
    every `firing` signal, that is all but those under a threshold: a silenced, duplicate or inhibited alert still
    fires, and still inhibits, in Alertmanager. A signal never inhibits itself; and when a target also matches the
    source matchers, sources that also match the target matchers do not count (Alertmanager's excludeTwoSidedMatch),
    so two such alerts cannot mute each other.
    """
    inhibited: set[int] = set()
    for rule in policy.inhibit:
        equal = [label_getter(label) for label in rule.equal]
        span = timedelta(seconds=rule.window_s)
        target_test = rule.target_test
        sources: dict[tuple[str, ...], tuple[list[datetime], list[int], list[bool]]] = {}
        for position in firing:
            signal = signals[position]
            if rule.source_test(signal):
                key = tuple([get(signal) for get in equal])
                stamps, positions, two_sided = sources.setdefault(key, ([], [], []))
                stamps.append(signal.ts)
                positions.append(position)
                two_sided.append(target_test(signal))
        if not sources:
            continue
        for position in kept:
            if position in inhibited:
                continue
            signal = signals[position]
            if not target_test(signal):
                continue
            found = sources.get(tuple([get(signal) for get in equal]))
            if found is None:
                continue
            stamps, positions, two_sided = found
            exclude_two_sided = rule.source_test(signal)
            ts = signal.ts
            index = bisect.bisect_left(stamps, ts - span)
            limit = ts + span
            while index < len(stamps) and stamps[index] <= limit:
                if positions[index] != position and not (exclude_two_sided and two_sided[index]):
                    inhibited.add(position)
                    by = signals[positions[index]].id
                    suppressed.append((position, Suppressed(signal.id, "inhibit", rule.name, by)))
                    break
                index += 1
    return [position for position in kept if position not in inhibited] if inhibited else kept


def correlate(policy: Policy, ingested: Ingested) -> Correlated:
    """Stage 2: fingerprint, suppress (silence, threshold, dedup, then inhibit: the first that applies names the
    reason), route and group, split groups into episodes at gaps longer than window_s, then join episodes."""
    signals = ingested.signals
    fingerprint = Fingerprinter(policy)
    rule_names = fingerprint.names
    rank = policy.severity_rank()
    silences = [(silence.name, _silence_check(silence)) for silence in policy.silences]
    thresholds = [(threshold.name, _threshold_check(threshold, rank)) for threshold in policy.thresholds]
    threshold_hits: list[str | None] | None = None
    if not fingerprint.reads_value and not any(t.below is not None or t.baselines for t in policy.thresholds):
        # Fingerprint and threshold verdict both follow from a signal's content: computed once per distinct content.
        def decide(signal: Signal) -> tuple[str, int, str | None]:
            found, rule = fingerprint(signal)
            return found, rule, _first_rule(thresholds, signal)

        decided = per_content(decide, signals, ingested.contents)
        fingerprints = list(map(_FIRST, decided))
        rule_of = list(map(_SECOND, decided))
        threshold_hits = list(map(_THIRD, decided))
    else:
        fingerprints, rule_of = fingerprint.assign(signals)
    make = tuple.__new__

    # Silences, then thresholds. A silenced signal still fires (it may inhibit); one under a threshold does not.
    suppressed: list[tuple[int, Suppressed]]
    firing: list[int]  # all but the signals under a threshold: the inhibition sources
    if not silences and threshold_hits is not None:
        # Most of a window stops at a threshold: the verdicts are known, so no loop runs over those signals.
        held = list(map(operator.is_not, threshold_hits, repeat(None)))
        stopped = list(compress(range(len(signals)), held))
        items = zip(
            map(_ID, map(signals.__getitem__, stopped)),
            repeat("threshold"),
            compress(threshold_hits, held),
            repeat(None),
            strict=False,  # the repeats are endless
        )
        suppressed = list(zip(stopped, map(make, repeat(Suppressed), items), strict=True))
        firing = list(compress(range(len(signals)), map(operator.not_, held)))
        candidates = firing
    else:
        suppressed, firing, candidates = [], [], []
        for position, signal in enumerate(signals):
            hit = _first_rule(silences, signal)
            if hit is not None:
                suppressed.append((position, make(Suppressed, (signal.id, "silence", hit, None))))
                firing.append(position)
                continue
            hit = threshold_hits[position] if threshold_hits is not None else _first_rule(thresholds, signal)
            if hit is not None:
                suppressed.append((position, make(Suppressed, (signal.id, "threshold", hit, None))))
                continue
            firing.append(position)
            candidates.append(position)

    # Dedup counts from the last kept copy: a steady stream of re-emissions keeps one per window. Duplicates share a
    # fingerprint, or the dedup fields' key (built only for signals that reach dedup).
    dedup_span = timedelta(seconds=policy.dedup_window_s)
    dedup_key = _key_function(policy.dedup_fields, fingerprint.label_keys) if policy.dedup_fields is not None else None
    last_kept: dict[Any, tuple[datetime, str]] = {}
    last_get = last_kept.get
    kept: list[int] = []
    for position in candidates:
        signal = signals[position]
        same = fingerprints[position] if dedup_key is None else dedup_key(signal)
        previous = last_get(same)
        ts = signal.ts
        if previous is not None and ts - previous[0] <= dedup_span:
            rule = rule_names[rule_of[position]] if policy.dedup_fields is None else "dedup"
            suppressed.append((position, make(Suppressed, (signal.id, "dedup", rule, previous[1]))))
        else:
            last_kept[same] = (ts, signal.id)
            kept.append(position)
    before_inhibit = len(kept)
    kept = _inhibit(policy, signals, firing, kept, suppressed) if policy.inhibit else kept
    inhibited = before_inhibit - len(kept)

    # Route and group. Without routes there is one implicit route grouping by correlation.group_by.
    routes = policy.routes
    group_of_route = {}
    if routes is not None:
        for node in routes.walk():
            group_of_route[node.path] = _group_function(node.group_by)
    plain_group = _group_function(policy.group_by)
    window = timedelta(seconds=policy.window_s)
    group_index: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}
    groups: list[_Group] = []
    current: list[int] = []  # per group: its open episode
    episodes: list[_Episode] = []
    placements: list[tuple[int, int]] = []  # (signal position, episode), in signal order
    for position in kept:
        signal = signals[position]
        landed = routes.match(signal) if routes is not None else (None,)
        for route in landed:
            labels = group_of_route[route.path](signal) if route is not None else plain_group(signal)
            key = (route.path if route is not None else "", labels)
            group = group_index.get(key)
            ts = signal.ts
            if group is None:
                group = group_index[key] = len(groups)
                groups.append(_Group(route, labels))
                current.append(len(episodes))
                episodes.append(_Episode(group, [position], ts))
                placements.append((position, current[group]))
                continue
            episode = episodes[current[group]]
            if ts - episode.last > window:
                current[group] = len(episodes)
                episode = _Episode(group, [position], ts)
                episodes.append(episode)
            else:
                episode.members.append(position)
                episode.last = ts
            placements.append((position, current[group]))

    unions = _Unions(len(episodes))
    merges: list[tuple[int, str]] = []
    for join in policy.joins:
        _join(join, signals, groups, episodes, placements, unions, merges)
    merged: dict[int, list[_Episode]] = {}
    for number, episode in enumerate(episodes):
        merged.setdefault(unions.find(number), []).append(episode)
    names: dict[int, set[str]] = {}
    for number, name in merges:
        names.setdefault(unions.find(number), set()).add(name)
    roots = sorted(merged)
    reasons = Counter(map(_REASON, map(_SECOND, suppressed)))
    stats = {
        "signals_suppressed": len(suppressed),
        "suppressed_silence": reasons["silence"],
        "suppressed_threshold": reasons["threshold"],
        "suppressed_dedup": reasons["dedup"],
        "suppressed_inhibit": inhibited,
        "signals_correlated": len(kept),
        "groups": len(groups),
        "episodes": len(roots),
        "episodes_joined": len(merges),
    }
    suppressed.sort(key=operator.itemgetter(0))
    return Correlated(
        signals=signals,
        fingerprints=fingerprints,
        groups=groups,
        episodes=[merged[root] for root in roots],
        joined_by=[tuple(sorted(names.get(root, ()))) for root in roots],
        suppressed=suppressed,
        stats=stats,
    )


def _join(
    join: Join,
    signals: list[Signal],
    groups: list[_Group],
    episodes: list[_Episode],
    placements: list[tuple[int, int]],
    unions: _Unions,
    merges: list[tuple[int, str]],
) -> None:
    """Merge episodes holding signals of different join sources with equal `on` labels within within_s, inside one
    route. Joins are transitive. Per (route, on values) and source, a queue keeps the placements still in reach;
    once a signal has been joined to all of another source's queue, that queue is one episode set and shrinks to its
    newest entry, so the whole pass stays linear."""
    wanted = frozenset(join.sources)
    on = join.on
    span = timedelta(seconds=join.within_s)
    reach: dict[tuple[str, tuple[str, ...]], dict[str, deque[tuple[datetime, int]]]] = {}
    for position, number in placements:
        signal = signals[position]
        source = signal.source
        if source not in wanted:
            continue
        route = groups[episodes[number].group].route
        key = (route.path if route is not None else "", tuple([signal.labels.get(label, "") for label in on]))
        queues = reach.setdefault(key, {})
        ts = signal.ts
        oldest = ts - span
        for other, queue in queues.items():
            while queue and queue[0][0] < oldest:
                queue.popleft()
            if other == source or not queue:
                continue
            for _, episode in queue:
                if unions.union(number, episode):
                    merges.append((number, join.name))
            newest = queue[-1]
            queue.clear()
            queue.append(newest)
        queues.setdefault(source, deque()).append((ts, number))


# --- stage 3: incident aggregation --------------------------------------------------------------------------------


def _format_group(labels: Mapping[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


def _common_labels(members: list[Signal]) -> dict[str, str]:
    common = exposed_labels(members[0])
    for signal in members[1:]:
        if not common:
            break
        exposed = exposed_labels(signal)
        for key in [key for key, value in common.items() if exposed.get(key) != value]:
            del common[key]
    return common


def _plan(
    rule: ActionRule, members: list[Signal], common: Mapping[str, str], target_labels: Mapping[str, str]
) -> Action | None:
    if rule.when:
        if rule.on == "common":
            if not rule.labels_test(common):
                return None
        elif not any(rule.signal_test(signal) for signal in members):
            return None
    targets = {
        kind: sorted({signal.labels[label] for signal in members if label in signal.labels})
        for kind, label in sorted(target_labels.items())
    }
    over = [
        f"touches {len(targets[kind])} {kind} ({', '.join(targets[kind])}); at most {bound} allowed"
        for kind, bound in sorted(rule.bounds.items())
        if len(targets[kind]) > bound
    ]
    if over:
        return Action(rule.name, rule.capability, targets, "blocked", "; ".join(over))
    return Action(rule.name, rule.capability, targets, "planned")


def _title(template: Template, values: Mapping[str, Any], common: Mapping[str, str], group: Mapping[str, str]) -> str:
    """Render the title: {labels.X} is the members' common value of X (else the group's), missing: empty."""

    def lookup(placeholder: str) -> Any:
        if placeholder.startswith("labels."):
            label = placeholder[len("labels.") :]
            return common.get(label, group.get(label, ""))
        return values[placeholder]

    return template.render(lookup)


def aggregate(policy: Policy, correlated: Correlated) -> tuple[list[Incident], dict[str, int]]:
    """Stage 3: the episodes that meet min_signals and min_severity become incidents, with a severity rollup, a
    stable fingerprint, a title and the actions they plan. Sorted by (first_ts, key)."""
    signals = correlated.signals
    fingerprints = correlated.fingerprints
    groups = correlated.groups
    rank = policy.severity_rank()
    order = policy.severity_order
    floor = rank[policy.min_severity] if policy.min_severity is not None else -1
    routed = policy.routes is not None
    incidents: list[Incident] = []
    below = 0
    for parts, joined_by in zip(correlated.episodes, correlated.joined_by, strict=True):
        positions = sorted(position for episode in parts for position in episode.members)
        top = max((rank.get(signals[p].severity, -1) for p in positions), default=-1)  # type: ignore[arg-type]
        if len(positions) < policy.min_signals or top < floor:
            below += 1
            continue
        members = [signals[p] for p in positions]
        first = parts[0]  # episodes are numbered in signal order: the first part holds the earliest member
        first_group = groups[first.group]
        group_dicts = [dict(groups[part.group].labels) for part in parts]
        group_labels = group_dicts[0]
        for other in group_dicts[1:]:
            group_labels = {key: value for key, value in group_labels.items() if other.get(key) == value}
        # The groups this incident's episodes came from, deduplicated and sorted by their canonical form.
        origins = {}
        for part in parts:
            route = groups[part.group].route
            origin = {
                "route": route.path if routed and route is not None else None,
                "receiver": route.receiver if routed and route is not None else None,
                "group": dict(groups[part.group].labels),
            }
            origins[canonical_json(origin)] = origin
        identity = {
            "groups": [origins[text] for text in sorted(origins)],
            "members": sorted({fingerprints[p] for p in positions}),
        }
        first_ts, last_ts = members[0].ts, members[-1].ts
        path = first_group.route.path if first_group.route is not None else "root"
        key = f"{path}|{_format_group(dict(first_group.labels))}|{format_timestamp(first_ts)}"
        severity = order[top] if top >= 0 else None
        lead = max(members, key=lambda s: rank.get(s.severity, -1))  # type: ignore[arg-type]  # first of the top
        common = _common_labels(members)
        receiver = first_group.route.receiver if routed else None  # type: ignore[union-attr]

        values = {
            "name": lead.name,
            "source": lead.source,
            "severity": severity,
            "receiver": receiver,
            "count": len(members),
            "first_ts": format_timestamp(first_ts),
            "last_ts": format_timestamp(last_ts),
        }
        actions = tuple(
            action
            for rule in policy.actions
            if (action := _plan(rule, members, common, policy.target_labels)) is not None
        )
        incidents.append(
            Incident(
                key=key,
                fingerprint=sha256_hex(canonical_json(identity)),
                receiver=receiver,
                group_labels=group_labels,
                signals=tuple(sorted(signal.id for signal in members)),
                severity=severity,
                title=_title(policy.title, values, common, group_labels),
                first_ts=first_ts,
                last_ts=last_ts,
                sources=dict(sorted(Counter(signal.source for signal in members).items())),
                actions=actions,
                joined_by=joined_by,
            )
        )
    incidents.sort(key=lambda incident: (incident.first_ts, incident.key))
    planned = sum(1 for incident in incidents for action in incident.actions if action.status == "planned")
    blocked = sum(1 for incident in incidents for action in incident.actions if action.status == "blocked")
    stats = {
        "incidents_formed": len(incidents),
        "episodes_below_threshold": below,
        "actions_planned": planned,
        "actions_blocked": blocked,
    }
    return incidents, stats


# --- the whole run ------------------------------------------------------------------------------------------------


def _no_progress(stage: str, status: str, counts: Mapping[str, int]) -> None:
    pass


def replay(
    policy: Policy | Mapping[str, Any],
    signals: Iterable[Signal],
    *,
    scope: Mapping[str, str] | None = None,
    window: tuple[datetime, datetime] | None = None,
    on_progress: ProgressCallback | None = None,
) -> ReplayResult:
    """Run stages 1-3 of `policy` (a Policy, or a document for load_policy) over `signals`, reporting each stage's
    start and finish to `on_progress`. Same inputs, same result: input order, hash seed, locale and time zone do
    not matter."""
    policy = load_policy(policy)
    progress = on_progress or _no_progress
    if window is not None:
        if window[0].tzinfo is None or window[1].tzinfo is None:
            # A naive time would be read in the local time zone: the same call would differ from host to host.
            raise ValueError("window times must be timezone-aware")
        window = (window[0].astimezone(UTC), window[1].astimezone(UTC))
    with paused_gc():
        progress("ingest", "started", {})
        ingested = ingest(policy, signals, scope=scope, window=window)
        progress("ingest", "finished", {"signals_in": ingested.signals_in, "signals_selected": len(ingested.signals)})
        progress("correlate", "started", {"signals": len(ingested.signals)})
        correlated = correlate(policy, ingested)
        progress("correlate", "finished", dict(correlated.stats))
        progress("aggregate", "started", {"episodes": len(correlated.episodes)})
        incidents, aggregate_stats = aggregate(policy, correlated)
        progress("aggregate", "finished", dict(aggregate_stats))
        stats = {
            "signals_in": ingested.signals_in,
            "signals_selected": len(ingested.signals),
            **correlated.stats,
            **aggregate_stats,
        }
        suppressed = list(map(_SECOND, correlated.suppressed))
        selected = ingested.raw  # the same ids as the normalized signals, and kept for the basis anyway
        fingerprints = correlated.fingerprints
        return ReplayResult(
            incidents=incidents,
            suppressed=suppressed,
            stats=stats,
            signals_digest=ingested.digest,
            window=window,
            scope=dict(scope) if scope is not None else None,
            spec_hash=policy.spec_hash,
            fingerprints=LazyMap(lambda: map(_ID, selected), lambda: fingerprints, len(selected)),
            basis=Basis(selected, array("q", map(_FIRST, correlated.suppressed))),
        )


def replay_file(
    policy: Policy | Mapping[str, Any],
    path: str | os.PathLike[str],
    *,
    scope: Mapping[str, str] | None = None,
    window: tuple[datetime, datetime] | None = None,
    on_progress: ProgressCallback | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> ReplayResult:
    """Replay an incident bundle (tar.gz or zip) or a bare signals.jsonl. A bad line raises errors.Invalid naming its
    line number, as the upload validator would."""
    policy = load_policy(policy)
    kind = detect_kind(path)
    if kind in BUNDLE_KINDS:
        with open_bundle(path, limits=limits) as bundle:
            return replay(policy, bundle.signals(), scope=scope, window=window, on_progress=on_progress)
    with open(path, "rb") as stream:
        return replay(policy, iter_signals(stream, limits=limits), scope=scope, window=window, on_progress=on_progress)
