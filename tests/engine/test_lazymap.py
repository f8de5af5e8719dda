"""LazyMap: a replay's per-signal maps, built into a dict only when a value is looked up."""

from __future__ import annotations

from replays.engine.lazymap import LazyMap


def test_it_iterates_and_measures_without_building_and_builds_once_on_lookup():
    calls = []

    def values():
        calls.append(1)
        return ["v1", "v2", "v3"]

    lazy = LazyMap(lambda: iter(["a", "b", "c"]), values, 3)
    assert (len(lazy), list(lazy), repr(lazy), calls) == (3, ["a", "b", "c"], "LazyMap(3 entries)", [])
    assert lazy["b"] == "v2" and "c" in lazy and "z" not in lazy and lazy.get("z") is None
    assert calls == [1]
    assert dict(lazy) == {"a": "v1", "b": "v2", "c": "v3"} == lazy
    assert calls == [1]
