from __future__ import annotations

import tracemalloc

from hypothesis import given
from hypothesis import strategies as st

from replays.engine.idset import IdSet


@given(st.lists(st.text(max_size=12), max_size=300))
def test_it_agrees_with_a_python_set(items):
    compact, reference = IdSet(capacity=4), set()
    for item in items:
        assert compact.add(item) == (item not in reference)
        reference.add(item)
    assert len(compact) == len(reference)
    assert all(item in compact for item in reference)
    assert "never-added-\x00" not in compact or "never-added-\x00" in reference


def test_it_keeps_a_hundred_thousand_ids_in_under_two_mebibytes():
    tracemalloc.start()
    ids = IdSet()
    for n in range(100_000):
        ids.add(f"sig-{n:08x}-edge-gw")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(ids) == 100_000
    assert ids.nbytes <= 2 * 1024 * 1024
    assert peak < 4 * 1024 * 1024  # a set of the same strings takes ~12 MiB


@given(st.lists(st.text(max_size=8), max_size=200))
def test_it_gives_the_exact_set_the_same_add_answers(items):
    from replays.engine.idset import ExactIdSet

    compact, exact = IdSet(), ExactIdSet()
    assert [compact.add(i) for i in items] == [exact.add(i) for i in items]
