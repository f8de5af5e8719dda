"""Policies (traceflux.policy/v1): the schema, the checks it cannot express, errors that name JSON paths, matchers."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from replays.engine import Invalid, spec_hash
from replays.engine.demo_policies import baseline_policy, tightened_policy
from replays.engine.formats import schema_bytes
from replays.engine.policy import (
    DEFAULT_SEVERITY_ORDER,
    POLICY_SCHEMA,
    Matcher,
    compile_labels_test,
    compile_signal_test,
    exposed_labels,
    load_policy,
)
from replays.engine.signals import Signal

T0 = datetime(2026, 2, 26, 14, 0, tzinfo=UTC)


def policy(**sections):
    return {"schema": POLICY_SCHEMA, **sections}


def signal(name="x", source="metrics", severity=None, **labels):
    return Signal("s1", T0, source, name, labels, severity)


def m(label, op, value):
    return Matcher(label, op, value)


def mj(label, op, value):
    return {"label": label, "op": op, "value": value}


def test_it_loads_an_empty_policy_with_the_documented_defaults():
    loaded = load_policy(policy())
    assert loaded.severity_order == DEFAULT_SEVERITY_ORDER
    assert loaded.fingerprint_default == ("source", "name", "labels")
    assert loaded.dedup_window_s == 0
    assert loaded.group_by == ("service", "region", "pop")
    assert loaded.window_s == 300
    assert loaded.routes is None and loaded.joins == () and loaded.actions == ()
    assert loaded.min_signals == 1 and loaded.min_severity is None
    assert loaded.title.text == "{name}"
    assert loaded.target_labels == {"pops": "pop", "regions": "region", "services": "service"}
    assert loaded.spec_hash == spec_hash(policy())


def test_it_accepts_the_demo_policies_and_hashes_them_apart():
    baseline, tightened = load_policy(baseline_policy()), load_policy(tightened_policy())
    assert baseline.spec_hash != tightened.spec_hash
    assert [join.name for join in tightened.joins] == ["bgp-dns-same-pop"]
    assert baseline_policy() == baseline_policy()  # fresh data each call, same content


def test_it_returns_a_loaded_policy_unchanged():
    loaded = load_policy(policy())
    assert load_policy(loaded) is loaded


def test_it_keeps_its_own_copy_of_the_document():
    document = policy(correlation={"window_s": 60})
    loaded = load_policy(document)
    document["correlation"]["window_s"] = 1
    assert loaded.spec["correlation"]["window_s"] == 60


@pytest.mark.parametrize(
    ("document", "field", "words"),
    [
        ([], "policy", "must be an object"),
        ({}, "policy.schema", "is required"),
        ({"schema": "traceflux.policy/v2"}, "policy.schema", "must be 'traceflux.policy/v1'"),
        (policy(correlation={"window_s": -1}), "policy.correlation.window_s", "less than the minimum"),
        (policy(correlation={"window_s": "60"}), "policy.correlation.window_s", "must be a number"),
        (policy(correlation={"group_by": ["pop", "pop"]}), "policy.correlation.group_by", "non-unique"),
        (policy(colour="red"), "policy.colour", "is not an allowed field"),
        (
            policy(suppression={"silences": [{"name": "s", "matchers": [{"label": "a", "op": "==", "value": "b"}]}]}),
            "policy.suppression.silences[0].matchers[0].op",
            "must be one of =, !=, =~, !~",
        ),
        (policy(fingerprint={"rules": [{"name": "r"}]}), "policy.fingerprint.rules[0]", "exactly one of fields"),
        (
            policy(fingerprint={"rules": [{"name": "r", "fields": ["name"], "template": "{name}"}]}),
            "policy.fingerprint.rules[0]",
            "only one of fields, template",
        ),
        (policy(fingerprint={"default": ["labels."]}), "policy.fingerprint.default[0]", "does not match"),
        (policy(suppression={"thresholds": [{"name": "t"}]}), "policy.suppression.thresholds[0]", "needs one of"),
        (
            policy(suppression={"thresholds": [{"name": "t", "baselines": [{"labels": {}, "below": 1}]}]}),
            "policy.suppression.thresholds[0]",
            "baselines needs by",
        ),
        (
            policy(correlation={"joins": [{"name": "j", "sources": ["bgp"], "on": ["pop"], "within_s": 60}]}),
            "policy.correlation.joins[0].sources",
            "at least 2",
        ),
        (
            policy(incidents={"actions": [{"name": "a", "capability": "drain"}]}),
            "policy.incidents.actions[0].capability",
            "does not match",
        ),
        (policy(incidents={"min_signals": 0}), "policy.incidents.min_signals", "less than the minimum"),
    ],
)
def test_it_names_the_json_path_of_a_schema_error(document, field, words):
    with pytest.raises(Invalid) as caught:
        load_policy(document)
    assert caught.value.field == field
    assert words in caught.value.detail
    assert caught.value.detail.startswith("policy: $")


@pytest.mark.parametrize(
    ("document", "field", "words"),
    [
        (
            policy(suppression={"silences": [{"name": "s", "matchers": [{"label": "a", "op": "=~", "value": "("}]}]}),
            "policy.suppression.silences[0].matchers[0].value",
            "not a valid regular expression",
        ),
        (
            policy(suppression={"silences": [{"name": "s", "matchers": [mj("a", "=~", "x)|(y")]}]}),
            "policy.suppression.silences[0].matchers[0].value",
            "unbalanced parenthesis at position 1",  # it would compile once wrapped in (?:...), and mean more
        ),
        (policy(incidents={"min_severity": "sev1"}), "policy.incidents.min_severity", "not in severity_order"),
        (
            policy(severity_order=["low", "high"], normalize={"sources": {"flow": {"default_severity": "info"}}}),
            "policy.normalize.sources.flow.default_severity",
            "not in severity_order",
        ),
        (policy(incidents={"title": "{bogus}"}), "policy.incidents.title", "unknown placeholder {bogus}"),
        (policy(incidents={"title": "{name!r}"}), "policy.incidents.title", "not supported"),
        (
            policy(fingerprint={"rules": [{"name": "r", "template": "{labels.pop"}]}),
            "policy.fingerprint.rules[0].template",
            "not a valid template",
        ),
        (
            policy(correlation={"routes": {"matchers": [{"label": "a", "op": "=", "value": "b"}]}}),
            "policy.correlation.routes.matchers",
            "root route",
        ),
        (policy(correlation={"routes": {"continue": True}}), "policy.correlation.routes.continue", "cannot continue"),
        (
            policy(correlation={"routes": {"routes": [{"group_by": ["...", "pop"]}]}}),
            "policy.correlation.routes.routes[0].group_by",
            "must stand alone",
        ),
        (
            policy(
                suppression={
                    "silences": [
                        {
                            "name": "s",
                            "matchers": [],
                            "starts_at": "2026-02-26T14:00:00Z",
                            "ends_at": "2026-02-26T13:00:00Z",
                        }
                    ]
                }
            ),
            "policy.suppression.silences[0].ends_at",
            "must be after starts_at",
        ),
        (
            policy(
                suppression={
                    "thresholds": [{"name": "t", "by": ["pop"], "baselines": [{"labels": {"site": "a"}, "below": 1}]}]
                }
            ),
            "policy.suppression.thresholds[0].baselines[0].labels",
            "exactly the labels in by",
        ),
    ],
)
def test_it_names_the_json_path_of_a_rule_the_schema_cannot_express(document, field, words):
    with pytest.raises(Invalid) as caught:
        load_policy(document)
    assert caught.value.field == field
    assert words in caught.value.detail


def test_it_ships_a_draft_2020_12_schema_with_the_version_marker():
    schema = json.loads(schema_bytes("policy"))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["properties"]["schema"] == {"const": POLICY_SCHEMA}
    assert schema["required"] == ["schema"]


# --- matchers -------------------------------------------------------------------------------------------------------


def test_it_anchors_regex_matchers_fully():
    test = compile_signal_test([m("pop", "=~", "POP-1")])
    assert test(signal(pop="POP-1"))
    assert not test(signal(pop="POP-12"))
    assert not test(signal(pop="xPOP-1"))
    assert not test(signal(pop="POP-1\n"))  # Go's $ does not stop before a final line feed, nor does ours
    assert compile_signal_test([m("pop", "=~", "POP-1|POP-2")])(signal(pop="POP-2"))
    assert compile_signal_test([m("pop", "!~", "POP-1.*")])(signal(pop="POP-2"))


def test_it_reads_a_missing_label_as_empty():
    assert compile_signal_test([m("peer", "=", "")])(signal(pop="POP-1"))
    assert compile_signal_test([m("peer", "!=", "AS1")])(signal(pop="POP-1"))
    assert compile_signal_test([m("peer", "=~", ".*")])(signal())
    assert not compile_signal_test([m("peer", "=~", ".+")])(signal())


def test_it_exposes_alertname_source_and_severity_to_matchers():
    bgp = signal(name="bgp_session_flap", source="bgp", severity="error", pop="POP-12")
    assert compile_signal_test([m("alertname", "=", "bgp_session_flap"), m("source", "=", "bgp")])(bgp)
    assert compile_signal_test([m("severity", "=~", "error|critical")])(bgp)
    assert not compile_signal_test([m("severity", "=", "error")])(signal())
    assert exposed_labels(bgp) == {
        "pop": "POP-12",
        "alertname": "bgp_session_flap",
        "source": "bgp",
        "severity": "error",
    }


def test_it_requires_every_matcher_and_matches_everything_with_none():
    both = [m("pop", "=", "POP-12"), m("service", "=", "edge-gw")]
    assert compile_signal_test(both)(signal(pop="POP-12", service="edge-gw"))
    assert not compile_signal_test(both)(signal(pop="POP-12", service="api"))
    assert compile_signal_test(both * 2)(signal(pop="POP-12", service="edge-gw"))
    assert compile_signal_test([])(signal())
    assert compile_labels_test(both)({"pop": "POP-12", "service": "edge-gw"})
    assert not compile_labels_test(both)({"pop": "POP-12"})
