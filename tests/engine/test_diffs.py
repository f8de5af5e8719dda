"""Diffs of a replay against its baseline or another replay: matching, fingerprints, suppression, correlation."""

from __future__ import annotations

import dataclasses
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from replays.engine.diffs import (
    LIST_LIMIT,
    action_diff,
    baseline_set,
    bounded,
    correlation_diff,
    diff_sets,
    fingerprint_diff,
    match_incidents,
    restrict,
    result_set,
    suppression_diff,
)

from .replay_fixtures import action, baseline, ids, incident, result


def sides(before: dict, after: dict, **kwargs):
    return baseline_set(baseline(before)), result_set(result(after, **kwargs))


# --- matching ---------------------------------------------------------------------------------------------------------


def test_it_matches_incidents_holding_the_same_signals():
    a, b = sides({"bl-1": ["s1", "s2", "s3"], "bl-2": ["s4", "s5"]}, {"r-x": ["s4", "s5"], "r-y": ["s1", "s2", "s3"]})

    matching = match_incidents(a, b)

    assert matching.matched == {"bl-1": "r-y", "bl-2": "r-x"}
    assert (matching.split, matching.merged, matching.missing, matching.new) == ({}, {}, [], [])


def test_it_needs_a_jaccard_overlap_of_at_least_one_half_to_match():
    # bl-1 and r-1 share 2 of 4 distinct signals (0.5): a match; bl-2 and r-2 share 1 of 3 (0.33): none.
    a, b = sides({"bl-1": ["s1", "s2", "s3"], "bl-2": ["t1", "t2"]}, {"r-1": ["s1", "s2", "x1"], "r-2": ["t1", "y1"]})

    matching = match_incidents(a, b)

    assert matching.matched == {"bl-1": "r-1"}
    assert matching.overlaps[("bl-2", "r-2")].jaccard == Fraction(1, 3)
    assert matching.missing == ["bl-2"] and matching.new == ["r-2"]


def test_it_matches_one_to_one_preferring_the_larger_overlap_then_the_first_key():
    # r-1 is exactly half of bl-1 and of bl-2 (a pure merge): the tie goes to the first baseline key.
    a, b = sides({"bl-2": ["s3", "s4"], "bl-1": ["s1", "s2"]}, {"r-1": ["s1", "s2", "s3", "s4"]})

    matching = match_incidents(a, b)

    assert matching.matched == {"bl-1": "r-1"}
    assert matching.merged == {"r-1": ["bl-1", "bl-2"]}
    assert matching.missing == []  # bl-2 lives on inside the merge


def test_it_calls_a_baseline_incident_spread_over_two_replay_incidents_split():
    a, b = sides({"bl-1": ids("s", 10)}, {"r-1": ids("s", 7), "r-2": ids("s", 3, start=7)})

    matching = match_incidents(a, b)

    assert matching.split == {"bl-1": ["r-1", "r-2"]}
    assert matching.matched == {"bl-1": "r-1"}  # 7 of 10: still the same incident, with three signals gone
    assert matching.new == []  # r-2 is a fragment of the split, not a new incident


def test_it_calls_incidents_with_no_counterpart_missing_and_new():
    a, b = sides({"bl-1": ["s1", "s2"], "bl-2": ["s3"]}, {"r-1": ["s1", "s2"], "r-9": ["s8", "s9"]})

    matching = match_incidents(a, b)

    assert (matching.missing, matching.new) == (["bl-2"], ["r-9"])


# --- fingerprints -----------------------------------------------------------------------------------------------------


def test_it_finds_a_fingerprint_group_tightened_into_several():
    signals = ids("s", 6)
    a = result_set(result({"r": signals}, fingerprints={s: "fp-all" for s in signals}))
    b = result_set(result({"r": signals}, fingerprints={s: f"fp-{i % 3}" for i, s in enumerate(signals)}))

    diff = fingerprint_diff(a, b)

    assert diff["tightened"]["count"] == 1
    item = diff["tightened"]["items"][0]
    assert (item["before"], item["groups_after"], item["signals"]) == ("fp-all", 3, 6)
    assert diff["loosened"]["count"] == 0
    assert diff["changed"]["count"] == 6


def test_it_finds_fingerprint_groups_loosened_into_one_and_names_kept_groups_renamed():
    a = result_set(result({"r": ["s1", "s2", "s3", "s4"]}, fingerprints={"s1": "p", "s2": "q", "s3": "z", "s4": "z"}))
    b = result_set(result({"r": ["s1", "s2", "s3", "s4"]}, fingerprints={"s1": "pq", "s2": "pq", "s3": "y", "s4": "y"}))

    diff = fingerprint_diff(a, b)

    assert [(i["after"], i["groups_before"], i["signals"]) for i in diff["loosened"]["items"]] == [("pq", 2, 2)]
    assert diff["renamed"]["items"] == [{"before": "z", "after": "y"}]
    assert [c["signal"] for c in diff["changed"]["items"]] == ["s1", "s2"]


@given(
    before=st.lists(st.sampled_from(["p", "q", "r"]), min_size=1, max_size=30),
    after=st.lists(st.sampled_from(["p", "q", "x", "y"]), min_size=30, max_size=30),
)
def test_it_diffs_two_replays_of_one_selection_by_position_as_it_would_by_lookup(before, after):
    signals = ids("s", len(before))
    a = result_set(result({}, signals=signals, fingerprints=dict(zip(signals, before, strict=True))))
    b = result_set(result({}, signals=signals, fingerprints=dict(zip(signals, after, strict=False))))
    # The same signals in another order, so the values cannot be paired by position: each is looked up.
    shuffled = dataclasses.replace(b, fingerprints=dict(reversed(b.fingerprints.items())))

    assert fingerprint_diff(a, b) == fingerprint_diff(a, shuffled)


def test_it_compares_only_the_grouping_against_a_baseline_whose_fingerprints_are_production_strings():
    a, b = sides({"bl-1": ["s1", "s2"]}, {"r-1": ["s1", "s2"]})

    diff = fingerprint_diff(a, b)

    assert "renamed" not in diff
    assert diff["changed"]["count"] == 0


# --- suppression ------------------------------------------------------------------------------------------------------


def test_it_lists_signals_newly_suppressed_and_newly_let_through_with_their_rule():
    a = result_set(result({"r": ["s1", "s2"]}, suppressed={"s3": ("dedup", "dedup-5s"), "s4": ("silence", "maint")}))
    b = result_set(
        result({"r": ["s1", "s3"]}, suppressed={"s2": ("threshold", "alerting-only"), "s4": ("silence", "other")})
    )

    diff = suppression_diff(a, b)

    assert diff["newly_suppressed"]["items"] == [{"signal": "s2", "reason": "threshold", "rule": "alerting-only"}]
    assert diff["newly_let_through"]["items"] == [{"signal": "s3", "reason": "dedup", "rule": "dedup-5s"}]
    assert diff["rule_changed"]["items"][0]["after"] == {"reason": "silence", "rule": "other"}
    assert [(r["change"], r["rule"], r["signals"]) for r in diff["by_rule"]["items"]] == [
        ("newly_let_through", "dedup-5s", 1),
        ("newly_suppressed", "alerting-only", 1),
        ("rule_changed", "other", 1),
    ]


def test_it_leaves_signals_the_baseline_does_not_name_out_of_the_suppression_diff():
    before = baseline({"bl-1": ["s1", "s2"]}, suppressed={"bl-1": ["s9"]})
    after = result({"r": ["s1", "s9"]}, suppressed={"s2": ("dedup", "d"), "noise": ("threshold", "alerting-only")})

    diff = suppression_diff(baseline_set(before), result_set(after))

    assert [i["signal"] for i in diff["newly_suppressed"]["items"]] == ["s2"]  # not "noise": the baseline is silent
    assert diff["newly_let_through"]["items"] == [{"signal": "s9", "reason": None, "rule": None}]


# --- correlation ------------------------------------------------------------------------------------------------------


def test_it_groups_membership_moves_by_the_incidents_they_left_and_joined():
    a, b = sides(
        {"bl-1": ["s1", "s2", "s3", "s4"], "bl-2": ["s5", "s6", "s7"]},
        {
            "r-1": ["s1", "s2", "s3", "s5"],
            "r-2": ["s6", "s7", "n1"],
        },
        signals=["s4"],
    )  # s4 was replayed and formed no incident

    diff = correlation_diff(match_incidents(a, b))

    moves = {(m["from"], m["to"]): m["signals"] for m in diff["moves"]["items"]}
    assert moves == {("bl-1", None): 1, ("bl-2", "r-1"): 1, (None, "r-2"): 1}
    assert diff["signals_moved"] == 3


def test_it_lists_splits_and_merges_with_their_shares():
    a, b = sides(
        {"bl-1": ids("s", 6), "bl-2": ["t1", "t2"], "bl-3": ["t3"]},
        {
            "r-1": ids("s", 4),
            "r-2": [*ids("s", 2, start=4), "t1", "t2", "t3"],
        },
    )

    diff = correlation_diff(match_incidents(a, b))

    assert diff["splits"]["items"] == [
        {"from": "bl-1", "signals": 6, "into": [{"incident": "r-1", "signals": 4}, {"incident": "r-2", "signals": 2}]}
    ]
    merge = diff["merges"]["items"][0]
    assert merge["into"] == "r-2"
    assert [f["incident"] for f in merge["from"]] == ["bl-1", "bl-2", "bl-3"]


def test_it_does_not_count_signals_outside_a_scoped_replay_as_moved():
    base = baseline_set(baseline({"bl-1": ["s1", "s2"], "bl-2": ["far1", "far2"]}))
    replayed = result_set(result({"r-1": ["s1", "s2"]}))

    scoped = restrict(base, replayed.seen)
    diff = correlation_diff(match_incidents(scoped, replayed))

    assert list(scoped.members) == ["bl-1"]
    assert diff["signals_moved"] == 0


# --- actions ----------------------------------------------------------------------------------------------------------


def test_it_diffs_actions_between_matched_incidents():
    before = result(
        [
            incident("r-1", ["s1", "s2"], actions=[action("drain-pop"), action("page-netops")]),
            incident("r-2", ["s3", "s4"], actions=[action("page-netops")]),
        ]
    )
    after = result(
        [
            incident("k-1", ["s1", "s2"], actions=[action("drain-pop", status="blocked", reason="2 pops over 1")]),
            incident("k-3", ["s5", "s6"], actions=[action("restart")]),
        ]
    )

    diff = action_diff(match_incidents(result_set(before), result_set(after)))

    assert [(i["incident"], i["name"]) for i in diff["added"]["items"]] == [("k-3", "restart")]
    assert [(i["was_incident"], i["name"]) for i in diff["removed"]["items"]] == [
        ("r-1", "page-netops"),
        ("r-2", "page-netops"),
    ]
    changed = diff["changed"]["items"][0]
    assert (changed["before"]["status"], changed["after"]["status"]) == ("planned", "blocked")


def test_it_has_no_action_diff_against_a_baseline_which_records_no_actions():
    a, b = sides({"bl-1": ["s1"]}, {"r-1": ["s1"]})

    assert diff_sets(a, b)["actions"] is None


# --- bounds -----------------------------------------------------------------------------------------------------------


def test_it_lists_at_most_a_hundred_items_but_counts_them_all():
    signals = ids("s", 250)
    a = result_set(result({"r": signals}, fingerprints={s: "one" for s in signals}))
    b = result_set(result({"r": signals}, fingerprints={s: s for s in signals}))

    diff = fingerprint_diff(a, b)

    assert diff["changed"]["count"] == 250
    assert len(diff["changed"]["items"]) == LIST_LIMIT
    assert diff["changed"]["items"][0]["signal"] == "s0000"
    assert diff["tightened"]["items"][0]["groups_after"] == 250
    assert bounded(range(3), 2) == {"count": 3, "items": [0, 1]}
