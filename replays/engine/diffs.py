"""Diffs between two incident sets over the same signals: a replay against its baseline, or two pipeline versions.

Both sides are first reduced to an `IncidentSet` (which signals each incident holds, each signal's fingerprint, which
signals were suppressed and why, each incident's actions), so a baseline.json and a `ReplayResult` compare the same
way. Side A is the reference (the baseline, or the other pipeline version's replay); side B is the replay the report
is about. Every list is bounded (`LIST_LIMIT` items, in a fixed order) and carries the exact `count`, so a report over
a million signals stays small and still says how much changed. docs/report-format.md describes each diff.
"""

from __future__ import annotations

import operator
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from itertools import compress
from typing import Any

from .lazymap import LazyMap, as_dict

LIST_LIMIT = 100
SAMPLE_IDS = 5  # signal ids quoted per grouped item (a move, a tightened group): enough to look one up
MATCH_THRESHOLD = Fraction(1, 2)  # a baseline and a replay incident match when their Jaccard overlap is at least this

BASELINE = "baseline"
REPLAY = "replay"


def bounded(
    items: Iterable[Any], limit: int = LIST_LIMIT, *, build: Callable[[Any], Any] | None = None
) -> dict[str, Any]:
    """{"count": exact number of items, "items": the first `limit`}; the caller sorts first, so the cut is stable.

    Given a sequence and `build`, only the kept items are built: a diff of 100,000 signals makes 100 dicts, not
    100,000, to count the rest.
    """
    if isinstance(items, Sequence):
        kept = items[:limit]
        return {"count": len(items), "items": [build(item) for item in kept] if build else list(kept)}
    chosen: list[Any] = []
    count = 0
    for item in items:
        count += 1
        if len(chosen) < limit:
            chosen.append(build(item) if build else item)
    return {"count": count, "items": chosen}


def ratio(value: Fraction | float) -> float:
    """A share as a JSON number: 4 decimals, so reports do not change with float noise."""
    return round(float(value), 4)


# --- one side of a comparison -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IncidentSet:
    """One side of a comparison, reduced to what diffs need.

    `known` is the set of signals whose fate this side records, or None when it records every signal it saw (a
    replay). A baseline records only the signals it names (members and suppressed); every other signal of the window
    is "not in any baseline incident", which is a fact, but whether production suppressed it is unknown.
    `kind` is "baseline" or "replay": fingerprints and suppression rules of two replays share one vocabulary, a
    baseline's do not (its fingerprints are production's own strings, its suppressions carry no rule).
    """

    kind: str
    members: dict[str, tuple[str, ...]]  # incident key -> the signals it accounts for, sorted
    fingerprints: Mapping[str, str]
    suppressed: Mapping[str, tuple[str | None, str | None]]
    actions: dict[str, tuple[dict[str, Any], ...]] = field(default_factory=dict)
    titles: dict[str, str] = field(default_factory=dict)
    known: frozenset[str] | None = None
    seen: frozenset[str] | None = None  # the signals this side's selection held (a scoped replay sees fewer)

    def member_of(self) -> dict[str, str]:
        return {signal: key for key, signals in self.members.items() for signal in signals}


def baseline_set(baseline: Mapping[str, Any]) -> IncidentSet:
    """A baseline.json document as an IncidentSet: each incident holds its members and its suppressed signals (all
    the signals it accounts for), which also take its fingerprint; suppressions carry no reason or rule (production
    did not record them)."""
    members: dict[str, tuple[str, ...]] = {}
    fingerprints: dict[str, str] = {}
    suppressed: dict[str, tuple[str | None, str | None]] = {}
    for incident in baseline.get("incidents", []):
        key = incident["id"]
        members[key] = tuple(sorted([*incident["members"], *incident.get("suppressed", [])]))
        for signal in incident["members"]:
            fingerprints[signal] = incident["fingerprint"]
        for signal in incident.get("suppressed", []):
            fingerprints[signal] = incident["fingerprint"]
            suppressed[signal] = (None, None)
    known = frozenset(fingerprints)
    return IncidentSet(BASELINE, members, fingerprints, suppressed, known=known, titles={k: k for k in members})


def restrict(side: IncidentSet, selection: frozenset[str]) -> IncidentSet:
    """The side as seen through a replay's selection: signals outside it dropped, incidents left empty dropped.

    A replay scoped to one service and POP is compared with the baseline's incidents at that service and POP, not
    blamed for every baseline incident elsewhere.
    """
    members = {
        key: kept for key, signals in side.members.items() if (kept := tuple(s for s in signals if s in selection))
    }
    return IncidentSet(
        side.kind,
        members,
        {s: fp for s, fp in side.fingerprints.items() if s in selection},
        {s: why for s, why in side.suppressed.items() if s in selection},
        actions={key: side.actions[key] for key in members if key in side.actions},
        titles={key: side.titles[key] for key in members if key in side.titles},
        known=side.known & selection if side.known is not None else None,
        seen=side.seen & selection if side.seen is not None else selection,
    )


def action_entry(action: Any) -> dict[str, Any]:
    """One planned action as plain JSON, whether correlate gives a dict or an object with as_dict()."""
    data = action.as_dict() if hasattr(action, "as_dict") else dict(action)
    targets = data.get("targets") or {}
    return {
        "name": data.get("name"),
        "capability": data.get("capability"),
        "targets": {key: sorted(targets.get(key) or []) for key in ("pops", "regions", "services")},
        "status": data.get("status"),
        "reason": data.get("reason"),
    }


_SIGNAL, _BY = operator.attrgetter("signal"), operator.attrgetter("by")
_REASON_RULE = operator.attrgetter("reason", "rule")
MAX_BY_CHAIN = 64  # a suppressed signal's `by` chain longer than this is not followed (correlate makes them short)


def accounted(result: Any) -> dict[str, tuple[str, ...]]:
    """Incident key -> the signals it accounts for: its members, plus every suppressed signal whose `by` leads to one
    of them (followed through further suppressed signals): the duplicates of its members and the alerts they
    inhibited. Threshold- and silence-suppressed signals have no `by` and belong to no incident. This is what a
    baseline records as an incident's members and suppressed, so both sides are compared on the same footing."""
    owner = {signal: incident.key for incident in result.incidents for signal in incident.signals}
    # Only duplicates and inhibited signals name a `by`; most suppressed signals (thresholds) are skipped in C.
    caused = list(compress(result.suppressed, map(_BY, result.suppressed)))
    by = dict(zip(map(_SIGNAL, caused), map(_BY, caused), strict=True))
    extents: dict[str, list[str]] = {incident.key: list(incident.signals) for incident in result.incidents}
    for item in caused:
        cause, steps = item.by, 0
        while cause is not None and cause not in owner and steps < MAX_BY_CHAIN:
            cause, steps = by.get(cause), steps + 1
        if cause is not None and cause in owner:
            extents[owner[cause]].append(item.signal)
    return {key: tuple(sorted(signals)) for key, signals in extents.items()}


def result_set(result: Any, *, compared: bool = True) -> IncidentSet:
    """A ReplayResult as an IncidentSet, each incident holding the signals it accounts for (see `accounted`).

    `compared=False` says the set will not be diffed or matched against a baseline: then the set of signals the
    replay saw is left out (None), and the per-signal maps stay LazyMaps, built only if something looks one up.
    Building them costs a fifth of a second a million signals, and a report without a baseline or a compare replay
    needs neither."""
    members = accounted(result)
    actions = {
        incident.key: tuple(action_entry(action) for action in incident.actions) for incident in result.incidents
    }
    titles = {incident.key: incident.title or incident.key for incident in result.incidents}
    # A window suppresses most of its signals: built in C (Suppressed is a NamedTuple: signal, reason, rule, by).
    items = result.suppressed
    if not compared:
        suppressed = LazyMap(lambda: map(_SIGNAL, items), lambda: map(_REASON_RULE, items), len(items))
        fingerprints = result.fingerprints or {}  # read only here: no need to copy a million entries
        return IncidentSet(REPLAY, members, fingerprints, suppressed, actions=actions, titles=titles, seen=None)
    suppressed = dict(zip(map(_SIGNAL, items), map(_REASON_RULE, items), strict=True))
    fingerprints = as_dict(result.fingerprints or {})  # diffs look up every signal: in C, on the built dict
    # A replay's fingerprints name every signal it selected, so they are usually all it saw; the union is only built
    # for a result that lacks some (a million-signal union costs a fifth of a second). A replayed result (with a
    # basis) holds its suppressed signals and members inside its selection by construction.
    seen = frozenset(fingerprints)
    if getattr(result, "basis", None) is None:
        missing = [group for group in (suppressed, *members.values()) if not seen.issuperset(group)]
        if missing:
            seen = seen.union(*missing)
    return IncidentSet(REPLAY, members, fingerprints, suppressed, actions=actions, titles=titles, seen=seen)


# --- matching incidents by member overlap -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    a: str
    b: str
    shared: int
    union: int

    @property
    def jaccard(self) -> Fraction:
        return Fraction(self.shared, self.union)


@dataclass(frozen=True)
class Matching:
    """How the incidents of A and B correspond.

    `overlaps` holds every pair of incidents sharing at least one signal. `matched` is a one-to-one subset with a
    Jaccard overlap of at least MATCH_THRESHOLD, chosen greedily (highest overlap first; ties by more shared signals,
    then A's key, then B's key). `split`: A incidents whose members lie in two or more B incidents. `merged`: B
    incidents holding members of two or more A incidents. `missing`: A incidents that are unmatched and take part in
    no split or merge. `new`: B incidents that are unmatched and take part in no split or merge.
    """

    a: IncidentSet
    b: IncidentSet
    overlaps: dict[tuple[str, str], Pair]
    matched: dict[str, str]  # A key -> B key
    split: dict[str, list[str]]  # A key -> the B keys holding its members
    merged: dict[str, list[str]]  # B key -> the A keys whose members it holds
    missing: list[str]
    new: list[str]
    best_a: dict[str, Pair] = field(default_factory=dict)  # A key -> its best-overlapping pair, by _pair_rank
    best_b: dict[str, Pair] = field(default_factory=dict)

    @property
    def matched_b(self) -> dict[str, str]:
        return {b: a for a, b in self.matched.items()}

    def best_for_a(self, key: str) -> Pair | None:
        """The B incident overlapping A's `key` most (ties: more shared signals, then the smaller keys)."""
        return self.best_a.get(key)

    def best_for_b(self, key: str) -> Pair | None:
        return self.best_b.get(key)


def _pair_rank(pair: Pair) -> tuple[Fraction, int, str, str]:
    """Sort key putting the best pair first: highest overlap, then most shared signals, then the keys."""
    return (-pair.jaccard, -pair.shared, pair.a, pair.b)


def match_incidents(a: IncidentSet, b: IncidentSet) -> Matching:
    """Match the incidents of two sides by member overlap (docs/report-format.md, "Matching")."""
    b_of = b.member_of()
    shared: Counter[tuple[str, str]] = Counter()
    for key, signals in a.members.items():
        for signal in signals:
            other = b_of.get(signal)
            if other is not None:
                shared[(key, other)] += 1
    overlaps = {
        (ka, kb): Pair(ka, kb, n, len(a.members[ka]) + len(b.members[kb]) - n) for (ka, kb), n in shared.items()
    }
    matched: dict[str, str] = {}
    taken: set[str] = set()
    candidates = sorted(
        (pair for pair in overlaps.values() if pair.jaccard >= MATCH_THRESHOLD),
        key=_pair_rank,
    )
    for pair in candidates:
        if pair.a not in matched and pair.b not in taken:
            matched[pair.a] = pair.b
            taken.add(pair.b)
    spread: dict[str, list[str]] = defaultdict(list)
    sources: dict[str, list[str]] = defaultdict(list)
    for ka, kb in sorted(overlaps):
        spread[ka].append(kb)
        sources[kb].append(ka)
    split = {ka: kbs for ka, kbs in spread.items() if len(kbs) >= 2}
    merged = {kb: kas for kb, kas in sources.items() if len(kas) >= 2}
    in_merge_a = {ka for kas in merged.values() for ka in kas}
    in_split_b = {kb for kbs in split.values() for kb in kbs}
    missing = sorted(k for k in a.members if k not in matched and k not in split and k not in in_merge_a)
    new = sorted(k for k in b.members if k not in taken and k not in merged and k not in in_split_b)
    best_a: dict[str, Pair] = {}
    best_b: dict[str, Pair] = {}
    for pair in overlaps.values():
        rank = _pair_rank(pair)
        if pair.a not in best_a or rank < _pair_rank(best_a[pair.a]):
            best_a[pair.a] = pair
        if pair.b not in best_b or rank < _pair_rank(best_b[pair.b]):
            best_b[pair.b] = pair
    return Matching(a, b, overlaps, matched, dict(split), dict(merged), missing, new, best_a, best_b)


def _size_order(members: Mapping[str, tuple[str, ...]]) -> Any:
    return lambda key: (-len(members[key]), key)


# --- the four diffs ---------------------------------------------------------------------------------------------------


def fingerprint_diff(a: IncidentSet, b: IncidentSet) -> dict[str, Any]:
    """Signals whose identity changed, over the signals both sides fingerprinted.

    A fingerprint group of A whose signals now carry several fingerprints in B is *tightened*; several groups of A
    now sharing one fingerprint in B are *loosened*. `changed` lists the signals of tightened or loosened groups.
    Between two replays a group kept whole under a new fingerprint string is also counted as `renamed`; against a
    baseline, whose fingerprints are production's own strings, only the grouping is compared.
    """
    before_fp, after_fp = a.fingerprints, b.fingerprints
    if len(before_fp) == len(after_fp) and all(map(operator.is_, before_fp, after_fp)):
        # Two replays of one selection list the same signals in the same order, as the same str objects: the values
        # pair up by position. A lookup per signal, in hash order, cost ten times this.
        common = list(before_fp)
        befores, afters = list(before_fp.values()), list(after_fp.values())
    else:
        # Set algebra, map and zip keep the per-signal work in C: a million signals take about a second.
        common = list(after_fp.keys() & before_fp.keys())
        befores = list(map(before_fp.__getitem__, common))
        afters = list(map(after_fp.__getitem__, common))
    pairs = Counter(zip(befores, afters, strict=True))
    # Each (before, after) pair is counted once already, so each lands in one slot of each side: plain dicts, not a
    # Counter per fingerprint (tens of thousands of them, and a Counter's constructor costs ten times a dict's).
    after_of: dict[str, dict[str, int]] = {}
    before_of: dict[str, dict[str, int]] = {}
    for (fa, fb), n in pairs.items():
        after_of.setdefault(fa, {})[fb] = n
        before_of.setdefault(fb, {})[fa] = n
    tightened = {fa for fa, after in after_of.items() if len(after) >= 2}
    loosened = {fb for fb, before in before_of.items() if len(before) >= 2}
    changed_pairs = {pair for pair in pairs if pair[0] in tightened or pair[1] in loosened}
    changed = sorted(compress(common, map(changed_pairs.__contains__, zip(befores, afters, strict=True))))
    samples: dict[tuple[str, str], list[str]] = defaultdict(list)
    for signal in changed:
        for group in (("a", before_fp[signal]), ("b", after_fp[signal])):
            if len(samples[group]) < SAMPLE_IDS:
                samples[group].append(signal)

    def ranked(counts: dict[str, int]) -> list[dict[str, Any]]:
        return [{"fingerprint": fp, "signals": n} for fp, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]

    tightened_items = sorted(
        (
            {
                "before": fa,
                "after": ranked(after_of[fa])[:LIST_LIMIT],
                "groups_after": len(after_of[fa]),
                "signals": sum(after_of[fa].values()),
                "sample": samples[("a", fa)],
            }
            for fa in tightened
        ),
        key=lambda item: (-item["signals"], item["before"]),
    )
    loosened_items = sorted(
        (
            {
                "after": fb,
                "before": ranked(before_of[fb])[:LIST_LIMIT],
                "groups_before": len(before_of[fb]),
                "signals": sum(before_of[fb].values()),
                "sample": samples[("b", fb)],
            }
            for fb in loosened
        ),
        key=lambda item: (-item["signals"], item["after"]),
    )
    diff: dict[str, Any] = {
        "signals_compared": len(common),
        "groups_before": len(after_of),
        "groups_after": len(before_of),
        "changed": bounded(changed, build=lambda s: {"signal": s, "before": before_fp[s], "after": after_fp[s]}),
        "tightened": bounded(tightened_items),
        "loosened": bounded(loosened_items),
    }
    if a.kind == REPLAY and b.kind == REPLAY:
        renamed = sorted(
            fa
            for fa, after in after_of.items()
            if len(after) == 1 and next(iter(after)) != fa and len(before_of[next(iter(after))]) == 1
        )
        diff["renamed"] = bounded({"before": fa, "after": next(iter(after_of[fa]))} for fa in renamed)
    return diff


def suppression_diff(a: IncidentSet, b: IncidentSet) -> dict[str, Any]:
    """Signals newly suppressed or newly let through, with the rule on the side that suppressed them.

    Only signals whose fate both sides record are compared: against a baseline, the signals it names (a signal in no
    baseline incident may have been suppressed or simply ignored); a signal outside a scoped replay's selection is not
    compared either. Between two replays, a signal suppressed on both sides by a different reason or rule is
    `rule_changed`.
    """

    def recorded(signals: set[str]) -> list[str]:
        for limit in (a.known, b.known, a.seen, b.seen):
            if limit is not None:
                signals &= limit
        return sorted(signals)

    newly_suppressed = recorded(b.suppressed.keys() - a.suppressed.keys())
    let_through = recorded(a.suppressed.keys() - b.suppressed.keys())
    both_known = a.kind == REPLAY and b.kind == REPLAY
    # map/compress keep the per-signal work in C (a million suppressed signals: 0.3 s instead of 1.2 s). A signal
    # missing from A yields B's own value, so it compares equal and is not counted as a changed rule.
    b_sup = b.suppressed
    rule_changed = (
        sorted(compress(b_sup, map(operator.ne, map(a.suppressed.get, b_sup, b_sup.values()), b_sup.values())))
        if both_known
        else []
    )
    by_rule: Counter[tuple[str, str, str]] = Counter()
    for change, side, signals in (
        ("newly_suppressed", b, newly_suppressed),
        ("newly_let_through", a, let_through),
        ("rule_changed", b, rule_changed),
    ):
        for (reason, rule), n in Counter(map(side.suppressed.__getitem__, signals)).items():
            by_rule[(change, reason or "", rule or "")] += n

    def entry(signal: str, side: IncidentSet) -> dict[str, Any]:
        reason, rule = side.suppressed[signal]
        return {"signal": signal, "reason": reason, "rule": rule}

    return {
        "newly_suppressed": bounded(newly_suppressed, build=lambda s: entry(s, b)),
        "newly_let_through": bounded(let_through, build=lambda s: entry(s, a)),
        "rule_changed": bounded(
            rule_changed,
            build=lambda s: {
                "signal": s,
                "before": {"reason": a.suppressed[s][0], "rule": a.suppressed[s][1]},
                "after": {"reason": b.suppressed[s][0], "rule": b.suppressed[s][1]},
            },
        ),
        "by_rule": bounded(
            {"change": change, "reason": reason or None, "rule": rule or None, "signals": n}
            for (change, reason, rule), n in sorted(by_rule.items(), key=lambda kv: (-kv[1], kv[0]))
        ),
    }


def correlation_diff(matching: Matching) -> dict[str, Any]:
    """Splits, merges and membership moves between the incidents of A and B.

    A signal *moves* when the B incident holding it is not the match of the A incident that held it (so every signal
    of an unmatched A incident moves); `from` or `to` is null when the signal was in no incident on that side (it
    joined or left incidents). Moves are grouped by (from, to), largest first.
    """
    a, b = matching.a, matching.b
    a_of, b_of = a.member_of(), b.member_of()
    signals = a_of.keys() | b_of.keys()
    # A signal outside either side's selection (a scoped replay) did not move: it was not replayed.
    for limit in (a.seen, b.seen):
        if limit is not None:
            signals &= limit
    ordered = list(signals)
    homes = list(zip(map(a_of.get, ordered), map(b_of.get, ordered), strict=True))
    matched = matching.matched

    def moved(home: tuple[str | None, str | None]) -> bool:
        source, target = home
        if source is None:
            return target is not None
        return matched.get(source) is None or matched[source] != target

    # Few distinct (from, to) pairs, however many signals: judge each pair once, count the signals in C.
    moving = {home for home in set(homes) if moved(home)}
    moves = Counter(compress(homes, map(moving.__contains__, homes)))
    samples: dict[tuple[str | None, str | None], list[str]] = defaultdict(list)
    for signal in sorted(compress(ordered, map(moving.__contains__, homes))):
        home = (a_of.get(signal), b_of.get(signal))
        if len(samples[home]) < SAMPLE_IDS:
            samples[home].append(signal)
    a_order, b_order = _size_order(a.members), _size_order(b.members)
    return {
        "incidents_before": len(a.members),
        "incidents_after": len(b.members),
        "splits": bounded(
            {
                "from": ka,
                "signals": len(a.members[ka]),
                "into": [
                    {"incident": kb, "signals": matching.overlaps[(ka, kb)].shared}
                    for kb in sorted(kbs, key=lambda kb: (-matching.overlaps[(ka, kb)].shared, kb))
                ][:LIST_LIMIT],
            }
            for ka, kbs in sorted(matching.split.items(), key=lambda kv: a_order(kv[0]))
        ),
        "merges": bounded(
            {
                "into": kb,
                "signals": len(b.members[kb]),
                "from": [
                    {"incident": ka, "signals": matching.overlaps[(ka, kb)].shared}
                    for ka in sorted(kas, key=lambda ka: (-matching.overlaps[(ka, kb)].shared, ka))
                ][:LIST_LIMIT],
            }
            for kb, kas in sorted(matching.merged.items(), key=lambda kv: b_order(kv[0]))
        ),
        "moves": bounded(
            {"from": source, "to": target, "signals": n, "sample": samples[(source, target)]}
            for (source, target), n in sorted(moves.items(), key=lambda kv: (-kv[1], kv[0][0] or "", kv[0][1] or ""))
        ),
        "signals_moved": sum(moves.values()),
    }


def _action_key(action: Mapping[str, Any]) -> tuple[str, str]:
    return (action.get("name") or "", action.get("capability") or "")


def action_diff(matching: Matching) -> dict[str, Any] | None:
    """Actions added, removed, or changed (status, reason or targets) between matched incidents; the actions of an
    unmatched incident count as added (B) or removed (A). None against a baseline, which records no actions."""
    a, b = matching.a, matching.b
    if a.kind != REPLAY or b.kind != REPLAY:
        return None
    added: list[dict[str, Any]] = []
    removed: list[dict[str, Any]] = []
    changed: list[dict[str, Any]] = []

    def state(action: Mapping[str, Any]) -> dict[str, Any]:
        return {"status": action["status"], "reason": action["reason"], "targets": action["targets"]}

    matched_b = matching.matched_b
    for kb in sorted(b.members):
        ka = matched_b.get(kb)
        before = {_action_key(x): x for x in a.actions.get(ka, ())} if ka is not None else {}
        after = {_action_key(x): x for x in b.actions.get(kb, ())}
        for key in sorted(after.keys() - before.keys()):
            added.append({"incident": kb, "name": key[0], "capability": key[1], "after": state(after[key])})
        for key in sorted(before.keys() - after.keys()):
            removed.append(
                {"incident": kb, "was_incident": ka, "name": key[0], "capability": key[1], "before": state(before[key])}
            )
        for key in sorted(before.keys() & after.keys()):
            if state(before[key]) != state(after[key]):
                changed.append(
                    {
                        "incident": kb,
                        "was_incident": ka,
                        "name": key[0],
                        "capability": key[1],
                        "before": state(before[key]),
                        "after": state(after[key]),
                    }
                )
    for ka in sorted(k for k in a.members if k not in matching.matched):
        for key, action in sorted((_action_key(x), x) for x in a.actions.get(ka, ())):
            removed.append(
                {"incident": None, "was_incident": ka, "name": key[0], "capability": key[1], "before": state(action)}
            )
    return {"added": bounded(added), "removed": bounded(removed), "changed": bounded(changed)}


def diff_sets(a: IncidentSet, b: IncidentSet, matching: Matching | None = None) -> dict[str, Any]:
    """All four diffs of B against A, under one `against` label ("baseline" or "replay")."""
    matching = matching or match_incidents(a, b)
    return {
        "against": a.kind,
        "fingerprint": fingerprint_diff(a, b),
        "suppression": suppression_diff(a, b),
        "correlation": correlation_diff(matching),
        "actions": action_diff(matching),
    }
