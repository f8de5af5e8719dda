"""The replay report: what a replay formed, how it compares with the baseline and another pipeline version, in JSON.

`build_report` turns a ReplayResult (and optionally the bundle's baseline.json and a second replay of the same
signals under another policy) into one JSON document: incidents, suppressed signals, stats, the parity report, the
diffs, highlights a person reads first, a timeline and the input selection. `report_sha256` seals it: the SHA-256 of
the report's canonical JSON without that key. docs/report-format.md documents every field and rule.
"""

from __future__ import annotations

import heapq
import operator
from collections import Counter
from collections.abc import Iterable, Mapping
from fractions import Fraction
from itertools import compress
from typing import Any

from .canonical import canonical_json, sha256_hex, spec_hash
from .diffs import (
    LIST_LIMIT,
    IncidentSet,
    Matching,
    baseline_set,
    bounded,
    diff_sets,
    match_incidents,
    ratio,
    restrict,
    result_set,
)
from .formats import format_timestamp
from .gcpause import paused_gc
from .highlights import HIGHLIGHT_LIMIT, Namer, arrow, build_highlights
from .highlights import plural as _plural
from .timeline import SignalProfile

REPORT_FORMAT = "traceflux.replay-report/v1"
SHA_KEY = "report_sha256"
# How much of each list a report carries; the exact totals are always in `stats` or the list's `count`.
INCIDENT_LIMIT = 1000
MEMBER_LIMIT = 500
SUPPRESSED_LIMIT = 1000

# Confidence (docs/report-format.md, "Confidence"). Low when any LOW rule holds; high when every HIGH rule holds.
LOW_CORRELATED = 10
LOW_COVERAGE = Fraction(1, 2)
LOW_SUPPRESSED = Fraction(995, 1000)
HIGH_SELECTED = 1000
HIGH_CORRELATED = 100
HIGH_COVERAGE = Fraction(95, 100)
HIGH_SUPPRESSED = Fraction(99, 100)
HIGH_BASELINE_INCIDENTS = 3


# --- parity -----------------------------------------------------------------------------------------------------------


def parity_score(matching: Matching) -> float:
    """Weighted member-overlap F1: sum over matched pairs of 2·|B∩R|, over the members of every baseline and every
    replay incident. 1.0 exactly when every incident on both sides is matched with identical members; 0 when
    nothing matches. Two empty sides agree perfectly (1.0)."""
    total = sum(len(m) for m in matching.a.members.values()) + sum(len(m) for m in matching.b.members.values())
    if total == 0:
        return 1.0
    shared = sum(matching.overlaps[(a, b)].shared for a, b in matching.matched.items())
    return ratio(Fraction(2 * shared, total))


def baseline_coverage(baseline: Mapping[str, Any], seen: frozenset[str]) -> Fraction | None:
    """The share of the signals the baseline names (members and suppressed) that the replay's selection held."""
    named = [
        s for incident in baseline.get("incidents", []) for role in ("members", "suppressed") for s in incident[role]
    ]
    if not named:
        return None
    return Fraction(sum(1 for s in named if s in seen), len(named))


def confidence(
    *, selected: int, correlated: int, suppressed: int, coverage: Fraction | None, baseline_incidents: int
) -> dict[str, Any]:
    """How far to trust the parity score, from how much evidence it rests on.

    Most telemetry is suppressed by design (below threshold, duplicates), so the amount of evidence is the number of
    signals that reached correlation; suppression only counts against confidence when it leaves almost nothing.

    low    the baseline has no incidents, fewer than 10 signals reached correlation, the selection holds under half of
           the signals the baseline names, or over 99.5% of the selected signals were suppressed
    high   at least 1000 signals selected, at least 100 correlated, at least 3 baseline incidents, at least 95% of the
           baseline's signals in the selection, and at most 99% of the selected signals suppressed
    medium otherwise. `reasons` lists the rules that kept it from high (or made it low).
    """
    share = Fraction(suppressed, selected) if selected else Fraction(1)
    low: list[str] = []
    if baseline_incidents == 0:
        low.append("the baseline has no incidents")
    if correlated < LOW_CORRELATED:
        low.append(f"only {_plural(correlated, 'signal')} reached correlation (under {LOW_CORRELATED})")
    if coverage is not None and coverage < LOW_COVERAGE:
        low.append(f"the selection holds {_percent(coverage)} of the baseline's signals (under 50%)")
    if share > LOW_SUPPRESSED:
        low.append(f"{_percent(share)} of the selected signals were suppressed (over 99.5%)")
    if low:
        return {"level": "low", "reasons": low}
    medium: list[str] = []
    if selected < HIGH_SELECTED:
        medium.append(f"{_plural(selected, 'signal')} selected (under {HIGH_SELECTED})")
    if correlated < HIGH_CORRELATED:
        medium.append(f"{_plural(correlated, 'signal')} reached correlation (under {HIGH_CORRELATED})")
    if baseline_incidents < HIGH_BASELINE_INCIDENTS:
        medium.append(f"the baseline has {_plural(baseline_incidents, 'incident')} (under {HIGH_BASELINE_INCIDENTS})")
    if coverage is not None and coverage < HIGH_COVERAGE:
        medium.append(f"the selection holds {_percent(coverage)} of the baseline's signals (under 95%)")
    if share > HIGH_SUPPRESSED:
        medium.append(f"{_percent(share)} of the selected signals were suppressed (over 99%)")
    return {"level": "medium" if medium else "high", "reasons": medium}


def _percent(share: Fraction) -> str:
    """A share for a sentence, never rounded onto a threshold it is under or over (99.6% is not "100%")."""
    return f"{float(share) * 100:.1f}%".replace(".0%", "%")


def _best(pair: Any, side: str) -> dict[str, Any] | None:
    if pair is None:
        return None
    return {"incident": pair.b if side == "b" else pair.a, "shared": pair.shared, "jaccard": ratio(pair.jaccard)}


def parity_section(
    matching: Matching, *, result: Any, baseline: Mapping[str, Any], coverage: Fraction | None, actions: dict[str, Any]
) -> dict[str, Any]:
    a, b = matching.a, matching.b
    stats = result.stats
    signals_in = int(stats.get("signals_in", 0))
    missing, new = set(matching.missing), set(matching.new)
    a_order = sorted(a.members, key=lambda k: (-len(a.members[k]), k))
    b_order = sorted(b.members, key=lambda k: (-len(b.members[k]), k))
    selected = int(stats.get("signals_selected", signals_in))
    suppressed = int(stats.get("signals_suppressed", 0))
    level = confidence(
        selected=selected,
        correlated=int(stats.get("signals_correlated", selected - suppressed)),
        suppressed=suppressed,
        coverage=coverage,
        baseline_incidents=len(baseline.get("incidents", [])),
    )
    return {
        "baseline_incidents": len(a.members),
        "replay_incidents": len(b.members),
        "alerts_in_incidents_out": {
            "baseline": arrow(signals_in, len(a.members)),
            "replay": arrow(signals_in, len(b.members)),
        },
        "score": parity_score(matching),
        "confidence": level["level"],
        "confidence_reasons": level["reasons"],
        "baseline_coverage": ratio(coverage) if coverage is not None else None,
        "matched": bounded(
            {
                "baseline": ka,
                "replay": matching.matched[ka],
                "shared": matching.overlaps[(ka, matching.matched[ka])].shared,
                "baseline_signals": len(a.members[ka]),
                "replay_signals": len(b.members[matching.matched[ka]]),
                "jaccard": ratio(matching.overlaps[(ka, matching.matched[ka])].jaccard),
            }
            for ka in a_order
            if ka in matching.matched
        ),
        "split": bounded(
            {
                "baseline": ka,
                "signals": len(a.members[ka]),
                "into": [{"replay": kb, "shared": matching.overlaps[(ka, kb)].shared} for kb in matching.split[ka]],
            }
            for ka in a_order
            if ka in matching.split
        ),
        "merged": bounded(
            {
                "replay": kb,
                "signals": len(b.members[kb]),
                "from": [{"baseline": ka, "shared": matching.overlaps[(ka, kb)].shared} for ka in matching.merged[kb]],
            }
            for kb in b_order
            if kb in matching.merged
        ),
        "missing": bounded(
            {"baseline": ka, "signals": len(a.members[ka]), "best": _best(matching.best_for_a(ka), "b")}
            for ka in a_order
            if ka in missing
        ),
        "new": bounded(
            {"replay": kb, "signals": len(b.members[kb]), "best": _best(matching.best_for_b(kb), "a")}
            for kb in b_order
            if kb in new
        ),
        "scope": dict(sorted(result.scope.items())) if result.scope is not None else None,
        "actions": actions,
    }


# --- incidents, suppressed, actions -----------------------------------------------------------------------------------


def _incident_entry(incident: Any, *, accounted: int, match: dict[str, Any] | None) -> dict[str, Any]:
    """correlate's own form of the incident, its member list cut to MEMBER_LIMIT; `signal_count` is the exact number
    of members, `signals_accounted` adds the signals suppressed on their account (what parity compares)."""
    entry = incident.as_dict()
    signals = list(incident.signals)
    entry["signals"] = signals[:MEMBER_LIMIT]
    entry["signal_count"] = len(signals)
    entry["signals_accounted"] = accounted
    if match is not None:
        entry["baseline_match"] = match
    return entry


def actions_section(result: Any) -> dict[str, Any]:
    """Every action the replay's incidents plan, with its gate: planned, or blocked and why."""
    items = []
    for incident in result.incidents:
        for action in incident.actions:
            items.append({"incident": incident.key, **action.as_dict()})
    status = Counter(item["status"] for item in items)
    return {"planned": status.get("planned", 0), "blocked": status.get("blocked", 0), "items": bounded(items)}


# --- the report -------------------------------------------------------------------------------------------------------


def _window_json(window: Any) -> dict[str, str] | None:
    if window is None:
        return None
    return {"start": format_timestamp(window[0]), "end": format_timestamp(window[1])}


def build_report(
    result: Any,
    *,
    policy_spec: dict[str, Any],
    baseline: Mapping[str, Any] | None = None,
    compare: Any = None,
    compare_spec: dict[str, Any] | None = None,
    signals: Iterable[Any] | None = None,
) -> dict[str, Any]:
    """The report of `result` (a ReplayResult from replaying `policy_spec`).

    baseline     baseline.json of the bundle: adds the parity report and diffs against it
    compare      a ReplayResult of the same signals under another policy (`compare_spec`), the reference version: adds
                 diffs of this replay against it
    signals      the signals replayed, read once more (an iterable of Signal): the timeline, counts by source and the
                 names highlights use come from them; without it those parts are left empty
    """
    with paused_gc():  # the diffs build hundreds of thousands of small objects; none forms a cycle
        return _build_report(result, policy_spec, baseline, compare, compare_spec, signals)


def _build_report(
    result: Any,
    policy_spec: dict[str, Any],
    baseline: Mapping[str, Any] | None,
    compare: Any,
    compare_spec: dict[str, Any] | None,
    signals: Iterable[Any] | None,
) -> dict[str, Any]:
    digest = spec_hash(policy_spec)
    if result.spec_hash != digest:
        raise ValueError(f"the result was replayed under {result.spec_hash}, not policy_spec ({digest})")
    if compare is not None:
        if compare_spec is None:
            raise ValueError("a compare result needs its compare_spec")
        if compare.spec_hash != spec_hash(compare_spec):
            raise ValueError(f"the compare result was replayed under {compare.spec_hash}, not compare_spec")
        if compare.signals_digest != result.signals_digest:
            raise ValueError("the compare result replayed different signals (its signals_digest differs)")

    basis = getattr(result, "basis", None)  # a replayed result's own selection (correlate.Basis)
    # The replay's seen-set and per-signal maps are read only against a baseline or a compare replay, or to read the
    # signals again without a basis.
    replay_side = result_set(result, compared=baseline is not None or compare is not None or basis is None)
    seen = replay_side.seen or frozenset()
    baseline_side: IncidentSet | None = None
    coverage: Fraction | None = None
    if baseline is not None:
        coverage = baseline_coverage(baseline, seen)
        # A scoped replay is compared with the baseline as seen through the same selection.
        baseline_side = restrict(baseline_set(baseline), seen)
    compare_side = result_set(compare) if compare is not None else None

    to_baseline = match_incidents(baseline_side, replay_side) if baseline_side is not None else None
    to_compare = match_incidents(compare_side, replay_side) if compare_side is not None else None
    diffs = {
        "baseline": diff_sets(baseline_side, replay_side, to_baseline) if baseline_side is not None else None,
        "compare": diff_sets(compare_side, replay_side, to_compare) if compare_side is not None else None,
    }

    profile = None
    if signals is not None:
        wanted: set[str] = set()
        for side in (replay_side, baseline_side, compare_side):
            if side is not None:
                for members in side.members.values():
                    wanted.update(members)
        for diff in diffs.values():
            if diff is not None:
                for kind in ("tightened", "loosened"):
                    for item in diff["fingerprint"][kind]["items"]:
                        wanted.update(item["sample"])
        if basis is not None:
            # The replay's own selection, in order, with its suppressions by position: no lookups by id.
            profile = SignalProfile.collect_replayed(
                basis.signals,
                suppressed=result.suppressed,
                suppressed_at=basis.suppressed_at,
                incident_of=replay_side.member_of(),
                wanted=wanted,
            )
        else:
            narrowed = result.scope is not None or result.window is not None
            profile = SignalProfile.collect(
                signals,
                selected=seen if narrowed else None,  # without a scope or sub-window the replay saw every signal
                incident_of=replay_side.member_of(),
                suppressed=replay_side.suppressed,
                wanted=wanted,
            )

    actions = actions_section(result)
    stats = {key: int(value) for key, value in sorted(result.stats.items())}
    stats["alerts_in_incidents_out"] = arrow(stats.get("signals_in", 0), len(result.incidents))

    matches = {}
    if to_baseline is not None:
        for ka, kb in to_baseline.matched.items():
            pair = to_baseline.overlaps[(ka, kb)]
            matches[kb] = {"incident": ka, "jaccard": ratio(pair.jaccard)}
    incidents = [
        _incident_entry(
            i, accounted=len(replay_side.members[i.key]), match=matches.get(i.key) if baseline is not None else None
        )
        for i in result.incidents[:INCIDENT_LIMIT]
    ]
    if basis is not None and profile is not None:
        by_rule = Counter({why: span[2] for why, span in profile.suppressed_spans.items()})  # counted already
    else:
        by_rule = Counter(map(operator.attrgetter("reason", "rule"), result.suppressed))
    suppressed = [item.as_dict() for item in first_suppressed(result.suppressed, SUPPRESSED_LIMIT)]

    parity = None
    if to_baseline is not None and baseline is not None:
        parity = parity_section(to_baseline, result=result, baseline=baseline, coverage=coverage, actions=actions)

    highlights = build_highlights(
        signals_in=stats.get("signals_in", 0),
        incidents=len(result.incidents),
        namer=Namer(profile),
        actions=actions,
        parity=parity,
        baseline=(diffs["baseline"], to_baseline) if diffs["baseline"] is not None and to_baseline else None,
        compare=(diffs["compare"], to_compare) if diffs["compare"] is not None and to_compare else None,
        compare_name=compare_spec.get("name") if compare_spec is not None else None,
    )

    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "policy": {
            "spec_hash": digest,
            "name": policy_spec.get("name"),
            "compare_spec_hash": spec_hash(compare_spec) if compare_spec is not None else None,
            "compare_name": compare_spec.get("name") if compare_spec is not None else None,
        },
        "input": {
            "signals_digest": result.signals_digest,
            "signals": stats.get("signals_in", 0),
            "signals_selected": stats.get("signals_selected", stats.get("signals_in", 0)),
            "by_source": dict(sorted(profile.by_source.items())) if profile is not None else None,
            "window": _window_json(result.window),
            "scope": dict(sorted(result.scope.items())) if result.scope is not None else None,
            "baseline": (
                {
                    "incidents": len(baseline.get("incidents", [])),
                    "coverage": parity["baseline_coverage"] if parity else None,
                }
                if baseline is not None
                else None
            ),
        },
        "stats": stats,
        "incidents": incidents,
        "suppressed": suppressed,
        "suppressed_by_rule": [
            {"reason": reason, "rule": rule, "signals": n}
            for (reason, rule), n in sorted(by_rule.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
        "actions": actions,
        "parity": parity,
        "diffs": diffs,
        "highlights": highlights,
        "timeline": profile.timeline(result.window) if profile is not None else None,
        "limits": {
            "incidents": INCIDENT_LIMIT,
            "signals_per_incident": MEMBER_LIMIT,
            "suppressed": SUPPRESSED_LIMIT,
            "list_items": LIST_LIMIT,
            "highlights": HIGHLIGHT_LIMIT,
        },
    }
    report[SHA_KEY] = report_digest(report)
    return report


def first_suppressed(items: list[Any], limit: int) -> list[Any]:
    """The first `limit` suppressed items by signal id, without sorting (or converting) the other hundreds of
    thousands: the smallest ids are picked among plain strings (a key function would run once per item)."""
    ids = list(map(operator.attrgetter("signal"), items))
    chosen = set(heapq.nsmallest(limit, ids))
    return sorted(compress(items, map(chosen.__contains__, ids)), key=operator.attrgetter("signal"))[:limit]


def report_digest(report: Mapping[str, Any]) -> str:
    """The hex SHA-256 of the report's canonical JSON without its report_sha256 key."""
    return sha256_hex(canonical_json({key: value for key, value in report.items() if key != SHA_KEY}))


def verify_report(report: Mapping[str, Any]) -> bool:
    """True when the report's report_sha256 matches its content (any change to any other field breaks it)."""
    claimed = report.get(SHA_KEY)
    try:
        return isinstance(claimed, str) and claimed == report_digest(report)
    except (ValueError, TypeError):  # a value canonical JSON refuses: no report of ours
        return False


def report_bytes(report: Mapping[str, Any]) -> bytes:
    """The report as canonical JSON: the bytes of report.json in an evidence bundle."""
    return canonical_json(report)
