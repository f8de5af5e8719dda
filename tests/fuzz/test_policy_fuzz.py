"""Fuzzing load_policy: random JSON, documents the policy schema accepts, and the demo policies mutated at random paths.
Every refusal is errors.Invalid whose field is `policy` plus the JSON path and whose detail starts with that path; a
policy that loads can replay signals without raising."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from replays.engine import Invalid, Policy, load_policy, parse_signal, replay
from replays.engine.alertmanager import import_alertmanager
from replays.engine.demo_policies import baseline_policy, tightened_policy
from replays.engine.policy import POLICY_SCHEMA
from replays.engine.samples import sample_bundle
from tests.fuzz.strategies import json_values, mutated, nested, schema_values
from tests.fuzz.support import FUZZ

DEMO_POLICIES = [baseline_policy(), tightened_policy(),
                 import_alertmanager("receivers: [{name: default}, {name: bgp}]\n"
                                     "route: {receiver: default, group_by: [pop], routes: [{receiver: bgp, "
                                     "matchers: ['alertname=~\"BGP.*\"'], continue: true}]}\n"
                                     "inhibit_rules: [{source_matchers: [severity=critical], "
                                     "target_matchers: [severity=warning], equal: [pop]}]\n")]
_MANIFEST, _LINES, _ = sample_bundle(seed=5, signals=40)
SIGNALS = [parse_signal(line, number) for number, line in enumerate(_LINES, 1)]
WINDOW = (datetime(2026, 2, 26, 14, 0, tzinfo=UTC), datetime(2026, 2, 26, 14, 4, tzinfo=UTC))


def load(document) -> Policy | None:
    """The loaded policy, or None after checking that the refusal names its JSON path."""
    try:
        return load_policy(document)
    except Invalid as exc:
        assert exc.field is not None and exc.field.startswith("policy"), (exc.field, exc.detail)
        path = "$" + exc.field[len("policy"):]
        assert exc.detail.startswith(f"policy: {path}: "), (exc.field, exc.detail)
        return None


def replays_cleanly(policy: Policy) -> None:
    result = replay(policy, SIGNALS, window=WINDOW)
    result.as_dict()


def test_it_loads_and_replays_the_policies_the_mutations_start_from():
    for document in DEMO_POLICIES:
        policy = load(document)
        assert policy is not None
        replays_cleanly(policy)


@FUZZ
@given(document=json_values)
def test_it_refuses_random_json_naming_the_path(document):
    # load() checks that a refusal names the path; only an object that says it is a policy can be accepted.
    assert load(document) is None or (isinstance(document, dict) and document.get("schema") == POLICY_SCHEMA)


@FUZZ
@given(document=schema_values("policy"))
def test_it_loads_or_refuses_any_document_the_schema_accepts_and_replays_what_it_loads(document):
    policy = load(document)
    if policy is not None:
        replays_cleanly(policy)


@FUZZ
@given(document=st.sampled_from(DEMO_POLICIES).flatmap(mutated))
def test_it_loads_or_refuses_a_mutated_demo_policy_and_replays_what_it_loads(document):
    policy = load(document)
    if policy is not None:
        replays_cleanly(policy)


@FUZZ
@given(depth=st.integers(min_value=70, max_value=20_000), where=st.sampled_from(["name", "routes", "normalize"]))
def test_it_refuses_a_policy_nested_too_deeply_naming_where(depth, where):
    document = {"schema": "traceflux.policy/v1"}
    if where == "name":
        document["name"] = nested(depth)
    elif where == "normalize":
        document["normalize"] = {"set_labels": {"a": nested(depth)}}
    else:
        route: dict = {"receiver": "default"}
        document["correlation"] = {"routes": route}
        for _ in range(depth):
            child: dict = {"receiver": "default"}
            route["routes"] = [child]
            route = child
    assert load(document) is None


@FUZZ
@given(window_s=st.floats(allow_nan=False) | st.integers(), shift=st.integers(min_value=-10**6, max_value=10**6))
def test_it_replays_with_extreme_windows(window_s, shift):
    policy = load({"schema": "traceflux.policy/v1", "correlation": {"window_s": window_s},
                   "dedup": {"window_s": abs(window_s) if isinstance(window_s, int) else 0}})
    if policy is not None:
        start, end = WINDOW
        replay(policy, SIGNALS, window=(start + timedelta(seconds=shift), end + timedelta(seconds=shift))).as_dict()
