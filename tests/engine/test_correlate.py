"""The replay stages 1-3: one test per rule kind, the demo story, files, determinism and progress events."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from replays.engine import Invalid, write_bundle
from replays.engine import correlate as correlate_module
from replays.engine import signals as signals_module
from replays.engine.canonical import canonical_json, sha256_hex
from replays.engine.correlate import ReplayResult, fingerprint_of, replay, replay_file, signals_digest
from replays.engine.demo_policies import baseline_policy, tightened_policy
from replays.engine.policy import POLICY_SCHEMA, load_policy
from replays.engine.report import build_report, report_bytes
from replays.engine.samples import fingerprint as sample_fingerprint
from replays.engine.samples import sample_bundle, sample_spec
from replays.engine.signals import Signal, SignalReader, parse_signal

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 2, 26, 14, 0, tzinfo=UTC)
_counter = iter(range(1, 10**9))


def sig(at=0.0, name="x", source="metrics", severity="warning", value=None, id=None, **labels):
    """A signal `at` seconds after T0; ids count up unless given."""
    return Signal(id or f"s{next(_counter):04d}", T0 + timedelta(seconds=at), source, name, labels, severity, value)


def policy(**sections):
    return {"schema": POLICY_SCHEMA, **sections}


def m(label, op, value):
    return {"label": label, "op": op, "value": value}


def suppressed_of(result: ReplayResult) -> dict[str, tuple[str, str, str | None]]:
    return {item.signal: (item.reason, item.rule, item.by) for item in result.suppressed}


def members(result: ReplayResult) -> list[list[str]]:
    return [list(incident.signals) for incident in result.incidents]


# --- stage 1: ingest & normalize ----------------------------------------------------------------------------------


def test_it_maps_each_sources_fields_onto_the_common_shape():
    spec = policy(
        normalize={
            "rename_labels": {"dc": "region"},
            "drop_labels": ["trace_id"],
            "sources": {
                "flow": {
                    "rename_labels": {"site": "pop"},
                    "default_severity": "info",
                    "rename_names": {"bytes": "flow_bytes"},
                    "set_labels": {"layer": "network"},
                },
                "dns": {"severity_map": {"error": "major"}},
            },
        },
        correlation={"group_by": []},
    )
    flow = sig(0, "bytes", "flow", severity=None, site="POP-12", dc="us-east-1", trace_id="t", id="f1")
    dns = sig(1, "nx", "dns", severity="error", pop="POP-12", id="d1")
    result = replay(spec, [flow, dns], window=None)
    (incident,) = result.incidents
    assert incident.severity == "major"  # error mapped to major for dns
    assert incident.sources == {"dns": 1, "flow": 1}
    fp = fingerprint_of(
        load_policy(spec), sig(0, "flow_bytes", "flow", "info", layer="network", pop="POP-12", region="us-east-1")
    )
    assert result.fingerprints["f1"] == fp


def test_it_drops_labels_with_an_empty_value_as_alertmanager_does():
    result = replay(policy(), [sig(0, pop="POP-1", peer="", id="a"), sig(1, pop="POP-1", id="b")])
    assert result.fingerprints["a"] == result.fingerprints["b"]


def test_it_sorts_by_ts_then_id_and_filters_by_window_and_scope():
    signals = [
        sig(30, id="c", pop="POP-12"),
        sig(10, "y", id="b", pop="POP-12"),
        sig(10, id="a", pop="POP-12"),
        sig(10, id="z", pop="POP-14"),
        sig(500, id="late", pop="POP-12"),
    ]
    window = (T0, T0 + timedelta(seconds=60))
    result = replay(policy(correlation={"group_by": []}), signals, scope={"pop": "POP-12"}, window=window)
    assert members(result) == [["a", "b", "c"]]
    assert result.stats["signals_in"] == 5 and result.stats["signals_selected"] == 3
    assert result.scope == {"pop": "POP-12"} and result.window == window
    assert result.as_dict()["window"] == {"start": "2026-02-26T14:00:00Z", "end": "2026-02-26T14:01:00Z"}


def test_it_keeps_the_signals_at_both_ends_of_the_window_and_none_beyond():
    at = {"before": 9.999, "start": 10, "inside": 20, "end": 30, "after": 30.001}
    signals = [sig(seconds, id=name) for name, seconds in at.items()]
    window = (T0 + timedelta(seconds=10), T0 + timedelta(seconds=30))

    result = replay(policy(correlation={"group_by": []}), signals[::-1], window=window)

    assert members(result) == [["end", "inside", "start"]]
    assert result.stats["signals_in"] == 5 and result.stats["signals_selected"] == 3


def test_it_digests_the_selected_signals_as_they_came_in():
    signals = [sig(2, id="b", site="x"), sig(1, id="a")]
    renaming = policy(normalize={"rename_labels": {"site": "pop"}})
    digest = replay(renaming, signals).signals_digest
    assert digest == replay(policy(), list(reversed(signals))).signals_digest  # policy and order do not matter
    ordered = sorted(signals, key=lambda s: (s.ts, s.id))
    expected = [
        [s.id, s.ts.strftime("%Y-%m-%dT%H:%M:%SZ"), s.source, s.name, s.labels, s.severity, s.value] for s in ordered
    ]
    assert digest == sha256_hex(orjson.dumps(expected, option=orjson.OPT_SORT_KEYS))
    assert digest == signals_digest(ordered)
    assert replay(policy(), signals, scope={"site": "x"}).signals_digest != digest


def _read(data: bytes):
    reader = SignalReader()
    signals = list(reader.read(io.BytesIO(data)))
    error = reader.error()
    return signals, error.as_dict() if error else None


def _field(*variants):
    return st.sampled_from(variants)


# Mostly valid lines in the spellings agents use, with the traps the fast path must send to the strict decoder:
# repeated keys (top level and in labels), whitespace before a colon, `":` `{` `[` inside strings, huge numbers.
line_parts = st.tuples(
    _field('"id": "a1"', '"id":"a2"', '"id" : "a3"', '"id"\t:"a4"'),
    _field('"ts": "2026-02-26T14:00:00Z"', '"ts":"2026-02-26T14:00:01.5Z"', '"ts": "2026-02-26T14:00:00+01:00"'),
    _field('"source": "bgp"', '"source":"x\\":y"'),
    _field('"name": "flap"', '"name":"{[odd]}"', '"name": "a\\u0000"'),
    _field(
        '"labels": {"pop": "P1"}',
        '"labels":{"pop":"P1","pop":"P2"}',
        '"labels":{"pop":"P1","pop" :"P2"}',
        '"labels": {"a": "b" , "c":"d"}',
        '"labels":{}',
    ),
    _field("", '"severity": "error"', '"severity":"bad"'),
    _field(
        "", '"value": 3', '"value": 123456789012345678901234567890', '"value": 1e400', '"value": [1]', '"value":-0.0'
    ),
    _field("", '"id": "again"', '"name":"again"', '"id" :"again"', '"name"\r:"again"'),
).map(lambda parts: [part for part in parts if part])


@given(st.lists(st.tuples(line_parts, st.randoms(use_true_random=False)), min_size=1, max_size=4))
def test_it_parses_lines_exactly_like_the_strict_decoder(lines):
    for parts, rnd in lines:
        rnd.shuffle(parts)
    data = b"".join(("{" + ", ".join(parts) + "}\n").encode() for parts, _ in lines)
    fast = _read(data)
    original = signals_module._fast_decode
    signals_module._fast_decode = lambda raw: signals_module._UNPARSED  # the reference: the strict decoder alone
    try:
        strict = _read(data)
    finally:
        signals_module._fast_decode = original
    assert fast == strict


# --- stage 2: fingerprints and dedup --------------------------------------------------------------------------------


def test_it_fingerprints_with_the_first_matching_rule():
    spec = load_policy(
        policy(
            fingerprint={
                "rules": [
                    {
                        "name": "by-route",
                        "matchers": [m("service", "=", "edge-gw")],
                        "fields": ["name", "labels.route"],
                    },
                    {"name": "catch-edge", "matchers": [m("service", "=~", "edge-.*")], "fields": ["name"]},
                    {"name": "by-template", "matchers": [m("source", "=", "bgp")], "template": "{name}@{labels.pop}"},
                ]
            }
        )
    )
    a = sig(name="5xx", service="edge-gw", route="/", host="h1")
    b = sig(name="5xx", service="edge-gw", route="/", host="h2")
    c = sig(name="5xx", service="edge-gw", route="/login", host="h1")
    assert fingerprint_of(spec, a) == fingerprint_of(spec, b) != fingerprint_of(spec, c)
    edge2 = sig(name="5xx", service="edge-gx", route="/")
    assert fingerprint_of(spec, edge2) == fingerprint_of(spec, sig(name="5xx", service="edge-gx", route="/x"))
    flap = sig(name="flap", source="bgp", pop="POP-12", peer="AS1")
    assert fingerprint_of(spec, flap) == fingerprint_of(spec, sig(name="flap", source="bgp", pop="POP-12", peer="AS2"))
    assert fingerprint_of(spec, flap) == "fp:" + sha256_hex(canonical_json("flap@POP-12"))[:16]


def test_it_fingerprints_by_source_name_and_all_labels_by_default():
    spec = load_policy(policy())
    one = Signal("a", T0, "metrics", "cpu", {"host": "h1", "pop": "POP-1"})
    same = Signal("b", T0 + timedelta(seconds=9), "metrics", "cpu", {"pop": "POP-1", "host": "h1"}, "info", 3)
    assert fingerprint_of(spec, one) == fingerprint_of(spec, same)  # label order, ts, severity, value: not identity
    assert fingerprint_of(spec, one) != fingerprint_of(spec, one._replace(labels={"host": "h2", "pop": "POP-1"}))
    assert fingerprint_of(spec, one) != fingerprint_of(spec, one._replace(source="flow"))
    assert (
        fingerprint_of(spec, one)
        == "fp:" + sha256_hex(canonical_json({"source": "metrics", "name": "cpu", "labels": one.labels}))[:16]
    )


def test_it_fingerprints_like_the_sample_baseline_with_the_same_fields():
    spec = load_policy(
        policy(fingerprint={"default": ["source", "name", "labels.service", "labels.region", "labels.pop"]})
    )
    labels = {"service": "edge-gw", "region": "us-east-1", "pop": "POP-12", "host": "h1"}
    assert fingerprint_of(spec, sig(name="http_5xx_rate", **labels)) == sample_fingerprint(
        "metrics", "http_5xx_rate", labels
    )
    assert fingerprint_of(spec, sig(name="n")) == sample_fingerprint("metrics", "n", {})


def test_it_collapses_duplicates_inside_the_dedup_window_counting_from_the_last_kept():
    spec = policy(dedup={"window_s": 5}, correlation={"group_by": []})
    signals = [
        sig(0, id="a", pop="P"),
        sig(4, id="b", pop="P"),
        sig(9, id="c", pop="P"),
        sig(10, id="d", pop="P"),
        sig(10, id="e", pop="Q"),
    ]
    result = replay(spec, signals)
    assert suppressed_of(result) == {"b": ("dedup", "default", "a"), "d": ("dedup", "default", "c")}
    assert members(result) == [["a", "c", "e"]]
    assert result.stats["suppressed_dedup"] == 2


def test_it_collapses_only_same_instant_duplicates_without_a_window():
    result = replay(policy(), [sig(0, id="a"), sig(0, id="b"), sig(0.5, id="c")])
    assert suppressed_of(result) == {"b": ("dedup", "default", "a")}


def test_it_dedups_on_the_configured_fields_instead_of_the_fingerprint():
    spec = policy(dedup={"window_s": 5, "fields": ["source", "name", "labels", "value"]})
    result = replay(spec, [sig(0, id="a", value=1), sig(1, id="b", value=2), sig(2, id="c", value=1)])
    assert suppressed_of(result) == {"c": ("dedup", "dedup", "a")}


# --- stage 2: suppression -------------------------------------------------------------------------------------------


def test_it_silences_matching_signals_inside_the_silence_range_only():
    spec = policy(
        suppression={
            "silences": [
                {
                    "name": "pop12-maintenance",
                    "matchers": [m("pop", "=", "POP-12")],
                    "starts_at": "2026-02-26T14:00:10Z",
                    "ends_at": "2026-02-26T14:00:20Z",
                }
            ]
        }
    )
    signals = [
        sig(5, id="before", pop="POP-12"),
        sig(10, id="start", pop="POP-12"),
        sig(19, id="in", pop="POP-12"),
        sig(20, id="end", pop="POP-12"),
        sig(15, id="other", pop="POP-14"),
    ]
    result = replay(spec, signals)
    assert suppressed_of(result) == {
        "start": ("silence", "pop12-maintenance", None),
        "in": ("silence", "pop12-maintenance", None),
    }


def test_it_drops_metric_signals_below_a_threshold_value():
    spec = policy(
        suppression={
            "thresholds": [{"name": "jitter-floor", "matchers": [m("alertname", "=", "jitter_ms")], "below": 30}]
        }
    )
    signals = [
        sig(0, "jitter_ms", id="low", value=12.5),
        sig(1, "jitter_ms", id="high", value=30),
        sig(2, "jitter_ms", id="none"),
        sig(3, "loss", id="other", value=1),
    ]
    assert suppressed_of(replay(spec, signals)) == {"low": ("threshold", "jitter-floor", None)}


def test_it_drops_signals_below_a_per_scope_baseline():
    spec = policy(
        suppression={
            "thresholds": [
                {
                    "name": "jitter-baseline",
                    "matchers": [m("alertname", "=", "jitter_ms")],
                    "below": 10,
                    "by": ["pop"],
                    "baselines": [{"labels": {"pop": "POP-12"}, "below": 30}],
                }
            ]
        }
    )
    signals = [
        sig(0, "jitter_ms", id="p12-low", value=25, pop="POP-12"),
        sig(1, "jitter_ms", id="p12-high", value=31, pop="POP-12"),
        sig(2, "jitter_ms", id="p14", value=25, pop="POP-14"),
        sig(3, "jitter_ms", id="p14-low", value=9, pop="POP-14"),
    ]
    assert suppressed_of(replay(spec, signals)) == {
        "p12-low": ("threshold", "jitter-baseline", None),
        "p14-low": ("threshold", "jitter-baseline", None),
    }


def test_it_drops_signals_below_a_threshold_severity():
    spec = policy(suppression={"thresholds": [{"name": "alerting-only", "min_severity": "warning"}]})
    signals = [
        sig(0, id="info", severity="info"),
        sig(1, id="none", severity=None),
        sig(2, id="warn"),
        sig(3, id="crit", severity="critical"),
    ]
    assert suppressed_of(replay(spec, signals)) == {
        "info": ("threshold", "alerting-only", None),
        "none": ("threshold", "alerting-only", None),
    }


INHIBIT = {
    "name": "pop-down-mutes-bgp",
    "source_matchers": [m("alertname", "=", "pop_down")],
    "target_matchers": [m("source", "=", "bgp")],
    "equal": ["pop"],
    "window_s": 60,
}


def test_it_inhibits_targets_with_equal_labels_while_a_source_is_active():
    signals = [
        sig(100, "pop_down", id="down12", pop="POP-12"),
        sig(50, "flap", "bgp", id="before", pop="POP-12"),
        sig(150, "flap", "bgp", id="after", pop="POP-12"),
        sig(161, "flap", "bgp", id="too-late", pop="POP-12"),
        sig(120, "flap", "bgp", id="other-pop", pop="POP-14"),
    ]
    result = replay(policy(suppression={"inhibit": [INHIBIT]}), signals)
    assert suppressed_of(result) == {
        "before": ("inhibit", "pop-down-mutes-bgp", "down12"),
        "after": ("inhibit", "pop-down-mutes-bgp", "down12"),
    }
    assert result.stats["suppressed_inhibit"] == 2


def test_it_does_not_let_a_signal_inhibit_itself():
    rule = {
        "name": "critical-mutes-bgp",
        "source_matchers": [m("severity", "=", "critical")],
        "target_matchers": [m("source", "=", "bgp")],
        "equal": ["pop"],
    }
    alone = [sig(0, "flap", "bgp", severity="critical", id="both", pop="POP-12")]
    assert replay(policy(suppression={"inhibit": [rule]}), alone).suppressed == []
    # Alertmanager's two-sided rule: a source that also matches the targets does not mute a target that is a source.
    pair = [
        *alone,
        sig(1, "flap2", "bgp", severity="critical", id="both2", pop="POP-12"),
        sig(2, "flap3", "bgp", severity="warning", id="target", pop="POP-12"),
    ]
    result = replay(policy(suppression={"inhibit": [rule]}), pair)
    assert suppressed_of(result) == {"target": ("inhibit", "critical-mutes-bgp", "both")}


def test_it_lets_a_silenced_signal_still_inhibit():
    spec = policy(
        suppression={
            "inhibit": [INHIBIT],
            "silences": [{"name": "quiet", "matchers": [m("alertname", "=", "pop_down")]}],
        }
    )
    result = replay(spec, [sig(0, "pop_down", id="down", pop="P"), sig(1, "flap", "bgp", id="flap", pop="P")])
    assert suppressed_of(result) == {
        "down": ("silence", "quiet", None),
        "flap": ("inhibit", "pop-down-mutes-bgp", "down"),
    }


def test_it_compares_equal_labels_on_the_exposed_labels():
    rule = {
        "name": "r",
        "source_matchers": [m("pop", "=", "ams")],
        "target_matchers": [m("pop", "=", "fra")],
        "equal": ["alertname"],
    }
    result = replay(policy(suppression={"inhibit": [rule]}), [sig(0, "A", pop="ams"), sig(1, "B", pop="fra")])
    assert result.suppressed == []


# --- stage 2: grouping, episodes and joins --------------------------------------------------------------------------


def test_it_starts_a_new_episode_after_a_gap_longer_than_the_window():
    spec = policy(correlation={"group_by": ["pop"], "window_s": 60})
    signals = [sig(0, id="a", pop="P"), sig(60, id="b", pop="P"), sig(121, id="c", pop="P"), sig(30, id="q", pop="Q")]
    result = replay(spec, signals)
    assert members(result) == [["a", "b"], ["q"], ["c"]]
    assert result.stats["episodes"] == 3 and result.stats["groups"] == 2
    assert [incident.group_labels for incident in result.incidents] == [{"pop": "P"}, {"pop": "Q"}, {"pop": "P"}]


JOIN = {"name": "bgp-dns-same-pop", "sources": ["bgp", "dns"], "on": ["pop"], "within_s": 60}


def test_it_joins_episodes_of_different_sources_at_the_same_pop_within_the_join_window():
    spec = policy(correlation={"group_by": ["source", "pop"], "joins": [JOIN]})
    signals = [
        sig(0, "bgp_session_flap", "bgp", id="flap", pop="POP-12", region="r1"),
        sig(45, "dns_nxdomain", "dns", id="nx", pop="POP-12", region="r1"),
        sig(50, "dns_nxdomain", "dns", id="nx-elsewhere", pop="POP-14"),
        sig(500, "dns_nxdomain", "dns", id="nx-late", pop="POP-12"),
    ]
    result = replay(spec, signals)
    assert members(result) == [["flap", "nx"], ["nx-elsewhere"], ["nx-late"]]
    joined = result.incidents[0]
    assert joined.joined_by == ("bgp-dns-same-pop",)
    assert joined.group_labels == {"pop": "POP-12"}  # what the joined groups agree on
    assert joined.sources == {"bgp": 1, "dns": 1}
    assert result.stats["episodes_joined"] == 1
    apart = replay(policy(correlation={"group_by": ["source", "pop"]}), signals)
    assert members(apart) == [["flap"], ["nx"], ["nx-elsewhere"], ["nx-late"]]


def test_it_joins_transitively_and_not_past_within_s():
    spec = policy(correlation={"group_by": ["source", "host"], "joins": [JOIN]})
    signals = [
        sig(0, source="bgp", id="b1", pop="P", host="r1"),
        sig(10, source="bgp", id="b2", pop="P", host="r2"),
        sig(55, source="dns", id="d1", pop="P", host="ns1"),  # within 60 s of both routers
        sig(200, source="dns", id="d2", pop="P", host="ns2"),  # too late for anything
    ]
    assert members(replay(spec, signals)) == [["b1", "b2", "d1"], ["d2"]]


# --- stage 2: Alertmanager-style routes ---------------------------------------------------------------------------

ROUTES = {
    "receiver": "default",
    "group_by": ["alertname"],
    "routes": [
        {
            "receiver": "netops",
            "matchers": [m("source", "=~", "bgp|dns")],
            "group_by": ["pop"],
            "routes": [{"receiver": "netops-critical", "matchers": [m("severity", "=", "critical")]}],
        },
        {"receiver": "edge", "matchers": [m("service", "=", "edge-gw")], "continue": True},
        {"receiver": "audit", "matchers": [m("service", "=~", "edge-.*")], "group_by": ["..."]},
    ],
}


def routed(signals):
    result = replay(policy(correlation={"routes": ROUTES}), signals)
    return {
        (incident.receiver, json.dumps(incident.group_labels, sort_keys=True)): list(incident.signals)
        for incident in result.incidents
    }


def test_it_routes_depth_first_into_nested_routes_inheriting_group_by():
    signals = [
        sig(0, "flap", "bgp", severity="critical", id="crit", pop="P1"),
        sig(1, "flap", "bgp", severity="error", id="err", pop="P1"),
        sig(2, "nx", "dns", id="dns", pop="P1"),
        sig(3, "cpu", id="cpu", service="api"),
    ]
    assert routed(signals) == {
        ("netops-critical", '{"pop": "P1"}'): ["crit"],  # group_by inherited from netops
        ("netops", '{"pop": "P1"}'): ["dns", "err"],  # matched no child: stays at the parent
        ("default", '{"alertname": "cpu"}'): ["cpu"],  # matched no route: stays at the root
    }


def test_it_continues_past_a_matching_route_only_when_it_says_so():
    signals = [sig(0, "5xx", id="gw", service="edge-gw", pop="P1"), sig(1, "5xx", id="gx", service="edge-gx", pop="P1")]
    assert routed(signals) == {
        ("edge", '{"alertname": "5xx"}'): ["gw"],
        (
            "audit",
            '{"alertname": "5xx", "pop": "P1", "service": "edge-gw", "severity": "warning", "source": "metrics"}',
        ): ["gw"],
        (
            "audit",
            '{"alertname": "5xx", "pop": "P1", "service": "edge-gx", "severity": "warning", "source": "metrics"}',
        ): ["gx"],
    }


def test_it_groups_by_every_label_with_dots():
    signals = [
        sig(0, "5xx", id="a", service="edge-gx", host="h1"),
        sig(1, "5xx", id="b", service="edge-gx", host="h2"),
        sig(2, "5xx", id="c", service="edge-gx", host="h1"),
    ]
    groups = routed(signals)
    assert sorted(groups.values()) == [["a", "c"], ["b"]]


def test_it_anchors_route_regexes():
    signals = [sig(0, "5xx", id="edge", service="xedge-gw"), sig(1, "x", "dnsx", id="dnsx")]
    assert {receiver for receiver, _ in routed(signals)} == {"default"}


def test_it_keys_incidents_by_route_and_group_labels():
    result = replay(policy(correlation={"routes": ROUTES}), [sig(0, "flap", "bgp", id="a", pop="P1")])
    (incident,) = result.incidents
    assert incident.key == "root.0|pop=P1|2026-02-26T14:00:00Z"
    assert (incident.receiver, incident.group_labels) == ("netops", {"pop": "P1"})
    assert replay(policy(), [sig(0, id="a", pop="P1")]).incidents[0].receiver is None


# --- stage 3: incidents ---------------------------------------------------------------------------------------------


def test_it_forms_incidents_only_from_episodes_meeting_the_thresholds():
    spec = policy(correlation={"group_by": ["pop"]}, incidents={"min_signals": 2, "min_severity": "error"})
    signals = [
        sig(0, id="a1", severity="warning", pop="A"),
        sig(1, id="a2", severity="error", pop="A"),
        sig(0, id="b1", severity="warning", pop="B"),
        sig(1, id="b2", severity="warning", pop="B"),
        sig(0, id="c1", severity="critical", pop="C"),
    ]
    result = replay(spec, signals)
    assert members(result) == [["a1", "a2"]]
    assert result.stats["incidents_formed"] == 1 and result.stats["episodes_below_threshold"] == 2


def test_it_rolls_severity_up_by_the_configured_order():
    signals = [
        sig(0, severity="critical", pop="P"),
        sig(1, severity="minor", pop="P"),
        sig(2, severity="major", pop="P"),
    ]
    assert replay(policy(), signals).incidents[0].severity == "critical"
    custom = policy(severity_order=["critical", "minor", "major"])
    assert replay(custom, signals).incidents[0].severity == "major"
    assert replay(policy(), [sig(0, severity=None)]).incidents[0].severity is None


def test_it_titles_incidents_from_the_template_leaving_missing_values_empty():
    spec = policy(
        incidents={"title": "{name} at {labels.pop} on {labels.peer}: {count} signals ({severity}, {receiver})"}
    )
    signals = [
        sig(0, "latency", severity="warning", pop="POP-12"),
        sig(1, "http_5xx_rate", severity="critical", pop="POP-12"),
    ]
    (incident,) = replay(spec, signals).incidents
    assert incident.title == "http_5xx_rate at POP-12 on : 2 signals (critical, )"


def test_it_gives_incidents_a_fingerprint_independent_of_input_order_and_time():
    signals = [sig(0, "a", pop="P", host="h1"), sig(1, "b", pop="P", host="h2"), sig(2, "a", pop="P", host="h1")]
    first = replay(policy(), signals).incidents[0]
    assert replay(policy(), list(reversed(signals))).incidents[0].fingerprint == first.fingerprint
    later = [s._replace(ts=s.ts + timedelta(hours=1), id=s.id + "-later") for s in signals]
    assert replay(policy(), later).incidents[0].fingerprint == first.fingerprint
    assert replay(policy(), signals[:2]).incidents[0].fingerprint == first.fingerprint  # same member identities
    assert replay(policy(), signals[1:2]).incidents[0].fingerprint != first.fingerprint


DRAIN = {
    "name": "drain-pop",
    "capability": "traffic:drain",
    "when": [m("service", "=", "edge-gw")],
    "bounds": {"pops": 1, "regions": 1},
}


def test_it_plans_an_action_within_its_blast_radius_and_blocks_one_beyond_it():
    spec = policy(correlation={"group_by": ["service"]}, incidents={"actions": [DRAIN]})
    one_pop = replay(
        spec,
        [sig(0, service="edge-gw", pop="POP-12", region="r1"), sig(1, service="edge-gw", pop="POP-12", region="r1")],
    )
    (action,) = one_pop.incidents[0].actions
    assert (action.status, action.reason) == ("planned", None)
    assert action.targets == {"pops": ["POP-12"], "regions": ["r1"], "services": ["edge-gw"]}
    assert action.as_dict() == {
        "name": "drain-pop",
        "capability": "traffic:drain",
        "status": "planned",
        "reason": None,
        "targets": {"pops": ["POP-12"], "regions": ["r1"], "services": ["edge-gw"]},
    }
    two_pops = replay(
        spec,
        [sig(0, service="edge-gw", pop="POP-12", region="r1"), sig(1, service="edge-gw", pop="POP-14", region="r1")],
    )
    (blocked,) = two_pops.incidents[0].actions
    assert blocked.status == "blocked"
    assert blocked.reason == "touches 2 pops (POP-12, POP-14); at most 1 allowed"
    assert two_pops.stats["actions_blocked"] == 1 and two_pops.stats["actions_planned"] == 0


def test_it_matches_action_rules_on_common_labels_or_any_member():
    mixed = [sig(0, service="edge-gw", pop="P"), sig(1, service="api", pop="P")]
    common = policy(correlation={"group_by": ["pop"]}, incidents={"actions": [DRAIN]})
    assert replay(common, mixed).incidents[0].actions == ()
    anyone = policy(correlation={"group_by": ["pop"]}, incidents={"actions": [{**DRAIN, "on": "any"}]})
    (action,) = replay(anyone, mixed).incidents[0].actions
    assert action.targets["services"] == ["api", "edge-gw"]


# --- the demo ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_window():
    _, lines, baseline = sample_bundle(seed=42, signals=5000)
    return [parse_signal(line, number) for number, line in enumerate(lines, 1)], baseline


def _bgp_dns_incidents(result):
    return [
        incident
        for incident in result.incidents
        if {"bgp", "dns"} & set(incident.sources) and incident.group_labels.get("pop") == "POP-12"
    ]


def test_it_keeps_bgp_and_dns_apart_under_the_baseline_and_joins_them_under_the_tightened_policy(demo_window):
    signals, _ = demo_window
    baseline = replay(baseline_policy(), signals)
    tightened = replay(tightened_policy(), signals)
    apart = _bgp_dns_incidents(baseline)
    assert len(apart) >= 2 and all(len(incident.sources) == 1 for incident in apart)
    (joined,) = _bgp_dns_incidents(tightened)
    assert set(joined.sources) == {"bgp", "dns"} and joined.joined_by == ("bgp-dns-same-pop",)
    assert set(joined.signals) == {member for incident in apart for member in incident.signals}
    restart = next(action for action in joined.actions if action.name == "restart-resolvers")
    assert restart.status == "blocked" and "2 services" in restart.reason
    assert baseline.signals_digest == tightened.signals_digest


def test_it_replays_the_demo_baseline_close_to_productions_baseline(demo_window):
    signals, baseline = demo_window
    result = replay(baseline_policy(), signals)
    formed = {frozenset(incident.signals) for incident in result.incidents}
    production = [frozenset(incident["members"]) for incident in baseline["incidents"]]
    assert len(result.incidents) == len(production)
    assert sum(1 for incident in production if incident in formed) >= len(production) - 1


# --- files, progress, determinism -------------------------------------------------------------------------------------


def test_it_replays_a_bundle_and_a_bare_signals_file(tmp_path):
    manifest, lines, baseline = sample_bundle(seed=3, signals=600)
    bundle = tmp_path / "b.tar.gz"
    write_bundle(bundle, manifest=manifest, signals=lines, baseline=baseline, spec=sample_spec())
    jsonl = tmp_path / "signals.jsonl"
    jsonl.write_bytes(b"".join(canonical_json(line) + b"\n" for line in lines))
    from_bundle = replay_file(baseline_policy(), bundle)
    assert from_bundle.stats["signals_in"] == 600
    assert from_bundle.as_dict() == replay_file(baseline_policy(), jsonl).as_dict()


def test_it_reports_a_malformed_line_by_its_number(tmp_path):
    jsonl = tmp_path / "signals.jsonl"
    good = canonical_json(sig(0, id="a").as_json())
    jsonl.write_bytes(good + b"\n{not json\n")
    with pytest.raises(Invalid) as caught:
        replay_file(policy(), jsonl)
    assert caught.value.lines == [2]
    assert "line 2" in caught.value.detail


def test_it_reports_stage_progress_in_order():
    events = []
    replay(
        policy(),
        [sig(0), sig(1)],
        on_progress=lambda stage, status, counts: events.append((stage, status, dict(counts))),
    )
    assert [(stage, status) for stage, status, _ in events] == [
        ("ingest", "started"),
        ("ingest", "finished"),
        ("correlate", "started"),
        ("correlate", "finished"),
        ("aggregate", "started"),
        ("aggregate", "finished"),
    ]
    assert events[1][2] == {"signals_in": 2, "signals_selected": 2}
    assert events[5][2]["incidents_formed"] == 1
    assert all(isinstance(value, int) for _, _, counts in events for value in counts.values())


def test_it_gives_plain_json_with_fingerprints_on_request():
    result = replay(policy(), [sig(0, id="a", pop="P"), sig(1, id="b", pop="P")])
    data = result.as_dict()
    assert json.loads(json.dumps(data)) == data
    assert set(data) == {"incidents", "suppressed", "stats", "signals_digest", "window", "scope", "spec_hash"}
    assert result.as_dict(fingerprints=True)["fingerprints"] == {
        "a": result.fingerprints["a"],
        "b": result.fingerprints["b"],
    }
    assert data["incidents"][0]["first_ts"] == "2026-02-26T14:00:00Z"


labels_st = st.dictionaries(st.sampled_from(["pop", "host", "service"]), st.sampled_from(["A", "B", ""]), max_size=3)
signal_st = st.builds(
    lambda at, name, source, severity, labels, value: (at, name, source, severity, labels, value),
    st.integers(0, 600),
    st.sampled_from(["flap", "nx", "5xx"]),
    st.sampled_from(["bgp", "dns", "metrics"]),
    st.sampled_from([None, "info", "warning", "critical"]),
    labels_st,
    st.none() | st.integers(0, 50),
)
RICH = policy(
    dedup={"window_s": 3},
    suppression={
        "thresholds": [{"name": "floor", "below": 5}],
        "inhibit": [
            {
                "name": "crit",
                "source_matchers": [m("severity", "=", "critical")],
                "target_matchers": [m("source", "=", "dns")],
                "equal": ["pop"],
            }
        ],
    },
    correlation={"group_by": ["source", "pop"], "window_s": 60, "joins": [JOIN]},
    incidents={"actions": [DRAIN | {"when": []}]},
)


@given(st.lists(signal_st, max_size=40), st.randoms(use_true_random=False))
def test_it_gives_the_same_result_whatever_the_input_order(rows, rnd):
    signals = [
        sig(at, name, source, severity, value, id=f"x{n:03d}", **labels)
        for n, (at, name, source, severity, labels, value) in enumerate(rows)
    ]
    shuffled = list(signals)
    rnd.shuffle(shuffled)
    first = replay(RICH, signals)
    assert replay(RICH, shuffled).as_dict(fingerprints=True) == first.as_dict(fingerprints=True)
    assert replay(RICH, signals).as_dict(fingerprints=True) == first.as_dict(fingerprints=True)
    # every selected signal is either suppressed or a member of exactly one episode (no routes, no continue)
    assert first.stats["signals_selected"] == first.stats["signals_suppressed"] + first.stats["signals_correlated"]


CONTENT_DECIDED = policy(
    normalize={
        "rename_labels": {"host": "node"},
        "sources": {"dns": {"drop_labels": ["pop"], "default_severity": "info"}},
    },
    fingerprint={
        "rules": [
            {"name": "by-pop", "matchers": [m("pop", "=~", "A|B")], "fields": ["source", "labels.pop"]},
            {"name": "tmpl", "matchers": [m("source", "=", "bgp")], "template": "{name}/{labels.node}"},
        ],
    },
    dedup={"window_s": 3},
    suppression={
        "thresholds": [{"name": "warn-up", "min_severity": "warning", "matchers": [m("source", "!=", "bgp")]}]
    },
    correlation={"group_by": ["source", "pop"], "window_s": 60, "joins": [JOIN]},
)


@pytest.mark.parametrize("spec", [CONTENT_DECIDED, RICH, tightened_policy()], ids=["content", "values", "tightened"])
@given(rows=st.lists(signal_st, max_size=40))
def test_it_decides_each_content_once_with_the_result_of_deciding_each_signal(spec, rows):
    # ingest pools the signals, so equal label sets share one dict: the memos key on it, by source and name too.
    signals = [
        sig(at, name, source, severity, value, id=f"x{n:03d}", **labels)
        for n, (at, name, source, severity, labels, value) in enumerate(rows)
    ]
    remembered = replay(spec, signals).as_dict(fingerprints=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(correlate_module, "content_numbers", lambda items: None)  # decide signal by signal
        assert replay(spec, signals).as_dict(fingerprints=True) == remembered


@pytest.mark.parametrize("spec", [CONTENT_DECIDED, RICH, tightened_policy()], ids=["content", "values", "tightened"])
@given(rows=st.lists(signal_st, max_size=40), scoped=st.booleans(), windowed=st.booleans())
def test_it_draws_the_report_from_the_replays_own_selection_as_from_the_signals_read_again(
    spec, rows, scoped, windowed
):
    signals = [
        sig(at, name, source, severity, value, id=f"x{n:03d}", **labels)
        for n, (at, name, source, severity, labels, value) in enumerate(rows)
    ]
    window = (T0 + timedelta(seconds=100), T0 + timedelta(seconds=500)) if windowed else None
    replayed = replay(spec, signals, scope={"pop": "A"} if scoped else None, window=window)
    assert replayed.basis is not None and len(replayed.basis.signals) == replayed.stats["signals_selected"]

    by_position = build_report(replayed, policy_spec=spec, signals=signals)
    # Without the basis the report reads the signals again and looks each one up by id, in any order.
    by_id = build_report(dataclasses.replace(replayed, basis=None), policy_spec=spec, signals=signals[::-1])

    assert report_bytes(by_position) == report_bytes(by_id)
    spans = by_position["timeline"]["suppressed"]["items"]
    assert sum(span["signals"] for span in spans) == len(replayed.suppressed)


_SCRIPT = """
import json, sys
from replays.engine.correlate import replay
from replays.engine.demo_policies import tightened_policy
from replays.engine.samples import sample_bundle
from replays.engine.signals import parse_signal
_, lines, _ = sample_bundle(seed=11, signals=1500)
signals = [parse_signal(line, n) for n, line in enumerate(lines, 1)][::-1]
print(json.dumps(replay(tightened_policy(), signals).as_dict(fingerprints=True), sort_keys=True))
"""


def test_it_gives_the_same_result_under_any_hash_seed_time_zone_and_locale():
    outputs = set()
    for seed, tz, lang in (("1", "UTC", "C"), ("4242", "Asia/Kolkata", "C.UTF-8"), ("random", "America/St_Johns", "C")):
        env = {**os.environ, "PYTHONHASHSEED": seed, "TZ": tz, "LC_ALL": lang, "PYTHONPATH": str(ROOT)}
        run = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, cwd=ROOT, capture_output=True, check=True)
        outputs.add(run.stdout)
    assert len(outputs) == 1


def test_it_replays_a_shuffled_sample_like_the_ordered_one():
    _, lines, _ = sample_bundle(seed=5, signals=2000)
    signals = [parse_signal(line, n) for n, line in enumerate(lines, 1)]
    shuffled = list(signals)
    random.Random(1).shuffle(shuffled)
    assert replay(tightened_policy(), shuffled).as_dict() == replay(tightened_policy(), signals).as_dict()
