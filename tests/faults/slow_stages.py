"""The project's Celery app with every replay stage held for a moment: `celery -A tests.faults.slow_stages worker`.

The worker-killed tests SIGKILL a worker while a replay's stage is running. Left to run at full speed, a 60,000-signal
replay is over in a fraction of a second on a fast engine, and whether a poll catches a stage running becomes luck.
Each stage (ingest, correlate, aggregate) here sleeps TRACEFLUX_FAULT_STAGE_SECONDS before it starts working, after
the replay has marked it running, so the kill lands mid replay however fast the engine gets. Only these test workers
load this module; the engine itself is not changed.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from typing import Any

from replays.engine import correlate as engine_stages
from traceflux.celery import app

__all__ = ["app"]

HOLD_SECONDS = float(os.environ.get("TRACEFLUX_FAULT_STAGE_SECONDS", "0.5"))


def _held(stage: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(stage)
    def run(*args: Any, **kwargs: Any) -> Any:
        time.sleep(HOLD_SECONDS)
        return stage(*args, **kwargs)

    return run


# replay() looks its stages up in the module's globals on every call, so replacing them there holds every replay.
for _name in ("ingest", "correlate", "aggregate"):
    setattr(engine_stages, _name, _held(getattr(engine_stages, _name)))
