"""paused_gc: the cyclic collector is off inside, back as it was after, and what the block made is not left young."""

from __future__ import annotations

import gc

import pytest

from replays.engine.gcpause import paused_gc


@pytest.fixture
def collecting():
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_it_pauses_the_collector_and_restores_it_even_when_nested(collecting):
    with paused_gc():
        assert not gc.isenabled()
        with paused_gc():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the inner block does not switch it back on under the outer one
    assert gc.isenabled()


def test_it_leaves_a_disabled_collector_disabled(collecting):
    gc.disable()
    with paused_gc():
        pass
    assert not gc.isenabled()


def test_it_restores_the_collector_when_the_block_raises(collecting):
    with pytest.raises(RuntimeError), paused_gc():
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_it_files_what_the_block_made_with_the_old_generation(collecting):
    with paused_gc():
        made = [[n] for n in range(50_000)]
    # Left young, the next young pass would walk all 50,000 (and promote them one generation); filed old, they wait
    # for the old generation's own, rarer pass.
    probe = made[-1]
    assert any(item is probe for item in gc.get_objects(generation=2))
    assert not any(item is probe for item in gc.get_objects(generation=0))
