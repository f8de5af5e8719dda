"""Whatever an agent sends, the answer is a 4xx naming the problem, never a 500, and a refusal stores nothing.

Hypothesis posts random bytes, truncated archives and bundles whose manifest was mutated, through the real URL.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.artifacts.conftest import AGENT_NAME, assert_nothing_stored, bundle_bytes, post_upload, snapshot_bytes

pytestmark = pytest.mark.django_db

FIXTURES_PER_TEST = settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
KINDS = st.sampled_from(["incident_bundle", "snapshot"])
BUNDLES = {fmt: bundle_bytes(fmt=fmt, signals=40) for fmt in ("tar.gz", "zip")}
SEVERITIES = {"sev1", "sev2", "sev3", "sev4"}
MANIFEST_KEYS = ["format", "incident", "environment", "agent", "captured_at", "window", "scope", "spec_hash"]
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")

# No manifest field accepts any of these: every top-level field is a string or an object.
WRONG_TYPED = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.integers(), max_size=3),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@pytest.fixture
def uploads_unlimited(settings):
    settings.TRACEFLUX_RATE_LIMITS = {**settings.TRACEFLUX_RATE_LIMITS, "uploads": "100000/m"}


def assert_refused(response, media_root) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.content[:300])
    body = response.json()
    assert isinstance(body["detail"], str) and body["detail"].strip()
    assert_nothing_stored(media_root)


@FIXTURES_PER_TEST
@given(noise=st.binary(max_size=4096), kind=KINDS)
def test_it_refuses_random_bytes_with_a_named_problem(client, agent_key, media_root, uploads_unlimited, noise, kind):
    assert_refused(post_upload(client, agent_key, noise, kind=kind), media_root)


@FIXTURES_PER_TEST
@given(fmt=st.sampled_from(sorted(BUNDLES)), data=st.data())
def test_it_refuses_a_truncated_archive(client, agent_key, media_root, uploads_unlimited, fmt, data):
    whole = BUNDLES[fmt]
    cut = data.draw(st.integers(min_value=0, max_value=len(whole) - 1), label="cut")

    assert_refused(post_upload(client, agent_key, whole[:cut]), media_root)


@FIXTURES_PER_TEST
@given(data=st.data())
def test_it_refuses_a_bundle_whose_bytes_were_flipped(client, agent_key, media_root, uploads_unlimited, data):
    whole = bytearray(BUNDLES[data.draw(st.sampled_from(sorted(BUNDLES)), label="fmt")])
    for _ in range(data.draw(st.integers(min_value=1, max_value=8), label="flips")):
        at = data.draw(st.integers(min_value=0, max_value=len(whole) - 1))
        whole[at] ^= data.draw(st.integers(min_value=1, max_value=255))

    response = post_upload(client, agent_key, bytes(whole))

    # A flip in bytes nobody checks (a gzip header's mtime, a zip's version field) can leave a valid bundle, which is
    # then stored; every other outcome must be a refusal that names its problem.
    assert response.status_code < 500
    if response.status_code >= 400:
        assert response.json()["detail"].strip()


def _mutations() -> st.SearchStrategy[tuple[str, Any]]:
    timestamp_fields = st.sampled_from(["captured_at", "window.start", "window.end"])
    not_a_timestamp = st.text(max_size=30).filter(lambda text: not RFC3339.fullmatch(text))
    return st.one_of(
        st.tuples(st.just("drop"), st.sampled_from(MANIFEST_KEYS)),
        st.tuples(st.just("retype"), st.tuples(st.sampled_from(MANIFEST_KEYS), WRONG_TYPED)),
        st.tuples(st.just("add"), st.tuples(st.text(min_size=1, max_size=12).filter(
            lambda key: key not in MANIFEST_KEYS), JSON_VALUES)),
        st.tuples(st.just("timestamp"), st.tuples(timestamp_fields, not_a_timestamp)),
        st.tuples(st.just("swap_window"), st.none()),
        st.tuples(st.just("severity"), st.text(max_size=10).filter(lambda s: s not in SEVERITIES)),
    )


def _mutated_manifest(mutation: tuple[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """(changes, keys to drop) to apply to the sample bundle's manifest."""
    from replays.engine.samples import sample_bundle

    manifest, _, _ = sample_bundle(seed=1, signals=40)
    what, arg = mutation
    if what == "drop":
        return {}, (arg,)
    if what in ("retype", "add"):
        key, value = arg
        return {key: value}, ()
    if what == "timestamp":
        path, value = arg
        if path == "captured_at":
            return {"captured_at": value}, ()
        window = dict(manifest["window"])
        window[path.split(".")[1]] = value
        return {"window": window}, ()
    if what == "swap_window":
        return {"window": {"start": manifest["window"]["end"], "end": manifest["window"]["start"]}}, ()
    return {"incident": {**manifest["incident"], "severity": arg}}, ()


@FIXTURES_PER_TEST
@given(mutation=_mutations(), fmt=st.sampled_from(sorted(BUNDLES)))
def test_it_refuses_a_mutated_manifest_naming_the_field(
    client, agent_key, media_root, uploads_unlimited, mutation, fmt
):
    changes, drops = _mutated_manifest(mutation)
    content = bundle_bytes(fmt=fmt, signals=40, manifest_changes=changes, drop_keys=drops)

    response = post_upload(client, agent_key, content)

    assert_refused(response, media_root)
    if response.status_code == 400:
        assert response.json().get("field", "").startswith("manifest")


@FIXTURES_PER_TEST
@given(kind=st.text(max_size=30).filter(lambda k: k not in {"incident_bundle", "snapshot"}))
def test_it_refuses_an_unknown_kind(client, agent_key, media_root, uploads_unlimited, kind):
    response = post_upload(client, agent_key, snapshot_bytes(agent=AGENT_NAME), kind=kind)

    assert_refused(response, media_root)
    assert response.json()["field"] == "kind"
