"""Pausing Python's cyclic garbage collector while a replay builds its millions of small objects."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused_gc() -> Iterator[None]:
    """Run the block with the cyclic GC off, then restore it as it was (nesting is fine).

    A replay holds a million signals (tuples, dicts, datetimes) and builds as many again; each time allocations pass a
    threshold the collector rescans the survivors, which doubled the time to read a 1M-signal window. None of these
    objects forms a cycle, so reference counting frees them all the same.
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            # Switched back on as is, the collector's next young-generation pass would walk every object made in
            # the block (all still counted young): a fifth of a second per million. freeze() + unfreeze() file them
            # with the old generation instead, which is collected on its own, rarer schedule.
            gc.freeze()
            gc.unfreeze()
            gc.enable()
