from __future__ import annotations

import hashlib
import json
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replays.engine import CanonicalJSONError, canonical_json, is_spec_hash, spec_hash
from replays.engine.canonical import canonical_text_json

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


def _shuffled(value, rng: random.Random):
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: _shuffled(v, rng) for k, v in items}
    if isinstance(value, list):
        return [_shuffled(v, rng) for v in value]
    return value


def test_it_writes_the_documented_canonical_form():
    spec = {"b": [1, 2.5, None], "a": {"z": "ü", "y": True}}
    assert canonical_json(spec) == '{"a":{"y":true,"z":"ü"},"b":[1,2.5,null]}'.encode()
    assert spec_hash(spec) == "sha256:" + hashlib.sha256(canonical_json(spec)).hexdigest()


@given(st.dictionaries(st.text(), json_values, max_size=6), st.integers(0, 2**32))
def test_it_hashes_independently_of_key_order(spec, seed):
    assert spec_hash(_shuffled(spec, random.Random(seed))) == spec_hash(spec)


@given(st.dictionaries(st.text(), json_values, max_size=6))
def test_it_round_trips_through_json_to_the_same_hash(spec):
    assert spec_hash(json.loads(canonical_json(spec))) == spec_hash(spec)
    assert is_spec_hash(spec_hash(spec))


def test_it_tells_different_specs_apart():
    assert spec_hash({"dedup_window_s": 60}) != spec_hash({"dedup_window_s": 61})
    assert spec_hash({"a": 1}) != spec_hash({"a": "1"})


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({"x": float("nan")}, "$.x: nan is not a finite number"),
        ({1: "a"}, "object key 1 is not a string"),
        ({"s": {1, 2}}, "$.s: set is not a JSON value"),
    ],
)
def test_it_refuses_values_that_have_no_canonical_form(value, problem):
    with pytest.raises(CanonicalJSONError, match=problem.replace("$", r"\$")):
        spec_hash(value)


@pytest.mark.parametrize("bad", ["sha256:abc", "md5:" + "0" * 64, "sha256:" + "G" * 64, 7])
def test_it_recognises_only_well_formed_spec_hashes(bad):
    assert not is_spec_hash(bad)


# Any text a signal may hold: every code point but the lone surrogates the reader refuses.
signal_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
text_values = st.recursive(signal_text, lambda inner: st.dictionaries(signal_text, inner, max_size=5), max_leaves=12)


@given(text_values)
def test_it_writes_text_only_values_canonically_on_the_fast_path(value):
    assert canonical_text_json(value) == canonical_json(value)


def test_it_words_a_lone_surrogate_on_the_fast_path_as_canonical_json_does():
    with pytest.raises(CanonicalJSONError, match="lone surrogate"):
        canonical_text_json({"labels": {"pop": "\ud800"}})
