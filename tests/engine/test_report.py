"""The replay report: parity, confidence, highlights, timeline, the report_sha256 seal, the golden demo reports."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from array import array
from datetime import timedelta
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replays.engine import report as report_module
from replays.engine.correlate import Suppressed
from replays.engine.diffs import baseline_set, match_incidents, result_set
from replays.engine.report import (
    MEMBER_LIMIT,
    build_report,
    confidence,
    parity_score,
    report_bytes,
    report_digest,
    verify_report,
)
from replays.engine.timeline import SignalProfile, bucket_seconds

from .regen_golden import GOLDEN, demo_reports, golden_text
from .replay_fixtures import OTHER_SPEC, SPEC, T0, WINDOW, action, baseline, ids, incident, result, signal

# --- parity -----------------------------------------------------------------------------------------------------------


def score(before: dict, after: dict) -> float:
    return parity_score(match_incidents(baseline_set(baseline(before)), result_set(result(after))))


def test_it_scores_a_replay_that_forms_the_baselines_incidents_exactly_as_one():
    assert score({"bl-1": ["s1", "s2"], "bl-2": ["s3"]}, {"r-b": ["s3"], "r-a": ["s1", "s2"]}) == 1.0


def test_it_scores_a_replay_sharing_no_incident_with_the_baseline_as_zero():
    assert score({"bl-1": ["s1", "s2"]}, {"r-1": ["s3", "s4"]}) == 0.0


def test_it_weighs_the_score_by_the_signals_of_every_incident_on_both_sides():
    # Matched: bl-1/r-1 share 3 (sizes 4 and 3). Unmatched: bl-2 (1 signal). 2*3 / (4 + 1 + 3) = 0.75.
    assert score({"bl-1": ["s1", "s2", "s3", "s4"], "bl-2": ["t1"]}, {"r-1": ["s1", "s2", "s3"]}) == 0.75


_partitions = st.lists(
    st.tuples(st.sampled_from([None, "bl-1", "bl-2", "bl-3"]), st.sampled_from([None, "r-1", "r-2", "r-3", "r-4"])),
    max_size=40,
)


@given(_partitions)
def test_it_keeps_the_parity_score_between_zero_and_one_and_at_one_only_for_identical_incidents(assignments):
    before: dict[str, list[str]] = {}
    after: dict[str, list[str]] = {}
    for n, (a, b) in enumerate(assignments):
        if a:
            before.setdefault(a, []).append(f"s{n}")
        if b:
            after.setdefault(b, []).append(f"s{n}")

    value = score(before, after)

    assert 0.0 <= value <= 1.0
    identical = sorted(map(sorted, before.values())) == sorted(map(sorted, after.values()))
    assert (value == 1.0) == identical


def test_it_matches_on_the_signals_an_incident_accounts_for_including_its_members_duplicates():
    # The baseline lists d1 and d2 as the incident's suppressed copies; the replay suppresses them by dedup, `by` s1.
    before = baseline({"bl-1": ["s1", "s2"]}, suppressed={"bl-1": ["d1", "d2"]})
    replayed = result({"r-1": ["s1", "s2"]}, suppressed={"d1": ("dedup", "dedup"), "d2": ("dedup", "dedup")})
    replayed = type(replayed)(
        **{
            **{f: getattr(replayed, f) for f in replayed.__dataclass_fields__},
            "suppressed": [Suppressed("d1", "dedup", "dedup", by="s1"), Suppressed("d2", "dedup", "dedup", by="d1")],
        }
    )

    report = build_report(replayed, policy_spec=SPEC, baseline=before)

    assert report["parity"]["score"] == 1.0
    assert report["incidents"][0]["signal_count"] == 2
    assert report["incidents"][0]["signals_accounted"] == 4


def test_it_lists_matched_split_merged_missing_and_new_incidents():
    before = baseline({"bl-1": ids("a", 6), "bl-2": ["b1", "b2"], "bl-3": ["c1", "c2"], "bl-4": ["d1"]})
    after = result(
        {"r-1": ids("a", 4), "r-2": [*ids("a", 2, start=4), "b1", "b2", "c1", "c2"], "r-9": ["n1", "n2"]},
        signals=["d1"],  # replayed, but in no incident
    )

    parity = build_report(after, policy_spec=SPEC, baseline=before)["parity"]

    assert [(m["baseline"], m["replay"]) for m in parity["matched"]["items"]] == [("bl-1", "r-1")]
    assert [s["baseline"] for s in parity["split"]["items"]] == ["bl-1"]
    assert [(m["replay"], [f["baseline"] for f in m["from"]]) for m in parity["merged"]["items"]] == [
        ("r-2", ["bl-1", "bl-2", "bl-3"])
    ]
    assert [m["baseline"] for m in parity["missing"]["items"]] == ["bl-4"]
    assert [n["replay"] for n in parity["new"]["items"]] == ["r-9"]
    assert parity["alerts_in_incidents_out"] == {"baseline": "13 → 4", "replay": "13 → 3"}


def test_it_compares_a_scoped_replay_with_the_baseline_inside_its_scope():
    before = baseline({"bl-1": ["s1", "s2"], "bl-far": ["f1", "f2"]})
    scoped = result({"r-1": ["s1", "s2"]}, scope={"pop": "POP-12"})

    parity = build_report(scoped, policy_spec=SPEC, baseline=before)["parity"]

    assert parity["score"] == 1.0 and parity["baseline_incidents"] == 1
    assert parity["baseline_coverage"] == 0.5
    assert parity["scope"] == {"pop": "POP-12"}


def test_it_lists_the_actions_that_would_run_with_their_gates():
    blocked = action("page-netops", status="blocked", reason="touches 2 regions; at most 1 allowed")
    replayed = result([incident("r-1", ["s1"], actions=[action("drain-pop"), blocked])])

    report = build_report(replayed, policy_spec=SPEC, baseline=baseline({"bl-1": ["s1"]}))

    actions = report["parity"]["actions"]
    assert (actions["planned"], actions["blocked"]) == (1, 1)
    assert [(a["name"], a["status"], a["reason"]) for a in actions["items"]["items"]] == [
        ("drain-pop", "planned", None),
        ("page-netops", "blocked", "touches 2 regions; at most 1 allowed"),
    ]
    assert report["highlights"][-1] == "Actions: 1 would run, 1 blocked (touches 2 regions; at most 1 allowed)."


# --- confidence -------------------------------------------------------------------------------------------------------


def rate(**overrides):
    values = {
        "selected": 5000,
        "correlated": 1200,
        "suppressed": 3800,
        "coverage": Fraction(1),
        "baseline_incidents": 12,
    }
    return confidence(**{**values, **overrides})


def test_it_rates_confidence_high_when_the_evidence_is_ample():
    assert rate() == {"level": "high", "reasons": []}


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"selected": 900, "suppressed": 700, "correlated": 200}, "900 signals selected (under 1000)"),
        ({"correlated": 60}, "60 signals reached correlation (under 100)"),
        ({"baseline_incidents": 2}, "the baseline has 2 incidents (under 3)"),
        ({"coverage": Fraction(9, 10)}, "the selection holds 90% of the baseline's signals (under 95%)"),
        ({"suppressed": 4960}, "99.2% of the selected signals were suppressed (over 99%)"),
    ],
)
def test_it_rates_confidence_medium_naming_the_rule_that_kept_it_from_high(overrides, reason):
    assert rate(**overrides) == {"level": "medium", "reasons": [reason]}


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"baseline_incidents": 0}, "the baseline has no incidents"),
        ({"correlated": 9}, "only 9 signals reached correlation (under 10)"),
        ({"coverage": Fraction(2, 5)}, "the selection holds 40% of the baseline's signals (under 50%)"),
        ({"suppressed": 4980}, "99.6% of the selected signals were suppressed (over 99.5%)"),
    ],
)
def test_it_rates_confidence_low_when_any_low_rule_holds(overrides, reason):
    assert rate(**overrides)["level"] == "low"
    assert reason in rate(**overrides)["reasons"]


# --- highlights -------------------------------------------------------------------------------------------------------


def test_it_writes_a_merge_highlight_naming_the_merged_signals_and_their_pop():
    signals = [
        *(signal(f"b{n}", at=n, source="bgp", name="bgp_session_flap") for n in range(3)),
        *(signal(f"d{n}", at=20 + n, source="dns", name="dns_servfail") for n in range(2)),
    ]
    before = baseline({"bl-1": ["b0", "b1", "b2"], "bl-2": ["d0", "d1"]})
    after = result({"r-1": [s.id for s in signals]})

    report = build_report(after, policy_spec=SPEC, baseline=before, signals=signals)

    assert report["highlights"][0] == "5 alerts in → 1 incident out; the baseline formed 2."
    assert report["highlights"][1].startswith("Parity 0.60 with the baseline (low confidence): 1 of 2 baseline")
    assert (
        "Merged: bgp_session_flap + dns_servfail at POP-12 now form one episode (2 incidents, 5 → 1)."
        in report["highlights"]
    )


def test_it_writes_split_fingerprint_and_suppression_highlights_against_another_policy():
    signals = [signal(f"s{n}", at=n) for n in range(6)]
    before = result(
        {"r-1": ["s0", "s1", "s2", "s3"]},
        signals=["s4", "s5"],
        spec=OTHER_SPEC,
        fingerprints={f"s{n}": "one" for n in range(6)},
    )
    after = result(
        {"k-1": ["s0", "s1"], "k-2": ["s2", "s3"]},
        suppressed={"s4": ("threshold", "alerting-only"), "s5": ("threshold", "alerting-only")},
        fingerprints={f"s{n}": f"fp-{n % 2}" for n in range(6)},
    )

    highlights = build_report(after, policy_spec=SPEC, compare=before, compare_spec=OTHER_SPEC, signals=signals)[
        "highlights"
    ]

    assert highlights == [
        "6 alerts in → 2 incidents out.",
        "Split: http_5xx_rate at POP-12 now forms 2 incidents (4 → 2).",
        "Fingerprint tightened: 6 signals of http_5xx_rate at POP-12 that shared one fingerprint now carry 2.",
        "Newly suppressed by threshold rule alerting-only: 2 signals that policy 'hand-made, other' let through.",
    ]


def test_it_names_groups_by_incident_when_it_has_no_signals_to_read():
    after = result({"r-1": ["s0", "s1"]})
    before = result({"r-a": ["s0"], "r-b": ["s1"]}, spec=OTHER_SPEC)

    highlights = build_report(after, policy_spec=SPEC, compare=before, compare_spec=OTHER_SPEC)["highlights"]

    assert "Merged: r-a + r-b now form one episode (2 incidents, 2 → 1)." in highlights


# --- timeline ---------------------------------------------------------------------------------------------------------


def test_it_picks_the_bucket_size_from_the_window_length():
    assert [bucket_seconds(timedelta(minutes=m)) for m in (2, 10, 11, 60, 61, 360, 361)] == [
        10,
        10,
        60,
        60,
        300,
        300,
        3600,
    ]


def test_it_counts_signals_per_ten_second_bucket_by_source_and_by_incident():
    signals = [
        signal("s1", at=0, source="bgp"),
        signal("s2", at=9.999, source="bgp"),
        signal("s3", at=10, source="dns"),
        signal("s4", at=240, source="dns"),  # the window's last instant: in the last bucket, not a 25th
        signal("s5", at=61, source="metrics"),
    ]
    replayed = result({"r-1": ["s1", "s3"]}, signals=["s2", "s4"], suppressed={"s5": ("dedup", "dedup")})

    timeline = build_report(replayed, policy_spec=SPEC, signals=signals)["timeline"]

    assert (timeline["bucket_s"], timeline["buckets"], timeline["start"]) == (10, 24, "2026-02-26T14:00:00Z")
    rows = {row["source"]: row["counts"] for row in timeline["by_source"]["items"]}
    assert rows["bgp"][:2] == [2, 0] and sum(rows["bgp"]) == 2
    assert rows["dns"][1] == 1 and rows["dns"][23] == 1
    assert timeline["by_incident"]["items"][0]["incident"] == "r-1"
    assert timeline["by_incident"]["items"][0]["counts"][:2] == [1, 1]
    assert timeline["suppressed"]["items"] == [
        {
            "reason": "dedup",
            "rule": "dedup",
            "signals": 1,
            "first_ts": "2026-02-26T14:01:01Z",
            "last_ts": "2026-02-26T14:01:01Z",
        }
    ]


@given(
    rows=st.lists(
        st.tuples(st.integers(0, 239), st.sampled_from([None, ("dedup", "dedup"), ("threshold", "floor")])),
        min_size=1,
        max_size=30,
    ),
    members=st.integers(0, 5),
)
def test_it_draws_the_same_timeline_from_signals_in_time_order_or_not(rows, members):
    signals = [signal(f"s{n:02d}", at=at) for n, (at, _) in enumerate(rows)]
    suppressed = {f"s{n:02d}": why for n, (_, why) in enumerate(rows) if why is not None}
    members = [s.id for s in signals[:members] if s.id not in suppressed]
    replayed = result({"r-1": members} if members else {}, suppressed=suppressed)
    in_order = sorted(signals, key=lambda s: (s.ts, s.id))

    timelines = [build_report(replayed, policy_spec=SPEC, signals=order)["timeline"] for order in (signals, in_order)]

    assert timelines[0] == timelines[1]
    assert sum(item["signals"] for item in timelines[0]["suppressed"]["items"]) == len(suppressed)


# Milliseconds into the window, crowded around whole seconds and bucket edges as well as anywhere.
_MS = st.sampled_from([0, 999, 1000, 1001, 9_999, 10_000, 10_001, 19_999, 20_000]) | st.integers(0, 240_000)


@given(rows=st.lists(st.tuples(_MS, st.sampled_from(["bgp", "dns"]), st.booleans()), min_size=1, max_size=60))
def test_it_counts_each_second_alike_from_the_selection_in_order_and_from_the_signals_in_any_order(rows):
    signals = [signal(f"s{n:02d}", at=ms / 1000, source=source) for n, (ms, source, _) in enumerate(rows)]
    incident_of = {s.id: "r-1" for s, (_, _, member) in zip(signals, rows, strict=True) if member}
    in_order = sorted(signals, key=lambda s: (s.ts, s.id))

    by_position = SignalProfile.collect_replayed(
        in_order, suppressed=[], suppressed_at=array("q"), incident_of=incident_of, wanted=set()
    )
    by_id = SignalProfile.collect(signals[::-1], selected=None, incident_of=incident_of, suppressed={}, wanted=set())

    assert by_position.per_second_source == by_id.per_second_source
    assert by_position.per_second_incident == by_id.per_second_incident
    assert (by_position.signals, by_position.first, by_position.last) == (len(rows), in_order[0].ts, in_order[-1].ts)
    assert by_position.by_source == by_id.by_source


def test_it_leaves_signals_outside_a_scoped_selection_off_the_timeline():
    signals = [signal("s1", at=5), signal("elsewhere", at=5, pop="POP-31")]

    timeline = build_report(result({"r-1": ["s1"]}, scope={"pop": "POP-12"}), policy_spec=SPEC, signals=signals)[
        "timeline"
    ]

    assert timeline["by_source"]["items"][0]["signals"] == 1


# --- the report as a whole --------------------------------------------------------------------------------------------


def test_it_seals_the_report_with_the_sha256_of_its_canonical_json_without_that_key():
    report = build_report(result({"r-1": ["s1", "s2"]}), policy_spec=SPEC, baseline=baseline({"bl-1": ["s1"]}))

    assert verify_report(report)
    assert report["report_sha256"] == report_digest(report)
    unsealed = {k: v for k, v in report.items() if k != "report_sha256"}
    assert json.loads(report_bytes(report)) == report
    assert report_digest(unsealed) == report["report_sha256"]


def test_it_detects_a_change_to_any_field_of_the_report():
    report = build_report(result({"r-1": ["s1", "s2"]}), policy_spec=SPEC, baseline=baseline({"bl-1": ["s1"]}))

    for key in report:
        if key == "report_sha256":
            continue
        changed = copy.deepcopy(report)
        changed[key] = {"tampered": True}
        assert not verify_report(changed), key
    nested = copy.deepcopy(report)
    nested["incidents"][0]["signals"].append("s9")
    assert not verify_report(nested)
    assert not verify_report({**report, "report_sha256": "0" * 64})
    assert not verify_report({k: v for k, v in report.items() if k != "report_sha256"})


def test_it_refuses_a_policy_spec_other_than_the_one_replayed():
    with pytest.raises(ValueError, match="not policy_spec"):
        build_report(result({"r-1": ["s1"]}), policy_spec=OTHER_SPEC)
    with pytest.raises(ValueError, match="different signals"):
        build_report(
            result({"r-1": ["s1"]}),
            policy_spec=SPEC,
            compare=result({"r-1": ["s1"]}, spec=OTHER_SPEC, digest="e" * 64),
            compare_spec=OTHER_SPEC,
        )


def test_it_cuts_long_member_lists_but_keeps_the_exact_counts():
    members = ids("s", MEMBER_LIMIT + 20)

    report = build_report(result({"r-1": members}), policy_spec=SPEC)

    entry = report["incidents"][0]
    assert len(entry["signals"]) == MEMBER_LIMIT and entry["signal_count"] == MEMBER_LIMIT + 20
    assert report["stats"]["alerts_in_incidents_out"] == f"{MEMBER_LIMIT + 20} → 1"


def test_it_records_the_input_selection():
    report = build_report(result({"r-1": ["s1"]}, scope={"pop": "POP-12"}), policy_spec=SPEC, signals=[signal("s1")])

    assert report["input"] == {
        "signals_digest": "d" * 64,
        "signals": 1,
        "signals_selected": 1,
        "by_source": {"metrics": 1},
        "window": {"start": "2026-02-26T14:00:00Z", "end": "2026-02-26T14:04:00Z"},
        "scope": {"pop": "POP-12"},
        "baseline": None,
    }
    assert (report["parity"], report["diffs"]) == (None, {"baseline": None, "compare": None})
    assert WINDOW[0] == T0


# --- golden reports of the demo window --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo():
    return demo_reports()


@pytest.mark.parametrize("name", ["demo_baseline.report.json", "demo_tightened.report.json"])
def test_it_reproduces_the_golden_report_of_the_demo_window(demo, name):
    report = demo[name]
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(golden_text(report), encoding="utf-8")
    assert path.exists(), f"{path} is missing: run `python -m tests.engine.regen_golden`"
    golden = json.loads(path.read_text(encoding="utf-8"))
    assert verify_report(golden)
    assert report == golden, (
        f"the report differs from {path.name}; if the change is intended, run `python -m tests.engine.regen_golden` "
        "(or UPDATE_GOLDEN=1) and review the diff"
    )


def test_it_shows_the_baseline_policy_reproducing_the_demo_baseline(demo):
    report = demo["demo_baseline.report.json"]

    assert report["parity"]["score"] == 1.0 and report["parity"]["confidence"] == "high"
    assert report["highlights"][0] == "5000 alerts in → 12 incidents out; the baseline formed 12."


def test_it_shows_the_tightened_policy_folding_bgp_and_dns_into_one_episode(demo):
    report = demo["demo_tightened.report.json"]
    merges = [line for line in report["highlights"] if line.startswith("Merged:")]
    against_baseline_policy = [
        line for line in report["highlights"] if line.startswith("Vs policy 'baseline': Merged:")
    ]

    assert any("bgp_session_flap" in line and "dns_servfail" in line and "at POP-12" in line for line in merges)
    assert against_baseline_policy
    assert all(name in against_baseline_policy[0] for name in ("bgp_session_flap", "dns_servfail", "at POP-12"))
    assert report["parity"]["merged"]["count"] >= 1


def test_it_lists_the_first_suppressed_signals_by_id_up_to_the_limit(monkeypatch):
    monkeypatch.setattr(report_module, "SUPPRESSED_LIMIT", 3)
    order = [7, 2, 9, 0, 5, 1, 8]  # not the ids' order: the list is picked and sorted, not cut from the front
    replayed = result({"r-1": ["m1"]}, suppressed={f"s{n}": ("threshold", "floor") for n in order})
    # A replay lists its suppressed signals in (ts, id) order, which is not id order: keep the list as given.
    replayed = dataclasses.replace(
        replayed, suppressed=sorted(replayed.suppressed, key=lambda item: order.index(int(item.signal[1:])))
    )
    assert [item.signal for item in replayed.suppressed[:3]] == ["s7", "s2", "s9"]

    report = build_report(replayed, policy_spec=SPEC)

    assert [item["signal"] for item in report["suppressed"]] == ["s0", "s1", "s2"]
    assert report["limits"]["suppressed"] == 3
    assert report["suppressed_by_rule"] == [{"reason": "threshold", "rule": "floor", "signals": 7}]
